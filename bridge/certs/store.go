package certs

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/pipeline/topology"
)

// Errors of the CA registry, for the HTTP status they map to.
var (
	// ErrNotFound: no CA certificate has the name.
	ErrNotFound = errors.New("no CA certificate with this name")
	// ErrExists: a CA certificate with the name exists and the request
	// did not say to replace it (If-Match).
	ErrExists = errors.New("a CA certificate with this name exists")
	// ErrEtag: If-Match names another version of the CA certificate.
	ErrEtag = errors.New("the etag does not match the CA certificate's")
	// ErrInvalid wraps a request the registry refuses (bad name, bad PEM,
	// not a CA, a failed proof of possession).
	ErrInvalid = errors.New("invalid")
)

// namePattern is what a CA certificate's name may be (as IoT Hub: letters,
// digits, '-', '_' and '.', up to 64 characters); it is also a legal KV
// key token.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// CA is a registered CA certificate, as stored (JSON) in the hub bucket.
type CA struct {
	Name string `json:"name"`
	// PEM is the certificate.
	PEM string `json:"certificate"`
	// Verified CAs authenticate devices; a new one is unverified until its
	// owner proves possession of its key (or the registering caller sets it).
	Verified bool `json:"isVerified"`
	// VerificationCode is the CN the proof-of-possession certificate must
	// carry; empty until generateVerificationCode.
	VerificationCode string    `json:"verificationCode,omitempty"`
	Created          time.Time `json:"created"`
	Updated          time.Time `json:"updated"`

	// revision is the KV revision the CA was read at; its etag.
	revision uint64
	cert     *x509.Certificate
}

// Etag is the CA's entity tag: base64 of its 8-byte big-endian revision.
func (c *CA) Etag() string {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, c.revision)
	return base64.StdEncoding.EncodeToString(b)
}

// Certificate is the parsed certificate.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// Store keeps the CA certificates in the hub bucket and a copy of them in
// memory, which Run keeps current from the bucket's changes.
type Store struct {
	kv  jetstream.KeyValue
	log *slog.Logger

	mu sync.Mutex
	// cas is the in-memory copy, by name.
	cas map[string]*CA
	// onChange runs after the copy changed (Run's goroutine), e.g. to
	// re-check sessions that a removed or replaced CA authenticated.
	onChange func()
	// lastReload is when VerifyDevice last read the bucket.
	lastReload time.Time
}

// NewStore returns a store on the hub bucket.
func NewStore(kv jetstream.KeyValue, log *slog.Logger) *Store {
	return &Store{kv: kv, log: log.With("component", "certificates"), cas: make(map[string]*CA)}
}

// OnChange sets what runs each time a CA is added, changed or removed on
// any instance; call it before Run.
func (s *Store) OnChange(f func()) { s.onChange = f }

// parseCA parses a PEM certificate (or its base64 DER, as IoT Hub also
// takes) that must be a CA certificate.
func parseCA(text string) (*x509.Certificate, string, error) {
	cert, pemText, err := parseCertificate(text)
	if err != nil {
		return nil, "", err
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, "", fmt.Errorf("%w: the certificate %q is not a CA certificate (basic constraints CA:TRUE)", ErrInvalid, cert.Subject.CommonName)
	}
	return cert, pemText, nil
}

// parseCertificate parses one certificate given as PEM or base64 DER and
// returns it with its PEM.
func parseCertificate(text string) (*x509.Certificate, string, error) {
	text = strings.TrimSpace(text)
	var der []byte
	if block, rest := pem.Decode([]byte(text)); block != nil {
		if block.Type != "CERTIFICATE" || len(strings.TrimSpace(string(rest))) != 0 {
			return nil, "", fmt.Errorf("%w: certificate must be one PEM CERTIFICATE block", ErrInvalid)
		}
		der = block.Bytes
	} else {
		b, err := base64.StdEncoding.DecodeString(text)
		if err != nil || len(b) == 0 {
			return nil, "", fmt.Errorf("%w: certificate must be a PEM CERTIFICATE block (or base64 DER)", ErrInvalid)
		}
		der = b
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, "", fmt.Errorf("%w: parsing the certificate: %v", ErrInvalid, err)
	}
	return cert, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), nil
}

func checkName(name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("%w: certificate name %q must be 1 to 64 letters, digits, '-', '_' or '.'", ErrInvalid, name)
	}
	return nil
}

// decode reads a stored CA.
func decode(e jetstream.KeyValueEntry) (*CA, error) {
	var c CA
	if err := json.Unmarshal(e.Value(), &c); err != nil {
		return nil, fmt.Errorf("CA certificate %s in KV: %w", e.Key(), err)
	}
	cert, _, err := parseCertificate(c.PEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate %s in KV: %w", e.Key(), err)
	}
	c.cert, c.revision = cert, e.Revision()
	return &c, nil
}

