// Package certs authenticates X.509 devices as IoT Hub does, and keeps the
// hub's CA certificates.
//
// A self-signed device (authentication type "selfSigned") presents a
// client certificate whose SHA-1 or SHA-256 thumbprint is one of the two
// registered with it (CheckThumbprint). A CA-signed device
// ("certificateAuthority") presents a certificate whose chain verifies to
// a verified CA registered under /certificates and whose subject CN is its
// device ID (Store.VerifyDevice). Either certificate must be within its
// validity period, and a CA-signed chain must allow client authentication.
//
// CA certificates live in NATS, in the hub bucket (topology.HubBucket,
// keys topology.CertificateKey), so every instance on the same NATS
// accepts the same CAs. A CA is registered unverified, and becomes
// verified by proof of possession of its key (IoT Hub's
// generateVerificationCode and verify: a certificate signed by the CA
// whose CN is the code the hub chose), or at registration by a caller
// with registry write rights that sets isVerified. Only verified CAs
// authenticate devices.
package certs

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Errors of device authentication, for the refusal's reason.
var (
	// ErrNoCertificate: the connection presented no client certificate.
	ErrNoCertificate = errors.New("no client certificate")
	// ErrValidity: the certificate (or one in its chain) is expired or not yet valid.
	ErrValidity = errors.New("the certificate is outside its validity period")
	// ErrThumbprint: the certificate's thumbprint is not one registered for the device.
	ErrThumbprint = errors.New("the certificate's thumbprint is not registered for the device")
	// ErrCommonName: a CA-signed certificate's subject CN is not the device ID.
	ErrCommonName = errors.New("the certificate's subject CN is not the device ID")
	// ErrUntrusted: the chain does not verify to a verified registered CA.
	ErrUntrusted = errors.New("the certificate does not chain to a verified CA registered with the hub")
)

// Thumbprints returns a certificate's SHA-1 and SHA-256 thumbprints, the
// hex digests of its DER encoding in upper case (IoT Hub's thumbprint is
// the SHA-1 one).
func Thumbprints(cert *x509.Certificate) (sha1Hex, sha256Hex string) {
	s1 := sha1.Sum(cert.Raw)
	s256 := sha256.Sum256(cert.Raw)
	return strings.ToUpper(hex.EncodeToString(s1[:])), strings.ToUpper(hex.EncodeToString(s256[:]))
}

// withinValidity reports ErrValidity when now is outside cert's validity.
func withinValidity(cert *x509.Certificate, now time.Time) error {
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return fmt.Errorf("%w (valid from %s to %s)", ErrValidity, cert.NotBefore.UTC().Format(time.RFC3339), cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// CheckThumbprint authenticates a self-signed device: the leaf
// certificate is within its validity period at now and its SHA-1 or
// SHA-256 thumbprint equals one of registered (upper-case hex, as
// pipeline.NormalizeThumbprint gives).
func CheckThumbprint(leaf *x509.Certificate, registered []string, now time.Time) error {
	if leaf == nil {
		return ErrNoCertificate
	}
	if err := withinValidity(leaf, now); err != nil {
		return err
	}
	s1, s256 := Thumbprints(leaf)
	for _, r := range registered {
		if r != "" && (r == s1 || r == s256) {
			return nil
		}
	}
	return ErrThumbprint
}

// verifyChain authenticates a CA-signed device against roots: the leaf's
// CN is deviceID, and the chain (leaf, then the intermediates the device
// sent) verifies to one of roots at now, for client authentication. It
// returns the root the chain ends in.
func verifyChain(deviceID string, chain []*x509.Certificate, roots []*x509.Certificate, now time.Time) (*x509.Certificate, error) {
	if len(chain) == 0 {
		return nil, ErrNoCertificate
	}
	leaf := chain[0]
	if leaf.Subject.CommonName != deviceID {
		return nil, fmt.Errorf("%w (CN %q)", ErrCommonName, leaf.Subject.CommonName)
	}
	for _, c := range chain {
		if err := withinValidity(c, now); err != nil {
			return nil, err
		}
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.Expired {
			return nil, fmt.Errorf("%w: %v", ErrValidity, err)
		}
		return nil, fmt.Errorf("%w: %v", ErrUntrusted, err)
	}
	c := chains[0]
	return c[len(c)-1], nil
}

// NotAfter is when the first certificate of chain expires: a session
// authenticated by chain lasts until then.
func NotAfter(chain []*x509.Certificate) time.Time {
	var t time.Time
	for i, c := range chain {
		if i == 0 || c.NotAfter.Before(t) {
			t = c.NotAfter
		}
	}
	return t
}
