package deviceclient

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"log/slog"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/twinhub/twinhub/deploy/embedded"
)

// unansweredHook leaves every twin PATCH unacknowledged, as the hub does
// with a request it could not store, and either answers it with 503
// (answer) or drops the device's connection (drop).
type unansweredHook struct {
	mqtt.HookBase
	srv  *mqtt.Server
	drop bool
}

func (h *unansweredHook) ID() string { return "unanswered" }

func (h *unansweredHook) Provides(b byte) bool { return b == mqtt.OnPublish }

func (h *unansweredHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !strings.Contains(pk.TopicName, "/twin/PATCH/") {
		return pk, nil
	}
	if h.drop {
		cl.Stop(errors.New("dropped by the test"))
		return pk, packets.ErrRejectPacket
	}
	_, query, _ := strings.Cut(pk.TopicName, "?")
	q, _ := url.ParseQuery(query)
	body := `{"errorCode":503001,"message":"the hub could not store the request; retry"}`
	// Answered from another goroutine, as the hub's responders do.
	go h.srv.Publish("devices/"+cl.ID+"/twin/res/503/?$rid="+q.Get("$rid"), []byte(body), false, 0)
	return pk, packets.ErrRejectPacket
}

// TestDeviceRequestEnds: a device request ends with the hub's answer even
// when the broker never acknowledges the publish (a 503 from a hub that
// could not store it), and with ErrConnectionLost when the connection drops
// while it waits, instead of waiting for its context.
func TestDeviceRequestEnds(t *testing.T) {
	for _, drop := range []bool{false, true} {
		hook := &unansweredHook{drop: drop}
		b, err := embedded.StartBroker(embedded.BrokerConfig{Addr: "127.0.0.1:0", AllowAnonymous: true,
			Logger: slog.New(slog.DiscardHandler)}, hook)
		if err != nil {
			t.Fatal(err)
		}
		hook.srv = b.Server
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		dev, err := Dial(ctx, "tcp://"+b.Addr(), "d1", Options{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = dev.Report(ctx, []byte(`{"a":1}`))
		var de *Error
		switch {
		case ctx.Err() != nil:
			t.Errorf("drop %t: the request waited for its context: %v", drop, err)
		case drop && !errors.Is(err, ErrConnectionLost):
			t.Errorf("connection dropped: %v, want ErrConnectionLost", err)
		case !drop && (!errors.As(err, &de) || de.Status != 503):
			t.Errorf("answered 503 without a PUBACK: %v, want the 503", err)
		}
		dev.Close()
		cancel()
		b.Close()
	}
}
