package embedded

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// How the store watcher paces itself.
const (
	// storeCheckEvery is how often the watcher asks nats-server whether
	// JetStream can store writes.
	storeCheckEvery = time.Second
	// restartFirstAfter is how long a write error must last before the
	// watcher restarts JetStream; restartMaxAfter bounds its backoff when
	// restarts do not help.
	restartFirstAfter = 2 * time.Second
	restartMaxAfter   = time.Minute
	// restartMinFree is the free space the store's file system needs
	// before a restart is worth trying after a write error.
	restartMinFree = 8 << 20
)

// StoreWatcher watches the embedded JetStream store and brings it back
// after a write failure, without restarting the process.
//
// nats-server stops a stream from taking writes for good once a write to
// its file store failed (disk full, I/O error): the stream keeps a sticky
// write error, publishes to it are no longer answered, and nothing clears
// the error short of reloading the stream. nats-server also shuts
// JetStream down by itself on a permission error. The watcher notices
// either within storeCheckEvery, reports it (Problems, the log at ERROR
// once, the gauge twinhub_jetstream_store_writable), and once the file
// system has room again restarts JetStream in-process, which reloads every
// stream from disk. Nothing acknowledged is lost by this: a write that
// failed was never acknowledged, and what was written is recovered as at
// any start.
type StoreWatcher struct {
	n   *NATS
	log *slog.Logger

	writable prometheus.Gauge
	restarts prometheus.Counter
}

// NewStoreWatcher returns a watcher of n's JetStream store. Run starts it.
func NewStoreWatcher(n *NATS, log *slog.Logger, reg prometheus.Registerer) *StoreWatcher {
	if log == nil {
		log = slog.Default()
	}
	f := promauto.With(reg)
	w := &StoreWatcher{n: n, log: log.With("component", "jetstream-store"),
		writable: f.NewGauge(prometheus.GaugeOpts{
			Namespace: "twinhub", Subsystem: "jetstream", Name: "store_writable",
			Help: "1 while the embedded JetStream stores writes, 0 while it is disabled or a stream has a write error (disk full).",
		}),
		restarts: f.NewCounter(prometheus.CounterOpts{
			Namespace: "twinhub", Subsystem: "jetstream", Name: "store_restarts_total",
			Help: "In-process JetStream restarts after a store write failure.",
		}),
	}
	w.writable.Set(1)
	return w
}

// Problems reports why JetStream cannot store writes right now, one line
// each, or nil if it can.
func (w *StoreWatcher) Problems() []string {
	problems, _ := w.check()
	return problems
}

// check asks nats-server for its health; restartable says whether every
// problem is one a JetStream restart clears: JetStream disabled, or a
// stream's write error. A clustered server is never restarted by us: its
// problems may be elections or absent peers, which its cluster resolves.
func (w *StoreWatcher) check() (problems []string, restartable bool) {
	h := w.n.srv.Healthz(&server.HealthzOptions{Details: true})
	restartable = !w.n.srv.JetStreamIsClustered()
	for _, e := range h.Errors {
		problems = append(problems, e.Error)
		switch {
		case e.Type == server.HealthzErrorJetStream:
		case e.Type == server.HealthzErrorStream && strings.Contains(e.Error, "write error"):
		default:
			restartable = false
		}
	}
	if h.Error != "" {
		problems, restartable = append(problems, h.Error), false
	}
	return problems, restartable
}

// Run checks the store every storeCheckEvery until ctx ends; it returns nil then.
func (w *StoreWatcher) Run(ctx context.Context) error {
	base := w.n.srv.JetStreamConfig() // the configuration to restart with; nil if JetStream is off
	storeDir := ""
	if base != nil {
		storeDir = base.StoreDir
	}
	t := time.NewTicker(storeCheckEvery)
	defer t.Stop()
	var (
		since   time.Time     // when the current failure was first seen
		backoff time.Duration // wait before the next restart
		last    time.Time     // the last restart
	)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		problems, restartable := w.check()
		now := time.Now()
		switch {
		case len(problems) == 0 && since.IsZero():
			continue
		case len(problems) == 0:
			w.writable.Set(1)
			w.log.Info("JetStream stores writes again", "after", now.Sub(since).Round(time.Millisecond))
			since, backoff = time.Time{}, 0
			continue
		case since.IsZero():
			since, backoff, last = now, restartFirstAfter, now
			w.writable.Set(0)
			w.log.Error("JetStream cannot store writes; the hub refuses changes until it can. "+
				"Free space on the data directory's file system (or fix its permissions); "+
				"twinhub restarts JetStream by itself once it can (recovers_itself), else restart twinhub",
				"problems", strings.Join(problems, "; "), "store", storeDir, "free_bytes", freeBytes(storeDir),
				"recovers_itself", restartable)
		}
		if !restartable || now.Sub(last) < backoff || ctx.Err() != nil {
			continue
		}
		if free := freeBytes(storeDir); free >= 0 && free < restartMinFree {
			continue // still full: a restart would fail the same way
		}
		last, backoff = now, min(2*backoff, restartMaxAfter)
		w.restart(base)
	}
}

// restart shuts JetStream down and enables it again with the
// configuration it started with, which reloads every stream from disk and
// so clears their write errors.
func (w *StoreWatcher) restart(base *server.JetStreamConfig) {
	if base == nil || filepath.Base(base.StoreDir) != server.JetStreamStoreDir {
		w.log.Error("cannot restart JetStream in-process: its configuration is unknown; restart twinhub")
		return
	}
	w.restarts.Inc()
	w.log.Warn("restarting JetStream to clear its write errors", "store", base.StoreDir)
	srv := w.n.srv
	if err := srv.ShutdownJetStream(); err != nil {
		w.log.Error("shutting JetStream down for a restart", "err", err)
		return
	}
	// As nats-server's own restart on a configuration reload does: the same
	// directory (EnableJetStream appends JetStreamStoreDir), and limits
	// computed again from the memory and the disk space there are now.
	cfg := &server.JetStreamConfig{StoreDir: filepath.Dir(base.StoreDir), Domain: base.Domain, UniqueTag: base.UniqueTag}
	if err := srv.EnableJetStream(cfg); err != nil {
		w.log.Error("restarting JetStream failed; twinhub tries again", "err", err)
	}
}
