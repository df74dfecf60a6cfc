// Package history reads twin history: a device's change events, newest
// first and paged, and its twin as it was at a moment, rebuilt by replaying
// its change events through the processor's own code (pipeline.ApplyEvent).
//
// The events come from ClickHouse (table twin_events, written by the history
// sink) and, for the newest ones the sink has not written yet, from the
// JetStream event stream, so a read never misses a change that was
// acknowledged: the result is the same whether or not the sink is behind.
//
// A rebuilt twin carries what change events carry: tags, desired and
// reported properties with their $metadata and $version, the twin's version
// and etag, the status set at creation and the lastActivityTime of reported
// changes. State that changes without a change event (connectionState,
// status and statusReason set through the registry) has its creation values.
package history

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
	"github.com/twinhub/twinhub/pipeline/twin"
	chsink "github.com/twinhub/twinhub/sinks/clickhouse"
)

// The tables the history sink writes (sinks/clickhouse names them).
const (
	eventsTable = chsink.EventsTable
	leavesTable = chsink.LeavesTable
)

// ErrBehind means too many of a device's events are not in ClickHouse yet
// for a read to fill them in from JetStream; retry when the sink caught up.
var ErrBehind = errors.New("history is behind")

// Config configures the reader. Zero fields take the defaults.
type Config struct {
	// DefaultLimit is the page size when a query sets none (default 100).
	DefaultLimit int
	// MaxLimit is the largest page size (default 1000).
	MaxLimit int
	// MaxReplay bounds the events replayed to rebuild one twin (default 200,000).
	MaxReplay int
	// MaxTail bounds the events read from JetStream because ClickHouse does
	// not have them yet (default 5,000); beyond it reads fail with ErrBehind.
	MaxTail int
	// Now returns the current time (default time.Now).
	Now func() time.Time
}

