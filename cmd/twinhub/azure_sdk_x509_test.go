package main

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// writeX509Files writes a device certificate and its key as PEM files for
// the SDK's setOptions({cert, key}) and returns the script's environment.
func writeX509Files(t *testing.T, c *testCert) []string {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "device.pem"), filepath.Join(dir, "device-key.pem")
	if err := os.WriteFile(certFile, []byte(c.pem()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte(c.keyPEM(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	return []string{"X509_CERT=" + certFile, "X509_KEY=" + keyFile}
}

// x509ConnectionString is an X.509 device's connection string. The SDK
// takes no GatewayHostName for X.509 devices: Mqtt connects to
// mqtts://localhost:8883, MqttWs to wss://localhost:443/$iothub/websocket.
func x509ConnectionString(deviceID string) string {
	return "HostName=localhost;DeviceId=" + deviceID + ";x509=true"
}

// TestAzureSDKX509: with the unmodified device SDK, X.509 devices
// (Client.fromConnectionString(…x509=true…) and setOptions({cert, key}))
// connect over Mqtt (MQTTS) and MqttWs (WebSockets on the HTTPS port), one
// registered by thumbprint (selfSigned) and one with a certificate issued
// by a verified CA (certificateAuthority), both created with the service
// SDK's registry (a read-modify-write update adds a secondary thumbprint, a
// malformed one is refused); each reads its twin, reports a property, and
// receives a desired change. A certificate that is not registered fails the
// SDK's open.
func TestAzureSDKX509(t *testing.T) {
	// The SDK ignores GatewayHostName for X.509 devices: Mqtt connects to
	// HostName:8883, so the hub's MQTTS listens there (its default).
	if ln, err := net.Listen("tcp", "127.0.0.1:8883"); err != nil {
		sdkUnavailable(t, "cannot listen on 127.0.0.1:8883 (%v): the SDK's X.509 devices connect to MQTTS on port 8883 only: free the port", err)
	} else {
		ln.Close()
	}
	h := startAzureHub(t, "--mqtts-addr", "127.0.0.1:8883")
	// The devices, created with the service SDK's registry.
	self, other := newCert(t, certSpec{cn: "sdkSelf"}, nil), newCert(t, certSpec{cn: "sdkSelf"}, nil)
	evs := h.runScript(t, []string{"SERVICE_CONNECTION_STRING=" + h.serviceCS(t)}, "x509_registry.js",
		"sdkSelf", "sdkCa", strings.ToLower(self.sha1Thumbprint()), other.sha1Thumbprint())
	created := findEvents(evs, "created")
	if len(created) != 2 || get(created[0], "device.authentication.type") != "selfSigned" ||
		get(created[0], "device.authentication.x509Thumbprint.primaryThumbprint") != self.sha1Thumbprint() ||
		get(created[1], "device.authentication.type") != "certificateAuthority" {
		t.Errorf("registry.create of X.509 devices: %v", created)
	}
	if u := oneEvent(t, evs, "updated"); get(u, "device.authentication.x509Thumbprint.secondaryThumbprint") != other.sha1Thumbprint() ||
		get(u, "device.authentication.type") != "selfSigned" || get(u, "device.authentication.symmetricKey.primaryKey") != nil {
		t.Errorf("registry.update of a selfSigned device: %v", u)
	}
	if e := oneEvent(t, evs, "badThumbprint"); get(e, "error.status") != 400.0 {
		t.Errorf("registry.create with a malformed thumbprint: %v", e)
	}
	ca := newCert(t, certSpec{cn: "SDK Fleet CA", ca: true}, nil)
	caBody := `{"properties":{"certificate":` + strconv.Quote(ca.pem()) + `,"isVerified":true}}`
	if r := h.call(t, "PUT", "/certificates/sdkfleet", caBody, "Content-Type", "application/json"); r.Status != 200 {
		t.Fatalf("registering the CA: %d %s", r.Status, r.Body)
	}
	devices := map[string]*testCert{"sdkSelf": self, "sdkCa": newCert(t, certSpec{cn: "sdkCa"}, ca)}

	desired := 0
	for _, id := range []string{"sdkSelf", "sdkCa"} {
		for _, transport := range []string{"Mqtt", "MqttWs"} {
			t.Run(id+"/"+transport, func(t *testing.T) {
				env := append(writeX509Files(t, devices[id]), "DEVICE_CONNECTION_STRING="+x509ConnectionString(id), "TRANSPORT="+transport)
				n := h.startScript(t, env, "device_twin.js")
				ready := n.next(t, 30*time.Second, "ready")
				if _, ok := ready["desired"].(map[string]any)["$version"]; !ok {
					t.Errorf("twin read by the device: %v", ready)
				}
				if tw := h.twin(t, id); tw["connectionState"] != "Connected" || tw["authenticationType"] == "sas" {
					t.Errorf("twin of the connected device: connectionState %v, authenticationType %v", tw["connectionState"], tw["authenticationType"])
				}
				n.send(t, `report {"transport":"`+transport+`"}`)
				if e := n.next(t, 15*time.Second, "reported"); get(map[string]any(e), "reported.transport") != transport {
					t.Errorf("reported: %v", e)
				}
				if tw := h.twin(t, id); get(tw, "properties.reported.transport") != transport {
					t.Errorf("twin after the report: %v", tw["properties"])
				}
				desired++
				v := strconv.Itoa(desired)
				if r := h.call(t, "PATCH", "/twins/"+id, `{"properties":{"desired":{"n":`+v+`}}}`, "If-Match", `"*"`); r.Status != 200 {
					t.Fatalf("desired patch: %d %s", r.Status, r.Body)
				}
				e := n.next(t, 15*time.Second, "desired")
				if get(map[string]any(e), "value.n") != float64(desired) {
					t.Errorf("desired notification: %v", e)
				}
				n.send(t, "exit")
				n.wait(t)
			})
		}
	}

	// An unregistered certificate: the SDK's open fails.
	stranger := newCert(t, certSpec{cn: "sdkSelf"}, nil)
	env := append(writeX509Files(t, stranger), "DEVICE_CONNECTION_STRING="+x509ConnectionString("sdkSelf"), "TRANSPORT=Mqtt")
	n := h.startScript(t, env, "device_twin.js")
	select {
	case <-n.done:
	case <-time.After(60 * time.Second):
		t.Fatal("the SDK did not give up on an unregistered certificate within 60 s")
	}
	if n.err == nil || !strings.Contains(n.stderr.String(), "could not open IotHub client") {
		t.Errorf("an unregistered certificate: exit %v, stderr %s", n.err, n.stderr.String())
	}
}
