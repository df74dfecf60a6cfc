package main

import (
	"testing"
	"time"
)

// updateTwin runs update_twin.js: registry.updateTwin with a patch and the
// etag the twin has ("read") or the one given (e.g. "*").
func (h *azureHub) updateTwin(t *testing.T, svc []string, deviceID, patch, etag string) sdkEvent {
	t.Helper()
	return oneEvent(t, h.runScript(t, svc, "update_twin.js", deviceID, patch, etag), "updated")
}

// startDeviceTwin starts device_twin.js on a transport ("Mqtt" or "MqttWs")
// with a device connection string, and waits until it has read its twin
// and subscribed to desired changes.
func (h *azureHub) startDeviceTwin(t *testing.T, transport, connectionString string) (*nodeProc, sdkEvent) {
	t.Helper()
	n := h.startScript(t, []string{"DEVICE_CONNECTION_STRING=" + connectionString, "TRANSPORT=" + transport}, "device_twin.js")
	return n, n.next(t, 30*time.Second, "ready")
}

// expectSDKDesired waits for the device's next desired notification and checks
// it and the SDK's cached desired properties after it.
func expectSDKDesired(t *testing.T, n *nodeProc, what, value, cache string) {
	t.Helper()
	e := n.next(t, 15*time.Second, "desired")
	if !sameJSON(t, e["value"], value) || !sameJSON(t, e["desired"], cache) {
		t.Errorf("%s: the device got %v with cached desired properties %v; want %s and %s", what, e["value"], e["desired"], value, cache)
	}
}

// desiredWithoutMeta is a twin's properties.desired without $metadata.
func desiredWithoutMeta(tw map[string]any) map[string]any {
	d, _ := get(tw, "properties.desired").(map[string]any)
	out := map[string]any{}
	for k, v := range d {
		if k != "$metadata" {
			out[k] = v
		}
	}
	return out
}

// TestAzureSDKNullSections: with the unmodified SDKs, the back end sets the
// desired properties to null as a whole (registry.updateTwin, with the etag
// it read and with "*") and the device is told of each removed key as null,
// so the SDK's cached desired properties (twin.properties.desired) lose
// them; tags set to null (both etags) are gone, without a desired
// notification; and after PUT /twins/{id} (which the Node service SDK does
// not offer) the device's cache holds exactly the replacement, top-level
// and nested keys alike, because the notification nulls what was removed.
func TestAzureSDKNullSections(t *testing.T) {
	h := startAzureHub(t)
	const id = "nullDev"
	h.createDevice(t, id)
	svc := []string{"SERVICE_CONNECTION_STRING=" + h.serviceCS(t)}
	h.updateTwin(t, svc, id, `{"tags":{"site":"x"},"properties":{"desired":{"foo":1,"bar":{"b":2}}}}`, "read")

	n, ready := h.startDeviceTwin(t, "Mqtt", h.deviceCS(t, id))
	if !sameJSON(t, ready["desired"], `{"foo":1,"bar":{"b":2},"$version":2}`) {
		t.Fatalf("desired properties read by the device: %v", ready["desired"])
	}

	upd := h.updateTwin(t, svc, id, `{"properties":{"desired":null}}`, "read")
	if !sameJSON(t, desiredWithoutMeta(map[string]any{"properties": map[string]any{"desired": upd["desired"]}}), `{"$version":3}`) {
		t.Errorf("twin returned to updateTwin after desired null: %v", upd)
	}
	expectSDKDesired(t, n, "desired null with the etag read", `{"foo":null,"bar":null,"$version":3}`, `{"$version":3}`)

	h.updateTwin(t, svc, id, `{"properties":{"desired":{"a":1,"b":{"c":2}}}}`, "*")
	expectSDKDesired(t, n, "desired set again", `{"a":1,"b":{"c":2},"$version":4}`, `{"a":1,"b":{"c":2},"$version":4}`)
	h.updateTwin(t, svc, id, `{"properties":{"desired":null}}`, "*")
	expectSDKDesired(t, n, "desired null with etag *", `{"a":null,"b":null,"$version":5}`, `{"$version":5}`)
	if tw := h.twin(t, id); !sameJSON(t, desiredWithoutMeta(tw), `{"$version":5}`) || !sameJSON(t, get(tw, "properties.desired.$metadata"), `{"$lastUpdated":"`+get(tw, "properties.desired.$metadata.$lastUpdated").(string)+`","$lastUpdatedVersion":5}`) {
		t.Errorf("desired properties over HTTP after the deletes: %v", get(tw, "properties.desired"))
	}

	before := h.twin(t, id)["version"].(float64)
	if upd := h.updateTwin(t, svc, id, `{"tags":null}`, "read"); !sameJSON(t, upd["tags"], `{}`) || upd["version"] != before+1 {
		t.Errorf("tags null with the etag read: %v (twin version was %v)", upd, before)
	}
	h.updateTwin(t, svc, id, `{"tags":{"t":{"u":1},"v":2}}`, "*")
	if upd := h.updateTwin(t, svc, id, `{"tags":null}`, "*"); !sameJSON(t, upd["tags"], `{}`) || upd["version"] != before+3 {
		t.Errorf("tags null with etag *: %v", upd)
	}
	if tw := h.twin(t, id); tw["tags"] != nil {
		t.Errorf("tags over HTTP after tags null: %v", tw["tags"])
	}

	// Replacements. A tags change above caused no desired notification:
	// the next one the device sees is the next desired change's.
	h.updateTwin(t, svc, id, `{"properties":{"desired":{"a":1,"b":2}}}`, "*")
	expectSDKDesired(t, n, "desired set before the replace", `{"a":1,"b":2,"$version":6}`, `{"a":1,"b":2,"$version":6}`)
	replace := func(body string) {
		t.Helper()
		if r := h.call(t, "PUT", "/twins/"+id, body, "If-Match", `"*"`, "Content-Type", "application/json"); r.Status != 200 {
			t.Fatalf("PUT /twins/%s: %d %s", id, r.Status, r.Body)
		}
	}
	replace(`{"properties":{"desired":{"a":1,"c":100}}}`)
	expectSDKDesired(t, n, "replace", `{"a":1,"b":null,"c":100,"$version":7}`, `{"a":1,"c":100,"$version":7}`)
	replace(`{"properties":{"desired":{"n":{"x":1,"y":{"z":2}}}}}`)
	expectSDKDesired(t, n, "replace with an object", `{"a":null,"c":null,"n":{"x":1,"y":{"z":2}},"$version":8}`, `{"n":{"x":1,"y":{"z":2}},"$version":8}`)
	replace(`{"properties":{"desired":{"n":{"y":{}}}}}`)
	expectSDKDesired(t, n, "replace removing nested keys", `{"n":{"x":null,"y":{"z":null}},"$version":9}`, `{"n":{"y":{}},"$version":9}`)
	if tw := h.twin(t, id); !sameJSON(t, desiredWithoutMeta(tw), `{"n":{"y":{}},"$version":9}`) {
		t.Errorf("desired properties over HTTP after the replacements: %v", desiredWithoutMeta(tw))
	}

	// Refused: changes nothing, notifies nothing.
	for _, body := range []string{`{"properties":{"reported":null}}`, `{"properties":null}`} {
		if r := h.call(t, "PATCH", "/twins/"+id, body, "If-Match", `"*"`, "Content-Type", "application/json"); r.Status != 400 || r.Header.Get("iothub-errorcode") != "ArgumentInvalid" {
			t.Errorf("PATCH %s: %d %s, want 400 ArgumentInvalid", body, r.Status, r.Body)
		}
	}
	if tw := h.twin(t, id); get(tw, "properties.desired.$version") != 9.0 {
		t.Errorf("a refused patch changed the twin: %v", tw)
	}
	n.send(t, "exit")
	read := len(n.seen)
	n.wait(t)
	for _, e := range n.seen[read:] {
		if e.name() == "desired" {
			t.Errorf("a notification no change should have caused: %v", e)
		}
	}
}

