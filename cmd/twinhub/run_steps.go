package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinhub/twinhub/bridge/certs"
	"github.com/twinhub/twinhub/bridge/httpapi"
	"github.com/twinhub/twinhub/bridge/mqttbridge"
	"github.com/twinhub/twinhub/bridge/sas"
	"github.com/twinhub/twinhub/deploy/embedded"
	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
	chsink "github.com/twinhub/twinhub/sinks/clickhouse"
)

// The start steps of `twinhub run`, each returning what run wires next.

// startNATS starts the embedded NATS server, unless --nats-url names one,
// and returns it (nil with --nats-url) and how to connect to the NATS in use.
// Replies to twinhub go to a private inbox prefix (see
// topology.InternalInboxPrefix).
func startNATS(c runConfig, log *slog.Logger) (*embedded.NATS, func(name string) (*nats.Conn, error), error) {
	inbox, errs := nats.CustomInboxPrefix(topology.InternalInboxPrefix), nats.ErrorHandler(natsErrorLogger(log))
	if c.natsURL != "" {
		return nil, func(name string) (*nats.Conn, error) {
			return nats.Connect(c.natsURL, append(c.nats.options(), inbox, errs, nats.Name(name), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true))...)
		}, nil
	}
	internal, users, passwords, created, err := embeddedNATSUsers(c.dataDir)
	if err != nil {
		return nil, nil, err
	}
	ns, err := embedded.StartNATS(embedded.NATSConfig{
		Addr: c.natsAddr, StoreDir: filepath.Join(c.dataDir, "jetstream"),
		SyncAlways: c.syncAlways, SyncInterval: c.syncInterval, Internal: internal, Users: users, Logger: log,
	})
	if err != nil {
		return nil, nil, err
	}
	log.Info("embedded NATS with JetStream started", "url", ns.ClientURL(), "store", filepath.Join(c.dataDir, "jetstream"), "sync_always", c.syncAlways)
	log.Info("embedded NATS requires a user and password; `twinhub nats-credentials` prints the read-only events user's",
		"passwords", passwords.Path(), "new", created)
	return ns, func(name string) (*nats.Conn, error) { return ns.Connect(name, inbox, errs) }, nil
}

