package projection

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinhub/twinhub/deploy/embedded"
	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
	"github.com/twinhub/twinhub/pipeline/twin"
)

// The benchmarks run over a fleet of TWINHUB_BENCH_TWINS twins (default
// 20,000, so that `make bench` stays short). The figures in the README are
// from 1,000,000:
//
//	TWINHUB_BENCH_TWINS=1000000 go test ./queries/projection -run '^$' -bench . -benchtime 2s -timeout 60m
//
// Each twin is about 1 KB of JSON as GET /twins returns it: tags with a
// region (8 values), a plant (400) and a model (10,000, so about 100 twins
// each at 1M), a desired property and 13 reported properties, with their
// $metadata. The projection is fed the KV records' bytes directly (no
// NATS); BenchmarkLoadFromNATS measures the load through a real bucket.

func benchTwins() int {
	if n, err := strconv.Atoi(os.Getenv("TWINHUB_BENCH_TWINS")); err == nil && n > 0 {
		return n
	}
	return 20_000
}

// benchRecord returns device i's KV record, as the processor writes it.
func benchRecord(i int) (string, []byte) { return benchRecordGen(i, 0) }

// benchRecordGen returns device i's record after it reported gen times
// (its reported values change with gen).
func benchRecordGen(i, gen int) (string, []byte) {
	h := fnv.New64a()
	fmt.Fprint(h, i)
	if gen > 0 {
		fmt.Fprint(h, "/", gen)
	}
	r := h.Sum64()
	id := fmt.Sprintf("dev-%07d", i)
	t0 := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	tw := twin.New(id, t0)
	tags := map[string]any{
		"location": map[string]any{
			"region": []string{"us-east", "us-west", "eu-north", "eu-west", "ap-south", "ap-east", "sa-east", "af-south"}[i%8],
			"plant":  fmt.Sprintf("plant-%03d", (i/8)%400),
		},
		"model": fmt.Sprintf("model-%05d", uint64(i)*2654435761%10000),
	}
	desired := map[string]any{"telemetryConfig": map[string]any{"sendFrequency": "5m"}}
	tw, err := twin.ApplyService(tw, tags, desired, t0.Add(time.Second))
	if err != nil {
		panic(err)
	}
	reported := map[string]any{
		"fw":           fmt.Sprintf("2.%d.%d", r%4, (r>>8)%3),
		"temp":         float64(150+(r>>16)%200) / 10,
		"humidity":     int((r >> 24) % 100),
		"battery":      int((r >> 32) % 101),
		"online":       r%5 != 0,
		"mode":         []string{"auto", "manual", "eco"}[(r>>40)%3],
		"errors":       int((r >> 44) % 4),
		"uptime":       int64((r >> 20) % 10_000_000),
		"serial":       fmt.Sprintf("SN%012X", r&0xFFFFFFFFFFFF),
		"lastBoot":     twin.FormatTime(t0.Add(-time.Duration(r%1_000_000) * time.Second)),
		"connectivity": map[string]any{"type": []string{"cellular", "wifi", "ethernet"}[(r>>48)%3], "rssi": -int((r >> 52) % 90)},
		"position":     map[string]any{"lat": float64(int64(r%180_000)-90_000) / 1000, "lon": float64(int64((r>>18)%360_000)-180_000) / 1000},
	}
	at := t0.Add(time.Duration(r%86_400_000)*time.Millisecond + time.Duration(gen)*time.Hour)
	if tw, err = twin.ApplyReported(tw, reported, at); err != nil {
		panic(err)
	}
	tw.LastActivityTime = at
	if r%3 == 0 {
		tw.ConnectionState = "Connected"
	}
	rec := pipeline.Record{Twin: tw, Identity: pipeline.Identity{GenerationID: "638512345678901234", Etag: 1,
		PrimaryKey: "yCvPZ4a3WXcVq1mG0t8nE2rJ5bKxS7uH9dLfN6pQwR0=", SecondaryKey: "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1eF3hJ5kL7nP9=",
		ConnectionStateUpdatedTime: at}, LastEventSeq: uint64(3 * i), Recent: []string{"bZpI4DZW8NfByf0naz7Hyt", "bZpI4DZW8NfByf0naz7Hz9"}}
	b, err := json.Marshal(&rec)
	if err != nil {
		panic(err)
	}
	return topology.Key(id), b
}

// benchRecords builds n records on every core.
func benchRecords(n int) (keys []string, recs [][]byte) {
	keys, recs = make([]string, n), make([][]byte, n)
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := range workers {
		wg.Add(1)
		// Builds records w, w+workers, ...
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				keys[i], recs[i] = benchRecord(i)
			}
		}()
	}
	wg.Wait()
	return keys, recs
}

