package embedded

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/gorilla/websocket"
)

// TestWebSocketListener mounts the broker's WebSocket listener on a TLS
// HTTP server at WebSocketPath, next to another handler, and checks that an
// MQTT client over wss (subprotocol "mqtt") gets its own publication back
// through the broker, that a small read buffer on the server does not
// matter (packets span reads), that requests that are not an MQTT
// WebSocket upgrade get a clear 400, and that closing the broker ends the
// connection and refuses new ones with 503.
func TestWebSocketListener(t *testing.T) {
	b, err := StartBroker(BrokerConfig{Addr: "127.0.0.1:0", AllowAnonymous: true, WebSocket: true})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			b.Close()
		}
	})
	ws := b.WebSocket()
	ws.upgrader.ReadBufferSize = 16 // an MQTT packet spans several reads
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == WebSocketPath {
			ws.ServeHTTP(w, r)
			return
		}
		http.NotFound(w, r)
	}))
	defer srv.Close()
	url := "wss://" + strings.TrimPrefix(srv.URL, "https://") + WebSocketPath

	opts := paho.NewClientOptions().AddBroker(url).SetClientID("ws-client").SetAutoReconnect(false).
		SetTLSConfig(&tls.Config{InsecureSkipVerify: true}) // httptest's own certificate
	c := paho.NewClient(opts)
	if tk := c.Connect(); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("connecting over %s: %v", url, tk.Error())
	}
	got := make(chan string, 1)
	if tk := c.Subscribe("ws/echo", 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("subscribing: %v", tk.Error())
	}
	payload := strings.Repeat("p", 1000)
	if tk := c.Publish("ws/echo", 1, false, payload); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("publishing: %v", tk.Error())
	}
	select {
	case p := <-got:
		if p != payload {
			t.Fatalf("received %d bytes, want the %d published", len(p), len(payload))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the publication did not come back over the WebSocket")
	}

	client := srv.Client()
	for _, tt := range []struct {
		name   string
		header http.Header
	}{
		{"plain GET", nil},
		{"upgrade without the mqtt subprotocol", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"},
			"Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}},
	} {
		req, _ := http.NewRequest("GET", srv.URL+WebSocketPath, nil)
		for k, v := range tt.header {
			req.Header[k] = v
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d, want 400", tt.name, resp.StatusCode)
		}
	}

	closed = true
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the client to see the broker close its connection", func() bool { return !c.IsConnectionOpen() })
	dialer := websocket.Dialer{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, Subprotocols: []string{"mqtt"}}
	if _, resp, err := dialer.Dial(url, nil); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("dialling a closed broker: %v %v, want 503", err, resp)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
