package pipeline_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinhub/twinhub/deploy/embedded"
	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
	"github.com/twinhub/twinhub/pipeline/twin"
)

// hub is a processor with its client and store over an embedded nats-server.
type hub struct {
	ns     *embedded.NATS
	js     jetstream.JetStream
	client *pipeline.Client
	store  *pipeline.Store
	reg    *prometheus.Registry
	proc   *pipeline.Processor // nil for startBare
	stop   func()
	// log, nc and subConn are what startHub gives its processor.
	log         *slog.Logger
	nc, subConn *nats.Conn
	// connect opens another connection to the hub's NATS.
	connect func(name string) (*nats.Conn, error)
}

func startHub(t *testing.T, dir string, topo topology.Config) *hub {
	t.Helper()
	h := startBare(t, dir, topo)
	proc, err := pipeline.NewProcessor(context.Background(), pipeline.ProcessorConfig{Topology: topo, Logger: h.log}, h.nc, h.subConn, h.reg)
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// Runs until the cleanup cancels pctx.
	go func() { done <- proc.Run(pctx) }()
	<-proc.Running()
	h.proc = proc
	stopped := false
	shutdown := h.stop
	h.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("processor: %v", err)
		}
		shutdown()
	}
	t.Cleanup(h.stop)
	return h
}

// startBare starts NATS with the topology, a store and a client, and no
// processor.
func startBare(t *testing.T, dir string, topo topology.Config) *hub {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ns, err := embedded.StartNATS(embedded.NATSConfig{Addr: "127.0.0.1:-1", StoreDir: dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := ns.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	subConn, err := ns.Connect("test-sub")
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if err := topology.Ensure(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	store, err := pipeline.OpenStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	client, err := pipeline.NewClient(nc, topo.WithDefaults().Partitions, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	h := &hub{ns: ns, js: js, client: client, store: store, reg: prometheus.NewRegistry(), log: log, nc: nc, subConn: subConn,
		connect: func(name string) (*nats.Conn, error) { return ns.Connect(name) }}
	stopped := false
	h.stop = func() {
		if stopped {
			return
		}
		stopped = true
		client.Close()
		nc.Close()
		ns.Shutdown()
	}
	t.Cleanup(h.stop)
	return h
}

func (h *hub) do(t *testing.T, cmd pipeline.Command) pipeline.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := h.client.Do(ctx, cmd)
	if err != nil {
		t.Fatalf("%s %s: %v", cmd.Kind, cmd.DeviceID, err)
	}
	return res
}

func TestSeedFlowThroughPipeline(t *testing.T) {
	h := startHub(t, t.TempDir(), topology.Config{Partitions: 4})
	res := h.do(t, pipeline.Command{Kind: pipeline.KindCreateDevice, DeviceID: "myDeviceId"})
	if res.Status != 200 {
		t.Fatalf("create: %+v", res)
	}
	res = h.do(t, pipeline.Command{Kind: pipeline.KindPatchReported, DeviceID: "myDeviceId", Body: json.RawMessage(`{"connectivity":{"type":"cellular"}}`)})
	if res.Status != 204 || res.Version != 2 {
		t.Fatalf("reported patch: %+v", res)
	}
}

// events returns the change events of a device, in stream order.
func (h *hub) events(t *testing.T, deviceID string) []pipeline.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := h.js.Stream(ctx, topology.EventStream)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{topology.EventSubject(deviceID)}})
	if err != nil {
		t.Fatal(err)
	}
	var out []pipeline.Event
	for {
		m, err := c.Next(jetstream.FetchMaxWait(300 * time.Millisecond))
		if err != nil {
			return out
		}
		var ev pipeline.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
		if md, err := m.Metadata(); err == nil && md.NumPending == 0 {
			return out // the device's last event so far
		}
	}
}

// publishRaw stores a command under its own Nats-Msg-Id and returns its result.
func (h *hub) publishRaw(t *testing.T, cmd pipeline.Command, msgID string) pipeline.Result {
	t.Helper()
	nc, err := h.ns.Connect("raw")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	msg := cmd.Msg(topology.CommandSubject(cmd.DeviceID, 4), inbox)
	if _, err := js.PublishMsg(context.Background(), msg, jetstream.WithMsgID(msgID)); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(20 * time.Second)
	if err != nil {
		t.Fatalf("no result for %s: %v", cmd.ID, err)
	}
	var res pipeline.Result
	json.Unmarshal(m.Data, &res)
	return res
}

func versions(evs []pipeline.Event) []int64 {
	var v []int64
	for _, e := range evs {
		v = append(v, e.Version)
	}
	return v
}

