package main

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"
)

// TestSeedFlow drives a real `twinhub run` through the device-twin how-to:
// the device reads its twin and reports connectivity, the back end tags the
// device with the etag it read and sets a desired property that reaches the
// device, a stale etag is refused, and everything survives a restart.
func TestSeedFlow(t *testing.T) {
	p := startTwinhub(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	if r := p.call(t, "PUT", "/devices/myDeviceId?api-version=2021-04-12", `{"deviceId":"myDeviceId"}`); r.Status != 200 {
		t.Fatalf("create device: %d %s", r.Status, r.Body)
	} else if d := r.json(t); d["deviceId"] != "myDeviceId" || get(d, "authentication.symmetricKey.primaryKey") == "" {
		t.Fatalf("create device returned %s", r.Body)
	}

	dev, err := p.dialDevice(t, ctx, "myDeviceId")
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	body, err := dev.GetTwin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(body) != `{"desired":{"$version":1},"reported":{"$version":1}}` {
		t.Fatalf("device GET: %s", body)
	}
	v, err := dev.Report(ctx, []byte(`{"connectivity":{"type":"cellular"}}`))
	if err != nil || v != 2 {
		t.Fatalf("reported patch: version %d, %v", v, err)
	}

	r := p.call(t, "GET", "/twins/myDeviceId?api-version=2021-04-12", "")
	tw := r.json(t)
	if r.Status != 200 || get(tw, "properties.reported.connectivity.type") != "cellular" {
		t.Fatalf("twin after report: %d %s", r.Status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("content type %q", ct)
	}
	etag := tw["etag"].(string)
	r = p.call(t, "PATCH", "/twins/myDeviceId?api-version=2021-04-12",
		`{"tags":{"location":{"region":"US","plant":"Redmond43"}}}`, "If-Match", strconv.Quote(etag))
	if r.Status != 200 || get(r.json(t), "tags.location.plant") != "Redmond43" {
		t.Fatalf("tags patch: %d %s", r.Status, r.Body)
	}

	r = p.call(t, "PATCH", "/twins/myDeviceId", `{"properties":{"desired":{"telemetryConfig":{"sendFrequency":"5m"}}}}`, "If-Match", `"*"`)
	if r.Status != 200 {
		t.Fatalf("desired patch: %d %s", r.Status, r.Body)
	}
	select {
	case n := <-dev.Desired():
		var body map[string]any
		json.Unmarshal(n.Body, &body)
		if n.Version != 2 || body["$version"] != 2.0 || get(body, "telemetryConfig.sendFrequency") != "5m" || len(body) != 2 {
			t.Fatalf("desired notification: version %d body %s", n.Version, n.Body)
		}
	case <-ctx.Done():
		t.Fatal("the device never received the desired patch")
	}

	r = p.call(t, "PATCH", "/twins/myDeviceId", `{"tags":{"x":1}}`, "If-Match", strconv.Quote(etag))
	if r.Status != 412 || r.Header.Get("iothub-errorcode") != "PreconditionFailed" {
		t.Fatalf("stale etag: %d %s", r.Status, r.Body)
	}
	checkSeedTwin(t, p)

	// The same after a clean restart and after a kill -9.
	p.stop()
	p = startTwinhub(t, p.dataDir)
	checkSeedTwin(t, p)
	p.kill()
	p = startTwinhub(t, p.dataDir)
	checkSeedTwin(t, p)
}

// checkSeedTwin verifies the twin the seed flow leaves behind.
func checkSeedTwin(t *testing.T, p *proc) {
	t.Helper()
	r := p.call(t, "GET", "/twins/myDeviceId", "")
	tw := r.json(t)
	want := map[string]any{
		"deviceId":                              "myDeviceId",
		"version":                               5.0, // created 2, reported 3, tags 4, desired 5
		"etag":                                  "AAAAAAAAAAM=",
		"tags.location.region":                  "US",
		"tags.location.plant":                   "Redmond43",
		"properties.desired.$version":           2.0,
		"properties.reported.$version":          2.0,
		"properties.reported.connectivity.type": "cellular",
		"properties.desired.telemetryConfig.sendFrequency":                               "5m",
		"properties.desired.$metadata.telemetryConfig.sendFrequency.$lastUpdatedVersion": 2.0,
		"properties.desired.$metadata.$lastUpdatedVersion":                               2.0,
	}
	for path, v := range want {
		if got := get(tw, path); got != v {
			t.Errorf("%s = %v, want %v\n%s", path, got, v, r.Body)
		}
	}
	for _, path := range []string{
		"properties.reported.$metadata.connectivity.type.$lastUpdated",
		"properties.reported.$metadata.connectivity.$lastUpdated",
		"properties.reported.$metadata.$lastUpdated",
		"properties.desired.$metadata.telemetryConfig.sendFrequency.$lastUpdated",
	} {
		s, _ := get(tw, path).(string)
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			t.Errorf("%s = %q is not a timestamp", path, s)
		}
	}
	if get(tw, "properties.reported.$metadata.connectivity.type.$lastUpdatedVersion") != nil {
		t.Errorf("reported metadata must not carry $lastUpdatedVersion")
	}
	var raw map[string]json.RawMessage
	json.Unmarshal(r.Body, &raw)
	if _, ok := raw["tags"]; !ok {
		t.Errorf("tags missing")
	}
}
