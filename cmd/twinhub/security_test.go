package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/twinhub/twinhub/bridge/deviceclient"
	"github.com/twinhub/twinhub/bridge/sas"
)

// metricValue returns the value of one exposition line's series, or -1.
func (p *proc) metricValue(t *testing.T, series string) string {
	t.Helper()
	for _, line := range strings.Split(string(p.call(t, "GET", "/metrics", "").Body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// TestSecurityHTTP: requests without a valid token, or with a policy that
// lacks the right, are refused with 401 and IoT Hub's error body, change
// nothing, and are counted.
func TestSecurityHTTP(t *testing.T) {
	p := startTwinhub(t, "")
	p.call(t, "PUT", "/devices/sec", "")
	before := p.call(t, "GET", "/twins/sec", "").Body
	ps, err := sas.LoadPolicies(filepath.Join(p.dataDir, "policies.json"))
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := os.Stat(ps.Path()); info.Mode().Perm() != 0o600 {
		t.Errorf("policy file mode %v, want 0600", info.Mode().Perm())
	}
	token := func(policy string, key func(*sas.Policy) string, expiry time.Time) string {
		pol, _ := ps.Get(policy)
		tok, err := sas.New("localhost", key(pol), policy, expiry)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	primary := func(p *sas.Policy) string { return p.PrimaryKey }
	secondary := func(p *sas.Policy) string { return p.SecondaryKey }
	wrong := func(*sas.Policy) string { return sas.NewKey() }
	later := time.Now().Add(time.Hour)
	patch := `{"tags":{"hacked":true}}`
	cases := []struct {
		name, method, path, body, auth string
		status                         int
		reason                         string
	}{
		{"missing header", "PATCH", "/twins/sec", patch, "", 401, "missing"},
		{"malformed token", "PATCH", "/twins/sec", patch, "SharedAccessSignature garbage", 401, "malformed"},
		{"not a SAS token", "GET", "/twins/sec", "", "Bearer abc", 401, "malformed"},
		{"wrong key", "PATCH", "/twins/sec", patch, token("iothubowner", wrong, later), 401, "signature"},
		{"expired token", "PATCH", "/twins/sec", patch, token("iothubowner", primary, time.Now().Add(-time.Minute)), 401, "expired"},
		{"unknown policy", "PATCH", "/twins/sec", patch, strings.Replace(token("service", primary, later), "skn=service", "skn=nobody", 1), 401, "signature"},
		{"registryRead patches a twin", "PATCH", "/twins/sec", patch, token("registryRead", primary, later), 401, "forbidden"},
		{"registryRead creates a device", "PUT", "/devices/intruder", "", token("registryRead", primary, later), 401, "forbidden"},
		{"service creates a device", "PUT", "/devices/intruder", "", token("service", primary, later), 401, "forbidden"},
		{"device policy reads a twin", "GET", "/twins/sec", "", token("device", primary, later), 401, "forbidden"},
		{"registryReadWrite deletes", "DELETE", "/devices/sec", "", token("registryRead", primary, later), 401, "forbidden"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := p.call(t, c.method, c.path, c.body, "Authorization", c.auth)
			if r.Status != c.status || r.Header.Get("iothub-errorcode") != "IotHubUnauthorizedAccess" {
				t.Fatalf("got %d %s", r.Status, r.Body)
			}
		})
	}
	for _, reason := range []string{"missing", "malformed", "signature", "expired", "forbidden"} {
		if v := p.metricValue(t, `twinhub_http_auth_failures_total{reason="`+reason+`"}`); v == "" || v == "0" {
			t.Errorf("auth failures for %s not counted: %q", reason, v)
		}
	}
	if after := p.call(t, "GET", "/twins/sec", "").Body; !bytes.Equal(before, after) {
		t.Errorf("refused requests changed the twin")
	}
	if r := p.call(t, "GET", "/devices/intruder", ""); r.Status != 404 {
		t.Errorf("a refused create made a device")
	}
	// What the rights do allow: service patches twins, registryRead reads,
	// registryReadWrite creates, and secondary keys work too.
	allowed := []struct{ method, path, body, auth string }{
		{"PATCH", "/twins/sec", `{"tags":{"ok":1}}`, token("service", primary, later)},
		{"PATCH", "/twins/sec", `{"tags":{"ok":2}}`, token("service", secondary, later)},
		{"GET", "/twins/sec", "", token("registryRead", primary, later)},
		{"GET", "/devices/sec", "", token("registryRead", secondary, later)},
		{"PUT", "/devices/allowed", "", token("registryReadWrite", primary, later)},
		{"GET", "/healthz", "", ""},
	}
	for _, a := range allowed {
		if r := p.call(t, a.method, a.path, a.body, "Authorization", a.auth); r.Status != 200 {
			t.Errorf("%s %s: %d %s", a.method, a.path, r.Status, r.Body)
		}
	}
	if strings.Contains(p.logs.String(), "sig=") || strings.Contains(p.logs.String(), primary(mustPolicy(t, ps, "iothubowner"))) {
		t.Errorf("a token or key appears in the log")
	}
}

func mustPolicy(t *testing.T, ps *sas.Policies, name string) *sas.Policy {
	p, ok := ps.Get(name)
	if !ok {
		t.Fatalf("no policy %s", name)
	}
	return p
}

// TestSecurityMQTT: wrong keys, expired tokens, another device's token,
// disabled devices and malformed tokens cannot connect (CONNACK 5); a
// connected device cannot publish to or subscribe to another device's
// topics; rotated keys take effect; each refusal is counted.
func TestSecurityMQTT(t *testing.T) {
	p := startTwinhub(t, "")
	for _, id := range []string{"devA", "devB", "devOff"} {
		p.call(t, "PUT", "/devices/"+id, "")
	}
	p.call(t, "PUT", "/devices/devOff", `{"status":"disabled"}`, "If-Match", `"*"`)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	keyA, keyB := p.deviceKey(t, "devA"), p.deviceKey(t, "devB")
	tok := func(id, key string, expiry time.Time) string {
		s, err := sas.New(sas.DeviceResource("localhost", id), key, "", expiry)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	later := time.Now().Add(time.Hour)
	refused := []struct {
		name, client, user, password string
	}{
		{"wrong key", "devA", "devA", tok("devA", sas.NewKey(), later)},
		{"expired token", "devA", "devA", tok("devA", keyA, time.Now().Add(-time.Minute))},
		{"token of A used as B", "devB", "devB", tok("devA", keyA, later)},
		{"A's resource signed with B's key", "devA", "devA", tok("devA", keyB, later)},
		{"client ID differs from the device", "other", "devA", tok("devA", keyA, later)},
		{"disabled device", "devOff", "devOff", tok("devOff", p.deviceKey(t, "devOff"), later)},
		{"malformed token", "devA", "devA", "not a token"},
		{"no password", "devA", "devA", ""},
		{"wildcard client", "#", "#", tok("#", keyA, later)},
	}
	for _, c := range refused {
		t.Run(c.name, func(t *testing.T) {
			dev, err := deviceclient.Dial(ctx, p.MQTT, c.user, deviceclient.Options{ClientID: c.client, Username: c.user, Password: c.password})
			if err == nil {
				dev.Close()
				t.Fatal("connected")
			}
			if !strings.Contains(err.Error(), "not Authorized") && !strings.Contains(err.Error(), "not authorized") {
				t.Errorf("want CONNACK 5 (not authorized), got %v", err)
			}
		})
	}
	for _, reason := range []string{"signature", "expired", "resource", "client_id", "disabled", "malformed"} {
		if v := p.metricValue(t, `twinhub_mqtt_auth_failures_total{reason="`+reason+`"}`); v == "" || v == "0" {
			t.Errorf("MQTT auth failures for %s not counted: %q", reason, v)
		}
	}

	// A connected device may not touch another device's topics.
	devA, err := p.dialDevice(t, ctx, "devA")
	if err != nil {
		t.Fatal(err)
	}
	// Connection state follows the device.
	waitFor(t, 10*time.Second, "devA connected in its twin", func() bool {
		return get(p.call(t, "GET", "/twins/devA", "").json(t), "connectionState") == "Connected"
	})
	// The raw client below connects as devA; the device client would take
	// the session back (one connection per device), so it goes first.
	devA.Close()
	waitFor(t, 10*time.Second, "devA disconnected in its twin", func() bool {
		return get(p.call(t, "GET", "/twins/devA", "").json(t), "connectionState") == "Disconnected"
	})
	before := p.call(t, "GET", "/twins/devB", "").Body
	raw := paho.NewClient(paho.NewClientOptions().AddBroker(p.MQTT).SetClientID("devA").SetUsername("devA").
		SetPassword(tok("devA", keyA, later)).SetAutoReconnect(false))
	if tk := raw.Connect(); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("connect: %v", tk.Error())
	}
	defer raw.Disconnect(0)
	sub := raw.Subscribe("devices/devB/twin/#", 1, nil)
	sub.WaitTimeout(10 * time.Second)
	if st, ok := sub.(*paho.SubscribeToken); ok {
		if rc := st.Result()["devices/devB/twin/#"]; rc != 0x80 {
			t.Errorf("subscribing to another device's topics: SUBACK %#x, want 0x80", rc)
		}
	}
	raw.Publish("devices/devB/twin/PATCH/properties/reported/?$rid=x", 0, false, `{"owned":true}`).WaitTimeout(5 * time.Second)
	waitFor(t, 10*time.Second, "the ACL denial to be counted", func() bool {
		v := p.metricValue(t, `twinhub_mqtt_acl_denials_total{access="publish"}`)
		return v != "" && v != "0"
	})
	if after := p.call(t, "GET", "/twins/devB", "").Body; !bytes.Equal(before, after) {
		t.Errorf("devA changed devB's twin:\n%s", after)
	}

	// Key rotation: change the primary key; the secondary keeps working and
	// the old primary stops.
	oldPrimary := keyA
	secondaryA, _ := get(p.call(t, "GET", "/devices/devA", "").json(t), "authentication.symmetricKey.secondaryKey").(string)
	newPrimary := sas.NewKey()
	if r := p.call(t, "PUT", "/devices/devA", `{"deviceId":"devA","authentication":{"symmetricKey":{"primaryKey":"`+newPrimary+`","secondaryKey":"`+secondaryA+`"}}}`, "If-Match", `"*"`); r.Status != 200 {
		t.Fatalf("rotating: %d %s", r.Status, r.Body)
	}
	for _, c := range []struct {
		key string
		ok  bool
	}{{newPrimary, true}, {secondaryA, true}, {oldPrimary, false}} {
		d, err := deviceclient.Dial(ctx, p.MQTT, "devA", deviceclient.Options{Username: "devA", Password: tok("devA", c.key, later)})
		if (err == nil) != c.ok {
			t.Errorf("after rotation, key ok=%v: err %v", c.ok, err)
		}
		if err == nil {
			d.Close()
		}
	}
}

// TestTLS: MQTT over TLS and HTTPS work with the local CA, whose path the
// log names; the certificate covers localhost.
func TestTLS(t *testing.T) {
	p := startTwinhub(t, "", "--mqtts-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0")
	caPath := filepath.Join(p.dataDir, "tls", "ca.pem")
	if !strings.Contains(p.logs.String(), caPath) {
		t.Errorf("the log does not name the CA %s", caPath)
	}
	pem, err := os.ReadFile(caPath)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	httpsAddr := regexpFind(t, p.logs.String(), `https=(\S+)`)
	mqttsAddr := regexpFind(t, p.logs.String(), `tls_addr=(\S+)`)
	_, port, _ := strings.Cut(httpsAddr, ":")
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	resp, err := client.Get("https://localhost:" + port + "/healthz")
	if err != nil {
		t.Fatalf("HTTPS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("HTTPS healthz %d", resp.StatusCode)
	}
	p.call(t, "PUT", "/devices/tlsdev", "")
	_, mport, _ := strings.Cut(mqttsAddr, ":")
	opts := p.deviceOptions(t, "tlsdev")
	c := paho.NewClient(paho.NewClientOptions().AddBroker("ssl://localhost:" + mport).SetClientID("tlsdev").
		SetUsername(opts.Username).SetPassword(opts.Password).SetTLSConfig(&tls.Config{RootCAs: pool}))
	if tk := c.Connect(); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("MQTTS connect: %v", tk.Error())
	}
	c.Disconnect(0)
	// Without trusting the CA, the handshake fails.
	bad := paho.NewClient(paho.NewClientOptions().AddBroker("ssl://localhost:" + mport).SetClientID("tlsdev").
		SetUsername(opts.Username).SetPassword(opts.Password).SetConnectTimeout(5 * time.Second))
	if tk := bad.Connect(); tk.WaitTimeout(10*time.Second) && tk.Error() == nil {
		bad.Disconnect(0)
		t.Errorf("MQTTS accepted a client that does not trust the CA")
	}
}
