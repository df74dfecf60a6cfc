package pipeline

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/twinhub/twinhub/pipeline/twin"
)

// The decision: what a command does to a device's record. It is pure (no
// I/O; the clock is an argument), so it is tested case by case in
// decide_test.go, and the processor's batch and slow paths share it.

// answer is the successful result of cmd given the record it produced or read.
func answer(cmd Command, rec *Record) Result {
	res := Result{CommandID: cmd.ID, Status: http.StatusOK}
	switch cmd.Kind {
	case KindDeviceGet:
		res.Body = rec.Twin.DeviceView()
		res.Version = rec.Twin.Version
	case KindPatchReported:
		res.Status = http.StatusNoContent
		res.Version = rec.Twin.Reported.Version
	case KindPatchTwin, KindReplaceTwin:
		b, err := json.Marshal(rec.Twin)
		if err != nil {
			panic("BUG: marshalling a twin: " + err.Error())
		}
		res.Body = b
		res.Version = rec.Twin.Version
	case KindCreateDevice, KindUpdateDevice:
		res.Body = rec.IdentityJSON()
	case KindDeleteDevice, KindConnection:
		res.Status = http.StatusNoContent
	}
	return res
}

// decide validates cmd against the record and computes the change it makes.
// It returns either a change or a final result (a read, or a rejection).
func decide(cmd Command, rec *Record, now time.Time) (*change, Result) {
	now = now.UTC().Truncate(100 * time.Nanosecond)
	if err := ValidateEntityID(cmd.DeviceID); err != nil {
		return nil, invalidArgument(cmd, err)
	}
	if cmd.Kind != KindCreateDevice && !rec.Exists() {
		return nil, notFound(cmd)
	}
	switch cmd.Kind {
	case KindDeviceGet:
		return nil, answer(cmd, rec)
	case KindPatchReported:
		return decideReported(cmd, rec, now)
	case KindPatchTwin, KindReplaceTwin:
		return decideTwin(cmd, rec, now)
	case KindCreateDevice:
		return decideCreate(cmd, rec, now)
	case KindUpdateDevice:
		return decideUpdateDevice(cmd, rec, now)
	case KindDeleteDevice:
		return decideDelete(cmd, rec, now)
	case KindConnection:
		return decideConnection(cmd, rec, now), Result{}
	default:
		return nil, Failure(cmd.ID, CodeArgumentInvalid, "unknown command kind %q", cmd.Kind)
	}
}

// invalidArgument is IoT Hub's 400 for a command it cannot apply.
func invalidArgument(cmd Command, err error) Result {
	return Failure(cmd.ID, CodeArgumentInvalid, "%v", err)
}

// newEvent starts the change event of cmd on an existing device's record.
func newEvent(cmd Command, rec *Record, now time.Time, op, source string) *Event {
	ev := &Event{SchemaVersion: EventSchemaVersion, DeviceID: cmd.DeviceID, Time: twin.FormatTime(now), CommandID: cmd.ID, Op: op, Source: source}
	if rec.Exists() {
		ev.GenerationID = rec.Identity.GenerationID
	}
	return ev
}

// withEvent completes a change from its event: the record after it, and
// the event filled in from that record.
func withEvent(cmd Command, rec *Record, ev *Event) (*change, Result) {
	next, err := applyEvent(rec, ev)
	if err != nil {
		return nil, invalidArgument(cmd, err)
	}
	ev.fill(next, rec)
	return &change{next: next, ev: ev}, Result{}
}

// decideReported: a device's reported-properties patch.
func decideReported(cmd Command, rec *Record, now time.Time) (*change, Result) {
	if _, err := twin.ParseObject(cmd.Body); err != nil {
		return nil, invalidArgument(cmd, err)
	}
	ev := newEvent(cmd, rec, now, OpUpdateTwin, SourceDevice)
	ev.Patch.Properties = &EventProperties{Reported: compact(cmd.Body)}
	return withEvent(cmd, rec, ev)
}

