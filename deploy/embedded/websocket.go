package embedded

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// WebSocketPath is where IoT Hub serves MQTT over WebSockets, on the same
// host and port (443) as its REST API; Azure's MqttWs transports connect to
// wss://{host}/$iothub/websocket with the subprotocol "mqtt".
const WebSocketPath = "/$iothub/websocket"

// webSocketHandshakeTimeout bounds the upgrade response.
const webSocketHandshakeTimeout = 10 * time.Second

// WebSocket is a broker listener that takes its connections from an HTTP
// server instead of listening itself: its ServeHTTP upgrades a request to a
// WebSocket with the subprotocol "mqtt" and hands the connection to the
// broker, which runs it like any MQTT connection (the same authentication,
// isolation and limits, since hooks belong to the broker). Mounted at
// WebSocketPath on the HTTPS server, one port serves the REST API and MQTT,
// as IoT Hub's port 443 does. mochi's own listeners.Websocket runs its own
// HTTP server on its own port and answers on every path, so it cannot share
// the API's listener.
//
// ServeHTTP answers 503 until the broker serves the listener and after it
// closed it, and 400 to a request that is not a WebSocket upgrade asking
// for the "mqtt" subprotocol.
type WebSocket struct {
	id       string
	upgrader websocket.Upgrader
	log      *slog.Logger

	mu        sync.Mutex
	establish listeners.EstablishFn // nil until Serve, and again after Close
	closed    bool
}

var _ listeners.Listener = (*WebSocket)(nil)

// NewWebSocket returns a listener with the given mochi listener ID.
func NewWebSocket(id string) *WebSocket {
	l := &WebSocket{id: id, log: slog.Default()}
	l.upgrader = websocket.Upgrader{
		HandshakeTimeout: webSocketHandshakeTimeout,
		Subprotocols:     []string{"mqtt"},
		// Devices are not browsers: any origin may connect, the MQTT
		// CONNECT authenticates the device.
		CheckOrigin: func(*http.Request) bool { return true },
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			http.Error(w, "MQTT over WebSockets: "+reason.Error(), status)
		},
	}
	return l
}

// ID returns the listener's ID.
func (l *WebSocket) ID() string { return l.id }

// Address names where connections come from: the HTTP server's path.
func (l *WebSocket) Address() string { return WebSocketPath }

// Protocol returns "wss": the listener is meant for the HTTPS server.
func (l *WebSocket) Protocol() string { return "wss" }

// Init keeps the broker's logger.
func (l *WebSocket) Init(log *slog.Logger) error {
	l.log = log
	return nil
}

// Serve starts handing upgraded connections to establish. It returns at
// once: the HTTP server drives the connections.
func (l *WebSocket) Serve(establish listeners.EstablishFn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.establish = establish
	}
}

// Close stops taking connections and closes the ones the listener handed
// to the broker.
func (l *WebSocket) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	l.closed, l.establish = true, nil
	l.mu.Unlock()
	closeClients(l.id)
}

// ServeHTTP upgrades the request and runs the MQTT connection until it ends.
func (l *WebSocket) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	l.mu.Lock()
	establish := l.establish
	l.mu.Unlock()
	if establish == nil {
		http.Error(w, "MQTT over WebSockets is not available: the broker is not running", http.StatusServiceUnavailable)
		return
	}
	if !websocket.IsWebSocketUpgrade(r) || !hasSubprotocol(r, "mqtt") {
		http.Error(w, `MQTT over WebSockets needs a WebSocket upgrade with the subprotocol "mqtt" (Sec-WebSocket-Protocol: mqtt)`, http.StatusBadRequest)
		return
	}
	c, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered the client
	}
	defer c.Close()
	if err := establish(l.id, &wsConn{Conn: c.UnderlyingConn(), ws: c, tls: r.TLS}); err != nil && !errors.Is(err, io.EOF) {
		l.log.Debug("MQTT over WebSockets connection ended", "remote", r.RemoteAddr, "err", err)
	}
}

func hasSubprotocol(r *http.Request, want string) bool {
	for _, p := range websocket.Subprotocols(r) {
		if p == want {
			return true
		}
	}
	return false
}

// errTextFrame means a client sent a text frame; MQTT travels in binary
// frames only (MQTT 3.1.1 §6).
var errTextFrame = errors.New("MQTT over WebSockets: a text frame arrived; MQTT packets must be sent in binary frames")

// wsConn is a WebSocket connection as the byte stream MQTT reads and writes:
// reads run through the binary frames one after the other (an MQTT packet
// may span frames, and a frame may hold several packets), each write is one
// binary frame. Deadlines and addresses are the underlying connection's.
type wsConn struct {
	net.Conn
	ws *websocket.Conn
	r  io.Reader // the frame being read, nil between frames
	// tls is the HTTPS connection's state (nil over plain HTTP), whose
	// client certificate authenticates X.509 devices.
	tls *tls.ConnectionState
}

// ConnectionState returns the TLS state of the HTTPS connection the
// WebSocket runs on, as *tls.Conn's does (empty over plain HTTP).
func (c *wsConn) ConnectionState() tls.ConnectionState {
	if c.tls == nil {
		return tls.ConnectionState{}
	}
	return *c.tls
}

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			op, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, errTextFrame
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue // an empty frame, or the end of one: read the next
			}
			err = nil
		}
		return n, err
	}
}

// Write sends p as one binary frame. gorilla allows one writer at a time,
// and mochi writes to a client under the client's lock.
func (c *wsConn) Write(p []byte) (int, error) {
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close closes the underlying connection.
func (c *wsConn) Close() error { return c.Conn.Close() }
