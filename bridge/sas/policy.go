package sas

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Permission is a right a shared access policy grants (IoT Hub's names).
type Permission string

// The permissions.
const (
	RegistryRead   Permission = "RegistryRead"
	RegistryWrite  Permission = "RegistryWrite"
	ServiceConnect Permission = "ServiceConnect"
	DeviceConnect  Permission = "DeviceConnect"
)

// Policy is a shared access policy: a name, two keys and its rights.
type Policy struct {
	Name         string       `json:"keyName"`
	PrimaryKey   string       `json:"primaryKey"`
	SecondaryKey string       `json:"secondaryKey"`
	Rights       []Permission `json:"rights"`
}

// Has reports whether the policy grants p. RegistryWrite implies RegistryRead.
func (p *Policy) Has(perm Permission) bool {
	if perm == RegistryRead && slices.Contains(p.Rights, RegistryWrite) {
		return true
	}
	return slices.Contains(p.Rights, perm)
}

// DefaultPolicies are the policies a new hub gets, as in IoT Hub.
var DefaultPolicies = []struct {
	Name   string
	Rights []Permission
}{
	{"iothubowner", []Permission{RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect}},
	{"service", []Permission{ServiceConnect}},
	{"device", []Permission{DeviceConnect}},
	{"registryRead", []Permission{RegistryRead}},
	{"registryReadWrite", []Permission{RegistryRead, RegistryWrite}},
}

// OwnerPolicy is the policy with every right.
const OwnerPolicy = "iothubowner"

// Policies is the hub's set of shared access policies, kept in a file only
// its owner can read.
type Policies struct {
	path     string
	policies []*Policy
}

// NewKey returns a random 256-bit key, base64 encoded.
func NewKey() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("BUG: crypto/rand failed: " + err.Error())
	}
	return base64.StdEncoding.EncodeToString(b)
}

// LoadPolicies reads the policy file at path.
func LoadPolicies(path string) (*Policies, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ps := &Policies{path: path}
	if err := json.Unmarshal(b, &ps.policies); err != nil {
		return nil, fmt.Errorf("reading shared access policies from %s: %w", path, err)
	}
	return ps, nil
}

// OpenPolicies reads the policy file at path, creating it with the default
// policies and random keys (mode 0600) when it does not exist.
func OpenPolicies(path string) (ps *Policies, created bool, err error) {
	ps, err = LoadPolicies(path)
	if err == nil {
		if info, serr := os.Stat(path); serr == nil && info.Mode().Perm()&0o077 != 0 {
			return nil, false, fmt.Errorf("%s is readable by others (mode %v); run chmod 600 %s", path, info.Mode().Perm(), path)
		}
		return ps, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	ps = &Policies{path: path}
	for _, d := range DefaultPolicies {
		ps.policies = append(ps.policies, &Policy{Name: d.Name, PrimaryKey: NewKey(), SecondaryKey: NewKey(), Rights: d.Rights})
	}
	b, _ := json.MarshalIndent(ps.policies, "", "  ")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return nil, false, fmt.Errorf("writing shared access policies: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, false, err
	}
	return ps, true, nil
}

// Path is the policy file.
func (ps *Policies) Path() string { return ps.path }

// Get returns a policy by name (case-sensitive, as IoT Hub).
func (ps *Policies) Get(name string) (*Policy, bool) {
	for _, p := range ps.policies {
		if p.Name == name {
			return p, true
		}
	}
	return nil, false
}

// Authenticate verifies a service token: its skn names a policy whose
// primary or secondary key signed it, and it has not expired.
func (ps *Policies) Authenticate(token string, now time.Time) (*Policy, error) {
	t, err := Parse(token)
	if err != nil {
		return nil, err
	}
	if t.KeyName == "" {
		return nil, fmt.Errorf("%w: skn (the policy name) is missing", ErrMalformed)
	}
	p, ok := ps.Get(t.KeyName)
	if !ok {
		return nil, ErrSignature
	}
	if err := t.Verify(now, p.PrimaryKey, p.SecondaryKey); err != nil {
		return nil, err
	}
	return p, nil
}

// ConnectionString is an IoT Hub connection string's fields.
type ConnectionString struct {
	HostName, DeviceID, SharedAccessKeyName, SharedAccessKey, GatewayHostName string
}

// String renders the connection string in IoT Hub's format.
func (c ConnectionString) String() string {
	parts := []string{"HostName=" + c.HostName}
	if c.DeviceID != "" {
		parts = append(parts, "DeviceId="+c.DeviceID)
	}
	if c.SharedAccessKeyName != "" {
		parts = append(parts, "SharedAccessKeyName="+c.SharedAccessKeyName)
	}
	parts = append(parts, "SharedAccessKey="+c.SharedAccessKey)
	if c.GatewayHostName != "" {
		parts = append(parts, "GatewayHostName="+c.GatewayHostName)
	}
	return strings.Join(parts, ";")
}

// ParseConnectionString parses "HostName=…;DeviceId=…;SharedAccessKey=…".
func ParseConnectionString(s string) (ConnectionString, error) {
	var c ConnectionString
	for _, part := range strings.Split(strings.TrimSpace(s), ";") {
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return c, fmt.Errorf("connection string part %q has no '='", k)
		}
		switch k {
		case "HostName":
			c.HostName = v
		case "DeviceId":
			c.DeviceID = v
		case "SharedAccessKeyName":
			c.SharedAccessKeyName = v
		case "SharedAccessKey":
			c.SharedAccessKey = v
		case "GatewayHostName":
			c.GatewayHostName = v
		}
	}
	if c.HostName == "" || c.SharedAccessKey == "" {
		return c, errors.New("connection string needs HostName and SharedAccessKey")
	}
	return c, nil
}

// Token returns a SAS token for the connection string, valid for ttl.
func (c ConnectionString) Token(ttl time.Duration) (string, error) {
	if c.DeviceID != "" {
		return New(DeviceResource(c.HostName, c.DeviceID), c.SharedAccessKey, c.SharedAccessKeyName, time.Now().Add(ttl))
	}
	return New(c.HostName, c.SharedAccessKey, c.SharedAccessKeyName, time.Now().Add(ttl))
}
