package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twinhub/twinhub/bridge/deviceclient"
	"github.com/twinhub/twinhub/bridge/sas"
	"github.com/twinhub/twinhub/deploy/embedded"
)

// testCert is a certificate made by a test, with its key.
type testCert struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// certSpec says what newCert makes.
type certSpec struct {
	cn        string
	ca        bool
	notBefore time.Time // zero: an hour ago
	notAfter  time.Time // zero: in a day
}

// newCert issues a certificate signed by parent (self-signed when nil).
func newCert(t *testing.T, spec certSpec, parent *testCert) *testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 100))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: spec.cn},
		NotBefore: spec.notBefore, NotAfter: spec.notAfter}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	}
	if spec.ca {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCert{cert: cert, key: key}
}

// pem is the certificate in PEM.
func (c *testCert) pem() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw}))
}

// keyPEM is the private key in PEM (PKCS #8).
func (c *testCert) keyPEM(t *testing.T) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(c.key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// sha1Thumbprint is IoT Hub's thumbprint: hex SHA-1 of the DER.
func (c *testCert) sha1Thumbprint() string {
	s := sha1.Sum(c.cert.Raw)
	return strings.ToUpper(hex.EncodeToString(s[:]))
}

func (c *testCert) sha256Thumbprint() string {
	s := sha256.Sum256(c.cert.Raw)
	return hex.EncodeToString(s[:]) // lower case: the hub accepts either
}

// tlsCertificate is the TLS client certificate: c, then the chain above it.
func (c *testCert) tlsCertificate(chain ...*testCert) tls.Certificate {
	tc := tls.Certificate{Certificate: [][]byte{c.cert.Raw}, PrivateKey: c.key, Leaf: c.cert}
	for _, p := range chain {
		tc.Certificate = append(tc.Certificate, p.cert.Raw)
	}
	return tc
}

// x509Hub is a hub with its MQTTS and WebSocket addresses and the CA that
// signs its server certificate.
type x509Hub struct {
	*proc
	mqtts, wss string
	roots      *x509.CertPool
}

func startX509Hub(t *testing.T) *x509Hub {
	t.Helper()
	return newX509Hub(t, startTwinhub(t, ""))
}

func newX509Hub(t *testing.T, p *proc) *x509Hub {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(p.dataDir, "tls", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(b)
	_, mport, _ := strings.Cut(regexpFind(t, p.logs.String(), `tls_addr=(\S+)`), ":")
	_, hport, _ := strings.Cut(regexpFind(t, p.logs.String(), `https=(\S+)`), ":")
	return &x509Hub{proc: p, roots: roots, mqtts: "ssl://localhost:" + mport, wss: "wss://localhost:" + hport + "/$iothub/websocket"}
}

// policyToken is a SAS token of a shared access policy for resource.
func (h *x509Hub) policyToken(t *testing.T, policy, resource string) string {
	t.Helper()
	ps, err := sas.LoadPolicies(filepath.Join(h.dataDir, "policies.json"))
	if err != nil {
		t.Fatal(err)
	}
	pol, ok := ps.Get(policy)
	if !ok {
		t.Fatalf("no policy %s", policy)
	}
	tok, err := sas.New(resource, pol.PrimaryKey, policy, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// dial connects deviceID over broker (h.mqtts or h.wss) with a client
// certificate and no password, with IoT Hub's user name.
func (h *x509Hub) dial(t *testing.T, broker, deviceID string, cert tls.Certificate) (*deviceclient.Client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return deviceclient.Dial(ctx, broker, deviceID, deviceclient.Options{
		Username: "localhost/" + deviceID + "/?api-version=2021-04-12",
		TLS:      &tls.Config{RootCAs: h.roots, ServerName: "localhost", Certificates: []tls.Certificate{cert}},
	})
}

// mustConnect connects and checks the device can read its twin and report.
func (h *x509Hub) mustConnect(t *testing.T, broker, deviceID string, cert tls.Certificate) *deviceclient.Client {
	t.Helper()
	d, err := h.dial(t, broker, deviceID, cert)
	if err != nil {
		t.Fatalf("%s over %s: %v\n%s", deviceID, broker, err, h.logs.String())
	}
	t.Cleanup(d.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := d.GetTwin(ctx); err != nil {
		t.Fatalf("%s: twin GET: %v", deviceID, err)
	}
	v, err := d.Report(ctx, []byte(`{"via":"`+broker[:3]+`"}`))
	if err != nil {
		t.Fatalf("%s: reported patch: %v", deviceID, err)
	}
	if tw := h.call(t, "GET", "/twins/"+deviceID, "").json(t); get(tw, "properties.reported.via") != broker[:3] || get(tw, "properties.reported.$version") != float64(v) {
		t.Errorf("%s: twin after the report: %v", deviceID, tw["properties"])
	}
	return d
}

// mustRefuse checks that the hub refuses the connection, and logs reason.
func (h *x509Hub) mustRefuse(t *testing.T, what, broker, deviceID string, cert tls.Certificate, reason string) {
	t.Helper()
	refusals := func() int {
		n := 0
		for _, line := range strings.Split(h.logs.String(), "\n") {
			if strings.Contains(line, `msg="refused an MQTT connection"`) && strings.Contains(line, " device="+deviceID+" ") &&
				strings.HasSuffix(line, "reason="+reason) {
				n++
			}
		}
		return n
	}
	before := refusals()
	if d, err := h.dial(t, broker, deviceID, cert); err == nil {
		d.Close()
		t.Errorf("%s: the hub accepted the connection", what)
		return
	}
	waitFor(t, 10*time.Second, what+": the refusal logged with reason "+reason, func() bool { return refusals() > before })
}

// putDevice creates or (ifMatch non-empty) updates a device.
func (h *x509Hub) putDevice(t *testing.T, id, body, ifMatch string) httpResp {
	t.Helper()
	if ifMatch != "" {
		return h.call(t, "PUT", "/devices/"+id, body, "Content-Type", "application/json", "If-Match", ifMatch)
	}
	return h.call(t, "PUT", "/devices/"+id, body, "Content-Type", "application/json")
}

func selfSignedBody(primary, secondary string) string {
	b, _ := json.Marshal(map[string]any{"authentication": map[string]any{"type": "selfSigned",
		"x509Thumbprint": map[string]any{"primaryThumbprint": primary, "secondaryThumbprint": secondary}}})
	return string(b)
}

// TestX509SelfSigned: a self-signed device registered by thumbprint (SHA-1
// or SHA-256) connects with its certificate and no password over MQTTS and
// WebSockets, reads its twin and reports; an unregistered certificate, an
// expired one, a SAS token for it, and a certificate for a SAS device are
// refused; removing the thumbprint or disabling the device ends its
// session and refuses it from then on.
func TestX509SelfSigned(t *testing.T) {
	h := startX509Hub(t)
	first := newCert(t, certSpec{cn: "x5self"}, nil)
	second := newCert(t, certSpec{cn: "x5self"}, nil)
	r := h.putDevice(t, "x5self", selfSignedBody(strings.ToLower(first.sha1Thumbprint()), second.sha256Thumbprint()), "")
	if r.Status != 200 {
		t.Fatalf("creating a selfSigned device: %d %s", r.Status, r.Body)
	}
	doc := h.call(t, "GET", "/devices/x5self", "").json(t)
	want := `{"type":"selfSigned","symmetricKey":{"primaryKey":null,"secondaryKey":null},"x509Thumbprint":{"primaryThumbprint":"` +
		first.sha1Thumbprint() + `","secondaryThumbprint":"` + strings.ToUpper(second.sha256Thumbprint()) + `"}}`
	if !sameJSON(t, doc["authentication"], want) {
		t.Errorf("GET /devices/x5self authentication: %v\nwant %s", doc["authentication"], want)
	}
	tw := h.call(t, "GET", "/twins/x5self", "").json(t)
	if tw["authenticationType"] != "selfSigned" || get(tw, "x509Thumbprint.primaryThumbprint") != first.sha1Thumbprint() {
		t.Errorf("twin: authenticationType %v, x509Thumbprint %v", tw["authenticationType"], tw["x509Thumbprint"])
	}

	h.mustConnect(t, h.mqtts, "x5self", first.tlsCertificate()).Close()
	h.mustConnect(t, h.wss, "x5self", second.tlsCertificate()).Close()
	// Queries see the authentication type and thumbprint.
	q := `{"query":"SELECT deviceId, x509Thumbprint FROM devices WHERE authenticationType = 'selfSigned'"}`
	waitFor(t, 10*time.Second, "a query to find the selfSigned device", func() bool {
		r := h.call(t, "POST", "/devices/query", q, "Content-Type", "application/json")
		return r.Status == 200 && strings.Contains(string(r.Body), `"x5self"`) && strings.Contains(string(r.Body), first.sha1Thumbprint())
	})
	// The CLI has no SAS connection string for it, and says what to use.
	if out, err := h.cli(t, "connection-string", "--device", "x5self"); err == nil || !strings.Contains(err.Error(), "HostName=localhost;DeviceId=x5self;x509=true") {
		t.Errorf("connection-string --device x5self: %q, %v", out, err)
	}

	h.mustRefuse(t, "an unregistered certificate", h.mqtts, "x5self", newCert(t, certSpec{cn: "x5self"}, nil).tlsCertificate(), "thumbprint")

	expired := newCert(t, certSpec{cn: "x5old", notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-24 * time.Hour)}, nil)
	if r := h.putDevice(t, "x5old", selfSignedBody(expired.sha1Thumbprint(), ""), ""); r.Status != 200 {
		t.Fatalf("creating x5old: %d %s", r.Status, r.Body)
	}
	h.mustRefuse(t, "an expired certificate", h.mqtts, "x5old", expired.tlsCertificate(), "expired")

	// A SAS token for the X.509 device, signed with the device policy's key
	// (DeviceConnect): refused, the device has no SAS credentials.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tok := h.policyToken(t, "device", sas.DeviceResource("localhost", "x5self"))
	if d, err := deviceclient.Dial(ctx, h.MQTT, "x5self", deviceclient.Options{Username: "x5self", Password: tok}); err == nil {
		d.Close()
		t.Error("the selfSigned device connected with a SAS token")
	}
	// A SAS device with a certificate and no password: refused.
	h.call(t, "PUT", "/devices/x5sas", "")
	h.mustRefuse(t, "a SAS device with a certificate", h.mqtts, "x5sas", first.tlsCertificate(), "auth_type")
	// ... while it still connects with its token over the same listener.
	if d, err := deviceclient.Dial(ctx, h.mqtts, "x5sas", deviceclient.Options{Username: "x5sas",
		Password: h.deviceOptions(t, "x5sas").Password, TLS: &tls.Config{RootCAs: h.roots, ServerName: "localhost"}}); err != nil {
		t.Errorf("a SAS device over MQTTS: %v", err)
	} else {
		d.Close()
	}

	// Removing the primary thumbprint ends the session it authenticated.
	live := h.mustConnect(t, h.mqtts, "x5self", first.tlsCertificate())
	if r := h.putDevice(t, "x5self", selfSignedBody(second.sha256Thumbprint(), ""), `"*"`); r.Status != 200 {
		t.Fatalf("replacing the thumbprints: %d %s", r.Status, r.Body)
	}
	waitFor(t, 10*time.Second, "the session of the removed thumbprint to end", func() bool {
		return strings.Contains(h.logs.String(), `reason=certificate_changed`) && !live.Connected()
	})
	h.mustRefuse(t, "a removed thumbprint", h.mqtts, "x5self", first.tlsCertificate(), "thumbprint")
	live = h.mustConnect(t, h.mqtts, "x5self", second.tlsCertificate())

	// Disabling the device ends its session and refuses it.
	if r := h.putDevice(t, "x5self", `{"status":"disabled"}`, `"*"`); r.Status != 200 {
		t.Fatalf("disabling: %d %s", r.Status, r.Body)
	}
	waitFor(t, 10*time.Second, "the disabled device's session to end", func() bool { return !live.Connected() })
	h.mustRefuse(t, "a disabled device", h.mqtts, "x5self", second.tlsCertificate(), "disabled")
}

// TestX509CertificateAuthority: a CA registered with PUT /certificates is
// not trusted until verified by proof of possession (a certificate it
// signed whose CN is the verification code); then devices of type
// certificateAuthority connect with a certificate it issued (directly or
// through an intermediate) whose CN is their ID. Another CN, another CA,
// an expired certificate are refused, and removing the CA ends the
// sessions it authenticated.
func TestX509CertificateAuthority(t *testing.T) {
	h := startX509Hub(t)
	ca := newCert(t, certSpec{cn: "Fleet Root CA", ca: true}, nil)
	putCA := func(name, body string, header ...string) httpResp {
		t.Helper()
		return h.call(t, "PUT", "/certificates/"+name, body, append([]string{"Content-Type", "application/json"}, header...)...)
	}
	caBody := func(c *testCert, verified bool) string {
		b, _ := json.Marshal(map[string]any{"properties": map[string]any{"certificate": c.pem(), "isVerified": verified}})
		return string(b)
	}
	r := putCA("fleet", caBody(ca, false))
	if r.Status != 200 {
		t.Fatalf("PUT /certificates/fleet: %d %s", r.Status, r.Body)
	}
	desc := r.json(t)
	if get(desc, "name") != "fleet" || get(desc, "properties.isVerified") != false || get(desc, "properties.subject") != "Fleet Root CA" ||
		get(desc, "properties.thumbprint") != (&testCert{cert: ca.cert}).sha1Thumbprint() {
		t.Errorf("certificate description: %v", desc)
	}
	if r := h.putDevice(t, "x5ca", `{"authentication":{"type":"certificateAuthority"}}`, ""); r.Status != 200 {
		t.Fatalf("creating a certificateAuthority device: %d %s", r.Status, r.Body)
	}
	if doc := h.call(t, "GET", "/devices/x5ca", "").json(t); get(doc, "authentication.type") != "certificateAuthority" ||
		!sameJSON(t, get(doc, "authentication.x509Thumbprint"), `{"primaryThumbprint":null,"secondaryThumbprint":null}`) {
		t.Errorf("GET /devices/x5ca: %v", doc["authentication"])
	}
	leaf := newCert(t, certSpec{cn: "x5ca"}, ca)
	h.mustRefuse(t, "a certificate of an unverified CA", h.mqtts, "x5ca", leaf.tlsCertificate(), "certificate")

	// Proof of possession.
	if r := h.call(t, "POST", "/certificates/fleet/verify", `{"certificate":`+strconv.Quote(newCert(t, certSpec{cn: "x"}, ca).pem())+`}`); r.Status != 400 {
		t.Errorf("verify before generateVerificationCode: %d %s", r.Status, r.Body)
	}
	r = h.call(t, "POST", "/certificates/fleet/generateVerificationCode", "", "If-Match", strconv.Quote(get(desc, "etag").(string)))
	code, _ := get(r.json(t), "properties.verificationCode").(string)
	if r.Status != 200 || code == "" {
		t.Fatalf("generateVerificationCode: %d %s", r.Status, r.Body)
	}
	verify := func(proof *testCert) httpResp {
		return h.call(t, "POST", "/certificates/fleet/verify", `{"certificate":`+strconv.Quote(proof.pem())+`}`)
	}
	other := newCert(t, certSpec{cn: "Other CA", ca: true}, nil)
	for what, proof := range map[string]*testCert{
		"a proof with another CN":            newCert(t, certSpec{cn: "x5ca"}, ca),
		"a proof signed by another CA":       newCert(t, certSpec{cn: code}, other),
		"an expired proof":                   newCert(t, certSpec{cn: code, notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-time.Hour)}, ca),
		"a self-signed proof with the code":  newCert(t, certSpec{cn: code}, nil),
		"a proof signed by the device's key": newCert(t, certSpec{cn: code}, leaf),
	} {
		if r := verify(proof); r.Status != 400 || r.Header.Get("iothub-errorcode") != "ArgumentInvalid" {
			t.Errorf("%s: %d %s, want 400 ArgumentInvalid", what, r.Status, r.Body)
		}
	}
	if get(h.call(t, "GET", "/certificates/fleet", "").json(t), "properties.isVerified") != false {
		t.Fatal("a failed proof verified the CA")
	}
	if r := verify(newCert(t, certSpec{cn: code}, ca)); r.Status != 200 || get(r.json(t), "properties.isVerified") != true {
		t.Fatalf("verify: %d %s", r.Status, r.Body)
	}

	h.mustConnect(t, h.mqtts, "x5ca", leaf.tlsCertificate()).Close()
	h.mustConnect(t, h.wss, "x5ca", leaf.tlsCertificate()).Close()
	inter := newCert(t, certSpec{cn: "Fleet Issuing CA", ca: true}, ca)
	h.mustConnect(t, h.mqtts, "x5ca", newCert(t, certSpec{cn: "x5ca"}, inter).tlsCertificate(inter)).Close()

	h.mustRefuse(t, "a CN that is another device", h.mqtts, "x5ca", newCert(t, certSpec{cn: "x5other"}, ca).tlsCertificate(), "certificate")
	h.mustRefuse(t, "an unknown CA", h.mqtts, "x5ca", newCert(t, certSpec{cn: "x5ca"}, other).tlsCertificate(), "certificate")
	h.mustRefuse(t, "an expired certificate", h.mqtts, "x5ca",
		newCert(t, certSpec{cn: "x5ca", notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-time.Hour)}, ca).tlsCertificate(), "expired")
	// The CA's own certificate is no device certificate (CN, and no proof the
	// device is the CA's).
	h.mustRefuse(t, "the CA certificate itself", h.mqtts, "x5ca", ca.tlsCertificate(), "certificate")

	// Registered verified on upload by a caller with registry write rights.
	if r := putCA("other", caBody(other, true)); r.Status != 200 || get(r.json(t), "properties.isVerified") != true {
		t.Fatalf("PUT a verified CA: %d %s", r.Status, r.Body)
	}
	h.mustConnect(t, h.mqtts, "x5ca", newCert(t, certSpec{cn: "x5ca"}, other).tlsCertificate()).Close()
	if list := h.call(t, "GET", "/certificates", "").json(t); len(list["value"].([]any)) != 2 {
		t.Errorf("GET /certificates: %v", list)
	}

	// Removing the CA ends the sessions it authenticated and refuses them.
	live := h.mustConnect(t, h.mqtts, "x5ca", leaf.tlsCertificate())
	if r := h.call(t, "DELETE", "/certificates/fleet", ""); r.Status != 200 {
		t.Fatalf("DELETE /certificates/fleet: %d %s", r.Status, r.Body)
	}
	waitFor(t, 10*time.Second, "the session of the removed CA to end", func() bool {
		return strings.Contains(h.logs.String(), `reason=certificate_changed`) && !live.Connected()
	})
	h.mustRefuse(t, "a certificate of a removed CA", h.mqtts, "x5ca", leaf.tlsCertificate(), "certificate")
	if r := h.call(t, "GET", "/certificates/fleet", ""); r.Status != 404 {
		t.Errorf("GET a removed CA: %d %s", r.Status, r.Body)
	}
}

// TestX509BadInput: malformed registry input and CA certificate requests
// get 400 (or 404, 409, 412, 401) with IoT Hub's error body and change
// nothing.
func TestX509BadInput(t *testing.T) {
	h := startX509Hub(t)
	cert := newCert(t, certSpec{cn: "x5bad"}, nil)
	good := cert.sha1Thumbprint()
	for _, body := range []string{
		`{"authentication":{"type":"selfSigned"}}`,
		`{"authentication":{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":null,"secondaryThumbprint":"` + good + `"}}}`,
		selfSignedBody("not-a-thumbprint", ""),
		selfSignedBody(good[:39], ""),
		selfSignedBody(good+"00", ""),
		selfSignedBody(good, good),
		`{"authentication":{"type":"selfSigned","symmetricKey":{"primaryKey":"` + strings.Repeat("A", 44) + `"},"x509Thumbprint":{"primaryThumbprint":"` + good + `"}}}`,
		`{"authentication":{"type":"certificateAuthority","x509Thumbprint":{"primaryThumbprint":"` + good + `"}}}`,
		`{"authentication":{"type":"sas","x509Thumbprint":{"primaryThumbprint":"` + good + `"}}}`,
		`{"authentication":{"x509Thumbprint":{"primaryThumbprint":"` + good + `"}}}`,
		`{"authentication":{"type":"x509"}}`,
		`{"authentication":{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":42}}}`,
	} {
		r := h.putDevice(t, "x5bad", body, "")
		if r.Status != 400 || r.Header.Get("iothub-errorcode") != "ArgumentInvalid" || !strings.Contains(string(r.Body), `"Message":"ErrorCode:ArgumentInvalid;`) {
			t.Errorf("PUT %s: %d %s, want 400 ArgumentInvalid", body, r.Status, r.Body)
		}
	}
	if r := h.call(t, "GET", "/devices/x5bad", ""); r.Status != 404 {
		t.Errorf("a refused create made the device: %d %s", r.Status, r.Body)
	}

	// An update with bad input changes nothing.
	if r := h.putDevice(t, "x5bad", selfSignedBody(good, ""), ""); r.Status != 200 {
		t.Fatalf("creating x5bad: %d %s", r.Status, r.Body)
	}
	before := h.call(t, "GET", "/devices/x5bad", "").Body
	for _, body := range []string{selfSignedBody("zz", ""), `{"authentication":{"type":"selfSigned"}}`,
		`{"authentication":{"symmetricKey":{"primaryKey":"` + strings.Repeat("A", 44) + `"}}}`} {
		if r := h.putDevice(t, "x5bad", body, `"*"`); r.Status != 400 {
			t.Errorf("update %s: %d %s, want 400", body, r.Status, r.Body)
		}
	}
	if after := h.call(t, "GET", "/devices/x5bad", "").Body; string(after) != string(before) {
		t.Errorf("a refused update changed the device:\n%s\n%s", before, after)
	}
	h.mustConnect(t, h.mqtts, "x5bad", cert.tlsCertificate()).Close()

	// The CLI registers X.509 devices, and passes the registry's refusals on.
	if out, err := h.cli(t, "device", "create", "x5cli", "--auth-method", "x509_thumbprint", "--primary-thumbprint", good); err != nil ||
		!strings.Contains(out, `"type": "selfSigned"`) || !strings.Contains(out, good) {
		t.Errorf("device create --auth-method x509_thumbprint: %v\n%s", err, out)
	}
	if out, err := h.cli(t, "device", "create", "x5cli2", "--auth-method", "x509_ca"); err != nil || !strings.Contains(out, `"type": "certificateAuthority"`) {
		t.Errorf("device create --auth-method x509_ca: %v\n%s", err, out)
	}
	for _, args := range [][]string{
		{"--auth-method", "x509_thumbprint"},
		{"--auth-method", "x509_thumbprint", "--primary-thumbprint", "abc"},
		{"--auth-method", "certificate"},
		{"--primary-thumbprint", good},
	} {
		if out, err := h.cli(t, append([]string{"device", "create", "x5cli3"}, args...)...); err == nil {
			t.Errorf("device create %v: accepted\n%s", args, out)
		}
	}
	if out, err := h.cli(t, "device", "update", "x5cli", "--rotate-key", "both"); err == nil || !strings.Contains(err.Error(), "authenticates with its certificate") {
		t.Errorf("device update --rotate-key of a selfSigned device: %v\n%s", err, out)
	}
	if r := h.call(t, "GET", "/devices/x5cli3", ""); r.Status != 404 {
		t.Errorf("refused CLI creates made the device: %d", r.Status)
	}

	// CA certificates.
	ca := newCert(t, certSpec{cn: "Bad Input CA", ca: true}, nil)
	body := func(pemText string) string { return `{"properties":{"certificate":` + strconv.Quote(pemText) + `}}` }
	for what, c := range map[string]struct {
		method, path, body string
		status             int
		code               string
	}{
		"not PEM":              {"PUT", "/certificates/ca1", body("hello"), 400, "ArgumentInvalid"},
		"not a CA":             {"PUT", "/certificates/ca1", body(cert.pem()), 400, "ArgumentInvalid"},
		"no certificate":       {"PUT", "/certificates/ca1", `{"properties":{}}`, 400, "ArgumentInvalid"},
		"not JSON":             {"PUT", "/certificates/ca1", `{"properties":`, 400, "ArgumentInvalid"},
		"a bad name":           {"PUT", "/certificates/bad!name", body(ca.pem()), 400, "ArgumentInvalid"},
		"two certificates":     {"PUT", "/certificates/ca1", body(ca.pem() + cert.pem()), 400, "ArgumentInvalid"},
		"unknown, GET":         {"GET", "/certificates/nope", "", 404, "CertificateNotFound"},
		"unknown, verify code": {"POST", "/certificates/nope/generateVerificationCode", "", 404, "CertificateNotFound"},
		"unknown, DELETE":      {"DELETE", "/certificates/nope", "", 404, "CertificateNotFound"},
	} {
		r := h.call(t, c.method, c.path, c.body, "Content-Type", "application/json")
		if r.Status != c.status || r.Header.Get("iothub-errorcode") != c.code {
			t.Errorf("%s: %d %s, want %d %s", what, r.Status, r.Body, c.status, c.code)
		}
	}
	if list := h.call(t, "GET", "/certificates", "").json(t); len(list["value"].([]any)) != 0 {
		t.Errorf("refused requests stored CA certificates: %v", list)
	}
	r := h.call(t, "PUT", "/certificates/ca1", body(ca.pem()), "Content-Type", "application/json")
	if r.Status != 200 {
		t.Fatalf("PUT /certificates/ca1: %d %s", r.Status, r.Body)
	}
	etag := get(r.json(t), "etag").(string)
	if r := h.call(t, "PUT", "/certificates/ca1", body(ca.pem())); r.Status != 409 || r.Header.Get("iothub-errorcode") != "CertificateAlreadyExists" {
		t.Errorf("PUT an existing CA without If-Match: %d %s", r.Status, r.Body)
	}
	if r := h.call(t, "POST", "/certificates/ca1/generateVerificationCode", "", "If-Match", `"AAAAAAAAAAA="`); r.Status != 412 {
		t.Errorf("generateVerificationCode with a stale etag: %d %s", r.Status, r.Body)
	}
	// Registry read rights do not register or verify CAs.
	readTok := h.policyToken(t, "registryRead", "localhost")
	if r := h.call(t, "PUT", "/certificates/ca2", body(ca.pem()), "Authorization", readTok); r.Status != 401 {
		t.Errorf("PUT /certificates with registryRead: %d %s", r.Status, r.Body)
	}
	if r := h.call(t, "POST", "/certificates/ca1/generateVerificationCode", "", "Authorization", readTok); r.Status != 401 {
		t.Errorf("generateVerificationCode with registryRead: %d %s", r.Status, r.Body)
	}
	if r := h.call(t, "GET", "/certificates/ca1", "", "Authorization", readTok); r.Status != 200 || get(r.json(t), "etag") != etag {
		t.Errorf("GET /certificates/ca1 with registryRead: %d %s", r.Status, r.Body)
	}
}

// TestREADMEX509: the shell blocks of the README's Security section (X.509
// devices), run as written with bash in a directory laid out as the
// walkthrough's (./twinhub, ./data of a running hub), register a
// self-signed device and a verified CA with a device; both then connect
// with the certificates the blocks made.
func TestREADMEX509(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeShellBlocks(string(readme), "## Security")
	if len(blocks) != 2 {
		t.Fatalf("found %d shell blocks in the README's Security section, want 2", len(blocks))
	}
	script := []string{"set -euo pipefail"}
	for _, b := range blocks {
		script = append(script, b.lines...)
	}
	dir := t.TempDir()
	h := newX509Hub(t, startTwinhub(t, filepath.Join(dir, "data")))
	if err := os.Symlink(binary, filepath.Join(dir, "twinhub")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-c", strings.Join(script, "\n"))
	cmd.Dir = dir
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "TWINHUB_") }), "TWINHUB_SERVER="+h.HTTP)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the README's X.509 commands: %v\n%s", err, out)
	}
	for _, id := range []string{"thermo-1", "pump-7"} {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, id+".pem"), filepath.Join(dir, id+"-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		h.mustConnect(t, h.mqtts, id, pair).Close()
	}
}