// Get reads a CA certificate from the bucket.
func (s *Store) Get(ctx context.Context, name string) (*CA, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	e, err := s.kv.Get(ctx, topology.CertificateKey(name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("reading CA certificate %s: %w", name, err)
	}
	return decode(e)
}

// List reads every CA certificate from the bucket.
func (s *Store) List(ctx context.Context) ([]*CA, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, topology.CertificateKeys)
	if err != nil {
		return nil, fmt.Errorf("listing CA certificates: %w", err)
	}
	var names []string
	for k := range lister.Keys() {
		names = append(names, k)
	}
	out := make([]*CA, 0, len(names))
	for _, k := range names {
		e, err := s.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // removed in between
		}
		if err != nil {
			return nil, fmt.Errorf("reading CA certificate %s: %w", k, err)
		}
		c, err := decode(e)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// matchEtag checks If-Match ("" or "*" match any) against c.
func matchEtag(c *CA, ifMatch string) error {
	want := strings.TrimPrefix(strings.TrimSpace(ifMatch), "W/")
	want = strings.Trim(want, `"`)
	if want == "" || want == "*" || want == c.Etag() {
		return nil
	}
	return ErrEtag
}

// Put registers a CA certificate under name, or replaces it when ifMatch
// is given (present: the caller sent If-Match). A new or replaced CA is
// unverified unless verified is true.
func (s *Store) Put(ctx context.Context, name, certificate string, verified, replace bool, ifMatch string, now time.Time) (*CA, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	cert, pemText, err := parseCA(certificate)
	if err != nil {
		return nil, err
	}
	now = now.UTC()
	c := &CA{Name: name, PEM: pemText, Verified: verified, Created: now, Updated: now, cert: cert}
	key := topology.CertificateKey(name)
	if !replace {
		b, _ := json.Marshal(c)
		rev, err := s.kv.Create(ctx, key, b)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return nil, ErrExists
		}
		if err != nil {
			return nil, fmt.Errorf("storing CA certificate %s: %w", name, err)
		}
		c.revision = rev
		s.changed(c)
		s.log.Info("registered a CA certificate", "name", name, "subject", cert.Subject.CommonName, "verified", verified)
		return c, nil
	}
	c, err = s.update(ctx, name, ifMatch, func(old *CA) error {
		old.PEM, old.cert, old.Verified, old.VerificationCode, old.Updated = pemText, cert, verified, "", now
		return nil
	})
	if err == nil {
		s.log.Info("replaced a CA certificate", "name", name, "subject", cert.Subject.CommonName, "verified", verified)
	}
	return c, err
}

// update reads a CA, checks ifMatch, changes it with f, and writes it back
// if nobody changed it in between.
func (s *Store) update(ctx context.Context, name, ifMatch string, f func(*CA) error) (*CA, error) {
	c, err := s.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := matchEtag(c, ifMatch); err != nil {
		return nil, err
	}
	if err := f(c); err != nil {
		return nil, err
	}
	b, _ := json.Marshal(c)
	rev, err := s.kv.Update(ctx, topology.CertificateKey(name), b, c.revision)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return nil, ErrEtag // changed since we read it
		}
		return nil, fmt.Errorf("storing CA certificate %s: %w", name, err)
	}
	c.revision = rev
	s.changed(c)
	return c, nil
}

// Delete removes a CA certificate; devices it authenticated are refused
// from then on (and their sessions end, see OnChange).
func (s *Store) Delete(ctx context.Context, name, ifMatch string) error {
	c, err := s.Get(ctx, name)
	if err != nil {
		return err
	}
	if err := matchEtag(c, ifMatch); err != nil {
		return err
	}
	if err := s.kv.Delete(ctx, topology.CertificateKey(name), jetstream.LastRevision(c.revision)); err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return ErrEtag
		}
		return fmt.Errorf("removing CA certificate %s: %w", name, err)
	}
	s.removed(name)
	s.log.Info("removed a CA certificate", "name", name)
	return nil
}

// GenerateVerificationCode gives the CA a new random verification code:
// the subject CN of the certificate Verify then expects.
func (s *Store) GenerateVerificationCode(ctx context.Context, name, ifMatch string, now time.Time) (*CA, error) {
	b := make([]byte, 24)
	rand.Read(b)
	code := strings.ToUpper(hex.EncodeToString(b))
	return s.update(ctx, name, ifMatch, func(c *CA) error {
		c.VerificationCode, c.Updated = code, now.UTC()
		return nil
	})
}

// Verify checks proof of possession of the CA's private key: certificate
// (PEM) must be signed by the CA, carry the CA's verification code as its
// subject CN, and be within its validity period. The CA is verified then.
func (s *Store) Verify(ctx context.Context, name, ifMatch, certificate string, now time.Time) (*CA, error) {
	proof, _, err := parseCertificate(certificate)
	if err != nil {
		return nil, err
	}
	c, err := s.update(ctx, name, ifMatch, func(c *CA) error {
		switch {
		case c.VerificationCode == "":
			return fmt.Errorf("%w: CA certificate %s has no verification code: POST /certificates/%s/generateVerificationCode first", ErrInvalid, name, name)
		case proof.Subject.CommonName != c.VerificationCode:
			return fmt.Errorf("%w: the verification certificate's CN must be the verification code %s, got %q", ErrInvalid, c.VerificationCode, proof.Subject.CommonName)
		case proof.CheckSignatureFrom(c.cert) != nil:
			return fmt.Errorf("%w: the verification certificate is not signed by CA certificate %s", ErrInvalid, name)
		}
		if err := withinValidity(proof, now); err != nil {
			return fmt.Errorf("%w: the verification certificate: %v", ErrInvalid, err)
		}
		c.Verified, c.VerificationCode, c.Updated = true, "", now.UTC()
		return nil
	})
	if err == nil {
		s.log.Info("verified a CA certificate by proof of possession", "name", name)
	}
	return c, err
}

