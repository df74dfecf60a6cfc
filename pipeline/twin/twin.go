// Package twin is the Azure IoT Hub device twin document: its validation
// rules, JSON merge patch, $metadata, versions and etag, and its JSON
// renderings (the service view, the device's GET body and the desired-change
// notification).
//
// The package is pure and deterministic: it reads no clock (callers pass
// now) and does no I/O, and no function mutates its inputs; changes return a
// new *Twin. Every rule violation is an *Error matching ErrInvalid.
//
// Property values are the types ParseJSON produces: map[string]any, []any,
// string, json.Number, bool (and nil, in patches only). For convenience Go
// integers and floats are accepted in patches too; they are converted to
// json.Number as encoding/json would write them (so 3.0 becomes the integer
// 3 and is checked against the integer range). Twins never hold them.
package twin

import (
	"encoding/base64"
	"encoding/binary"
	"strconv"
	"time"
)

// Meta is one node of a section's $metadata tree (§1.2): there is one node
// for every object level (Children non-nil, one entry per key, empty for an
// empty object) and one for every leaf (scalars and arrays; Children nil).
// Arrays are leaves: metadata does not descend into them.
type Meta struct {
	// LastUpdated is when a change last touched this node or a descendant.
	LastUpdated time.Time
	// LastUpdatedVersion is the desired $version of that change; it exists
	// in desired only and is 0 in reported.
	LastUpdatedVersion int64
	// Children holds the nodes of an object's keys; nil for leaves.
	Children map[string]*Meta
}

// Section is properties.desired or properties.reported.
type Section struct {
	// Props are the user properties; they never contain $-keys. Twins built
	// by this package always have a non-nil map.
	Props map[string]any
	// Meta is the root $metadata node, never nil in a valid twin.
	Meta *Meta
	// Version is the section's $version: +1 per change to the section.
	Version int64
}

// Twin is a device twin. The identity fields (DeviceID through ModelID) are
// the registry's; the Apply functions and Replace touch only Tags, Desired,
// Reported, Version and Etag.
type Twin struct {
	DeviceID string
	// ModuleID names the module of a module twin (whose DeviceID is its
	// device's); "" for a device twin. JSON has "moduleId" only when set.
	ModuleID string
	// Etag counts changes to tags and desired; ETag renders it.
	Etag int64
	// Version counts every accepted change to the twin.
	Version int64
	// Status is "enabled" or "disabled".
	Status string
	// StatusReason is omitted from JSON when empty.
	StatusReason string
	// StatusUpdateTime renders as "0001-01-01T00:00:00Z" when zero.
	StatusUpdateTime time.Time
	// ConnectionState is "Connected" or "Disconnected".
	ConnectionState string
	// LastActivityTime is the device's last activity as the hub saw it.
	LastActivityTime time.Time
	// CloudToDeviceMessageCount is the number of queued C2D messages.
	CloudToDeviceMessageCount int64
	// AuthenticationType is "sas", "selfSigned", "certificateAuthority" or "none".
	AuthenticationType string
	// X509PrimaryThumbprint and X509SecondaryThumbprint are a self-signed
	// device's certificate thumbprints; empty renders as null.
	X509PrimaryThumbprint, X509SecondaryThumbprint string
	// ModelID is the Plug and Play model id, "" when none.
	ModelID string
	// Tags are the back end's properties; nil or empty means none and the
	// "tags" key is absent from JSON. Changes leave nil rather than empty.
	Tags map[string]any
	// Desired and Reported are properties.desired and properties.reported.
	Desired, Reported Section
}

// New returns a fresh twin as the hub creates it: Version 2, Etag 1, desired
// and reported $version 1 with root $lastUpdated now (desired
// $lastUpdatedVersion 1), Status "enabled", ConnectionState "Disconnected",
// AuthenticationType "sas" and no tags. now is truncated to 100 ns, in UTC.
func New(deviceID string, now time.Time) *Twin {
	now = normTime(now)
	return &Twin{
		DeviceID:           deviceID,
		Etag:               1,
		Version:            2,
		Status:             "enabled",
		ConnectionState:    "Disconnected",
		AuthenticationType: "sas",
		Desired: Section{
			Props:   map[string]any{},
			Meta:    &Meta{LastUpdated: now, LastUpdatedVersion: 1, Children: map[string]*Meta{}},
			Version: 1,
		},
		Reported: Section{
			Props:   map[string]any{},
			Meta:    &Meta{LastUpdated: now, Children: map[string]*Meta{}},
			Version: 1,
		},
	}
}

// normTime is now in UTC, truncated to the 100 ns precision of FormatTime,
// so that it survives a Marshal/Unmarshal round trip exactly.
func normTime(now time.Time) time.Time {
	return now.Truncate(100 * time.Nanosecond).UTC()
}

// Clone returns a deep copy of t (nil for nil). Nil and empty maps are kept
// as they are.
func (t *Twin) Clone() *Twin {
	if t == nil {
		return nil
	}
	c := *t
	if t.Tags != nil {
		c.Tags = cloneObject(t.Tags)
	}
	c.Desired = t.Desired.clone()
	c.Reported = t.Reported.clone()
	return &c
}

func (s Section) clone() Section {
	c := s
	if s.Props != nil {
		c.Props = cloneObject(s.Props)
	}
	c.Meta = s.Meta.clone()
	return c
}

func (m *Meta) clone() *Meta {
	if m == nil {
		return nil
	}
	c := *m
	if m.Children != nil {
		c.Children = make(map[string]*Meta, len(m.Children))
		for k, v := range m.Children {
			c.Children[k] = v.clone()
		}
	}
	return &c
}

func cloneObject(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	c := make(map[string]any, len(m))
	for k, v := range m {
		c[k] = cloneValue(v)
	}
	return c
}

func cloneValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		return cloneObject(v)
	case []any:
		if v == nil {
			return v
		}
		c := make([]any, len(v))
		for i, e := range v {
			c[i] = cloneValue(e)
		}
		return c
	default:
		return v
	}
}

// ETag renders Etag as IoT Hub does: base64 of the counter as 8 big-endian
// bytes, so 1 is "AAAAAAAAAAE=". It is the value compared with If-Match
// (unquoted).
func (t *Twin) ETag() string {
	return FormatETag(t.Etag)
}

// FormatETag renders an etag counter as base64 of its 8 big-endian bytes.
func FormatETag(n int64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	return base64.StdEncoding.EncodeToString(b[:])
}

// ParseETag is the inverse of FormatETag. It fails with RuleShape when s is
// not base64 of exactly 8 bytes.
func ParseETag(s string) (int64, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != 8 {
		return 0, &Error{Rule: RuleShape, Path: "etag", Msg: "etag " + strconv.Quote(s) + " is not base64 of 8 bytes"}
	}
	return int64(binary.BigEndian.Uint64(b)), nil
}
