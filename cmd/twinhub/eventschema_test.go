package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// eventSchemaFile is the change events' JSON Schema, relative to this package.
const eventSchemaFile = "../../deploy/events/twin-change-event.schema.json"

func compileEventSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	sch, err := c.Compile(eventSchemaFile)
	if err != nil {
		t.Fatalf("compiling %s: %v", eventSchemaFile, err)
	}
	return sch
}

// storedEvent is a change event as read from the stream.
type storedEvent struct {
	seq    uint64
	header nats.Header
	data   []byte
}

// readEvents reads every event in TWINHUB_EVENTS as the events user, the way
// a streaming consumer does.
func readEvents(t *testing.T, p *proc) []storedEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := nats.Connect(p.natsURL(t, "events"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, topology.EventStream)
	if err != nil {
		t.Fatal(err)
	}
	last := stream.CachedInfo().State.LastSeq
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []storedEvent
	for len(out) == 0 || out[len(out)-1].seq < last {
		msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("reading event %d of %d: %v", len(out)+1, last, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, storedEvent{seq: md.Sequence.Stream, header: msg.Headers(), data: msg.Data()})
	}
	return out
}

// TestChangeEventsMatchTheSchema makes every kind of change on the real hub
// (device create and delete, reported patches from a device over MQTT,
// desired and tag patches, sections set to null, a replacement, a module
// twin and its deletion with its device) and checks
// each event it published against deploy/events/twin-change-event.schema.json,
// its Twinhub-Event-Schema header against its schemaVersion, and that every
// header an event carries is documented in the README's "Change events".
func TestChangeEventsMatchTheSchema(t *testing.T) {
	sch := compileEventSchema(t)
	p := startTwinhub(t, "")
	ok := func(r httpResp, what string) {
		t.Helper()
		if r.Status/100 != 2 {
			t.Fatalf("%s: %d %s", what, r.Status, r.Body)
		}
	}
	for _, id := range []string{"sch-1", "sch-2", "sch.3"} {
		ok(p.call(t, "PUT", "/devices/"+id, `{"deviceId":"`+id+`"}`), "creating "+id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dev, err := p.dialDevice(t, ctx, "sch-1")
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	for _, patch := range []string{`{"fw":"1.0","battery":{"level":80,"cells":[3.7,3.6]}}`, `{"battery":null}`} {
		if _, err := dev.Report(ctx, []byte(patch)); err != nil {
			t.Fatalf("reporting %s: %v", patch, err)
		}
	}
	ok(p.call(t, "PATCH", "/twins/sch-1", `{"properties":{"desired":{"fw":"2.0","cfg":{"rate":5}}}}`), "desired patch")
	ok(p.call(t, "PATCH", "/twins/sch-1", `{"tags":{"site":"north","floor":2}}`), "tags patch")
	ok(p.call(t, "PATCH", "/twins/sch-1", `{"tags":{"site":null},"properties":{"desired":{"cfg":{"rate":null}}}}`), "both, with deletions")
	ok(p.call(t, "PATCH", "/twins/sch-1", `{"properties":{"desired":null}}`), "desired set to null")
	ok(p.call(t, "PATCH", "/twins/sch-1", `{"tags":null}`), "tags set to null")
	ok(p.call(t, "PUT", "/twins/sch-1", `{"tags":{"site":"east"},"properties":{"desired":{"fw":"3.0"}}}`), "replace")
	ok(p.call(t, "PATCH", "/twins/sch.3", `{"properties":{"desired":{"x":1}}}`), "a device ID with a dot")
	ok(p.call(t, "PUT", "/devices/sch-2/modules/mod", `{}`), "creating a module")
	ok(p.call(t, "PATCH", "/twins/sch-2/modules/mod", `{"tags":{"role":"edge"},"properties":{"desired":{"rate":1}}}`), "module twin patch")
	ok(p.call(t, "DELETE", "/devices/sch-2", ""), "delete (with its module)")

	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, _ := strings.Cut(string(readme), "\n## Change events\n")
	section, _, _ = strings.Cut(section, "\n## ")

	events := readEvents(t, p)
	ops := map[string]bool{}
	headers := map[string]bool{}
	var sawNullSection, sawDevice, sawModule bool
	for _, e := range events {
		var v any
		if err := json.Unmarshal(e.data, &v); err != nil {
			t.Fatalf("event %d is not JSON: %v", e.seq, err)
		}
		if err := sch.Validate(v); err != nil {
			t.Errorf("event %d does not match the schema: %v\n%s", e.seq, err, e.data)
		}
		var ev pipeline.Event
		if err := json.Unmarshal(e.data, &ev); err != nil {
			t.Fatal(err)
		}
		if got := e.header.Get(pipeline.SchemaHeader); got != strconv.Itoa(ev.SchemaVersion) {
			t.Errorf("event %d: %s is %q, schemaVersion %d", e.seq, pipeline.SchemaHeader, got, ev.SchemaVersion)
		}
		ops[ev.Op] = true
		sawModule = sawModule || ev.DeviceID == "sch-2/mod" && ev.Op == pipeline.OpDeleteDevice
		sawDevice = sawDevice || ev.Source == pipeline.SourceDevice
		sawNullSection = sawNullSection || ev.Op == pipeline.OpUpdateTwin && ev.Source == pipeline.SourceBackend &&
			bytes.Contains(ev.Patch.Desired(), []byte(`"fw":null`))
		for name := range e.header {
			headers[name] = true
		}
	}
	for _, op := range []string{pipeline.OpCreateDevice, pipeline.OpUpdateTwin, pipeline.OpReplaceTwin, pipeline.OpDeleteDevice} {
		if !ops[op] {
			t.Errorf("no %s event among the %d read", op, len(events))
		}
	}
	if !sawDevice || !sawNullSection || !sawModule {
		t.Errorf("the events lack a device's reported patch (%v), desired set to null (%v) or a module's deletion (%v)",
			sawDevice, sawNullSection, sawModule)
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for h := range headers {
			if !yield(h) {
				return
			}
		}
	})
	t.Logf("%d events; headers: %v", len(events), names)
	for _, h := range names {
		if !strings.Contains(section, "`"+h+"`") {
			t.Errorf("events carry header %s, which the README's \"Change events\" does not document", h)
		}
	}
}
