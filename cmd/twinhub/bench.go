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
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/twinhub/twinhub/deploy/embedded"
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
	stopProfile, err := startCPUProfile(c.cpuProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	rep := &benchReport{Started: time.Now().UTC(), Devices: c.devices, Duration: c.duration.String(), Rate: c.rate,
		Patch: c.patchSize, QoS: c.qos, Machine: fmt.Sprintf("%s/%s, %d CPUs, %s", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())}

	embeddedNATS := "" // the embedded hub's NATS address
	if c.embedded {
		stopHub, natsAddr, err := startBenchHub(ctx, &c, out)
		if err != nil {
			return err
		}
		defer stopHub()
		embeddedNATS = natsAddr
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
	peakRSS := samplePeakRSS(ctx, api.base)

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
		if nc, err = nats.Connect(c.natsURL, benchNATSOptions(c.natsURL)...); err != nil {
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
	writeHeapProfile(c.memProfile)
	rep.HubPeakRSSMiB = float64(peakRSS()) / (1 << 20)
	return finishReport(out, c, rep)
}

// benchNATSOptions are the bench's NATS options for natsURL: as twinhub's own
// user (embedded.InternalNATSUser) it takes its replies on twinhub's inbox
// prefix, the only one that user may read on a NATS configured with
// `twinhub nats-credentials --server-config` (the events user reads _INBOX).
func benchNATSOptions(natsURL string) []nats.Option {
	first, _, _ := strings.Cut(natsURL, ",")
	if u, err := url.Parse(first); err == nil && u.User.Username() == embedded.InternalNATSUser {
		return []nats.Option{nats.CustomInboxPrefix(topology.InternalInboxPrefix)}
	}
	return nil
}

// startCPUProfile profiles the process's CPU into path ("" profiles
// nothing) until the returned stop.
func startCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// writeHeapProfile writes a heap profile to path ("" writes none).
func writeHeapProfile(path string) {
	if path == "" {
		return
	}
	if f, err := os.Create(path); err == nil {
		runtime.GC()
		pprof.WriteHeapProfile(f)
		f.Close()
	}
}

// startBenchHub runs an embedded hub for the bench on free ports, points
// c at it, and returns its stop and its NATS address.
func startBenchHub(ctx context.Context, c *benchConfig, out io.Writer) (stop func(), natsAddr string, err error) {
	dir, err := os.MkdirTemp("", "twinhub-bench")
	if err != nil {
		return nil, "", err
	}
	cfg, err := parseRunFlags([]string{"--data-dir", dir, "--http-addr", freeAddr(), "--mqtt-addr", freeAddr(),
		"--nats-addr", freeAddr(), "--mqtts-addr", "", "--https-addr", "", "--log-level", "warn",
		"--clickhouse-local", c.history, "--clickhouse-local-addr", freeAddr()})
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", err
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// Runs until stop.
	go func() { done <- run(hctx, cfg, log) }()
	*c.client.server, *c.client.dataDir = "http://"+cfg.httpAddr, dir
	c.mqttURL = "tcp://" + cfg.mqttAddr
	fmt.Fprintf(out, "started an embedded twinhub in %s (HTTP %s, MQTT %s)\n", dir, cfg.httpAddr, cfg.mqttAddr)
	return func() {
		cancel()
		<-done
		os.RemoveAll(dir)
	}, cfg.natsAddr, nil
}

// samplePeakRSS samples the hub's resident memory every second until ctx
// ends; the returned function gives the peak so far.
func samplePeakRSS(ctx context.Context, base string) (peak func() int64) {
	var max atomic.Int64
	// Exits when ctx ends.
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			if v, ok := scrapeGauge(base, "process_resident_memory_bytes"); ok && int64(v) > max.Load() {
				max.Store(int64(v))
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return max.Load
}

// finishReport adds the CPU and memory notes, prints the report and writes
// it as JSON when asked.
func finishReport(out io.Writer, c benchConfig, rep *benchReport) error {
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
	if c.jsonOut == "" {
		return nil
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	return os.WriteFile(c.jsonOut, append(b, '\n'), 0o644)
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