// decideTwin: a back end's twin patch (tags, desired) or replacement.
func decideTwin(cmd Command, rec *Record, now time.Time) (*change, Result) {
	if r, ok := checkEtag(cmd, rec.Twin.ETag()); !ok {
		return nil, r
	}
	body, err := serviceBody(cmd.Body)
	if err != nil {
		return nil, invalidArgument(cmd, err)
	}
	op := OpUpdateTwin
	if cmd.Kind == KindReplaceTwin {
		op = OpReplaceTwin
	}
	ev := newEvent(cmd, rec, now, op, SourceBackend)
	if ev.Patch, err = servicePatch(cmd.Kind, body, rec.Twin); err != nil {
		return nil, invalidArgument(cmd, err)
	}
	if op == OpUpdateTwin && ev.Patch.Tags == nil && ev.Patch.Properties == nil {
		return nil, answer(cmd, rec) // nothing to change
	}
	return withEvent(cmd, rec, ev)
}

// decideCreate: a new device, or a device created again after its deletion
// (rec is then its tombstone).
func decideCreate(cmd Command, rec *Record, now time.Time) (*change, Result) {
	if rec.Exists() {
		return nil, alreadyExists(cmd)
	}
	body, err := parseDeviceBody(cmd.Body, cmd.DeviceID, AuthSAS)
	if err != nil {
		return nil, invalidArgument(cmd, err)
	}
	ev := newEvent(cmd, rec, now, OpCreateDevice, SourceBackend)
	ev.GenerationID, ev.Status = newGenerationID(now), body.Status
	next, err := applyEvent(rec, ev)
	if err != nil {
		return nil, invalidArgument(cmd, err)
	}
	next.Identity.PrimaryKey, next.Identity.SecondaryKey = newKey(), newKey()
	body.applyKeys(&next.Identity)
	body.applyAuthentication(next)
	if body.StatusReason != nil {
		next.Twin.StatusReason = *body.StatusReason
	}
	ev.fill(next, rec)
	return &change{next: next, ev: ev}, Result{}
}

// decideUpdateDevice: the registry's part of a device (status, keys). It
// changes the record only: the twin's versions and the change stream do
// not see it.
func decideUpdateDevice(cmd Command, rec *Record, now time.Time) (*change, Result) {
	if r, ok := checkEtag(cmd, rec.Identity.DeviceEtag()); !ok {
		return nil, r
	}
	body, err := parseDeviceBody(cmd.Body, cmd.DeviceID, rec.Identity.AuthType())
	if err != nil {
		return nil, invalidArgument(cmd, err)
	}
	next := rec.clone()
	if body.Status != "" && body.Status != next.Twin.Status {
		next.Twin.Status = body.Status
		next.Twin.StatusUpdateTime = now
	}
	if body.StatusReason != nil {
		next.Twin.StatusReason = *body.StatusReason
	}
	body.applyKeys(&next.Identity)
	body.applyAuthentication(next)
	next.Identity.Etag++
	next.remember(cmd.ID)
	return &change{next: next}, Result{}
}

// decideDelete: the device's deletion, which leaves a tombstone record.
func decideDelete(cmd Command, rec *Record, now time.Time) (*change, Result) {
	if r, ok := checkEtag(cmd, rec.Identity.DeviceEtag()); !ok {
		return nil, r
	}
	return withEvent(cmd, rec, newEvent(cmd, rec, now, OpDeleteDevice, SourceBackend))
}

// decideConnection: the device connected or disconnected. Like a registry
// update, it changes the record only.
func decideConnection(cmd Command, rec *Record, now time.Time) *change {
	next := rec.clone()
	if cmd.Connected {
		next.Twin.ConnectionState = "Connected"
	} else {
		next.Twin.ConnectionState = "Disconnected"
	}
	next.Identity.ConnectionStateUpdatedTime = now
	next.Twin.LastActivityTime = now
	next.remember(cmd.ID)
	return &change{next: next}
}