// benchFixture is the fleet's records and a projection loaded from them,
// built once per test binary.
type benchFixture struct {
	keys        []string
	recs        [][]byte
	p           *Projection
	loadTime    time.Duration
	heapBytes   uint64
	twinBytes   int
	blobBytes   int
	recordBytes int
}

var (
	fixtureOnce sync.Once
	fixture     *benchFixture
)

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// loadRecords decodes records as the watcher does and loads them.
func loadRecords(tb testing.TB, keys []string, recs [][]byte) *Projection {
	p, err := newProjection(Config{}, nil, prometheus.NewRegistry())
	if err != nil {
		tb.Fatal(err)
	}
	st := &stager{codec: p.store.codec}
	for i := range recs {
		c, err := decodeEntry(keys[i], recs[i], jetstream.KeyValuePut, uint64(i+1))
		if err != nil {
			tb.Fatal(err)
		}
		st.add(c)
	}
	p.load(st.finish())
	return p
}

func getFixture(b *testing.B) *benchFixture {
	fixtureOnce.Do(func() {
		n := benchTwins()
		start := time.Now()
		keys, recs := benchRecords(n)
		fx := &benchFixture{keys: keys, recs: recs}
		for _, r := range recs {
			fx.recordBytes += len(r)
		}
		b.Logf("built %d records (%.0f bytes each) in %s", n, float64(fx.recordBytes)/float64(n), time.Since(start).Round(time.Millisecond))
		before := heapAfterGC()
		start = time.Now()
		fx.p = loadRecords(b, keys, recs)
		fx.loadTime = time.Since(start)
		fx.heapBytes = heapAfterGC() - before
		fx.p.mu.RLock()
		for i := range fx.p.store.docs {
			d := &fx.p.store.docs[i]
			fx.twinBytes += len(fx.p.store.twinJSON(d))
			fx.blobBytes += len(d.blob)
		}
		fx.p.mu.RUnlock()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.Logf("loaded %d twins (%.0f bytes of JSON each, %.0f compressed) in %s; heap %.0f MB (%.0f bytes per twin); "+
			"the process holds %.0f MB from the OS (records included)", n,
			float64(fx.twinBytes)/float64(n), float64(fx.blobBytes)/float64(n), fx.loadTime.Round(time.Millisecond),
			float64(fx.heapBytes)/1e6, float64(fx.heapBytes)/float64(n), float64(ms.Sys)/1e6)
		fixture = fx
	})
	return fixture
}

// BenchmarkLoad measures decoding the KV records and building the
// projection; heap-MB is the live heap the projection holds after GC.
func BenchmarkLoad(b *testing.B) {
	fx := getFixture(b)
	for b.Loop() {
		loadRecords(b, fx.keys, fx.recs)
	}
	b.ReportMetric(float64(fx.heapBytes)/1e6, "heap-MB")
	b.ReportMetric(float64(fx.heapBytes)/float64(len(fx.recs)), "heap-B/twin")
	b.ReportMetric(float64(fx.twinBytes)/float64(len(fx.recs)), "json-B/twin")
	b.ReportMetric(float64(fx.blobBytes)/float64(len(fx.recs)), "stored-B/twin")
	b.ReportMetric(fx.loadTime.Seconds(), "first-load-s")
}

