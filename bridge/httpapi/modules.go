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
		writeError(w, pipeline.CodeArgumentInvalid, err.Error())
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
		writeError(w, pipeline.CodeModuleNotFound, fmt.Sprintf("module %q of device %q does not exist", module, device))
		return
	}
	writeError(w, pipeline.CodeDeviceNotFound, fmt.Sprintf("device %q does not exist", device))
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
		writeError(w, pipeline.CodeServiceUnavailable, "reading the device failed; retry")
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
	mods, err := a.modules(r.Context(), rec.Twin.DeviceID)
	if err != nil {
		a.log.Error("listing modules failed", "device", rec.Twin.DeviceID, "err", err)
		writeError(w, pipeline.CodeServiceUnavailable, "listing modules failed; retry")
		return
	}
	docs := make([]pipeline.ModuleDocument, 0, len(mods))
	for _, m := range mods {
		docs = append(docs, m.ModuleDocument())
	}
	b, _ := json.Marshal(docs)
	writeJSON(w, http.StatusOK, b)
}

// modules returns the module records of a device, in module ID order. With
// the query projection it finds them by index (SELECT moduleId FROM
// devices.modules WHERE deviceId = …, consistent with every acknowledged
// write); without, by a walk of the twin bucket's keys.
func (a *API) modules(ctx context.Context, deviceID string) ([]*pipeline.Record, error) {
	if a.cfg.Querier == nil {
		return a.records.Modules(ctx, deviceID)
	}
	query := "SELECT moduleId FROM devices.modules WHERE deviceId = '" + strings.ReplaceAll(deviceID, "'", `\'`) + "'"
	var out []*pipeline.Record
	for cont := ""; ; {
		page, err := a.cfg.Querier.Query(ctx, QueryRequest{Query: query, PageSize: MaxQueryPageSize, Continuation: cont})
		if err != nil {
			return nil, err
		}
		for _, item := range page.Items {
			var row struct {
				ModuleID string `json:"moduleId"`
			}
			if err := json.Unmarshal(item, &row); err != nil {
				return nil, fmt.Errorf("BUG: module query row %s: %w", item, err)
			}
			rec, err := a.records.Get(ctx, pipeline.ModuleEntity(deviceID, row.ModuleID))
			if errors.Is(err, pipeline.ErrNotFound) {
				continue // deleted since
			}
			if err != nil {
				return nil, err
			}
			out = append(out, rec)
		}
		if cont = page.Continuation; cont == "" {
			return out, nil
		}
	}
}

// deleteModules deletes the modules of a device that was just deleted, as
// IoT Hub does. A module a deletion left behind (the hub stopped halfway)
// cannot connect, since its device is gone; DELETE
// /devices/{id}/modules/{moduleId} removes it.
func (a *API) deleteModules(ctx context.Context, deviceID string) {
	mods, err := a.modules(ctx, deviceID)
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
