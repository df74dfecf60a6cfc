package main

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/twinhub/twinhub/bridge/sas"
)

// inbox is everything one MQTT connection received, in order.
type inbox struct {
	mu   sync.Mutex
	msgs []paho.Message
}

func (b *inbox) add(_ paho.Client, m paho.Message) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.msgs = append(b.msgs, m)
}

func (b *inbox) all() []paho.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]paho.Message(nil), b.msgs...)
}

// find returns the received messages for which match holds.
func (b *inbox) find(match func(topic, payload string) bool) []string {
	var out []string
	for _, m := range b.all() {
		if match(m.Topic(), string(m.Payload())) {
			out = append(out, strconv.Quote(m.Topic())+" "+strconv.Quote(string(m.Payload())))
		}
	}
	return out
}

func (b *inbox) has(topicPart, payloadPart string) bool {
	return len(b.find(func(t, p string) bool { return strings.Contains(t, topicPart) && strings.Contains(p, payloadPart) })) > 0
}

// isoConn is a raw device connection to the embedded broker.
type isoConn struct {
	c    paho.Client
	in   *inbox
	conn net.Conn // the network connection, to end it without DISCONNECT
	mu   sync.Mutex
}

type isoDial struct {
	id    string
	azure bool // IoT Hub's user name, so Azure's $iothub topics
	tls   bool // the MQTT-over-TLS listener
	ws    bool // MQTT over WebSockets on the HTTPS listener (implies TLS)
	will  string
}

// dialIso connects a device with its own SAS token, on the plain or the
// TLS listener or over WebSockets, optionally with a retained Will, and collects what it
// receives.
func (p *proc) dialIso(t *testing.T, d isoDial) *isoConn {
	t.Helper()
	tok, err := sas.New(sas.DeviceResource("localhost", d.id), p.deviceKey(t, d.id), "", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	user := d.id
	if d.azure {
		user = "localhost/" + d.id + "/?api-version=2021-04-12"
	}
	ic := &isoConn{in: &inbox{}}
	broker := p.MQTT
	var tlsConf *tls.Config
	if d.tls || d.ws {
		pem, err := os.ReadFile(filepath.Join(p.dataDir, "tls", "ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tlsConf = &tls.Config{RootCAs: pool, ServerName: "localhost"}
		broker = "ssl://" + regexpFind(t, p.logs.String(), `tls_addr=(\S+)`)
		if d.ws {
			broker = "wss://" + regexpFind(t, p.logs.String(), `https=(\S+)`) + "/$iothub/websocket"
		}
	}
	opts := paho.NewClientOptions().AddBroker(broker).SetClientID(d.id).SetUsername(user).SetPassword(tok).
		SetAutoReconnect(false).SetCleanSession(true).SetDefaultPublishHandler(ic.in.add).
		SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			var c net.Conn
			var err error
			if d.ws {
				c, err = paho.NewWebsocket(u.String(), tlsConf, 10*time.Second, nil, nil)
			} else if tlsConf != nil {
				c, err = tls.Dial("tcp", u.Host, tlsConf)
			} else {
				c, err = net.Dial("tcp", u.Host)
			}
			ic.mu.Lock()
			ic.conn = c
			ic.mu.Unlock()
			return c, err
		})
	if d.will != "" {
		opts.SetBinaryWill(d.will, []byte(`{"firmwareUrl":"http://evil/fw.bin","by":"Awashere"}`), 1, true)
	}
	ic.c = paho.NewClient(opts)
	if tk := ic.c.Connect(); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("connecting %s: %v", d.id, tk.Error())
	}
	t.Cleanup(func() { ic.c.Disconnect(0) })
	return ic
}

// subscribe subscribes to filter and returns the SUBACK's return code.
func (ic *isoConn) subscribe(t *testing.T, filter string) byte {
	t.Helper()
	tk := ic.c.Subscribe(filter, 1, nil)
	if !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("subscribing to %s: %v", filter, tk.Error())
	}
	for _, rc := range tk.(*paho.SubscribeToken).Result() {
		return rc // one filter; paho keys a shared one without its $share/{group}/
	}
	t.Fatalf("no SUBACK code for %s", filter)
	return 0
}

