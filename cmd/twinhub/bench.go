package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/twinhub/twinhub/bridge/mqttbridge"
	"github.com/twinhub/twinhub/bridge/sas"
	"github.com/twinhub/twinhub/deploy/embedded"
	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// benchConfig is `twinhub bench`'s configuration.
type benchConfig struct {
	devices    int
	duration   time.Duration
	rate       float64 // reported updates per second over all devices; 0 = closed loop
	patchSize  int
	qos        int
	fanout     int     // devices that receive desired patches
	fanoutRate float64 // desired PATCHes per second
	baseline   bool
	jsonOut    string
	cpuProfile string
	memProfile string
	client     clientFlags
	mqttURL    string
	natsURL    string
	embedded   bool
	history    string // --history: the embedded hub's --clickhouse-local
}

// stat collects one measurement's samples.
type stat struct {
	Name     string  `json:"name"`
	Count    int     `json:"count"`
	Errors   int64   `json:"errors"`
	Rate     float64 `json:"rate_per_second"`
	P50      float64 `json:"p50_ms"`
	P90      float64 `json:"p90_ms"`
	P99      float64 `json:"p99_ms"`
	Max      float64 `json:"max_ms"`
	Baseline string  `json:"baseline,omitempty"`
	Ratio    float64 `json:"ratio_to_baseline,omitempty"`

	mu      sync.Mutex
	samples []time.Duration
	errs    atomic.Int64
}

func (s *stat) add(d time.Duration) {
	s.mu.Lock()
	s.samples = append(s.samples, d)
	s.mu.Unlock()
}

func (s *stat) fail() { s.errs.Add(1) }

func (s *stat) finish(elapsed time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	slices.Sort(s.samples)
	s.Count, s.Errors = len(s.samples), s.errs.Load()
	if elapsed > 0 {
		s.Rate = float64(s.Count) / elapsed.Seconds()
	}
	q := func(f float64) float64 {
		if len(s.samples) == 0 {
			return 0
		}
		return float64(s.samples[min(len(s.samples)-1, int(f*float64(len(s.samples))))]) / 1e6
	}
	s.P50, s.P90, s.P99 = q(0.50), q(0.90), q(0.99)
	if len(s.samples) > 0 {
		s.Max = float64(s.samples[len(s.samples)-1]) / 1e6
	}
}

// benchReport is what bench prints and writes as JSON.
type benchReport struct {
	Started  time.Time `json:"started"`
	Machine  string    `json:"machine"`
	Devices  int       `json:"devices"`
	Duration string    `json:"duration"`
	Rate     float64   `json:"offered_rate"`
	Patch    int       `json:"patch_bytes"`
	QoS      int       `json:"qos"`
	Stats    []*stat   `json:"results"`
	Notes    []string  `json:"notes,omitempty"`
	// HubCPUMicros is the hub's CPU time per acknowledged reported update;
	// HubPeakRSSMiB its largest resident memory over the run. Against an
	// embedded hub both are the bench process's (hub and load generator).
	HubCPUMicros  float64 `json:"hub_cpu_us_per_update,omitempty"`
	HubPeakRSSMiB float64 `json:"hub_peak_rss_mib,omitempty"`
}

func newBenchCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "a simulated fleet against a hub (its own embedded one by default)",
		Args:  noArgs,
	}
	fs := &envFlags{FlagSet: cmd.Flags()}
	config := benchFlags(fs)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := config()
		if err != nil {
			return err
		}
		return runBench(cmd.Context(), c)
	}
	return cmd
}