// TestAzureSDKMqttWs: a device on the SDK's MqttWs transport, with a plain
// connection string (HostName=localhost, so wss://localhost:443/$iothub/websocket,
// the HTTPS API's port), reads its twin, reports properties, and receives
// desired changes, including a whole section set to null.
func TestAzureSDKMqttWs(t *testing.T) {
	h := startAzureHub(t)
	const id = "wsDev"
	h.createDevice(t, id)
	if r := h.call(t, "PATCH", "/twins/"+id, `{"properties":{"desired":{"fw":"1.0"}}}`, "If-Match", `"*"`); r.Status != 200 {
		t.Fatalf("desired patch: %d %s", r.Status, r.Body)
	}
	svc := []string{"SERVICE_CONNECTION_STRING=" + h.serviceCS(t)}
	cs := h.cli(t, "connection-string", "--device", id)
	n, ready := h.startDeviceTwin(t, "MqttWs", cs)
	if !sameJSON(t, ready["desired"], `{"fw":"1.0","$version":2}`) || !sameJSON(t, ready["reported"], `{"$version":1}`) {
		t.Fatalf("twin read over WebSockets: %v", ready)
	}

	n.send(t, `report {"fw":"1.0","state":{"ok":true}}`)
	if e := n.next(t, 15*time.Second, "reported"); !sameJSON(t, e["reported"], `{"fw":"1.0","state":{"ok":true},"$version":1}`) {
		t.Errorf("reported over WebSockets: %v", e)
	}
	tw := h.twin(t, id)
	if get(tw, "properties.reported.state.ok") != true || get(tw, "properties.reported.$version") != 2.0 || tw["connectionState"] != "Connected" {
		t.Errorf("twin after the report over WebSockets: %v", tw)
	}

	h.updateTwin(t, svc, id, `{"properties":{"desired":{"fw":"2.0"}}}`, "read")
	expectSDKDesired(t, n, "desired patch over WebSockets", `{"fw":"2.0","$version":3}`, `{"fw":"2.0","$version":3}`)
	h.updateTwin(t, svc, id, `{"properties":{"desired":null}}`, "*")
	expectSDKDesired(t, n, "desired null over WebSockets", `{"fw":null,"$version":4}`, `{"$version":4}`)

	n.send(t, "exit")
	n.wait(t)
	waitFor(t, 20*time.Second, "the device to show as disconnected", func() bool { return h.twin(t, id)["connectionState"] == "Disconnected" })
}
