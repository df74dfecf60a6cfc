package main

import (
	"bytes"
	"context"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twinhub/twinhub/bridge/deviceclient"
	"github.com/twinhub/twinhub/bridge/sas"
)

// TestSecuritySASScope is the SAS scope matrix against the real binary, run
// with two extra host names: a token's sr must name one of the hub's names
// and cover the request's resource. On HTTP a token for
// {host}/devices/sec-A reaches only sec-A's registry entry and twin; tokens
// for other hosts, other devices, modules, or signed with a device key are
// refused with 401, change nothing and are counted. On MQTT the same rule
// decides the CONNECT, and a key replaced by PUT /devices/{id} stops working.
// `twinhub connection-string` prints the first of the hub's extra names.
func TestSecuritySASScope(t *testing.T) {
	p := startTwinhub(t, "", "--hostname", "hub.example.com,Alias.Example.NET")
	for _, id := range []string{"sec-A", "sec-AB", "sec-B"} {
		if r := p.call(t, "PUT", "/devices/"+id, ""); r.Status != 200 {
			t.Fatalf("creating %s: %d %s", id, r.Status, r.Body)
		}
	}
	ps, err := sas.LoadPolicies(filepath.Join(p.dataDir, "policies.json"))
	if err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	// sign builds a token whose sr appears exactly as given.
	sign := func(sr, key, skn string, expiry time.Time) string {
		tok, err := sas.New(sr, key, skn, expiry)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	policy := func(name, sr string) string { return sign(sr, mustPolicy(t, ps, name).PrimaryKey, name, later) }
	owner := func(sr string) string { return policy(sas.OwnerPolicy, sr) }
	enc := url.QueryEscape
	keyA, keyAB := p.deviceKey(t, "sec-A"), p.deviceKey(t, "sec-AB")
	tokA := enc("localhost/devices/sec-A")

	t.Run("HTTP", func(t *testing.T) {
		beforeB := p.call(t, "GET", "/twins/sec-B", "").Body
		patch := `{"tags":{"owned":true}}`
		refused := []struct {
			name, method, path, body, auth, reason string
		}{
			{"device-scoped token reads another twin", "GET", "/twins/sec-B", "", owner(tokA), "resource"},
			{"device-scoped token patches another twin", "PATCH", "/twins/sec-B", patch, owner(tokA), "resource"},
			{"device-scoped token deletes another device", "DELETE", "/devices/sec-B", "", owner(tokA), "resource"},
			{"device-scoped token reads another device", "GET", "/devices/sec-B", "", owner(tokA), "resource"},
			{"prefix of another device's ID", "GET", "/twins/sec-AB", "", owner(tokA), "resource"},
			{"encoded slash in the request", "GET", "/twins/sec-A%2Fx", "", owner(tokA), "resource"},
			{"device-scoped token lists devices", "GET", "/devices", "", owner(tokA), "resource"},
			{"device-scoped token queries", "POST", "/devices/query", `{"query":"SELECT * FROM devices"}`, owner(tokA), "resource"},
			{"module token", "GET", "/twins/sec-A", "", owner(enc("localhost/devices/sec-A/modules/m1")), "resource"},
			{"foreign host", "GET", "/twins/sec-B", "", owner("evil.example.com"), "audience"},
			{"foreign host, device path", "GET", "/twins/sec-A", "", owner(enc("evil.example.com/devices/sec-A")), "audience"},
			{"hub name as a prefix of the host", "GET", "/twins/sec-A", "", owner("localhost.evil.com"), "audience"},
			{"double-encoded sr", "GET", "/twins/sec-A", "", owner(enc(tokA)), "audience"},
			{"an address, not a hub name", "GET", "/twins/sec-A", "", owner("127.0.0.1"), "audience"},
			{"device key (no skn)", "GET", "/twins/sec-A", "", sign(tokA, keyA, "", later), "malformed"},
			{"device policy", "GET", "/twins/sec-A", "", policy("device", "localhost"), "forbidden"},
			{"expired scoped token", "GET", "/twins/sec-A", "", sign(tokA, mustPolicy(t, ps, sas.OwnerPolicy).PrimaryKey, sas.OwnerPolicy, time.Now().Add(-time.Minute)), "expired"},
		}
		for _, c := range refused {
			t.Run(c.name, func(t *testing.T) {
				r := p.call(t, c.method, c.path, c.body, "Authorization", c.auth, "If-Match", `"*"`)
				if r.Status != 401 || r.Header.Get("iothub-errorcode") != "IotHubUnauthorizedAccess" ||
					!strings.HasPrefix(r.json(t)["Message"].(string), "ErrorCode:IotHubUnauthorizedAccess;") {
					t.Fatalf("got %d %s, want 401 IotHubUnauthorizedAccess", r.Status, r.Body)
				}
			})
		}
		for _, reason := range []string{"audience", "resource"} {
			if v := p.metricValue(t, `twinhub_http_auth_failures_total{reason="`+reason+`"}`); v == "" || v == "0" {
				t.Errorf("auth failures for %s not counted: %q", reason, v)
			}
		}
		if after := p.call(t, "GET", "/twins/sec-B", "").Body; !bytes.Equal(beforeB, after) {
			t.Errorf("refused requests changed sec-B:\nbefore %s\nafter  %s", beforeB, after)
		}

		allowed := []struct{ name, method, path, body, auth string }{
			{"hub token", "GET", "/twins/sec-B", "", owner("localhost")},
			{"alias lists devices", "GET", "/devices", "", owner("hub.example.com")},
			{"alias in other case with a port", "GET", "/twins/sec-A", "", owner("ALIAS.example.net:443")},
			{"device-scoped token, its twin", "GET", "/twins/sec-A", "", owner(tokA)},
			{"device-scoped token, its registry entry", "GET", "/devices/sec-A", "", owner(tokA)},
			{"device-scoped token, encoded request path", "GET", "/twins/sec-%41", "", owner(tokA)},
			{"lower-case encoding", "PATCH", "/twins/sec-A", `{"tags":{"ok":1}}`, owner("localhost%2fdevices%2fsec-A")},
			{"service policy scoped through an alias", "PATCH", "/twins/sec-A", `{"tags":{"ok":2}}`, policy("service", enc("hub.example.com/devices/sec-A"))},
			{"registryRead on the devices collection", "GET", "/devices/sec-B", "", policy("registryRead", enc("localhost/devices"))},
		}
		for _, c := range allowed {
			t.Run(c.name, func(t *testing.T) {
				if r := p.call(t, c.method, c.path, c.body, "Authorization", c.auth, "If-Match", `"*"`); r.Status != 200 {
					t.Errorf("got %d %s, want 200", r.Status, r.Body)
				}
			})
		}
	})

	t.Run("CLI", func(t *testing.T) {
		// `twinhub connection-string` takes run's --hostname list and prints
		// its first name; the SDKs' tokens built from it are accepted.
		out, err := p.cli(t, "connection-string", "--hostname", "hub.example.com,Alias.Example.NET")
		if err != nil || !strings.HasPrefix(out, "HostName=hub.example.com;SharedAccessKeyName=iothubowner;") {
			t.Fatalf("connection-string: %v %q", err, out)
		}
		cs, err := sas.ParseConnectionString(out)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := cs.Token(time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if r := p.call(t, "GET", "/twins/sec-A", "", "Authorization", tok); r.Status != 200 {
			t.Errorf("a token from the printed connection string: %d %s", r.Status, r.Body)
		}
		out, err = p.cli(t, "connection-string", "--device", "sec-B", "--hostname", "hub.example.com,Alias.Example.NET")
		if err != nil || !strings.HasPrefix(out, "HostName=hub.example.com;DeviceId=sec-B;") {
			t.Fatalf("device connection-string: %v %q", err, out)
		}
		if cs, err = sas.ParseConnectionString(out); err != nil {
			t.Fatal(err)
		}
		if tok, err = cs.Token(time.Hour); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		d, err := deviceclient.Dial(ctx, p.MQTT, "sec-B", deviceclient.Options{Username: "hub.example.com/sec-B/?api-version=2021-04-12", Password: tok})
		if err != nil {
			t.Fatalf("a device token from the printed connection string: %v", err)
		}
		d.Close()
	})

	t.Run("MQTT", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		connects := func(password string) error {
			d, err := deviceclient.Dial(ctx, p.MQTT, "sec-A", deviceclient.Options{Username: "localhost/sec-A/?api-version=2021-04-12", Password: password})
			if err == nil {
				d.Close()
			}
			return err
		}
		cases := []struct {
			name, password string
			ok             bool
		}{
			{"device key", sign(tokA, keyA, "", later), true},
			{"alias", sign(enc("hub.example.com/devices/sec-A"), keyA, "", later), true},
			{"host in upper case with a port", sign(enc("LOCALHOST:8883/devices/sec-A"), keyA, "", later), true},
			{"device policy for the hub", policy("device", "localhost"), true},
			{"device policy for the device", policy("device", tokA), true},
			{"foreign host", sign(enc("evil.example.com/devices/sec-A"), keyA, "", later), false},
			{"device policy, foreign host", policy("device", enc("evil.example.com/devices/sec-A")), false},
			{"module token", sign(enc("localhost/devices/sec-A/modules/m1"), keyA, "", later), false},
			{"token for a longer ID", sign(enc("localhost/devices/sec-AB"), keyA, "", later), false},
			{"another device's token", sign(enc("localhost/devices/sec-AB"), keyAB, "", later), false},
			{"device policy for another device", policy("device", enc("localhost/devices/sec-B")), false},
			{"service policy (no DeviceConnect)", policy("service", "localhost"), false},
			{"expired", sign(tokA, keyA, "", time.Now().Add(-time.Minute)), false},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				err := connects(c.password)
				if (err == nil) != c.ok {
					t.Fatalf("connect error %v, want success %v", err, c.ok)
				}
				if err != nil && !strings.Contains(strings.ToLower(err.Error()), "not authorized") {
					t.Errorf("want CONNACK 5 (not authorized), got %v", err)
				}
			})
		}

		for _, reason := range []string{"audience", "resource"} {
			if v := p.metricValue(t, `twinhub_mqtt_auth_failures_total{reason="`+reason+`"}`); v == "" || v == "0" {
				t.Errorf("MQTT auth failures for %s not counted: %q", reason, v)
			}
		}

		// Rotation: after PUT /devices/sec-A with new keys, a token signed
		// with the old primary key no longer connects.
		newPrimary, newSecondary := sas.NewKey(), sas.NewKey()
		if r := p.call(t, "PUT", "/devices/sec-A", `{"deviceId":"sec-A","authentication":{"symmetricKey":{"primaryKey":"`+newPrimary+`","secondaryKey":"`+newSecondary+`"}}}`, "If-Match", `"*"`); r.Status != 200 {
			t.Fatalf("rotating sec-A's keys: %d %s", r.Status, r.Body)
		}
		if err := connects(sign(tokA, keyA, "", later)); err == nil {
			t.Errorf("a token signed with sec-A's old key still connects")
		}
		if err := connects(sign(tokA, newSecondary, "", later)); err != nil {
			t.Errorf("a token signed with sec-A's new key: %v", err)
		}
	})
}
