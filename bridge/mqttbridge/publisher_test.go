package mqttbridge

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// startBroker runs a mochi broker on a random loopback port that lets
// everyone in, with per-client queues of pending packets.
func startBroker(t *testing.T, pending int32) (*mqtt.Server, string) {
	t.Helper()
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClientWritesPending = pending
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Capabilities: caps, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		t.Fatal(err)
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: "127.0.0.1:0"})
	if err := srv.AddListener(tcp); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv, tcp.Address()
}

// connectRaw connects clientID as an Azure-mode device over a raw socket
// with a small receive buffer and reads its CONNACK; the caller decides
// whether to read any further.
func connectRaw(t *testing.T, addr, clientID string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, ClientIdentifier: clientID,
			UsernameFlag: true, Username: []byte("localhost/" + clientID + "/?api-version=2021-04-12")}}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	connack := make([]byte, 4)
	if _, err := io.ReadFull(conn, connack); err != nil || connack[3] != 0 {
		t.Fatalf("CONNACK % x, %v", connack, err)
	}
	return conn
}

// TestPublishToClientNeverBlocks: PublishToClient to a connection that does
// not read returns without waiting however much is sent; what does not fit
// the connection's queue is dropped and counted; a second connection gets
// everything sent to it.
func TestPublishToClientNeverBlocks(t *testing.T) {
	srv, addr := startBroker(t, 64)
	connectRaw(t, addr, "stuck")
	reader := connectRaw(t, addr, "reader")
	for _, id := range []string{"stuck", "reader"} {
		for {
			if cl, ok := srv.Clients.Get(id); ok && !cl.Closed() {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	pub := NewBrokerPublisher(srv)
	payload := bytes.Repeat([]byte("x"), 4096)
	const n = 5000 // 20 MB: far beyond what the socket buffers hold
	done := make(chan struct{})
	// Ends after n publishes, or never if PublishToClient blocks (then the
	// test fails below).
	go func() {
		defer close(done)
		for range n {
			if err := pub.PublishToClient("stuck", "$iothub/twin/PATCH/properties/desired/?$version=2", payload); err != nil {
				t.Errorf("PublishToClient: %v", err)
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("PublishToClient blocked on a connection that does not read")
	}
	if dropped := atomic.LoadInt64(&srv.Info.MessagesDropped); dropped == 0 {
		t.Errorf("no packets counted as dropped after %d publishes to a connection that does not read", n)
	}

	// The other connection is served in full.
	const m = 50 // within its queue of 64
	for range m {
		if err := pub.PublishToClient("reader", "$iothub/twin/res/204/?$rid=1", []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	var buf [1 << 16]byte
	var pending []byte
	reader.SetReadDeadline(time.Now().Add(30 * time.Second))
	for got < m {
		k, err := reader.Read(buf[:])
		if err != nil {
			t.Fatalf("the reading connection got %d of %d packets: %v", got, m, err)
		}
		pending = append(pending, buf[:k]...)
		// Each packet: type byte, one-byte remaining length (they are small).
		for len(pending) >= 2 && len(pending) >= 2+int(pending[1]) {
			if pending[0]>>4 != packets.Publish {
				t.Fatalf("unexpected packet type %d", pending[0]>>4)
			}
			pending = pending[2+int(pending[1]):]
			got++
		}
	}
}

// TestDeviceLimiter: a device gets at most max slots, other devices are
// unaffected, and released slots can be taken again.
func TestDeviceLimiter(t *testing.T) {
	l := newDeviceLimiter(2)
	for i, c := range []struct {
		op, device string
		want       bool
	}{
		{"acquire", "a", true},
		{"acquire", "a", true},
		{"acquire", "a", false}, // a is at its limit
		{"acquire", "b", true},  // b is not affected
		{"release", "a", true},
		{"acquire", "a", true},
		{"acquire", "a", false},
		{"release", "a", true},
		{"release", "a", true},
		{"release", "b", true},
	} {
		got := true
		if c.op == "acquire" {
			got = l.acquire(c.device)
		} else {
			l.release(c.device)
		}
		if got != c.want {
			t.Errorf("step %d: %s %s = %v, want %v", i, c.op, c.device, got, c.want)
		}
	}
	if len(l.n) != 0 {
		t.Errorf("devices without requests in flight stay in the map: %v", l.n)
	}
}
