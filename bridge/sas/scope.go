package sas

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Scope: which requests a token may be used for.
//
// A token's sr, URL-decoded once, is "{host}[/{segment}…]". It is accepted
// for a request when
//   - {host} is one of the hub's names (HubNames), compared case-insensitively,
//     with or without a ":port" (the Azure SDKs put a port there when the
//     connection string's HostName has one), and
//   - its segments are a prefix, segment by segment and case-sensitively, of
//     the request's resource: nothing (the whole hub) for the registry list
//     and queries, ["devices", id] for everything about one device.
//
// So sr={host} covers every request, sr={host}/devices/{id} covers only
// device id (its registry entry, twin and MQTT connection), and a module's
// sr={host}/devices/{id}/modules/{m} covers none of them. A device ID is one
// segment even when it contains "/" (a request for /twins/a%2Fb is device
// "a/b", which a token for device "a" does not cover).

// LocalHost is the name every hub answers to.
const LocalHost = "localhost"

// HubNames returns the host names a hub answers to: localhost, then each of
// extra, lower-cased, trimmed and without duplicates or empty entries.
func HubNames(extra ...string) []string {
	names := []string{LocalHost}
	for _, n := range extra {
		n = strings.ToLower(strings.TrimSpace(n))
		if n == "" || containsFold(names, n) {
			continue
		}
		names = append(names, n)
	}
	return names
}

// DeviceScope is the resource of every request about one device: its
// registry entry, its twin and its MQTT connection ({host}/devices/{id}).
// For a module's entity ID "{id}/{moduleId}" it is the module's,
// {host}/devices/{id}/modules/{moduleId}, which a token for its device
// covers too.
func DeviceScope(deviceID string) []string {
	if device, module, ok := strings.Cut(deviceID, "/"); ok {
		return []string{"devices", device, "modules", module}
	}
	return []string{"devices", deviceID}
}

// CheckScope checks a token's sr as it appears in the token (URL-encoded)
// against a hub's names and a request's resource (nil for the whole hub,
// DeviceScope(id) for one device). It returns nil when the token covers the
// request; ErrMalformed when sr does not decode; ErrAudience when sr names
// another host; ErrResource when sr names another part of the hub.
func CheckScope(sr string, hubNames, resource []string) error {
	decoded, err := url.PathUnescape(sr)
	if err != nil {
		return fmt.Errorf("%w: sr is not URL-encoded correctly", ErrMalformed)
	}
	hostPort, path, _ := strings.Cut(decoded, "/")
	if !containsFold(hubNames, hostOf(hostPort)) {
		return ErrAudience
	}
	path = strings.TrimSuffix(path, "/")
	if path == "" {
		return nil // the whole hub
	}
	segments := strings.Split(path, "/")
	if len(segments) > len(resource) {
		return ErrResource
	}
	for i, s := range segments {
		if s != resource[i] {
			return ErrResource
		}
	}
	return nil
}

// Covers is CheckScope for the token's sr.
func (t *Token) Covers(hubNames, resource []string) error {
	return CheckScope(t.Resource, hubNames, resource)
}

// ForDevice checks that the token may connect device deviceID to a hub
// with these names: its sr must be {host}, {host}/devices or
// {host}/devices/{deviceID} with {host} one of hubNames.
func (t *Token) ForDevice(hubNames []string, deviceID string) error {
	return t.Covers(hubNames, DeviceScope(deviceID))
}

// hostOf returns host without a numeric ":port", or "" when host has an
// empty or non-numeric port (which never names a hub).
func hostOf(hostPort string) string {
	if !strings.Contains(hostPort, ":") {
		return hostPort
	}
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return hostPort // an IPv6 literal without a port, or garbage: compared as is
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return ""
	}
	return host
}

func containsFold(names []string, s string) bool {
	if s == "" {
		return false
	}
	for _, n := range names {
		if strings.EqualFold(n, s) {
			return true
		}
	}
	return false
}