// TestX509RevocationAcrossInstances: a CA registered through instance A
// authenticates a device on instance B (same NATS); removing the CA through
// A ends the device's session on B, and replacing a self-signed device's
// thumbprint through A ends its session on B.
func TestX509RevocationAcrossInstances(t *testing.T) {
	a := startTwinhub(t, "")
	b := newX509Hub(t, startTwinhub(t, "", "--nats-url", a.natsURL(t, embedded.InternalNATSUser)))
	ca := newCert(t, certSpec{cn: "Shared CA", ca: true}, nil)
	if r := a.call(t, "PUT", "/certificates/shared", `{"properties":{"certificate":`+strconv.Quote(ca.pem())+`,"isVerified":true}}`); r.Status != 200 {
		t.Fatalf("registering the CA through A: %d %s", r.Status, r.Body)
	}
	if r := a.call(t, "PUT", "/devices/x5shared", `{"authentication":{"type":"certificateAuthority"}}`); r.Status != 200 {
		t.Fatalf("creating x5shared through A: %d %s", r.Status, r.Body)
	}
	self := newCert(t, certSpec{cn: "x5sharedself"}, nil)
	if r := a.call(t, "PUT", "/devices/x5sharedself", selfSignedBody(self.sha1Thumbprint(), "")); r.Status != 200 {
		t.Fatalf("creating x5sharedself through A: %d %s", r.Status, r.Body)
	}
	leaf := newCert(t, certSpec{cn: "x5shared"}, ca)
	onCA := b.mustConnect(t, b.mqtts, "x5shared", leaf.tlsCertificate())
	onSelf := b.mustConnect(t, b.mqtts, "x5sharedself", self.tlsCertificate())

	if r := a.call(t, "DELETE", "/certificates/shared", ""); r.Status != 200 {
		t.Fatalf("removing the CA through A: %d %s", r.Status, r.Body)
	}
	waitFor(t, 10*time.Second, "the CA device's session on B to end", func() bool { return !onCA.Connected() })
	b.mustRefuse(t, "the removed CA on B", b.mqtts, "x5shared", leaf.tlsCertificate(), "certificate")

	if r := a.call(t, "PUT", "/devices/x5sharedself", selfSignedBody(newCert(t, certSpec{cn: "x"}, nil).sha1Thumbprint(), ""), "If-Match", `"*"`); r.Status != 200 {
		t.Fatalf("replacing the thumbprint through A: %d %s", r.Status, r.Body)
	}
	waitFor(t, 10*time.Second, "the self-signed device's session on B to end", func() bool { return !onSelf.Connected() })
	if v := b.metricValue(t, `twinhub_mqtt_sessions_revoked_total{reason="certificate_changed"}`); v != "2" {
		t.Errorf("B counted %q certificate_changed revocations, want 2", v)
	}
}
