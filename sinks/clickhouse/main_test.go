package clickhouse

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	chdeploy "github.com/twinhub/twinhub/deploy/clickhouse"
	"github.com/twinhub/twinhub/deploy/clickhouse/testserver"
	"github.com/twinhub/twinhub/deploy/embedded"
	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
	"github.com/twinhub/twinhub/pipeline/twin"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	os.Exit(testserver.Main(m))
}

func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// env is an embedded NATS with twinhub's topology and a fresh ClickHouse
// database; tests publish change events and run sinks against them.
type env struct {
	t      testing.TB
	ns     *embedded.NATS
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	chURL  string
	opts   *ch.Options
	conn   driver.Conn
}

// testNATSUser is the embedded NATS's user, known so that a child process
// can connect too.
var testNATSUser = embedded.NATSUser{Name: "test", Password: embedded.NewPassword()}

func newEnv(t testing.TB, chURL string) *env {
	t.Helper()
	if chURL == "" {
		chURL = testserver.Database(t)
	}
	ns, err := embedded.StartNATS(embedded.NATSConfig{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), Logger: testLogger(),
		Internal: testNATSUser})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := ns.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if err := topology.Ensure(ctx, js, topology.Config{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, topology.EventStream)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := chdeploy.ParseURL(chURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := chdeploy.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &env{t: t, ns: ns, nc: nc, js: js, stream: stream, chURL: chURL, opts: opts, conn: conn}
}

// sink builds a sink on the env with small batches unless cfg says otherwise.
func (e *env) sink(cfg Config, reg prometheus.Registerer) *Sink {
	e.t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s, err := New(cfg, e.opts, e.js, reg)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// run runs s until the returned stop is called; stop waits for Run.
func run(t testing.TB, s *Sink) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// Exits when stop cancels ctx.
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("sink Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// lastSeq is the event stream's last sequence.
func (e *env) lastSeq() uint64 {
	e.t.Helper()
	info, err := e.stream.Info(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.LastSeq
}

// waitCommitted polls until the sink has every event of the stream in ClickHouse.
func (e *env) waitCommitted(s *Sink, timeout time.Duration) {
	e.t.Helper()
	want := e.lastSeq()
	deadline := time.Now().Add(timeout)
	for s.Committed() < want {
		if time.Now().After(deadline) {
			e.t.Fatalf("sink committed seq %d, want %d, after %s", s.Committed(), want, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// gen produces realistic change events for a fleet: each device is
// created, then gets reported patches, back-end patches, replacements and
// now and then a delete and a re-create (a new generation).
type gen struct {
	mu      sync.Mutex
	rng     *rand.Rand
	devices []string
	state   map[string]*devState
	at      time.Time
	step    time.Duration
}

type devState struct {
	generation string
	version    int64
	deleted    bool
	n          int
}

func newGen(devices int, seed uint64) *gen {
	g := &gen{rng: rand.New(rand.NewPCG(seed, 1)), state: map[string]*devState{},
		at: time.Now().UTC().Add(-2 * time.Hour), step: time.Millisecond}
	for i := range devices {
		id := fmt.Sprintf("dev-%03d", i)
		if i%7 == 3 {
			id = fmt.Sprintf("dev %03d/'quoted'", i) // IDs that need escaping
		}
		g.devices = append(g.devices, id)
	}
	return g
}

// next returns the next event of a random device.
func (g *gen) next() pipeline.Event {
	g.mu.Lock()
	defer g.mu.Unlock()
	id := g.devices[g.rng.IntN(len(g.devices))]
	st := g.state[id]
	g.at = g.at.Add(g.step)
	ev := pipeline.Event{DeviceID: id, Time: twin.FormatTime(g.at), CommandID: "c" + strconv.FormatInt(g.at.UnixNano(), 36),
		Source: pipeline.SourceBackend}
	if st == nil || st.deleted {
		gid := strconv.FormatInt(g.at.UnixNano(), 10)
		st = &devState{generation: gid, version: 2}
		g.state[id] = st
		ev.Op, ev.GenerationID, ev.Version, ev.Status = pipeline.OpCreateDevice, gid, 2, "enabled"
		ev.DesiredVersion, ev.ReportedVersion = 1, 1
		return ev
	}
	st.n++
	st.version++
	ev.GenerationID, ev.Version = st.generation, st.version
	switch r := g.rng.IntN(100); {
	case r < 60:
		ev.Op, ev.Source = pipeline.OpUpdateTwin, pipeline.SourceDevice
		ev.Patch.Properties = &pipeline.EventProperties{Reported: json.RawMessage(fmt.Sprintf(
			`{"temperature":%.1f,"humidity":%d,"firmware":{"version":"1.0.%d"},"online":true,"note":null}`,
			15+g.rng.Float64()*10, 30+g.rng.IntN(40), st.n/20))}
	case r < 80:
		ev.Op = pipeline.OpUpdateTwin
		ev.Patch.Tags = json.RawMessage(fmt.Sprintf(`{"plant":"plant-%d","line":{"id":%d}}`, g.rng.IntN(3), g.rng.IntN(5)))
		ev.Patch.Properties = &pipeline.EventProperties{Desired: json.RawMessage(fmt.Sprintf(`{"interval":%d,"modes":["a","b"]}`, g.rng.IntN(60)))}
	case r < 97:
		ev.Op = pipeline.OpReplaceTwin
		ev.Patch.Tags = json.RawMessage(`{"plant":"plant-1"}`)
		ev.Patch.Properties = &pipeline.EventProperties{Desired: json.RawMessage(`{"interval":30}`)}
	default:
		ev.Op = pipeline.OpDeleteDevice
		st.deleted = true
	}
	return ev
}

// publish publishes n generated events and waits until JetStream has them all.
func (e *env) publish(g *gen, n int) {
	e.t.Helper()
	for i := 0; i < n; i++ {
		ev := g.next()
		b, _ := json.Marshal(ev)
		if _, err := e.js.PublishAsync(topology.EventSubject(ev.DeviceID), b); err != nil {
			e.t.Fatal(err)
		}
		if i%5000 == 4999 {
			<-e.js.PublishAsyncComplete()
		}
	}
	select {
	case <-e.js.PublishAsyncComplete():
	case <-time.After(30 * time.Second):
		e.t.Fatal("publishing events did not complete")
	}
}

// publishAt publishes events at about rate per second until stop is
// closed; it returns a channel that yields the number published when done.
func (e *env) publishAt(g *gen, rate int, stop <-chan struct{}) <-chan int {
	out := make(chan int, 1)
	// Exits when stop is closed.
	go func() {
		n := 0
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				<-e.js.PublishAsyncComplete()
				out <- n
				return
			case <-tick.C:
			}
			for range rate / 100 {
				ev := g.next()
				b, _ := json.Marshal(ev)
				if _, err := e.js.PublishAsync(topology.EventSubject(ev.DeviceID), b); err != nil {
					e.t.Errorf("publishing an event: %v", err)
				}
				n++
			}
		}
	}()
	return out
}

// expected is what the stream says ClickHouse must hold.
type expected struct {
	events   int
	leaves   int
	versions map[string][]int64 // device/generation → versions in stream order
}

func (e *env) expected() expected {
	e.t.Helper()
	ctx := context.Background()
	last := e.lastSeq()
	exp := expected{versions: map[string][]int64{}}
	if last == 0 {
		return exp
	}
	oc, err := e.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		e.t.Fatal(err)
	}
	for seq := uint64(0); seq < last; {
		mb, err := oc.Fetch(5000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			e.t.Fatal(err)
		}
		got := 0
		for m := range mb.Messages() {
			got++
			md, _ := m.Metadata()
			seq = md.Sequence.Stream
			var ev pipeline.Event
			if err := json.Unmarshal(m.Data(), &ev); err != nil {
				e.t.Fatal(err)
			}
			leaves, err := Leaves(&ev)
			if err != nil {
				e.t.Fatal(err)
			}
			exp.events++
			exp.leaves += len(leaves)
			k := ev.DeviceID + "/" + ev.GenerationID
			exp.versions[k] = append(exp.versions[k], ev.Version)
		}
		if got == 0 {
			e.t.Fatalf("reading the stream stalled at seq %d of %d", seq, last)
		}
	}
	return exp
}

// verifyExactlyOnce compares ClickHouse with the stream: per device and
// generation, count() equals the distinct versions, the versions are those
// of the stream without gaps, and every leaf row is there once.
func (e *env) verifyExactlyOnce() {
	e.t.Helper()
	ctx := context.Background()
	exp := e.expected()
	rows, err := e.conn.Query(ctx, `SELECT device_id, generation_id, count(), uniqExact(version), min(version), max(version)
		FROM twin_events GROUP BY device_id, generation_id`)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	seen := 0
	total := 0
	for rows.Next() {
		var dev, gen string
		var n, distinct uint64
		var lo, hi int64
		if err := rows.Scan(&dev, &gen, &n, &distinct, &lo, &hi); err != nil {
			e.t.Fatal(err)
		}
		seen++
		total += int(n)
		want := exp.versions[dev+"/"+gen]
		switch {
		case n != distinct:
			e.t.Errorf("%s/%s: %d rows but %d distinct versions: duplicates", dev, gen, n, distinct)
		case int(n) != len(want):
			e.t.Errorf("%s/%s: %d versions in ClickHouse, %d in the stream", dev, gen, n, len(want))
		case lo != want[0] || hi != want[len(want)-1] || hi-lo+1 != int64(n):
			e.t.Errorf("%s/%s: versions %d..%d (%d rows), stream has %d..%d: a gap", dev, gen, lo, hi, n, want[0], want[len(want)-1])
		}
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
	if seen != len(exp.versions) || total != exp.events {
		e.t.Errorf("ClickHouse has %d events of %d device generations; the stream has %d events of %d", total, seen, exp.events, len(exp.versions))
	}
	var leaves, distinctLeaves uint64
	if err := e.conn.QueryRow(ctx, `SELECT count(), uniqExact(device_id, generation_id, version, section, path) FROM twin_leaves`).
		Scan(&leaves, &distinctLeaves); err != nil {
		e.t.Fatal(err)
	}
	if leaves != distinctLeaves || int(leaves) != exp.leaves {
		e.t.Errorf("twin_leaves: %d rows, %d distinct; the stream's events have %d leaves", leaves, distinctLeaves, exp.leaves)
	}
	if e.t.Failed() {
		for table, key := range map[string]string{"twin_events": "stream_seq", "twin_leaves": "stream_seq, section, path"} {
			var first, last, n uint64
			e.conn.QueryRow(ctx, `SELECT min(stream_seq), max(stream_seq), uniqExact(stream_seq) FROM (SELECT stream_seq, count() AS c
				FROM `+table+` GROUP BY `+key+` HAVING c > 1)`).Scan(&first, &last, &n)
			e.t.Logf("%s: %d sequences written more than once, from %d to %d", table, n, first, last)
		}
		return
	}
	e.t.Logf("verified %d events and %d leaf rows of %d device generations: each exactly once", exp.events, exp.leaves, len(exp.versions))
}