// benchQuery runs one query repeatedly and reports the median and 99th
// percentile latency of a page.
func benchQuery(b *testing.B, query string, pageSize int, wantRows func(int) bool) {
	fx := getFixture(b)
	// The first range or prefix query on a path orders its values, once:
	// first-ms is that first run, left out of the percentiles.
	start := time.Now()
	if _, err := fx.p.Query(context.Background(), Request{Query: query, PageSize: pageSize}); err != nil {
		b.Fatal(err)
	}
	first := time.Since(start)
	var times []time.Duration
	rows := 0
	for b.Loop() {
		start := time.Now()
		page, err := fx.p.Query(context.Background(), Request{Query: query, PageSize: pageSize})
		times = append(times, time.Since(start))
		if err != nil {
			b.Fatal(err)
		}
		rows = len(page.Items)
	}
	if !wantRows(rows) {
		b.Fatalf("%s: %d rows", query, rows)
	}
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(times[len(times)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(rows), "rows")
	b.ReportMetric(float64(first.Microseconds())/1000, "first-ms")
}

func atLeast(n int) func(int) bool { return func(r int) bool { return r >= n } }

// BenchmarkApply measures applying one live change: a device's new record
// (its 13 reported values and lastActivityTime changed, as after a reported
// patch) is compressed, flattened, and its index entries moved, under the
// exclusive lock. Decoding the KV entry (decodeEntry) is not included.
func BenchmarkApply(b *testing.B) {
	fx := getFixture(b)
	// Two generations of records for the same devices, applied in turn,
	// so that every change changes the values.
	const updates = 4096
	changes := make([]change, 2*updates)
	for u := range changes {
		i := ((u % updates) * 7919) % len(fx.recs)
		key, rec := benchRecordGen(i, 1+u/updates)
		c, err := decodeEntry(key, rec, jetstream.KeyValuePut, uint64(len(fx.recs)+u+1))
		if err != nil {
			b.Fatal(err)
		}
		changes[u] = c
	}
	n := 0
	for b.Loop() {
		fx.p.apply([]change{changes[n%len(changes)]})
		n++
	}
}

// BenchmarkQuery measures the target queries and a few other shapes.
func BenchmarkQuery(b *testing.B) {
	for _, c := range []struct {
		name, query string
		size        int
		rows        func(int) bool
	}{
		{"tag-eq-100", `SELECT * FROM devices WHERE tags.model = 'model-00042'`, 100, atLeast(1)},
		{"tag-eq-page", `SELECT * FROM devices WHERE tags.location.plant = 'plant-007'`, 100, atLeast(1)},
		{"seed-and", `SELECT * FROM devices WHERE tags.location.plant = 'plant-007' AND properties.reported.connectivity.type = 'cellular'`, 100, atLeast(1)},
		{"group-by-fw", `SELECT properties.reported.fw AS fw, COUNT() AS n FROM devices GROUP BY properties.reported.fw`, 100, atLeast(12)},
		{"count-where", `SELECT COUNT() AS n FROM devices WHERE tags.location.region = 'eu-west' AND properties.reported.online = true`, 100, atLeast(1)},
		{"range", `SELECT * FROM devices WHERE properties.reported.temp >= 30.5 AND properties.reported.battery < 10`, 100, atLeast(1)},
		{"in-list", `SELECT deviceId, properties.reported.fw AS fw FROM devices WHERE tags.model IN ['model-00001', 'model-00002', 'model-00003']`, 100, atLeast(1)},
		{"startswith", `SELECT deviceId FROM devices WHERE STARTSWITH(properties.reported.serial, 'SN00')`, 100, atLeast(1)},
		{"order-top10", `SELECT TOP 10 deviceId, properties.reported.temp AS t FROM devices WHERE tags.location.region = 'us-east' ORDER BY t DESC`, 100, atLeast(10)},
		{"avg-group", `SELECT tags.location.region AS r, AVG(properties.reported.temp) AS t, MAX(properties.reported.battery) AS b FROM devices GROUP BY tags.location.region`, 100, atLeast(8)},
		{"page-all", `SELECT * FROM devices`, 1000, atLeast(1000)},
		{"unindexed", `SELECT deviceId FROM devices WHERE properties.reported.humidity > properties.reported.battery AND tags.location.plant = 'plant-007'`, 100, atLeast(1)},
	} {
		b.Run(c.name, func(b *testing.B) { benchQuery(b, c.query, c.size, c.rows) })
	}
}

// BenchmarkLoadFromNATS measures the initial load through a real twin
// bucket: TWINHUB_BENCH_NATS_TWINS records (default 20,000) are written to
// an in-process nats-server, then a projection watches the bucket until it
// is loaded (Run until Loaded, as `twinhub run` starts).
func BenchmarkLoadFromNATS(b *testing.B) {
	n := 20_000
	if v, err := strconv.Atoi(os.Getenv("TWINHUB_BENCH_NATS_TWINS")); err == nil && v > 0 {
		n = v
	}
	ns, err := embedded.StartNATS(embedded.NATSConfig{Addr: "127.0.0.1:-1", StoreDir: b.TempDir(), Logger: quietLog()})
	if err != nil {
		b.Fatal(err)
	}
	defer ns.Shutdown()
	nc, err := ns.Connect("bench")
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if err := topology.Ensure(ctx, js, topology.Config{Partitions: 1}); err != nil {
		b.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, topology.TwinBucket)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	var wg sync.WaitGroup
	const writers = 64
	for w := range writers {
		wg.Add(1)
		// Writes records w, w+writers, ...
		go func() {
			defer wg.Done()
			for i := w; i < n; i += writers {
				key, rec := benchRecord(i)
				if _, err := kv.Put(ctx, key, rec); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.Logf("wrote %d records to the bucket in %s", n, time.Since(start).Round(time.Millisecond))
	for b.Loop() {
		p, err := Open(ctx, js, Config{Logger: quietLog()}, prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		// Runs until cancel.
		go func() { done <- p.Run(rctx) }()
		<-p.Loaded()
		cancel()
		<-done
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "twins/s")
}
