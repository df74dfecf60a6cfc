package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/twinhub/twinhub/bridge/sas"
	"github.com/twinhub/twinhub/deploy/embedded"
)

// revocable is a device connection that reports when the hub closes it.
type revocable struct {
	c     paho.Client
	token string
	lost  chan time.Time
}

// connectRevocable connects deviceID with a token signed with key that
// expires at expiry, without reconnecting when the connection is lost.
func (p *proc) connectRevocable(t *testing.T, deviceID, key string, expiry time.Time) *revocable {
	t.Helper()
	tok, err := sas.New(sas.DeviceResource("localhost", deviceID), key, "", expiry)
	if err != nil {
		t.Fatal(err)
	}
	r := &revocable{token: tok, lost: make(chan time.Time, 1)}
	r.c = paho.NewClient(paho.NewClientOptions().AddBroker(p.MQTT).SetClientID(deviceID).SetUsername(deviceID).
		SetPassword(tok).SetAutoReconnect(false).SetConnectRetry(false).SetKeepAlive(30 * time.Second).
		SetConnectionLostHandler(func(paho.Client, error) { r.lost <- time.Now() }))
	if tk := r.c.Connect(); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("connecting %s: %v", deviceID, tk.Error())
	}
	t.Cleanup(func() { r.c.Disconnect(0) })
	return r
}

// waitClosed waits until the hub closed the connection, at most within,
// and returns when that happened.
func (r *revocable) waitClosed(t *testing.T, within time.Duration, what string) time.Time {
	t.Helper()
	select {
	case at := <-r.lost:
		return at
	case <-time.After(within):
		t.Fatalf("%s: the device's connection is still open after %s", what, within)
		return time.Time{}
	}
}

// TestRevocation: disabling or deleting a device, or changing the key its
// token was signed with, closes its open MQTT session within a second or
// two; a session ends when its SAS token expires; the device cannot
// publish on that session or connect again with the same token. Each
// revocation is counted by reason and logged without the token.
func TestRevocation(t *testing.T) {
	p := startTwinhub(t, "")
	for _, id := range []string{"revDisabled", "revDeleted", "revRotated", "revSecondary", "revExpiring"} {
		if r := p.call(t, "PUT", "/devices/"+id, ""); r.Status != 200 {
			t.Fatalf("creating %s: %d %s", id, r.Status, r.Body)
		}
	}
	later := time.Now().Add(time.Hour)
	var tokens []string
	revokedWithin := func(t *testing.T, r *revocable, what string, change func()) {
		t.Helper()
		start := time.Now()
		change()
		at := r.waitClosed(t, 3*time.Second, what)
		t.Logf("%s: connection closed %s after the registry change was acknowledged", what, at.Sub(start).Round(time.Millisecond))
		tok := r.c.Publish("devices/x/twin/PATCH/properties/reported/?$rid=1", 1, false, `{"after":"revocation"}`)
		if tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
			t.Errorf("%s: a publish on the closed session succeeded", what)
		}
		tokens = append(tokens, r.token)
	}

	t.Run("disabled", func(t *testing.T) {
		r := p.connectRevocable(t, "revDisabled", p.deviceKey(t, "revDisabled"), later)
		revokedWithin(t, r, "disable", func() {
			if res := p.call(t, "PUT", "/devices/revDisabled", `{"deviceId":"revDisabled","status":"disabled"}`, "If-Match", `"*"`); res.Status != 200 {
				t.Fatalf("disabling: %d %s", res.Status, res.Body)
			}
		})
		if rep := get(p.call(t, "GET", "/twins/revDisabled", "").json(t), "properties.reported.after"); rep != nil {
			t.Errorf("the disabled device's publish was applied: %v", rep)
		}
	})

	t.Run("deleted", func(t *testing.T) {
		r := p.connectRevocable(t, "revDeleted", p.deviceKey(t, "revDeleted"), later)
		revokedWithin(t, r, "delete", func() {
			if res := p.call(t, "DELETE", "/devices/revDeleted", "", "If-Match", `"*"`); res.Status != 204 {
				t.Fatalf("deleting: %d %s", res.Status, res.Body)
			}
		})
	})

	t.Run("key regenerated", func(t *testing.T) {
		// revSecondary connects with its secondary key and revRotated with
		// its primary; both get a new primary key, revSecondary first. The
		// hub handles registry notices in order, so once revRotated's
		// session is closed, revSecondary's change has been handled too,
		// and its session, whose key is still valid, must be open.
		doc := p.call(t, "GET", "/devices/revSecondary", "").json(t)
		secondary, _ := get(doc, "authentication.symmetricKey.secondaryKey").(string)
		kept := p.connectRevocable(t, "revSecondary", secondary, later)
		oldPrimary := p.deviceKey(t, "revRotated")
		r := p.connectRevocable(t, "revRotated", oldPrimary, later)
		rotate := func(id string) {
			doc := p.call(t, "GET", "/devices/"+id, "").json(t)
			sec, _ := get(doc, "authentication.symmetricKey.secondaryKey").(string)
			body := `{"deviceId":"` + id + `","authentication":{"symmetricKey":{"primaryKey":"` + sas.NewKey() + `","secondaryKey":"` + sec + `"}}}`
			if res := p.call(t, "PUT", "/devices/"+id, body, "If-Match", `"*"`); res.Status != 200 {
				t.Fatalf("regenerating %s's primary key: %d %s", id, res.Status, res.Body)
			}
		}
		revokedWithin(t, r, "key regeneration", func() {
			rotate("revSecondary")
			rotate("revRotated")
		})
		if !kept.c.IsConnectionOpen() {
			t.Errorf("a session signed with the unchanged secondary key was closed by a primary key change")
		}
		// The old key stays refused at connect.
		c := paho.NewClient(paho.NewClientOptions().AddBroker(p.MQTT).SetClientID("revRotated").SetUsername("revRotated").
			SetPassword(r.token).SetAutoReconnect(false))
		if tk := c.Connect(); tk.WaitTimeout(10*time.Second) && tk.Error() == nil {
			c.Disconnect(0)
			t.Errorf("a token signed with the replaced key connected")
		}
	})

	t.Run("token expires", func(t *testing.T) {
		// se has a resolution of one second: the token expires at a whole second.
		expiry := time.Unix(time.Now().Add(2*time.Second).Unix()+1, 0)
		r := p.connectRevocable(t, "revExpiring", p.deviceKey(t, "revExpiring"), expiry)
		at := r.waitClosed(t, time.Until(expiry)+2*time.Second, "token expiry")
		t.Logf("token expiry: connection closed %s after se", at.Sub(expiry).Round(time.Millisecond))
		if at.Before(expiry.Add(-100 * time.Millisecond)) {
			t.Errorf("the session ended at %s, before its token expired at %s", at, expiry)
		}
		tokens = append(tokens, r.token)
	})

	for _, reason := range []string{"disabled", "deleted", "key_changed", "expired"} {
		if v := p.metricValue(t, `twinhub_mqtt_sessions_revoked_total{reason="`+reason+`"}`); v != "1" {
			t.Errorf("revocations for %s counted %q, want 1", reason, v)
		}
	}
	logs := p.logs.String()
	for _, reason := range []string{"disabled", "deleted", "key_changed", "expired"} {
		if !strings.Contains(logs, "reason="+reason) {
			t.Errorf("no revocation logged with reason=%s", reason)
		}
	}
	for _, tok := range tokens {
		sig := tok[strings.Index(tok, "sig=")+4:]
		if sig = sig[:strings.IndexByte(sig+"&", '&')]; strings.Contains(logs, sig) {
			t.Errorf("the log contains a token's signature")
		}
	}
}