// benchFlags declares `twinhub bench`'s flags; the returned func reads them after parsing.
func benchFlags(fs *envFlags) func() (benchConfig, error) {
	var c benchConfig
	c.client = addClientFlags(fs)
	devices := fs.Int("devices", 1000, "simulated devices, one MQTT connection each")
	duration := fs.Duration("duration", 30*time.Second, "length of the reported-update phase")
	rate := fs.Int("rate", 0, "reported updates per second over all devices (0: closed loop, each device waits for its 204)")
	patchSize := fs.Int("patch-size", 200, "bytes per reported patch")
	qos := fs.Int("qos", 1, "MQTT QoS of device requests (0 or 1)")
	fanout := fs.Int("fanout", 1000, "devices that receive back-end desired PATCHes in the fan-out phase (0: skip)")
	fanoutRate := fs.Int("fanout-rate", 500, "desired PATCHes per second in the fan-out phase")
	baseline := fs.Bool("baseline", false, "also measure the raw broker (QoS 1 round trip, same client library) and raw JetStream publish")
	jsonOut := fs.String("json", "", "also write the results as JSON to this file")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the whole run (embedded hub included) to this file")
	memProfile := fs.String("memprofile", "", "write a heap profile at the end to this file")
	mqttURL := fs.String("mqtt", "", "broker of the hub under test (default: its own embedded hub's); a comma-separated list spreads the devices over several instances")
	natsURL := fs.String("nats", "", "NATS URL with credentials of the hub under test, for event latency and the JetStream baseline (default: the embedded hub's); "+
		"`twinhub nats-credentials --user twinhub` prints it (the events user suffices without --baseline)")
	history := fs.String("history", "auto", "the embedded hub keeps history in a local ClickHouse: auto (when installed), on or off")
	return func() (benchConfig, error) {
		if err := fs.Err(); err != nil {
			return c, err
		}
		c.devices, c.duration, c.rate, c.patchSize, c.qos = *devices, *duration, float64(*rate), *patchSize, *qos
		c.fanout, c.fanoutRate, c.baseline, c.jsonOut = min(*fanout, *devices), float64(*fanoutRate), *baseline, *jsonOut
		c.cpuProfile, c.memProfile, c.mqttURL, c.natsURL, c.history = *cpuProfile, *memProfile, *mqttURL, *natsURL, *history
		if c.devices < 1 || c.patchSize < 16 || (c.qos != 0 && c.qos != 1) {
			return c, usageError{errors.New("--devices must be ≥ 1, --patch-size ≥ 16, --qos 0 or 1")}
		}
		c.embedded = !fs.Changed("server")
		return c, nil
	}
}

// freeAddr returns a loopback address with a free port.
func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer ln.Close()
	return ln.Addr().String()
}

