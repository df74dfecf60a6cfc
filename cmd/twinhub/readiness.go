package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/twinhub/twinhub/bridge/httpapi"
	"github.com/twinhub/twinhub/bridge/mqttbridge"
	"github.com/twinhub/twinhub/deploy/embedded"
	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
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
	for _, stream := range []string{topology.CommandStream, topology.EventStream} {
		lostBytes.WithLabelValues(stream) // 0 until a loss, so alerts and dashboards see the series
		lostMessages.WithLabelValues(stream)
	}
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

// readinessParts are the components /readyz reports on; nil ones are
// not part of this hub (no embedded NATS store, no broker of either kind,
// history off).
type readinessParts struct {
	started    func() bool
	nc         *nats.Conn
	store      *embedded.StoreWatcher
	lost       []httpapi.Condition
	queries    *queryService
	broker     *embedded.Broker
	bridge     *mqttbridge.Bridge
	clickhouse *clickhouseProbe
}

// readiness serves /readyz. The hub is not ready (503) while it starts or
// stops, while it is not connected to NATS, while JetStream cannot store
// writes and while the projection is not loaded; ClickHouse or the
// external broker being down degrades it (200: writes go on, the history
// catches up later), and data lost at start is a warning (see
// reportLostData).
func readiness(p readinessParts) http.HandlerFunc {
	jetstreamOK := "stores writes"
	if p.store == nil {
		jetstreamOK = "external NATS (--nats-url); its own monitoring tells whether it stores writes"
	}
	comps := []httpapi.Component{
		{Name: "twinhub", OK: "started", Check: func() []httpapi.Condition {
			if !p.started() {
				return []httpapi.Condition{{Message: "starting or stopping", Blocking: true}}
			}
			return nil
		}},
		{Name: "nats", OK: "connected to " + p.nc.ConnectedUrlRedacted(), Check: func() []httpapi.Condition {
			if !p.nc.IsConnected() {
				return []httpapi.Condition{{Message: "not connected to NATS (" + p.nc.Status().String() + "); twinhub reconnects by itself", Blocking: true}}
			}
			return nil
		}},
		{Name: "jetstream", OK: jetstreamOK, Check: func() []httpapi.Condition {
			var conds []httpapi.Condition
			if p.store != nil {
				for _, problem := range p.store.Problems() {
					conds = append(conds, httpapi.Condition{Message: problem +
						"; JetStream cannot store writes: free space on the data directory's file system, twinhub recovers by itself", Blocking: true})
				}
			}
			return append(conds, p.lost...)
		}},
		{Name: "projection", OK: "loaded", Check: func() []httpapi.Condition {
			select {
			case <-p.queries.proj.Loaded():
			default:
				return []httpapi.Condition{{Message: "loading the twins for queries", Blocking: true}}
			}
			if !p.queries.nc.IsConnected() {
				return []httpapi.Condition{{Message: "not connected to NATS; queries answer from the twins loaded so far until it reconnects", Down: true}}
			}
			return nil
		}},
	}
	switch {
	case p.broker != nil:
		comps = append(comps, httpapi.Component{Name: "broker", OK: "embedded, listening on " + p.broker.Addr(),
			Check: func() []httpapi.Condition { return nil }})
	case p.bridge != nil:
		comps = append(comps, httpapi.Component{Name: "broker", OK: "bridge connected to the external broker", Check: func() []httpapi.Condition {
			if !p.bridge.Connected() {
				return []httpapi.Condition{{Message: "the bridge is not connected to the external MQTT broker (--mqtt-url); devices get no answers " +
					"until it is back, twinhub reconnects by itself", Down: true}}
			}
			return nil
		}})
	}
	if p.clickhouse != nil {
		comps = append(comps, httpapi.Component{Name: "clickhouse", OK: "reachable at " + p.clickhouse.addr, Check: p.clickhouse.check})
	}
	return httpapi.Readyz(comps...)
}

// clickhouseProbe pings ClickHouse for /readyz, at most once a second
// however often the probe asks, and for two seconds at most.
type clickhouseProbe struct {
	addr string
	ping func(context.Context) error

	mu     sync.Mutex
	at     time.Time
	result []httpapi.Condition
}

func (c *clickhouseProbe) check() []httpapi.Condition {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) < time.Second {
		return c.result
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c.result = nil
	if err := c.ping(ctx); err != nil {
		c.result = []httpapi.Condition{{Message: fmt.Sprintf("ClickHouse at %s does not answer (%v): history reads answer 503 and "+
			"the history falls behind; writes go on, and the sink catches up once ClickHouse is back. Start ClickHouse, "+
			"or check --clickhouse-url", c.addr, err), Down: true}}
	}
	c.at = time.Now()
	return c.result
}
