package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/twinhub/twinhub/bridge/explorer"
	"github.com/twinhub/twinhub/bridge/httpapi"
	"github.com/twinhub/twinhub/bridge/mqttbridge"
	"github.com/twinhub/twinhub/bridge/sas"
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
	nats         natsClientConfig
	mqttURL      string
	bridgeID     string
	partitions   int
	syncAlways   bool
	syncInterval time.Duration
	eventMaxAge  time.Duration
	logLevel     string
	mqttsAddr    string
	httpsAddr    string
	tlsCert      string
	tlsKey       string
	hostnames    []string
	httpRead     time.Duration
	auth         bool
	pprof        bool
	history      historyConfig
	// deviceInFlight bounds one device's MQTT twin requests in flight.
	deviceInFlight int
	// jobRate bounds the devices a twin-update job patches per second.
	jobRate int

	// JetStream replication of every stream and bucket (--replicas).
	replicas             int
	allowReplicaDecrease bool
}

func (c runConfig) validate() error {
	var errs []error
	if c.httpRead <= 0 {
		errs = append(errs, fmt.Errorf("--http-read-timeout %s: must be positive", c.httpRead))
	}
	if c.jobRate < 1 {
		errs = append(errs, fmt.Errorf("--job-rate %d: must be at least 1 device per second", c.jobRate))
	}
	for _, h := range c.hostnames {
		if strings.ContainsAny(h, "/?#@ ") || (strings.Contains(h, ":") && net.ParseIP(h) == nil) {
			errs = append(errs, fmt.Errorf("--hostname %q: give host names only, without a port or path", h))
		}
	}
	for name, addr := range map[string]string{"--http-addr": c.httpAddr, "--mqtt-addr": c.mqttAddr, "--nats-addr": c.natsAddr,
		"--mqtts-addr": c.mqttsAddr, "--https-addr": c.httpsAddr} {
		if addr == "" && (name == "--mqtts-addr" || name == "--https-addr") {
			continue // turned off
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %v", name, addr, err))
		}
	}
	if c.deviceInFlight < 1 {
		errs = append(errs, fmt.Errorf("--mqtt-device-max-in-flight must be at least 1, got %d", c.deviceInFlight))
	}
	if c.dataDir == "" {
		errs = append(errs, errors.New("--data-dir must not be empty"))
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	if err := c.nats.validate(c.natsURL); err != nil {
		errs = append(errs, err)
	}
	if err := c.history.validate(); err != nil {
		errs = append(errs, err)
	}
	if c.replicas != 1 && c.replicas != 3 && c.replicas != 5 {
		errs = append(errs, fmt.Errorf("--replicas must be 1, 3 or 5, got %d", c.replicas))
	}
	return errors.Join(errs...)
}

func newRunCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run",
		Short: "start the hub (embedded NATS and MQTT broker by default)",
		Long: `Start the hub: an embedded NATS server with JetStream, an embedded MQTT broker,
the twin processor, the query projection, the history sink and the HTTP API.
Every flag can also be set with an environment variable: --http-addr is
TWINHUB_HTTP_ADDR.`,
		Args: noArgs,
	}
	config := runFlags(&envFlags{FlagSet: cmd.Flags(), env: allEnv})
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := config()
		if err != nil {
			return err
		}
		return cmdRun(cmd.Context(), c)
	}
	return cmd
}

func cmdRun(ctx context.Context, c runConfig) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)
	return run(ctx, c, log)
}

// parseRunFlags reads `twinhub run`'s flags and environment variables.
func parseRunFlags(args []string) (runConfig, error) {
	fs := &envFlags{FlagSet: pflag.NewFlagSet("run", pflag.ContinueOnError), env: allEnv}
	config := runFlags(fs)
	if err := fs.Parse(args); err != nil {
		return runConfig{}, err
	}
	return config()
}

