// Package pipeline carries twin changes from the protocol edges to the twin
// state: the edges submit Commands to JetStream with a Client, the Processor
// (Watermill handlers, one per command partition) applies them to the twin
// records in JetStream KV, publishes one change Event per accepted change, and
// answers each command with a Result.
package pipeline

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
)

// Kind says what a command asks for.
type Kind string

// Command kinds.
const (
	KindDeviceGet     Kind = "deviceGet"     // the device reads its twin (desired and reported)
	KindPatchReported Kind = "patchReported" // the device reports properties
	KindPatchTwin     Kind = "patchTwin"     // the back end patches tags and/or desired
	KindReplaceTwin   Kind = "replaceTwin"   // the back end replaces tags and desired
	KindCreateDevice  Kind = "createDevice"  // the registry creates a device and its twin
	KindUpdateDevice  Kind = "updateDevice"  // the registry changes status or keys
	KindDeleteDevice  Kind = "deleteDevice"  // the registry deletes a device and its twin
	KindConnection    Kind = "connection"    // the broker reports a device connected or disconnected
)

// Command is a request to the twin processor. On the command stream the body
// is the message data and the other fields are headers (see Msg), with
// Nats-Msg-Id set to ID.
type Command struct {
	// ID identifies the command for JetStream dedupe and for replies.
	ID       string `json:"id"`
	Kind     Kind   `json:"kind"`
	DeviceID string `json:"deviceId"`
	// IfMatch is the etag precondition ("" or "*" for none), as sent in If-Match.
	IfMatch string `json:"ifMatch,omitempty"`
	// Body is the patch, twin or device document, as received. It is raw
	// bytes (base64 in the command's JSON) because it may not be valid JSON:
	// rejecting it is the processor's job.
	Body []byte `json:"body,omitempty"`
	// Connected is the new connection state of a KindConnection command.
	Connected bool `json:"connected,omitempty"`
}

// Command headers.
const (
	headerKind      = "Twinhub-Kind"
	headerDevice    = "Twinhub-Device"
	headerIfMatch   = "Twinhub-If-Match"
	headerConnected = "Twinhub-Connected"
	headerCommandID = "Twinhub-Command"
)

// Msg is the command as a NATS message on subject, answered on reply.
func (c Command) Msg(subject, reply string) *nats.Msg {
	h := nats.Header{
		headerKind:      []string{string(c.Kind)},
		headerDevice:    []string{c.DeviceID},
		headerCommandID: []string{c.ID},
	}
	if c.IfMatch != "" {
		h.Set(headerIfMatch, c.IfMatch)
	}
	if c.Connected {
		h.Set(headerConnected, "1")
	}
	if reply != "" {
		h.Set(ReplyHeader, reply)
	}
	return &nats.Msg{Subject: subject, Data: c.Body, Header: h}
}

// commandFrom rebuilds a command from a message's headers and data.
func commandFrom(header func(string) string, data []byte) (Command, error) {
	c := Command{
		ID:        header(headerCommandID),
		Kind:      Kind(header(headerKind)),
		DeviceID:  header(headerDevice),
		IfMatch:   header(headerIfMatch),
		Connected: header(headerConnected) == "1",
		Body:      data,
	}
	if c.ID == "" || c.Kind == "" || c.DeviceID == "" {
		return c, fmt.Errorf("command without %s, %s or %s header", headerCommandID, headerKind, headerDevice)
	}
	return c, nil
}

// Result answers a command.
type Result struct {
	CommandID string `json:"commandId"`
	// Status is an HTTP status code: 200, 204, or an error status.
	Status int `json:"status"`
	// Code is IoT Hub's error code name (e.g. "DeviceNotFound") when Status >= 400.
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
	// Version is the new reported $version for patchReported, the twin version otherwise.
	Version int64 `json:"version,omitempty"`
	// Body is the response document: the twin (service view), the device
	// view for deviceGet, or the device identity for registry commands.
	Body json.RawMessage `json:"body,omitempty"`
}

// OK reports whether the command succeeded.
func (r Result) OK() bool { return r.Status < 300 }

// Err returns the result as an error when it failed.
func (r Result) Err() error {
	if r.OK() {
		return nil
	}
	return &ResultError{Result: r}
}

