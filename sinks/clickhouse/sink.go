// Package clickhouse is the twin history sink: it reads twinhub's public
// change events from JetStream and writes them to ClickHouse, one row per
// event in twin_events and one row per changed leaf in twin_leaves (schema in
// deploy/clickhouse/migrations), in batches by size or age, and acknowledges
// JetStream only after ClickHouse accepted a batch.
//
// # Exactly once
//
// ClickHouse 18.16 does not deduplicate inserts into a non-replicated
// MergeTree, so the sink makes every write conditional on a watermark: each
// row carries the event's JetStream stream sequence (stream_seq), and for each
// table the sink knows the highest sequence the table holds. Rows at or below
// it are never written again. The watermarks are read from ClickHouse
// (max(stream_seq)) at start, when the sink becomes the writer and after
// every failed insert; an insert whose outcome is unknown (the connection
// broke after the data was sent) is first waited for in system.processes, so
// the watermark read back says whether it landed. This is sound because
//
//   - the sink adds events to a batch in strict sequence order, whatever
//     order JetStream delivers them in: a delivery that skips ahead (after a
//     crash left earlier events pending) is preceded by reading the skipped
//     events from the stream itself;
//   - one insert writes one part (one partition, one block), which ClickHouse
//     commits atomically, and each table's inserts go in sequence order;
//   - one sink at a time writes to a database, and this is enforced inside
//     ClickHouse (the fence below), not assumed.
//
// # One writer, fenced
//
// Every twinhub instance runs a sink. The history consumer is a pinned
// priority group: JetStream delivers the events to one sink (the writer)
// and the others wait; when the writer stops pulling for
// topology.HistoryPinnedTTL (it died) the next delivery pins a standby. The
// pin alone is not exclusive: a replaced writer may still hold a batch, and
// acknowledgements are not checked against the pin. So a sink that becomes
// the writer first adds a row to twin_history_writer (the next epoch), then
// waits until no sink insert runs in the database and reads the watermarks;
// and every insert copies its rows (sent along as an external table) only
// if, when the insert starts, the newest row of twin_history_writer is its
// own sink's, else throwIf fails it whole. An insert of the replaced writer
// therefore either started before the new writer's row existed, and the new
// writer waits for it before reading the watermarks, or it writes nothing.
// A fenced sink drops what it holds (the events stay in JetStream for the
// writer) and becomes a standby again.
package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"

	chdeploy "github.com/twinhub/twinhub/deploy/clickhouse"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// Tables the sink writes.
const (
	EventsTable = "twin_events"
	LeavesTable = "twin_leaves"
)

const (
	tableEvents = iota
	tableLeaves
	numTables
)

var tableNames = [numTables]string{EventsTable, LeavesTable}

// ErrNotRunning means Flush was called while Run was not running.
var ErrNotRunning = errors.New("history sink is not running")

// ErrReplaced means another sink became the history writer while this one
// held events: ClickHouse refused this sink's insert (the fence), and the
// other sink writes those events.
var ErrReplaced = errors.New("another instance became the history writer")

// Config configures the sink. Zero fields take the defaults. Any number of
// sinks (one per twinhub instance) may run on one NATS and one ClickHouse
// database: one at a time writes.
type Config struct {
	// BatchEvents flushes a batch holding this many events (default 10,000).
	BatchEvents int
	// BatchLeaves flushes a batch holding this many leaf rows (default
	// 200,000); it bounds memory and the size of one insert.
	BatchLeaves int
	// FlushInterval flushes a batch this old (default 1 s): the most an event
	// waits before it is in ClickHouse while ClickHouse is up.
	FlushInterval time.Duration
	// FetchSize is the most events asked from JetStream at once (default 5,000).
	FetchSize int
	// FetchWait is the longest one fetch waits for events (default 250 ms);
	// it must stay well below topology.HistoryPinnedTTL, or the writer
	// loses its pin while it waits.
	FetchWait time.Duration
	// RetryMin and RetryMax bound the backoff between failed attempts
	// (default 100 ms and 5 s).
	RetryMin, RetryMax time.Duration
	// InsertTimeout bounds one insert (default 60 s).
	InsertTimeout time.Duration
	// ShutdownTimeout bounds the final flush when Run's context ends
	// (default 10 s); what is not written stays in JetStream for the next start.
	ShutdownTimeout time.Duration
	Logger          *slog.Logger
}

