package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/twinhub/twinhub/bridge/httpapi"
	"github.com/twinhub/twinhub/bridge/mqttbridge"
	"github.com/twinhub/twinhub/deploy/embedded"
	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
)

type runConfig struct {
	dataDir      string
	httpAddr     string
	mqttAddr     string
	natsAddr     string
	natsURL      string
	mqttURL      string
	bridgeID     string
	partitions   int
	syncAlways   bool
	syncInterval time.Duration
	eventMaxAge  time.Duration
	logLevel     string
}

func (c runConfig) validate() error {
	var errs []error
	for name, addr := range map[string]string{"--http-addr": c.httpAddr, "--mqtt-addr": c.mqttAddr, "--nats-addr": c.natsAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %v", name, addr, err))
		}
	}
	if c.dataDir == "" {
		errs = append(errs, errors.New("--data-dir must not be empty"))
	}
	return errors.Join(errs...)
}

func cmdRun(ctx context.Context, args []string) error {
	fs := flagSet("run")
	var c runConfig
	dataDir := fs.String("data-dir", "./data", "directory for JetStream's store and twinhub's files")
	httpAddr := fs.String("http-addr", "127.0.0.1:8080", "HTTP API, /healthz and /metrics listen address")
	mqttAddr := fs.String("mqtt-addr", "127.0.0.1:1883", "embedded MQTT broker listen address")
	natsAddr := fs.String("nats-addr", "127.0.0.1:4222", "embedded NATS client listen address (for outside consumers of change events)")
	natsURL := fs.String("nats-url", "", "use this external NATS (JetStream) instead of the embedded server, e.g. nats://host:4222")
	mqttURL := fs.String("mqtt-url", "", "bridge this external MQTT broker instead of embedding one, e.g. tcp://host:1883")
	bridgeID := fs.String("bridge-client-id", "twinhub-bridge", "MQTT client ID of the bridge to an external broker (unique per instance)")
	partitions := fs.Int("partitions", 16, "command partitions (fixed when the streams are first created)")
	syncAlways := fs.Bool("sync-always", false, "embedded NATS: fsync every JetStream write before acknowledging it")
	syncInterval := fs.Duration("sync-interval", 2*time.Minute, "embedded NATS: fsync interval when --sync-always is off")
	eventMaxAge := fs.Duration("event-max-age", 7*24*time.Hour, "how long change events stay in JetStream")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c = runConfig{dataDir: *dataDir, httpAddr: *httpAddr, mqttAddr: *mqttAddr, natsAddr: *natsAddr, natsURL: *natsURL,
		mqttURL: *mqttURL, bridgeID: *bridgeID, partitions: *partitions, syncAlways: *syncAlways,
		syncInterval: *syncInterval, eventMaxAge: *eventMaxAge, logLevel: *logLevel}
	if err := c.validate(); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)
	return run(ctx, c, log)
}

