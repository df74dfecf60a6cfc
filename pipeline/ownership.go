package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/twinhub/twinhub/pipeline/topology"
)

// Partition ownership.
//
// Every instance pulls every command partition through the partition
// consumers' pinned priority group (topology.PartitionGroup). JetStream
// pins a partition to the pull that receives its first command and then
// delivers the partition's commands only to pulls carrying that pin; the
// other instances' pulls wait as standbys. So each partition is processed
// by one instance at a time: its owner. An instance gains a partition when a
// command arrives with a pin it did not hold, and loses it when JetStream
// refuses its pin (423: the pin moved), when the consumer reports another
// pin, or when it hands the partition over.
//
// A partition moves:
//   - when its owner stops: it unpins the partition while its last pull is
//     still outstanding (JetStream answers that pull with 423 from then on,
//     so no command is lost to it), returns the commands it has not started
//     and finishes those it started; a standby pull gets the partition at
//     once and applies its commands when those are acknowledged;
//   - when its owner dies: its pin expires PinnedTTL after its last pull, and
//     the commands it held are redelivered AckWait after their delivery (or
//     their last progress report); the first standby pull then gets them
//     (about max(PinnedTTL, AckWait));
//   - when the consumer's leader changes: the new leader pins anew;
//   - to balance: an instance owning more than ⌈partitions/instances⌉
//     hands its surplus over the same way as at a stop, and pulls those
//     partitions again once another instance holds their pins, or after
//     parkFor (a partition without commands may then come back to it, and
//     is handed over again; never for long, so that a partition whose new
//     owner stops or dies at once is not left without pullers).
//
// Instances count each other by presence: each processor announces itself
// on topology.ProcessorSubject every presenceEvery, and says goodbye when
// it stops.
//
// Ownership is not exclusive (acks are not checked against the pin, and a
// deposed owner finishes the commands it started): the expected-sequence
// publish of change events and the record's compare-and-swap keep two
// owners from losing or duplicating a change.

const (
	// presenceEvery is how often a processor announces itself; one silent
	// for presenceTimeout is no longer counted.
	presenceEvery   = time.Second
	presenceTimeout = 3 * presenceEvery
	// presenceBye is the payload of a processor's last announcement.
	presenceBye = "stop"
	// retryDelay spaces the retries of a command that failed.
	retryDelay = 500 * time.Millisecond
	// parkFor is the longest an instance leaves a partition it handed over
	// to the others' pulls.
	parkFor = time.Second
	// pinHeader carries the pin a delivered command was sent under.
	pinHeader = "Nats-Pin-Id"
)

// partition is one command partition as this instance sees it.
type partition struct {
	n    int
	name string

	mu sync.Mutex
	// pin is the pin this instance holds; "" while it does not own the partition.
	pin string
	// handedOver is the last pin this instance gave up: a command that
	// JetStream sent under it before the unpin goes back to JetStream, and
	// does not make this instance the owner again.
	handedOver string
	// parkedUntil stops this instance pulling the partition after it handed
	// it over, so that another instance's standby pull gets it.
	parkedUntil time.Time
	commands
}

// partitionSubscriber is the Watermill subscriber of the partition
// consumers: a topic is a partition consumer's name. It pulls up to
// InFlight commands per partition with the partition group, hands each
// device's commands to the handler one at a time (partition.go), tracks
// which partitions this instance owns, hands them over when asked, and
// acknowledges a command once its handler acked it.
type partitionSubscriber struct {
	js        jetstream.JetStream
	commands  jetstream.Stream
	nc        *nats.Conn
	cfg       topology.Config
	log       *slog.Logger
	unmarshal headerUnmarshaler
	id        string
	parts     []*partition
	// onOwnership reports every gain (true) and loss (false).
	onOwnership func(partition int, owned bool)

	closing   chan struct{}
	closeOnce sync.Once
	// pulling counts the partitions' loops; Close waits for them.
	pulling sync.WaitGroup
	// closeTimeout bounds how long Close waits for the commands in flight.
	closeTimeout time.Duration

	peersMu sync.Mutex
	peers   map[string]time.Time // other processors, last heard of
}

var _ message.Subscriber = (*partitionSubscriber)(nil)

// newPartitionSubscriber pulls over nc, which it drains when closed.
func newPartitionSubscriber(ctx context.Context, nc *nats.Conn, cfg topology.Config, log *slog.Logger,
	closeTimeout time.Duration, onOwnership func(int, bool)) (*partitionSubscriber, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("opening JetStream for the command partitions: %w", err)
	}
	commands, err := js.Stream(ctx, topology.CommandStream)
	if err != nil {
		return nil, fmt.Errorf("opening stream %s: %w", topology.CommandStream, err)
	}
	s := &partitionSubscriber{js: js, commands: commands, nc: nc, cfg: cfg, log: log, id: nuid.Next(), onOwnership: onOwnership,
		closing: make(chan struct{}), closeTimeout: closeTimeout, peers: map[string]time.Time{}}
	for p := range cfg.Partitions {
		s.parts = append(s.parts, &partition{n: p, name: topology.ConsumerName(p), commands: newCommands()})
	}
	return s, nil
}