func (c *Config) defaults() {
	if c.BatchEvents == 0 {
		c.BatchEvents = 10_000
	}
	if c.BatchLeaves == 0 {
		c.BatchLeaves = 200_000
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = time.Second
	}
	if c.FetchSize == 0 {
		c.FetchSize = 5_000
	}
	if c.FetchWait == 0 {
		c.FetchWait = 250 * time.Millisecond
	}
	if c.RetryMin == 0 {
		c.RetryMin = 100 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 5 * time.Second
	}
	if c.InsertTimeout == 0 {
		c.InsertTimeout = 60 * time.Second
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	c.defaults()
	var errs []error
	// Two batches (one being written, one being built) and a fetch must fit
	// in the consumer's MaxAckPending.
	if most := (topology.HistoryMaxAckPending - c.FetchSize) / 2; c.BatchEvents < 1 || c.BatchEvents > most {
		errs = append(errs, fmt.Errorf("history batch size must be between 1 and %d events, got %d", most, c.BatchEvents))
	}
	if c.BatchLeaves < 1 {
		errs = append(errs, fmt.Errorf("history leaf batch size must be positive, got %d", c.BatchLeaves))
	}
	if c.FlushInterval < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("history flush interval must be at least 10ms, got %s", c.FlushInterval))
	}
	if c.FetchSize < 1 {
		errs = append(errs, fmt.Errorf("history fetch size must be positive, got %d", c.FetchSize))
	}
	if c.FetchWait <= 0 || c.FetchWait > topology.HistoryPinnedTTL/2 {
		errs = append(errs, fmt.Errorf("history fetch wait must be between 0 and %s (half the pin TTL), got %s",
			topology.HistoryPinnedTTL/2, c.FetchWait))
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		errs = append(errs, fmt.Errorf("history retry backoff must satisfy 0 < min <= max, got %s and %s", c.RetryMin, c.RetryMax))
	}
	return errors.Join(errs...)
}

// New builds a sink that writes to the ClickHouse server and database of
// opts and reads change events through js. It does not connect: Run does,
// and keeps trying while ClickHouse is unreachable.
func New(cfg Config, opts *ch.Options, js jetstream.JetStream, reg prometheus.Registerer) (*Sink, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	conn, err := chdeploy.Open(opts)
	if err != nil {
		return nil, err
	}
	s := &Sink{
		cfg: cfg, opts: opts, conn: conn, js: js,
		log:      cfg.Logger.With("component", "history-sink"),
		flushReq: make(chan chan error),
		hook:     func(string) {},
		consumer: topology.HistoryConsumer,
		writerID: nuid.Next(), // [A-Za-z0-9]: safe inside the fence's SQL
	}
	h := fnv.New32a()
	h.Write([]byte(opts.Auth.Database))
	s.queryPrefix = fmt.Sprintf("twinhub-history-%08x-", h.Sum32())
	s.insertSQL = [numTables]string{
		fencedInsert(EventsTable, eventColumns, s.writerID),
		fencedInsert(LeavesTable, leafColumns, s.writerID),
	}
	s.m = newMetrics(reg, s)
	return s, nil
}

// Committed returns the stream sequence up to which every change event is in
// ClickHouse (0 before the sink has read its watermark).
func (s *Sink) Committed() uint64 { return s.committed.Load() }