func run(ctx context.Context, c runConfig, log *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	topo := topology.Config{Partitions: c.partitions, EventMaxAge: c.eventMaxAge}
	if err := topo.Validate(); err != nil {
		return err
	}
	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return fmt.Errorf("creating data directory: %w", err)
	}

	// NATS: embedded unless --nats-url.
	connect := func(name string) (*nats.Conn, error) {
		return nats.Connect(c.natsURL, nats.Name(name), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true))
	}
	var ns *embedded.NATS
	if c.natsURL == "" {
		var err error
		ns, err = embedded.StartNATS(embedded.NATSConfig{
			Addr: c.natsAddr, StoreDir: filepath.Join(c.dataDir, "jetstream"),
			SyncAlways: c.syncAlways, SyncInterval: c.syncInterval, Logger: log,
		})
		if err != nil {
			return err
		}
		defer ns.Shutdown()
		connect = ns.Connect
		log.Info("embedded NATS with JetStream started", "url", ns.ClientURL(), "store", filepath.Join(c.dataDir, "jetstream"), "sync_always", c.syncAlways)
	}
	nc, err := connect("twinhub")
	if err != nil {
		return fmt.Errorf("connecting to NATS: %w", err)
	}
	defer nc.Close()
	subConn, err := connect("twinhub-processor")
	if err != nil {
		return fmt.Errorf("connecting to NATS: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := topology.Ensure(setupCtx, js, topo); err != nil {
		return fmt.Errorf("provisioning JetStream: %w", err)
	}
	store, err := pipeline.OpenStore(setupCtx, js)
	if err != nil {
		return err
	}
	client, err := pipeline.NewClient(nc, topo.WithDefaults().Partitions, 30*time.Second)
	if err != nil {
		return err
	}
	defer client.Close()
	proc, err := pipeline.NewProcessor(setupCtx, pipeline.ProcessorConfig{Topology: topo, Logger: log}, nc, subConn, reg)
	if err != nil {
		return err
	}

	// MQTT: embedded broker with the twin hook unless --mqtt-url.
	svc := mqttbridge.NewService(mqttbridge.ServiceConfig{Logger: log}, client, reg)
	defer svc.Close()
	var broker *embedded.Broker
	var bridge *mqttbridge.Bridge
	if c.mqttURL == "" {
		broker, err = embedded.StartBroker(embedded.BrokerConfig{Addr: c.mqttAddr, Logger: log}, mqttbridge.NewHook(svc))
		if err != nil {
			return err
		}
		svc.SetPublisher(mqttbridge.BrokerPublisher{Server: broker.Server})
		reg.MustRegister(embedded.NewBrokerCollector(broker))
		log.Info("embedded MQTT broker listening", "addr", broker.Addr())
	} else {
		bridge, err = mqttbridge.NewBridge(mqttbridge.BridgeConfig{BrokerURL: c.mqttURL, ClientID: c.bridgeID}, svc)
		if err != nil {
			return err
		}
	}
	notifier := mqttbridge.NewNotifier(js, svc)

	var ready atomic.Bool
	api := httpapi.New(httpapi.Config{Logger: log}, client, store, ready.Load,
		promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}), reg)
	ln, err := net.Listen("tcp", c.httpAddr)
	if err != nil {
		return fmt.Errorf("HTTP listener on %s: %w (set --http-addr)", c.httpAddr, err)
	}
	httpSrv := &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second}

	// Pipeline components run until pctx ends, which happens only after the
	// edges stopped taking requests, so work in flight is finished.
	pctx, stopPipeline := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPipeline()
	g, gctx := errgroup.WithContext(pctx)
	// Each of these exits when pctx (or a sibling's failure) ends gctx.
	g.Go(func() error { return proc.Run(gctx) })
	g.Go(func() error { return notifier.Run(gctx) })
	if bridge != nil {
		g.Go(func() error { return bridge.Run(gctx) })
	}
	httpErr := make(chan error, 1)
	// Exits when httpSrv.Shutdown is called.
	go func() { httpErr <- httpSrv.Serve(ln) }()

	select {
	case <-proc.Running():
	case <-gctx.Done():
	case <-ctx.Done():
	}
	ready.Store(true)
	log.Info("twinhub is ready", "http", ln.Addr().String(), "partitions", topo.WithDefaults().Partitions)

	// Wait for a signal, a failed component or a failed HTTP server.
	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case <-gctx.Done():
		runErr = errors.New("a pipeline component stopped")
	case err := <-httpErr:
		runErr = fmt.Errorf("HTTP server: %w", err)
	}
	ready.Store(false)
	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancelShutdown()
	_ = httpSrv.Shutdown(shutdownCtx)
	if broker != nil {
		_ = broker.Close()
	}
	stopPipeline()
	if err := g.Wait(); err != nil && runErr == nil {
		runErr = err
	} else if err != nil {
		log.Error("pipeline component failed", "err", err)
	}
	_ = nc.Drain()
	log.Info("twinhub stopped")
	return runErr
}
