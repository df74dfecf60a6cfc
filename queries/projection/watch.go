package projection

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinhub/twinhub/pipeline/topology"
)

// source is where the projection reads twin records from.
type source interface {
	// watch delivers the records: from the start (the latest record of each
	// key, then a nil entry, then every change) when from is 0, else every
	// change from revision from on.
	watch(ctx context.Context, from uint64) (jetstream.KeyWatcher, error)
	// lastRevision is the revision of the bucket's latest change.
	lastRevision(ctx context.Context) (uint64, error)
	// reconnects counts reconnections to NATS.
	reconnects() uint64
}

// kvSource is the twin bucket.
type kvSource struct {
	kv jetstream.KeyValue
	nc *nats.Conn
}

// reconnects counts the connection's reconnections: after one, the
// projection watches again rather than wait for the ordered consumer to
// notice (which takes several missed heartbeats).
func (k kvSource) reconnects() uint64 { return k.nc.Stats().Reconnects }

func (k kvSource) watch(ctx context.Context, from uint64) (jetstream.KeyWatcher, error) {
	if from == 0 {
		return k.kv.WatchAll(ctx)
	}
	return k.kv.WatchAll(ctx, jetstream.IncludeHistory(), jetstream.ResumeFromRevision(from))
}

func (k kvSource) lastRevision(ctx context.Context) (uint64, error) {
	st, err := k.kv.Status(ctx)
	if err != nil {
		return 0, err
	}
	info, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return 0, fmt.Errorf("BUG: KV status of type %T has no stream info", st)
	}
	return info.StreamInfo().State.LastSeq, nil
}

// Open binds a projection to the twin bucket, which topology.Ensure must
// have created; Run fills it and keeps it current.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config, reg prometheus.Registerer) (*Projection, error) {
	kv, err := js.KeyValue(ctx, topology.TwinBucket)
	if err != nil {
		return nil, fmt.Errorf("opening KV bucket %s: %w", topology.TwinBucket, err)
	}
	return newProjection(cfg, kvSource{kv: kv, nc: js.Conn()}, reg)
}

// errReconnected ends a watch after NATS reconnected.
var errReconnected = errors.New("reconnected to NATS")

// maxBatch bounds how many changes the applier applies under one lock.
const maxBatch = 512

// Run loads every twin record, then applies each change as it is written,
// until ctx ends. If the watch breaks (NATS restarted, say), it watches
// again from the first change it has not applied.
func (p *Projection) Run(ctx context.Context) error {
	defer close(p.stopped)
	if p.src == nil {
		return errors.New("BUG: projection: Run without a twin bucket")
	}
	for attempt := 0; ; attempt++ {
		from := uint64(0)
		select {
		case <-p.loaded:
			p.progressMu.Lock()
			from = p.applied + 1
			p.progressMu.Unlock()
		default:
		}
		err := p.follow(ctx, from)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errReconnected) {
			p.log.Info("NATS reconnected; watching the twin bucket again")
			attempt = -1
			continue
		}
		p.log.Warn("watching the twin bucket failed; watching again", "err", err, "from_revision", from)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(min(time.Duration(attempt+1)*time.Second, 10*time.Second)):
		}
	}
}

// follow runs one watch of the bucket.
func (p *Projection) follow(ctx context.Context, from uint64) error {
	w, err := p.src.watch(ctx, from)
	if err != nil {
		return fmt.Errorf("watching KV bucket %s: %w", topology.TwinBucket, err)
	}
	defer w.Stop()
	loading := from == 0
	var initial *stager
	if loading {
		initial = &stager{codec: p.store.codec}
	}
	start := time.Now()
	batch := make([]change, 0, maxBatch)
	reconnects := p.src.reconnects()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if p.src.reconnects() != reconnects {
				return errReconnected
			}
			continue
		case e, ok = <-w.Updates():
		}
		if !ok {
			return errors.New("the watch was closed")
		}
		if e == nil {
			if loading {
				changes := initial.finish()
				p.load(changes)
				p.log.Info("query projection loaded", "records", len(changes), "duration", time.Since(start).Round(time.Millisecond))
				initial, loading = nil, false
			}
			continue
		}
		c := p.decode(e)
		if loading {
			initial.add(c)
			continue
		}
		batch = append(batch[:0], c)
	drain:
		for len(batch) < maxBatch {
			select {
			case e, ok := <-w.Updates():
				if !ok {
					p.apply(batch)
					return errors.New("the watch was closed")
				}
				if e != nil {
					batch = append(batch, p.decode(e))
				}
			default:
				break drain
			}
		}
		p.apply(batch)
	}
}

// decode turns a KV entry into a change. A record that cannot be read is
// logged and treated as a removal, so the projection still advances.
func (p *Projection) decode(e jetstream.KeyValueEntry) change {
	c, err := decodeEntry(e.Key(), e.Value(), e.Operation(), e.Revision())
	if err != nil {
		p.log.Error("a twin record cannot be read; queries will not see the device until it changes", "key", e.Key(), "revision", e.Revision(), "err", err)
	}
	return c
}

func decodeEntry(key string, value []byte, op jetstream.KeyValueOp, rev uint64) (change, error) {
	id, err := topology.DeviceID(key)
	if err != nil {
		return change{rev: rev}, fmt.Errorf("twin record key %q: %w", key, err)
	}
	c := change{deviceID: id, rev: rev}
	if op != jetstream.KeyValuePut {
		return c, nil
	}
	twinJSON, deleted, err := recordFields(value)
	if err != nil {
		return c, fmt.Errorf("decoding the twin record of %s: %w", id, err)
	}
	if !deleted && twinJSON != nil {
		c.twin = bytes.Clone(twinJSON) // the record also holds keys and bookkeeping
	}
	return c, nil
}