// ResultError is a failed Result as an error.
type ResultError struct{ Result Result }

func (e *ResultError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Result.Status, e.Result.Code, e.Result.Message)
}

// Failure builds a failed Result.
func Failure(commandID string, code ErrorCode, format string, args ...any) Result {
	return Result{CommandID: commandID, Status: code.Status, Code: code.Name, Message: fmt.Sprintf(format, args...)}
}

// Change-event operations.
const (
	OpCreateDevice = "createDevice"
	OpUpdateTwin   = "updateTwin"
	OpReplaceTwin  = "replaceTwin"
	OpDeleteDevice = "deleteDevice"
)

// Change-event sources.
const (
	SourceDevice  = "device"
	SourceBackend = "backend"
)

// Event is a change event, published once per accepted twin change on the
// device's event subject. It is twinhub's public change stream: per device
// and generation, Version runs 2, 3, 4, … without gaps or duplicates.
type Event struct {
	// SchemaVersion is the version of the event's JSON Schema
	// (deploy/events/twin-change-event.schema.json): EventSchemaVersion.
	// It changes only when a change would break a consumer; adding a field
	// does not change it.
	SchemaVersion int    `json:"schemaVersion"`
	DeviceID      string `json:"deviceId"`
	// GenerationID changes when a device is deleted and created again; the
	// version sequence starts over with each generation.
	GenerationID string `json:"generationId"`
	Op           string `json:"op"`
	Source       string `json:"source"`
	// Version, Etag, DesiredVersion and ReportedVersion are the twin's
	// counters after the change.
	Version         int64  `json:"version"`
	Etag            string `json:"etag"`
	DesiredVersion  int64  `json:"desiredVersion"`
	ReportedVersion int64  `json:"reportedVersion"`
	// Time is when the change was applied (RFC 3339, 100 ns precision); it is
	// the $lastUpdated of every node the change touched.
	Time string `json:"time"`
	// CommandID is the command that made the change.
	CommandID string `json:"commandId"`
	// Patch is the change as applied, as merge patches in which null
	// deletes a key. For updateTwin they are the patches as sent, except
	// that a section the back end set to null as a whole is a null for each
	// key it held ({} when it held none). For replaceTwin they are the whole
	// new tags and desired plus a null for each key the replacement removed,
	// at every object level both documents hold; without the nulls they are
	// the new documents.
	Patch EventPatch `json:"patch"`
	// Status is the device status a createDevice event set.
	Status string `json:"status,omitempty"`
}

// EventPatch holds the sections a change touched; absent sections are nil.
type EventPatch struct {
	Tags       json.RawMessage  `json:"tags,omitempty"`
	Properties *EventProperties `json:"properties,omitempty"`
}

// EventProperties holds the desired and reported parts of a patch.
type EventProperties struct {
	Desired  json.RawMessage `json:"desired,omitempty"`
	Reported json.RawMessage `json:"reported,omitempty"`
}

// EventSchemaVersion is the schema version of the change events this
// twinhub publishes, in each event's schemaVersion and SchemaHeader.
const EventSchemaVersion = 1

// SchemaHeader names the header of a change event that carries its
// schemaVersion, so a consumer can route or refuse events without decoding
// them.
const SchemaHeader = "Twinhub-Event-Schema"

// SectionsHeader names the header of a change event that lists the sections
// its patch touches ("tags", "desired", "reported", comma-separated), so a
// consumer can skip events without decoding them.
const SectionsHeader = "Twinhub-Sections"

func (p EventPatch) sections() string {
	var s []string
	if p.Tags != nil {
		s = append(s, "tags")
	}
	if p.Desired() != nil {
		s = append(s, "desired")
	}
	if p.Reported() != nil {
		s = append(s, "reported")
	}
	return strings.Join(s, ",")
}

// Desired returns the desired part of the patch, or nil.
func (p EventPatch) Desired() json.RawMessage {
	if p.Properties == nil {
		return nil
	}
	return p.Properties.Desired
}

// Reported returns the reported part of the patch, or nil.
func (p EventPatch) Reported() json.RawMessage {
	if p.Properties == nil {
		return nil
	}
	return p.Properties.Reported
}
