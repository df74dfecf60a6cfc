// Package embedded runs the in-process infrastructure of `twinhub run`: a
// nats-server with JetStream and a mochi MQTT broker, both bound to loopback
// unless configured otherwise.
package embedded

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// NATSConfig configures the embedded nats-server.
type NATSConfig struct {
	// Addr is the client listener, host:port (default 127.0.0.1:4222; port -1 picks a free one).
	Addr string
	// StoreDir holds JetStream's file store.
	StoreDir string
	// SyncAlways makes JetStream fsync every write before acknowledging it
	// (default: fsync every SyncInterval; a process crash loses nothing, a power loss may lose up to that interval).
	SyncAlways bool
	// SyncInterval is the fsync interval when SyncAlways is off (default 2 min, nats-server's default).
	SyncInterval time.Duration
	// ServerName names the server (default "twinhub").
	ServerName string
	Logger     *slog.Logger
}

// Validate reports configuration problems.
func (c NATSConfig) Validate() error {
	var errs []error
	if c.StoreDir == "" {
		errs = append(errs, errors.New("nats: a store directory is required"))
	}
	if c.Addr != "" {
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			errs = append(errs, fmt.Errorf("nats: address %q: %w", c.Addr, err))
		}
	}
	return errors.Join(errs...)
}

// NATS is a running embedded nats-server.
type NATS struct {
	srv *server.Server
}

// StartNATS starts the server and waits until it accepts connections.
func StartNATS(cfg NATSConfig) (*NATS, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:4222"
	}
	if cfg.ServerName == "" {
		cfg.ServerName = "twinhub"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	host, portStr, _ := net.SplitHostPort(cfg.Addr)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("nats: port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName:   cfg.ServerName,
		Host:         host,
		Port:         port,
		JetStream:    true,
		StoreDir:     cfg.StoreDir,
		SyncAlways:   cfg.SyncAlways,
		SyncInterval: cfg.SyncInterval,
		NoSigs:       true, // main owns the signals
		MaxPayload:   2 << 20,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("creating nats server: %w", err)
	}
	srv.SetLoggerV2(natsLogger{cfg.Logger.With("component", "nats")}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("nats server did not become ready within 30s; is %s already in use? (set --nats-addr)", cfg.Addr)
	}
	return &NATS{srv: srv}, nil
}

// ClientURL is the URL outside clients connect to.
func (n *NATS) ClientURL() string { return n.srv.ClientURL() }

// Connect opens an in-process client connection.
func (n *NATS) Connect(name string) (*nats.Conn, error) {
	return nats.Connect(n.srv.ClientURL(), nats.InProcessServer(n.srv), nats.Name(name), nats.MaxReconnects(-1))
}

// Shutdown stops the server and waits for it.
func (n *NATS) Shutdown() {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}

// natsLogger adapts slog to nats-server's logger.
type natsLogger struct{ l *slog.Logger }

func (l natsLogger) Noticef(format string, v ...any) { l.l.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Warnf(format string, v ...any)   { l.l.Warn(fmt.Sprintf(format, v...)) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.l.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Errorf(format string, v ...any)  { l.l.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Debugf(format string, v ...any)  { l.l.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Tracef(format string, v ...any)  { l.l.Debug(fmt.Sprintf(format, v...)) }
