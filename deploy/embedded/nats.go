// Package embedded runs the in-process infrastructure of `twinhub run`: a
// nats-server with JetStream and a mochi MQTT broker, both bound to loopback
// unless configured otherwise. The nats-server always requires a user name
// and password; anonymous clients are refused.
package embedded

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
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
	// Internal is the user Connect authenticates as; it may do everything.
	// Without a name and password, a user with a random password is made up
	// for this run, so only in-process clients can connect as it.
	Internal NATSUser
	// Users are further users, each limited by its permissions (outside
	// readers of change events).
	Users  []NATSUser
	Logger *slog.Logger
}

// NATSUser is a user of the embedded server.
type NATSUser struct {
	Name     string
	Password string
	// Permissions limit what the user may publish and subscribe to; nil
	// allows everything.
	Permissions *NATSPermissions
}

// NATSPermissions are subject allow and deny lists; a deny entry wins.
type NATSPermissions struct {
	PublishAllow, PublishDeny     []string
	SubscribeAllow, SubscribeDeny []string
}

func (u NATSUser) serverUser() *server.User {
	su := &server.User{Username: u.Name, Password: u.Password}
	if p := u.Permissions; p != nil {
		su.Permissions = &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: p.PublishAllow, Deny: p.PublishDeny},
			Subscribe: &server.SubjectPermission{Allow: p.SubscribeAllow, Deny: p.SubscribeDeny},
		}
	}
	return su
}

// Validate reports configuration problems.
func (c NATSConfig) Validate() error {
	var errs []error
	if c.StoreDir == "" {
		errs = append(errs, errors.New("nats: a store directory is required"))
	}
	if (c.Internal.Name == "") != (c.Internal.Password == "") {
		errs = append(errs, errors.New("nats: the internal user needs both a name and a password"))
	}
	for _, u := range c.Users {
		if u.Name == "" || u.Password == "" {
			errs = append(errs, fmt.Errorf("nats: user %q needs a name and a password", u.Name))
		}
		if u.Name == c.Internal.Name {
			errs = append(errs, fmt.Errorf("nats: user %q is the internal user", u.Name))
		}
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
	srv      *server.Server
	internal NATSUser
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
	if cfg.Internal.Name == "" {
		cfg.Internal = NATSUser{Name: InternalNATSUser, Password: NewPassword()}
	}
	users := []*server.User{cfg.Internal.serverUser()}
	for _, u := range cfg.Users {
		users = append(users, u.serverUser())
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
		Users:        users, // no NoAuthUser: anonymous clients are refused
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
	return &NATS{srv: srv, internal: cfg.Internal}, nil
}

// ClientURL is the URL outside clients connect to.
func (n *NATS) ClientURL() string { return n.srv.ClientURL() }

// Connect opens an in-process client connection as the internal user;
// opts come after twinhub's own.
func (n *NATS) Connect(name string, opts ...nats.Option) (*nats.Conn, error) {
	return nats.Connect(n.srv.ClientURL(), append([]nats.Option{nats.InProcessServer(n.srv), nats.Name(name),
		nats.MaxReconnects(-1), nats.UserInfo(n.internal.Name, n.internal.Password)}, opts...)...)
}

// Shutdown stops the server and waits for it.
func (n *NATS) Shutdown() {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}

// natsLogger adapts slog to nats-server's logger.
type natsLogger struct{ l *slog.Logger }

func (l natsLogger) Noticef(format string, v ...any) { l.l.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Warnf(format string, v ...any)   { l.warn(fmt.Sprintf(format, v...)) }
func (l natsLogger) Fatalf(format string, v ...any)  { l.l.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Errorf(format string, v ...any)  { l.l.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Debugf(format string, v ...any)  { l.l.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Tracef(format string, v ...any)  { l.l.Debug(fmt.Sprintf(format, v...)) }

func (l natsLogger) warn(msg string) {
	if strings.HasPrefix(msg, "Plaintext passwords detected") {
		// The passwords come from a file in the data directory that only
		// its owner may read; hashing them in memory would add nothing.
		l.l.Debug(msg)
		return
	}
	l.l.Warn(msg)
}