// Flush writes the events the sink holds now and returns once ClickHouse
// accepted them (or ctx ends). Events still in JetStream are not waited for;
// poll Committed for those.
func (s *Sink) Flush(ctx context.Context) error {
	if !s.running.Load() {
		return ErrNotRunning
	}
	reply := make(chan error, 1)
	select {
	case s.flushReq <- reply:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run writes change events to ClickHouse until ctx ends, then flushes what
// it holds (bounded by ShutdownTimeout) and returns nil. While ClickHouse or
// JetStream is unreachable (or the stream or consumer is missing) it logs,
// retries with backoff and never drops an event.
//
// One goroutine (Run's) fetches events and builds the next batch while a
// second writes the previous one: at most two batches are held and one
// batch is written at a time, so each table's inserts stay in sequence order.
func (s *Sink) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("history sink: Run called twice")
	}
	defer s.running.Store(false)
	defer s.conn.Close()
	// Writes outlive ctx by up to ShutdownTimeout, so that shutdown can
	// still write the batches it holds.
	var cancelWrites context.CancelFunc
	s.wctx, cancelWrites = context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWrites()
	if err := s.retry(ctx, "starting the history sink", s.start); err != nil {
		return nil // ctx ended
	}
	s.log.Info("history sink started", "committed_seq", s.Committed(), "clickhouse", s.opts.Addr, "database", s.opts.Auth.Database)
	backoff := s.cfg.RetryMin
	for ctx.Err() == nil {
		select {
		case reply := <-s.flushReq:
			err := s.handoff(ctx, "request")
			if err == nil {
				err = s.wait(ctx)
			}
			reply <- err
			continue
		default:
		}
		if len(s.cur.rows) > 0 && time.Since(s.cur.start) >= s.cfg.FlushInterval {
			if s.handoff(ctx, "age") != nil {
				continue // ctx ended, or another sink became the writer
			}
		}
		wait := s.cfg.FetchWait
		if len(s.cur.rows) > 0 {
			wait = min(wait, max(time.Until(s.cur.start.Add(s.cfg.FlushInterval)), 10*time.Millisecond))
		}
		mb, err := s.cons.Fetch(s.cfg.FetchSize, jetstream.FetchMaxWait(wait),
			jetstream.FetchPriorityGroup(topology.HistoryPriorityGroup))
		if err != nil {
			s.log.Warn("fetching change events failed; retrying", "err", err, "backoff", backoff)
			sleep(ctx, backoff)
			backoff = min(backoff*2, s.cfg.RetryMax)
			continue
		}
		n := 0
		for msg := range mb.Messages() {
			if n == 0 {
				s.hook("fetched")
			}
			n++
			if !s.writing && s.become(ctx, msg) != nil {
				break // ctx ended, or the pin moved on: the writer has these events
			}
			if s.handle(ctx, msg) != nil {
				break // ctx ended or this sink was replaced; the rest is redelivered later
			}
		}
		if err := mb.Error(); errors.Is(err, jetstream.ErrPinIDMismatch) {
			// The pin moved while this sink did not pull (it was busy, or
			// stopped): another sink is the writer now.
			s.stepDown("the pin expired or moved to another instance")
			continue
		}
		if err := mb.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			s.log.Warn("fetching change events failed; retrying", "err", err, "backoff", backoff)
			sleep(ctx, backoff)
			backoff = min(backoff*2, s.cfg.RetryMax)
			continue
		}
		backoff = s.cfg.RetryMin
		s.ackCommitted()
	}
	s.shutdown(cancelWrites)
	return nil
}

// start prepares the schema, binds the durable consumer and reads the watermarks.
func (s *Sink) start(ctx context.Context) error {
	version, err := chdeploy.EnsureSchema(ctx, s.opts)
	if err != nil {
		return err
	}
	s.log.Info("ClickHouse history schema ready", "schema_version", version, "database", s.opts.Auth.Database)
	if s.stream, err = s.js.Stream(ctx, topology.EventStream); err != nil {
		return fmt.Errorf("opening stream %s: %w", topology.EventStream, err)
	}
	if s.cons, err = s.stream.Consumer(ctx, s.consumer); err != nil {
		return fmt.Errorf("opening consumer %s: %w", s.consumer, err)
	}
	s.needResolve = true
	return s.resolveNext(ctx)
}