// TestRevocationAcrossInstances: a device connected to instance B's broker
// is disconnected when instance A disables it (both share A's JetStream;
// whichever processor applies the change, every instance hears of it).
func TestRevocationAcrossInstances(t *testing.T) {
	a := startTwinhub(t, "")
	b := startTwinhub(t, "", "--nats-url", a.natsURL(t, embedded.InternalNATSUser))
	if r := a.call(t, "PUT", "/devices/revShared", ""); r.Status != 200 {
		t.Fatalf("creating the device: %d %s", r.Status, r.Body)
	}
	r := b.connectRevocable(t, "revShared", a.deviceKey(t, "revShared"), time.Now().Add(time.Hour))
	start := time.Now()
	if res := a.call(t, "PUT", "/devices/revShared", `{"deviceId":"revShared","status":"disabled"}`, "If-Match", `"*"`); res.Status != 200 {
		t.Fatalf("disabling through A: %d %s", res.Status, res.Body)
	}
	at := r.waitClosed(t, 3*time.Second, "disable through the other instance")
	t.Logf("disabled through A: the session on B closed %s after the change was acknowledged", at.Sub(start).Round(time.Millisecond))
	if v := b.metricValue(t, `twinhub_mqtt_sessions_revoked_total{reason="disabled"}`); v != "1" {
		t.Errorf("B counted %q revocations for disabled, want 1", v)
	}
}

// TestRevocationOfModules: a module's open session ends when its device is
// disabled, though the module's own record does not change, and the module
// cannot connect again while its device stays disabled.
func TestRevocationOfModules(t *testing.T) {
	p := startTwinhub(t, "")
	if r := p.call(t, "PUT", "/devices/revModDev", ""); r.Status != 200 {
		t.Fatalf("creating the device: %d %s", r.Status, r.Body)
	}
	r := p.call(t, "PUT", "/devices/revModDev/modules/m1", "")
	if r.Status != 200 {
		t.Fatalf("creating the module: %d %s", r.Status, r.Body)
	}
	key, _ := get(r.json(t), "authentication.symmetricKey.primaryKey").(string)
	tok, err := sas.New(sas.DeviceResource("localhost", "revModDev/modules/m1"), key, "", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	connect := func() (paho.Client, chan time.Time, error) {
		lost := make(chan time.Time, 1)
		c := paho.NewClient(paho.NewClientOptions().AddBroker(p.MQTT).SetClientID("revModDev/m1").
			SetUsername("localhost/revModDev/m1/?api-version=2021-04-12").SetPassword(tok).
			SetAutoReconnect(false).SetConnectRetry(false).
			SetConnectionLostHandler(func(paho.Client, error) { lost <- time.Now() }))
		tk := c.Connect()
		if !tk.WaitTimeout(10 * time.Second) {
			return c, lost, errors.New("no CONNACK within 10s")
		}
		return c, lost, tk.Error()
	}
	c, lost, err := connect()
	if err != nil {
		t.Fatalf("connecting the module: %v", err)
	}
	defer c.Disconnect(0)
	if r := p.call(t, "PUT", "/devices/revModDev", `{"deviceId":"revModDev","status":"disabled"}`, "If-Match", `"*"`); r.Status != 200 {
		t.Fatalf("disabling the device: %d %s", r.Status, r.Body)
	}
	select {
	case <-lost:
	case <-time.After(3 * time.Second):
		t.Fatal("the module's session is still open 3s after its device was disabled")
	}
	if c2, _, err := connect(); err == nil {
		c2.Disconnect(0)
		t.Error("the module connected again while its device is disabled")
	}
}
