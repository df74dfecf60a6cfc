package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/twinhub/twinhub/bridge/certs"
	"github.com/twinhub/twinhub/pipeline"
)

// Certificates is the registry of X.509 CA certificates; *certs.Store
// implements it.
type Certificates interface {
	Get(ctx context.Context, name string) (*certs.CA, error)
	List(ctx context.Context) ([]*certs.CA, error)
	Put(ctx context.Context, name, certificate string, verified, replace bool, ifMatch string, now time.Time) (*certs.CA, error)
	Delete(ctx context.Context, name, ifMatch string) error
	GenerateVerificationCode(ctx context.Context, name, ifMatch string, now time.Time) (*certs.CA, error)
	Verify(ctx context.Context, name, ifMatch, certificate string, now time.Time) (*certs.CA, error)
}

var _ Certificates = (*certs.Store)(nil)

// ServeCertificates serves IoT Hub's CA certificate API (its management
// API's shapes, at /certificates on the hub): PUT /certificates/{name}
// registers a CA ({"properties":{"certificate":"<PEM>","isVerified":false}};
// with If-Match it replaces one), GET reads one or (/certificates) all,
// DELETE removes one, POST …/generateVerificationCode returns a code, and
// POST …/verify ({"certificate":"<PEM>"}) verifies the CA with a
// certificate it signed whose CN is that code. Reads need RegistryRead,
// changes RegistryWrite.
func (a *API) ServeCertificates(c Certificates) {
	a.handle("GET /certificates", "certificate_list", func(w http.ResponseWriter, r *http.Request) {
		all, err := c.List(r.Context())
		if err != nil {
			a.certificateError(w, "", err)
			return
		}
		out := struct {
			Value []certificateDescription `json:"value"`
		}{Value: make([]certificateDescription, 0, len(all))}
		for _, ca := range all {
			out.Value = append(out.Value, describe(ca, false))
		}
		b, _ := json.Marshal(out)
		writeJSON(w, http.StatusOK, b)
	})
	a.handle("GET /certificates/{name}", "certificate_get", func(w http.ResponseWriter, r *http.Request) {
		ca, err := c.Get(r.Context(), r.PathValue("name"))
		a.writeCertificate(w, r, ca, err, false)
	})
	a.handle("PUT /certificates/{name}", "certificate_put", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Properties struct {
				Certificate string `json:"certificate"`
				IsVerified  bool   `json:"isVerified"`
			} `json:"properties"`
		}
		m, present, ok := a.certificateBody(w, r, &body)
		if !ok {
			return
		}
		if body.Properties.Certificate == "" {
			writeError(w, pipeline.CodeArgumentInvalid, `the body must be {"properties":{"certificate":"<PEM of the CA certificate>"}}`)
			return
		}
		ca, err := c.Put(r.Context(), r.PathValue("name"), body.Properties.Certificate, body.Properties.IsVerified, present, m, time.Now())
		a.writeCertificate(w, r, ca, err, false)
	})
	a.handle("DELETE /certificates/{name}", "certificate_delete", func(w http.ResponseWriter, r *http.Request) {
		m, _, ok := ifMatch(w, r)
		if !ok {
			return
		}
		if err := c.Delete(r.Context(), r.PathValue("name"), m); err != nil {
			a.certificateError(w, r.PathValue("name"), err)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
	a.handle("POST /certificates/{name}/generateVerificationCode", "certificate_verify", func(w http.ResponseWriter, r *http.Request) {
		m, _, ok := ifMatch(w, r)
		if !ok {
			return
		}
		ca, err := c.GenerateVerificationCode(r.Context(), r.PathValue("name"), m, time.Now())
		a.writeCertificate(w, r, ca, err, true)
	})
	a.handle("POST /certificates/{name}/verify", "certificate_verify", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Certificate string `json:"certificate"`
		}
		m, _, ok := a.certificateBody(w, r, &body)
		if !ok {
			return
		}
		if body.Certificate == "" {
			writeError(w, pipeline.CodeArgumentInvalid,
				`the body must be {"certificate":"<PEM of a certificate signed by the CA whose CN is the verification code>"}`)
			return
		}
		ca, err := c.Verify(r.Context(), r.PathValue("name"), m, body.Certificate, time.Now())
		a.writeCertificate(w, r, ca, err, false)
	})
}