// TestRedeliveredCommandIsNotAppliedTwice stores the same command twice
// (as a redelivery after a crash would present it): the second is answered
// from the record, with no second change and no second event.
func TestRedeliveredCommandIsNotAppliedTwice(t *testing.T) {
	h := startHub(t, t.TempDir(), topology.Config{Partitions: 4})
	h.do(t, pipeline.Command{Kind: pipeline.KindCreateDevice, DeviceID: "d1"})
	cmd := pipeline.Command{ID: "cmd-1", Kind: pipeline.KindPatchReported, DeviceID: "d1", Body: json.RawMessage(`{"a":1}`)}
	first := h.publishRaw(t, cmd, "m1")
	second := h.publishRaw(t, cmd, "m2")
	if first.Status != 204 || second.Status != 204 || first.Version != 2 || second.Version != 2 {
		t.Fatalf("results: %+v / %+v", first, second)
	}
	if v := versions(h.events(t, "d1")); len(v) != 2 || v[0] != 2 || v[1] != 3 {
		t.Fatalf("event versions %v, want [2 3]", v)
	}
}

// TestRollForwardAfterCrashBetweenEventAndRecord recreates the state a crash
// leaves between publishing a change event and saving the record: the event
// is in the stream, the record is one change behind. When the command comes
// again, the processor rolls the record forward to the event (same twin,
// same timestamps) instead of applying the command a second time.
func TestRollForwardAfterCrashBetweenEventAndRecord(t *testing.T) {
	h := startHub(t, t.TempDir(), topology.Config{Partitions: 4})
	h.do(t, pipeline.Command{Kind: pipeline.KindCreateDevice, DeviceID: "d2"})
	h.do(t, pipeline.Command{Kind: pipeline.KindPatchReported, DeviceID: "d2", Body: json.RawMessage(`{"a":1}`)})
	evs := h.events(t, "d2")
	prev := evs[len(evs)-1]

	// The event the crashed processor published for command "lost-1".
	crashTime := "2030-01-02T03:04:05.1234567Z"
	ev := pipeline.Event{DeviceID: "d2", GenerationID: prev.GenerationID, Op: pipeline.OpUpdateTwin, Source: pipeline.SourceDevice,
		Version: 4, Etag: prev.Etag, DesiredVersion: 1, ReportedVersion: 3, Time: crashTime, CommandID: "lost-1",
		Patch: pipeline.EventPatch{Properties: &pipeline.EventProperties{Reported: json.RawMessage(`{"b":{"c":true}}`)}}}
	data, _ := json.Marshal(ev)
	if _, err := h.js.Publish(context.Background(), topology.EventSubject("d2"), data); err != nil {
		t.Fatal(err)
	}

	res := h.publishRaw(t, pipeline.Command{ID: "lost-1", Kind: pipeline.KindPatchReported, DeviceID: "d2", Body: json.RawMessage(`{"b":{"c":true}}`)}, "again")
	if res.Status != 204 || res.Version != 3 {
		t.Fatalf("result %+v", res)
	}
	if v := versions(h.events(t, "d2")); len(v) != 3 || v[2] != 4 {
		t.Fatalf("event versions %v, want [2 3 4]", v)
	}
	rec, err := h.store.Get(context.Background(), "d2")
	if err != nil {
		t.Fatal(err)
	}
	tw, _ := json.Marshal(rec.Twin)
	var doc map[string]any
	json.Unmarshal(tw, &doc)
	meta := doc["properties"].(map[string]any)["reported"].(map[string]any)["$metadata"].(map[string]any)
	if rec.Twin.Version != 4 || rec.Twin.Reported.Version != 3 || meta["b"].(map[string]any)["$lastUpdated"] != crashTime {
		t.Fatalf("rolled-forward twin: %s", tw)
	}
	// The next change follows on without a gap.
	h.do(t, pipeline.Command{Kind: pipeline.KindPatchReported, DeviceID: "d2", Body: json.RawMessage(`{"a":2}`)})
	if v := versions(h.events(t, "d2")); len(v) != 4 || v[3] != 5 {
		t.Fatalf("event versions %v, want [2 3 4 5]", v)
	}
}

// TestRecordEncoding: the hand-written record encoder gives the document
// encoding/json gives, and decodes back to the same record.
func TestRecordEncoding(t *testing.T) {
	h := startHub(t, t.TempDir(), topology.Config{Partitions: 4})
	h.do(t, pipeline.Command{Kind: pipeline.KindCreateDevice, DeviceID: "enc"})
	h.do(t, pipeline.Command{Kind: pipeline.KindPatchReported, DeviceID: "enc", Body: []byte(`{"a":{"b":[1,"x",true]},"s":"<&>"}`)})
	h.do(t, pipeline.Command{Kind: pipeline.KindPatchTwin, DeviceID: "enc", Body: []byte(`{"tags":{"t":1},"properties":{"desired":{"d":null,"e":2.5}}}`)})
	rec, err := h.store.Get(context.Background(), "enc")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(rec)
	got, err := pipeline.EncodeRecord(rec)
	if err != nil || string(got) != string(want) {
		t.Fatalf("encode:\n got %s\nwant %s (%v)", got, want, err)
	}
}