// serverTLS is the TLS configuration of the MQTTS and HTTPS listeners (nil
// when both are off): --tls-cert, or a certificate of the local CA.
func serverTLS(c runConfig, log *slog.Logger, reg prometheus.Registerer) (*tls.Config, error) {
	if c.mqttsAddr == "" && c.httpsAddr == "" {
		return nil, nil
	}
	certFile, keyFile := c.tlsCert, c.tlsKey
	if certFile == "" {
		files, err := embedded.LocalTLS(c.dataDir, c.hostnames)
		if err != nil {
			return nil, err
		}
		certFile, keyFile = files.Cert, files.Key
		log.Info("TLS certificate issued by twinhub's local CA; clients must trust the CA (e.g. NODE_EXTRA_CA_CERTS)",
			"ca", files.CA, "names", strings.Join(files.Names, ","), "new", files.Generated)
	}
	tlsConfig, err := embedded.ServerConfig(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	reg.MustRegister(newCertExpiryCollector(tlsListeners(c, tlsConfig)))
	return tlsConfig, nil
}

// mqttParts are what the MQTT edge works with.
type mqttParts struct {
	svc      *mqttbridge.Service
	store    *pipeline.Store
	client   *pipeline.Client
	policies *sas.Policies // nil with --auth=false
	certs    *certs.Store
	tls      *tls.Config
}

// mqttEdge is the running MQTT edge: the embedded broker (with auth unless
// --auth=false), or the bridge to --mqtt-url.
type mqttEdge struct {
	broker *embedded.Broker
	auth   *mqttbridge.Auth
	bridge *mqttbridge.Bridge
}

// startMQTT starts the embedded broker with the twin hooks, or builds the
// bridge to an external broker with --mqtt-url.
func startMQTT(c runConfig, p mqttParts, log *slog.Logger, reg prometheus.Registerer) (mqttEdge, error) {
	var edge mqttEdge
	if c.mqttURL != "" {
		bridge, err := mqttbridge.NewBridge(mqttbridge.BridgeConfig{BrokerURL: c.mqttURL, ClientID: c.bridgeID}, p.svc)
		if err != nil {
			return edge, err
		}
		log.Warn("MQTT is TRANSPORT ONLY with --mqtt-url: the external broker authenticates devices and keeps them " +
			"apart; twinhub checks no device credentials and applies no topic ACL there, and Azure's $iothub topics are " +
			"not served. Configure the broker's authentication and a per-device ACL (README, Security)")
		edge.bridge = bridge
		return edge, nil
	}
	bcfg := embedded.BrokerConfig{Addr: c.mqttAddr, TLSAddr: c.mqttsAddr, TLS: p.tls, AllowAnonymous: !c.auth, Logger: log,
		WebSocket: c.httpsAddr != ""} // MQTT over WebSockets shares the HTTPS port, as on IoT Hub
	// The isolation hook (topic ACL, Wills, retain) belongs to the broker,
	// so it holds on every listener, present and future.
	hooks := []mqtt.Hook{mqttbridge.NewIsolation(log, reg), mqttbridge.NewHook(p.svc)}
	if c.auth {
		edge.auth = mqttbridge.NewAuth(p.store, p.client, p.policies, log, reg)
		edge.auth.SetHubNames(sas.HubNames(c.hostnames...))
		edge.auth.SetCertificateAuthorities(p.certs)
		p.certs.OnChange(edge.auth.CertificateChanged)
		hooks = append([]mqtt.Hook{edge.auth}, hooks...)
	}
	broker, err := embedded.StartBroker(bcfg, hooks...)
	if err != nil {
		return edge, err
	}
	edge.broker = broker
	if edge.auth != nil {
		edge.auth.SetServer(broker.Server)
	}
	p.svc.SetPublisher(mqttbridge.NewBrokerPublisher(broker.Server))
	reg.MustRegister(embedded.NewBrokerCollector(broker))
	log.Info("embedded MQTT broker listening", "addr", broker.Addr(), "tls_addr", broker.TLSAddr())
	return edge, nil
}

// webServers are the HTTP and HTTPS listeners of the API (HTTPS also
// serves MQTT over WebSockets with the embedded broker).
type webServers struct {
	ln, httpsLn       net.Listener // httpsLn is nil with --https-addr ""
	httpSrv, httpsSrv *http.Server
}

// listenHTTP opens the API's listeners.
func listenHTTP(c runConfig, api *httpapi.API, tlsConfig *tls.Config, broker *embedded.Broker) (*webServers, error) {
	ln, err := net.Listen("tcp", c.httpAddr)
	if err != nil {
		return nil, fmt.Errorf("HTTP listener on %s: %w (set --http-addr)", c.httpAddr, err)
	}
	w := &webServers{ln: ln, httpSrv: api.Server(), httpsSrv: api.Server()}
	if c.httpsAddr == "" {
		return w, nil
	}
	if w.httpsLn, err = tls.Listen("tcp", c.httpsAddr, tlsConfig); err != nil {
		ln.Close()
		return nil, fmt.Errorf("HTTPS listener on %s: %w (set --https-addr)", c.httpsAddr, err)
	}
	if broker != nil && broker.WebSocket() != nil {
		w.httpsSrv.Handler = withWebSocket(broker.WebSocket(), api)
	}
	return w, nil
}

// serve starts serving; the channel gets the error of a server that stops.
func (w *webServers) serve() <-chan error {
	errc := make(chan error, 2)
	// Exits when httpSrv.Shutdown is called.
	go func() { errc <- w.httpSrv.Serve(w.ln) }()
	if w.httpsLn != nil {
		// Exits when httpsSrv.Shutdown is called.
		go func() { errc <- w.httpsSrv.Serve(w.httpsLn) }()
	}
	return errc
}

func (w *webServers) httpAddr() string { return w.ln.Addr().String() }

func (w *webServers) httpsAddr() string {
	if w.httpsLn == nil {
		return ""
	}
	return w.httpsLn.Addr().String()
}

// shutdown stops both servers, waiting up to timeout for requests in flight.
func (w *webServers) shutdown(timeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// Requests still running after the timeout are cut off.
	_ = w.httpSrv.Shutdown(ctx)
	_ = w.httpsSrv.Shutdown(ctx)
}

// claimDataDir creates the data directory, locks it against a second
// instance, and checks that the listeners' ports are free.
func claimDataDir(c runConfig) (io.Closer, error) {
	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data directory: %w", err)
	}
	lock, err := embedded.LockDataDir(c.dataDir)
	if err != nil {
		return nil, err
	}
	if err := checkPorts(c); err != nil {
		lock.Close()
		return nil, err
	}
	return lock, nil
}

