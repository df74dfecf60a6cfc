// Package events holds the JSON Schema of twinhub's change events,
// twin-change-event.schema.json. This test checks the schema itself against
// events written by hand, valid and not; cmd/twinhub's
// TestChangeEventsMatchTheSchema checks the events a running hub publishes.
package events

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

func compile(t *testing.T) *jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	sch, err := c.Compile("twin-change-event.schema.json")
	if err != nil {
		t.Fatalf("compiling the schema: %v", err)
	}
	return sch
}

const base = `"schemaVersion":1,"deviceId":"myDeviceId","generationId":"179563069440101380","etag":"AAAAAAAAAAE=",
 "desiredVersion":1,"reportedVersion":2,"time":"2026-11-25T18:20:55.4210921Z","commandId":"bZpI4DZW8NfByf0naz7Hyt"`

func TestSchema(t *testing.T) {
	sch := compile(t)
	for _, c := range []struct {
		name, event string
		valid       bool
	}{
		{"reported patch", `{` + base + `,"op":"updateTwin","source":"device","version":3,
			"patch":{"properties":{"reported":{"connectivity":{"type":"cellular"},"old":null}}}}`, true},
		{"desired and tags", `{` + base + `,"op":"updateTwin","source":"backend","version":4,
			"patch":{"tags":{"site":"north"},"properties":{"desired":{"fw":"2.1"}}}}`, true},
		{"create", `{` + base + `,"op":"createDevice","source":"backend","version":2,"status":"enabled","patch":{}}`, true},
		{"delete", `{` + base + `,"op":"deleteDevice","source":"backend","version":9,"patch":{}}`, true},
		{"a module", strings.Replace(`{`+base+`,"op":"deleteDevice","source":"backend","version":9,"patch":{}}`,
			`"myDeviceId"`, `"myDeviceId/myModule"`, 1), true},
		{"two slashes", strings.Replace(`{`+base+`,"op":"deleteDevice","source":"backend","version":9,"patch":{}}`,
			`"myDeviceId"`, `"a/b/c"`, 1), false},
		{"a field added later", `{` + base + `,"op":"deleteDevice","source":"backend","version":9,"patch":{},"region":"eu"}`, true},
		{"no schemaVersion", strings.Replace(`{`+base+`,"op":"deleteDevice","source":"backend","version":9,"patch":{}}`,
			`"schemaVersion":1,`, "", 1), false},
		{"another schemaVersion", strings.Replace(`{`+base+`,"op":"deleteDevice","source":"backend","version":9,"patch":{}}`,
			`"schemaVersion":1`, `"schemaVersion":2`, 1), false},
		{"unknown op", `{` + base + `,"op":"mergeTwin","source":"backend","version":3,"patch":{}}`, false},
		{"device changes desired", `{` + base + `,"op":"updateTwin","source":"device","version":3,
			"patch":{"properties":{"desired":{"fw":"1"}}}}`, false},
		{"back end changes reported", `{` + base + `,"op":"updateTwin","source":"backend","version":3,
			"patch":{"properties":{"reported":{"fw":"1"}}}}`, false},
		{"create without status", `{` + base + `,"op":"createDevice","source":"backend","version":2,"patch":{}}`, true},
		{"create at version 3", `{` + base + `,"op":"createDevice","source":"backend","version":3,"patch":{}}`, false},
		{"version below 2", `{` + base + `,"op":"updateTwin","source":"backend","version":1,"patch":{"tags":{"a":1}}}`, false},
		{"a time with an offset", strings.Replace(`{`+base+`,"op":"updateTwin","source":"backend","version":3,"patch":{"tags":{"a":1}}}`,
			`55.4210921Z`, `55+01:00`, 1), false},
		{"an unknown section", `{` + base + `,"op":"updateTwin","source":"backend","version":3,"patch":{"properties":{"extra":{}}}}`, false},
		{"a key with a dot", `{` + base + `,"op":"updateTwin","source":"backend","version":3,"patch":{"tags":{"a.b":1}}}`, false},
	} {
		var v any
		if err := json.Unmarshal([]byte(c.event), &v); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		err := sch.Validate(v)
		if c.valid && err != nil {
			t.Errorf("%s: refused: %v", c.name, err)
		}
		if !c.valid && err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
}