// Owned lists the partitions this instance owns, in order.
func (s *partitionSubscriber) Owned() []int {
	var owned []int
	for _, part := range s.parts {
		part.mu.Lock()
		if part.pin != "" {
			owned = append(owned, part.n)
		}
		part.mu.Unlock()
	}
	return owned
}

// setPin records the pin this instance holds for part ("" for none) and
// reports a gain or a loss.
func (s *partitionSubscriber) setPin(part *partition, pin, why string) {
	part.mu.Lock()
	was := part.pin
	part.pin = pin
	part.mu.Unlock()
	switch {
	case was == "" && pin != "":
		s.log.Info("owning a command partition", "partition", part.n)
		s.onOwnership(part.n, true)
		s.startSettling(part)
	case was != "" && pin == "":
		s.log.Info("no longer owning a command partition", "partition", part.n, "reason", why)
		s.onOwnership(part.n, false)
		s.returnUnstarted(part)
	}
}

// Subscribe starts pulling the partition whose consumer is named topic.
// The channel is closed when the subscriber is closed or ctx ends, after
// the command in flight was handled.
func (s *partitionSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	i := slices.IndexFunc(s.parts, func(p *partition) bool { return p.name == topic })
	if i < 0 {
		return nil, errors.New("BUG: no command partition has consumer " + topic)
	}
	out := make(chan *message.Message)
	s.parts[i].mu.Lock()
	s.parts[i].out = out
	s.parts[i].mu.Unlock()
	s.pulling.Add(1)
	// Exits when the subscriber closes or ctx ends, after handing the
	// partition over.
	go func() {
		defer s.pulling.Done()
		defer close(out)
		s.pull(ctx, s.parts[i], out)
		s.parts[i].running.Wait()
	}()
	return out, nil
}

func (s *partitionSubscriber) stopped(ctx context.Context) bool {
	select {
	case <-s.closing:
		return true
	case <-ctx.Done():
		return true
	default:
		return false
	}
}

// pull runs one partition: pull up to InFlight commands with the group,
// hand each to its device's queue (see partition.go), again, until the
// subscriber closes. A pull is never cancelled: JetStream may have sent it
// commands already, which would then wait for the ack wait. A hand-over
// unpins the partition while the pull is outstanding instead, after which
// JetStream answers that pull with 423 rather than a command. A full
// partition still pulls (one command) every pull expiry, which keeps its pin.
func (s *partitionSubscriber) pull(ctx context.Context, part *partition, out chan<- *message.Message) {
	var cons jetstream.Consumer
	expiry := s.cfg.PullExpiry()
	for !s.stopped(ctx) {
		part.mu.Lock()
		parked := time.Until(part.parkedUntil)
		free := s.cfg.InFlight - part.held
		part.mu.Unlock()
		if parked > 0 {
			cons = nil // a new handle pulls without the old pin
			s.wait(ctx, min(parked, 100*time.Millisecond))
			continue
		}
		if cons == nil {
			var err error
			lctx, cancel := context.WithTimeout(ctx, expiry)
			cons, err = s.js.Consumer(lctx, topology.CommandStream, part.name)
			cancel()
			if err != nil {
				s.log.Debug("looking up a partition consumer; retrying", "partition", part.n, "err", err)
				cons = nil
				s.wait(ctx, expiry/4)
				continue
			}
		}
		batch, err := cons.Fetch(max(free, 1), jetstream.FetchMaxWait(expiry), jetstream.FetchPriorityGroup(topology.PartitionGroup))
		if err != nil {
			s.log.Debug("pulling a command partition; retrying", "partition", part.n, "err", err)
			s.wait(ctx, expiry/4)
			continue
		}
		for msg := range batch.Messages() {
			part.mu.Lock()
			handedOver := part.handedOver
			part.mu.Unlock()
			if pin := msg.Headers().Get(pinHeader); pin != "" && pin != handedOver {
				s.setPin(part, pin, "")
			}
			s.admit(part, msg)
		}
		switch err := batch.Error(); {
		case errors.Is(err, jetstream.ErrPinIDMismatch):
			s.setPin(part, "", "its pin moved")
		case err != nil:
			s.log.Debug("pulling a command partition; retrying", "partition", part.n, "err", err)
			s.wait(ctx, expiry/4)
		}
	}
	// A pull that started as Close ran may have pinned the partition again.
	s.handOver(part, "stopping")
}

func (s *partitionSubscriber) wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.closing:
	case <-ctx.Done():
	}
}

