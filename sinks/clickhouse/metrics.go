package clickhouse

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/twinhub/twinhub/pipeline/topology"
)

type metrics struct {
	events        prometheus.Counter
	rows          *prometheus.CounterVec
	batches       *prometheus.CounterVec
	failures      prometheus.Counter
	duplicates    prometheus.Counter
	missing       prometheus.Counter
	undecodable   prometheus.Counter
	flushDuration prometheus.Histogram
	committed     prometheus.Gauge
	lastFlush     prometheus.Gauge
	up            prometheus.Gauge
	writerChanges prometheus.Counter
	fenced        prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, s *Sink) *metrics {
	f := promauto.With(reg)
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "twinhub", Subsystem: "history", Name: name, Help: help}
	}
	m := &metrics{
		events: f.NewCounter(prometheus.CounterOpts(opts("events_written_total",
			"Change events written to ClickHouse."))),
		rows: f.NewCounterVec(prometheus.CounterOpts(opts("rows_written_total",
			"Rows written to ClickHouse, by table.")), []string{"table"}),
		batches: f.NewCounterVec(prometheus.CounterOpts(opts("batches_total",
			"Batches ClickHouse accepted, by what flushed them (size, age, gap, request, shutdown).")), []string{"reason"}),
		failures: f.NewCounter(prometheus.CounterOpts(opts("insert_failures_total",
			"Failed attempts to write a batch to ClickHouse; each is retried."))),
		duplicates: f.NewCounter(prometheus.CounterOpts(opts("redeliveries_skipped_total",
			"Change events delivered again that ClickHouse already had; skipped, not written twice."))),
		missing: f.NewCounter(prometheus.CounterOpts(opts("events_lost_total",
			"Change events removed from JetStream (max age, purge) before they reached ClickHouse."))),
		undecodable: f.NewCounter(prometheus.CounterOpts(opts("events_undecodable_total",
			"Messages on the event stream that are not change events; skipped."))),
		flushDuration: f.NewHistogram(prometheus.HistogramOpts{
			Namespace: "twinhub", Subsystem: "history", Name: "flush_duration_seconds",
			Help:                        "Time to write one batch to ClickHouse, retries included.",
			Buckets:                     prometheus.ExponentialBuckets(0.005, 2, 14),
			NativeHistogramBucketFactor: 1.1,
		}),
		committed: f.NewGauge(prometheus.GaugeOpts(opts("committed_sequence",
			"Stream sequence up to which every change event is in ClickHouse."))),
		lastFlush: f.NewGauge(prometheus.GaugeOpts(opts("last_flush_timestamp_seconds",
			"When ClickHouse last accepted a batch."))),
		up: f.NewGauge(prometheus.GaugeOpts(opts("clickhouse_up",
			"1 when the last ClickHouse write or watermark read succeeded, 0 while it fails."))),
		writerChanges: f.NewCounter(prometheus.CounterOpts(opts("writer_takeovers_total",
			"Times this instance became the history writer."))),
		fenced: f.NewCounter(prometheus.CounterOpts(opts("fenced_batches_total",
			"Batches ClickHouse refused because another instance had become the history writer; that one writes them."))),
	}
	f.NewGaugeFunc(prometheus.GaugeOpts(opts("writer",
		"1 on the one instance that writes the history (holds the history consumer's pin), 0 on standbys.")),
		func() float64 {
			if s.writer.Load() {
				return 1
			}
			return 0
		})
	for _, t := range tableNames {
		m.rows.WithLabelValues(t)
	}
	for _, r := range []string{"size", "age", "gap", "request", "shutdown"} {
		m.batches.WithLabelValues(r)
	}
	reg.MustRegister(&lagCollector{s: s,
		events: prometheus.NewDesc("twinhub_history_lag_events",
			"Change events in JetStream not yet in ClickHouse (reported by the writing instance only).", nil, nil),
		age: prometheus.NewDesc("twinhub_history_lag_seconds",
			"Age of the oldest change event not yet in ClickHouse (0 when none; reported by the writing instance only).", nil, nil),
	})
	return m
}

// lagCollector reads the event stream at scrape time to report how far
// ClickHouse is behind.
type lagCollector struct {
	s           *Sink
	events, age *prometheus.Desc
}

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.events
	ch <- c.age
}

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	if !c.s.ready.Load() || !c.s.writer.Load() {
		// The watermark is not known yet, or this sink is a standby, whose
		// watermark is as old as its last term as the writer: the writer
		// reports the lag.
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	stream, err := c.s.js.Stream(ctx, topology.EventStream)
	if err != nil {
		return
	}
	state := stream.CachedInfo().State
	committed := c.s.Committed()
	var lag uint64
	if state.LastSeq > committed {
		lag = state.LastSeq - committed
		if first := committed + 1; first < state.FirstSeq {
			lag = state.LastSeq - state.FirstSeq + 1
		}
	}
	ch <- prometheus.MustNewConstMetric(c.events, prometheus.GaugeValue, float64(lag))
	age := 0.0
	if lag > 0 {
		seq := max(committed+1, state.FirstSeq)
		if msg, err := stream.GetMsg(ctx, seq); err == nil {
			age = max(time.Since(msg.Time).Seconds(), 0)
		} else if err == jetstream.ErrMsgNotFound && !state.FirstTime.IsZero() {
			age = max(time.Since(state.FirstTime).Seconds(), 0)
		}
	}
	ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, age)
}