// TestStaleCacheDoesNotRejectAfterAnotherWriter: another instance changes a
// twin behind this processor's record cache; a PATCH carrying the new etag
// is applied, not refused with 412 on the stale cached etag.
func TestStaleCacheDoesNotRejectAfterAnotherWriter(t *testing.T) {
	h := startHub(t, t.TempDir(), topology.Config{Partitions: 4})
	h.do(t, pipeline.Command{Kind: pipeline.KindCreateDevice, DeviceID: "shared"})
	h.do(t, pipeline.Command{Kind: pipeline.KindPatchTwin, DeviceID: "shared", Body: []byte(`{"tags":{"a":1}}`)}) // now cached
	ctx := context.Background()
	rec, err := h.store.Get(ctx, "shared")
	if err != nil {
		t.Fatal(err)
	}
	// "Another instance" applies a tags change and stores the record.
	other, err := twin.ApplyService(rec.Twin, map[string]any{"b": json.Number("2")}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rec.Twin = other
	b, _ := json.Marshal(rec)
	kv, err := h.js.KeyValue(ctx, topology.TwinBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, topology.Key("shared"), b); err != nil {
		t.Fatal(err)
	}
	res := h.do(t, pipeline.Command{Kind: pipeline.KindPatchTwin, DeviceID: "shared", IfMatch: `"` + other.ETag() + `"`, Body: []byte(`{"tags":{"c":3}}`)})
	if res.Status != 200 {
		t.Fatalf("PATCH with the current etag: %+v", res)
	}
}

// TestBatchedCommandsKeepEachDeviceInOrder has 48 devices on 16 partitions
// send 15 reported patches each, all at once, so the processor applies them
// in batches: each device's patches stay in order (patchAllAtOnce), and
// batches of more than one command must have run.
func TestBatchedCommandsKeepEachDeviceInOrder(t *testing.T) {
	h := startHub(t, t.TempDir(), topology.Config{Partitions: 16})
	patchAllAtOnce(t, h, "b", 48, 15)
	sum, count := histogramSumCount(t, h.reg, "twinhub_pipeline_batch_commands")
	if count == 0 || sum <= count {
		t.Fatalf("%v commands in %v batches: no batch held more than one command", sum, count)
	}
	t.Logf("%v commands in %v batches", sum, count)
}

func histogramSumCount(t *testing.T, reg *prometheus.Registry, name string) (sum, count float64) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			h := mf.GetMetric()[0].GetHistogram()
			return h.GetSampleSum(), float64(h.GetSampleCount())
		}
	}
	t.Fatalf("no metric %s", name)
	return 0, 0
}

// TestTwoProcessorsShareThePartitions runs a second processor on the same
// NATS, as a second instance would: the first hands half the partitions
// over, so the partitions' commands go to either, and each one's record
// cache goes stale under the other's writes (a partition applied by one,
// then by the other). Every device's patches must still be applied once
// each, in order, and both must have worked.
func TestTwoProcessorsShareThePartitions(t *testing.T) {
	h := startHub(t, t.TempDir(), topology.Config{Partitions: 4})
	nc, err := h.ns.Connect("second")
	if err != nil {
		t.Fatal(err)
	}
	subConn, err := h.ns.Connect("second-sub")
	if err != nil {
		t.Fatal(err)
	}
	reg2 := prometheus.NewRegistry()
	proc2, err := pipeline.NewProcessor(context.Background(), pipeline.ProcessorConfig{Topology: topology.Config{Partitions: 4}}, nc, subConn, reg2)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// Runs until cancel below.
	go func() { done <- proc2.Run(ctx) }()
	defer func() {
		cancel()
		<-done
		nc.Close()
	}()
	<-proc2.Running()
	// Commands until every partition has an owner (whichever pulled first;
	// the first processor hands its surplus over as soon as it hears of the
	// second), bounded so that a partition never owned fails the test.
	for i := 0; len(h.proc.Owned())+len(proc2.Owned()) < 4; i++ {
		if i == 1000 {
			t.Fatalf("after %d commands, owned: %v by the first, %v by the second", i, h.proc.Owned(), proc2.Owned())
		}
		h.do(t, pipeline.Command{Kind: pipeline.KindCreateDevice, DeviceID: fmt.Sprintf("w%d", i)})
	}
	for deadline := time.Now().Add(10 * time.Second); len(h.proc.Owned()) > 2; {
		if time.Now().After(deadline) {
			t.Fatalf("the first processor still owns partitions %v with a second one running", h.proc.Owned())
		}
		time.Sleep(20 * time.Millisecond)
	}

	patchAllAtOnce(t, h, "s", 8, 40)
	_, second := histogramSumCount(t, reg2, "twinhub_pipeline_batch_commands")
	_, first := histogramSumCount(t, h.reg, "twinhub_pipeline_batch_commands")
	if first == 0 || second == 0 {
		t.Fatalf("batches: %v on the first processor, %v on the second; both should have worked", first, second)
	}
}

