package main

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

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
