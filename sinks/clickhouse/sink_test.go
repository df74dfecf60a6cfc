package clickhouse

import (
	"context"
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
	"github.com/twinhub/twinhub/pipeline/twin"
)

// TestLeaves states the leaf rows each kind of change event produces:
// nested keys become dotted paths, null deletes, arrays and empty objects are
// whole values, a replacement first deletes the section roots, a deletion
// deletes every root, and values appear in exactly one typed column.
func TestLeaves(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	s := func(v string) *string { return &v }
	b := func(v uint8) *uint8 { return &v }
	cases := []struct {
		name string
		ev   pipeline.Event
		want []Leaf
	}{
		{"create", pipeline.Event{Op: pipeline.OpCreateDevice}, nil},
		{"reported", pipeline.Event{Op: pipeline.OpUpdateTwin, Patch: pipeline.EventPatch{Properties: &pipeline.EventProperties{
			Reported: json.RawMessage(`{"t":21.5,"fw":{"version":"1.2<3>","ok":false},"gone":null,"list":[1,"a"],"empty":{}}`)}}},
			[]Leaf{
				{Section: "reported", Path: "empty", Op: "set", JSON: "{}", Type: "object"},
				{Section: "reported", Path: "fw.ok", Op: "set", JSON: "false", Type: "bool", Bool: b(0)},
				{Section: "reported", Path: "fw.version", Op: "set", JSON: `"1.2<3>"`, Type: "string", String: s("1.2<3>")},
				{Section: "reported", Path: "gone", Op: "delete", JSON: "null", Type: "null"},
				{Section: "reported", Path: "list", Op: "set", JSON: `[1,"a"]`, Type: "array"},
				{Section: "reported", Path: "t", Op: "set", JSON: "21.5", Type: "number", Number: f(21.5)},
			}},
		{"service", pipeline.Event{Op: pipeline.OpUpdateTwin, Patch: pipeline.EventPatch{Tags: json.RawMessage(`{"plant":"A"}`),
			Properties: &pipeline.EventProperties{Desired: json.RawMessage(`{"on":true,"n":4503599627370495}`)}}},
			[]Leaf{
				{Section: "tags", Path: "plant", Op: "set", JSON: `"A"`, Type: "string", String: s("A")},
				{Section: "desired", Path: "n", Op: "set", JSON: "4503599627370495", Type: "number", Number: f(4503599627370495)},
				{Section: "desired", Path: "on", Op: "set", JSON: "true", Type: "bool", Bool: b(1)},
			}},
		{"replace", pipeline.Event{Op: pipeline.OpReplaceTwin, Patch: pipeline.EventPatch{Tags: json.RawMessage(`{}`),
			Properties: &pipeline.EventProperties{Desired: json.RawMessage(`{"a":{"b":1}}`)}}},
			[]Leaf{
				{Section: "tags", Path: "", Op: "delete", JSON: "null", Type: "null"},
				{Section: "desired", Path: "", Op: "delete", JSON: "null", Type: "null"},
				{Section: "desired", Path: "a.b", Op: "set", JSON: "1", Type: "number", Number: f(1)},
			}},
		{"delete", pipeline.Event{Op: pipeline.OpDeleteDevice}, []Leaf{
			{Section: "tags", Path: "", Op: "delete", JSON: "null", Type: "null"},
			{Section: "desired", Path: "", Op: "delete", JSON: "null", Type: "null"},
			{Section: "reported", Path: "", Op: "delete", JSON: "null", Type: "null"},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Leaves(&c.ev)
			if err != nil {
				t.Fatal(err)
			}
			gb, _ := json.Marshal(got)
			wb, _ := json.Marshal(c.want)
			if string(gb) != string(wb) {
				t.Errorf("leaves\n got %s\nwant %s", gb, wb)
			}
		})
	}
	if _, err := Leaves(&pipeline.Event{Op: "bogus"}); err == nil {
		t.Error("an unknown op must fail")
	}
}

