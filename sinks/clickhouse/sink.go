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
	"sync/atomic"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
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
	fetchWait := s.newBackoff()
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
			s.fetchFailed(ctx, err, fetchWait)
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
			s.fetchFailed(ctx, err, fetchWait)
			continue
		}
		fetchWait.reset()
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
