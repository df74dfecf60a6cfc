package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/deploy/natstest"
)

var now = time.Now()

type issued struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// issue makes a certificate for cn signed by parent (self-signed if nil),
// valid from nb to na; eku nil means none (any usage).
func issue(t *testing.T, cn string, ca bool, parent *issued, nb, na time.Time, eku []x509.ExtKeyUsage) *issued {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, NotBefore: nb, NotAfter: na,
		ExtKeyUsage: eku, KeyUsage: x509.KeyUsageDigitalSignature}
	if ca {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &issued{cert: c, key: key}
}

func valid(t *testing.T, cn string, ca bool, parent *issued) *issued {
	return issue(t, cn, ca, parent, now.Add(-time.Hour), now.Add(time.Hour), nil)
}

func (i *issued) pem() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: i.cert.Raw}))
}

// TestCheckThumbprint: the SHA-1 or SHA-256 thumbprint must be registered
// and the certificate valid now.
func TestCheckThumbprint(t *testing.T) {
	c := valid(t, "d", false, nil)
	s1, s256 := Thumbprints(c.cert)
	expired := issue(t, "d", false, nil, now.Add(-2*time.Hour), now.Add(-time.Hour), nil)
	e1, _ := Thumbprints(expired.cert)
	future := issue(t, "d", false, nil, now.Add(time.Hour), now.Add(2*time.Hour), nil)
	f1, _ := Thumbprints(future.cert)
	for _, tc := range []struct {
		name       string
		cert       *x509.Certificate
		registered []string
		want       error
	}{
		{"sha1 primary", c.cert, []string{s1}, nil},
		{"sha256 secondary", c.cert, []string{"", s256}, nil},
		{"another certificate's", c.cert, []string{e1}, ErrThumbprint},
		{"none registered", c.cert, nil, ErrThumbprint},
		{"expired", expired.cert, []string{e1}, ErrValidity},
		{"not yet valid", future.cert, []string{f1}, ErrValidity},
		{"no certificate", nil, []string{s1}, ErrNoCertificate},
	} {
		if err := CheckThumbprint(tc.cert, tc.registered, now); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestVerifyChain: a device certificate chains (directly or through the
// intermediates it sent) to a registered root, has the device ID as CN,
// is valid now, and allows client authentication if it says what it is for.
func TestVerifyChain(t *testing.T) {
	root := valid(t, "root", true, nil)
	other := valid(t, "other", true, nil)
	inter := valid(t, "inter", true, root)
	leaf := valid(t, "dev", false, root)
	roots := []*x509.Certificate{other.cert, root.cert}
	for _, tc := range []struct {
		name  string
		chain []*x509.Certificate
		want  error
	}{
		{"issued by the root", []*x509.Certificate{leaf.cert}, nil},
		{"through an intermediate", []*x509.Certificate{valid(t, "dev", false, inter).cert, inter.cert}, nil},
		{"client auth usage", []*x509.Certificate{issue(t, "dev", false, root, now.Add(-time.Hour), now.Add(time.Hour), []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}).cert}, nil},
		{"server auth only", []*x509.Certificate{issue(t, "dev", false, root, now.Add(-time.Hour), now.Add(time.Hour), []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}).cert}, ErrUntrusted},
		{"intermediate not sent", []*x509.Certificate{valid(t, "dev", false, inter).cert}, ErrUntrusted},
		{"another CN", []*x509.Certificate{valid(t, "dev2", false, root).cert}, ErrCommonName},
		{"an unregistered CA", []*x509.Certificate{valid(t, "dev", false, valid(t, "x", true, nil)).cert}, ErrUntrusted},
		{"self-signed", []*x509.Certificate{valid(t, "dev", false, nil).cert}, ErrUntrusted},
		{"signed by a non-CA", []*x509.Certificate{valid(t, "dev", false, leaf).cert, leaf.cert}, ErrUntrusted},
		{"expired", []*x509.Certificate{issue(t, "dev", false, root, now.Add(-2*time.Hour), now.Add(-time.Hour), nil).cert}, ErrValidity},
		{"expired intermediate", []*x509.Certificate{valid(t, "dev", false, inter).cert,
			issue(t, "inter", true, root, now.Add(-2*time.Hour), now.Add(-time.Hour), nil).cert}, ErrValidity},
		{"empty", nil, ErrNoCertificate},
	} {
		got, err := verifyChain("dev", tc.chain, roots, now)
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
			continue
		}
		if err == nil && !got.Equal(root.cert) {
			t.Errorf("%s: chained to %s, want root", tc.name, got.Subject.CommonName)
		}
	}
}

func bucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(natstest.StartStandalone(t).Connect())
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: "hub"})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestStoreInstances: a CA registered and verified through one store (an
// instance) authenticates devices on another store on the same bucket;
// concurrent changes with the same etag let one win; removing the CA on
// the first refuses the device on the second and tells it (OnChange).
func TestStoreInstances(t *testing.T) {
	kv := bucket(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := NewStore(kv, slog.Default()), NewStore(kv, slog.Default())
	var changes atomic.Int32
	b.OnChange(func() { changes.Add(1) })
	for _, s := range []*Store{a, b} {
		if err := s.Load(ctx); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	// Ends when ctx is cancelled.
	go func() { done <- b.Run(ctx) }()

	root := valid(t, "Fleet", true, nil)
	device := []*x509.Certificate{valid(t, "dev", false, root).cert}
	ca, err := a.Put(ctx, "fleet", root.pem(), false, false, "", now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Put(ctx, "fleet", root.pem(), false, false, "", now); !errors.Is(err, ErrExists) {
		t.Errorf("a second create: %v", err)
	}
	if _, _, err := b.VerifyDevice(ctx, "dev", device, now); !errors.Is(err, ErrUntrusted) {
		t.Errorf("an unverified CA authenticated a device: %v", err)
	}
	withCode, err := a.GenerateVerificationCode(ctx, "fleet", ca.Etag(), now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.GenerateVerificationCode(ctx, "fleet", ca.Etag(), now); !errors.Is(err, ErrEtag) {
		t.Errorf("a change with a stale etag: %v", err)
	}
	proof := valid(t, withCode.VerificationCode, false, root)
	if _, err := a.Verify(ctx, "fleet", "", proof.pem(), now); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Verify(ctx, "fleet", "", proof.pem(), now); !errors.Is(err, ErrInvalid) {
		t.Errorf("a proof used twice: %v", err)
	}
	// b learns of the verified CA from the bucket (its Run, or the reload
	// VerifyDevice does once a second).
	deadline := time.Now().Add(10 * time.Second)
	for {
		name, until, err := b.VerifyDevice(ctx, "dev", device, now)
		if err == nil {
			if name != "fleet" || !until.Equal(device[0].NotAfter) {
				t.Errorf("VerifyDevice: %q until %s", name, until)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the other instance never trusted the verified CA: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	before := changes.Load()
	if err := a.Delete(ctx, "fleet", ""); err != nil {
		t.Fatal(err)
	}
	for changes.Load() == before {
		if time.Now().After(deadline) {
			t.Fatal("the other instance was not told of the removal")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, _, err := b.verifyDevice("dev", device, now); !errors.Is(err, ErrUntrusted) {
		t.Errorf("after the removal: %v", err)
	}
	if _, err := a.Get(ctx, "fleet"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after Delete: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}