// patchAllAtOnce creates devices prefix0, prefix1, … and has each send its
// patches {"n":1}, {"n":2}, … one after the other, all devices at once. Every
// patch must be answered with the next reported $version, and each device's
// change events must carry its patches in order, versions without gaps.
func patchAllAtOnce(t *testing.T, h *hub, prefix string, devices, patches int) {
	t.Helper()
	for d := range devices {
		h.do(t, pipeline.Command{Kind: pipeline.KindCreateDevice, DeviceID: fmt.Sprintf("%s%d", prefix, d)})
	}
	errs := make(chan error, devices)
	for d := range devices {
		// Exits after its device's patches.
		go func() {
			id := fmt.Sprintf("%s%d", prefix, d)
			for n := 1; n <= patches; n++ {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				res, err := h.client.Do(ctx, pipeline.Command{Kind: pipeline.KindPatchReported, DeviceID: id,
					Body: []byte(fmt.Sprintf(`{"n":%d}`, n))})
				cancel()
				if err == nil && (res.Status != 204 || res.Version != int64(n+1)) {
					err = fmt.Errorf("%s patch %d: %+v, want 204 with reported version %d", id, n, res, n+1)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range devices {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for d := range devices {
		id := fmt.Sprintf("%s%d", prefix, d)
		evs := h.events(t, id)
		if len(evs) != patches+1 {
			t.Fatalf("%s: %d events, want %d", id, len(evs), patches+1)
		}
		for i, ev := range evs[1:] {
			if want := fmt.Sprintf(`{"n":%d}`, i+1); ev.Version != int64(i+3) || string(ev.Patch.Reported()) != want {
				t.Fatalf("%s event %d: version %d, patch %s; want version %d, patch %s", id, i, ev.Version, ev.Patch.Reported(), i+3, want)
			}
		}
	}
}

// TestChangeEventsCarryNoKeys: a device's keys, given at creation or
// changed later, appear in none of its change events (their headers
// included), which readers without access to the twin bucket may consume.
func TestChangeEventsCarryNoKeys(t *testing.T) {
	h := startHub(t, t.TempDir(), topology.Config{Partitions: 2})
	key := func(c byte) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{c}, 32)) }
	keys := []string{key('a'), key('b'), key('c'), key('d')}
	device := func(status, primary, secondary string) []byte {
		return []byte(`{"deviceId":"keyed","status":"` + status + `","authentication":{"symmetricKey":{"primaryKey":"` +
			primary + `","secondaryKey":"` + secondary + `"}}}`)
	}
	for _, cmd := range []pipeline.Command{
		{Kind: pipeline.KindCreateDevice, DeviceID: "keyed", Body: device("disabled", keys[0], keys[1])},
		{Kind: pipeline.KindUpdateDevice, DeviceID: "keyed", Body: device("enabled", keys[2], keys[3])},
		{Kind: pipeline.KindPatchTwin, DeviceID: "keyed", Body: []byte(`{"tags":{"a":1}}`)},
		{Kind: pipeline.KindDeleteDevice, DeviceID: "keyed"},
	} {
		if res := h.do(t, cmd); res.Status >= 300 {
			t.Fatalf("%s: %+v", cmd.Kind, res)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := h.js.OrderedConsumer(ctx, topology.EventStream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{topology.EventSubject("keyed")}})
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for {
		m, err := c.Next(jetstream.FetchMaxWait(2 * time.Second))
		if err != nil {
			t.Fatalf("reading events after %v: %v", ops, err)
		}
		raw := string(m.Data())
		for k, vs := range m.Headers() {
			raw += "\n" + k + ": " + strings.Join(vs, ",")
		}
		for _, k := range keys {
			if strings.Contains(raw, k) {
				t.Errorf("a change event carries a device key:\n%s", raw)
			}
		}
		var ev pipeline.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		ops = append(ops, ev.Op)
		if md, err := m.Metadata(); err == nil && md.NumPending == 0 {
			break
		}
	}
	if got := strings.Join(ops, " "); got != "createDevice updateTwin deleteDevice" {
		t.Errorf("events %s, want createDevice updateTwin deleteDevice", got)
	}
}
