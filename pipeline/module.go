package pipeline

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/twinhub/twinhub/pipeline/twin"
)

// Module twins. IoT Hub gives every module identity of a device
// (devices/{deviceId}/modules/{moduleId}) a twin of its own, with the rules
// of a device twin. The pipeline keeps, changes and streams a module
// exactly as a device, under its entity ID "{deviceId}/{moduleId}": device
// and module IDs may not contain '/', so an entity ID names one device or
// one module, and a module's commands, record, events and history are keyed
// by it (its KV key and event subject token are topology.Token of it).

// ModuleEntity is the entity ID of module moduleID of device deviceID.
func ModuleEntity(deviceID, moduleID string) string { return deviceID + "/" + moduleID }

// SplitEntity returns the device ID and module ID an entity ID names; the
// module ID is "" for a device.
func SplitEntity(entity string) (deviceID, moduleID string) {
	deviceID, moduleID, _ = strings.Cut(entity, "/")
	return deviceID, moduleID
}

// IsModule reports whether entity names a module.
func IsModule(entity string) bool { return strings.Contains(entity, "/") }

// ValidateEntityID checks a device ID, or both parts of a module's entity ID.
func ValidateEntityID(entity string) error {
	deviceID, moduleID, isModule := strings.Cut(entity, "/")
	if err := twin.ValidateDeviceID(deviceID); err != nil {
		return err
	}
	if isModule {
		return twin.ValidateModuleID(moduleID)
	}
	return nil
}

// newTwin is a fresh twin for an entity: a module twin carries its device's
// ID and its module ID.
func newTwin(entity string, at time.Time) *twin.Twin {
	deviceID, moduleID := SplitEntity(entity)
	t := twin.New(deviceID, at)
	t.ModuleID = moduleID
	return t
}

// entityNoun names what an entity is in messages: device "d" or module "m" of device "d".
func entityNoun(entity string) string {
	if deviceID, moduleID := SplitEntity(entity); moduleID != "" {
		return fmt.Sprintf("module %q of device %q", moduleID, deviceID)
	}
	return fmt.Sprintf("device %q", entity)
}

func notFound(cmd Command) Result {
	if IsModule(cmd.DeviceID) {
		return Failure(cmd.ID, CodeModuleNotFound, "%s does not exist", entityNoun(cmd.DeviceID))
	}
	return Failure(cmd.ID, CodeDeviceNotFound, "%s does not exist", entityNoun(cmd.DeviceID))
}

func alreadyExists(cmd Command) Result {
	if IsModule(cmd.DeviceID) {
		return Failure(cmd.ID, CodeModuleAlreadyExistsOnDevice, "%s already exists", entityNoun(cmd.DeviceID))
	}
	return Failure(cmd.ID, CodeDeviceAlreadyExists, "%s already exists", entityNoun(cmd.DeviceID))
}

// ModuleDocument is a module identity in IoT Hub's registry shape
// (GET/PUT /devices/{id}/modules/{moduleId}).
type ModuleDocument struct {
	ModuleID                   string          `json:"moduleId"`
	ManagedBy                  *string         `json:"managedBy"`
	DeviceID                   string          `json:"deviceId"`
	GenerationID               string          `json:"generationId"`
	Etag                       string          `json:"etag"`
	ConnectionState            string          `json:"connectionState"`
	ConnectionStateUpdatedTime string          `json:"connectionStateUpdatedTime"`
	LastActivityTime           string          `json:"lastActivityTime"`
	CloudToDeviceMessageCount  int64           `json:"cloudToDeviceMessageCount"`
	Authentication             *Authentication `json:"authentication"`
}

// ModuleDocument renders a module record's identity.
func (r *Record) ModuleDocument() ModuleDocument {
	d := r.Document()
	return ModuleDocument{
		ModuleID:                   r.Twin.ModuleID,
		DeviceID:                   d.DeviceID,
		GenerationID:               d.GenerationID,
		Etag:                       d.Etag,
		ConnectionState:            d.ConnectionState,
		ConnectionStateUpdatedTime: d.ConnectionStateUpdatedTime,
		LastActivityTime:           d.LastActivityTime,
		CloudToDeviceMessageCount:  d.CloudToDeviceMessageCount,
		Authentication:             d.Authentication,
	}
}

// IdentityJSON renders the record's registry document: a device's, or a
// module's when the record is a module twin's.
func (r *Record) IdentityJSON() json.RawMessage {
	var v any = r.Document()
	if r.Twin.ModuleID != "" {
		v = r.ModuleDocument()
	}
	b, err := json.Marshal(v)
	if err != nil {
		panic("BUG: marshalling a registry document: " + err.Error())
	}
	return b
}