// TestSinkWritesHistory runs the sink over a device's life and checks the
// rows: every event column, the patch text, the leaves' typed values, and a
// new generation after delete and re-create.
func TestSinkWritesHistory(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	at := time.Date(2026, 3, 31, 23, 59, 59, 999_999_900, time.UTC) // the next event is in another month
	evs := []pipeline.Event{
		{DeviceID: "pump-1", GenerationID: "g1", Op: pipeline.OpCreateDevice, Source: "backend", Version: 2, Etag: "AAAAAAAAAAE=", DesiredVersion: 1, ReportedVersion: 1, Status: "enabled"},
		{DeviceID: "pump-1", GenerationID: "g1", Op: pipeline.OpUpdateTwin, Source: "device", Version: 3, Etag: "AAAAAAAAAAE=", DesiredVersion: 1, ReportedVersion: 2,
			Patch: pipeline.EventPatch{Properties: &pipeline.EventProperties{Reported: json.RawMessage(`{"temperature":21.5,"fw":{"version":"2.0"}}`)}}},
		{DeviceID: "pump-1", GenerationID: "g1", Op: pipeline.OpDeleteDevice, Source: "backend", Version: 4},
		{DeviceID: "pump-1", GenerationID: "g2", Op: pipeline.OpCreateDevice, Source: "backend", Version: 2},
	}
	for i := range evs {
		evs[i].Time = twin.FormatTime(at.Add(time.Duration(i) * 100 * time.Nanosecond))
		evs[i].CommandID = "cmd" + string(rune('a'+i))
		b, _ := json.Marshal(evs[i])
		if _, err := e.js.Publish(ctx, topology.EventSubject(evs[i].DeviceID), b); err != nil {
			t.Fatal(err)
		}
	}
	s := e.sink(Config{}, nil)
	run(t, s)
	e.waitCommitted(s, 30*time.Second)

	type row struct {
		Seq       uint64
		Gen       string
		Version   int64
		Op        string
		Source    string
		Etag      string
		DV, RV    int64
		Time      time.Time
		NS        int64
		CommandID string
		Status    string
		Patch     string
	}
	rows, err := e.conn.Query(ctx, `SELECT stream_seq, generation_id, version, op, source, etag, desired_version, reported_version,
		event_time, event_time_ns, command_id, status, patch FROM twin_events WHERE device_id = 'pump-1' ORDER BY stream_seq`)
	if err != nil {
		t.Fatal(err)
	}
	var got []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.Seq, &r.Gen, &r.Version, &r.Op, &r.Source, &r.Etag, &r.DV, &r.RV, &r.Time, &r.NS, &r.CommandID, &r.Status, &r.Patch); err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	rows.Close()
	if len(got) != len(evs) {
		t.Fatalf("%d event rows, want %d", len(got), len(evs))
	}
	for i, r := range got {
		ev := evs[i]
		wantPatch, _ := json.Marshal(ev.Patch)
		if r.Seq != uint64(i+1) || r.Gen != ev.GenerationID || r.Version != ev.Version || r.Op != ev.Op || r.Source != ev.Source ||
			r.Etag != ev.Etag || r.DV != ev.DesiredVersion || r.RV != ev.ReportedVersion || r.CommandID != ev.CommandID ||
			r.Status != ev.Status || r.Patch != string(wantPatch) || twin.FormatTime(time.Unix(0, r.NS)) != ev.Time ||
			!r.Time.Equal(time.Unix(0, r.NS).Truncate(time.Second)) {
			t.Errorf("row %d: %+v\nevent: %+v", i, r, ev)
		}
	}
	var n uint64
	var num float64
	if err := e.conn.QueryRow(ctx, `SELECT count(), sum(value_number) FROM twin_leaves WHERE device_id = 'pump-1'`).Scan(&n, &num); err != nil {
		t.Fatal(err)
	}
	if n != 2+3 || num != 21.5 {
		t.Errorf("leaf rows: %d with number sum %v; want 5 rows (2 reported, 3 section deletes) and 21.5", n, num)
	}
	var fw string
	if err := e.conn.QueryRow(ctx, `SELECT value_string FROM twin_leaves WHERE path = 'fw.version' AND section = 'reported'`).Scan(&fw); err != nil || fw != "2.0" {
		t.Errorf("fw.version: %q, %v", fw, err)
	}
	var parts uint64
	if err := e.conn.QueryRow(ctx, `SELECT uniqExact(partition) FROM system.parts WHERE database = currentDatabase() AND table = 'twin_events' AND active`).Scan(&parts); err != nil || parts != 2 {
		t.Errorf("twin_events partitions: %d (%v), want 2 (March and April)", parts, err)
	}
	e.verifyExactlyOnce()
}

