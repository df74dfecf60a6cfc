package sas

import (
	"context"
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

	"github.com/nats-io/nats.go/jetstream"
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

// Policies is the hub's set of shared access policies. A hub keeps them in
// a shared bucket (OpenShared) with a copy in a file only its owner can
// read; the file alone (OpenPolicies, LoadPolicies) serves tools that read
// a local hub's keys.
type Policies struct {
	path     string // the file copy
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
	ps, err = loadPrivate(path)
	if err == nil {
		return ps, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	ps = &Policies{path: path, policies: newDefaultPolicies()}
	if err := writeFile(path, ps.policies); err != nil {
		return nil, false, err
	}
	return ps, true, nil
}

// loadPrivate is LoadPolicies that refuses a file others may read.
func loadPrivate(path string) (*Policies, error) {
	ps, err := LoadPolicies(path)
	if err != nil {
		return nil, err
	}
	if info, serr := os.Stat(path); serr == nil && info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by others (mode %v); run chmod 600 %s", path, info.Mode().Perm(), path)
	}
	return ps, nil
}

// newDefaultPolicies returns DefaultPolicies with new random keys.
func newDefaultPolicies() []*Policy {
	var out []*Policy
	for _, d := range DefaultPolicies {
		out = append(out, &Policy{Name: d.Name, PrimaryKey: NewKey(), SecondaryKey: NewKey(), Rights: d.Rights})
	}
	return out
}

// encodePolicies is the JSON of the policy file and of the shared copy.
func encodePolicies(policies []*Policy) []byte {
	b, err := json.MarshalIndent(policies, "", "  ")
	if err != nil {
		panic("BUG: encoding shared access policies: " + err.Error())
	}
	return append(b, '\n')
}

// writeFile replaces the policy file at path atomically, mode 0600.
func writeFile(path string, policies []*Policy) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating the directory of %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, encodePolicies(policies), 0o600); err != nil {
		return fmt.Errorf("writing shared access policies to %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing shared access policies to %s: %w", path, err)
	}
	return nil
}

// Bucket is the key-value store that shares the policies between the
// hub's instances; jetstream.KeyValue implements it. Reads must see the
// latest write (no direct gets from replicas).
type Bucket interface {
	Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error)
	Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error)
}

// SharedConfig says where OpenShared keeps the policies.
type SharedConfig struct {
	// Bucket holds the policies under Key: every instance on the same NATS
	// reads the same ones, so each accepts the tokens of the others.
	Bucket Bucket
	Key    string
	// File is this instance's copy, mode 0600, for the CLI (`twinhub
	// connection-string`, --data-dir). When the bucket has no policies yet,
	// an existing File is imported instead of creating new keys.
	File string
}

// Origin says where OpenShared's policies came from.
type Origin int

// The origins.
const (
	// Loaded: from the bucket; File was a copy of them or absent.
	Loaded Origin = iota
	// Created: the bucket had none and File did not exist; new default
	// policies with random keys were stored.
	Created
	// Imported: the bucket had none; File's policies were stored in it.
	Imported
	// Replaced: from the bucket, and File held other policies: it was
	// moved to File + ".replaced", and its keys no longer work.
	Replaced
)

// OpenShared returns the hub's policies from cfg.Bucket. The first instance
// stores them with a create-if-absent, so instances starting at once agree:
// the loser of the race reads the winner's. The result is written to
// cfg.File.
func OpenShared(ctx context.Context, cfg SharedConfig) (*Policies, Origin, error) {
	shared, err := getShared(ctx, cfg)
	if err != nil {
		return nil, 0, err
	}
	origin := Loaded
	if shared == nil {
		// None shared yet: offer the local file's, or new ones.
		local, err := loadPrivate(cfg.File)
		switch {
		case err == nil && len(local.policies) == 0:
			return nil, 0, fmt.Errorf("%s holds no shared access policies; remove it to create new ones", cfg.File)
		case err == nil:
			shared, origin = local.policies, Imported
		case errors.Is(err, os.ErrNotExist):
			shared, origin = newDefaultPolicies(), Created
		default:
			return nil, 0, err
		}
		_, err = cfg.Bucket.Create(ctx, cfg.Key, encodePolicies(shared))
		if errors.Is(err, jetstream.ErrKeyExists) {
			// Another instance stored them first: use the winner's.
			if shared, err = getShared(ctx, cfg); err == nil && shared == nil {
				err = errors.New("they were stored and then deleted")
			}
			origin = Loaded
		}
		if err != nil {
			return nil, 0, fmt.Errorf("storing the hub's shared access policies in NATS (key %s): %w", cfg.Key, err)
		}
	}
	if origin == Loaded {
		if old, err := LoadPolicies(cfg.File); err == nil && !samePolicies(old.policies, shared) {
			if err := os.Rename(cfg.File, cfg.File+".replaced"); err != nil {
				return nil, 0, fmt.Errorf("moving aside %s, which holds other policies than the hub's: %w", cfg.File, err)
			}
			origin = Replaced
		}
	}
	if err := writeFile(cfg.File, shared); err != nil {
		return nil, 0, err
	}
	return &Policies{path: cfg.File, policies: shared}, origin, nil
}

// getShared reads the policies in the bucket, nil if there are none.
func getShared(ctx context.Context, cfg SharedConfig) ([]*Policy, error) {
	e, err := cfg.Bucket.Get(ctx, cfg.Key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the hub's shared access policies from NATS (key %s): %w", cfg.Key, err)
	}
	var ps []*Policy
	err = json.Unmarshal(e.Value(), &ps)
	if err == nil && len(ps) == 0 {
		err = errors.New("the list is empty")
	}
	if err != nil {
		return nil, fmt.Errorf("the hub's shared access policies in NATS (key %s, revision %d) are not a list of policies: %w; "+
			"delete the key (nats kv del) and start an instance whose data directory holds the right policies.json, "+
			"which is then imported", cfg.Key, e.Revision(), err)
	}
	return ps, nil
}

// samePolicies reports whether a and b hold the same names, keys and rights.
func samePolicies(a, b []*Policy) bool {
	return slices.EqualFunc(a, b, func(x, y *Policy) bool {
		return x.Name == y.Name && x.PrimaryKey == y.PrimaryKey && x.SecondaryKey == y.SecondaryKey && slices.Equal(x.Rights, y.Rights)
	})
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
	HostName, DeviceID, ModuleID, SharedAccessKeyName, SharedAccessKey, GatewayHostName string
}

// String renders the connection string in IoT Hub's format.
func (c ConnectionString) String() string {
	parts := []string{"HostName=" + c.HostName}
	if c.DeviceID != "" {
		parts = append(parts, "DeviceId="+c.DeviceID)
	}
	if c.ModuleID != "" {
		parts = append(parts, "ModuleId="+c.ModuleID)
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
		case "ModuleId":
			c.ModuleID = v
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
	if c.DeviceID != "" && c.ModuleID != "" {
		return New(DeviceResource(c.HostName, c.DeviceID+"/modules/"+c.ModuleID), c.SharedAccessKey, c.SharedAccessKeyName, time.Now().Add(ttl))
	}
	if c.DeviceID != "" {
		return New(DeviceResource(c.HostName, c.DeviceID), c.SharedAccessKey, c.SharedAccessKeyName, time.Now().Add(ttl))
	}
	return New(c.HostName, c.SharedAccessKey, c.SharedAccessKeyName, time.Now().Add(ttl))
}
