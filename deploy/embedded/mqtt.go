package embedded

import (
	"crypto/tls"
	"fmt"
	"log/slog"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// BrokerConfig configures the embedded MQTT broker.
type BrokerConfig struct {
	// Addr is the TCP listener, host:port (default 127.0.0.1:1883; port 0 picks a free one).
	Addr string
	// TLSAddr is the MQTT-over-TLS listener (empty: none), served with TLS.
	TLSAddr string
	TLS     *tls.Config
	// MaxPacketSize bounds an MQTT packet (default 256 KiB); a larger one closes the connection.
	MaxPacketSize uint32
	// MaxPendingWrites bounds the packets queued for one client (default
	// 256); beyond it the broker drops QoS 0 packets to that client and
	// counts them. mochi's own default of 8,192 costs 64 KiB per connection
	// whether used or not: 640 MiB for 10,000 devices.
	MaxPendingWrites int32
	// AllowAnonymous lets every client connect; only for --auth=false.
	AllowAnonymous bool
	Logger         *slog.Logger
}

// Broker is a running embedded mochi broker.
type Broker struct {
	Server *mqtt.Server
	tcp    *listeners.TCP
	tls    *listeners.TCP
}

// StartBroker starts the broker with the given hooks (added in order) and
// returns once it listens.
func StartBroker(cfg BrokerConfig, hooks ...mqtt.Hook) (*Broker, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:1883"
	}
	if cfg.MaxPacketSize == 0 {
		cfg.MaxPacketSize = 256 << 10
	}
	if cfg.MaxPendingWrites == 0 {
		cfg.MaxPendingWrites = 256
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = cfg.MaxPacketSize
	caps.MaximumClientWritesPending = cfg.MaxPendingWrites
	srv := mqtt.New(&mqtt.Options{
		InlineClient: true,
		Capabilities: caps,
		Logger:       cfg.Logger.With("component", "mqtt-broker"),
	})
	if cfg.AllowAnonymous {
		if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
			return nil, err
		}
	}
	for _, h := range hooks {
		if err := srv.AddHook(h, nil); err != nil {
			return nil, fmt.Errorf("adding broker hook %s: %w", h.ID(), err)
		}
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: cfg.Addr})
	if err := srv.AddListener(tcp); err != nil {
		return nil, fmt.Errorf("mqtt listener on %s: %w (set --mqtt-addr)", cfg.Addr, err)
	}
	var tlsl *listeners.TCP
	if cfg.TLSAddr != "" {
		tlsl = listeners.NewTCP(listeners.Config{ID: "tls", Address: cfg.TLSAddr, TLSConfig: cfg.TLS})
		if err := srv.AddListener(tlsl); err != nil {
			return nil, fmt.Errorf("mqtts listener on %s: %w (set --mqtts-addr)", cfg.TLSAddr, err)
		}
	}
	if err := srv.Serve(); err != nil {
		return nil, fmt.Errorf("starting the mqtt broker: %w", err)
	}
	return &Broker{Server: srv, tcp: tcp, tls: tlsl}, nil
}

// Addr is the address the broker listens on.
func (b *Broker) Addr() string { return b.tcp.Address() }

// TLSAddr is the address of the TLS listener, or "".
func (b *Broker) TLSAddr() string {
	if b.tls == nil {
		return ""
	}
	return b.tls.Address()
}

// Close disconnects every client and stops the broker.
func (b *Broker) Close() error { return b.Server.Close() }
