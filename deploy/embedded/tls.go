package embedded

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// TLSFiles are the certificate files twinhub serves TLS with.
type TLSFiles struct {
	// CA is the local CA's certificate, for clients to trust (empty when the
	// user supplied the certificate).
	CA        string
	Cert, Key string
	Generated bool // the server certificate was (re)generated now
	Names     []string
}

// LocalTLS returns the server certificate in dir/tls, creating a local CA
// once and a server certificate for localhost, 127.0.0.1, ::1 and names,
// signed by it. The server certificate is issued again when names change.
func LocalTLS(dir string, names []string) (TLSFiles, error) {
	tdir := filepath.Join(dir, "tls")
	if err := os.MkdirAll(tdir, 0o700); err != nil {
		return TLSFiles{}, err
	}
	f := TLSFiles{
		CA:   filepath.Join(tdir, "ca.pem"),
		Cert: filepath.Join(tdir, "server.pem"),
		Key:  filepath.Join(tdir, "server-key.pem"),
	}
	caKeyPath := filepath.Join(tdir, "ca-key.pem")
	caCert, caKey, err := loadPair(f.CA, caKeyPath)
	if errors.Is(err, os.ErrNotExist) {
		caCert, caKey, err = issue(nil, nil, "twinhub local CA", nil, f.CA, caKeyPath)
	}
	if err != nil {
		return TLSFiles{}, fmt.Errorf("local CA in %s: %w", tdir, err)
	}
	want := append([]string{"localhost", "127.0.0.1", "::1"}, names...)
	slices.Sort(want)
	want = slices.Compact(want)
	f.Names = want
	if cert, _, err := loadPair(f.Cert, f.Key); err == nil && covers(cert, want) && cert.NotAfter.After(time.Now().Add(24*time.Hour)) {
		return f, nil
	}
	if _, _, err := issue(caCert, caKey, "twinhub", want, f.Cert, f.Key); err != nil {
		return TLSFiles{}, fmt.Errorf("server certificate in %s: %w", tdir, err)
	}
	f.Generated = true
	return f, nil
}

// ServerConfig loads a certificate pair into a TLS configuration.
//
// It asks clients for a certificate without requiring one: X.509 devices
// authenticate with it (the MQTT hook checks it against the registry; the
// handshake has proven the client holds its key), everyone else connects
// without. tls.VerifyClientCertIfGiven would refuse self-signed device
// certificates, which chain to no CA, in the handshake.
func ServerConfig(certFile, keyFile string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading TLS certificate %s: %w", certFile, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert}, nil
}

func covers(cert *x509.Certificate, names []string) bool {
	for _, n := range names {
		if cert.VerifyHostname(n) != nil {
			return false
		}
	}
	return true
}

func loadPair(certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	cb, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, err
	}
	kb, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	cblock, _ := pem.Decode(cb)
	kblock, _ := pem.Decode(kb)
	if cblock == nil || kblock == nil {
		return nil, nil, fmt.Errorf("%s or %s is not PEM", certPath, keyPath)
	}
	cert, err := x509.ParseCertificate(cblock.Bytes)
	if err != nil {
		return nil, nil, err
	}
	key, err := x509.ParseECPrivateKey(kblock.Bytes)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// issue creates a key and a certificate: a CA when parent is nil, else a
// server certificate for names signed by parent.
func issue(parent *x509.Certificate, parentKey *ecdsa.PrivateKey, cn string, names []string, certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"twinhub"}},
		NotBefore:    time.Now().Add(-time.Hour),
	}
	if parent == nil {
		tmpl.NotAfter = time.Now().AddDate(10, 0, 0)
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
		parent, parentKey = tmpl, key
	} else {
		tmpl.NotAfter = time.Now().AddDate(1, 0, 0)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		for _, n := range names {
			if ip := net.ParseIP(n); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, n)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}
