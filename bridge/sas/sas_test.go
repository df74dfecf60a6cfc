package sas

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The Node SDK's token for key "AAAA…" is reproduced by New: same sr
// encoding, field order sr, sig, se, skn.
func TestNewAndVerify(t *testing.T) {
	key := NewKey()
	exp := time.Now().Add(time.Hour)
	tok, err := New(DeviceResource("localhost", "myDeviceId"), key, "", exp)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "SharedAccessSignature sr=localhost%2Fdevices%2FmyDeviceId&sig=") {
		t.Errorf("token %q", tok)
	}
	p, err := Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(time.Now(), NewKey(), key); err != nil {
		t.Errorf("verify with the right key among others: %v", err)
	}
	if err := p.Verify(time.Now(), NewKey()); !errors.Is(err, ErrSignature) {
		t.Errorf("verify with a wrong key: %v", err)
	}
	if err := p.Verify(exp.Add(time.Second)); !errors.Is(err, ErrExpired) {
		t.Errorf("verify after expiry: %v", err)
	}
}

// A token whose sr is lower-case encoded (the docs' samples) verifies over
// sr exactly as written.
func TestVerifyUsesResourceAsWritten(t *testing.T) {
	key := NewKey()
	tok, _ := New("localhost%2fdevices%2fd1", key, "", time.Now().Add(time.Hour))
	p, err := Parse(tok)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(time.Now(), key); err != nil {
		t.Fatal(err)
	}
	if err := p.ForDevice(HubNames(), "d1"); err != nil {
		t.Fatal(err)
	}
	// Re-encoding sr changes the signed text: it must no longer verify.
	forged := strings.Replace(tok, "%2f", "%2F", -1)
	if q, _ := Parse(forged); q.Verify(time.Now(), key) == nil {
		t.Errorf("a token whose sr was re-encoded still verified")
	}
}

func TestParseErrors(t *testing.T) {
	for _, s := range []string{
		"", "Bearer x", "SharedAccessSignature ", "SharedAccessSignature sr=a&se=1",
		"SharedAccessSignature sr=a&sig=%%%&se=100", "SharedAccessSignature sr=a&sig=AAAA&se=soon",
		"SharedAccessSignature sr=a&sig=!!!!&se=100", "SharedAccessSignature novalue",
	} {
		if _, err := Parse(s); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%q) = %v, want ErrMalformed", s, err)
		}
	}
}

func TestPolicies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "policies.json")
	ps, created, err := OpenPolicies(path)
	if err != nil || !created {
		t.Fatalf("OpenPolicies: %v created=%v", err, created)
	}
	if info, _ := os.Stat(path); info.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", info.Mode().Perm())
	}
	again, created, err := OpenPolicies(path)
	if err != nil || created {
		t.Fatalf("reopen: %v created=%v", err, created)
	}
	owner, _ := ps.Get(OwnerPolicy)
	owner2, _ := again.Get(OwnerPolicy)
	if owner.PrimaryKey != owner2.PrimaryKey {
		t.Errorf("keys changed on reopen")
	}
	for _, d := range DefaultPolicies {
		p, ok := ps.Get(d.Name)
		if !ok {
			t.Fatalf("missing policy %s", d.Name)
		}
		tok, _ := New("localhost", p.SecondaryKey, p.Name, time.Now().Add(time.Minute))
		got, err := ps.Authenticate(tok, time.Now())
		if err != nil || got.Name != d.Name {
			t.Errorf("%s: %v", d.Name, err)
		}
	}
	rr, _ := ps.Get("registryReadWrite")
	if !rr.Has(RegistryRead) || rr.Has(ServiceConnect) {
		t.Errorf("registryReadWrite rights wrong")
	}
	tok, _ := New("localhost", owner.PrimaryKey, "", time.Now().Add(time.Minute))
	if _, err := ps.Authenticate(tok, time.Now()); !errors.Is(err, ErrMalformed) {
		t.Errorf("a token without skn: %v", err)
	}
	os.Chmod(path, 0o644)
	if _, _, err := OpenPolicies(path); err == nil {
		t.Errorf("a world-readable policy file was accepted")
	}
}

func TestConnectionString(t *testing.T) {
	s := "HostName=localhost;DeviceId=d1;SharedAccessKey=" + NewKey() + ";GatewayHostName=localhost:8884"
	c, err := ParseConnectionString(s)
	if err != nil || c.String() != s {
		t.Fatalf("round trip: %v %q", err, c.String())
	}
	if _, err := ParseConnectionString("DeviceId=x"); err == nil {
		t.Error("accepted a connection string without HostName")
	}
}

// FuzzParse: parsing any string never panics, and a parsed token's
// signature never verifies against a fresh random key.
func FuzzParse(f *testing.F) {
	f.Add("SharedAccessSignature sr=localhost%2Fdevices%2Fd&sig=AAAA&se=99999999999&skn=x")
	f.Add("SharedAccessSignature sr=&sig=&se=")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := Parse(s)
		if err != nil {
			return
		}
		if tok.Verify(time.Unix(0, 0), NewKey()) == nil {
			t.Fatalf("%q verified with a random key", s)
		}
		_ = tok.ForDevice(HubNames(), "d")
	})
}
