package pipeline

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

var decideNow = time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)

// created is the record of device "d" right after its creation, with
// tags {"a":1}, desired {"x":1,"y":2} and reported {"r":1} applied.
func created(t *testing.T) *Record {
	t.Helper()
	rec := mustApply(t, nil, Command{ID: "c0", Kind: KindCreateDevice, DeviceID: "d"})
	rec = mustApply(t, rec, Command{ID: "c1", Kind: KindPatchTwin, DeviceID: "d",
		Body: json.RawMessage(`{"tags":{"a":1},"properties":{"desired":{"x":1,"y":2}}}`)})
	return mustApply(t, rec, Command{ID: "c2", Kind: KindPatchReported, DeviceID: "d", Body: json.RawMessage(`{"r":1}`)})
}

func mustApply(t *testing.T, rec *Record, cmd Command) *Record {
	t.Helper()
	ch, res := decide(cmd, rec, decideNow)
	if ch == nil {
		t.Fatalf("%s: no change: %+v", cmd.Kind, res)
	}
	return ch.next
}

func key(c byte) string {
	return base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(c), 32)))
}

// TestDecideRejects: every command the decision refuses gets IoT Hub's
// status and error code, and no change.
func TestDecideRejects(t *testing.T) {
	rec := created(t)
	tomb := mustApply(t, rec, Command{ID: "del", Kind: KindDeleteDevice, DeviceID: "d"})
	for _, tc := range []struct {
		name   string
		rec    *Record
		cmd    Command
		status int
		code   string
	}{
		{"bad device ID", rec, Command{Kind: KindPatchReported, DeviceID: "a b", Body: json.RawMessage(`{}`)}, 400, "ArgumentInvalid"},
		{"unknown device", nil, Command{Kind: KindPatchReported, DeviceID: "d", Body: json.RawMessage(`{}`)}, 404, "DeviceNotFound"},
		{"deleted device", tomb, Command{Kind: KindDeviceGet, DeviceID: "d"}, 404, "DeviceNotFound"},
		{"unknown kind", rec, Command{Kind: "frobnicate", DeviceID: "d"}, 400, "ArgumentInvalid"},
		{"reported not an object", rec, Command{Kind: KindPatchReported, DeviceID: "d", Body: json.RawMessage(`[1]`)}, 400, "ArgumentInvalid"},
		{"reported not JSON", rec, Command{Kind: KindPatchReported, DeviceID: "d", Body: json.RawMessage(`{"a":`)}, 400, "ArgumentInvalid"},
		{"twin patch, stale etag", rec, Command{Kind: KindPatchTwin, DeviceID: "d", IfMatch: `"AAAA"`, Body: json.RawMessage(`{"tags":{"a":2}}`)}, 412, "PreconditionFailed"},
		{"twin patch, reported", rec, Command{Kind: KindPatchTwin, DeviceID: "d", Body: json.RawMessage(`{"properties":{"reported":{"r":2}}}`)}, 400, "ArgumentInvalid"},
		{"twin patch, properties null", rec, Command{Kind: KindPatchTwin, DeviceID: "d", Body: json.RawMessage(`{"properties":null}`)}, 400, "ArgumentInvalid"},
		{"twin patch, tags a string", rec, Command{Kind: KindPatchTwin, DeviceID: "d", Body: json.RawMessage(`{"tags":"x"}`)}, 400, "ArgumentInvalid"},
		{"twin patch, properties a number", rec, Command{Kind: KindPatchTwin, DeviceID: "d", Body: json.RawMessage(`{"properties":1}`)}, 400, "ArgumentInvalid"},
		{"replace, stale etag", rec, Command{Kind: KindReplaceTwin, DeviceID: "d", IfMatch: "AAAA", Body: json.RawMessage(`{"tags":{}}`)}, 412, "PreconditionFailed"},
		{"create existing", rec, Command{Kind: KindCreateDevice, DeviceID: "d"}, 409, "DeviceAlreadyExists"},
		{"create, other ID in body", nil, Command{Kind: KindCreateDevice, DeviceID: "d", Body: json.RawMessage(`{"deviceId":"e"}`)}, 400, "ArgumentInvalid"},
		{"create, bad status", nil, Command{Kind: KindCreateDevice, DeviceID: "d", Body: json.RawMessage(`{"status":"paused"}`)}, 400, "ArgumentInvalid"},
		{"create, short key", nil, Command{Kind: KindCreateDevice, DeviceID: "d",
			Body: json.RawMessage(`{"authentication":{"symmetricKey":{"primaryKey":"YWJj"}}}`)}, 400, "ArgumentInvalid"},
		{"create, x509", nil, Command{Kind: KindCreateDevice, DeviceID: "d", Body: json.RawMessage(`{"authentication":{"type":"selfSigned"}}`)}, 400, "ArgumentInvalid"},
		{"update device, stale etag", rec, Command{Kind: KindUpdateDevice, DeviceID: "d", IfMatch: `"bm9wZQ=="`, Body: json.RawMessage(`{"status":"disabled"}`)}, 412, "PreconditionFailed"},
		{"update device, not JSON", rec, Command{Kind: KindUpdateDevice, DeviceID: "d", Body: json.RawMessage(`{`)}, 400, "ArgumentInvalid"},
		{"delete, stale etag", rec, Command{Kind: KindDeleteDevice, DeviceID: "d", IfMatch: "bm9wZQ=="}, 412, "PreconditionFailed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cmd.ID = "x"
			ch, res := decide(tc.cmd, tc.rec, decideNow)
			if ch != nil {
				t.Fatalf("a change: %+v", ch.next.Twin)
			}
			if res.Status != tc.status || res.Code != tc.code {
				t.Fatalf("got %d %s (%s), want %d %s", res.Status, res.Code, res.Message, tc.status, tc.code)
			}
		})
	}
}

