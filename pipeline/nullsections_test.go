package pipeline_test

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// TestServiceDeletionsAreStatedInEvents drives back-end commands that remove
// keys wholesale through the processor: a section set to null as a whole
// deletes every key in it, bumps the versions and publishes a change event
// whose patch nulls each removed key; a replacement's event is the new
// document plus a null for every key it removed, at every level. Bad
// requests change nothing and publish nothing. Replaying the events from the
// creation (as history reads do) rebuilds the stored twin exactly.
func TestServiceDeletionsAreStatedInEvents(t *testing.T) {
	h := startHub(t, t.TempDir(), topology.Config{Partitions: 2})
	const id = "nulls"
	if res := h.do(t, pipeline.Command{Kind: pipeline.KindCreateDevice, DeviceID: id}); res.Status != 200 {
		t.Fatalf("create: %+v", res)
	}
	steps := []struct {
		name      string
		kind      pipeline.Kind
		body      string
		status    int
		wantPatch string // the event's patch; "" when no event
		tags      string // tags afterwards ("" is none)
		desired   string // desired properties afterwards, without $metadata
	}{
		{"set", pipeline.KindPatchTwin, `{"tags":{"site":"x","loc":{"a":1}},"properties":{"desired":{"foo":1,"bar":{"b":2}}}}`, 200,
			`{"tags":{"site":"x","loc":{"a":1}},"properties":{"desired":{"foo":1,"bar":{"b":2}}}}`,
			`{"site":"x","loc":{"a":1}}`, `{"foo":1,"bar":{"b":2},"$version":2}`},
		{"desired null", pipeline.KindPatchTwin, `{"properties":{"desired":null}}`, 200,
			`{"properties":{"desired":{"foo":null,"bar":null}}}`, `{"site":"x","loc":{"a":1}}`, `{"$version":3}`},
		{"desired null again", pipeline.KindPatchTwin, `{"properties":{"desired":null}}`, 200,
			`{"properties":{"desired":{}}}`, `{"site":"x","loc":{"a":1}}`, `{"$version":4}`},
		{"tags null with a desired patch", pipeline.KindPatchTwin, `{"tags":null,"properties":{"desired":{"a":1,"b":2}}}`, 200,
			`{"tags":{"site":null,"loc":null},"properties":{"desired":{"a":1,"b":2}}}`, ``, `{"a":1,"b":2,"$version":5}`},
		{"replace", pipeline.KindReplaceTwin, `{"tags":{"t":1},"properties":{"desired":{"a":1,"c":100}}}`, 200,
			`{"tags":{"t":1},"properties":{"desired":{"a":1,"b":null,"c":100}}}`, `{"t":1}`, `{"a":1,"c":100,"$version":6}`},
		{"replace nested", pipeline.KindReplaceTwin, `{"properties":{"desired":{"c":{"x":{}}}}}`, 200,
			`{"tags":{"t":null},"properties":{"desired":{"a":null,"c":{"x":{}}}}}`, ``, `{"c":{"x":{}},"$version":7}`},
		{"reported null", pipeline.KindPatchTwin, `{"properties":{"reported":null}}`, 400, ``, ``, `{"c":{"x":{}},"$version":7}`},
		{"properties null", pipeline.KindPatchTwin, `{"properties":null}`, 400, ``, ``, `{"c":{"x":{}},"$version":7}`},
		{"desired a string", pipeline.KindPatchTwin, `{"properties":{"desired":"all"}}`, 400, ``, ``, `{"c":{"x":{}},"$version":7}`},
		{"replace with a null", pipeline.KindReplaceTwin, `{"properties":{"desired":{"c":null}}}`, 400, ``, ``, `{"c":{"x":{}},"$version":7}`},
	}
	seen := len(h.events(t, id))
	for _, s := range steps {
		res := h.do(t, pipeline.Command{Kind: s.kind, DeviceID: id, Body: []byte(s.body)})
		if res.Status != s.status {
			t.Fatalf("%s: %d %s %s, want %d", s.name, res.Status, res.Code, res.Message, s.status)
		}
		evs := h.events(t, id)
		if s.wantPatch == "" {
			if len(evs) != seen {
				t.Errorf("%s: a refused command published an event: %+v", s.name, evs[len(evs)-1])
			}
		} else if len(evs) != seen+1 {
			t.Fatalf("%s: %d new events, want 1", s.name, len(evs)-seen)
		} else if got, _ := json.Marshal(evs[seen].Patch); !sameJSONText(got, s.wantPatch) {
			t.Errorf("%s: event patch %s, want %s", s.name, got, s.wantPatch)
		}
		seen = len(evs)
		rec := h.get(t, id)
		if got, _ := json.Marshal(rec.Twin.Tags); !(s.tags == "" && rec.Twin.Tags == nil) && !sameJSONText(got, s.tags) {
			t.Errorf("%s: tags %s, want %s", s.name, got, s.tags)
		}
		var view struct{ Desired json.RawMessage }
		json.Unmarshal(rec.Twin.DeviceView(), &view)
		if !sameJSONText(view.Desired, s.desired) {
			t.Errorf("%s: desired %s, want %s", s.name, view.Desired, s.desired)
		}
	}

	var replayed *pipeline.Record
	for _, ev := range h.events(t, id) {
		next, err := pipeline.ApplyEvent(replayed, &ev)
		if err != nil {
			t.Fatalf("replaying event %d: %v", ev.Version, err)
		}
		replayed = next
	}
	got, _ := json.Marshal(replayed.Twin)
	want, _ := json.Marshal(h.get(t, id).Twin)
	if !bytes.Equal(got, want) {
		t.Errorf("the twin replayed from its events\n%s\ndiffers from the stored twin\n%s", got, want)
	}
}

func (h *hub) get(t *testing.T, deviceID string) *pipeline.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rec, err := h.store.Get(ctx, deviceID)
	if err != nil || rec == nil {
		t.Fatalf("reading the record of %s: %v", deviceID, err)
	}
	return rec
}

func sameJSONText(got []byte, want string) bool {
	var g, w any
	return json.Unmarshal(got, &g) == nil && json.Unmarshal([]byte(want), &w) == nil && reflect.DeepEqual(g, w)
}
