package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// TestMetrics scrapes /metrics after some traffic: the names pass
// Prometheus' lint, the bridge, pipeline, API and broker series count what
// happened, and no device ID appears in any label.
func TestMetrics(t *testing.T) {
	p := startTwinhub(t, "")
	p.call(t, "PUT", "/devices/metric-dev", "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dev, err := p.dialDevice(t, ctx, "metric-dev")
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if _, err := dev.Report(ctx, []byte(`{"t":1}`)); err != nil {
		t.Fatal(err)
	}
	p.call(t, "PATCH", "/twins/metric-dev", `{"tags":{"a":"b"}}`)
	p.call(t, "PATCH", "/twins/metric-dev", `{"tags":{"a":`)

	r := p.call(t, "GET", "/metrics", "")
	if r.Status != 200 {
		t.Fatalf("/metrics: %d", r.Status)
	}
	problems, err := promlint.New(bytes.NewReader(r.Body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range problems {
		if strings.HasPrefix(pr.Metric, "twinhub_") {
			t.Errorf("lint: %s: %s", pr.Metric, pr.Text)
		}
	}
	text := string(r.Body)
	for _, want := range []string{
		`twinhub_pipeline_commands_total{kind="patchReported",outcome="applied"} 1`,
		`twinhub_pipeline_commands_total{kind="patchTwin",outcome="applied"} 1`,
		`twinhub_pipeline_commands_total{kind="patchTwin",outcome="rejected"} 1`,
		`twinhub_pipeline_commands_total{kind="createDevice",outcome="applied"} 1`,
		`twinhub_pipeline_events_published_total 3`,
		`twinhub_mqtt_requests_total{operation="patch_reported",result="ok"} 1`,
		`twinhub_http_requests_total{code="400",route="twin_patch"} 1`,
		`twinhub_pipeline_pending_commands{partition="0"} 0`,
		`twinhub_mqtt_broker_clients_connected 1`,
		`twinhub_pipeline_command_duration_seconds_bucket`,
		`twinhub_mqtt_request_duration_seconds_bucket`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(text, "metric-dev") {
		t.Errorf("a device ID appears in /metrics")
	}
}

// TestProfiling: Go profiles are served only with --pprof.
func TestProfiling(t *testing.T) {
	off := startTwinhub(t, "")
	if r := off.call(t, "GET", "/debug/pprof/", "", "Authorization", ""); r.Status != 404 {
		t.Errorf("without --pprof: /debug/pprof/ answered %d", r.Status)
	}
	on := startTwinhub(t, "", "--pprof")
	if r := on.call(t, "GET", "/debug/pprof/", "", "Authorization", ""); r.Status != 200 || !strings.Contains(string(r.Body), "goroutine") {
		t.Errorf("with --pprof: /debug/pprof/ answered %d", r.Status)
	}
}