func runBench(ctx context.Context, c benchConfig) error {
	out := os.Stdout
	if c.cpuProfile != "" {
		f, err := os.Create(c.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	rep := &benchReport{Started: time.Now().UTC(), Devices: c.devices, Duration: c.duration.String(), Rate: c.rate,
		Patch: c.patchSize, QoS: c.qos, Machine: fmt.Sprintf("%s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())}

	embeddedNATS := "" // the embedded hub's NATS address
	if c.embedded {
		dir, err := os.MkdirTemp("", "twinhub-bench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		cfg, err := parseRunFlags([]string{"--data-dir", dir, "--http-addr", freeAddr(), "--mqtt-addr", freeAddr(),
			"--nats-addr", freeAddr(), "--mqtts-addr", "", "--https-addr", "", "--log-level", "warn",
			"--clickhouse-local", c.history, "--clickhouse-local-addr", freeAddr()})
		if err != nil {
			return err
		}
		hctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		done := make(chan error, 1)
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		// Runs until stop below.
		go func() { done <- run(hctx, cfg, log) }()
		defer func() {
			stop()
			<-done
		}()
		*c.client.server, *c.client.dataDir = "http://"+cfg.httpAddr, dir
		c.mqttURL, embeddedNATS = "tcp://"+cfg.mqttAddr, cfg.natsAddr
		fmt.Fprintf(out, "started an embedded twinhub in %s (HTTP %s, MQTT %s)\n", dir, cfg.httpAddr, cfg.mqttAddr)
	}
	if c.mqttURL == "" {
		return errors.New("--mqtt is required with --server")
	}
	if err := waitHealthy(ctx, *c.client.server); err != nil {
		return err
	}
	if embeddedNATS != "" {
		// The hub wrote its NATS passwords at start. The raw JetStream
		// baseline creates a stream: it connects as twinhub's own user.
		ps, err := embedded.LoadNATSPasswords(filepath.Join(*c.client.dataDir, natsPasswordsFile))
		if err != nil {
			return err
		}
		c.natsURL = natsCredentialsURL(embedded.InternalNATSUser, ps.Internal, embeddedNATS)
	}
	// After the hub is up: an embedded hub writes its policies at start.
	api, err := c.client.client()
	if err != nil {
		return err
	}
	var peakRSS atomic.Int64
	rssCtx, stopRSS := context.WithCancel(ctx)
	defer stopRSS()
	// Samples the hub's memory until stopRSS.
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			if v, ok := scrapeGauge(api.base, "process_resident_memory_bytes"); ok && int64(v) > peakRSS.Load() {
				peakRSS.Store(int64(v))
			}
			select {
			case <-rssCtx.Done():
				return
			case <-t.C:
			}
		}
	}()

	ids := make([]string, c.devices)
	for i := range ids {
		ids[i] = fmt.Sprintf("bench-%05d", i)
	}
	fmt.Fprintf(out, "creating %d devices …\n", c.devices)
	keys, err := createFleet(ctx, api, ids)
	if err != nil {
		return err
	}
	var nc *nats.Conn
	if c.natsURL != "" {
		if nc, err = nats.Connect(c.natsURL); err != nil {
			return fmt.Errorf("connecting to NATS %s: %w", redactURL(c.natsURL), err)
		}
		defer nc.Close()
	}

	// The raw-broker baseline connects as the devices, so it runs before
	// the simulated devices connect.
	var raw *stat
	if c.baseline {
		fmt.Fprintf(out, "baseline: raw broker QoS %d round trips for %s …\n", c.qos, min(c.duration, 20*time.Second))
		raw = benchRawBroker(ctx, c, ids, keys)
		rep.Stats = append(rep.Stats, raw)
	}
	fmt.Fprintf(out, "connecting %d devices …\n", c.devices)
	devs, err := dialFleet(ctx, c, ids, keys)
	if err != nil {
		return err
	}
	defer func() {
		for _, d := range devs {
			d.Close()
		}
	}()

	fmt.Fprintf(out, "reported updates from %d devices for %s …\n", c.devices, c.duration)
	cpu0, cpuOK := scrapeGauge(api.base, "process_cpu_seconds_total")
	reported, event, row, mqttGet, httpGet := benchReported(ctx, c, devs, api, nc, out)
	if cpu1, ok := scrapeGauge(api.base, "process_cpu_seconds_total"); ok && cpuOK && reported.Count > 0 {
		rep.HubCPUMicros = (cpu1 - cpu0) / float64(reported.Count) * 1e6
	}
	rep.Stats = append(rep.Stats, reported, event)
	if row.Count > 0 {
		rep.Stats = append(rep.Stats, row)
	} else {
		rep.Notes = append(rep.Notes, "history was off: no publish → ClickHouse row figure (install clickhouse-server: make deps)")
	}
	rep.Stats = append(rep.Stats, mqttGet, httpGet)
	if raw != nil && raw.Rate > 0 {
		reported.Baseline, reported.Ratio = raw.Name, reported.Rate/raw.Rate
	}

	if c.fanout > 0 {
		fmt.Fprintf(out, "desired fan-out: PATCH to %d devices at %.0f/s …\n", c.fanout, c.fanoutRate)
		rep.Stats = append(rep.Stats, benchFanout(ctx, c, devs[:c.fanout], api))
	}
	if c.baseline && nc != nil {
		fmt.Fprintln(out, "baseline: raw JetStream async publish for 5s …")
		js := benchRawJetStream(ctx, nc, c.patchSize)
		rep.Stats = append(rep.Stats, js)
		if js.Rate > 0 {
			event.Baseline, event.Ratio = js.Name, event.Rate/js.Rate
		}
	}
	if c.memProfile != "" {
		f, err := os.Create(c.memProfile)
		if err == nil {
			runtime.GC()
			pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	stopRSS()
	rep.HubPeakRSSMiB = float64(peakRSS.Load()) / (1 << 20)
	whose := "the hub's"
	if c.embedded {
		whose = "the bench process's (hub and load generator together)"
	}
	if rep.HubCPUMicros > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("CPU per reported update: %.0f µs, %s process_cpu_seconds_total over the reported phase", rep.HubCPUMicros, whose))
	}
	if rep.HubPeakRSSMiB > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("peak resident memory: %.0f MiB, %s process_resident_memory_bytes, sampled every second", rep.HubPeakRSSMiB, whose))
	}
	printReport(out, rep)
	if c.jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(c.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func waitHealthy(ctx context.Context, server string) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(strings.TrimRight(server, "/") + "/healthz")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("twinhub at %s is not healthy: %v", server, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// parallel runs fn for 0..n-1 on workers goroutines.
func parallel(n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var first error
	var mu sync.Mutex
	for range workers {
		wg.Add(1)
		// Exits when every index is taken.
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// createFleet creates the devices (keeping existing ones) and returns their primary keys.
func createFleet(ctx context.Context, api *apiClient, ids []string) ([]string, error) {
	keys := make([]string, len(ids))
	err := parallel(len(ids), 16, func(i int) error {
		b, err := api.call(ctx, http.MethodPut, "/devices/"+ids[i], nil, nil)
		if err != nil && !strings.Contains(err.Error(), "DeviceAlreadyExists") {
			return err
		}
		if b == nil || api.cred.SharedAccessKey == "" {
			cs, err := api.deviceConnectionString(ctx, ids[i], "", "localhost")
			keys[i] = cs.SharedAccessKey
			return err
		}
		var d pipeline.DeviceDocument
		if err := json.Unmarshal(b, &d); err != nil {
			return err
		}
		keys[i] = d.Authentication.SymmetricKey.PrimaryKey
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("creating devices: %w", err)
	}
	return keys, nil
}

// devicePassword is a day-long SAS token for a device, or "" without a key.
func devicePassword(id, key string) string {
	if key == "" {
		return ""
	}
	tok, err := sas.New(sas.DeviceResource("localhost", id), key, "", time.Now().Add(24*time.Hour))
	if err != nil {
		return ""
	}
	return tok
}

// dialFleet connects every device.
func dialFleet(ctx context.Context, c benchConfig, ids, keys []string) ([]*mqttbridge.DeviceClient, error) {
	devs := make([]*mqttbridge.DeviceClient, len(ids))
	err := parallel(len(ids), 16, func(i int) error {
		opts := mqttbridge.DeviceOptions{Username: ids[i], QoS: byte(c.qos), Password: devicePassword(ids[i], keys[i])}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		// Devices spread over the brokers round robin (several instances).
		urls := strings.Split(c.mqttURL, ",")
		d, err := mqttbridge.DialDevice(dctx, urls[i%len(urls)], ids[i], opts)
		devs[i] = d
		return err
	})
	if err != nil {
		for _, d := range devs {
			if d != nil {
				d.Close()
			}
		}
		return nil, fmt.Errorf("connecting devices: %w", err)
	}
	return devs, nil
}

// getPause separates the GETs measured under load (over MQTT and over HTTP,
// one at a time each): about 20 of each per second, a sample of latency that
// takes little from the load it measures (a GET costs the hub about as much
// CPU as a reported update).
const getPause = 50 * time.Millisecond

// pacer hands out send slots at a fixed rate (or unlimited when rate is 0).
type pacer struct {
	start    time.Time
	interval time.Duration
	n        atomic.Int64
}

func newPacer(rate float64) *pacer {
	p := &pacer{start: time.Now()}
	if rate > 0 {
		p.interval = time.Duration(float64(time.Second) / rate)
	}
	return p
}

// wait blocks until the next slot, or returns false when ctx ends.
func (p *pacer) wait(ctx context.Context) bool {
	if p.interval == 0 {
		return ctx.Err() == nil
	}
	at := p.start.Add(time.Duration(p.n.Add(1)) * p.interval)
	if d := time.Until(at); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return false
		}
	}
	return ctx.Err() == nil
}

func benchReported(ctx context.Context, c benchConfig, devs []*mqttbridge.DeviceClient, api *apiClient, nc *nats.Conn, out io.Writer) (reported, event, row, mqttGet, httpGet *stat) {
	reported = &stat{Name: fmt.Sprintf("reported update: publish → 204 (QoS %d)", c.qos)}
	event = &stat{Name: "reported update: publish → change event"}
	row = &stat{Name: "reported update: publish → ClickHouse row (1 in 50 sampled)"}
	mqttGet = &stat{Name: "twin GET over MQTT, under load"}
	httpGet = &stat{Name: "twin GET over HTTP, under load"}

	// Rows are sampled only when the hub keeps history (its sink reports a
	// committed sequence).
	_, history := scrapeGauge(api.base, "twinhub_history_committed_sequence")
	track := &eventTracker{sent: map[patchKey]time.Time{}, event: event, row: row, sampleRows: history}
	rowCtx, stopRows := context.WithCancel(ctx)
	rowsDone := make(chan struct{})
	if nc != nil {
		stop, err := track.follow(ctx, nc)
		if err != nil {
			fmt.Fprintf(out, "no event latency: %v\n", err)
		} else {
			defer stop()
		}
		// Follows the sink's acknowledged stream sequence; exits when rowCtx ends.
		go func() {
			defer close(rowsDone)
			if history {
				track.followRows(rowCtx, nc)
			}
		}()
	} else {
		close(rowsDone)
	}

	pad := strings.Repeat("x", max(0, c.patchSize-60))
	rctx, cancel := context.WithTimeout(ctx, c.duration)
	defer cancel()
	pace := newPacer(c.rate)
	var wg sync.WaitGroup
	start := time.Now()
	for i, d := range devs {
		wg.Add(1)
		// Exits when the phase ends.
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("bench-%05d", i)
			for seq := int64(1); pace.wait(rctx); seq++ {
				patch := fmt.Sprintf(`{"seq":%d,"temperature":%d.5,"pad":"%s"}`, seq, 20+seq%10, pad)
				t0 := time.Now()
				if nc != nil {
					track.published(id, seq, t0)
				}
				qctx, qcancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := d.Report(qctx, []byte(patch))
				qcancel()
				if err != nil {
					if rctx.Err() == nil {
						reported.fail()
					}
					continue
				}
				reported.add(time.Since(t0))
			}
		}()
	}
	// GETs under load: one device over MQTT, one client over HTTP, in a loop.
	wg.Add(2)
	// Both exit when the phase ends.
	go func() {
		defer wg.Done()
		d := devs[len(devs)-1]
		for rctx.Err() == nil {
			t0 := time.Now()
			qctx, qcancel := context.WithTimeout(ctx, 30*time.Second)
			_, err := d.GetTwin(qctx)
			qcancel()
			if err != nil {
				mqttGet.fail()
				continue
			}
			mqttGet.add(time.Since(t0))
			time.Sleep(getPause)
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; rctx.Err() == nil; i++ {
			t0 := time.Now()
			if _, err := api.call(ctx, http.MethodGet, fmt.Sprintf("/twins/bench-%05d", i%len(devs)), nil, nil); err != nil {
				httpGet.fail()
				continue
			}
			httpGet.add(time.Since(t0))
			time.Sleep(getPause)
		}
	}()
	// Progress, every 5 s.
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
				reported.mu.Lock()
				n := len(reported.samples)
				reported.mu.Unlock()
				fmt.Fprintf(out, "  %5.0fs: %d updates acknowledged (%.0f/s), %d errors\n",
					time.Since(start).Seconds(), n, float64(n)/time.Since(start).Seconds(), reported.errs.Load())
			}
		}
	}()
	wg.Wait()
	elapsed := time.Since(start)
	// Give events in flight a moment to arrive, and rows up to 10 s.
	time.Sleep(500 * time.Millisecond)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && track.rowsPending() > 0; {
		time.Sleep(50 * time.Millisecond)
	}
	stopRows()
	<-rowsDone
	for range track.rowsPending() {
		row.fail() // never reached ClickHouse within 10 s of the phase's end
	}
	reported.finish(elapsed)
	event.finish(elapsed)
	row.finish(elapsed)
	row.Rate = 0 // a sample, not a rate
	mqttGet.finish(elapsed)
	httpGet.finish(elapsed)
	return
}

