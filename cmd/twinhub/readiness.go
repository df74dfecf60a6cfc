package main

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/twinhub/twinhub/bridge/httpapi"
	"github.com/twinhub/twinhub/deploy/embedded"
	"github.com/twinhub/twinhub/pipeline"
)

// reportLostData finds the data JetStream dropped as damaged when it
// recovered its streams at this start, and makes it loud: an ERROR log line
// per stream naming what was lost, the gauges twinhub_jetstream_lost_*, and
// warnings on /readyz, which it returns.
//
// A loss is a warning, not a reason to be unready: the data is gone, a
// restart cannot bring it back (nats-server forgets the loss once it
// restarts), and the hub still takes writes. A 503 would only take the
// hub out of service, or, behind a probe that restarts on failure, put it
// into a restart loop that ends by hiding the evidence. Operators alert on
// the gauge and restore from a backup or replay devices if they must.
func reportLostData(ctx context.Context, js jetstream.JetStream, log *slog.Logger, reg prometheus.Registerer) []httpapi.Condition {
	f := promauto.With(reg)
	lostBytes := f.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "twinhub", Subsystem: "jetstream", Name: "lost_bytes",
		Help: "Bytes of damaged data JetStream dropped from the stream when it recovered it at this start.",
	}, []string{"stream"})
	lostMessages := f.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "twinhub", Subsystem: "jetstream", Name: "lost_messages",
		Help: "Messages found lost from the stream at this start (dropped as damaged, or missing from the end of the event stream).",
	}, []string{"stream"})
	lost, err := pipeline.FindLostData(ctx, js)
	if err != nil {
		log.Error("could not check the streams for data lost at start", "err", err)
	}
	var conds []httpapi.Condition
	if err != nil {
		conds = append(conds, httpapi.Condition{Component: "jetstream", Message: err.Error()})
	}
	for _, l := range lost {
		lostBytes.WithLabelValues(l.Stream).Add(float64(l.Bytes))
		lostMessages.WithLabelValues(l.Stream).Add(float64(l.Messages))
		log.Error("a stream lost data it had stored, found at start; acknowledged changes may be gone from it. "+
			"Check the disk, and the twins and history of recently changed devices",
			"stream", l.Stream, "lost_messages", l.Messages, "lost_sequences", l.Sequences, "lost_bytes", l.Bytes, "found", l.How)
		conds = append(conds, httpapi.Condition{Component: "jetstream", Message: l.String()})
	}
	return conds
}

// readiness serves /readyz: not ready while the hub starts or stops, while
// it is not connected to NATS, and while JetStream cannot store writes;
// data lost at start is reported as a warning (see reportLostData).
func readiness(started func() bool, nc *nats.Conn, store *embedded.StoreWatcher, lost []httpapi.Condition) http.HandlerFunc {
	return httpapi.Readyz(
		func() []httpapi.Condition {
			if !started() {
				return []httpapi.Condition{{Component: "twinhub", Message: "starting or stopping", Blocking: true}}
			}
			return nil
		},
		func() []httpapi.Condition {
			if !nc.IsConnected() {
				return []httpapi.Condition{{Component: "nats", Message: "not connected to NATS (" + nc.Status().String() + "); twinhub reconnects by itself", Blocking: true}}
			}
			return nil
		},
		func() []httpapi.Condition {
			if store == nil {
				return nil
			}
			var conds []httpapi.Condition
			for _, p := range store.Problems() {
				conds = append(conds, httpapi.Condition{Component: "jetstream", Message: p +
					"; JetStream cannot store writes: free space on the data directory's file system, twinhub recovers by itself", Blocking: true})
			}
			return conds
		},
		func() []httpapi.Condition { return lost },
	)
}
