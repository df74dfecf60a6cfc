package pipeline

import (
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/twinhub/twinhub/pipeline/twin"
)

// DeviceDocument is a device identity in IoT Hub's registry shape
// (GET/PUT /devices/{id}).
type DeviceDocument struct {
	DeviceID                   string          `json:"deviceId"`
	GenerationID               string          `json:"generationId"`
	Etag                       string          `json:"etag"`
	ConnectionState            string          `json:"connectionState"`
	Status                     string          `json:"status"`
	StatusReason               *string         `json:"statusReason"`
	ConnectionStateUpdatedTime string          `json:"connectionStateUpdatedTime"`
	StatusUpdatedTime          string          `json:"statusUpdatedTime"`
	LastActivityTime           string          `json:"lastActivityTime"`
	CloudToDeviceMessageCount  int64           `json:"cloudToDeviceMessageCount"`
	Authentication             *Authentication `json:"authentication"`
	Capabilities               struct {
		IotEdge bool `json:"iotEdge"`
	} `json:"capabilities"`
}

// Authentication is a device's credentials in the registry shape.
type Authentication struct {
	SymmetricKey   *SymmetricKey `json:"symmetricKey,omitempty"`
	X509Thumbprint struct {
		PrimaryThumbprint   *string `json:"primaryThumbprint"`
		SecondaryThumbprint *string `json:"secondaryThumbprint"`
	} `json:"x509Thumbprint"`
	Type string `json:"type"`
}

// SymmetricKey holds a device's two SAS keys (base64); an X.509 device has
// none, and renders them as null, as IoT Hub does.
type SymmetricKey struct {
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
}

// MarshalJSON renders an empty key as null.
func (k SymmetricKey) MarshalJSON() ([]byte, error) {
	key := func(s string) *string {
		if s == "" {
			return nil
		}
		return &s
	}
	return json.Marshal(struct {
		PrimaryKey   *string `json:"primaryKey"`
		SecondaryKey *string `json:"secondaryKey"`
	}{key(k.PrimaryKey), key(k.SecondaryKey)})
}

// Document renders the record's device identity.
func (r *Record) Document() DeviceDocument {
	t := r.Twin
	d := DeviceDocument{
		DeviceID:                   t.DeviceID,
		GenerationID:               r.Identity.GenerationID,
		Etag:                       r.Identity.DeviceEtag(),
		ConnectionState:            t.ConnectionState,
		Status:                     t.Status,
		ConnectionStateUpdatedTime: twin.FormatTime(r.Identity.ConnectionStateUpdatedTime),
		StatusUpdatedTime:          twin.FormatTime(t.StatusUpdateTime),
		LastActivityTime:           twin.FormatTime(t.LastActivityTime),
		CloudToDeviceMessageCount:  t.CloudToDeviceMessageCount,
		Authentication:             r.Identity.authentication(),
	}
	if t.StatusReason != "" {
		reason := t.StatusReason
		d.StatusReason = &reason
	}
	return d
}

// deviceBody is what PUT /devices/{id} may carry.
type deviceBody struct {
	DeviceID       string          `json:"deviceId"`
	ModuleID       string          `json:"moduleId"`
	Status         string          `json:"status"`
	StatusReason   *string         `json:"statusReason"`
	Authentication *Authentication `json:"authentication"`
}

// parseDeviceBody parses and checks a registry body; current is the
// device's authentication type now (AuthSAS for a new device).
func parseDeviceBody(raw json.RawMessage, deviceID, current string) (deviceBody, error) {
	var b deviceBody
	if len(raw) == 0 {
		return b, nil
	}
	if _, err := twin.ParseJSON(raw); err != nil {
		return b, err
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		return b, fmt.Errorf("device document: %w", err)
	}
	device, module := SplitEntity(deviceID)
	if b.DeviceID != "" && b.DeviceID != device {
		return b, fmt.Errorf("deviceId %q in the body differs from %q in the path", b.DeviceID, device)
	}
	if b.ModuleID != "" && b.ModuleID != module {
		return b, fmt.Errorf("moduleId %q in the body differs from %q in the path", b.ModuleID, module)
	}
	switch b.Status {
	case "", "enabled", "disabled":
	default:
		return b, fmt.Errorf("status must be \"enabled\" or \"disabled\", got %q", b.Status)
	}
	if a := b.Authentication; a != nil {
		if module != "" && a.Type != "" && a.Type != AuthSAS {
			return b, fmt.Errorf("authentication type %q is for devices; a module authenticates with its symmetric keys (\"sas\")", a.Type)
		}
		if err := a.check(current); err != nil {
			return b, err
		}
		if k := a.SymmetricKey; k != nil {
			for _, key := range []string{k.PrimaryKey, k.SecondaryKey} {
				if key == "" {
					continue
				}
				raw, err := base64.StdEncoding.DecodeString(key)
				if err != nil || len(raw) < 16 || len(raw) > 64 {
					return b, fmt.Errorf("symmetric keys must be base64 of 16 to 64 bytes")
				}
			}
		}
	}
	return b, nil
}

// applyKeys sets the symmetric keys the body gives (an empty one is kept).
func (b deviceBody) applyKeys(id *Identity) {
	a := b.Authentication
	if a == nil || a.SymmetricKey == nil {
		return
	}
	if k := a.SymmetricKey.PrimaryKey; k != "" {
		id.PrimaryKey = k
	}
	if k := a.SymmetricKey.SecondaryKey; k != "" {
		id.SecondaryKey = k
	}
}