// patchKey names one reported patch of the bench: its device and sequence.
type patchKey struct {
	dev string
	seq int64
}

// eventTracker turns change events into publish → event latencies, and
// samples of them into publish → ClickHouse row latencies.
type eventTracker struct {
	event, row *stat

	// sampleRows is set when the hub keeps history: then every 50th event
	// waits in rows for its ClickHouse row.
	sampleRows bool

	mu      sync.Mutex
	sent    map[patchKey]time.Time // publish time of each patch in flight
	rows    []pendingRow           // sampled events not yet in ClickHouse
	nEvents int
}

type pendingRow struct {
	seq uint64 // stream sequence of the event
	t0  time.Time
}

func (e *eventTracker) published(dev string, seq int64, t0 time.Time) {
	e.mu.Lock()
	e.sent[patchKey{dev, seq}] = t0
	e.mu.Unlock()
}

func (e *eventTracker) rowsPending() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.rows)
}

// follow consumes new change events until the returned stop is called.
func (e *eventTracker) follow(ctx context.Context, nc *nats.Conn) (stop func(), err error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	cons, err := js.OrderedConsumer(ctx, topology.EventStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{topology.EventSubjects}, DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		return nil, err
	}
	cc, err := cons.Consume(e.onEvent, jetstream.PullMaxMessages(1000))
	if err != nil {
		return nil, err
	}
	return cc.Stop, nil
}

