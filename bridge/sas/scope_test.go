package sas

import (
	"errors"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestHubNames(t *testing.T) {
	for _, c := range []struct {
		extra, want []string
	}{
		{nil, []string{"localhost"}},
		{[]string{"Hub.Example.com", " alias.example.net ", "", "hub.example.com", "LOCALHOST"}, []string{"localhost", "hub.example.com", "alias.example.net"}},
	} {
		if got := HubNames(c.extra...); !slices.Equal(got, c.want) {
			t.Errorf("HubNames(%q) = %q, want %q", c.extra, got, c.want)
		}
	}
}

// TestCheckScope is the scope matrix for one hub (localhost plus an alias):
// each sr, as it appears in a token, against the resource of a request.
func TestCheckScope(t *testing.T) {
	names := HubNames("hub.example.com")
	hub := []string(nil)
	devA, devAB, devB := DeviceScope("sec-A"), DeviceScope("sec-AB"), DeviceScope("sec-B")
	enc := url.QueryEscape
	for _, c := range []struct {
		name     string
		sr       string
		resource []string
		want     error
	}{
		// Service tokens: sr = the host covers everything.
		{"hub token, hub-wide request", "localhost", hub, nil},
		{"hub token, device request", "localhost", devA, nil},
		{"alias", "hub.example.com", devB, nil},
		{"host compared case-insensitively", "LocalHost", devA, nil},
		{"alias in upper case", "HUB.EXAMPLE.COM", hub, nil},
		{"host with a port", "localhost:8883", devA, nil},
		{"encoded host with a port", enc("hub.example.com:443"), hub, nil},
		{"trailing slash", "localhost/", hub, nil},
		// Device tokens: sr = {host}/devices/{id} covers that device only.
		{"device token, its device", enc("localhost/devices/sec-A"), devA, nil},
		{"device token, lower-case encoding", "localhost%2fdevices%2fsec-A", devA, nil},
		{"device token, not encoded", "localhost/devices/sec-A", devA, nil},
		{"device token, encoded letters", "localhost%2Fdevices%2Fsec-%41", devA, nil},
		{"device token with trailing slash", enc("localhost/devices/sec-A/"), devA, nil},
		{"device token, port in host", enc("localhost:8884/devices/sec-A"), devA, nil},
		{"devices collection", enc("localhost/devices"), devB, nil},
		{"device token, another device", enc("localhost/devices/sec-A"), devB, ErrResource},
		{"device token, prefix of another id", enc("localhost/devices/sec-A"), devAB, ErrResource},
		{"device token, longer id", enc("localhost/devices/sec-AB"), devA, ErrResource},
		{"device token, hub-wide request", enc("localhost/devices/sec-A"), hub, ErrResource},
		{"devices collection, hub-wide request", enc("localhost/devices"), hub, ErrResource},
		{"device id compared case-sensitively", enc("localhost/devices/SEC-A"), devA, ErrResource},
		{"a device's token covers its modules", enc("localhost/devices/sec-A"), DeviceScope("sec-A/x"), nil},
		{"module scope", enc("localhost/devices/sec-A/modules/x"), DeviceScope("sec-A/x"), nil},
		{"module token, device", enc("localhost/devices/sec-A/modules/m1"), devA, ErrResource},
		{"module token, another module", enc("localhost/devices/sec-A/modules/m1"), DeviceScope("sec-A/m2"), ErrResource},
		{"module token, another device's module", enc("localhost/devices/sec-B/modules/x"), DeviceScope("sec-A/x"), ErrResource},
		{"another collection", enc("localhost/twins/sec-A"), devA, ErrResource},
		{"empty segment", enc("localhost//devices/sec-A"), devA, ErrResource},
		// Audience: sr must name this hub.
		{"foreign host", "evil.example.com", hub, ErrAudience},
		{"foreign host, device path", enc("evil.example.com/devices/sec-A"), devA, ErrAudience},
		{"suffix of a hub name", "host", hub, ErrAudience},
		{"hub name as a prefix", "localhost.evil.com", hub, ErrAudience},
		{"user info", "localhost@evil.com", hub, ErrAudience},
		{"double-encoded path", enc(enc("localhost/devices/sec-A")), devA, ErrAudience},
		{"non-numeric port", "localhost:http", hub, ErrAudience},
		{"empty port", "localhost:", hub, ErrAudience},
		{"port zero", "localhost:0", hub, ErrAudience},
		{"no host", enc("/devices/sec-A"), devA, ErrAudience},
		{"bad escape", "localhost%2", hub, ErrMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := CheckScope(c.sr, names, c.resource); !errors.Is(err, c.want) || (c.want == nil && err != nil) {
				t.Errorf("CheckScope(%q, %q) = %v, want %v", c.sr, c.resource, err, c.want)
			}
		})
	}
	// Without names nothing is covered.
	if err := CheckScope("localhost", nil, hub); !errors.Is(err, ErrAudience) {
		t.Errorf("no hub names: %v", err)
	}
}

// A parsed token applies the rule to sr as written in it.
func TestTokenForDevice(t *testing.T) {
	names := HubNames()
	tok, _ := New(DeviceResource("localhost", "myDeviceId"), NewKey(), "", time.Now().Add(time.Hour))
	p, err := Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.ForDevice(names, "myDeviceId"); err != nil {
		t.Errorf("ForDevice: %v", err)
	}
	for _, other := range []string{"myDevice", "myDeviceId2", "other"} {
		if err := p.ForDevice(names, other); !errors.Is(err, ErrResource) {
			t.Errorf("ForDevice(%q): %v", other, err)
		}
	}
	if err := p.ForDevice(HubNames("hub.example.com")[1:], "myDeviceId"); !errors.Is(err, ErrAudience) {
		t.Errorf("ForDevice on a hub not named localhost: %v", err)
	}
}

// FuzzCheckScope: for any sr and device IDs, CheckScope never panics, a
// token covers something only if its sr (decoded) starts with a hub name,
// and a token that covers two different devices (or modules of two
// different devices) covers the whole devices collection (no sr covers
// exactly some devices but not all).
func FuzzCheckScope(f *testing.F) {
	f.Add("localhost%2Fdevices%2Fd", "d", "d2")
	f.Add("LOCALHOST:8883/devices", "a", "b")
	f.Add("localhost/devices/a/", "a", "a/")
	f.Add("hub.example.com", "x", "")
	names := HubNames("hub.example.com")
	f.Fuzz(func(t *testing.T, sr, a, b string) {
		errA := CheckScope(sr, names, DeviceScope(a))
		errB := CheckScope(sr, names, DeviceScope(b))
		if errA == nil {
			decoded, _ := url.PathUnescape(sr)
			d := strings.ToLower(decoded)
			if !strings.HasPrefix(d, "localhost") && !strings.HasPrefix(d, "hub.example.com") {
				t.Fatalf("sr %q (%q) covers device %q of a hub it does not name", sr, decoded, a)
			}
		}
		deviceA, _, _ := strings.Cut(a, "/")
		deviceB, _, _ := strings.Cut(b, "/")
		if errA == nil && errB == nil && deviceA != deviceB && CheckScope(sr, names, []string{"devices"}) != nil {
			t.Fatalf("sr %q covers devices %q and %q but not the devices collection", sr, a, b)
		}
	})
}
