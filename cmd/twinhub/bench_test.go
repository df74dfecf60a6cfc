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
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Devices int
		Results []struct {
			Name   string
			Count  int
			Errors int
			Ratio  float64 `json:"ratio_to_baseline"`
		}
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("bench JSON: %v\n%s", err, b)
	}
	if rep.Devices != 5 || len(rep.Results) < 6 {
		t.Fatalf("bench JSON: %s", b)
	}
	for _, r := range rep.Results {
		if r.Count == 0 || r.Errors != 0 {
			t.Errorf("%s: %d samples, %d errors", r.Name, r.Count, r.Errors)
		}
		if strings.HasPrefix(r.Name, "reported update: publish → 204") && r.Ratio <= 0 {
			t.Errorf("no ratio to the raw broker for %s", r.Name)
		}
	}
}