func (e *eventTracker) onEvent(m jetstream.Msg) {
	var ev struct {
		DeviceID string `json:"deviceId"`
		Patch    struct {
			Properties struct {
				Reported struct {
					Seq int64 `json:"seq"`
				} `json:"reported"`
			} `json:"properties"`
		} `json:"patch"`
	}
	if json.Unmarshal(m.Data(), &ev) != nil {
		return
	}
	k := patchKey{ev.DeviceID, ev.Patch.Properties.Reported.Seq}
	e.mu.Lock()
	defer e.mu.Unlock()
	t0, ok := e.sent[k]
	if !ok {
		return
	}
	delete(e.sent, k)
	e.event.add(time.Since(t0))
	if md, err := m.Metadata(); err == nil && e.sampleRows {
		if e.nEvents++; e.nEvents%50 == 0 {
			e.rows = append(e.rows, pendingRow{md.Sequence.Stream, t0})
		}
	}
}

// followRows resolves sampled rows as the ClickHouse sink acknowledges
// them, until ctx ends. The sink acknowledges a batch only after ClickHouse
// accepted it, so its consumer's ack floor is the last stream sequence
// ClickHouse has. (Reading it from the hub's /metrics instead would cost the
// hub a full scrape, several milliseconds of CPU, twenty times a second.)
func (e *eventTracker) followRows(ctx context.Context, nc *nats.Conn) {
	js, err := jetstream.New(nc)
	if err != nil {
		return
	}
	for ctx.Err() == nil {
		// Looking the consumer up fetches its state.
		if c, err := js.Consumer(ctx, topology.EventStream, topology.HistoryConsumer); err == nil {
			committed := c.CachedInfo().AckFloor.Stream
			now := time.Now()
			e.mu.Lock()
			keep := e.rows[:0]
			for _, r := range e.rows {
				if committed >= r.seq {
					e.row.add(now.Sub(r.t0))
				} else {
					keep = append(keep, r)
				}
			}
			e.rows = keep
			e.mu.Unlock()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func benchFanout(ctx context.Context, c benchConfig, devs []*mqttbridge.DeviceClient, api *apiClient) *stat {
	s := &stat{Name: "desired fan-out: back-end PATCH → device receives"}
	// Drain anything queued before the phase.
	for _, d := range devs {
	drain:
		for {
			select {
			case <-d.Desired():
			default:
				break drain
			}
		}
	}
	var wg sync.WaitGroup
	pace := newPacer(c.fanoutRate)
	start := time.Now()
	jobs := make(chan int)
	for range 32 {
		wg.Add(1)
		// Exits when jobs closes.
		go func() {
			defer wg.Done()
			for i := range jobs {
				d := devs[i]
				t0 := time.Now()
				body := []byte(fmt.Sprintf(`{"properties":{"desired":{"setpoint":%d}}}`, i))
				if _, err := api.call(ctx, http.MethodPatch, fmt.Sprintf("/twins/bench-%05d", i), body, nil); err != nil {
					s.fail()
					continue
				}
				select {
				case <-d.Desired():
					s.add(time.Since(t0))
				case <-time.After(10 * time.Second):
					s.fail()
				}
			}
		}()
	}
	for i := range devs {
		if !pace.wait(ctx) {
			break
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	s.finish(time.Since(start))
	return s
}

// benchRawBroker measures the broker alone: each device publishes QoS 1 to
// a topic of its own that it subscribes to, and waits for its message to
// come back before the next, the same closed loop as a reported update.
func benchRawBroker(ctx context.Context, c benchConfig, ids, keys []string) *stat {
	s := &stat{Name: fmt.Sprintf("baseline: raw broker QoS %d round trip (paho, same broker)", c.qos)}
	payload := []byte(strings.Repeat("x", c.patchSize))
	rctx, cancel := context.WithTimeout(ctx, min(c.duration, 20*time.Second))
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for i, id := range ids {
		wg.Add(1)
		// Exits when the phase ends.
		go func() {
			defer wg.Done()
			opts := paho.NewClientOptions().AddBroker(strings.Split(c.mqttURL, ",")[0]).SetClientID(id).SetUsername(id).SetPassword(devicePassword(id, keys[i]))
			got := make(chan struct{}, 1)
			topic := "devices/" + id + "/raw"
			opts.SetOnConnectHandler(func(cl paho.Client) {
				cl.Subscribe(topic, byte(c.qos), func(paho.Client, paho.Message) { got <- struct{}{} }).Wait()
			})
			cl := paho.NewClient(opts)
			if t := cl.Connect(); !t.WaitTimeout(30*time.Second) || t.Error() != nil {
				s.fail()
				return
			}
			defer cl.Disconnect(0)
			time.Sleep(200 * time.Millisecond) // let the subscription settle
			for rctx.Err() == nil {
				t0 := time.Now()
				cl.Publish(topic, byte(c.qos), false, payload)
				select {
				case <-got:
					s.add(time.Since(t0))
				case <-time.After(10 * time.Second):
					s.fail()
				case <-rctx.Done():
				}
			}
		}()
	}
	wg.Wait()
	s.finish(time.Since(start))
	return s
}

// benchRawJetStream measures asynchronous JetStream publishing (window 256)
// into a scratch stream, the storage limit under the pipeline.
func benchRawJetStream(ctx context.Context, nc *nats.Conn, size int) *stat {
	s := &stat{Name: "baseline: raw JetStream async publish (file, R1)"}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(256))
	if err != nil {
		s.fail()
		return s
	}
	const stream = "TWINHUB_BENCH_RAW"
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{"twinhub.bench.raw"}, Storage: jetstream.FileStorage}); err != nil {
		s.fail()
		return s
	}
	defer js.DeleteStream(context.WithoutCancel(ctx), stream)
	payload := []byte(strings.Repeat("x", size))
	start := time.Now()
	deadline := start.Add(5 * time.Second)
	var acked atomic.Int64
	for time.Now().Before(deadline) && ctx.Err() == nil {
		t0 := time.Now()
		f, err := js.PublishAsync("twinhub.bench.raw", payload)
		if err != nil {
			s.fail()
			continue
		}
		go func() {
			select {
			case <-f.Ok():
				acked.Add(1)
				s.add(time.Since(t0))
			case <-f.Err():
				s.fail()
			}
		}()
	}
	<-js.PublishAsyncComplete()
	s.finish(time.Since(start))
	return s
}

func printReport(w io.Writer, r *benchReport) {
	fmt.Fprintf(w, "\ntwinhub bench — %s, %d devices, %s, offered %s, %d-byte patches, QoS %d\n",
		r.Machine, r.Devices, r.Duration, offered(r.Rate), r.Patch, r.QoS)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "measurement\tcount\terrors\tper second\tp50 ms\tp90 ms\tp99 ms\tmax ms\tratio\t")
	for _, s := range r.Stats {
		ratio := ""
		if s.Ratio > 0 {
			ratio = fmt.Sprintf("%.2f", s.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%s\t\n", s.Name, s.Count, s.Errors, s.Rate, s.P50, s.P90, s.P99, s.Max, ratio)
	}
	tw.Flush()
	for _, n := range r.Notes {
		fmt.Fprintln(w, n)
	}
	fmt.Fprintln(w, "ratio: twinhub's rate ÷ the baseline's rate (the raw broker for reported updates, raw JetStream for change events)")
}

func offered(rate float64) string {
	if rate == 0 {
		return "closed loop"
	}
	return fmt.Sprintf("%.0f/s", rate)
}

// scrapeGauge reads one unlabelled metric from the hub's /metrics.
func scrapeGauge(base, name string) (float64, bool) {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f, true
			}
		}
	}
	return 0, false
}