// changed and removed update the in-memory copy after this instance's own
// writes, so a device of a CA registered here is accepted at once.
func (s *Store) changed(c *CA) {
	s.mu.Lock()
	if old, ok := s.cas[c.Name]; !ok || old.revision < c.revision {
		s.cas[c.Name] = c
	}
	s.mu.Unlock()
}

func (s *Store) removed(name string) {
	s.mu.Lock()
	delete(s.cas, name)
	s.mu.Unlock()
}

// verified returns the verified CAs of the in-memory copy.
func (s *Store) verified() []*CA {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*CA, 0, len(s.cas))
	for _, c := range s.cas {
		if c.Verified {
			out = append(out, c)
		}
	}
	return out
}

// Load reads the bucket's CAs into the in-memory copy; call it once before
// the store is used, then Run.
func (s *Store) Load(ctx context.Context) error { return s.reload(ctx) }

// reload replaces the in-memory copy with the bucket's CAs.
func (s *Store) reload(ctx context.Context) error {
	all, err := s.List(ctx)
	if err != nil {
		return err
	}
	m := make(map[string]*CA, len(all))
	for _, c := range all {
		m[c.Name] = c
	}
	s.mu.Lock()
	s.cas = m
	s.mu.Unlock()
	return nil
}

// VerifyDevice authenticates a CA-signed device by its certificate chain
// (leaf first, as the TLS handshake gave it): see the package doc. It
// returns the name of the CA the chain ends in and when the session it
// authenticates must end (the first expiry in the chain, CA included). A
// chain that does not verify against the in-memory copy is tried once
// more against the bucket (at most once a second), so a CA registered on
// another instance a moment ago, before Run saw it, is accepted.
func (s *Store) VerifyDevice(ctx context.Context, deviceID string, chain []*x509.Certificate, now time.Time) (string, time.Time, error) {
	name, until, err := s.verifyDevice(deviceID, chain, now)
	if errors.Is(err, ErrUntrusted) && s.mayReload() {
		if rerr := s.reload(ctx); rerr != nil {
			s.log.Warn("reading the CA certificates again failed", "err", rerr)
			return "", time.Time{}, err
		}
		name, until, err = s.verifyDevice(deviceID, chain, now)
	}
	return name, until, err
}

// mayReload reports whether a second has passed since the last reload
// VerifyDevice did, and if so counts this one: unknown certificates must
// not make every connection read the bucket.
func (s *Store) mayReload() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if time.Since(s.lastReload) < time.Second {
		return false
	}
	s.lastReload = time.Now()
	return true
}

func (s *Store) verifyDevice(deviceID string, chain []*x509.Certificate, now time.Time) (string, time.Time, error) {
	cas := s.verified()
	roots := make([]*x509.Certificate, len(cas))
	for i, c := range cas {
		roots[i] = c.cert
	}
	root, err := verifyChain(deviceID, chain, roots, now)
	if err != nil {
		return "", time.Time{}, err
	}
	until := NotAfter(chain)
	if root.NotAfter.Before(until) {
		until = root.NotAfter
	}
	for _, c := range cas {
		if c.cert.Equal(root) {
			return c.Name, until, nil
		}
	}
	panic("BUG: a chain verified to a root that is not a registered CA")
}

// Run keeps the in-memory copy current with the bucket until ctx ends,
// calling OnChange's function after each change (another instance's too).
func (s *Store) Run(ctx context.Context) error {
	w, err := s.kv.Watch(ctx, topology.CertificateKeys)
	if err != nil {
		return fmt.Errorf("watching the CA certificates in KV bucket %s: %w", topology.HubBucket, err)
	}
	defer w.Stop()
	initial := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil {
				initial = false // the bucket's current CAs have all arrived
				continue
			}
			name := strings.TrimPrefix(e.Key(), topology.CertificateKey(""))
			if e.Operation() != jetstream.KeyValuePut {
				s.mu.Lock()
				delete(s.cas, name)
				s.mu.Unlock()
			} else if c, err := decode(e); err != nil {
				s.log.Error("ignoring an unreadable CA certificate", "name", name, "err", err)
				continue
			} else {
				s.mu.Lock()
				if old, ok := s.cas[name]; !ok || old.revision <= c.revision {
					s.cas[name] = c
				}
				s.mu.Unlock()
			}
			// A removal among the initial values happened after Load: the
			// sessions it authenticated must be checked too.
			if (!initial || e.Operation() != jetstream.KeyValuePut) && s.onChange != nil {
				s.onChange()
			}
		}
	}
}
