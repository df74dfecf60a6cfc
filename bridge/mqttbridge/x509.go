package mqttbridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/twinhub/twinhub/bridge/certs"
	"github.com/twinhub/twinhub/pipeline"
)

// X.509 devices. A device that connects over TLS (MQTTS, or MQTT over
// WebSockets on the HTTPS listener) with a client certificate and no
// password is authenticated by the certificate, as IoT Hub does: a
// "selfSigned" device when the certificate's thumbprint is one registered
// with it, a "certificateAuthority" device when the chain verifies to a
// verified registered CA and the leaf's CN is the device ID (package
// certs). The listeners ask for a certificate without requiring one, so SAS
// devices connect as before. An X.509 device cannot connect with a SAS
// token (not even a policy's), and a SAS device cannot connect with a
// certificate.
//
// A certificate session ends when its certificate (or, for a CA-signed
// one, any certificate of its chain, the CA included) expires, when the
// device is disabled, deleted or its thumbprints or authentication type
// change (registry notices, as for SAS devices), and when the CA it chains
// to is removed or replaced on any instance (CertificateChanged).

// CertificateAuthorities verifies CA-signed devices' certificate chains
// against the hub's verified CAs; *certs.Store implements it.
type CertificateAuthorities interface {
	VerifyDevice(ctx context.Context, deviceID string, chain []*x509.Certificate, now time.Time) (ca string, until time.Time, err error)
}

var _ CertificateAuthorities = (*certs.Store)(nil)

// Refusal reasons (twinhub_mqtt_auth_failures_total) of certificate devices.
const (
	failAuthType    = "auth_type"   // SAS token for an X.509 device, or a certificate for a SAS device
	failThumbprint  = "thumbprint"  // the certificate's thumbprint is not registered
	failCertificate = "certificate" // the chain does not verify to a verified CA, or its CN is not the device
)

// Revocation reasons (twinhub_mqtt_sessions_revoked_total) of certificate sessions.
const (
	revokedCertificate = "certificate_changed" // thumbprint, type or CA no longer accepts the certificate
)

// certAuth is what authenticating a certificate session found, kept from
// OnConnectAuthenticate until the session starts (track).
type certAuth struct {
	chain []*x509.Certificate
	ca    bool      // authenticated by a CA, not by a thumbprint
	until time.Time // when a certificate of the chain expires
	at    time.Time // when it was authenticated
}

// certPending holds certAuths by client until track takes them; entries
// of connections that never became sessions are pruned after a minute.
type certPending struct {
	mu sync.Mutex
	m  map[*mqtt.Client]certAuth
}

func (p *certPending) put(cl *mqtt.Client, c certAuth) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = make(map[*mqtt.Client]certAuth)
	}
	if len(p.m) >= 1024 {
		for k, v := range p.m {
			if time.Since(v.at) > time.Minute {
				delete(p.m, k)
			}
		}
	}
	p.m[cl] = c
}

func (p *certPending) take(cl *mqtt.Client) (certAuth, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c, ok := p.m[cl]
	delete(p.m, cl)
	return c, ok
}

// SetCertificateAuthorities gives the hook the hub's CA registry; without
// it, "certificateAuthority" devices are refused.
func (a *Auth) SetCertificateAuthorities(cas CertificateAuthorities) { a.cas = cas }

// peerCertificates returns the client certificate chain a TLS connection
// presented (leaf first), or nil.
func peerCertificates(conn net.Conn) []*x509.Certificate {
	if c, ok := conn.(interface{ ConnectionState() tls.ConnectionState }); ok {
		return c.ConnectionState().PeerCertificates
	}
	return nil
}

// checkCertificate authenticates chain as the device rec is. It returns
// "" and the authentication's details, or a refusal reason.
func (a *Auth) checkCertificate(ctx context.Context, rec *pipeline.Record, chain []*x509.Certificate, now time.Time) (certAuth, string) {
	c := certAuth{chain: chain, at: now}
	var err error
	switch rec.Identity.AuthType() {
	case pipeline.AuthSelfSigned:
		err = certs.CheckThumbprint(chain[0], rec.Identity.Thumbprints(), now)
		c.until = chain[0].NotAfter
	case pipeline.AuthCertificateAuthority:
		c.ca = true
		if a.cas == nil {
			return c, failCertificate
		}
		_, c.until, err = a.cas.VerifyDevice(ctx, rec.Twin.DeviceID, chain, now)
	default:
		return c, failAuthType
	}
	switch {
	case err == nil:
		return c, ""
	case errors.Is(err, certs.ErrValidity):
		return c, "expired"
	case errors.Is(err, certs.ErrThumbprint):
		return c, failThumbprint
	default:
		return c, failCertificate
	}
}

// authenticateCertificate is OnConnectAuthenticate for a connection with a
// client certificate and no password.
func (a *Auth) authenticateCertificate(cl *mqtt.Client, deviceID string, chain []*x509.Certificate, fail func(string) bool) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec, ok := a.deviceRecord(ctx, deviceID)
	if !ok {
		return fail("unknown_device")
	}
	c, reason := a.checkCertificate(ctx, rec, chain, time.Now())
	if reason != "" {
		return fail(reason)
	}
	if rec.Twin.Status != "enabled" {
		return fail("disabled")
	}
	a.pending.put(cl, c)
	return true
}

// trackCertificate starts following a certificate session (see track).
func (a *Auth) trackCertificate(cl *mqtt.Client) *session {
	c, ok := a.pending.take(cl)
	if !ok {
		a.log.Error("a device session started without a SAS token or an authenticated certificate; it cannot be revoked", "device", cl.ID, "remote", cl.Net.Remote)
		return nil
	}
	return &session{cl: cl, cert: &c, until: c.until}
}

// recheckCertificate checks a certificate session against the device's
// record; it returns a revocation reason, or "".
func (a *Auth) recheckCertificate(ctx context.Context, s *session, rec *pipeline.Record, now time.Time) string {
	c, reason := a.checkCertificate(ctx, rec, s.cert.chain, now)
	switch {
	case reason == "expired":
		return revokedExpired
	case reason != "" || c.ca != s.cert.ca:
		return revokedCertificate
	}
	return ""
}

// CertificateChanged re-checks this instance's CA-authenticated sessions
// against the verified CAs, and ends those whose chain no longer verifies
// (the CA was removed, replaced or set unverified). The CA registry calls
// it after each change.
func (a *Auth) CertificateChanged() {
	if a.cas == nil {
		return
	}
	a.sessions.mu.Lock()
	var open []*session
	for _, m := range a.sessions.byDevice {
		for _, s := range m {
			if s.cert != nil && s.cert.ca {
				open = append(open, s)
			}
		}
	}
	a.sessions.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	now := time.Now()
	for _, s := range open {
		switch _, _, err := a.cas.VerifyDevice(ctx, s.cl.ID, s.cert.chain, now); {
		case errors.Is(err, certs.ErrValidity):
			a.revoke(s.cl, revokedExpired)
		case err != nil:
			a.revoke(s.cl, revokedCertificate)
		}
	}
}