// shutdown writes what the sink holds, within ShutdownTimeout.
func (s *Sink) shutdown(cancelWrites context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	held := len(s.cur.rows)
	err := s.handoff(ctx, "shutdown")
	if err == nil {
		err = s.wait(ctx)
	}
	cancelWrites()
	if s.inflight != nil {
		<-s.inflight // returns at once now
		s.inflight = nil
	}
	if err != nil && !errors.Is(err, ErrReplaced) {
		s.log.Warn("history sink stopped with events not yet in ClickHouse; they stay in JetStream and are written at the next start",
			"held_events", held, "err", err)
	}
	s.ackCommitted()
	if s.writing {
		s.handOver(ctx)
	}
	s.log.Info("history sink stopped", "committed_seq", s.Committed())
}

// become makes this sink the writer when it receives events, which the
// server sends to the pinned sink only: it adds its row to the writer fence,
// so that no insert of an earlier writer can land after the next step, then
// reads the watermarks. An error means ctx ended or msg came from a pin that
// has moved on since.
func (s *Sink) become(ctx context.Context, msg jetstream.Msg) error {
	pin := ""
	if h := msg.Headers(); h != nil {
		pin = h.Get("Nats-Pin-Id")
	}
	if pin != "" {
		info, err := s.cons.Info(ctx)
		if err == nil && len(info.PriorityGroups) > 0 && info.PriorityGroups[0].PinnedClientID != pin {
			return errors.New("the pin moved on")
		}
	}
	if err := s.wait(ctx); err != nil && !errors.Is(err, ErrReplaced) {
		return err
	}
	if err := s.retry(ctx, "becoming the history writer", func(ctx context.Context) error {
		return s.conn.Exec(ctx, acquireWriter(s.writerID))
	}); err != nil {
		return err
	}
	s.needResolve = true
	if err := s.retry(ctx, "reading the history watermark", s.resolveNext); err != nil {
		return err
	}
	s.writing, s.pinID = true, pin
	s.writer.Store(true)
	s.m.writerChanges.Inc()
	s.log.Info("this instance is now the history writer", "writer", s.writerID, "committed_seq", s.Committed())
	return nil
}

// stepDown makes this sink a standby after it learnt that another one is
// the writer. What it holds is dropped: the events stay in JetStream, and
// the writer reads them from there. A write in flight finishes, or the
// fence refuses it.
func (s *Sink) stepDown(reason string) {
	if s.writing {
		s.log.Info("this instance stopped being the history writer", "writer", s.writerID, "reason", reason,
			"committed_seq", s.Committed())
	}
	s.writing, s.pinID = false, ""
	s.writer.Store(false)
	s.cur = batch{}
	s.next = 0 // becoming the writer again reads the watermark first
	s.ack = nil
	s.needResolve = true
}

// handOver releases the pin at shutdown, so that a standby takes over at
// once instead of after topology.HistoryPinnedTTL.
func (s *Sink) handOver(ctx context.Context) {
	info, err := s.cons.Info(ctx)
	if err == nil && len(info.PriorityGroups) > 0 && info.PriorityGroups[0].PinnedClientID == s.pinID && s.pinID != "" {
		err = s.stream.UnpinConsumer(ctx, s.consumer, topology.HistoryPriorityGroup)
	}
	if err != nil {
		s.log.Debug("releasing the history pin failed; a standby takes over when it expires", "err", err)
	}
	s.stepDown("shutting down")
}

// handle adds one delivered event to the batch, in sequence order.
func (s *Sink) handle(ctx context.Context, msg jetstream.Msg) error {
	md, err := msg.Metadata()
	if err != nil {
		s.log.Error("BUG: a delivered change event has no JetStream metadata", "subject", msg.Subject(), "err", err)
		return nil
	}
	seq := md.Sequence.Stream
	if seq < s.next {
		// Committed already, or in a batch: a redelivery.
		if seq <= s.Committed() {
			s.m.duplicates.Inc()
		}
		s.noteAck(msg, seq)
		return nil
	}
	if seq > s.next {
		// Events before this one were delivered to an earlier sink that
		// crashed, or are gone; read them from the stream first.
		if err := s.fill(ctx, seq-1); err != nil {
			return err
		}
		if seq < s.next { // the fill found ClickHouse further on
			s.noteAck(msg, seq)
			return nil
		}
	}
	if err := s.add(ctx, seq, msg.Data()); err != nil {
		return err
	}
	s.noteAck(msg, seq)
	return nil
}

