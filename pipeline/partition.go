package pipeline

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/pipeline/topology"
)

// The commands a partition's owner holds.
//
// The owner pulls up to InFlight commands of a partition at once. It hands
// each device's commands to the handler one at a time, in the order
// JetStream delivered them (the order they were stored), and different
// devices' side by side: a device's next command goes to the handler once
// the one before it is acknowledged. A command whose handler fails is tried
// again here after retryDelay, never nacked, so that the device's later
// commands keep waiting behind it.
//
// When an instance gains a partition, commands the previous owner held may
// still be unacknowledged: a stopping owner finishes those it started, a
// dead one's come back after the ack wait. Until none is held elsewhere
// (the consumer's NumAckPending is no more than what this instance holds),
// the new owner keeps what it pulls without applying it: it settles. Then
// it queues them in stream order. So a device's commands keep their order
// across a change of owner.
//
// When it loses the partition, the owner returns (naks) the commands it has
// not started, so the new owner gets them at once, and finishes the ones
// it started. A command that arrives after the loss (pulled under the old
// pin) goes back too.

// settleEvery is how often a settling owner asks the consumer whether
// commands are still held elsewhere.
const settleEvery = 50 * time.Millisecond

// heldCommand is a command this instance pulled and has neither
// acknowledged nor returned.
type heldCommand struct {
	msg    jetstream.Msg
	device string
	seq    uint64 // stream sequence
	// lost is the partition's losses when the command was pulled: once
	// the count moves on, the command is no longer this instance's to start.
	lost uint64
}

// commands is what a partition's owner holds. Its fields are guarded by
// the partition's mu.
type commands struct {
	// held counts the commands pulled and neither acknowledged nor returned.
	held int
	// settling is set from gaining the partition until no command is held
	// elsewhere; pulled commands wait in unsettled meanwhile.
	settling  bool
	unsettled []*heldCommand
	// queues holds each device's commands in order; the first is with the
	// handler.
	queues map[string][]*heldCommand
	// lost counts the times this instance lost the partition.
	lost uint64
	// out is the partition's Watermill channel.
	out chan<- *message.Message
	// running counts the devices' goroutines.
	running sync.WaitGroup
}

func newCommands() commands {
	return commands{queues: map[string][]*heldCommand{}}
}

// admit takes a command the partition's pull received.
func (s *partitionSubscriber) admit(part *partition, msg jetstream.Msg) {
	hc := &heldCommand{msg: msg, device: msg.Headers().Get(headerDevice)}
	if md, err := msg.Metadata(); err == nil {
		hc.seq = md.Sequence.Stream
	}
	part.mu.Lock()
	defer part.mu.Unlock()
	if part.pin == "" {
		// Sent under a pin this instance gave up, before JetStream saw the
		// unpin: the new owner applies it, after the device's commands
		// that this instance returned before it.
		s.giveBack(part, hc)
		return
	}
	hc.lost = part.lost
	part.held++
	if part.settling {
		part.unsettled = append(part.unsettled, hc)
		return
	}
	s.enqueueLocked(part, hc)
}

// enqueueLocked appends hc to its device's queue and starts the device's
// goroutine if the queue was empty. part.mu is held.
func (s *partitionSubscriber) enqueueLocked(part *partition, hc *heldCommand) {
	q := part.queues[hc.device]
	part.queues[hc.device] = append(q, hc)
	if len(q) == 0 {
		part.running.Add(1)
		// Exits when the device's queue is empty.
		go s.runDevice(part, hc.device)
	}
}

// runDevice hands a device's commands to the handler one at a time until
// its queue is empty. A command that waits its turn after the partition
// moved goes back to JetStream instead.
func (s *partitionSubscriber) runDevice(part *partition, device string) {
	defer part.running.Done()
	for {
		part.mu.Lock()
		q := part.queues[device]
		if len(q) == 0 {
			delete(part.queues, device)
			part.mu.Unlock()
			return
		}
		hc := q[0]
		lost := hc.lost != part.lost
		part.mu.Unlock()
		if lost {
			s.giveBack(part, hc)
		} else {
			s.handleHeld(part, hc)
		}
		part.mu.Lock()
		if q := part.queues[device]; len(q) > 0 && q[0] == hc {
			part.queues[device] = q[1:]
		}
		part.held--
		part.mu.Unlock()
	}
}

