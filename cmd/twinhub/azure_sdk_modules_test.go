package main

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// moduleCall runs one module_service.js operation and returns its event.
func (h *azureHub) moduleCall(t *testing.T, svc []string, op, deviceID, moduleID string, args ...string) sdkEvent {
	t.Helper()
	names := map[string]string{"add": "added", "list": "list", "twin": "twin", "update": "updated", "query": "query", "remove": "removed"}
	return oneEvent(t, h.runScript(t, svc, "module_service.js", append([]string{op, deviceID, moduleID}, args...)...), names[op])
}

// twinIDs lists "deviceId" or "deviceId/moduleId" of the twins a module
// query returned.
func twinIDs(e sdkEvent) []string {
	var ids []string
	twins, _ := e["twins"].([]any)
	for _, tw := range twins {
		m, _ := tw.(map[string]any)
		id, _ := m["deviceId"].(string)
		if mod, ok := m["moduleId"].(string); ok {
			id += "/" + mod
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// TestAzureSDKModuleTwins: with the unmodified SDKs, the back end adds
// module identities (registry.addModule), lists them, reads and patches
// their twins (getModuleTwin, updateModuleTwin) and queries FROM
// devices.modules; a module connects with ModuleClient over Mqtt and
// MqttWs, reads its twin, receives desired changes and reports. Each
// module's twin is its own (the device's twin does not change), bad module
// input gets a clear error and changes nothing, and deleting the device
// deletes its modules.
func TestAzureSDKModuleTwins(t *testing.T) {
	h := startAzureHub(t)
	const dev = "modDev"
	h.createDevice(t, dev)
	svc := []string{"SERVICE_CONNECTION_STRING=" + h.serviceCS(t)}
	for _, m := range []string{"m1", "m2"} {
		added := h.moduleCall(t, svc, "add", dev, m)
		mod, _ := added["module"].(map[string]any)
		if mod["moduleId"] != m || mod["deviceId"] != dev || get(mod, "authentication.symmetricKey.primaryKey") == "" {
			t.Fatalf("addModule %s returned %v", m, mod)
		}
	}

	// Bad input: a clear error, and nothing changes.
	for _, c := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"PUT", "/devices/" + dev + "/modules/m1", http.StatusConflict, "ModuleAlreadyExistsOnDevice"},
		{"PUT", "/devices/" + dev + "/modules/bad%23id", http.StatusBadRequest, "ArgumentInvalid"},
		{"PUT", "/devices/" + dev + "/modules/a%2Fb", http.StatusBadRequest, "ArgumentInvalid"},
		{"PUT", "/devices/noSuchDevice/modules/m1", http.StatusNotFound, "DeviceNotFound"},
		{"GET", "/devices/" + dev + "/modules/m9", http.StatusNotFound, "ModuleNotFound"},
		{"GET", "/twins/" + dev + "/modules/m9", http.StatusNotFound, "ModuleNotFound"},
		{"GET", "/devices/" + dev + "%2Fm1", http.StatusBadRequest, "ArgumentInvalid"},
	} {
		r := h.call(t, c.method, c.path, "")
		if r.Status != c.status || r.Header.Get("iothub-errorcode") != c.code {
			t.Errorf("%s %s: %d %s %s, want %d %s", c.method, c.path, r.Status, r.Header.Get("iothub-errorcode"), r.Body, c.status, c.code)
		}
	}
	if l := h.moduleCall(t, svc, "list", dev, ""); !sameJSON(t, l["moduleIds"], `["m1","m2"]`) || !sameJSON(t, l["deviceIds"], `["modDev","modDev"]`) {
		t.Fatalf("getModulesOnDevice: %v", l)
	}

	// Each module on its own transport: twin read, desired change, report.
	for _, c := range []struct{ module, transport string }{{"m1", "Mqtt"}, {"m2", "MqttWs"}} {
		args := []string{"connection-string", "--device", dev, "--module", c.module}
		if c.transport == "Mqtt" {
			args = append(args, "--gateway", "localhost:"+h.mqttsPort) // MqttWs: wss://localhost:443
		}
		cs := h.cli(t, args...)
		n, ready := h.startDeviceTwin(t, c.transport, cs)
		if !sameJSON(t, ready["desired"], `{"$version":1}`) {
			t.Fatalf("%s (%s): desired properties read by the module: %v", c.module, c.transport, ready["desired"])
		}
		upd := h.moduleCall(t, svc, "update", dev, c.module, `{"properties":{"desired":{"fw":"2.0"}},"tags":{"role":"`+c.module+`"}}`, "read")
		if get(upd["twin"].(map[string]any), "moduleId") != c.module {
			t.Errorf("updateModuleTwin %s returned %v", c.module, upd)
		}
		expectSDKDesired(t, n, c.module+" desired", `{"fw":"2.0","$version":2}`, `{"fw":"2.0","$version":2}`)
		n.send(t, `report {"fwReported":"2.0"}`)
		n.next(t, 15*time.Second, "reported")
		n.send(t, "exit")
		n.wait(t)
		tw := h.moduleCall(t, svc, "twin", dev, c.module)["twin"].(map[string]any)
		if get(tw, "properties.reported.fwReported") != "2.0" || get(tw, "deviceId") != dev || get(tw, "tags.role") != c.module {
			t.Errorf("%s's twin after the report: %v", c.module, tw)
		}
	}
	if tw := h.twin(t, dev); get(tw, "properties.desired.fw") != nil || get(tw, "properties.reported.fwReported") != nil || tw["moduleId"] != nil {
		t.Errorf("the device's twin changed with its modules': %v", tw)
	}

	q := h.moduleCall(t, svc, "query", "", "", "SELECT * FROM devices.modules WHERE properties.reported.fwReported = '2.0'")
	if ids := twinIDs(q); !slices.Equal(ids, []string{"modDev/m1", "modDev/m2"}) {
		t.Errorf("FROM devices.modules: %v", ids)
	}
	q = h.moduleCall(t, svc, "query", "", "", "SELECT * FROM devices WHERE deviceId = '"+dev+"'")
	if ids := twinIDs(q); !slices.Equal(ids, []string{dev}) {
		t.Errorf("FROM devices holds modules: %v", ids)
	}

	// A device ID with a quote: its modules are found by a query with that ID.
	h.createDevice(t, "o'k")
	if r := h.call(t, "PUT", "/devices/o'k/modules/q1", ""); r.Status != http.StatusOK {
		t.Fatalf("module of o'k: %d %s", r.Status, r.Body)
	}
	if r := h.call(t, "GET", "/devices/o'k/modules", ""); r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"moduleId":"q1"`) {
		t.Errorf("modules of o'k: %d %s", r.Status, r.Body)
	}

	h.moduleCall(t, svc, "remove", dev, "m2")
	if r := h.call(t, "GET", "/twins/"+dev+"/modules/m2", ""); r.Status != http.StatusNotFound {
		t.Errorf("module twin after removeModule: %d %s", r.Status, r.Body)
	}
	if r := h.call(t, "DELETE", "/devices/"+dev, ""); r.Status != http.StatusNoContent {
		t.Fatalf("deleting the device: %d %s", r.Status, r.Body)
	}
	if r := h.call(t, "GET", "/devices/"+dev+"/modules/m1", ""); r.Status != http.StatusNotFound || r.Header.Get("iothub-errorcode") != "ModuleNotFound" {
		t.Errorf("module after its device was deleted: %d %s", r.Status, r.Body)
	}
	q = h.moduleCall(t, svc, "query", "", "", "SELECT * FROM devices.modules")
	if ids := twinIDs(q); !slices.Equal(ids, []string{"o'k/q1"}) {
		t.Errorf("FROM devices.modules after the device was deleted: %v", ids)
	}
}