// handOver gives the partition away if this instance owns it: unpinned,
// the partition goes to a standby pull at once. The commands this instance
// has not started go back to JetStream; the new owner applies them once
// those this instance started are acknowledged (see partition.go).
func (s *partitionSubscriber) handOver(part *partition, why string) {
	part.mu.Lock()
	pin := part.pin
	part.handedOver = pin
	part.mu.Unlock()
	if pin == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.commands.UnpinConsumer(ctx, part.name, topology.PartitionGroup); err != nil &&
		!errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrConnectionDraining) {
		s.log.Warn("unpinning a command partition failed; another instance takes it when its pin expires",
			"partition", part.n, "err", err, "pinned_ttl", s.cfg.PinnedTTL)
	}
	s.setPin(part, "", why)
}

// Close unpins the partitions this instance owns, stops pulling, and
// waits (up to the close timeout) for the pulls outstanding to end and the
// commands in flight to be acknowledged. It is safe to call more than once
// and from several goroutines.
func (s *partitionSubscriber) Close() error {
	s.closeOnce.Do(func() {
		close(s.closing)
		for _, part := range s.parts {
			s.handOver(part, "stopping")
		}
	})
	done := make(chan struct{})
	// Exits when every partition loop has returned, which Close bounds.
	go func() { s.pulling.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-time.After(s.closeTimeout):
		err = errors.New("command partitions still busy after the close timeout; their commands are delivered again")
	}
	if derr := s.nc.Drain(); derr != nil && !errors.Is(derr, nats.ErrConnectionClosed) {
		err = errors.Join(err, fmt.Errorf("draining the command connection: %w", derr))
	}
	return err
}

// runPresence announces this processor, counts the others, and hands
// partitions over while this instance owns more than its share, until ctx
// ends; then it says goodbye. It returns early only if it cannot listen to
// the others.
func (s *partitionSubscriber) runPresence(ctx context.Context) error {
	sub, err := s.nc.Subscribe(topology.ProcessorSubjects, func(m *nats.Msg) {
		id := m.Subject[len(topology.ProcessorSubject("")):]
		if id == topology.Token(s.id) {
			return
		}
		s.peersMu.Lock()
		defer s.peersMu.Unlock()
		if string(m.Data) == presenceBye {
			delete(s.peers, id)
		} else {
			s.peers[id] = time.Now()
		}
	})
	if err != nil {
		return fmt.Errorf("subscribing to %s: %w", topology.ProcessorSubjects, err)
	}
	defer sub.Unsubscribe()
	defer s.nc.Publish(topology.ProcessorSubject(s.id), []byte(presenceBye))
	tick := time.NewTicker(presenceEvery)
	defer tick.Stop()
	for {
		if err := s.nc.Publish(topology.ProcessorSubject(s.id), nil); err != nil {
			s.log.Debug("announcing the processor failed", "err", err)
		}
		s.balance(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// instances counts the processors alive, this one included.
func (s *partitionSubscriber) instances() int {
	s.peersMu.Lock()
	defer s.peersMu.Unlock()
	n := 1
	for id, seen := range s.peers {
		if time.Since(seen) > presenceTimeout {
			delete(s.peers, id)
			continue
		}
		n++
	}
	return n
}

// share is the most partitions one of n instances should own.
func share(partitions, n int) int {
	return int(math.Ceil(float64(partitions) / float64(n)))
}

// balance checks this instance's pins against the consumers (a pin moved
// by a leader change or an expiry is noticed here), resumes pulling parked
// partitions that another instance took, and hands over the partitions
// beyond this instance's share, the highest-numbered first.
func (s *partitionSubscriber) balance(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, presenceEvery)
	defer cancel()
	for _, part := range s.parts {
		part.mu.Lock()
		pin, parked := part.pin, time.Now().Before(part.parkedUntil)
		part.mu.Unlock()
		if pin == "" && !parked {
			continue
		}
		cons, err := s.js.Consumer(ctx, topology.CommandStream, part.name)
		if err != nil {
			continue
		}
		var current string
		if groups := cons.CachedInfo().PriorityGroups; len(groups) > 0 {
			current = groups[0].PinnedClientID
		}
		switch {
		case pin != "" && current != pin:
			s.setPin(part, "", "its pin expired or its consumer changed leader")
		case parked && current != "":
			part.mu.Lock()
			part.parkedUntil = time.Time{}
			part.mu.Unlock()
		}
	}
	owned := s.Owned()
	limit := share(len(s.parts), s.instances())
	for i := len(owned) - 1; i >= limit; i-- {
		part := s.parts[owned[i]]
		part.mu.Lock()
		part.parkedUntil = time.Now().Add(parkFor)
		part.mu.Unlock()
		s.handOver(part, "balancing")
	}
}