// provisionJetStream connects twinhub's two NATS connections (the second
// pulls the command partitions) and creates or reconciles the streams and
// buckets. nc is returned, for the caller to close, even with an error.
func provisionJetStream(ctx context.Context, connect func(string) (*nats.Conn, error), topo topology.Config) (nc, subConn *nats.Conn, js jetstream.JetStream, err error) {
	if nc, err = connect("twinhub"); err != nil {
		return nil, nil, nil, fmt.Errorf("connecting to NATS: %w", err)
	}
	if subConn, err = connect("twinhub-processor"); err != nil {
		return nc, nil, nil, fmt.Errorf("connecting to NATS: %w", err)
	}
	if js, err = jetstream.New(nc); err != nil {
		return nc, nil, nil, err
	}
	// A cluster still electing its leaders is waited for, and logged, this long.
	ensureCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := topology.Ensure(ensureCtx, js, topo); err != nil {
		return nc, nil, nil, fmt.Errorf("provisioning JetStream: %w%s", err, natsRefusal(nc))
	}
	return nc, subConn, js, nil
}

// security is what authenticates clients: the shared access policies (nil
// with --auth=false), the CA certificates of X.509 devices, and the TLS
// configuration of MQTTS and HTTPS (nil when both are off).
type security struct {
	policies *sas.Policies
	certs    *certs.Store
	tls      *tls.Config
}

func openSecurity(ctx context.Context, c runConfig, js jetstream.JetStream, log *slog.Logger, reg prometheus.Registerer) (security, error) {
	var sec security
	var err error
	if c.auth {
		if sec.policies, err = openPolicies(ctx, js, c.dataDir, log); err != nil {
			return sec, err
		}
	} else {
		log.Warn("authentication is OFF (--auth=false): anyone who reaches the listeners can read and change every twin")
	}
	if sec.certs, err = openCertificates(ctx, js, log); err != nil {
		return sec, err
	}
	sec.tls, err = serverTLS(c, log, reg)
	return sec, err
}

// runner is a component that runs until its context ends.
type runner interface{ Run(context.Context) error }

// pipelineComponents lists the components to run, leaving out the optional
// ones that are off (nil): the store watcher without embedded NATS, the
// history sink without history, the bridge without --mqtt-url.
func pipelineComponents(always []runner, storeWatch *embedded.StoreWatcher, sink *chsink.Sink, bridge *mqttbridge.Bridge) []runner {
	out := always
	if storeWatch != nil {
		out = append(out, storeWatch)
	}
	if sink != nil {
		out = append(out, sink)
	}
	if bridge != nil {
		out = append(out, bridge)
	}
	return out
}

// waitAll waits until every channel is closed, or ctx or gctx ends.
func waitAll(ctx, gctx context.Context, chans ...<-chan struct{}) {
	for _, ch := range chans {
		select {
		case <-ch:
		case <-gctx.Done():
			return
		case <-ctx.Done():
			return
		}
	}
}