func (c *Config) defaults() {
	if c.DefaultLimit == 0 {
		c.DefaultLimit = 100
	}
	if c.MaxLimit == 0 {
		c.MaxLimit = 1000
	}
	if c.MaxReplay == 0 {
		c.MaxReplay = 200_000
	}
	if c.MaxTail == 0 {
		c.MaxTail = 5_000
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Reader serves history reads.
type Reader struct {
	cfg  Config
	conn driver.Conn
	js   jetstream.JetStream
}

// New returns a reader over the ClickHouse database of conn (with the schema
// of deploy/clickhouse) and, when js is not nil, the event stream.
func New(cfg Config, conn driver.Conn, js jetstream.JetStream) *Reader {
	cfg.defaults()
	return &Reader{cfg: cfg, conn: conn, js: js}
}

// Limits returns the default and the largest page size.
func (r *Reader) Limits() (def, max int) { return r.cfg.DefaultLimit, r.cfg.MaxLimit }

const eventColumns = "stream_seq, generation_id, version, op, source, etag, desired_version, reported_version, " +
	"event_time_ns, command_id, status, patch"

// summary is what ClickHouse holds of a device.
type summary struct {
	maxSeq uint64
	count  uint64
	first  time.Time
}

func (r *Reader) summary(ctx context.Context, deviceID string) (summary, error) {
	var s summary
	var firstNS int64
	err := r.conn.QueryRow(ctx, "SELECT max(stream_seq), count(), min(event_time_ns) FROM "+eventsTable+" WHERE device_id = ?",
		deviceID).Scan(&s.maxSeq, &s.count, &firstNS)
	if err != nil {
		return s, fmt.Errorf("reading the history of %s from ClickHouse: %w", deviceID, err)
	}
	if s.count > 0 {
		s.first = time.Unix(0, firstNS).UTC()
	}
	return s, nil
}

// Events returns a page of deviceID's change events, newest first. It fails
// with pipeline.ErrInvalidQuery for a bad page size or time range, and with
// pipeline.ErrNotFound when the device has no history at all.
func (r *Reader) Events(ctx context.Context, deviceID string, q pipeline.HistoryQuery) (pipeline.HistoryPage, error) {
	var page pipeline.HistoryPage
	if q.Limit == 0 {
		q.Limit = r.cfg.DefaultLimit
	}
	if q.Limit < 1 || q.Limit > r.cfg.MaxLimit {
		return page, fmt.Errorf("%w: limit must be between 1 and %d, got %d", pipeline.ErrInvalidQuery, r.cfg.MaxLimit, q.Limit)
	}
	if !q.From.IsZero() && !q.To.IsZero() && q.From.After(q.To) {
		return page, fmt.Errorf("%w: from (%s) is after to (%s)", pipeline.ErrInvalidQuery,
			q.From.UTC().Format(time.RFC3339Nano), q.To.UTC().Format(time.RFC3339Nano))
	}
	sum, err := r.summary(ctx, deviceID)
	if err != nil {
		return page, err
	}
	tail, err := r.tail(ctx, deviceID, sum.maxSeq)
	if err != nil {
		return page, err
	}
	if sum.count == 0 && len(tail) == 0 {
		return page, fmt.Errorf("%w: device %q has no history", pipeline.ErrNotFound, deviceID)
	}
	var out []pipeline.StoredEvent
	in := func(e pipeline.StoredEvent) bool {
		at, _ := time.Parse(time.RFC3339Nano, e.Time)
		return (q.Before == 0 || e.Sequence < q.Before) && (q.From.IsZero() || !at.Before(q.From)) && (q.To.IsZero() || !at.After(q.To))
	}
	for i := len(tail) - 1; i >= 0 && len(out) <= q.Limit; i-- {
		if in(tail[i]) {
			out = append(out, tail[i])
		}
	}
	if len(out) <= q.Limit && sum.count > 0 {
		where, args := []string{"device_id = ?", "stream_seq <= ?"}, []any{deviceID, sum.maxSeq}
		if q.Before != 0 {
			where, args = append(where, "stream_seq < ?"), append(args, q.Before)
		}
		if !q.From.IsZero() {
			where, args = append(where, "event_time_ns >= ?"), append(args, q.From.UnixNano())
		}
		if !q.To.IsZero() {
			where, args = append(where, "event_time_ns <= ?"), append(args, q.To.UnixNano())
		}
		args = append(args, q.Limit+1-len(out))
		err := r.scan(ctx, "SELECT "+eventColumns+" FROM "+eventsTable+" WHERE "+strings.Join(where, " AND ")+
			" ORDER BY stream_seq DESC LIMIT ?", deviceID, args, func(e pipeline.StoredEvent) error {
			out = append(out, e)
			return nil
		})
		if err != nil {
			return page, err
		}
	}
	if len(out) > q.Limit {
		out, page.More = out[:q.Limit], true
	}
	page.Events = out
	if page.Events == nil {
		page.Events = []pipeline.StoredEvent{}
	}
	return page, nil
}

// AsOf rebuilds deviceID's twin as it was at the instant at. It fails with
// pipeline.ErrInvalidQuery when at is in the future and with
// pipeline.ErrNotFound when the device did not exist then (not yet created,
// deleted, or unknown), or when its history does not reach back to the
// creation of the twin that existed then.
func (r *Reader) AsOf(ctx context.Context, deviceID string, at time.Time) (*twin.Twin, error) {
	now := r.cfg.Now()
	if at.After(now) {
		return nil, fmt.Errorf("%w: asOf %s is in the future (it is %s now)", pipeline.ErrInvalidQuery,
			at.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339))
	}
	sum, err := r.summary(ctx, deviceID)
	if err != nil {
		return nil, err
	}
	tail, err := r.tail(ctx, deviceID, sum.maxSeq)
	if err != nil {
		return nil, err
	}
	if sum.count == 0 && len(tail) == 0 {
		return nil, fmt.Errorf("%w: device %q has no history", pipeline.ErrNotFound, deviceID)
	}
	atNS := at.UnixNano()
	var rec *pipeline.Record
	var last *pipeline.StoredEvent
	replayed := 0
	apply := func(e pipeline.StoredEvent) error {
		if replayed++; replayed > r.cfg.MaxReplay {
			return fmt.Errorf("%w: rebuilding %s at %s needs more than %d events; ask for an earlier time or raise the limit",
				ErrBehind, deviceID, at.UTC().Format(time.RFC3339), r.cfg.MaxReplay)
		}
		if e.Op != pipeline.OpCreateDevice && !rec.Exists() {
			return fmt.Errorf("%w: the history of %q does not reach back to the creation of its twin (the oldest stored event is version %d at %s)",
				pipeline.ErrNotFound, deviceID, e.Version, e.Time)
		}
		next, err := pipeline.ApplyEvent(rec, &e.Event)
		if err != nil {
			return fmt.Errorf("replaying event %d (version %d) of %s: %w", e.Sequence, e.Version, deviceID, err)
		}
		rec, last = next, &e
		return nil
	}
	if sum.count > 0 {
		// Replay from the last creation at or before at: earlier generations do not matter.
		err := r.scan(ctx, "SELECT "+eventColumns+" FROM "+eventsTable+" WHERE device_id = ? AND stream_seq <= ? AND event_time_ns <= ?"+
			" AND stream_seq >= (SELECT max(stream_seq) FROM "+eventsTable+" WHERE device_id = ? AND op = 'createDevice' AND event_time_ns <= ?)"+
			" ORDER BY stream_seq LIMIT ?", deviceID, []any{deviceID, sum.maxSeq, atNS, deviceID, atNS, r.cfg.MaxReplay + 1}, apply)
		if err != nil {
			return nil, err
		}
	}
	for _, e := range tail {
		t, _ := time.Parse(time.RFC3339Nano, e.Time)
		if t.After(at) {
			break
		}
		if err := apply(e); err != nil {
			return nil, err
		}
	}
	when := at.UTC().Format(time.RFC3339Nano)
	switch {
	case rec == nil:
		first := sum.first
		if len(tail) > 0 && (first.IsZero() || sum.count == 0) {
			first, _ = time.Parse(time.RFC3339Nano, tail[0].Time)
		}
		return nil, fmt.Errorf("%w: device %q did not exist at %s; its history starts at %s",
			pipeline.ErrNotFound, deviceID, when, first.UTC().Format(time.RFC3339Nano))
	case !rec.Exists():
		return nil, fmt.Errorf("%w: device %q did not exist at %s; it was deleted at %s",
			pipeline.ErrNotFound, deviceID, when, last.Time)
	}
	return rec.Twin, nil
}

// scan runs a query over the events table, its ? placeholders bound to
// args (clickhouse-go binds them client side, which ClickHouse 18.16
// accepts in queries; it does not in Exec), and calls fn for each event.
func (r *Reader) scan(ctx context.Context, query, deviceID string, args []any, fn func(pipeline.StoredEvent) error) error {
	rows, err := r.conn.Query(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("reading the history of %s from ClickHouse: %w", deviceID, err)
	}
	defer rows.Close()
	for rows.Next() {
		e := pipeline.StoredEvent{Event: pipeline.Event{SchemaVersion: pipeline.EventSchemaVersion, DeviceID: deviceID}}
		var ns int64
		var patch string
		if err := rows.Scan(&e.Sequence, &e.GenerationID, &e.Version, &e.Op, &e.Source, &e.Etag, &e.DesiredVersion,
			&e.ReportedVersion, &ns, &e.CommandID, &e.Status, &patch); err != nil {
			return fmt.Errorf("reading the history of %s from ClickHouse: %w", deviceID, err)
		}
		e.Time = twin.FormatTime(time.Unix(0, ns))
		if err := json.Unmarshal([]byte(patch), &e.Patch); err != nil {
			return fmt.Errorf("event %d of %s: stored patch: %w", e.Sequence, deviceID, err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading the history of %s from ClickHouse: %w", deviceID, err)
	}
	return nil
}

// tail returns, in stream order, deviceID's events in JetStream after
// sequence after: those the sink has not written to ClickHouse yet.
func (r *Reader) tail(ctx context.Context, deviceID string, after uint64) ([]pipeline.StoredEvent, error) {
	if r.js == nil {
		return nil, nil
	}
	stream, err := r.js.Stream(ctx, topology.EventStream)
	if err != nil {
		return nil, fmt.Errorf("opening stream %s: %w", topology.EventStream, err)
	}
	subject := topology.EventSubject(deviceID)
	last, err := stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the latest event of %s: %w", deviceID, err)
	}
	if last.Sequence <= after {
		return nil, nil
	}
	var out []pipeline.StoredEvent
	for seq := after + 1; seq <= last.Sequence; {
		if len(out) >= r.cfg.MaxTail {
			return nil, fmt.Errorf("%w: more than %d events of %s are not in ClickHouse yet; retry when the history sink caught up",
				ErrBehind, r.cfg.MaxTail, deviceID)
		}
		msg, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading events of %s from JetStream: %w", deviceID, err)
		}
		e := pipeline.StoredEvent{Sequence: msg.Sequence}
		if err := json.Unmarshal(msg.Data, &e.Event); err != nil {
			return nil, fmt.Errorf("decoding event %d of %s: %w", msg.Sequence, deviceID, err)
		}
		out = append(out, e)
		seq = msg.Sequence + 1
	}
	return out, nil
}
