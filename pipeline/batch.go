package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/pipeline/topology"
)

// job is one command handed from its partition's handler to the batch loop.
// The loop fills in the result and closes done.
type job struct {
	cmd  Command
	done chan struct{}

	res     Result
	outcome outcome
	err     error
}

// batchItem is a job's progress through one batch.
type batchItem struct {
	job *job
	rev uint64 // the record's revision the change was decided on
	ch  *change
	// published is set once the job's change event is stored.
	published bool
	// slow sends the job through apply, one command at a time, after the
	// batch: a cache entry to re-check, a conflict to resolve, an error to retry.
	slow  bool
	evAck jetstream.PubAckFuture
	kvAck jetstream.PubAckFuture
}

// maxBatch bounds the commands applied together.
const maxBatch = 512

// runBatches applies the commands the partition handlers hand it, many at a
// time, until stop is closed. A device has at most one command with the
// handlers at a time (see partition.go), so the commands of one batch
// belong to different devices: they are independent, and their change
// events and record writes can be published together and their
// acknowledgements awaited together. That turns two JetStream round trips
// per command into two per batch.
//
// A batch takes whatever is waiting when the previous one finishes, so it
// grows with the load and adds no delay when the hub is idle.
func (p *Processor) runBatches(stop <-chan struct{}) {
	max := maxBatch
	batch := make([]*job, 0, max)
	for {
		select {
		case j := <-p.jobs:
			batch = append(batch[:0], j)
		case <-stop:
			return
		}
	gather:
		for len(batch) < max {
			select {
			case j := <-p.jobs:
				batch = append(batch, j)
			default:
				break gather
			}
		}
		p.metrics.batchSize.Observe(float64(len(batch)))
		p.applyBatch(batch)
		for _, j := range batch {
			close(j.done)
		}
	}
}

// applyBatch runs a batch of commands for distinct devices to completion:
// decide each on its record, publish the change events, wait for them,
// publish the record writes (compare-and-swap on the record's revision),
// wait for them. A command that meets a conflict (its event or record
// moved) or a rejection decided on a cached record finishes in apply, which
// resolves it exactly as a lone command; one whose write JetStream did not
// acknowledge fails, and its partition tries it again (failTransiently).
func (p *Processor) applyBatch(jobs []*job) {
	// Not cancelled by shutdown: a batch being applied is finished, not
	// abandoned halfway. Each phase waits at most half the ack wait, from
	// when its requests were sent.
	wait := p.cfg.Topology.AckWait / 2
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	items := make([]batchItem, len(jobs))
	for i, j := range jobs {
		it := &items[i]
		it.job = j
		p.decideItem(ctx, it)
	}
	ctx, cancel = context.WithTimeout(context.Background(), wait)
	defer cancel()
	for i := range items {
		it := &items[i]
		if it.evAck == nil {
			continue
		}
		ack, err := awaitAck(ctx, it.evAck)
		switch {
		case err == nil && !ack.Duplicate:
			it.published = true
			it.ch.next.LastEventSeq = ack.Sequence
			p.metrics.events.Inc()
		case err == nil || isWrongLastSeq(err):
			// A conflict (or a duplicate: stored before under the same ID)
			// means the record is behind its events; apply rolls it forward.
			p.cache.drop(it.job.cmd.DeviceID)
			it.slow = true
		default:
			p.failTransiently(it, fmt.Errorf("publishing change event of %s: %w", it.job.cmd.DeviceID, err))
		}
	}
	for i := range items {
		it := &items[i]
		if it.ch == nil || it.slow {
			continue
		}
		if fut, err := p.store.saveAsync(it.job.cmd.DeviceID, it.ch.next, it.rev); err != nil {
			p.failTransiently(it, fmt.Errorf("saving twin record of %s: %w", it.job.cmd.DeviceID, err))
		} else {
			it.kvAck = fut
		}
	}
	ctx, cancel = context.WithTimeout(context.Background(), wait)
	defer cancel()
	for i := range items {
		it := &items[i]
		if it.kvAck == nil {
			continue
		}
		ack, err := awaitAck(ctx, it.kvAck)
		switch {
		case isWrongLastSeq(err):
			p.cache.drop(it.job.cmd.DeviceID)
			p.metrics.casConflicts.Inc()
			it.slow = true
		case err != nil:
			p.failTransiently(it, fmt.Errorf("saving twin record of %s: %w", it.job.cmd.DeviceID, err))
		default:
			p.cache.put(it.job.cmd.DeviceID, it.ch.next, ack.Sequence)
			it.job.res, it.job.outcome = answer(it.job.cmd, it.ch.next), outcomeApplied
		}
	}
	// The slow ones side by side (they belong to different devices), each
	// on its own deadline (the batch's may be spent): a batch then takes at
	// most two deadlines, however many of its commands conflict.
	var slow sync.WaitGroup
	for i := range items {
		if it := &items[i]; it.slow {
			slow.Add(1)
			// Exits when apply returns, within its deadline.
			go func() {
				defer slow.Done()
				sctx, scancel := context.WithTimeout(context.Background(), p.cfg.Topology.AckWait/2)
				defer scancel()
				it.job.res, it.job.outcome, it.job.err = p.apply(sctx, it.job.cmd, it.published)
			}()
		}
	}
	slow.Wait()
}

