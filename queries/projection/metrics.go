package projection

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

type metrics struct {
	changes    prometheus.Counter
	revision   prometheus.Gauge
	twins      prometheus.Gauge
	loadTime   prometheus.Gauge
	duration   *prometheus.HistogramVec
	catchUp    prometheus.Histogram
	checked    prometheus.Counter
	candidates prometheus.Counter
}

// Shapes of queries, the label of twinhub_query_duration_seconds.
const (
	shapeRows    = "rows"    // one row per twin, in deviceId order
	shapeOrdered = "ordered" // one row per twin, ORDER BY
	shapeGrouped = "grouped" // GROUP BY or aggregates
)

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		changes: f.NewCounter(prometheus.CounterOpts{
			Namespace: "twinhub", Subsystem: "projection", Name: "changes_applied_total",
			Help: "Twin record changes applied to the query projection.",
		}),
		revision: f.NewGauge(prometheus.GaugeOpts{
			Namespace: "twinhub", Subsystem: "projection", Name: "revision",
			Help: "KV revision (stream sequence) of the twin bucket up to which the projection is current.",
		}),
		twins: f.NewGauge(prometheus.GaugeOpts{
			Namespace: "twinhub", Subsystem: "projection", Name: "twins",
			Help: "Twins in the query projection.",
		}),
		loadTime: f.NewGauge(prometheus.GaugeOpts{
			Namespace: "twinhub", Subsystem: "projection", Name: "load_duration_seconds",
			Help: "How long the initial load of the projection from the twin bucket took.",
		}),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "twinhub", Subsystem: "query", Name: "duration_seconds",
			Help:                        "Time to answer one page of a twin query, by shape (rows, ordered, grouped).",
			Buckets:                     prometheus.ExponentialBuckets(0.0001, 2, 18),
			NativeHistogramBucketFactor: 1.1,
		}, []string{"shape"}),
		catchUp: f.NewHistogram(prometheus.HistogramOpts{
			Namespace: "twinhub", Subsystem: "query", Name: "catch_up_duration_seconds",
			Help:                        "Time a query waited for the projection to apply the changes acknowledged before it.",
			Buckets:                     prometheus.ExponentialBuckets(0.00005, 2, 18),
			NativeHistogramBucketFactor: 1.1,
		}),
		checked: f.NewCounter(prometheus.CounterOpts{
			Namespace: "twinhub", Subsystem: "query", Name: "twins_checked_total",
			Help: "Twins on which a query's condition was evaluated one by one (not answered by an index).",
		}),
		candidates: f.NewCounter(prometheus.CounterOpts{
			Namespace: "twinhub", Subsystem: "query", Name: "candidate_twins_total",
			Help: "Twins queries considered: the candidates the indexes gave, or every twin when none applied.",
		}),
	}
	for _, s := range []string{shapeRows, shapeOrdered, shapeGrouped} {
		m.duration.WithLabelValues(s)
	}
	return m
}
