package clickhouse

import (
	"context"

	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// BenchmarkSink measures the sink's sustained rate into ClickHouse: b.N
// change events (a fleet mix: 60% reported patches of five leaves, 20%
// tags+desired patches, 17% replacements, 3% deletes; about 4.4 leaf rows
// per event) wait in JetStream, and the timer runs from the sink's start
// until ClickHouse holds them all. Run it with a fixed count, e.g.
//
//	go test ./sinks/clickhouse -run '^$' -bench BenchmarkSink -benchtime 200000x
func BenchmarkSink(b *testing.B) {
	e := newEnv(b, "")
	g := newGen(1000, 9)
	e.publish(g, b.N)
	want := e.lastSeq()
	s := e.sink(Config{}, nil)
	b.ResetTimer()
	start := time.Now()
	stop := run(b, s)
	for s.Committed() < want {
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	stop()
	var leaves uint64
	if err := e.conn.QueryRow(context.Background(), "SELECT count() FROM twin_leaves").Scan(&leaves); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(leaves)/elapsed.Seconds(), "leaf-rows/s")
	b.ReportMetric(0, "ns/op")
	var m dto.Metric
	s.m.flushDuration.Write(&m)
	b.ReportMetric(m.GetHistogram().GetSampleSum()/elapsed.Seconds(), "flush-share")
	b.ReportMetric(float64(m.GetHistogram().GetSampleCount()), "flushes")
}
