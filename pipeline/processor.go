package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinhub/twinhub/pipeline/topology"
)

// ReplyHeader names the NATS header that carries the subject a command's
// Result is sent to.
const ReplyHeader = "Twinhub-Reply"

// errEventConflict means the device's event subject moved past the record:
// an event was published but the record was not updated (a crash between the
// two), or another writer is active.
var errEventConflict = errors.New("event sequence conflict")

// ProcessorConfig configures the twin processor.
type ProcessorConfig struct {
	Topology topology.Config
	// CloseTimeout bounds how long shutdown waits for commands in flight (default 10 s).
	CloseTimeout time.Duration
	// CacheSize bounds the records kept in memory (default 100,000; -1 turns
	// the cache off).
	CacheSize int
	// Now returns the current time (default time.Now); tests pin it.
	Now    func() time.Time
	Logger *slog.Logger
}

func (c *ProcessorConfig) defaults() {
	c.Topology = c.Topology.WithDefaults()
	if c.CloseTimeout == 0 {
		c.CloseTimeout = 10 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.CacheSize == 0 {
		c.CacheSize = 100_000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Processor applies commands to twin records. It runs one Watermill handler
// per command partition; each holds many commands at once, but one of each
// device at a time, so the commands of a device are applied in the order
// they were stored (see partition.go). Of
// several instances on one NATS, each partition is processed by one at a
// time, its owner, and partitions move when an instance stops or dies (see
// ownership.go and Owned). The
// handlers hand their commands to one batch loop, which applies the
// commands of all partitions that are waiting together (see runBatches).
//
// Applying a command that changes the twin is: read the record, compute the
// new record and its change event, publish the event with the record's last
// event sequence as the expected last sequence of the device's event subject
// (so an event is never published twice), compare-and-swap the record, reply,
// acknowledge. A crash between any two steps is repaired when the command is
// redelivered: the record remembers the commands it applied, and an event that
// was published without its record update is rolled forward into the record.
type Processor struct {
	cfg     ProcessorConfig
	js      jetstream.JetStream
	nc      *nats.Conn
	store   *Store
	events  jetstream.Stream
	router  *message.Router
	log     *slog.Logger
	metrics *processorMetrics
	cache   *recordCache
	// parts pulls the command partitions and knows which this instance owns.
	parts *partitionSubscriber
	// jobs carries commands from the partition handlers to the batch loop;
	// batchesDone is closed when the loop has stopped.
	jobs        chan *job
	batchesDone chan struct{}
}

// NewProcessor builds the processor. nc carries replies and events; subConn
// is dedicated to pulling the command partitions (and to the processors'
// presence), and is drained when the processor stops.
func NewProcessor(ctx context.Context, cfg ProcessorConfig, nc, subConn *nats.Conn, reg prometheus.Registerer) (*Processor, error) {
	cfg.defaults()
	if err := cfg.Topology.Validate(); err != nil {
		return nil, err
	}
	// The batch loop publishes asynchronously; a lost acknowledgement
	// must end its wait before the command's ack wait runs out.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(cfg.Topology.AckWait/2))
	if err != nil {
		return nil, fmt.Errorf("opening JetStream: %w", err)
	}
	store, err := OpenStore(ctx, js)
	if err != nil {
		return nil, err
	}
	events, err := js.Stream(ctx, topology.EventStream)
	if err != nil {
		return nil, fmt.Errorf("opening stream %s: %w", topology.EventStream, err)
	}
	log := cfg.Logger.With("component", "processor")
	// Watermill logs every message at info; those are debug lines for us.
	wlog := watermill.NewSlogLoggerWithLevelMapping(log, map[slog.Level]slog.Level{slog.LevelInfo: slog.LevelDebug})
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: cfg.CloseTimeout}, wlog)
	if err != nil {
		return nil, err
	}
	p := &Processor{cfg: cfg, js: js, nc: nc, store: store, events: events, router: router, log: log,
		jobs: make(chan *job, maxBatch), batchesDone: make(chan struct{})}
	if cfg.CacheSize > 0 {
		p.cache = newRecordCache(cfg.CacheSize)
	}
	p.metrics = newProcessorMetrics(reg, js, cfg.Topology.Partitions)
	p.parts, err = newPartitionSubscriber(ctx, subConn, cfg.Topology, log, cfg.CloseTimeout, func(_ int, owned bool) {
		if owned {
			p.metrics.owned.Inc()
		} else {
			p.metrics.owned.Dec()
		}
	})
	if err != nil {
		return nil, err
	}
	for i := 0; i < cfg.Topology.Partitions; i++ {
		// The topic is the consumer name.
		router.AddConsumerHandler(topology.ConsumerName(i), topology.ConsumerName(i), p.parts, p.handle)
	}
	return p, nil
}

// Owned lists the command partitions this instance owns, in order: those
// whose commands JetStream delivers to it alone (see ownership.go). A
// partition without commands since its owner stopped has no owner until its
// next command. Ownership moves while the processor runs; the list is a
// snapshot.
func (p *Processor) Owned() []int { return p.parts.Owned() }

// Run processes commands until ctx ends, then lets the commands in flight
// finish (up to CloseTimeout) and returns.
func (p *Processor) Run(ctx context.Context) error {
	stopBatches := make(chan struct{})
	// Exits when stopBatches is closed, after the router (and so every
	// handler waiting for it) has stopped.
	go func() {
		defer close(p.batchesDone)
		p.runBatches(stopBatches)
	}()
	defer func() {
		close(stopBatches)
		<-p.batchesDone
	}()
	errc := make(chan error, 1)
	// Exits when the router is closed below.
	go func() { errc <- p.router.Run(context.WithoutCancel(ctx)) }()
	presence := make(chan error, 1)
	// Exits when ctx ends, after saying goodbye to the other instances.
	go func() { presence <- p.parts.runPresence(ctx) }()
	select {
	case <-ctx.Done():
		<-presence
	case err := <-presence:
		p.router.Close()
		<-errc
		return fmt.Errorf("announcing the twin processor to the other instances: %w", err)
	case err := <-errc:
		return fmt.Errorf("twin processor stopped: %w", err)
	}
	if err := p.router.Close(); err != nil {
		p.log.Warn("closing the processor", "err", err)
	}
	return <-errc
}

// Flush waits until every command stored so far has been applied and
// acknowledged, or ctx ends. The shutdown calls it after the edges stopped
// taking requests, so the commands they stored last (a device's disconnect,
// say) are applied now instead of stalling their partition for an ack wait
// after the next start. While other instances run, it returns at once: the
// stop hands this instance's partitions, with their commands, over to them.
func (p *Processor) Flush(ctx context.Context) error {
	if p.parts.instances() > 1 {
		return nil
	}
	for {
		idle := true
		for i := 0; i < p.cfg.Topology.Partitions && idle; i++ {
			// Looking the consumer up fetches its current state.
			c, err := p.js.Consumer(ctx, topology.CommandStream, topology.ConsumerName(i))
			if err != nil {
				return err
			}
			info := c.CachedInfo()
			idle = info.NumPending == 0 && info.NumAckPending == 0
		}
		if idle {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Running is closed once every partition handler is subscribed.
func (p *Processor) Running() <-chan struct{} { return p.router.Running() }

func (p *Processor) handle(msg *message.Message) error {
	start := time.Now()
	cmd, err := commandFrom(msg.Metadata.Get, msg.Payload)
	if err != nil {
		// A command nobody can apply: acknowledge it so the partition moves on.
		p.log.Warn("dropping malformed command", "uuid", msg.UUID, "err", err)
		p.metrics.commands.WithLabelValues("unknown", string(outcomeMalformed)).Inc()
		return nil
	}
	j := p.submitJob(cmd)
	if j.err != nil {
		p.log.Error("applying command failed; it will be retried", "kind", cmd.Kind, "device", cmd.DeviceID, "command", cmd.ID, "err", j.err)
		p.metrics.commands.WithLabelValues(string(cmd.Kind), string(outcomeError)).Inc()
		return j.err
	}
	p.metrics.commands.WithLabelValues(string(cmd.Kind), string(j.outcome)).Inc()
	p.metrics.duration.WithLabelValues(string(cmd.Kind)).Observe(time.Since(start).Seconds())
	if (cmd.Kind == KindUpdateDevice || cmd.Kind == KindDeleteDevice) && (j.outcome == outcomeApplied || j.outcome == outcomeDuplicate) {
		// Tells every instance's MQTT edge to re-check the device's open
		// sessions. Core NATS, at most once: a lost notice leaves a session
		// open until its token expires.
		if err := p.nc.Publish(topology.RegistrySubject(cmd.DeviceID), []byte(cmd.Kind)); err != nil {
			p.log.Warn("announcing a registry change failed; the device's open sessions stay until their tokens expire", "device", cmd.DeviceID, "err", err)
		}
	}
	if reply := msg.Metadata.Get(ReplyHeader); reply != "" {
		b, _ := json.Marshal(j.res)
		if err := p.nc.Publish(reply, b); err != nil {
			// The change is durable; only the requester misses its answer.
			p.log.Warn("sending a command result failed", "command", cmd.ID, "err", err)
		}
	}
	return nil
}

// change is what applying a command produces: the new record and, for twin
// changes, the event to publish.
type change struct {
	next *Record
	ev   *Event
}

// apply runs one command to completion, alone: the batch loop's way for
// every command that needs more than the plain case. The outcome names the
// metric label: applied, rejected, read or duplicate. published says the
// command's event was stored already (by the batch): if the command is
// then found applied (its record write lost a race and the record was
// rolled forward), it was still applied here, not a duplicate.
func (p *Processor) apply(ctx context.Context, cmd Command, published bool) (Result, outcome, error) {
	const attempts = 4
	for range attempts {
		rec, rev, cached, err := p.recordFor(ctx, cmd)
		if err != nil {
			return Result{}, "", err
		}
		if rec != nil && rec.applied(cmd.ID) {
			if published {
				return answer(cmd, rec), outcomeApplied, nil
			}
			return answer(cmd, rec), outcomeDuplicate, nil
		}
		ch, res := decide(cmd, rec, p.cfg.Now())
		if ch == nil {
			if res.OK() {
				return res, outcomeRead, nil
			}
			if cached {
				// A rejection (a stale etag, say) must not rest on a cache
				// entry another instance may have outdated: decide again on
				// the record as stored.
				p.cache.drop(cmd.DeviceID)
				continue
			}
			return res, outcomeRejected, nil
		}
		if ch.ev != nil {
			seq, err := p.publishEvent(ctx, ch.ev, lastSeq(rec))
			if errors.Is(err, errEventConflict) {
				p.cache.drop(cmd.DeviceID)
				if cached {
					continue // another writer may have moved on: read the record again
				}
				if err := p.rollForward(ctx, cmd.DeviceID, rec, rev); err != nil {
					return Result{}, "", err
				}
				continue
			}
			if err != nil {
				return Result{}, "", err
			}
			published = true
			ch.next.LastEventSeq = seq
		}
		newRev, err := p.store.save(ctx, cmd.DeviceID, ch.next, rev)
		if err != nil {
			p.cache.drop(cmd.DeviceID)
			if isWrongLastSeq(err) || errors.Is(err, jetstream.ErrKeyExists) {
				p.metrics.casConflicts.Inc()
				continue
			}
			return Result{}, "", fmt.Errorf("saving twin record of %s: %w", cmd.DeviceID, err)
		}
		p.cache.put(cmd.DeviceID, ch.next, newRev)
		return answer(cmd, ch.next), outcomeApplied, nil
	}
	return Result{}, "", fmt.Errorf("applying %s to %s: record kept changing under us after %d attempts; is another writer active?", cmd.Kind, cmd.DeviceID, attempts)
}

// recordFor reads the record cmd applies to, and its revision. Writes may
// start from the cache (cached is then true): the compare-and-swap catches a
// stale entry. Reads must not, or another instance's change would be
// missed; they read the record from the bucket.
func (p *Processor) recordFor(ctx context.Context, cmd Command) (rec *Record, rev uint64, cached bool, err error) {
	rec, rev, cached = p.cache.get(cmd.DeviceID)
	if cmd.Kind == KindDeviceGet {
		cached = false
	}
	if cached {
		return rec, rev, true, nil
	}
	if rec, rev, err = p.store.load(ctx, cmd.DeviceID); err != nil {
		return nil, 0, false, err
	}
	if rec != nil {
		p.cache.put(cmd.DeviceID, rec, rev)
	}
	return rec, rev, false, nil
}

func lastSeq(rec *Record) uint64 {
	if rec == nil {
		return 0
	}
	return rec.LastEventSeq
}

func (p *Processor) publishEvent(ctx context.Context, ev *Event, expect uint64) (uint64, error) {
	msg, err := eventMsg(ev)
	if err != nil {
		return 0, err
	}
	ack, err := p.js.PublishMsg(ctx, msg, eventPublishOpts(ev, expect)...)
	if isWrongLastSeq(err) {
		return 0, errEventConflict
	}
	if err != nil {
		return 0, fmt.Errorf("publishing change event of %s: %w", ev.DeviceID, err)
	}
	if ack.Duplicate {
		// Stored before, under the same ID: the record has not caught up.
		return 0, errEventConflict
	}
	p.metrics.events.Inc()
	return ack.Sequence, nil
}

func eventMsgID(ev *Event) string {
	return "ev." + topology.Token(ev.DeviceID) + "." + ev.GenerationID + "." + strconv.FormatInt(ev.Version, 10)
}

func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// rollForward brings a record up to the device's latest event, which a crash
// published without updating the record.
func (p *Processor) rollForward(ctx context.Context, deviceID string, rec *Record, rev uint64) error {
	p.metrics.rollForwards.Inc()
	msg, err := p.events.GetLastMsgForSubject(ctx, topology.EventSubject(deviceID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		// The device's events aged out of the stream: the record is the truth.
		if rec == nil || rec.LastEventSeq == 0 {
			return fmt.Errorf("event conflict for %s, but it has neither events nor a recorded sequence", deviceID)
		}
		next := rec.clone()
		next.LastEventSeq = 0
		_, err := p.store.save(ctx, deviceID, next, rev)
		return err
	}
	if err != nil {
		return fmt.Errorf("reading the latest event of %s: %w", deviceID, err)
	}
	if msg.Sequence < lastSeq(rec) {
		// The record refers to an event the stream no longer has, and events
		// never leave a subject's tail except by loss (damaged files found at
		// start). The record was written after that event was stored, so it
		// holds every acknowledged change: keep it, and publish the next
		// event after what the stream now has, or the device would never
		// change again.
		p.metrics.eventGaps.Inc()
		p.log.Error("the event stream lost this device's newest change events; its twin is kept as recorded "+
			"and its events continue after the gap (history misses the lost events)",
			"device", deviceID, "record_event_seq", lastSeq(rec), "stream_event_seq", msg.Sequence)
		next := rec.clone()
		next.LastEventSeq = msg.Sequence
		if _, err := p.store.save(ctx, deviceID, next, rev); err != nil && !isWrongLastSeq(err) {
			return fmt.Errorf("re-anchoring the record of %s after lost events: %w", deviceID, err)
		}
		return nil
	}
	if msg.Sequence == lastSeq(rec) {
		return fmt.Errorf("event conflict for %s but its latest event (seq %d) is not newer than the record's (%d)", deviceID, msg.Sequence, lastSeq(rec))
	}
	var ev Event
	if err := json.Unmarshal(msg.Data, &ev); err != nil {
		return fmt.Errorf("decoding event seq %d of %s: %w", msg.Sequence, deviceID, err)
	}
	if err := checkNext(rec, &ev); err != nil {
		if lagsSeveral(rec, &ev) {
			return p.replayForward(ctx, deviceID, rec, rev)
		}
		return fmt.Errorf("cannot roll %s forward to event seq %d: %w", deviceID, msg.Sequence, err)
	}
	next, err := applyEvent(rec, &ev)
	if err != nil {
		return fmt.Errorf("rolling %s forward to event seq %d: %w", deviceID, msg.Sequence, err)
	}
	next.LastEventSeq = msg.Sequence
	if _, err := p.store.save(ctx, deviceID, next, rev); err != nil {
		if isWrongLastSeq(err) || errors.Is(err, jetstream.ErrKeyExists) {
			return nil // another writer saved the record meanwhile; the caller reads it again
		}
		return fmt.Errorf("saving rolled-forward record of %s: %w", deviceID, err)
	}
	p.log.Info("rolled a twin record forward to its latest event", "device", deviceID, "version", ev.Version, "seq", msg.Sequence)
	return nil
}

// checkNext verifies that ev directly follows rec.
func checkNext(rec *Record, ev *Event) error {
	switch {
	case ev.Op == OpCreateDevice:
		if rec.Exists() {
			return fmt.Errorf("create event, but the device exists")
		}
	case !rec.Exists():
		return fmt.Errorf("%s event version %d, but the device does not exist", ev.Op, ev.Version)
	case ev.Version != rec.Twin.Version+1:
		return fmt.Errorf("event version %d does not follow record version %d", ev.Version, rec.Twin.Version)
	}
	return nil
}