// checkEtag enforces If-Match: empty or "*" matches anything; otherwise the
// (quoted or bare) etag must equal the current one.
func checkEtag(cmd Command, current string) (Result, bool) {
	want := strings.TrimSpace(cmd.IfMatch)
	want = strings.TrimPrefix(want, "W/")
	if unq, err := strconv.Unquote(want); err == nil {
		want = unq
	}
	if want == "" || want == "*" || want == current {
		return Result{}, true
	}
	return Failure(cmd.ID, CodePreconditionFailed,
		"etag %q does not match the current etag %q; read the twin again and retry", want, current), false
}

// serviceSections is what a back-end twin patch or replacement asks of
// tags and properties.desired: a section is absent (nil, unless cleared), an
// object, or null as a whole (cleared).
type serviceSections struct {
	tags, desired           map[string]any
	clearTags, clearDesired bool
}

// serviceBody extracts tags and properties.desired from a back-end twin
// patch or replacement. Other twin fields (deviceId, etag, version, …) are
// ignored as IoT Hub does; properties.reported is refused, and so is
// "properties": null, which would reach into reported.
func serviceBody(body json.RawMessage) (serviceSections, error) {
	var s serviceSections
	doc, err := twin.ParseObject(body)
	if err != nil {
		return s, err
	}
	section := func(m map[string]any, key, path string) (map[string]any, bool, error) {
		v, ok := m[key]
		switch v := v.(type) {
		case nil:
			return nil, ok, nil
		case map[string]any:
			return v, false, nil
		default:
			return nil, false, fmt.Errorf("%s must be an object, or null to delete all of it", path)
		}
	}
	if s.tags, s.clearTags, err = section(doc, "tags", "tags"); err != nil {
		return s, err
	}
	props, present := doc["properties"]
	switch props := props.(type) {
	case nil:
		if present {
			return s, errors.New(`properties cannot be null: to delete every desired property send {"properties":{"desired":null}}`)
		}
	case map[string]any:
		if _, ok := props["reported"]; ok {
			return s, errors.New("properties.reported can only be changed by the device")
		}
		if s.desired, s.clearDesired, err = section(props, "desired", "properties.desired"); err != nil {
			return s, err
		}
	default:
		return s, errors.New("properties must be an object")
	}
	return s, nil
}

// servicePatch is the change event's patch for a back-end twin command on
// current. A PATCH passes its merge patches on; a section set to null
// becomes the patch that nulls each of its keys (twin.ClearPatch). A
// replacement becomes the new tags and desired, each with a null for every
// key it removes (twin.ReplacePatches). Either way the event states every
// deletion, so the device's desired notification and the change stream's
// consumers see it.
func servicePatch(kind Kind, s serviceSections, current *twin.Twin) (EventPatch, error) {
	var p EventPatch
	tags, desired := s.tags, s.desired
	if kind == KindReplaceTwin {
		var err error
		if tags, desired, err = twin.ReplacePatches(current, tags, desired); err != nil {
			return p, err
		}
	} else {
		if s.clearTags {
			tags = twin.ClearPatch(current.Tags)
		}
		if s.clearDesired {
			desired = twin.ClearPatch(current.Desired.Props)
		}
	}
	var err error
	if tags != nil {
		if p.Tags, err = json.Marshal(tags); err != nil {
			return p, err
		}
	}
	if desired != nil {
		p.Properties = &EventProperties{}
		if p.Properties.Desired, err = json.Marshal(desired); err != nil {
			return p, err
		}
	}
	return p, nil
}

func compact(raw json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return raw
	}
	return b.Bytes()
}

// CheckTwinPatch reports why a back-end twin patch (the body of PATCH
// /twins/{id}: tags and properties.desired) cannot be applied to any twin,
// or nil. A twin-update job checks its patch with it before it starts.
func CheckTwinPatch(body json.RawMessage) error {
	s, err := serviceBody(body)
	if err != nil {
		return err
	}
	if s.tags == nil && s.desired == nil && !s.clearTags && !s.clearDesired {
		return errors.New("the patch changes nothing: give tags and/or properties.desired")
	}
	_, err = twin.ApplyService(twin.New("check", time.Unix(0, 0)), s.tags, s.desired, time.Unix(0, 0))
	return err
}
