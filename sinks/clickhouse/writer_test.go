package clickhouse

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinhub/twinhub/pipeline/topology"
)

// metric reads a gauge or counter without labels from reg (0 when it is not there).
func metric(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) == 0 {
			continue
		}
		m := mf.GetMetric()[0]
		switch {
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// waitInClickHouse polls until every event of the stream is in twin_events.
func (e *env) waitInClickHouse(timeout time.Duration) {
	e.t.Helper()
	want := e.lastSeq()
	deadline := time.Now().Add(timeout)
	for {
		var got uint64
		err := e.conn.QueryRow(context.Background(), "SELECT max(stream_seq) FROM "+EventsTable).Scan(&got)
		if err == nil && got >= want {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("twin_events holds events up to seq %d, the stream up to %d, after %s (err %v)", got, want, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTwoSinksOnePinnedConsumer runs two sinks on the one history consumer,
// as two twinhub instances do, and moves the pin between them every 150 ms
// while events arrive, so that the replaced writer often still holds a
// batch it goes on to write. ClickHouse must still hold every event exactly
// once, and once the pin stays put, exactly one sink reports itself as the
// writer.
func TestTwoSinksOnePinnedConsumer(t *testing.T) {
	e := newEnv(t, "")
	g := newGen(60, 11)
	cfg := Config{BatchEvents: 300, FlushInterval: 30 * time.Millisecond, FetchSize: 200}
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()}
	for _, reg := range regs {
		run(t, e.sink(cfg, reg))
	}
	stop := make(chan struct{})
	published := e.publishAt(g, 3000, stop)
	unpins := 0
	for deadline := time.Now().Add(4 * time.Second); time.Now().Before(deadline); time.Sleep(150 * time.Millisecond) {
		if err := e.stream.UnpinConsumer(context.Background(), topology.HistoryConsumer, topology.HistoryPriorityGroup); err == nil {
			unpins++
		}
	}
	close(stop)
	n := <-published
	e.waitInClickHouse(60 * time.Second)
	e.verifyExactlyOnce()

	takeovers := metric(t, regs[0], "twinhub_history_writer_takeovers_total") + metric(t, regs[1], "twinhub_history_writer_takeovers_total")
	fenced := metric(t, regs[0], "twinhub_history_fenced_batches_total") + metric(t, regs[1], "twinhub_history_fenced_batches_total")
	t.Logf("%d events, %d unpins, %.0f takeovers, %.0f batches fenced", n, unpins, takeovers, fenced)
	if takeovers < 3 {
		t.Errorf("the writer changed %.0f times in %d unpins; the test did not move the pin", takeovers, unpins)
	}
	waitFor(t, 10*time.Second, "exactly one sink to report itself as the writer", func() bool {
		return metric(t, regs[0], "twinhub_history_writer")+metric(t, regs[1], "twinhub_history_writer") == 1
	})
}

// TestFenceWithoutExclusivity gives two sinks a consumer each, so that both
// receive every event and both keep trying to write all of them at once:
// nothing in NATS keeps them apart. Only the fence in ClickHouse does, and
// ClickHouse must still hold every event exactly once.
func TestFenceWithoutExclusivity(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	info, err := e.stream.Consumer(ctx, topology.HistoryConsumer)
	if err != nil {
		t.Fatal(err)
	}
	other := info.CachedInfo().Config
	other.Durable, other.Name = topology.HistoryConsumer+"-twin", ""
	if _, err := e.js.CreateConsumer(ctx, topology.EventStream, other); err != nil {
		t.Fatal(err)
	}
	g := newGen(60, 12)
	cfg := Config{BatchEvents: 300, FlushInterval: 30 * time.Millisecond, FetchSize: 200}
	regs := []*prometheus.Registry{prometheus.NewRegistry(), prometheus.NewRegistry()}
	for i, consumer := range []string{topology.HistoryConsumer, other.Durable} {
		s := e.sink(cfg, regs[i])
		s.consumer = consumer
		run(t, s)
	}
	stop := make(chan struct{})
	published := e.publishAt(g, 3000, stop)
	time.Sleep(3 * time.Second) // the load's duration, not a condition
	close(stop)
	n := <-published
	e.waitInClickHouse(60 * time.Second)
	e.verifyExactlyOnce()
	fenced := metric(t, regs[0], "twinhub_history_fenced_batches_total") + metric(t, regs[1], "twinhub_history_fenced_batches_total")
	t.Logf("%d events; %.0f batches fenced", n, fenced)
	if fenced == 0 {
		t.Error("no batch was fenced: the two sinks never overlapped, so the test proved nothing")
	}
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTakeoverAfterWriterKilled kills the writing sink (a child process)
// with SIGKILL while events keep arriving: the standby becomes the writer
// once the dead writer's pin expires (topology.HistoryPinnedTTL after its
// last pull), writes what the dead one held and everything after, and
// ClickHouse holds every event exactly once. The takeover times are logged.
func TestTakeoverAfterWriterKilled(t *testing.T) {
	e := newEnv(t, "")
	g := newGen(60, 13)
	writer := startChild(t, e, "", 0)
	e.publish(g, 200)
	e.waitInClickHouse(60 * time.Second) // the child is the writer

	reg := prometheus.NewRegistry()
	run(t, e.sink(Config{FlushInterval: 100 * time.Millisecond}, reg))
	stop := make(chan struct{})
	published := e.publishAt(g, 1000, stop)
	before := e.lastSeq()
	waitFor(t, 30*time.Second, "the child to write events published with the standby running", func() bool {
		var got uint64
		e.conn.QueryRow(context.Background(), "SELECT max(stream_seq) FROM "+EventsTable).Scan(&got)
		return got > before
	})
	if metric(t, reg, "twinhub_history_writer") != 0 {
		t.Fatal("the standby reports itself as the writer while the child writes")
	}

	writer.cmd.Process.Kill()
	<-writer.exited
	killed := time.Now()
	waitFor(t, 30*time.Second, "the standby to become the writer", func() bool { return metric(t, reg, "twinhub_history_writer") == 1 })
	became := time.Since(killed)
	waitFor(t, 30*time.Second, "the standby to write", func() bool { return metric(t, reg, "twinhub_history_events_written_total") > 0 })
	t.Logf("after SIGKILL of the writer the standby became the writer in %s and wrote its first rows after %s (pin TTL %s)",
		became.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond), topology.HistoryPinnedTTL)
	close(stop)
	<-published
	e.waitInClickHouse(60 * time.Second)
	e.verifyExactlyOnce()
}
