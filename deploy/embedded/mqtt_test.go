package embedded

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestConnectionEndLog: mochi's empty-message warnings for ended connections
// become debug lines that name themselves; other lines pass unchanged.
func TestConnectionEndLog(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelInfo, slog.LevelDebug} {
		var buf bytes.Buffer
		log := slog.New(connectionEndLog{slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: level})}).With("component", "mqtt-broker")
		log.Warn("", "error", errors.New("EOF"))
		log.Warn("client store quota reached", "client", "d1")
		out := buf.String()
		if !strings.Contains(out, `level=WARN msg="client store quota reached"`) {
			t.Errorf("level %v: a real warning was lost:\n%s", level, out)
		}
		ended := strings.Contains(out, `level=DEBUG msg="client connection ended" component=mqtt-broker error=EOF`)
		if ended != (level == slog.LevelDebug) || strings.Contains(out, `msg=""`) {
			t.Errorf("level %v: connection end logged wrongly:\n%s", level, out)
		}
	}
}

// TestBrokerCloseDoesNotHang: when mochi's client list is locked for good
// (its Close deadlocks, mochi-mqtt/server issue 488), Close still returns,
// with an error, after CloseTimeout.
func TestBrokerCloseDoesNotHang(t *testing.T) {
	b, err := StartBroker(BrokerConfig{Addr: "127.0.0.1:0", AllowAnonymous: true, CloseTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	b.Server.Clients.Lock() // what a writer stuck behind the recursive read lock amounts to
	defer b.Server.Clients.Unlock()
	start := time.Now()
	err = b.Close()
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("Close of a deadlocked broker: %v after %s; want an error after about 300 ms", err, time.Since(start))
	}
}