// handleHeld hands one command to the handler until the handler acks it
// (then JetStream's ack follows) or, after the partition moved, fails it
// (then it goes back to JetStream for the new owner). While the handler
// works and the partition is owned, the command and those of its device
// waiting behind it are reported in progress every half ack wait, so that
// JetStream does not deliver them again under the handler's feet.
func (s *partitionSubscriber) handleHeld(part *partition, hc *heldCommand) {
	for {
		wm, err := s.unmarshal.Unmarshal(hc.msg)
		if err != nil {
			s.log.Error("BUG: unmarshalling a command message", "err", err)
			return
		}
		if !s.send(part, wm) {
			if s.lostSince(part, hc) {
				s.giveBack(part, hc)
				return
			}
			continue
		}
		progress := time.NewTicker(s.cfg.AckWait / 2)
		retry := false
		for waiting := true; waiting; {
			select {
			case <-wm.Acked():
				if err := hc.msg.Ack(); err != nil {
					s.log.Warn("acknowledging a command failed; JetStream delivers it again", "partition", part.n, "err", err)
				}
				waiting = false
			case <-wm.Nacked():
				waiting, retry = false, true
			case <-progress.C:
				s.reportProgress(part, hc)
			}
		}
		progress.Stop()
		if !retry {
			return
		}
		if s.lostSince(part, hc) {
			s.giveBack(part, hc)
			return
		}
		s.wait(context.Background(), retryDelay)
	}
}

// send hands wm to the handler, waiting at most an ack wait.
func (s *partitionSubscriber) send(part *partition, wm *message.Message) bool {
	timeout := time.NewTimer(s.cfg.AckWait)
	defer timeout.Stop()
	select {
	case part.out <- wm:
		return true
	case <-timeout.C:
		s.log.Warn("the partition's handler did not take a command within the ack wait", "partition", part.n)
		return false
	}
}

// lostSince reports whether this instance lost the partition after it
// pulled hc.
func (s *partitionSubscriber) lostSince(part *partition, hc *heldCommand) bool {
	part.mu.Lock()
	defer part.mu.Unlock()
	return hc.lost != part.lost
}

// giveBack returns a command to JetStream, which delivers it again at once.
func (s *partitionSubscriber) giveBack(part *partition, hc *heldCommand) {
	if err := hc.msg.Nak(); err != nil {
		s.log.Debug("returning a command failed; JetStream delivers it again after the ack wait", "partition", part.n, "err", err)
	}
}

// reportProgress keeps JetStream from delivering a device's held commands
// again while this instance owns the partition. Once it does not, the ack
// wait runs out and the new owner gets them.
func (s *partitionSubscriber) reportProgress(part *partition, head *heldCommand) {
	part.mu.Lock()
	lost := head.lost != part.lost
	q := slices.Clone(part.queues[head.device])
	part.mu.Unlock()
	if lost {
		return
	}
	for _, hc := range q {
		_ = hc.msg.InProgress() // lost in an election: the ack wait then runs out, as without it
	}
}

// startSettling makes the partition, just gained, keep what it pulls until
// no command is held elsewhere, then queue it in stream order.
func (s *partitionSubscriber) startSettling(part *partition) {
	part.mu.Lock()
	if part.settling {
		part.mu.Unlock()
		return
	}
	part.settling = true
	part.mu.Unlock()
	part.running.Add(1)
	// Exits once settled, or when the partition is lost again.
	go func() {
		defer part.running.Done()
		s.settle(part)
	}()
}

func (s *partitionSubscriber) settle(part *partition) {
	tick := time.NewTicker(settleEvery)
	defer tick.Stop()
	lastProgress := time.Now()
	for {
		part.mu.Lock()
		owned, settling, held := part.pin != "", part.settling, part.held
		part.mu.Unlock()
		if !owned || !settling {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.AckWait/2)
		cons, err := s.js.Consumer(ctx, topology.CommandStream, part.name)
		cancel()
		if err == nil && cons.CachedInfo().NumAckPending <= held {
			part.mu.Lock()
			if part.settling && part.pin != "" {
				slices.SortFunc(part.unsettled, byStreamSeq)
				for _, hc := range part.unsettled {
					s.enqueueLocked(part, hc)
				}
				part.unsettled, part.settling = nil, false
			}
			part.mu.Unlock()
			return
		}
		if time.Since(lastProgress) >= s.cfg.AckWait/2 {
			part.mu.Lock()
			waiting := slices.Clone(part.unsettled)
			part.mu.Unlock()
			for _, hc := range waiting {
				_ = hc.msg.InProgress()
			}
			lastProgress = time.Now()
		}
		select {
		case <-tick.C:
		case <-s.closing:
			return
		}
	}
}

// byStreamSeq orders held commands as the stream stored them.
func byStreamSeq(a, b *heldCommand) int { return cmp.Compare(a.seq, b.seq) }

// returnUnstarted gives the partition's commands that the handler has not
// started back to JetStream, in stream order, after the partition was lost.
func (s *partitionSubscriber) returnUnstarted(part *partition) {
	part.mu.Lock()
	part.lost++
	back := part.unsettled
	part.unsettled, part.settling = nil, false
	for device, q := range part.queues {
		if len(q) > 1 {
			back = append(back, q[1:]...)
			part.queues[device] = q[:1]
		}
	}
	part.held -= len(back)
	part.mu.Unlock()
	slices.SortFunc(back, byStreamSeq)
	for _, hc := range back {
		s.giveBack(part, hc)
	}
}