// TestRestartAndNewDatabase restarts the sink (nothing is written twice)
// and then points a sink at an empty database, which it fills from the
// stream although the durable consumer had acknowledged everything.
func TestRestartAndNewDatabase(t *testing.T) {
	e := newEnv(t, "")
	g := newGen(20, 1)
	e.publish(g, 3000)
	s := e.sink(Config{BatchEvents: 700, FlushInterval: 50 * time.Millisecond}, nil)
	stop := run(t, s)
	e.waitCommitted(s, 30*time.Second)
	stop()
	e.publish(g, 1000)
	s = e.sink(Config{BatchEvents: 700, FlushInterval: 50 * time.Millisecond}, nil)
	stop = run(t, s)
	e.waitCommitted(s, 30*time.Second)
	stop()
	e.verifyExactlyOnce()

	fresh := newEnvOn(t, e)
	s = fresh.sink(Config{BatchEvents: 700, FlushInterval: 50 * time.Millisecond}, nil)
	run(t, s)
	e.publish(g, 10) // a delivery makes the sink see the gap
	fresh.waitCommitted(s, 30*time.Second)
	fresh.verifyExactlyOnce()
}

// newEnvOn is e with a fresh ClickHouse database.
func newEnvOn(t *testing.T, e *env) *env {
	other := newEnv(t, "")
	c := *e
	c.chURL, c.opts, c.conn = other.chURL, other.opts, other.conn
	return &c
}

// TestFlushAndMetrics checks Flush, the metrics' values and names.
func TestFlushAndMetrics(t *testing.T) {
	e := newEnv(t, "")
	reg := prometheus.NewRegistry()
	s := e.sink(Config{FlushInterval: time.Hour, BatchEvents: 20_000}, reg)
	if err := s.Flush(context.Background()); err != ErrNotRunning {
		t.Errorf("Flush before Run: %v", err)
	}
	run(t, s)
	g := newGen(5, 2)
	e.publish(g, 500)
	// The batch only flushes on request: poll until the sink holds all, then flush.
	deadline := time.Now().Add(20 * time.Second)
	for s.Committed() < e.lastSeq() {
		if err := s.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("Flush did not write the events")
		}
	}
	e.verifyExactlyOnce()
	if got := testutil.ToFloat64(s.m.events); got != 500 {
		t.Errorf("events_written_total = %v, want 500", got)
	}
	if got := testutil.ToFloat64(s.m.batches.WithLabelValues("request")); got < 1 {
		t.Errorf("batches_total{reason=request} = %v", got)
	}
	probs, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probs {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
	n, err := testutil.GatherAndCount(reg, "twinhub_history_lag_events", "twinhub_history_lag_seconds")
	if err != nil || n != 2 {
		t.Errorf("lag metrics: %d, %v", n, err)
	}
	if v := gauge(t, reg, "twinhub_history_lag_events"); v != 0 {
		t.Errorf("lag_events = %v after catching up", v)
	}
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			return mf.Metric[0].GetGauge().GetValue()
		}
	}
	return math.NaN()
}
