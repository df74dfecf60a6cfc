package main

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/pipeline/topology"
)

// patchKey names one reported patch of the bench: its device and sequence.
type patchKey struct {
	dev string
	seq int64
}

// eventTracker turns change events into publish → event latencies, and
// samples of them into publish → ClickHouse row latencies.
type eventTracker struct {
	event, row *stat

	// sampleRows is set when the hub keeps history: then every 50th event
	// waits in rows for its ClickHouse row.
	sampleRows bool

	mu      sync.Mutex
	sent    map[patchKey]time.Time // publish time of each patch in flight
	rows    []pendingRow           // sampled events not yet in ClickHouse
	nEvents int
}

type pendingRow struct {
	seq uint64 // stream sequence of the event
	t0  time.Time
}

func (e *eventTracker) published(dev string, seq int64, t0 time.Time) {
	e.mu.Lock()
	e.sent[patchKey{dev, seq}] = t0
	e.mu.Unlock()
}

func (e *eventTracker) rowsPending() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.rows)
}

// follow consumes new change events until the returned stop is called.
func (e *eventTracker) follow(ctx context.Context, nc *nats.Conn) (stop func(), err error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	cons, err := js.OrderedConsumer(ctx, topology.EventStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{topology.EventSubjects}, DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return nil, err
	}
	cc, err := cons.Consume(e.onEvent, jetstream.PullMaxMessages(1000))
	if err != nil {
		return nil, err
	}
	return cc.Stop, nil
}

func (e *eventTracker) onEvent(m jetstream.Msg) {
	var ev struct {
		DeviceID string `json:"deviceId"`
		Patch    struct {
			Properties struct {
				Reported struct {
					Seq int64 `json:"seq"`
				} `json:"reported"`
			} `json:"properties"`
		} `json:"patch"`
	}
	if json.Unmarshal(m.Data(), &ev) != nil {
		return
	}
	k := patchKey{ev.DeviceID, ev.Patch.Properties.Reported.Seq}
	e.mu.Lock()
	defer e.mu.Unlock()
	t0, ok := e.sent[k]
	if !ok {
		return
	}
	delete(e.sent, k)
	e.event.add(time.Since(t0))
	if md, err := m.Metadata(); err == nil && e.sampleRows {
		if e.nEvents++; e.nEvents%50 == 0 {
			e.rows = append(e.rows, pendingRow{md.Sequence.Stream, t0})
		}
	}
}

// followRows resolves sampled rows as the ClickHouse sink acknowledges
// them, until ctx ends. The sink acknowledges a batch only after ClickHouse
// accepted it, so its consumer's ack floor is the last stream sequence
// ClickHouse has. (Reading it from the hub's /metrics instead would cost the
// hub a full scrape, several milliseconds of CPU, twenty times a second.)
func (e *eventTracker) followRows(ctx context.Context, nc *nats.Conn) {
	js, err := jetstream.New(nc)
	if err != nil {
		return
	}
	for ctx.Err() == nil {
		// Looking the consumer up fetches its state.
		if c, err := js.Consumer(ctx, topology.EventStream, topology.HistoryConsumer); err == nil {
			committed := c.CachedInfo().AckFloor.Stream
			now := time.Now()
			e.mu.Lock()
			keep := e.rows[:0]
			for _, r := range e.rows {
				if committed >= r.seq {
					e.row.add(now.Sub(r.t0))
				} else {
					keep = append(keep, r)
				}
			}
			e.rows = keep
			e.mu.Unlock()
		}
		time.Sleep(50 * time.Millisecond)
	}
}