// runFlags declares `twinhub run`'s flags on fs; the returned func reads
// and validates them after parsing.
func runFlags(fs *envFlags) func() (runConfig, error) {
	dataDir := fs.String("data-dir", "./data", "directory for JetStream's store and twinhub's files")
	httpAddr := fs.String("http-addr", "127.0.0.1:8080", "HTTP API, /healthz and /metrics listen address")
	mqttAddr := fs.String("mqtt-addr", "127.0.0.1:1883", "embedded MQTT broker listen address")
	natsAddr := fs.String("nats-addr", "127.0.0.1:4222", "embedded NATS client listen address (for outside consumers of change events)")
	natsURL := fs.String("nats-url", "", "use this external NATS (JetStream) instead of the embedded server, e.g. nats://host:4222")
	mqttURL := fs.String("mqtt-url", "", "bridge this external MQTT broker instead of embedding one, e.g. tcp://host:1883")
	bridgeID := fs.String("bridge-client-id", "twinhub-bridge", "MQTT client ID of the bridge to an external broker (unique per instance)")
	partitions := fs.Int("partitions", 16, "command partitions (fixed when the streams are first created)")
	replicas := fs.Int("replicas", 1, "JetStream replicas of every stream and bucket: 1, 3 or 5 (3 and 5 need a NATS cluster, --nats-url); raised at start, never lowered silently")
	allowReplicaDecrease := fs.Bool("allow-replica-decrease", false, "let a lower --replicas than the existing streams have lower them")
	syncAlways := fs.Bool("sync-always", false, "embedded NATS: fsync every JetStream write before acknowledging it")
	syncInterval := fs.Duration("sync-interval", 2*time.Minute, "embedded NATS: fsync interval when --sync-always is off")
	eventMaxAge := fs.Duration("event-max-age", 7*24*time.Hour, "how long change events stay in JetStream")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	mqttsAddr := fs.String("mqtts-addr", "127.0.0.1:8883", "embedded MQTT broker TLS listen address (empty: off)")
	httpsAddr := fs.String("https-addr", "127.0.0.1:8443", "HTTPS API listen address (empty: off); the Azure service SDK needs port 443")
	tlsCert := fs.String("tls-cert", "", "server certificate (PEM) for MQTTS and HTTPS (default: one issued by a local CA in the data directory)")
	tlsKey := fs.String("tls-key", "", "private key (PEM) of --tls-cert")
	hostnames := fs.String("hostname", "", "comma-separated host names the hub also answers to: SAS tokens may name them, and the local CA's certificate covers them (localhost always)")
	httpRead := fs.Duration("http-read-timeout", 30*time.Second, "time a client has to send a whole HTTP request, body included")
	auth := fs.Bool("auth", true, "require SAS tokens from devices and back ends (false: anyone on the listeners may do anything)")
	jobRate := fs.Int("job-rate", 1000, "devices a twin-update job (PUT /jobs/v2/{id}) patches per second at most, so that a job over a large fleet leaves room for device traffic")
	deviceInFlight := fs.Int("mqtt-device-max-in-flight", 16, "twin requests one device may have in flight over MQTT; beyond it that device gets 429 (ThrottlingException) and other devices are unaffected")
	pprofOn := fs.Bool("pprof", false, "serve Go profiles at /debug/pprof/ on the HTTP listener, unauthenticated (keep it on loopback)")
	history := historyFlags(fs)
	natsClient := natsClientFlags(fs)
	configFile := fs.String("config", "", "YAML file of flag names and values (http-addr: 127.0.0.1:8080); flags and TWINHUB_* variables override it")
	return func() (runConfig, error) {
		if err := applyConfigFile(fs, *configFile); err != nil {
			return runConfig{}, err
		}
		c := runConfig{dataDir: *dataDir, httpAddr: *httpAddr, mqttAddr: *mqttAddr, natsAddr: *natsAddr, natsURL: *natsURL,
			mqttURL: *mqttURL, bridgeID: *bridgeID, partitions: *partitions, syncAlways: *syncAlways,
			syncInterval: *syncInterval, eventMaxAge: *eventMaxAge, logLevel: *logLevel, httpRead: *httpRead,
			mqttsAddr: *mqttsAddr, httpsAddr: *httpsAddr, tlsCert: *tlsCert, tlsKey: *tlsKey, auth: *auth, pprof: *pprofOn, history: history()}
		c.deviceInFlight = *deviceInFlight
		c.jobRate = *jobRate
		c.nats = natsClient()
		for _, h := range strings.Split(*hostnames, ",") {
			if h = strings.TrimSpace(h); h != "" {
				c.hostnames = append(c.hostnames, h)
			}
		}
		c.replicas, c.allowReplicaDecrease = *replicas, *allowReplicaDecrease
		return c, errors.Join(fs.Err(), c.validate())
	}
}

