package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinhub/twinhub/bridge/httpapi"
	chdeploy "github.com/twinhub/twinhub/deploy/clickhouse"
	"github.com/twinhub/twinhub/queries/history"
	chsink "github.com/twinhub/twinhub/sinks/clickhouse"
)

var _ httpapi.History = (*history.Reader)(nil)

// historyConfig is the twin-history part of `twinhub run`'s flags.
type historyConfig struct {
	url       string // --clickhouse-url
	local     string // --clickhouse-local: off, auto or on
	localAddr string // --clickhouse-local-addr
	sink      bool   // --history-sink
	batch     int    // --history-batch
}

// historyFlags declares the flags; the returned func reads them after Parse.
func historyFlags(fs *envFlags) func() historyConfig {
	url := fs.String("clickhouse-url", "", "keep twin history in this ClickHouse (native protocol), e.g. clickhouse://127.0.0.1:9000/twinhub")
	local := fs.String("clickhouse-local", "off", "without --clickhouse-url: on starts the installed clickhouse-server with its data in <data-dir>/clickhouse, "+
		"auto does so when one is installed, off keeps history off")
	localAddr := fs.String("clickhouse-local-addr", "127.0.0.1:19000", "native-protocol address of the local ClickHouse server (port 0: a free one)")
	sink := fs.Bool("history-sink", true, "write change events to ClickHouse; every instance on one NATS may: one at a time writes, the others take over when it stops")
	batch := fs.Int("history-batch", 10_000, "change events per ClickHouse insert (at most; a batch is also written after 1s)")
	return func() historyConfig {
		return historyConfig{url: *url, local: *local, localAddr: *localAddr, sink: *sink, batch: *batch}
	}
}

func (c historyConfig) validate() error {
	switch c.local {
	case "off", "auto", "on":
	default:
		return fmt.Errorf("--clickhouse-local must be off, auto or on, got %q", c.local)
	}
	if c.url != "" {
		if _, err := chdeploy.ParseURL(c.url); err != nil {
			return fmt.Errorf("--clickhouse-url: %w", err)
		}
	}
	return chsink.Config{BatchEvents: c.batch}.Validate()
}

// historyParts is what startHistory wires: all nil when history is off.
type historyParts struct {
	reader httpapi.History
	sink   *chsink.Sink
	close  func()
	// probe pings ClickHouse for /readyz.
	probe *clickhouseProbe
}

// startHistory connects twinhub to ClickHouse (starting a local server if
// asked to) and builds the history reader and sink. ClickHouse being down
// does not fail it: the sink retries and reads answer 503 until it is up.
func startHistory(ctx context.Context, c historyConfig, dataDir string, js jetstream.JetStream, log *slog.Logger, reg prometheus.Registerer) (historyParts, error) {
	parts := historyParts{close: func() {}}
	url := c.url
	if url == "" {
		_, _, missing := chdeploy.FindServer()
		switch {
		case c.local == "off":
			log.Warn("twin history is OFF: start twinhub with --clickhouse-url clickhouse://host:9000/twinhub, " +
				"or with --clickhouse-local on to run the installed clickhouse-server (make deps installs it)")
			return parts, nil
		case missing != nil && c.local == "auto":
			log.Warn("twin history is OFF: clickhouse-server is not installed; install it (make deps, or apt-get install clickhouse-server) " +
				"or start twinhub with --clickhouse-url clickhouse://host:9000/twinhub")
			return parts, nil
		case missing != nil:
			return parts, fmt.Errorf("--clickhouse-local on: %w", missing)
		}
		dir := filepath.Join(dataDir, "clickhouse")
		srv, err := chdeploy.StartServer(ctx, chdeploy.ServerConfig{Dir: dir, Addr: c.localAddr, Logger: log})
		if err != nil {
			return parts, fmt.Errorf("starting the local ClickHouse server: %w (set --clickhouse-local-addr, or --clickhouse-local off)", err)
		}
		parts.close = srv.Stop
		url = srv.URL("")
		_, port, _ := net.SplitHostPort(srv.Addr())
		log.Info("local ClickHouse server started", "addr", srv.Addr(), "dir", dir,
			"sql", "clickhouse-client --port "+port+" --database "+chdeploy.DefaultDatabase)
	}
	opts, err := chdeploy.ParseURL(url)
	if err != nil {
		parts.close()
		return historyParts{close: func() {}}, err
	}
	conn, err := chdeploy.Open(opts)
	if err != nil {
		parts.close()
		return historyParts{close: func() {}}, err
	}
	// Migrate now when ClickHouse is reachable; otherwise the sink does when it is back.
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	version, err := chdeploy.EnsureSchema(sctx, opts)
	cancel()
	if err != nil {
		log.Warn("ClickHouse is not reachable; twinhub runs on, history reads answer 503 and the sink retries until it is back",
			"clickhouse", opts.Addr, "err", err)
	} else {
		log.Info("ClickHouse history schema ready", "schema_version", version, "database", opts.Auth.Database)
	}
	stopServer := parts.close
	parts.close = func() {
		conn.Close()
		stopServer()
	}
	parts.reader = history.New(history.Config{}, conn, js)
	parts.probe = &clickhouseProbe{addr: strings.Join(opts.Addr, ","), ping: conn.Ping}
	if c.sink {
		if parts.sink, err = chsink.New(chsink.Config{BatchEvents: c.batch, Logger: log}, opts, js, reg); err != nil {
			parts.close()
			return historyParts{close: func() {}}, err
		}
	} else {
		log.Info("the history sink is off here (--history-sink=false): this instance never writes the history")
	}
	log.Info("twin history on", "clickhouse", opts.Addr, "database", opts.Auth.Database, "sink", c.sink)
	return parts, nil
}
