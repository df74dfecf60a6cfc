package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/ext"
	"github.com/nats-io/nuid"
)

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