func run(ctx context.Context, c runConfig, log *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerBuildInfo(reg)
	topo := topology.Config{Partitions: c.partitions, EventMaxAge: c.eventMaxAge, Replicas: c.replicas,
		AllowReplicaDecrease: c.allowReplicaDecrease, Logger: log}
	if err := topo.Validate(); err != nil {
		return err
	}
	dirLock, err := claimDataDir(c)
	if err != nil {
		return err
	}
	defer dirLock.Close()

	ns, connect, err := startNATS(c, log)
	if err != nil {
		return err
	}
	if ns != nil {
		defer ns.Shutdown()
	}
	nc, subConn, js, err := provisionJetStream(ctx, connect, topo)
	if nc != nil {
		defer nc.Close()
	}
	if err != nil {
		return err
	}
	setupCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	lostData := reportLostData(setupCtx, js, log, reg)
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
	queries, err := startQueries(setupCtx, connect, log, reg)
	if err != nil {
		return err
	}
	defer queries.close() // after the projection stopped (g.Wait below)
	jobStore, jobRunner, err := startJobs(setupCtx, js, client, store, queries, c.jobRate, log, reg)
	if err != nil {
		return err
	}

	// Security: shared access policies, CA certificates, and TLS for MQTTS and HTTPS.
	sec, err := openSecurity(setupCtx, c, js, log, reg)
	if err != nil {
		return err
	}
	policies, certStore, tlsConfig := sec.policies, sec.certs, sec.tls

	// MQTT: embedded broker with the twin hook unless --mqtt-url.
	svcCfg := mqttbridge.ServiceConfig{MaxInFlightPerDevice: c.deviceInFlight, Logger: log}
	if err := svcCfg.Validate(); err != nil {
		return err
	}
	svc := mqttbridge.NewService(svcCfg, client, reg)
	defer svc.Close()
	edge, err := startMQTT(c, mqttParts{svc: svc, store: store, client: client, policies: policies, certs: certStore, tls: tlsConfig}, log, reg)
	if err != nil {
		return err
	}
	broker, bridge, auth := edge.broker, edge.bridge, edge.auth
	notifier := mqttbridge.NewNotifier(js, svc, c.mqttURL != "")

	// Twin history in ClickHouse, unless it is off.
	hist, err := startHistory(ctx, c.history, c.dataDir, js, log, reg)
	if err != nil {
		return err
	}
	defer hist.close() // after the sink has drained (g.Wait below)

	var ready atomic.Bool
	api := httpapi.New(httpapi.Config{Logger: log, Policies: policies, HubNames: sas.HubNames(c.hostnames...), ReadTimeout: c.httpRead,
		History: hist.reader, Querier: queries, Events: js, Jobs: jobStore}, client, store, ready.Load,
		promhttp.HandlerFor(reg, promhttp.HandlerOpts{EnableOpenMetrics: true}), reg)
	var storeWatch *embedded.StoreWatcher // nil with an external NATS
	if ns != nil {
		storeWatch = embedded.NewStoreWatcher(ns, log, reg)
	}
	api.ServeCertificates(certStore)
	api.Handle("GET /readyz", "readyz", readiness(readinessParts{started: ready.Load, nc: nc, store: storeWatch, lost: lostData,
		queries: queries, broker: broker, bridge: bridge, clickhouse: hist.probe}))
	api.Handle("GET /livez", "livez", httpapi.Livez)
	api.Handle("GET "+explorer.Prefix, "ui", explorer.Handler().ServeHTTP)
	if c.pprof {
		api.EnableProfiling()
		log.Warn("Go profiles are served without authentication at /debug/pprof/ (--pprof)")
	}
	web, err := listenHTTP(c, api, tlsConfig, broker)
	if err != nil {
		return err
	}

	// Pipeline components run until pctx ends, which happens only after the
	// edges stopped taking requests, so work in flight is finished.
	pctx, stopPipeline := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPipeline()
	g, gctx := errgroup.WithContext(pctx)
	// Each of these exits when pctx (or a sibling's failure) ends gctx.
	for _, component := range pipelineComponents([]runner{proc, notifier, queries.proj, jobRunner, certStore}, storeWatch, hist.sink, bridge) {
		g.Go(func() error { return component.Run(gctx) })
	}
	if auth != nil {
		g.Go(func() error { return auth.Run(gctx, nc) })
	}
	httpErr := web.serve()

	// Queries must see every twin before the hub says it is ready.
	waitAll(ctx, gctx, proc.Running(), queries.proj.Loaded())
	ready.Store(true)
	log.Debug("HTTP routes", "routes", strings.Join(httpRoutes(api, web, broker), ","))
	log.Info("twinhub is ready", "http", web.httpAddr(), "https", web.httpsAddr(), "auth", c.auth, "partitions", topo.WithDefaults().Partitions)

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
	// The shutdown, in order: the edges stop taking requests, the commands
	// they stored are applied, then the pipeline stops.
	web.shutdown(15 * time.Second)
	if broker != nil {
		if err := broker.Close(); err != nil {
			log.Warn("stopping the MQTT broker", "err", err)
		}
	}
	flushCtx, cancelFlush := context.WithTimeout(context.Background(), 5*time.Second)
	if err := proc.Flush(flushCtx); err != nil {
		log.Warn("commands were still pending at shutdown; they are applied after the next start", "err", err)
	}
	cancelFlush()
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

// httpRoutes lists the route patterns the hub serves: the API's, and MQTT
// over WebSockets on the HTTPS listener (outside the API's mux).
func httpRoutes(api *httpapi.API, web *webServers, broker *embedded.Broker) []string {
	routes := api.Routes()
	if web.httpsLn != nil && broker != nil && broker.WebSocket() != nil {
		routes = append(routes, "GET "+embedded.WebSocketPath)
	}
	return routes
}

// withWebSocket serves MQTT over WebSockets at embedded.WebSocketPath and
// the API everywhere else.
func withWebSocket(ws, api http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == embedded.WebSocketPath {
			ws.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})
}