// failTransiently ends an item whose write JetStream did not acknowledge
// (no answer in time, no stream leader during an election, a lost
// connection): its command fails now, and its partition tries it again
// shortly (partition.go), instead of holding the batch through retries. A
// write that was stored after all is found then: the event by its
// sequence check and message ID, the command by the record's recent list.
func (p *Processor) failTransiently(it *batchItem, err error) {
	p.cache.drop(it.job.cmd.DeviceID)
	it.ch, it.job.err = nil, err // nothing more of this batch is written for it
}

// decideItem reads the item's record (from the cache for writes) and
// decides its command. A read or rejection completes the job; a change
// starts publishing its event; anything else marks the item slow.
func (p *Processor) decideItem(ctx context.Context, it *batchItem) {
	cmd := it.job.cmd
	rec, rev, cached, err := p.recordFor(ctx, cmd)
	if err != nil {
		it.slow = true
		return
	}
	it.rev = rev
	if rec != nil && rec.applied(cmd.ID) {
		it.job.res, it.job.outcome = answer(cmd, rec), outcomeDuplicate
		return
	}
	ch, res := decide(cmd, rec, p.cfg.Now())
	if ch == nil {
		switch {
		case res.OK():
			it.job.res, it.job.outcome = res, outcomeRead
		case cached:
			it.slow = true // decide the rejection again on the stored record
		default:
			it.job.res, it.job.outcome = res, outcomeRejected
		}
		return
	}
	it.ch = ch
	if ch.ev == nil {
		return
	}
	fut, err := p.publishEventAsync(ch.ev, lastSeq(rec))
	if err != nil {
		it.slow = true
		return
	}
	it.evAck = fut
}

// awaitAck waits for an asynchronous publish's acknowledgement.
func awaitAck(ctx context.Context, fut jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	select {
	case ack := <-fut.Ok():
		return ack, nil
	case err := <-fut.Err():
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// eventMsg is a change event as a message for the device's event subject.
func eventMsg(ev *Event) (*nats.Msg, error) {
	data, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("BUG: encoding event: %w", err)
	}
	return &nats.Msg{Subject: topology.EventSubject(ev.DeviceID), Data: data,
		Header: nats.Header{SectionsHeader: []string{ev.Patch.sections()}, SchemaHeader: []string{strconv.Itoa(ev.SchemaVersion)}}}, nil
}

// eventPublishOpts make an event publish idempotent (its message ID) and
// ordered (it must follow the device's event at sequence expect).
func eventPublishOpts(ev *Event, expect uint64) []jetstream.PublishOpt {
	return []jetstream.PublishOpt{
		jetstream.WithMsgID(eventMsgID(ev)),
		jetstream.WithExpectStream(topology.EventStream),
		jetstream.WithExpectLastSequencePerSubject(expect),
	}
}

func (p *Processor) publishEventAsync(ev *Event, expect uint64) (jetstream.PubAckFuture, error) {
	msg, err := eventMsg(ev)
	if err != nil {
		return nil, err
	}
	return p.js.PublishMsgAsync(msg, eventPublishOpts(ev, expect)...)
}

var errBatchStopped = errors.New("the twin processor is stopping")

// submitJob hands cmd to the batch loop and waits for its result.
func (p *Processor) submitJob(cmd Command) *job {
	j := &job{cmd: cmd, done: make(chan struct{})}
	select {
	case p.jobs <- j:
	case <-p.batchesDone:
		j.err = errBatchStopped
		return j
	}
	<-j.done
	return j
}