// add appends event seq (== s.next) to the batch and hands a full batch over.
func (s *Sink) add(ctx context.Context, seq uint64, data []byte) error {
	if seq != s.next {
		panic(fmt.Sprintf("BUG: history sink adds seq %d, expected %d", seq, s.next))
	}
	s.next = seq + 1
	row, err := decodeEvent(seq, data)
	if err != nil {
		// Not a change event twinhub can have written: nothing to store.
		s.log.Error("skipping an undecodable change event", "seq", seq, "err", err)
		s.m.undecodable.Inc()
		return nil
	}
	if len(s.cur.rows) == 0 {
		s.cur.start = time.Now()
	}
	s.cur.rows = append(s.cur.rows, row)
	s.cur.leaves += len(row.leaves)
	if len(s.cur.rows) >= s.cfg.BatchEvents || s.cur.leaves >= s.cfg.BatchLeaves {
		return s.handoff(ctx, "size")
	}
	return nil
}

// fill adds the events from s.next up to upto, read from the stream with an
// ordered consumer. It first commits what the sink holds and reads the
// watermarks again, so that rows another writer added are not written twice.
func (s *Sink) fill(ctx context.Context, upto uint64) error {
	if err := s.handoff(ctx, "gap"); err != nil {
		return err
	}
	if err := s.wait(ctx); err != nil {
		return err
	}
	s.needResolve = true
	if err := s.retry(ctx, "reading the history watermark", s.resolveNext); err != nil {
		return err
	}
	if s.next > upto {
		return nil
	}
	s.log.Info("reading change events from the stream to close a gap", "from_seq", s.next, "to_seq", upto)
	return s.retry(ctx, "reading change events from the stream", func(ctx context.Context) error {
		oc, err := s.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:   s.next,
		})
		if err != nil {
			return err
		}
		for s.next <= upto {
			mb, err := oc.Fetch(int(min(upto-s.next+1, uint64(s.cfg.FetchSize))), jetstream.FetchMaxWait(time.Second))
			if err != nil {
				return err
			}
			got := 0
			for msg := range mb.Messages() {
				md, err := msg.Metadata()
				if err != nil {
					continue
				}
				seq := md.Sequence.Stream
				if seq < s.next || seq > upto {
					continue
				}
				got++
				if seq > s.next {
					s.missed(seq - s.next)
					s.next = seq
				}
				if err := s.add(ctx, seq, msg.Data()); err != nil {
					return err
				}
			}
			if err := mb.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
				return err
			}
			if got == 0 {
				// The rest of the range was deleted from the stream.
				s.missed(upto - s.next + 1)
				s.next = upto + 1
			}
		}
		return nil
	})
}

func (s *Sink) missed(n uint64) {
	s.m.missing.Add(float64(n))
	s.log.Error("change events were removed from JetStream before they reached ClickHouse (stream max age or a purge); their history is lost",
		"events", n, "first_seq", s.next)
}

func (s *Sink) noteAck(msg jetstream.Msg, seq uint64) {
	if seq >= s.ackSeq {
		s.ack, s.ackSeq = msg, seq
	}
}

// ackCommitted acknowledges the highest delivered event the batches did not
// take if it is committed; with AckAll that acknowledges every event before
// it too.
func (s *Sink) ackCommitted() {
	if s.ack == nil || s.ackSeq > s.Committed() {
		return
	}
	ack(s.ack, s.ackSeq, s.hook, s.log)
	s.ack = nil
}

func ack(msg jetstream.Msg, seq uint64, hook func(string), log *slog.Logger) {
	hook("ack")
	if err := msg.Ack(); err != nil {
		// The events are in ClickHouse; a redelivery is skipped.
		log.Debug("acknowledging change events failed", "seq", seq, "err", err)
	}
}

