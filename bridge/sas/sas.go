// Package sas implements IoT Hub's shared access signatures: building and
// verifying SAS tokens, the hub's shared access policies and their
// permissions, and connection strings.
//
// A token is "SharedAccessSignature sr={resource}&sig={signature}&se={expiry}[&skn={policy}]",
// where signature = base64(HMAC-SHA256(base64decode(key), sr + "\n" + se)) with
// sr exactly as it appears in the token. Which requests a token covers
// (its audience and scope) is CheckScope's rule, in scope.go.
package sas

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Errors returned by Parse, Verify and CheckScope. They never contain the
// token or a key.
var (
	ErrMalformed = errors.New("malformed shared access signature")
	ErrExpired   = errors.New("shared access signature expired")
	ErrSignature = errors.New("shared access signature does not match any key")
	ErrResource  = errors.New("shared access signature is for another resource")
	ErrAudience  = errors.New("shared access signature is for another hub")
)

const prefix = "SharedAccessSignature "

// Token is a parsed SAS token.
type Token struct {
	// Resource is sr as it appears in the token (still URL-encoded); the
	// signature covers exactly this text.
	Resource string
	// Signature is the decoded signature.
	Signature []byte
	// Expiry is se.
	Expiry time.Time
	expiry string
	// KeyName is skn, the policy name; empty for device-key tokens.
	KeyName string
}

// Parse parses a token. Field order does not matter; sr, sig and se are required.
func Parse(s string) (*Token, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), prefix)
	if !ok {
		return nil, fmt.Errorf("%w: it must start with %q", ErrMalformed, strings.TrimSpace(prefix))
	}
	t := &Token{}
	var sig string
	for _, field := range strings.Split(rest, "&") {
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			return nil, fmt.Errorf("%w: field without '='", ErrMalformed)
		}
		switch k {
		case "sr":
			t.Resource = v
		case "sig":
			sig = v
		case "se":
			t.expiry = v
		case "skn":
			name, err := url.QueryUnescape(v)
			if err != nil {
				return nil, fmt.Errorf("%w: skn is not URL-encoded correctly", ErrMalformed)
			}
			t.KeyName = name
		}
	}
	if t.Resource == "" || sig == "" || t.expiry == "" {
		return nil, fmt.Errorf("%w: sr, sig and se are required", ErrMalformed)
	}
	secs, err := strconv.ParseInt(t.expiry, 10, 64)
	if err != nil || secs <= 0 {
		return nil, fmt.Errorf("%w: se must be Unix seconds", ErrMalformed)
	}
	t.Expiry = time.Unix(secs, 0)
	decoded, err := url.QueryUnescape(sig)
	if err != nil {
		return nil, fmt.Errorf("%w: sig is not URL-encoded correctly", ErrMalformed)
	}
	if t.Signature, err = base64.StdEncoding.DecodeString(decoded); err != nil {
		return nil, fmt.Errorf("%w: sig is not base64", ErrMalformed)
	}
	return t, nil
}

// Verify checks the token's expiry at now and its signature against each
// base64 key (a device's primary and secondary key, or a policy's keys).
func (t *Token) Verify(now time.Time, keys ...string) error {
	if !now.Before(t.Expiry) {
		return ErrExpired
	}
	for _, k := range keys {
		raw, err := base64.StdEncoding.DecodeString(k)
		if err != nil || len(raw) == 0 {
			continue
		}
		mac := hmac.New(sha256.New, raw)
		mac.Write([]byte(t.Resource + "\n" + t.expiry))
		if hmac.Equal(mac.Sum(nil), t.Signature) {
			return nil
		}
	}
	return ErrSignature
}

// New builds a token for resource (already in the form it should appear
// in, e.g. url.QueryEscape(host+"/devices/"+id)) signed with a base64 key.
func New(resource, key, keyName string, expiry time.Time) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(key)
	if err != nil {
		return "", fmt.Errorf("key is not base64: %w", err)
	}
	se := strconv.FormatInt(expiry.Unix(), 10)
	mac := hmac.New(sha256.New, raw)
	mac.Write([]byte(resource + "\n" + se))
	sig := url.QueryEscape(base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	tok := prefix + "sr=" + resource + "&sig=" + sig + "&se=" + se
	if keyName != "" {
		tok += "&skn=" + url.QueryEscape(keyName)
	}
	return tok, nil
}

// DeviceResource is the sr of a device token for host.
func DeviceResource(host, deviceID string) string {
	return url.QueryEscape(host + "/devices/" + deviceID)
}