// certificateBody reads a JSON body into v and the request's If-Match.
func (a *API) certificateBody(w http.ResponseWriter, r *http.Request, v any) (match string, present, ok bool) {
	b, ok := a.readBody(w, r)
	if !ok {
		return "", false, false
	}
	if err := json.Unmarshal(b, v); err != nil {
		writeError(w, pipeline.CodeArgumentInvalid, "the body is not the expected JSON: "+err.Error())
		return "", false, false
	}
	return ifMatch(w, r)
}

// certificateDescription is IoT Hub's CertificateDescription (with the
// verification code of CertificateWithNonceDescription when asked).
type certificateDescription struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	Etag       string `json:"etag"`
	Type       string `json:"type"`
	Properties struct {
		Subject          string `json:"subject"`
		Expiry           string `json:"expiry"`
		Thumbprint       string `json:"thumbprint"`
		IsVerified       bool   `json:"isVerified"`
		Created          string `json:"created"`
		Updated          string `json:"updated"`
		Certificate      string `json:"certificate"`
		VerificationCode string `json:"verificationCode,omitempty"`
	} `json:"properties"`
}

func describe(ca *certs.CA, withCode bool) certificateDescription {
	d := certificateDescription{ID: "/certificates/" + ca.Name, Name: ca.Name, Etag: ca.Etag(), Type: "Microsoft.Devices/IotHubs/Certificates"}
	cert := ca.Certificate()
	p := &d.Properties
	p.Subject = cert.Subject.CommonName
	p.Expiry = cert.NotAfter.UTC().Format(http.TimeFormat)
	p.Thumbprint, _ = certs.Thumbprints(cert)
	p.IsVerified = ca.Verified
	p.Created, p.Updated = ca.Created.UTC().Format(http.TimeFormat), ca.Updated.UTC().Format(http.TimeFormat)
	p.Certificate = ca.PEM
	if withCode {
		p.VerificationCode = ca.VerificationCode
	}
	return d
}

func (a *API) writeCertificate(w http.ResponseWriter, r *http.Request, ca *certs.CA, err error, withCode bool) {
	if err != nil {
		a.certificateError(w, r.PathValue("name"), err)
		return
	}
	b, _ := json.Marshal(describe(ca, withCode))
	w.Header().Set("ETag", strconv.Quote(ca.Etag()))
	writeJSON(w, http.StatusOK, b)
}

func (a *API) certificateError(w http.ResponseWriter, name string, err error) {
	switch {
	case errors.Is(err, certs.ErrInvalid):
		writeError(w, pipeline.CodeArgumentInvalid, err.Error())
	case errors.Is(err, certs.ErrNotFound):
		writeError(w, pipeline.CodeCertificateNotFound, fmt.Sprintf("CA certificate %q does not exist", name))
	case errors.Is(err, certs.ErrExists):
		writeError(w, pipeline.CodeCertificateAlreadyExists,
			fmt.Sprintf("CA certificate %q exists; to replace it send If-Match with its etag (or \"*\")", name))
	case errors.Is(err, certs.ErrEtag):
		writeError(w, pipeline.CodePreconditionFailed,
			fmt.Sprintf("If-Match does not match CA certificate %q's etag; read it again and retry", name))
	default:
		a.log.Error("a CA certificate request failed", "name", name, "err", err)
		writeError(w, pipeline.CodeServiceUnavailable, "the hub could not read or store the CA certificate; retry")
	}
}