// handoff passes the current batch to a writer goroutine, after the
// previous write finished, and starts a new batch.
func (s *Sink) handoff(ctx context.Context, reason string) error {
	if len(s.cur.rows) == 0 {
		s.ackCommitted()
		return nil
	}
	if err := s.wait(ctx); err != nil {
		return err
	}
	b := s.cur
	b.reason = reason
	// Every delivered message noted so far is at or below the batch's last event.
	b.ack, b.ackSeq, s.ack = s.ack, s.ackSeq, nil
	s.cur = batch{rows: make([]eventRow, 0, min(len(b.rows), s.cfg.BatchEvents))}
	done := make(chan error, 1)
	s.inflight = done
	// Exits when ClickHouse accepted the batch or s.wctx ended.
	go func() { done <- s.write(s.wctx, &b) }()
	return nil
}

// wait waits for the write in flight (if any) to finish. After a write
// failed (its context ended) nothing may be written any more: later events
// would move the watermark past the unwritten ones.
func (s *Sink) wait(ctx context.Context) error {
	if s.inflight != nil {
		select {
		case err := <-s.inflight:
			s.inflight = nil
			if errors.Is(err, ErrReplaced) {
				s.stepDown("another instance became the writer (ClickHouse refused this one's insert)")
				return err
			}
			if err != nil {
				s.stopped = err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.stopped
}

// write writes a batch, retrying with backoff until ClickHouse accepts it
// or ctx ends, then acknowledges it. It runs in the writer goroutine, which
// alone touches the watermarks while a write is in flight.
func (s *Sink) write(ctx context.Context, b *batch) error {
	start := time.Now()
	failures := 0
	err := s.retryQuiet(ctx, func(ctx context.Context) error {
		err := s.resolve(ctx, b)
		if err == nil {
			err = s.insertBatch(ctx, b)
		}
		if isFenced(err) {
			s.m.fenced.Inc()
			return ErrReplaced
		}
		if err != nil {
			s.needResolve = true
			failures++
			s.m.failures.Inc()
			s.m.up.Set(0)
		}
		return err
	}, func(err error, backoff time.Duration) {
		if failures <= 1 || failures%10 == 0 {
			s.log.Warn("writing history to ClickHouse failed; the events wait in JetStream and the sink retries",
				"events", len(b.rows), "failures", failures, "backoff", backoff, "err", err)
		}
	})
	if err != nil {
		return err
	}
	if failures > 0 {
		s.log.Info("ClickHouse accepted the history again", "failures", failures, "outage", time.Since(start).Round(time.Millisecond))
	}
	s.m.up.Set(1)
	s.m.batches.WithLabelValues(b.reason).Inc()
	s.m.flushDuration.Observe(time.Since(start).Seconds())
	s.m.lastFlush.SetToCurrentTime()
	if b.ack != nil && b.ackSeq <= s.Committed() {
		ack(b.ack, b.ackSeq, s.hook, s.log)
	}
	return nil
}

// insertBatch inserts the rows of the batch above each table's watermark. A
// run of events in one month (one partition) is one insert per table, so
// each insert is one atomic part; runs go in sequence order, and the two
// tables' inserts of a run go in parallel (each table has its own watermark).
func (s *Sink) insertBatch(ctx context.Context, b *batch) error {
	ingest := time.Now().UTC().Truncate(time.Second)
	rows := b.rows
	for start := 0; start < len(rows); {
		end := start + 1
		month := monthOf(rows[start].time)
		for end < len(rows) && monthOf(rows[end].time) == month {
			end++
		}
		run := rows[start:end]
		last := run[len(run)-1].seq
		var wg sync.WaitGroup
		var n [numTables]int
		var errs [numTables]error
		var tried [numTables]bool
		for t := range numTables {
			i := 0
			for i < len(run) && run[i].seq <= s.wm[t] {
				i++
			}
			if i == len(run) {
				continue
			}
			tried[t] = true
			wg.Add(1)
			// Exits when the insert returns (bounded by InsertTimeout).
			go func() {
				defer wg.Done()
				n[t], errs[t] = s.insert(ctx, t, run[i:], ingest)
			}()
		}
		wg.Wait()
		for t := range numTables {
			if !tried[t] {
				continue
			}
			if errs[t] != nil {
				errs[t] = fmt.Errorf("inserting %d rows into %s: %w", n[t], tableNames[t], errs[t])
				continue
			}
			s.wm[t] = last
			s.m.rows.WithLabelValues(tableNames[t]).Add(float64(n[t]))
			s.hook("inserted:" + tableNames[t])
		}
		if err := errors.Join(errs[:]...); err != nil {
			return err
		}
		s.m.events.Add(float64(len(run)))
		s.setCommitted()
		start = end
	}
	return nil
}

func monthOf(t time.Time) int { return t.Year()*100 + int(t.Month()) }

// insert writes rows to table t as one fenced insert (see fencedInsert)
// and returns the row count.
func (s *Sink) insert(ctx context.Context, t int, rows []eventRow, ingest time.Time) (int, error) {
	var n int
	var tbl *ext.Table
	var err error
	switch t {
	case tableEvents:
		n = len(rows)
		tbl, err = eventRowsTable(rows, ingest)
	case tableLeaves:
		for _, r := range rows {
			n += len(r.leaves)
		}
		if n == 0 {
			return 0, nil
		}
		tbl, err = leafRowsTable(rows)
	}
	if err != nil {
		return n, err
	}
	id := s.queryPrefix + strings.ToLower(nuid.Next())
	ctx, cancel := context.WithTimeout(ch.Context(ctx, ch.WithQueryID(id), ch.WithExternalTable(tbl),
		// One thread reads the rows in order, so one insert is one part.
		ch.WithSettings(ch.Settings{"max_threads": 1})), s.cfg.InsertTimeout)
	defer cancel()
	s.hook("send:" + tableNames[t])
	return n, s.conn.Exec(ctx, s.insertSQL[t])
}

// isFenced reports whether err is ClickHouse refusing an insert because
// another sink became the writer.
func isFenced(err error) bool {
	var ex *ch.Exception
	return errors.As(err, &ex) && ex.Code == codeFenced
}

// resolveNext reads the watermarks back (see resolve) for the batch being
// built, and moves the sequence it expects past what ClickHouse holds. Only
// Run's goroutine calls it, with no write in flight.
func (s *Sink) resolveNext(ctx context.Context) error {
	if err := s.resolve(ctx, &s.cur); err != nil {
		return err
	}
	if low := s.Committed(); s.next <= low {
		s.next = low + 1
	}
	return nil
}

// resolve reads each table's watermark back from ClickHouse, after waiting
// until no sink insert into this database is still running there (an insert
// whose outcome is unknown, ours or that of a sink process that died), and
// drops the batch's events every table holds.
func (s *Sink) resolve(ctx context.Context, b *batch) error {
	if !s.needResolve {
		return nil
	}
	if err := s.waitInserts(ctx); err != nil {
		return err
	}
	for t := range numTables {
		var v uint64
		if err := s.conn.QueryRow(ctx, "SELECT max(stream_seq) FROM "+tableNames[t]).Scan(&v); err != nil {
			return fmt.Errorf("reading the watermark of %s: %w", tableNames[t], err)
		}
		s.wm[t] = v
	}
	s.needResolve = false
	low := s.setCommitted()
	i := 0
	for i < len(b.rows) && b.rows[i].seq <= low {
		b.leaves -= len(b.rows[i].leaves)
		i++
	}
	if i > 0 {
		b.rows = append(b.rows[:0], b.rows[i:]...)
	}
	s.ready.Store(true)
	s.m.up.Set(1)
	return nil
}

// waitInserts polls system.processes until no sink insert into this
// database runs; after InsertTimeout it asks the server to kill them. A
// server keeps an insert in its process list from the moment it accepts the
// query until the data is committed or dropped, so after this the watermark
// says whether an insert landed.
func (s *Sink) waitInserts(ctx context.Context) error {
	running := "query_id LIKE '" + s.queryPrefix + "%'" // the prefix is [a-z0-9-]
	killAt := time.Now().Add(s.cfg.InsertTimeout)
	for {
		var n uint64
		if err := s.conn.QueryRow(ctx, "SELECT count() FROM system.processes WHERE "+running).Scan(&n); err != nil {
			return fmt.Errorf("checking for unfinished inserts: %w", err)
		}
		if n == 0 {
			return nil
		}
		if time.Now().After(killAt) {
			s.log.Warn("killing history inserts that outlived their timeout", "inserts", n)
			if err := s.conn.Exec(ctx, "KILL QUERY WHERE "+running+" ASYNC"); err != nil {
				return err
			}
			killAt = time.Now().Add(s.cfg.InsertTimeout)
		}
		if !sleep(ctx, 20*time.Millisecond) {
			return ctx.Err()
		}
	}
}

func (s *Sink) setCommitted() uint64 {
	low := s.wm[0]
	for _, v := range s.wm[1:] {
		low = min(low, v)
	}
	// In memory a table's watermark may run ahead of its max(stream_seq)
	// (events without leaves), never behind: committed only grows.
	if low > s.committed.Load() || !s.ready.Load() {
		s.committed.Store(low)
	}
	s.m.committed.Set(float64(s.committed.Load()))
	return s.committed.Load()
}

// retry runs f until it succeeds or ctx ends, logging failures.
func (s *Sink) retry(ctx context.Context, what string, f func(context.Context) error) error {
	failures := 0
	return s.retryQuiet(ctx, f, func(err error, backoff time.Duration) {
		failures++
		if failures <= 1 || failures%10 == 0 {
			s.log.Warn(what+" failed; retrying", "err", err, "failures", failures, "backoff", backoff)
		}
	})
}

func (s *Sink) retryQuiet(ctx context.Context, f func(context.Context) error, onErr func(error, time.Duration)) error {
	backoff := s.cfg.RetryMin
	for {
		err := f(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrReplaced) {
			return err // final: another sink writes these events
		}
		onErr(err, backoff)
		if !sleep(ctx, backoff) {
			return ctx.Err()
		}
		backoff = min(backoff*2, s.cfg.RetryMax)
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Sink writes change events to ClickHouse exactly once (see the package
// documentation). Build it with New, run it with Run.
type Sink struct {
	cfg  Config
	opts *ch.Options
	conn driver.Conn
	js   jetstream.JetStream
	log  *slog.Logger
	m    *metrics

	flushReq  chan chan error
	running   atomic.Bool
	ready     atomic.Bool   // the watermark is known
	committed atomic.Uint64 // every table holds every event up to this sequence

	// queryPrefix starts the query ID of every insert into this database,
	// by any sink process, so that a restarted sink can wait for the inserts
	// of one that died.
	queryPrefix string

	// hook is called at named points (tests crash the sink there).
	hook func(point string)

	consumer  string            // the durable consumer (tests use others)
	writerID  string            // this sink's name in the writer fence
	insertSQL [numTables]string // each table's fenced insert
	writer    atomic.Bool       // this sink is the writer (a metric)

	// Owned by the Run goroutine.
	stream   jetstream.Stream
	cons     jetstream.Consumer
	wctx     context.Context // the writes' context, which outlives Run's by ShutdownTimeout
	cur      batch           // the batch being built
	next     uint64          // the sequence the batch expects next
	ack      jetstream.Msg   // the highest delivered message no batch took yet
	ackSeq   uint64
	inflight chan error // the write in flight, nil when none
	stopped  error      // a write failed because its context ended: write nothing more
	writing  bool       // this sink holds the pin and its row is the fence's newest
	pinID    string     // the pin this sink got its events with, while writing

	// Owned by the writer while a write is in flight, else by Run's goroutine.
	wm          [numTables]uint64 // per table: the highest sequence it holds
	needResolve bool              // the watermarks must be read back before writing
}

// batch is a run of consecutive change events above the lowest watermark,
// in sequence order, and the delivered message that acknowledges them.
type batch struct {
	rows   []eventRow
	leaves int
	start  time.Time // when the first event was added
	reason string    // what flushed it (a metric label)
	ack    jetstream.Msg
	ackSeq uint64
}
