package clickhouse

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	chdeploy "github.com/twinhub/twinhub/deploy/clickhouse"
	"github.com/twinhub/twinhub/deploy/clickhouse/testserver"
)

// TestClickHouseOutage kills the ClickHouse server under load (2,000
// events/s), keeps it down (12 s; TWINHUB_OUTAGE=60s for the long manual
// run), and starts it again: events keep being accepted by JetStream
// during the outage, the sink counts failures and reports the lag growing,
// and afterwards ClickHouse holds every event exactly once and the lag is 0.
func TestClickHouseOutage(t *testing.T) {
	testserver.Server(t) // skips when ClickHouse is not installed
	outage := 12 * time.Second
	if v := os.Getenv("TWINHUB_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("TWINHUB_OUTAGE: %v", err)
		}
		outage = d
	}
	ctx := context.Background()
	srv, err := chdeploy.StartServer(ctx, chdeploy.ServerConfig{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	e := newEnv(t, srv.URL(""))
	reg := prometheus.NewRegistry()
	s := e.sink(Config{BatchEvents: 2000, FlushInterval: 200 * time.Millisecond, RetryMax: time.Second}, reg)
	run(t, s)
	g := newGen(200, 4)
	stop := make(chan struct{})
	published := e.publishAt(g, 2000, stop)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
	}()
	waitUntil(t, 30*time.Second, "the sink writes", func() bool { return s.Committed() > 1000 })

	srv.Kill()
	down := time.Now()
	t.Logf("ClickHouse killed at committed seq %d; down for %s", s.Committed(), outage)
	waitUntil(t, outage+10*time.Second, "failed inserts and a growing lag", func() bool {
		return testutil.ToFloat64(s.m.failures) >= 2 && gauge(t, reg, "twinhub_history_lag_events") > 2000 &&
			gauge(t, reg, "twinhub_history_lag_seconds") > 1 && testutil.ToFloat64(s.m.up) == 0
	})
	// The outage lasts its full length: this wait is the test's scenario,
	// not a wait for a condition.
	time.Sleep(time.Until(down.Add(outage)))
	lag := gauge(t, reg, "twinhub_history_lag_events")
	age := gauge(t, reg, "twinhub_history_lag_seconds")
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("ClickHouse back after %s: lag %v events, oldest %.1fs, %v failed attempts",
		time.Since(down).Round(time.Millisecond), lag, age, testutil.ToFloat64(s.m.failures))
	if age < outage.Seconds()/2 {
		t.Errorf("lag_seconds = %v at the end of a %s outage", age, outage)
	}
	// Load goes on for a few seconds after ClickHouse returns.
	waitUntil(t, 60*time.Second, "the sink catches up", func() bool { return s.Committed()+500 > e.lastSeq() })
	close(stop)
	n := <-published
	e.waitCommitted(s, 60*time.Second)
	t.Logf("%d events published; caught up %s after ClickHouse returned", n, time.Since(down.Add(outage)).Round(time.Millisecond))
	e.verifyExactlyOnce()
	if v := gauge(t, reg, "twinhub_history_lag_events"); v != 0 {
		t.Errorf("lag_events = %v after catching up", v)
	}
	if v := testutil.ToFloat64(s.m.up); v != 1 {
		t.Errorf("clickhouse_up = %v after catching up", v)
	}
}

func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
