package pipeline

import (
	"context"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/twinhub/twinhub/pipeline/topology"
)

type processorMetrics struct {
	commands     *prometheus.CounterVec
	duration     *prometheus.HistogramVec
	events       prometheus.Counter
	rollForwards prometheus.Counter
	eventGaps    prometheus.Counter
	casConflicts prometheus.Counter
	batchSize    prometheus.Histogram
	owned        prometheus.Gauge
}

func newProcessorMetrics(reg prometheus.Registerer, js jetstream.JetStream, partitions int) *processorMetrics {
	f := promauto.With(reg)
	m := &processorMetrics{
		commands: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "twinhub", Subsystem: "pipeline", Name: "commands_total",
			Help: "Commands handled by the twin processor, by kind and outcome (applied, rejected, read, duplicate, malformed, error).",
		}, []string{"kind", "outcome"}),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "twinhub", Subsystem: "pipeline", Name: "command_duration_seconds",
			Help:                        "Time to apply a command, from delivery to reply.",
			Buckets:                     prometheus.ExponentialBuckets(0.0001, 2, 16),
			NativeHistogramBucketFactor: 1.1,
		}, []string{"kind"}),
		events: f.NewCounter(prometheus.CounterOpts{
			Namespace: "twinhub", Subsystem: "pipeline", Name: "events_published_total",
			Help: "Change events published.",
		}),
		rollForwards: f.NewCounter(prometheus.CounterOpts{
			Namespace: "twinhub", Subsystem: "pipeline", Name: "roll_forwards_total",
			Help: "Twin records rolled forward to an event that a crash left unrecorded.",
		}),
		eventGaps: f.NewCounter(prometheus.CounterOpts{
			Namespace: "twinhub", Subsystem: "pipeline", Name: "event_gaps_total",
			Help: "Twin records found ahead of their device's newest event because the event stream lost events (disk damage); each record was kept and re-anchored.",
		}),
		casConflicts: f.NewCounter(prometheus.CounterOpts{
			Namespace: "twinhub", Subsystem: "pipeline", Name: "record_conflicts_total",
			Help: "Twin record writes retried because the record changed concurrently.",
		}),
		batchSize: f.NewHistogram(prometheus.HistogramOpts{
			Namespace: "twinhub", Subsystem: "pipeline", Name: "batch_commands",
			Help:    "Commands applied together in one batch (at most one per device).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		owned: f.NewGauge(prometheus.GaugeOpts{
			Namespace: "twinhub", Subsystem: "pipeline", Name: "partitions_owned",
			Help: "Command partitions this instance owns: JetStream delivers their commands to it alone.",
		}),
	}
	for _, k := range []Kind{KindDeviceGet, KindPatchReported, KindPatchTwin, KindReplaceTwin, KindCreateDevice, KindUpdateDevice, KindDeleteDevice, KindConnection} {
		for _, o := range []outcome{outcomeApplied, outcomeRejected, outcomeRead, outcomeDuplicate, outcomeError} {
			m.commands.WithLabelValues(string(k), string(o))
		}
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "twinhub", Subsystem: "pipeline", Name: "partitions",
		Help: "Command partitions of the hub (--partitions): the instances sharing a NATS together own this many.",
	}, func() float64 { return float64(partitions) })
	if reg != nil {
		reg.MustRegister(&lagCollector{js: js, partitions: partitions})
	}
	return m
}

// lagCollector reports the command backlog of each partition at scrape time.
type lagCollector struct {
	js         jetstream.JetStream
	partitions int
}

var (
	lagPendingDesc = prometheus.NewDesc("twinhub_pipeline_pending_commands",
		"Commands stored in JetStream and not yet delivered to the processor, per partition.", []string{"partition"}, nil)
	lagAckPendingDesc = prometheus.NewDesc("twinhub_pipeline_ack_pending_commands",
		"Commands delivered to the processor and not yet acknowledged, per partition.", []string{"partition"}, nil)
)

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- lagPendingDesc
	ch <- lagAckPendingDesc
}

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for p := 0; p < c.partitions; p++ {
		// Looking the consumer up fetches its state: one request per partition.
		cons, err := c.js.Consumer(ctx, topology.CommandStream, topology.ConsumerName(p))
		if err != nil {
			continue
		}
		info := cons.CachedInfo()
		label := strconv.Itoa(p)
		ch <- prometheus.MustNewConstMetric(lagPendingDesc, prometheus.GaugeValue, float64(info.NumPending), label)
		ch <- prometheus.MustNewConstMetric(lagAckPendingDesc, prometheus.GaugeValue, float64(info.NumAckPending), label)
	}
}

// outcome is how a command ended: the label "outcome" of
// twinhub_pipeline_commands_total.
type outcome string

const (
	// outcomeApplied: the command changed the record (and published its event).
	outcomeApplied outcome = "applied"
	// outcomeRejected: the command was refused (4xx) and changed nothing.
	outcomeRejected outcome = "rejected"
	// outcomeRead: the command read the twin, or had nothing to change.
	outcomeRead outcome = "read"
	// outcomeDuplicate: the command had been applied before (a redelivery).
	outcomeDuplicate outcome = "duplicate"
	// outcomeError: applying failed; the command is tried again.
	outcomeError outcome = "error"
	// outcomeMalformed: the command could not be read and was dropped.
	outcomeMalformed outcome = "malformed"
)
