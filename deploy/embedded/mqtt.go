package embedded

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// BrokerConfig configures the embedded MQTT broker.
type BrokerConfig struct {
	// Addr is the TCP listener, host:port (default 127.0.0.1:1883; port 0 picks a free one).
	Addr string
	// TLSAddr is the MQTT-over-TLS listener (empty: none), served with TLS.
	TLSAddr string
	TLS     *tls.Config
	// WebSocket adds the listener Broker.WebSocket returns, for the caller
	// to mount at WebSocketPath on its HTTPS server.
	WebSocket bool
	// MaxPacketSize bounds an MQTT packet (default 256 KiB); a larger one closes the connection.
	MaxPacketSize uint32
	// MaxPendingWrites bounds the packets queued for one client (default
	// 256); beyond it the broker drops packets to that client and counts
	// them (twinhub_mqtt_broker_messages_dropped_total). mochi's own default
	// of 8,192 costs 64 KiB per connection whether used or not: 640 MiB for
	// 10,000 devices.
	MaxPendingWrites int32
	// CloseTimeout bounds how long Close waits for the broker to stop (default 10 s).
	CloseTimeout time.Duration
	// AllowAnonymous lets every client connect; only for --auth=false.
	AllowAnonymous bool
	Logger         *slog.Logger
}

// Broker is a running embedded mochi broker.
type Broker struct {
	Server       *mqtt.Server
	tcp          *listeners.TCP
	tls          *listeners.TCP
	ws           *WebSocket
	closeTimeout time.Duration
}

// StartBroker starts the broker with the given hooks (added in order) and
// returns once it listens. Hooks belong to the broker, not to a listener:
// every listener added here (TCP, TLS, and any added later, such as
// WebSockets) runs the same authentication and isolation hooks.
func StartBroker(cfg BrokerConfig, hooks ...mqtt.Hook) (*Broker, error) {
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:1883"
	}
	if cfg.MaxPacketSize == 0 {
		cfg.MaxPacketSize = 256 << 10
	}
	if cfg.CloseTimeout == 0 {
		cfg.CloseTimeout = 10 * time.Second
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
		Logger:       slog.New(connectionEndLog{cfg.Logger.Handler()}).With("component", "mqtt-broker"),
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
	var ws *WebSocket
	if cfg.WebSocket {
		ws = NewWebSocket("ws")
		if err := srv.AddListener(ws); err != nil {
			return nil, fmt.Errorf("mqtt over websockets listener: %w", err)
		}
	}
	if err := srv.Serve(); err != nil {
		return nil, fmt.Errorf("starting the mqtt broker: %w", err)
	}
	return &Broker{Server: srv, tcp: tcp, tls: tlsl, ws: ws, closeTimeout: cfg.CloseTimeout}, nil
}

// WebSocket is the MQTT-over-WebSockets listener, an http.Handler to mount
// at WebSocketPath; nil unless BrokerConfig.WebSocket.
func (b *Broker) WebSocket() *WebSocket { return b.ws }

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
//
// mochi's own Close can deadlock: closing a listener read-locks the client
// list twice (Clients.GetByListener calls Len), and a client that connects
// or disconnects in between queues a write lock that blocks the second read
// lock forever (mochi-mqtt/server issue 488), and every other use of the
// client list with it. Devices come and go all the time, so Close first
// disconnects every client itself and waits until their sessions have
// settled, leaving mochi's Close nothing to race with; and it gives up
// waiting after CloseTimeout, so the rest of the shutdown (applying the
// commands already stored) never hangs on the broker.
func (b *Broker) Close() error {
	done := make(chan error, 1)
	// Ends when mochi's Close returns; left behind if the broker is deadlocked.
	go func() {
		for _, cl := range b.Server.Clients.GetAll() {
			if !cl.Closed() {
				_ = b.Server.DisconnectClient(cl, packets.ErrServerShuttingDown)
			}
		}
		b.waitSettled(b.closeTimeout / 2)
		done <- b.Server.Close()
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(b.closeTimeout):
		return fmt.Errorf("the MQTT broker did not stop within %s (mochi's client-list deadlock, mochi-mqtt/server issue 488); shutting down without it", b.closeTimeout)
	}
}

// waitSettled waits until every client's connection has ended and the
// client list has stopped changing (a disconnected client leaves it after
// its disconnect hooks ran), or until max has passed.
func (b *Broker) waitSettled(max time.Duration) {
	deadline := time.Now().Add(max)
	last := -1
	for time.Now().Before(deadline) {
		clients := b.Server.Clients.GetAll()
		open := 0
		for _, cl := range clients {
			if !cl.Closed() {
				open++
			}
		}
		if open == 0 && len(clients) == last {
			return
		}
		last = len(clients)
		time.Sleep(50 * time.Millisecond)
	}
}
