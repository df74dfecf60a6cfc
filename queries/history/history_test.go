package history

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	chdeploy "github.com/twinhub/twinhub/deploy/clickhouse"
	"github.com/twinhub/twinhub/deploy/clickhouse/testserver"
	"github.com/twinhub/twinhub/deploy/embedded"
	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
	"github.com/twinhub/twinhub/pipeline/twin"
)

func TestMain(m *testing.M) { os.Exit(testserver.Main(m)) }

// TestArguments: bad page sizes, time ranges and future instants are
// refused before anything is read.
func TestArguments(t *testing.T) {
	r := New(Config{}, nil, nil)
	ctx := context.Background()
	for _, q := range []pipeline.HistoryQuery{
		{Limit: -1}, {Limit: 1001},
		{From: time.Unix(100, 0), To: time.Unix(50, 0)},
	} {
		if _, err := r.Events(ctx, "d", q); !errors.Is(err, pipeline.ErrInvalidQuery) {
			t.Errorf("%+v: %v, want ErrInvalidQuery", q, err)
		}
	}
	if _, err := r.AsOf(ctx, "d", time.Now().Add(time.Minute)); !errors.Is(err, pipeline.ErrInvalidQuery) {
		t.Errorf("asOf in the future: %v", err)
	}
}

// TestReadsMergeClickHouseAndJetStream puts a device's first events in
// ClickHouse and all of them in JetStream, as when the sink is behind: the
// as-of twins equal those the processor's own replay gives at each event,
// and the pages list every event once, newest first.
func TestReadsMergeClickHouseAndJetStream(t *testing.T) {
	url := testserver.Database(t)
	opts, err := chdeploy.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := chdeploy.EnsureSchema(ctx, opts); err != nil {
		t.Fatal(err)
	}
	conn, err := chdeploy.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ns, err := embedded.StartNATS(embedded.NATSConfig{Addr: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	nc, _ := ns.Connect("test")
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := topology.Ensure(ctx, js, topology.Config{Partitions: 1}); err != nil {
		t.Fatal(err)
	}

	const dev = "dev 'q'"
	t0 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	evs := []pipeline.Event{
		{Op: pipeline.OpCreateDevice, Status: "enabled"},
		{Op: pipeline.OpUpdateTwin, Patch: pipeline.EventPatch{Tags: raw(`{"plant":"a"}`), Properties: &pipeline.EventProperties{Desired: raw(`{"x":1}`)}}},
		{Op: pipeline.OpUpdateTwin, Source: pipeline.SourceDevice, Patch: pipeline.EventPatch{Properties: &pipeline.EventProperties{Reported: raw(`{"t":20}`)}}},
		{Op: pipeline.OpReplaceTwin, Patch: pipeline.EventPatch{Tags: raw(`{}`), Properties: &pipeline.EventProperties{Desired: raw(`{"y":true}`)}}},
	}
	var rec *pipeline.Record
	var want []*twin.Twin
	for i := range evs {
		ev := &evs[i]
		ev.DeviceID, ev.GenerationID, ev.Version, ev.CommandID = dev, "g1", int64(i+2), "c"+string(rune('a'+i))
		if ev.Source == "" {
			ev.Source = pipeline.SourceBackend
		}
		ev.Time = twin.FormatTime(t0.Add(time.Duration(i) * time.Minute))
		if rec, err = pipeline.ApplyEvent(rec, ev); err != nil {
			t.Fatal(err)
		}
		ev.Etag, ev.DesiredVersion, ev.ReportedVersion = rec.Twin.ETag(), rec.Twin.Desired.Version, rec.Twin.Reported.Version
		want = append(want, rec.Twin)
		b, _ := json.Marshal(ev)
		if _, err := js.Publish(ctx, topology.EventSubject(dev), b); err != nil {
			t.Fatal(err)
		}
	}
	// ClickHouse has the first two events only.
	b, err := conn.PrepareBatch(ctx, "INSERT INTO twin_events (device_id, generation_id, version, op, source, etag, "+
		"desired_version, reported_version, event_time, event_time_ns, ingest_time, command_id, status, patch, stream_seq)")
	if err != nil {
		t.Fatal(err)
	}
	for i, ev := range evs[:2] {
		at, _ := time.Parse(time.RFC3339Nano, ev.Time)
		patch, _ := json.Marshal(ev.Patch)
		if err := b.Append(ev.DeviceID, ev.GenerationID, ev.Version, ev.Op, ev.Source, ev.Etag, ev.DesiredVersion, ev.ReportedVersion,
			at, at.UnixNano(), time.Now(), ev.CommandID, ev.Status, string(patch), uint64(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}

	r := New(Config{}, conn, js)
	for i := range evs {
		at := t0.Add(time.Duration(i)*time.Minute + 30*time.Second)
		got, err := r.AsOf(ctx, dev, at)
		if err != nil {
			t.Fatalf("asOf event %d: %v", i, err)
		}
		gb, _ := json.Marshal(got)
		wb, _ := json.Marshal(want[i])
		if string(gb) != string(wb) {
			t.Errorf("asOf after event %d\n got %s\nwant %s", i, gb, wb)
		}
	}
	if _, err := r.AsOf(ctx, dev, t0.Add(-time.Second)); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("asOf before creation: %v", err)
	}
	if _, err := r.Events(ctx, "nobody", pipeline.HistoryQuery{}); !errors.Is(err, pipeline.ErrNotFound) {
		t.Errorf("unknown device: %v", err)
	}
	var versions []int64
	q := pipeline.HistoryQuery{Limit: 3}
	for {
		page, err := r.Events(ctx, dev, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Events {
			versions = append(versions, e.Version)
		}
		if !page.More {
			break
		}
		q.Before = page.Events[len(page.Events)-1].Sequence
	}
	if !reflect.DeepEqual(versions, []int64{5, 4, 3, 2}) {
		t.Errorf("versions %v, want [5 4 3 2]", versions)
	}
	page, err := r.Events(ctx, dev, pipeline.HistoryQuery{From: t0.Add(time.Minute), To: t0.Add(2 * time.Minute)})
	if err != nil || len(page.Events) != 2 || page.Events[0].Version != 4 || page.More {
		t.Errorf("time window: %+v, %v", page, err)
	}
}