func (ic *isoConn) publish(t *testing.T, topic string, qos byte, retain bool, payload string) {
	t.Helper()
	if tk := ic.c.Publish(topic, qos, retain, payload); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("publishing on %s: %v", topic, tk.Error())
	}
}

// drop ends the connection without DISCONNECT, so the broker sends the Will.
func (ic *isoConn) drop() {
	ic.mu.Lock()
	defer ic.mu.Unlock()
	ic.conn.Close()
}

// TestIsolationDevices: device A against devices B (native topics) and Z
// (Azure's $iothub topics) on every topic family. A subscribes to every
// filter that could reach them, publishes on their request, response,
// desired and method topics, with and without retain, and leaves Wills on
// them; it does so once with the native user name over TCP, once with
// IoT Hub's user name over TLS, and once over WebSockets on the HTTPS port. B and Z, connected throughout and again
// afresh (to see retained messages), receive nothing A sent; A receives
// nothing of theirs (B's reported patch, Z's method response). Requests
// whose $rid is %00 or %FF are answered with 400 on a topic with an empty
// $rid, and no connection ever receives a topic with NUL or invalid UTF-8.
func TestIsolationDevices(t *testing.T) {
	p := startTwinhub(t, "")
	for _, id := range []string{"isoB", "isoZ", "isoA-tcp", "isoA-tls", "isoA-ws"} {
		if r := p.call(t, "PUT", "/devices/"+id, ""); r.Status != 200 {
			t.Fatalf("creating %s: %d %s", id, r.Status, r.Body)
		}
	}
	azureFilters := []string{"$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#", "$iothub/methods/POST/#"}
	victims := func() (b, z *isoConn) {
		b = p.dialIso(t, isoDial{id: "isoB"})
		if rc := b.subscribe(t, "devices/isoB/#"); rc != 1 {
			t.Fatalf("B subscribing to its own topics: SUBACK %#x", rc)
		}
		z = p.dialIso(t, isoDial{id: "isoZ", azure: true})
		for _, f := range azureFilters {
			if rc := z.subscribe(t, f); rc != 1 {
				t.Fatalf("Z subscribing to %s: SUBACK %#x", f, rc)
			}
		}
		return b, z
	}
	// sentinel sends B and Z a desired patch through the hub and waits until
	// both have it: whatever the broker routed to them before is in their
	// inbox by then.
	round := 0
	sentinel := func(b, z *isoConn) {
		t.Helper()
		round++
		val := "sentinel-" + strconv.Itoa(round)
		for _, id := range []string{"isoB", "isoZ"} {
			if r := p.call(t, "PATCH", "/twins/"+id, `{"properties":{"desired":{"s":"`+val+`"}}}`, "If-Match", `"*"`); r.Status != 200 {
				t.Fatalf("desired patch of %s: %d %s", id, r.Status, r.Body)
			}
		}
		waitFor(t, 20*time.Second, "B's "+val, func() bool { return b.in.has("devices/isoB/twin/PATCH/properties/desired/", val) })
		waitFor(t, 20*time.Second, "Z's "+val, func() bool { return z.in.has("$iothub/twin/PATCH/properties/desired/", val) })
	}
	fromA := func(topic, payload string) bool {
		return strings.Contains(topic, "Awashere") || strings.Contains(payload, "Awashere")
	}
	b, z := victims()
	willsSent := 0

	for _, mode := range []isoDial{{id: "isoA-tcp"}, {id: "isoA-tls", azure: true, tls: true}, {id: "isoA-ws", azure: true, ws: true}} {
		a := p.dialIso(t, mode)
		// Filters that would reach other devices' traffic: all refused.
		for _, f := range []string{"#", "+/#", "$iothub/#", "$iothub/+/#", "$iothub/twin/#", "$iothub/methods/#",
			"$iothub/twin/res/+", "devices/#", "devices/+/#", "devices/+/twin/res/#", "devices/isoB/#",
			"devices/isoB/twin/PATCH/properties/desired/#", "$share/g/$iothub/twin/res/#", "$share/g/devices/+/#", "$SYS/#"} {
			if rc := a.subscribe(t, f); rc != 0x80 {
				t.Errorf("%s subscribing to %q: SUBACK %#x, want 0x80", mode.id, f, rc)
			}
		}
		// Its own: allowed, and A watches them for other devices' traffic.
		for _, f := range append([]string{"devices/" + mode.id + "/#"}, azureFilters...) {
			if rc := a.subscribe(t, f); rc != 1 {
				t.Errorf("%s subscribing to its own %q: SUBACK %#x, want 1", mode.id, f, rc)
			}
		}
		// QoS 0: a refused QoS 1 publish would end an MQTT 3.1.1 connection.
		payload := `{"firmwareUrl":"http://evil/fw.bin","by":"Awashere"}`
		for _, topic := range []string{
			"$iothub/methods/POST/factoryReset/?$rid=Awashere",
			"$iothub/twin/PATCH/properties/desired/?$version=998&by=Awashere",
			"$iothub/twin/res/200/?$rid=Awashere",
			"devices/isoB/twin/PATCH/properties/desired/?$version=999&by=Awashere",
			"devices/isoB/twin/res/200/?$rid=Awashere",
			"devices/isoB/twin/GET/?$rid=Awashere",
			"devices/isoB/twin/PATCH/properties/reported/?$rid=Awashere",
		} {
			a.publish(t, topic, 0, true, payload)
			a.publish(t, topic, 0, false, payload)
		}
		// Allowed, with retain: consumed, or routed only to A itself.
		a.publish(t, "$iothub/methods/res/200/?$rid=Awashere", 1, true, payload)
		a.publish(t, "devices/"+mode.id+"/messages/events/", 1, true, payload)
		a.publish(t, "devices/"+mode.id+"/twin/PATCH/properties/reported/?$rid=Awashere", 1, true, `{"by":"Awashere"}`)

		// B and Z at work; A must see none of it.
		b.publish(t, "devices/isoB/twin/PATCH/properties/reported/?$rid=b-"+mode.id, 1, false, `{"secretFromB":"s3cr3t"}`)
		z.publish(t, "$iothub/methods/res/200/?$rid=z-"+mode.id, 1, false, `{"secretFromZ":"s3cr3t"}`)
		z.publish(t, "$iothub/twin/GET/?$rid=z-"+mode.id, 1, false, "")
		waitFor(t, 20*time.Second, "B's response", func() bool { return b.in.has("devices/isoB/twin/res/204/?$rid=b-"+mode.id, "") })
		waitFor(t, 20*time.Second, "Z's response", func() bool { return z.in.has("$iothub/twin/res/200/?$rid=z-"+mode.id, "") })
		if r := p.call(t, "PATCH", "/twins/"+mode.id, `{"properties":{"desired":{"s":"a-sentinel"}}}`, "If-Match", `"*"`); r.Status != 200 {
			t.Fatalf("desired patch of %s: %d %s", mode.id, r.Status, r.Body)
		}
		waitFor(t, 20*time.Second, mode.id+"'s sentinel", func() bool { return a.in.has("devices/"+mode.id+"/twin/PATCH/properties/desired/", "a-sentinel") })
		if got := a.in.find(func(topic, pl string) bool {
			return strings.Contains(pl, "s3cr3t") || strings.Contains(topic, "isoB") || strings.Contains(topic, "isoZ") ||
				strings.Contains(topic, "?$rid=z-") || strings.Contains(topic, "?$rid=b-")
		}); len(got) > 0 {
			t.Errorf("%s received other devices' traffic: %v", mode.id, got)
		}
		a.c.Disconnect(250)
		waitFor(t, 20*time.Second, mode.id+" disconnected", func() bool {
			return get(p.call(t, "GET", "/twins/"+mode.id, "").json(t), "connectionState") == "Disconnected"
		})

		// Wills on B's and on everyone's $iothub topics, retained.
		wills := []string{
			"devices/isoB/twin/PATCH/properties/desired/?$version=999&by=Awashere",
			"devices/isoB/twin/res/200/?$rid=Awashere",
			"$iothub/twin/PATCH/properties/desired/?$version=998&by=Awashere",
			"$iothub/twin/res/200/?$rid=Awashere",
			"$iothub/methods/POST/factoryReset/?$rid=Awashere",
		}
		state := func(want string) func() bool {
			return func() bool { return get(p.call(t, "GET", "/twins/"+mode.id, "").json(t), "connectionState") == want }
		}
		for _, w := range wills {
			d := mode
			d.will = w
			c := p.dialIso(t, d)
			// One connection at a time: a new one would take the session
			// over, and mochi sends no Will for a session taken over.
			waitFor(t, 20*time.Second, mode.id+" connected", state("Connected"))
			c.drop()
			waitFor(t, 20*time.Second, mode.id+" disconnected (its Will handled)", state("Disconnected"))
			willsSent++
		}
		sentinel(b, z)
		for name, c := range map[string]*isoConn{"B": b, "Z": z} {
			if got := c.in.find(fromA); len(got) > 0 {
				t.Errorf("after %s's attack %s received what A sent: %v", mode.id, name, got)
			}
		}
		if v, _ := strconv.Atoi(p.metricValue(t, `twinhub_mqtt_acl_denials_total{access="will"}`)); v != willsSent {
			t.Errorf("Will denials counted: %d, want %d", v, willsSent)
		}
	}

	// Fresh connections: no retained message of A's is replayed.
	b.c.Disconnect(250)
	z.c.Disconnect(250)
	b, z = victims()
	sentinel(b, z)
	for name, c := range map[string]*isoConn{"B": b, "Z": z} {
		if got := c.in.find(fromA); len(got) > 0 {
			t.Errorf("%s, connecting afresh, received what A left retained: %v", name, got)
		}
	}
	if v := p.metricValue(t, "twinhub_mqtt_retain_stripped_total"); v == "" || v == "0" {
		t.Errorf("retain stripping not counted: %q", v)
	}

	// Unsafe $rid values: answered 400 on a topic with an empty $rid.
	for _, rid := range []string{"%00", "%FF", "a%2Fb", "%0A"} {
		b.publish(t, "devices/isoB/twin/GET/?$rid="+rid, 1, false, "")
		z.publish(t, "$iothub/twin/GET/?$rid="+rid, 1, false, "")
	}
	answers := func(c *isoConn, prefix, ours string) []string {
		return c.in.find(func(t, _ string) bool {
			return strings.HasPrefix(t, prefix) && !strings.Contains(t, ours) && !strings.Contains(t, "Awashere")
		})
	}
	waitFor(t, 20*time.Second, "B's four answers", func() bool { return len(answers(b, "devices/isoB/twin/res/", "$rid=b-")) >= 4 })
	waitFor(t, 20*time.Second, "Z's four answers", func() bool { return len(answers(z, "$iothub/twin/res/", "$rid=z-")) >= 4 })
	for name, got := range map[string][]string{"B": answers(b, "devices/isoB/twin/res/", "$rid=b-"), "Z": answers(z, "$iothub/twin/res/", "$rid=z-")} {
		for _, a := range got {
			if !strings.HasPrefix(a, `"devices/isoB/twin/res/400/?$rid=" `) && !strings.HasPrefix(a, `"$iothub/twin/res/400/?$rid=" `) {
				t.Errorf("%s: an unsafe $rid answered with %s, want 400 with an empty $rid", name, a)
			}
		}
	}
	sentinel(b, z)
	for name, c := range map[string]*isoConn{"B": b, "Z": z} {
		if got := c.in.find(func(t, _ string) bool { return !utf8.ValidString(t) || strings.ContainsAny(t, "\x00\n") }); len(got) > 0 {
			t.Errorf("%s received malformed topics: %v", name, got)
		}
		if got := c.in.find(func(t, _ string) bool { return strings.Contains(t, "/400/") && !strings.HasSuffix(t, "/400/?$rid=") }); len(got) > 0 {
			t.Errorf("%s got 400 answers that echo an unsafe $rid: %v", name, got)
		}
	}
}
