package projection

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/twinhub/twinhub/deploy/embedded"
	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// hub is the real pipeline (processor, client, store) on an in-process
// nats-server, which writes the twin records a projection follows.
type hub struct {
	t      *testing.T
	ns     *embedded.NATS
	nc     *nats.Conn
	js     jetstream.JetStream
	client *pipeline.Client
	store  *pipeline.Store
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startHub(t *testing.T) *hub {
	t.Helper()
	ns, err := embedded.StartNATS(embedded.NATSConfig{Addr: "127.0.0.1:-1", StoreDir: t.TempDir(), Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := ns.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	subConn, err := ns.Connect("test-sub")
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	topo := topology.Config{Partitions: 4}
	if err := topology.Ensure(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	store, err := pipeline.OpenStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	client, err := pipeline.NewClient(nc, 4, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	proc, err := pipeline.NewProcessor(ctx, pipeline.ProcessorConfig{Topology: topo, Logger: quietLog()}, nc, subConn, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	// Runs until the cleanup cancels it.
	go func() { done <- proc.Run(pctx) }()
	<-proc.Running()
	t.Cleanup(func() {
		cancel()
		<-done
		client.Close()
	})
	return &hub{t: t, ns: ns, nc: nc, js: js, client: client, store: store}
}

func (h *hub) do(cmd pipeline.Command) pipeline.Result {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := h.client.Do(ctx, cmd)
	if err != nil || !res.OK() {
		h.t.Fatalf("%s %s: %+v %v", cmd.Kind, cmd.DeviceID, res, err)
	}
	return res
}

// follow starts a projection of the hub's bucket and waits for its load.
func (h *hub) follow(cfg Config) (*Projection, *prometheus.Registry) {
	h.t.Helper()
	reg := prometheus.NewRegistry()
	cfg.Logger = quietLog()
	p, err := Open(context.Background(), h.js, cfg, reg)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// Runs until the cleanup cancels it.
	go func() { done <- p.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			h.t.Errorf("projection: %v", err)
		}
	})
	select {
	case <-p.Loaded():
	case <-time.After(20 * time.Second):
		h.t.Fatal("the projection did not load")
	}
	return p, reg
}

// deviceIDs runs a query and returns the deviceIds of its rows.
func deviceIDs(t *testing.T, p *Projection, query string) []string {
	t.Helper()
	rows, _, _ := runAll(t, p, query, 1000)
	var out []string
	for _, r := range rows {
		var row struct{ DeviceID string }
		json.Unmarshal(r, &row)
		out = append(out, row.DeviceID)
	}
	return out
}

// TestFollowsTheBucket drives the real pipeline: twins that exist before the
// projection starts are loaded, and every change after it (created,
// reported, tagged, registry status, connection state, deleted) is visible
// to the very next query, on this projection and on a second one (another
// instance) sharing the NATS, with no waiting in the test. SELECT * rows are
// byte for byte the twin GET /twins returns.
func TestFollowsTheBucket(t *testing.T) {
	h := startHub(t)
	for i := range 20 {
		id := fmt.Sprintf("old-%02d", i)
		h.do(pipeline.Command{Kind: pipeline.KindCreateDevice, DeviceID: id})
		h.do(pipeline.Command{Kind: pipeline.KindPatchTwin, DeviceID: id, Body: []byte(fmt.Sprintf(`{"tags":{"n":%d,"s":"<&>"}}`, i))})
	}
	a, reg := h.follow(Config{})
	b, _ := h.follow(Config{})
	if got := deviceIDs(t, a, `SELECT * FROM devices WHERE tags.n >= 10`); len(got) != 10 || got[0] != "old-10" {
		t.Fatalf("loaded twins: %v", got)
	}
	for i := range 60 {
		id := fmt.Sprintf("new-%02d", i)
		p := []*Projection{a, b}[i%2]
		h.do(pipeline.Command{Kind: pipeline.KindCreateDevice, DeviceID: id})
		if got := deviceIDs(t, p, fmt.Sprintf(`SELECT * FROM devices WHERE deviceId = '%s'`, id)); len(got) != 1 {
			t.Fatalf("created %s, query sees %v", id, got)
		}
		h.do(pipeline.Command{Kind: pipeline.KindPatchReported, DeviceID: id, Body: []byte(fmt.Sprintf(`{"connectivity":{"type":"cellular"},"i":%d}`, i))})
		if got := deviceIDs(t, p, fmt.Sprintf(`SELECT * FROM devices WHERE properties.reported.i = %d AND properties.reported.connectivity.type = 'cellular'`, i)); len(got) != 1 || got[0] != id {
			t.Fatalf("reported for %s, query sees %v", id, got)
		}
		h.do(pipeline.Command{Kind: pipeline.KindPatchTwin, DeviceID: id, Body: []byte(`{"tags":{"location":{"plant":"Redmond43"}}}`)})
		if got := deviceIDs(t, p, `SELECT * FROM devices WHERE tags.location.plant = 'Redmond43'`); len(got) != i+1 {
			t.Fatalf("tagged %s, query sees %d twins", id, len(got))
		}
	}
	h.do(pipeline.Command{Kind: pipeline.KindUpdateDevice, DeviceID: "new-07", Body: []byte(`{"status":"disabled"}`)})
	if got := deviceIDs(t, b, `SELECT * FROM devices WHERE status = 'disabled'`); !slices.Equal(got, []string{"new-07"}) {
		t.Fatalf("disabled new-07, query sees %v", got)
	}
	h.do(pipeline.Command{Kind: pipeline.KindConnection, DeviceID: "new-08", Connected: true})
	if got := deviceIDs(t, a, `SELECT * FROM devices WHERE connectionState = 'Connected'`); !slices.Equal(got, []string{"new-08"}) {
		t.Fatalf("connected new-08, query sees %v", got)
	}
	h.do(pipeline.Command{Kind: pipeline.KindDeleteDevice, DeviceID: "old-03"})
	if got := deviceIDs(t, b, `SELECT * FROM devices WHERE STARTSWITH(deviceId, 'old-0')`); len(got) != 9 || slices.Contains(got, "old-03") {
		t.Fatalf("deleted old-03, query sees %v", got)
	}
	h.do(pipeline.Command{Kind: pipeline.KindCreateDevice, DeviceID: "old-03"})
	if got := deviceIDs(t, a, `SELECT * FROM devices WHERE deviceId = 'old-03' AND NOT IS_DEFINED(tags)`); len(got) != 1 {
		t.Fatalf("created old-03 again, query sees %v", got)
	}

	// Rows are the twins as GET /twins returns them.
	rows, twins, _ := runAll(t, a, `SELECT * FROM devices`, 7)
	if !twins || len(rows) != 80 {
		t.Fatalf("%d rows, twins %v", len(rows), twins)
	}
	for _, row := range rows {
		var r struct{ DeviceID string }
		json.Unmarshal(row, &r)
		rec, err := h.store.Get(context.Background(), r.DeviceID)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := json.Marshal(rec.Twin)
		if string(row) != string(want) {
			t.Fatalf("row of %s:\n%s\nGET gives\n%s", r.DeviceID, row, want)
		}
	}
	if n := testutil.ToFloat64(a.metrics.twins); n != 80 {
		t.Errorf("twinhub_projection_twins = %v", n)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("metric lint: %v %v", problems, err)
	}
}

// TestReadYourWritesUnderLoad writes from several goroutines while each
// checks, right after every acknowledged write, that a query sees it.
func TestReadYourWritesUnderLoad(t *testing.T) {
	h := startHub(t)
	p, _ := h.follow(Config{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		// Writes and checks its own devices, then exits.
		go func() {
			defer wg.Done()
			for i := range 25 {
				id := fmt.Sprintf("w%d-%02d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				res, err := h.client.Do(ctx, pipeline.Command{Kind: pipeline.KindCreateDevice, DeviceID: id})
				if err == nil && res.OK() {
					res, err = h.client.Do(ctx, pipeline.Command{Kind: pipeline.KindPatchReported, DeviceID: id, Body: []byte(`{"v":1}`)})
				}
				cancel()
				if err != nil || !res.OK() {
					t.Errorf("writing %s: %+v %v", id, res, err)
					return
				}
				page, err := p.Query(context.Background(), Request{Query: fmt.Sprintf(`SELECT deviceId FROM devices WHERE deviceId = '%s' AND properties.reported.v = 1`, id)})
				if err != nil || len(page.Items) != 1 {
					t.Errorf("%s written, query gives %v %v", id, page, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := deviceIDs(t, p, `SELECT * FROM devices WHERE properties.reported.v = 1`); len(got) != 100 {
		t.Fatalf("%d twins", len(got))
	}
}

// TestLagging: a projection that does not follow the bucket refuses
// queries with ErrLagging instead of answering from an old state.
func TestLagging(t *testing.T) {
	h := startHub(t)
	p, err := Open(context.Background(), h.js, Config{CatchUpTimeout: 200 * time.Millisecond, Logger: quietLog()}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Query(context.Background(), Request{Query: "SELECT * FROM devices"}); !errors.Is(err, ErrLagging) {
		t.Fatalf("query before the load: %v", err)
	}
}

// TestWatchResumesAfterNATSRestart restarts the nats-server under a running
// projection: it watches again from where it was, and sees later writes.
func TestWatchResumesAfterNATSRestart(t *testing.T) {
	dir := t.TempDir()
	// The same user before and after the restart.
	user := embedded.NATSUser{Name: "test", Password: embedded.NewPassword()}
	ns, err := embedded.StartNATS(embedded.NATSConfig{Addr: "127.0.0.1:-1", StoreDir: dir, Internal: user, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	url := ns.ClientURL()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.UserInfo(user.Name, user.Password))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if err := topology.Ensure(ctx, js, topology.Config{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, topology.TwinBucket)
	if err != nil {
		t.Fatal(err)
	}
	f := newFleet(t, 5)
	put := func(id string) {
		t.Helper()
		rec := fmt.Sprintf(`{"twin":%s,"identity":{"generationId":"1","etag":1},"lastEventSeq":0}`, f.twinJSON(id))
		deadline := time.Now().Add(20 * time.Second)
		for {
			// Right after a restart JetStream may drop a publish without an
			// answer: give each attempt a short deadline.
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			_, err := kv.Put(pctx, topology.Key(id), []byte(rec))
			cancel()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("put %s: %v", id, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	first := f.create()
	put(first)
	p, err := Open(ctx, js, Config{Logger: quietLog()}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	// Runs until cancel.
	go func() { done <- p.Run(rctx) }()
	defer func() { cancel(); <-done }()
	<-p.Loaded()

	ns.Shutdown()
	ns, err = embedded.StartNATS(embedded.NATSConfig{Addr: url[len("nats://"):], StoreDir: dir, Internal: user, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	second := f.create()
	put(second)
	deadline := time.Now().Add(30 * time.Second)
	for {
		page, err := p.Query(ctx, Request{Query: "SELECT deviceId FROM devices"})
		if err == nil && len(page.Items) == 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the restart: %v %v", page, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
