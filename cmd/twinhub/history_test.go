package main

import (
	"context"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	chdeploy "github.com/twinhub/twinhub/deploy/clickhouse"
)

// startClickHouse starts a private clickhouse-server for one test; without
// one installed the test skips (fails under CI=true).
func startClickHouse(t *testing.T) *chdeploy.Server {
	t.Helper()
	if _, _, err := chdeploy.FindServer(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skipf("no ClickHouse for this test: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := chdeploy.StartServer(ctx, chdeploy.ServerConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

// historyView keeps the parts of a twin that history rebuilds: everything
// but the connection state and activity time, which change without change
// events.
func historyView(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("twin is not JSON: %v: %s", err, body)
	}
	delete(m, "connectionState")
	delete(m, "lastActivityTime")
	return m
}

// expectError checks an IoT Hub error response.
func expectError(t *testing.T, r httpResp, status int, code, text string) {
	t.Helper()
	var e struct{ Message string }
	json.Unmarshal(r.Body, &e)
	if r.Status != status || r.Header.Get("iothub-errorcode") != code || !strings.HasPrefix(e.Message, "ErrorCode:"+code+";") ||
		!strings.Contains(e.Message, text) {
		t.Errorf("got %d %s %s; want %d %s with %q", r.Status, r.Header.Get("iothub-errorcode"), r.Body, status, code, text)
	}
}

// TestTwinHistory drives a device's life through the API and MQTT with
// history in a real ClickHouse, captures the live twin after every change,
// and checks that GET /twins/{id}?asOf= returns exactly that twin for each
// moment (from JetStream right away and from ClickHouse once the sink wrote
// it), that GET /twins/{id}/history pages through the change events newest
// first, that the CLI shows the same, and that bad input gets clear errors.
func TestTwinHistory(t *testing.T) {
	srv := startClickHouse(t)
	p := startTwinhub(t, "", "--clickhouse-url", srv.URL(""))
	ctx := context.Background()
	const id = "hist-1"
	if r := p.call(t, "PUT", "/devices/"+id, `{"deviceId":"`+id+`"}`); r.Status != 200 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	dev, err := p.dialDevice(t, ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()

	type moment struct {
		at   time.Time
		twin map[string]any
	}
	var moments []moment
	capture := func() {
		t.Helper()
		r := p.call(t, "GET", "/twins/"+id, "")
		if r.Status != 200 {
			t.Fatalf("GET twin: %d %s", r.Status, r.Body)
		}
		moments = append(moments, moment{time.Now().UTC(), historyView(t, r.Body)})
	}
	patch := func(method, body string) {
		t.Helper()
		if r := p.call(t, method, "/twins/"+id, body, "If-Match", "*"); r.Status != 200 {
			t.Fatalf("%s twin: %d %s", method, r.Status, r.Body)
		}
		capture()
	}
	report := func(body string) {
		t.Helper()
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if _, err := dev.Report(rctx, []byte(body)); err != nil {
			t.Fatalf("report: %v", err)
		}
		capture()
	}
	capture() // as created
	patch("PATCH", `{"tags":{"plant":"berlin"},"properties":{"desired":{"interval":5,"mode":{"eco":true}}}}`)
	report(`{"temperature":21.5,"fw":{"version":"1.0"}}`)
	patch("PATCH", `{"properties":{"desired":{"interval":null,"mode":{"level":2}}}}`)
	report(`{"temperature":22,"fw":null}`)
	patch("PUT", `{"tags":{"plant":"paris"},"properties":{"desired":{"x":[1,2]}}}`)

	asOf := func(at time.Time) httpResp {
		return p.call(t, "GET", "/twins/"+id+"?asOf="+url.QueryEscape(at.Format(time.RFC3339Nano)), "")
	}
	check := func(when string) {
		t.Helper()
		for i, m := range moments {
			r := asOf(m.at)
			if r.Status != 200 {
				t.Fatalf("%s: asOf moment %d: %d %s", when, i, r.Status, r.Body)
			}
			if got := historyView(t, r.Body); !reflect.DeepEqual(got, m.twin) {
				gb, _ := json.Marshal(got)
				wb, _ := json.Marshal(m.twin)
				t.Errorf("%s: asOf moment %d (%s)\n got %s\nwant %s", when, i, m.at.Format(time.RFC3339Nano), gb, wb)
			}
		}
	}
	check("right away") // what ClickHouse lacks comes from JetStream
	waitFor(t, 30*time.Second, "the sink to write every event", func() bool {
		v, _ := strconv.ParseFloat(p.metricValue(t, "twinhub_history_lag_events"), 64)
		w, _ := strconv.ParseFloat(p.metricValue(t, "twinhub_history_events_written_total"), 64)
		return v == 0 && w >= 6
	})
	check("from ClickHouse")

	// The change events, newest first, two per page.
	var versions []float64
	token := ""
	for pages := 0; ; pages++ {
		path := "/twins/" + id + "/history?limit=2"
		if token != "" {
			path += "&continuationToken=" + token
		}
		r := p.call(t, "GET", path, "")
		if r.Status != 200 {
			t.Fatalf("history: %d %s", r.Status, r.Body)
		}
		page := r.json(t)
		for _, e := range page["events"].([]any) {
			versions = append(versions, e.(map[string]any)["version"].(float64))
		}
		token, _ = page["continuationToken"].(string)
		if token == "" || pages > 10 {
			break
		}
	}
	if want := []float64{7, 6, 5, 4, 3, 2}; !reflect.DeepEqual(versions, want) {
		t.Errorf("history versions %v, want %v", versions, want)
	}
	// A time window: the two changes after moment 2, up to moment 4.
	r := p.call(t, "GET", "/twins/"+id+"/history?from="+url.QueryEscape(moments[2].at.Format(time.RFC3339Nano))+
		"&to="+url.QueryEscape(moments[4].at.Format(time.RFC3339Nano)), "")
	if evs, _ := r.json(t)["events"].([]any); r.Status != 200 || len(evs) != 2 {
		t.Errorf("history from/to: %d %s", r.Status, r.Body)
	}

	// The CLI shows the same.
	out, err := p.cli(t, "twin", "history", "--limit", "4", "--all", id)
	var all struct{ Events []struct{ Version int64 } }
	if err != nil || json.Unmarshal([]byte(out), &all) != nil || len(all.Events) != 6 || all.Events[0].Version != 7 {
		t.Errorf("twin history --all: %v\n%s", err, out)
	}
	out, err = p.cli(t, "twin", "get", "--as-of", moments[2].at.Format(time.RFC3339Nano), id)
	if err != nil {
		t.Fatalf("twin get --as-of: %v", err)
	}
	if got := historyView(t, []byte(out)); !reflect.DeepEqual(got, moments[2].twin) {
		t.Errorf("twin get --as-of: %s", out)
	}

	// Bad input.
	created := moments[0].at
	expectError(t, asOf(time.Now().Add(time.Hour)), 400, "ArgumentInvalid", "is in the future")
	expectError(t, asOf(created.Add(-time.Hour)), 404, "DeviceNotFound", "did not exist at")
	expectError(t, p.call(t, "GET", "/twins/"+id+"?asOf=yesterday", ""), 400, "ArgumentInvalid", "not an RFC 3339 time")
	expectError(t, p.call(t, "GET", "/twins/"+id+"?asOf=", ""), 400, "ArgumentInvalid", "RFC 3339")
	expectError(t, p.call(t, "GET", "/twins/nobody/history", ""), 404, "DeviceNotFound", "has no history")
	expectError(t, p.call(t, "GET", "/twins/nobody?asOf="+url.QueryEscape(created.Format(time.RFC3339)), ""), 404, "DeviceNotFound", "has no history")
	expectError(t, p.call(t, "GET", "/twins/"+id+"/history?limit=100000000", ""), 400, "ArgumentInvalid", "between 1 and 1000")
	expectError(t, p.call(t, "GET", "/twins/"+id+"/history?limit=0", ""), 400, "ArgumentInvalid", "limit")
	expectError(t, p.call(t, "GET", "/twins/"+id+"/history?limit=ten", ""), 400, "ArgumentInvalid", "integer")
	expectError(t, p.call(t, "GET", "/twins/"+id+"/history?from=2026-13-01T00:00:00Z", ""), 400, "ArgumentInvalid", "from")
	expectError(t, p.call(t, "GET", "/twins/"+id+"/history?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", ""), 400, "ArgumentInvalid", "after to")
	expectError(t, p.call(t, "GET", "/twins/"+id+"/history?continuationToken=abc", ""), 400, "ArgumentInvalid", "continuationToken")

	// Deleted, then created again: a new generation starting at version 2.
	if r := p.call(t, "DELETE", "/devices/"+id, "", "If-Match", "*"); r.Status != 204 {
		t.Fatalf("delete: %d %s", r.Status, r.Body)
	}
	deleted := time.Now().UTC()
	expectError(t, asOf(deleted), 404, "DeviceNotFound", "was deleted at")
	if r := p.call(t, "PUT", "/devices/"+id, `{"deviceId":"`+id+`"}`); r.Status != 200 {
		t.Fatalf("create again: %d %s", r.Status, r.Body)
	}
	r = asOf(time.Now())
	if r.Status != 200 || r.json(t)["version"] != float64(2) || r.json(t)["tags"] != nil {
		t.Errorf("asOf after re-creation: %d %s", r.Status, r.Body)
	}
	check("after re-creation")
}

// TestHistoryOffLocalAndOutage checks the three ways history can be
// unavailable: off (a clear 503 and a log line saying how to turn it on),
// with --clickhouse-local on (twinhub runs the installed server in its data
// directory and stops it on exit), and ClickHouse killed under use (twinhub
// keeps serving; afterwards every change is in ClickHouse exactly once).
func TestHistoryOffLocalAndOutage(t *testing.T) {
	p := startTwinhub(t, "")
	if !strings.Contains(p.logs.String(), "twin history is OFF") {
		t.Errorf("no log line says history is off:\n%s", p.logs)
	}
	expectError(t, p.call(t, "GET", "/twins/x/history", ""), 503, "ServiceUnavailable", "--clickhouse-url")
	expectError(t, p.call(t, "GET", "/twins/x?asOf=2026-01-01T00:00:00Z", ""), 503, "ServiceUnavailable", "twin history is off")
	p.stop()

	startClickHouse(t) // skips without ClickHouse
	p = startTwinhub(t, "", "--clickhouse-local", "on", "--clickhouse-local-addr", "127.0.0.1:0")
	addr := regexpFind(t, p.logs.String(), `msg="local ClickHouse server started" addr=(\S+)`)
	if r := p.call(t, "PUT", "/devices/local-1", `{"deviceId":"local-1"}`); r.Status != 200 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	waitFor(t, 30*time.Second, "history from the local server", func() bool {
		return p.call(t, "GET", "/twins/local-1/history", "").Status == 200
	})
	p.stop()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("the local ClickHouse server still listens on %s after twinhub stopped", addr)
	}

	// Outage.
	srv := startClickHouse(t)
	p = startTwinhub(t, "", "--clickhouse-url", srv.URL(""))
	if r := p.call(t, "PUT", "/devices/out-1", `{"deviceId":"out-1"}`); r.Status != 200 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	waitFor(t, 30*time.Second, "the first event in ClickHouse", func() bool {
		return p.metricValue(t, "twinhub_history_events_written_total") == "1"
	})
	srv.Kill()
	for i := range 20 {
		if r := p.call(t, "PATCH", "/twins/out-1", `{"properties":{"desired":{"n":`+strconv.Itoa(i)+`}}}`, "If-Match", "*"); r.Status != 200 {
			t.Fatalf("PATCH with ClickHouse down: %d %s", r.Status, r.Body)
		}
	}
	expectError(t, p.call(t, "GET", "/twins/out-1/history", ""), 503, "ServiceUnavailable", "retry")
	waitFor(t, 30*time.Second, "the sink to notice", func() bool {
		return p.metricValue(t, "twinhub_history_clickhouse_up") == "0"
	})
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the sink to catch up", func() bool {
		return p.metricValue(t, "twinhub_history_events_written_total") == "21"
	})
	r := p.call(t, "GET", "/twins/out-1/history?limit=1000", "")
	if evs, _ := r.json(t)["events"].([]any); r.Status != 200 || len(evs) != 21 {
		t.Fatalf("history after the outage: %d %s", r.Status, r.Body)
	}
	opts, _ := chdeploy.ParseURL(srv.URL(""))
	conn, err := chdeploy.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var n, distinct uint64
	if err := conn.QueryRow(context.Background(), "SELECT count(), uniqExact(version) FROM twin_events WHERE device_id = 'out-1'").Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if n != 21 || distinct != 21 {
		t.Errorf("ClickHouse holds %d rows of %d versions, want 21 of 21", n, distinct)
	}
}
