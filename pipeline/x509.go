package pipeline

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Authentication types of a device identity, as IoT Hub names them.
const (
	// AuthSAS: the device signs SAS tokens with one of its symmetric keys.
	AuthSAS = "sas"
	// AuthSelfSigned: the device presents an X.509 certificate whose
	// thumbprint is one of the two registered with it.
	AuthSelfSigned = "selfSigned"
	// AuthCertificateAuthority: the device presents an X.509 certificate
	// issued (directly or through intermediates) by a verified CA
	// registered with the hub, whose subject CN is the device ID.
	AuthCertificateAuthority = "certificateAuthority"
)

// AuthType returns the identity's authentication type: AuthSAS,
// AuthSelfSigned or AuthCertificateAuthority.
func (id Identity) AuthType() string {
	if id.Authentication == "" {
		return AuthSAS
	}
	return id.Authentication
}

// Thumbprints returns the registered certificate thumbprints of a
// self-signed device (upper-case hex; empty ones left out).
func (id Identity) Thumbprints() []string {
	var out []string
	for _, t := range []string{id.PrimaryThumbprint, id.SecondaryThumbprint} {
		if t != "" {
			out = append(out, t)
		}
	}
	return out
}

// NormalizeThumbprint checks a certificate thumbprint, the hex SHA-1 (40
// digits, as IoT Hub) or SHA-256 (64 digits) of the certificate's DER, and
// returns it in upper case. Colons between byte pairs are accepted and
// dropped.
func NormalizeThumbprint(s string) (string, error) {
	t := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
	if _, err := hex.DecodeString(t); err != nil || (len(t) != 40 && len(t) != 64) {
		return "", fmt.Errorf("thumbprint %q is not a certificate thumbprint: give the SHA-1 (40 hex digits) or SHA-256 (64 hex digits) of the certificate", s)
	}
	return t, nil
}

// checkAuthentication validates the body's authentication section against
// the type it asks for (current: the device's type now, AuthSAS for a new
// device) and normalizes its thumbprints. A SAS device may not carry
// thumbprints; an X.509 device may not carry keys; a self-signed one needs
// its primary thumbprint, and the two thumbprints must differ.
func (a *Authentication) check(current string) error {
	typ := a.Type
	if typ == "" {
		typ = current
	}
	th := &a.X509Thumbprint
	for _, p := range []**string{&th.PrimaryThumbprint, &th.SecondaryThumbprint} {
		if *p == nil || **p == "" {
			*p = nil
			continue
		}
		t, err := NormalizeThumbprint(**p)
		if err != nil {
			return err
		}
		*p = &t
	}
	hasKeys := a.SymmetricKey != nil && (a.SymmetricKey.PrimaryKey != "" || a.SymmetricKey.SecondaryKey != "")
	hasPrints := th.PrimaryThumbprint != nil || th.SecondaryThumbprint != nil
	switch typ {
	case AuthSAS:
		if hasPrints {
			return errors.New(`x509Thumbprint is for authentication type "selfSigned"; a "sas" device authenticates with its symmetric keys`)
		}
	case AuthSelfSigned:
		if hasKeys {
			return errors.New(`a "selfSigned" device authenticates with its certificate: leave symmetricKey out`)
		}
		if th.PrimaryThumbprint == nil {
			return errors.New(`authentication type "selfSigned" needs x509Thumbprint.primaryThumbprint, the SHA-1 (or SHA-256) hex thumbprint of the device's certificate`)
		}
		if th.SecondaryThumbprint != nil && *th.SecondaryThumbprint == *th.PrimaryThumbprint {
			return errors.New("the primary and secondary thumbprints must differ")
		}
	case AuthCertificateAuthority:
		if hasKeys || hasPrints {
			return errors.New(`a "certificateAuthority" device authenticates with a certificate from a verified CA (/certificates) whose CN is its device ID: leave symmetricKey and x509Thumbprint out`)
		}
	default:
		return fmt.Errorf(`authentication type %q is not supported; use "sas", "selfSigned" or "certificateAuthority"`, a.Type)
	}
	return nil
}

// applyAuthentication sets the identity's credentials from the body (which
// parseDeviceBody checked). Without an authentication section nothing
// changes. A SAS device keeps a key the body leaves empty, and gets new keys
// when it was an X.509 device; an X.509 device has no keys, and a
// self-signed one exactly the thumbprints the body gives.
func (b deviceBody) applyAuthentication(rec *Record) {
	a := b.Authentication
	if a == nil {
		return
	}
	id := &rec.Identity
	typ := a.Type
	if typ == "" {
		typ = id.AuthType()
	}
	wasSAS := id.AuthType() == AuthSAS
	id.PrimaryThumbprint, id.SecondaryThumbprint = "", ""
	switch typ {
	case AuthSAS:
		id.Authentication = ""
		if !wasSAS {
			id.PrimaryKey, id.SecondaryKey = newKey(), newKey()
		}
		b.applyKeys(id)
	default:
		id.Authentication = typ
		id.PrimaryKey, id.SecondaryKey = "", ""
		if p := a.X509Thumbprint.PrimaryThumbprint; p != nil {
			id.PrimaryThumbprint = *p
		}
		if s := a.X509Thumbprint.SecondaryThumbprint; s != nil {
			id.SecondaryThumbprint = *s
		}
	}
	if rec.Twin != nil {
		rec.Twin.AuthenticationType = id.AuthType()
		rec.Twin.X509PrimaryThumbprint, rec.Twin.X509SecondaryThumbprint = id.PrimaryThumbprint, id.SecondaryThumbprint
	}
}

// authentication renders the identity's credentials in the registry shape.
func (id Identity) authentication() *Authentication {
	a := &Authentication{Type: id.AuthType(), SymmetricKey: &SymmetricKey{PrimaryKey: id.PrimaryKey, SecondaryKey: id.SecondaryKey}}
	if t := id.PrimaryThumbprint; t != "" {
		a.X509Thumbprint.PrimaryThumbprint = &t
	}
	if t := id.SecondaryThumbprint; t != "" {
		a.X509Thumbprint.SecondaryThumbprint = &t
	}
	return a
}