// TestDecideChanges: each kind of change, its event and the record after it.
func TestDecideChanges(t *testing.T) {
	rec := created(t)
	etag := rec.Twin.ETag()
	for _, tc := range []struct {
		name  string
		cmd   Command
		op    string // the event's op; "" for a record-only change
		check func(t *testing.T, prev, next *Record, ev *Event)
	}{
		{"reported patch", Command{Kind: KindPatchReported, Body: json.RawMessage(`{ "r" : 2, "s": {"t": true} }`)}, OpUpdateTwin,
			func(t *testing.T, prev, next *Record, ev *Event) {
				if ev.Source != SourceDevice || string(ev.Patch.Reported()) != `{"r":2,"s":{"t":true}}` {
					t.Errorf("event %s %s", ev.Source, ev.Patch.Reported())
				}
				if next.Twin.Reported.Version != prev.Twin.Reported.Version+1 || next.Twin.Version != prev.Twin.Version+1 {
					t.Errorf("versions %d/%d after %d/%d", next.Twin.Reported.Version, next.Twin.Version, prev.Twin.Reported.Version, prev.Twin.Version)
				}
			}},
		{"twin patch with the current etag", Command{Kind: KindPatchTwin, IfMatch: strconv.Quote(etag), Body: json.RawMessage(`{"tags":{"b":2}}`)}, OpUpdateTwin,
			func(t *testing.T, prev, next *Record, ev *Event) {
				if string(ev.Patch.Tags) != `{"b":2}` || ev.Source != SourceBackend || next.Twin.Tags["a"] == nil || next.Twin.Tags["b"] == nil {
					t.Errorf("event tags %s, twin tags %v", ev.Patch.Tags, next.Twin.Tags)
				}
			}},
		{"desired null deletes every desired property", Command{Kind: KindPatchTwin, Body: json.RawMessage(`{"properties":{"desired":null}}`)}, OpUpdateTwin,
			func(t *testing.T, prev, next *Record, ev *Event) {
				if got := string(ev.Patch.Properties.Desired); got != `{"x":null,"y":null}` {
					t.Errorf("event desired %s", got)
				}
				if len(next.Twin.Desired.Props) != 0 || next.Twin.Desired.Version != prev.Twin.Desired.Version+1 {
					t.Errorf("desired %v version %d", next.Twin.Desired.Props, next.Twin.Desired.Version)
				}
			}},
		{"replace nulls what it removes", Command{Kind: KindReplaceTwin, Body: json.RawMessage(`{"tags":{"c":3},"properties":{"desired":{"x":1,"z":3}}}`)}, OpReplaceTwin,
			func(t *testing.T, prev, next *Record, ev *Event) {
				if got := string(ev.Patch.Properties.Desired); got != `{"x":1,"y":null,"z":3}` {
					t.Errorf("event desired %s", got)
				}
				if got := string(ev.Patch.Tags); got != `{"a":null,"c":3}` {
					t.Errorf("event tags %s", got)
				}
				if next.Twin.Reported.Props["r"] == nil {
					t.Error("a replacement changed reported properties")
				}
			}},
		{"update device: status, keys, etag", Command{Kind: KindUpdateDevice, IfMatch: rec.Identity.DeviceEtag(),
			Body: json.RawMessage(`{"status":"disabled","statusReason":"stolen","authentication":{"symmetricKey":{"primaryKey":"` + key('p') + `"}}}`)}, "",
			func(t *testing.T, prev, next *Record, _ *Event) {
				if next.Twin.Status != "disabled" || next.Twin.StatusReason != "stolen" || !next.Twin.StatusUpdateTime.Equal(decideNow) {
					t.Errorf("status %q %q at %s", next.Twin.Status, next.Twin.StatusReason, next.Twin.StatusUpdateTime)
				}
				if next.Identity.PrimaryKey != key('p') || next.Identity.SecondaryKey != prev.Identity.SecondaryKey {
					t.Error("keys not rotated as asked")
				}
				if next.Identity.Etag != prev.Identity.Etag+1 || next.Twin.Version != prev.Twin.Version {
					t.Errorf("etag %d→%d, twin version %d→%d", prev.Identity.Etag, next.Identity.Etag, prev.Twin.Version, next.Twin.Version)
				}
			}},
		{"delete leaves a tombstone", Command{Kind: KindDeleteDevice}, OpDeleteDevice,
			func(t *testing.T, prev, next *Record, ev *Event) {
				if next.Exists() || !next.Deleted || ev.GenerationID != prev.Identity.GenerationID {
					t.Errorf("deleted %v, generation %q", next.Deleted, ev.GenerationID)
				}
			}},
		{"connection", Command{Kind: KindConnection, Connected: true}, "",
			func(t *testing.T, prev, next *Record, _ *Event) {
				if next.Twin.ConnectionState != "Connected" || !next.Twin.LastActivityTime.Equal(decideNow) {
					t.Errorf("%s at %s", next.Twin.ConnectionState, next.Twin.LastActivityTime)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cmd.ID, tc.cmd.DeviceID = "cmd-"+tc.name, "d"
			before, _ := json.Marshal(rec.Twin)
			ch, res := decide(tc.cmd, rec, decideNow)
			if ch == nil {
				t.Fatalf("no change: %+v", res)
			}
			if after, _ := json.Marshal(rec.Twin); string(after) != string(before) {
				t.Fatal("decide changed the record it was given")
			}
			switch {
			case tc.op == "" && ch.ev != nil:
				t.Fatalf("a record-only change published event %s", ch.ev.Op)
			case tc.op != "" && (ch.ev == nil || ch.ev.Op != tc.op):
				t.Fatalf("event %+v, want op %s", ch.ev, tc.op)
			}
			if !ch.next.applied(tc.cmd.ID) {
				t.Error("the record does not remember the command, so a redelivery would apply it again")
			}
			tc.check(t, rec, ch.next, ch.ev)
		})
	}
}

// TestDecideCreate: a new device gets fresh keys unless the body gives
// them; a device created again after its deletion gets a new generation.
func TestDecideCreate(t *testing.T) {
	ch, _ := decide(Command{ID: "a", Kind: KindCreateDevice, DeviceID: "d"}, nil, decideNow)
	ch2, _ := decide(Command{ID: "b", Kind: KindCreateDevice, DeviceID: "e"}, nil, decideNow)
	if ch == nil || ch2 == nil {
		t.Fatal("create refused")
	}
	if k := ch.next.Identity.PrimaryKey; k == "" || k == ch2.next.Identity.PrimaryKey || k == ch.next.Identity.SecondaryKey {
		t.Errorf("generated keys are not fresh: %q, %q, %q", k, ch2.next.Identity.PrimaryKey, ch.next.Identity.SecondaryKey)
	}
	given, _ := decide(Command{ID: "c", Kind: KindCreateDevice, DeviceID: "f", Body: json.RawMessage(
		`{"status":"disabled","authentication":{"type":"sas","symmetricKey":{"primaryKey":"` + key('1') + `","secondaryKey":"` + key('2') + `"}}}`)}, nil, decideNow)
	if given == nil || given.next.Identity.PrimaryKey != key('1') || given.next.Identity.SecondaryKey != key('2') || given.next.Twin.Status != "disabled" {
		t.Fatalf("given keys or status not kept: %+v", given)
	}
	if strings.Contains(string(mustJSON(t, given.ev)), key('1')) {
		t.Error("the create event carries the device's key")
	}
	tomb := mustApply(t, ch.next, Command{ID: "del", Kind: KindDeleteDevice, DeviceID: "d"})
	again, res := decide(Command{ID: "again", Kind: KindCreateDevice, DeviceID: "d"}, tomb, decideNow.Add(time.Second))
	if again == nil {
		t.Fatalf("create after delete refused: %+v", res)
	}
	if again.ev.GenerationID == ch.ev.GenerationID || again.next.Twin.Version != ch.next.Twin.Version || len(again.next.Twin.Tags) > 0 {
		t.Errorf("generation %q (was %q), version %d (a new device has %d), tags %v", again.ev.GenerationID, ch.ev.GenerationID, again.next.Twin.Version, ch.next.Twin.Version, again.next.Twin.Tags)
	}
}

// TestDecideReadsAndNoOps: a device's GET and an empty twin patch answer
// from the record and change nothing.
func TestDecideReadsAndNoOps(t *testing.T) {
	rec := created(t)
	for _, cmd := range []Command{
		{Kind: KindDeviceGet, DeviceID: "d"},
		{Kind: KindPatchTwin, DeviceID: "d", Body: json.RawMessage(`{"deviceId":"d","etag":"x"}`)},
	} {
		ch, res := decide(cmd, rec, decideNow)
		if ch != nil || res.Status != http.StatusOK || len(res.Body) == 0 {
			t.Errorf("%s: change %v, result %d %s", cmd.Kind, ch != nil, res.Status, res.Body)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
