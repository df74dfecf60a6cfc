package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/nats-io/nuid"

	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/twin"
)

// entity returns the entity a request is about: the device {id}, or the
// module {mid} of device {id} (pipeline.ModuleEntity). An ID that breaks
// IoT Hub's rules, or holds a '/' (sent encoded as %2F, which would name a
// module through a device route), gets 400 and ok false.
func entity(w http.ResponseWriter, r *http.Request) (string, bool) {
	id, mid := r.PathValue("id"), r.PathValue("mid")
	err := twin.ValidateDeviceID(id)
	if err == nil && mid != "" {
		err = twin.ValidateModuleID(mid)
	}
	if err == nil && (strings.Contains(id, "/") || strings.Contains(mid, "/")) {
		err = errors.New("device and module IDs may not contain '/'")
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "ArgumentInvalid", err.Error())
		return "", false
	}
	if mid != "" {
		return pipeline.ModuleEntity(id, mid), true
	}
	return id, true
}

// writeNotFound answers 404 for a device or module that does not exist.
func writeNotFound(w http.ResponseWriter, entity string) {
	device, module := pipeline.SplitEntity(entity)
	if module != "" {
		writeError(w, http.StatusNotFound, "ModuleNotFound", fmt.Sprintf("module %q of device %q does not exist", module, device))
		return
	}
	writeError(w, http.StatusNotFound, "DeviceNotFound", fmt.Sprintf("device %q does not exist", device))
}

// putModule creates or updates a module identity, which needs its device.
func (a *API) putModule(w http.ResponseWriter, r *http.Request) {
	id, ok := entity(w, r)
	if !ok {
		return
	}
	device, _ := pipeline.SplitEntity(id)
	if _, err := a.records.Get(r.Context(), device); err != nil {
		if errors.Is(err, pipeline.ErrNotFound) {
			writeNotFound(w, device)
			return
		}
		a.log.Error("reading a device record failed", "device", device, "err", err)
		writeError(w, http.StatusServiceUnavailable, "ServiceUnavailable", "reading the device failed; retry")
		return
	}
	a.putDevice(w, r)
}

// listModules answers GET /devices/{id}/modules: the device's module
// identities, in module ID order.
func (a *API) listModules(w http.ResponseWriter, r *http.Request) {
	rec, ok := a.record(w, r)
	if !ok {
		return
	}
	mods, err := a.records.Modules(r.Context(), rec.Twin.DeviceID)
	if err != nil {
		a.log.Error("listing modules failed", "device", rec.Twin.DeviceID, "err", err)
		writeError(w, http.StatusServiceUnavailable, "ServiceUnavailable", "listing modules failed; retry")
		return
	}
	docs := make([]pipeline.ModuleDocument, 0, len(mods))
	for _, m := range mods {
		docs = append(docs, m.ModuleDocument())
	}
	b, _ := json.Marshal(docs)
	writeJSON(w, http.StatusOK, b)
}

// deleteModules deletes the modules of a device that was just deleted, as
// IoT Hub does, or just created (modules a deletion left behind when the
// hub stopped halfway). A module whose device is gone cannot connect.
func (a *API) deleteModules(ctx context.Context, deviceID string) {
	mods, err := a.records.Modules(ctx, deviceID)
	if err != nil {
		a.log.Warn("listing the modules of a deleted device failed; delete the device again to remove them", "device", deviceID, "err", err)
		return
	}
	for _, m := range mods {
		cmd := pipeline.Command{Kind: pipeline.KindDeleteDevice, DeviceID: pipeline.ModuleEntity(deviceID, m.Twin.ModuleID)}
		cmd.ID = nuid.Next()
		if res, err := a.commands.Do(ctx, cmd); err != nil || (!res.OK() && res.Status != http.StatusNotFound) {
			a.log.Warn("deleting a module of a deleted device failed; delete the device again to remove it",
				"device", deviceID, "module", m.Twin.ModuleID, "err", err, "status", res.Status)
		}
	}
}
