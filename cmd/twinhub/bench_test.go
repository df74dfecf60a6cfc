package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinhub/twinhub/deploy/embedded"
)

// TestBenchCommand runs a tiny `twinhub bench` against its own embedded hub
// and checks that every measurement it prints has samples and no errors,
// and that the JSON report matches.
func TestBenchCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("bench smoke test")
	}
	out := filepath.Join(t.TempDir(), "bench.json")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "bench", "--devices", "5", "--duration", "2s", "--fanout", "5",
		"--fanout-rate", "50", "--history", "off", "--baseline", "--json", out)
	cmd.Dir = t.TempDir()
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stdout)
	}
	if !strings.Contains(string(stdout), "reported update: publish → 204") || !strings.Contains(string(stdout), "ratio") {
		t.Errorf("bench printed no table:\n%s", stdout)
	}
	rep := readBenchReport(t, out, 5, 6)
	for _, r := range rep.Results {
		if strings.HasPrefix(r.Name, "reported update: publish → 204") && r.Ratio <= 0 {
			t.Errorf("no ratio to the raw broker for %s", r.Name)
		}
	}
	if rep.CPU <= 0 || rep.RSS <= 0 {
		t.Errorf("no CPU per update (%v µs) or peak memory (%v MiB) in the report", rep.CPU, rep.RSS)
	}
}

// TestBenchAgainstRunningHub drives a `twinhub run` in its own process, as
// the 10,000-device figures are measured: the report's CPU and memory are
// then the hub's alone, read from its /metrics.
func TestBenchAgainstRunningHub(t *testing.T) {
	if testing.Short() {
		t.Skip("bench smoke test")
	}
	hub := startTwinhub(t, "")
	out := filepath.Join(t.TempDir(), "bench.json")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "bench", "--server", hub.HTTP, "--data-dir", hub.dataDir,
		"--mqtt", hub.MQTT, "--nats", hub.natsURL(t, embedded.EventsNATSUser), "--devices", "8", "--duration", "2s", "--fanout", "8",
		"--fanout-rate", "50", "--json", out)
	cmd.Dir = t.TempDir()
	stdout, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, stdout)
	}
	if !strings.Contains(string(stdout), "the hub's process_cpu_seconds_total") {
		t.Errorf("bench did not report the hub's own CPU:\n%s", stdout)
	}
	rep := readBenchReport(t, out, 8, 5)
	// The hub idles between the bench's requests: it cannot have spent a
	// whole second per update, and it holds more than a few MiB.
	if rep.CPU <= 0 || rep.CPU > 1e6 || rep.RSS < 10 {
		t.Errorf("hub CPU per update %v µs, peak memory %v MiB", rep.CPU, rep.RSS)
	}
}

type benchReportJSON struct {
	Devices int
	CPU     float64 `json:"hub_cpu_us_per_update"`
	RSS     float64 `json:"hub_peak_rss_mib"`
	Results []struct {
		Name   string
		Count  int
		Errors int
		Ratio  float64 `json:"ratio_to_baseline"`
	}
}

// readBenchReport reads a bench's JSON report and checks that it is for
// devices devices, has at least results measurements, and that every one
// has samples and no errors.
func readBenchReport(t *testing.T, path string, devices, results int) benchReportJSON {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep benchReportJSON
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("bench JSON: %v\n%s", err, b)
	}
	if rep.Devices != devices || len(rep.Results) < results {
		t.Fatalf("bench JSON: %s", b)
	}
	for _, r := range rep.Results {
		if r.Count == 0 || r.Errors != 0 {
			t.Errorf("%s: %d samples, %d errors", r.Name, r.Count, r.Errors)
		}
	}
	return rep
}
