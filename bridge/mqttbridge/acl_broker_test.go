package mqttbridge

import (
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// connectAny lets every client connect, and decides nothing else.
type connectAny struct{ mqtt.HookBase }

func (*connectAny) ID() string                                              { return "connect-any" }
func (*connectAny) Provides(b byte) bool                                    { return b == mqtt.OnConnectAuthenticate }
func (*connectAny) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

// observed collects what the broker routes, as an inline subscriber to
// every topic sees it.
type observed struct {
	mu     sync.Mutex
	topics []string
}

func (o *observed) add(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.topics = append(o.topics, pk.TopicName)
}

func (o *observed) list() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.topics...)
}

func (o *observed) has(topic string) bool {
	for _, t := range o.list() {
		if t == topic {
			return true
		}
	}
	return false
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIsolationBroker runs the isolation hook in a real mochi broker, with
// an inline observer subscribed to every topic: a device's forbidden Will
// reaches nobody, retain never sticks, and its $iothub publishes are
// delivered to nobody, while its own telemetry and Will still flow.
func TestIsolationBroker(t *testing.T) {
	reg := prometheus.NewRegistry()
	iso := NewIsolation(slog.New(slog.DiscardHandler), reg)
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Logger: slog.New(slog.DiscardHandler)})
	for _, h := range []mqtt.Hook{&connectAny{}, iso} {
		if err := srv.AddHook(h, nil); err != nil {
			t.Fatal(err)
		}
	}
	tcp := listeners.NewTCP(listeners.Config{ID: "tcp", Address: "127.0.0.1:0"})
	if err := srv.AddListener(tcp); err != nil {
		t.Fatal(err)
	}
	if err := srv.Serve(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	obs := &observed{}
	for i, f := range []string{"#", "$iothub/#"} {
		if err := srv.Subscribe(f, i+1, obs.add); err != nil {
			t.Fatal(err)
		}
	}

	// dial connects device id with a Will and returns the client and its
	// raw connection, to end it without DISCONNECT (so the Will goes).
	dial := func(id, willTopic string) (paho.Client, func()) {
		var mu sync.Mutex
		var conn net.Conn
		opts := paho.NewClientOptions().AddBroker("tcp://"+tcp.Address()).SetClientID(id).SetAutoReconnect(false).
			SetBinaryWill(willTopic, []byte("will of "+id), 1, true).
			SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
				c, err := net.Dial("tcp", u.Host)
				mu.Lock()
				conn = c
				mu.Unlock()
				return c, err
			})
		c := paho.NewClient(opts)
		if tk := c.Connect(); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
			t.Fatalf("connecting %s: %v", id, tk.Error())
		}
		return c, func() {
			mu.Lock()
			defer mu.Unlock()
			conn.Close()
			waitUntil(t, id+"'s session to end", func() bool { _, ok := srv.Clients.Get(id); return !ok })
		}
	}
	publish := func(c paho.Client, topic string, qos byte, retain bool) {
		if tk := c.Publish(topic, qos, retain, "from A"); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
			t.Fatalf("publishing %s: %v", topic, tk.Error())
		}
	}

	a, drop := dial("A", "devices/B/twin/PATCH/properties/desired/?$version=999")
	publish(a, "devices/A/messages/events/", 1, true)
	publish(a, "$iothub/methods/res/200/?$rid=1", 1, true)                     // consumed
	publish(a, "$iothub/twin/GET/?$rid=1", 1, true)                            // consumed (no twin hook here)
	publish(a, "$iothub/methods/POST/factoryReset/?$rid=666", 0, true)         // denied
	publish(a, "devices/B/twin/PATCH/properties/desired/?$version=9", 0, true) // denied
	publish(a, "devices/A/messages/events/sentinel", 1, false)
	waitUntil(t, "A's sentinel", func() bool { return obs.has("devices/A/messages/events/sentinel") })
	drop()

	// A Will on A's own telemetry still goes, without retain.
	_, drop = dial("A", "devices/A/messages/events/will")
	drop()
	waitUntil(t, "A's allowed Will", func() bool { return obs.has("devices/A/messages/events/will") })
	// And Wills aimed at everyone's $iothub topics go nowhere.
	for _, topic := range []string{"$iothub/twin/PATCH/properties/desired/?$version=998", "$iothub/twin/GET/?$rid=1"} {
		_, drop = dial("A", topic)
		drop()
	}

	want := []string{"devices/A/messages/events/", "devices/A/messages/events/sentinel", "devices/A/messages/events/will"}
	if got := obs.list(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("routed %q, want only %q", got, want)
	}
	for topic, pk := range srv.Topics.Retained.GetAll() {
		if !strings.HasPrefix(topic, "$SYS/") { // mochi retains its own $SYS topics
			t.Errorf("the broker retains %q from %q", topic, pk.Origin)
		}
	}
	for access, want := range map[string]float64{"publish": 2, "will": 3} {
		if got := testutil.ToFloat64(iso.denied.WithLabelValues(access)); got != want {
			t.Errorf("%s denials counted %v, want %v", access, got, want)
		}
	}
	if got := testutil.ToFloat64(iso.retains); got != 3+4 {
		t.Errorf("retain stripped %v times, want 7 (3 allowed publishes, 4 Wills; denied publishes never get that far)", got)
	}
}
