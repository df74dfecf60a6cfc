package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinhub/twinhub/bridge/sas"
	"github.com/twinhub/twinhub/deploy/natstest"
	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// feedHub is an API with the change feed over a real JetStream server, with
// the streams twinhub provisions.
type feedHub struct {
	t    *testing.T
	url  string
	js   jetstream.JetStream
	reg  *prometheus.Registry
	auth string // Authorization header of every request; "" for none
}

func startFeedHub(t *testing.T, feed FeedConfig, policies *sas.Policies) *feedHub {
	t.Helper()
	nc := natstest.StartStandalone(t).Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := topology.Ensure(ctx, js, topology.Config{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	api := New(Config{Events: js, Feed: feed, Policies: policies}, nil, nil, func() bool { return true }, nil, reg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := api.Server()
	// Serve returns when Close below closes the listener.
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &feedHub{t: t, url: "http://" + ln.Addr().String(), js: js, reg: reg}
}

// publish stores a change event of device with the given sections (each
// gets a small patch, or pad bytes of payload) and returns its sequence.
func (h *feedHub) publish(device string, pad int, sections ...string) uint64 {
	h.t.Helper()
	ev := pipeline.Event{DeviceID: device, Op: pipeline.OpUpdateTwin, Source: pipeline.SourceBackend, Version: 2}
	val := json.RawMessage(fmt.Sprintf(`{"pad":%q}`, strings.Repeat("x", pad)))
	for _, s := range sections {
		switch s {
		case "tags":
			ev.Patch.Tags = val
		case "desired", "reported":
			if ev.Patch.Properties == nil {
				ev.Patch.Properties = &pipeline.EventProperties{}
			}
			if s == "desired" {
				ev.Patch.Properties.Desired = val
			} else {
				ev.Patch.Properties.Reported = val
			}
		}
	}
	b, _ := json.Marshal(ev)
	ack, err := h.js.PublishMsg(context.Background(), &nats.Msg{Subject: topology.EventSubject(device), Data: b,
		Header: nats.Header{pipeline.SectionsHeader: []string{strings.Join(sections, ",")}}})
	if err != nil {
		h.t.Fatalf("publishing an event of %s: %v", device, err)
	}
	return ack.Sequence
}

// sseEvent is one event read from a feed.
type sseEvent struct {
	ID    uint64
	Event string
	Data  string
}

func (e sseEvent) device(t *testing.T) string {
	var ev pipeline.Event
	if err := json.Unmarshal([]byte(e.Data), &ev); err != nil {
		t.Fatalf("event %d: data is not a change event: %v: %s", e.ID, err, e.Data)
	}
	return ev.DeviceID
}

// feed is an open GET /events.
type feed struct {
	t    *testing.T
	resp *http.Response
	rd   *bufio.Reader
}

// open starts a feed with the query and headers (name, value pairs); it
// fails the test unless the hub answers 200.
func (h *feedHub) open(query string, client *http.Client, header ...string) *feed {
	h.t.Helper()
	resp := h.get(query, client, header...)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		h.t.Fatalf("GET /events?%s: %d %s", query, resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		h.t.Fatalf("Content-Type %q, want text/event-stream", ct)
	}
	return &feed{t: h.t, resp: resp, rd: bufio.NewReader(resp.Body)}
}

func (h *feedHub) get(query string, client *http.Client, header ...string) *http.Response {
	h.t.Helper()
	req, err := http.NewRequest("GET", h.url+"/events?"+query, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	if h.auth != "" {
		req.Header.Set("Authorization", h.auth)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		h.t.Fatalf("GET /events?%s: %v", query, err)
	}
	h.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// read reads the next event, skipping comments.
func (f *feed) read() (sseEvent, error) {
	var ev sseEvent
	for {
		line, err := f.rd.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if ev.Event != "" {
				return ev, nil
			}
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id: "):
			ev.ID, _ = strconv.ParseUint(line[4:], 10, 64)
		case strings.HasPrefix(line, "event: "):
			ev.Event = line[7:]
		case strings.HasPrefix(line, "data: "):
			ev.Data += line[6:]
		}
	}
}

// next reads the next event; it fails the test if none arrives within 10 s.
func (f *feed) next() sseEvent {
	f.t.Helper()
	type result struct {
		ev  sseEvent
		err error
	}
	ch := make(chan result, 1)
	// Ends when an event is read or the body is closed (at cleanup).
	go func() {
		ev, err := f.read()
		ch <- result{ev, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			f.t.Fatalf("reading the feed: %v", r.err)
		}
		return r.ev
	case <-time.After(10 * time.Second):
		f.t.Fatal("no event within 10s")
		return sseEvent{}
	}
}

// nextChanges reads n change events and returns their IDs.
func (f *feed) nextChanges(n int) []uint64 {
	f.t.Helper()
	var ids []uint64
	for range n {
		ev := f.next()
		if ev.Event != "change" {
			f.t.Fatalf("got event %q (%s), want a change", ev.Event, ev.Data)
		}
		ids = append(ids, ev.ID)
	}
	return ids
}

func seqs(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

// TestEventsResumeAfterDisconnect: a client that reconnects with
// Last-Event-ID gets every event stored while it was away, and none twice.
func TestEventsResumeAfterDisconnect(t *testing.T) {
	h := startFeedHub(t, FeedConfig{}, nil)
	for i := range 5 {
		h.publish(fmt.Sprintf("dev-%d", i), 0, "reported")
	}
	f := h.open("from=1", nil)
	if got := f.nextChanges(5); !slices.Equal(got, seqs(1, 5)) {
		t.Fatalf("first connection got %v, want 1..5", got)
	}
	f.resp.Body.Close()
	waitFeeds(t, h.reg, 0)

	for i := range 5 {
		h.publish(fmt.Sprintf("dev-%d", i), 0, "desired")
	}
	f = h.open("from=1", nil, "Last-Event-ID", "5")
	got := f.nextChanges(5)
	h.publish("dev-late", 0, "tags") // arrives live
	got = append(got, f.nextChanges(1)...)
	if !slices.Equal(got, seqs(6, 11)) {
		t.Fatalf("after reconnecting with Last-Event-ID 5 the feed sent %v, want 6..11", got)
	}
	waitFor(t, "11 events sent", func() bool { return h.feedMetric(t, "sent") == 11 })
	if n := h.feedMetric(t, "open"); n != 1 {
		t.Errorf("twinhub_http_feeds_open = %v, want 1", n)
	}
}

// TestEventsWithoutFromStartsNow: a feed without from or Last-Event-ID
// sends only events stored after it opened.
func TestEventsWithoutFromStartsNow(t *testing.T) {
	h := startFeedHub(t, FeedConfig{}, nil)
	h.publish("old", 0, "reported")
	f := h.open("", nil)
	seq := h.publish("new", 0, "reported")
	ev := f.next()
	if ev.ID != seq || ev.device(t) != "new" {
		t.Fatalf("first event is %d of %s, want %d of new", ev.ID, ev.device(t), seq)
	}
}

// TestEventsFilter: deviceIdPrefix (any ID, escaped characters included),
// deviceId and sections select what a feed sends.
func TestEventsFilter(t *testing.T) {
	h := startFeedHub(t, FeedConfig{}, nil)
	h.publish("room/1", 0, "desired")
	h.publish("room/2", 0, "reported")
	h.publish("hall-1", 0, "desired")
	h.publish("room/3", 0, "tags", "desired")
	h.publish("roomy", 0, "desired")
	h.publish("hall-1", 0, "reported")
	h.publish("hall-10", 0, "reported")

	devices := func(f *feed, n int) []string {
		var d []string
		for range n {
			d = append(d, f.next().device(t))
		}
		return d
	}
	for _, c := range []struct {
		query string
		want  []string
	}{
		{"from=1&deviceIdPrefix=room%2F&sections=desired", []string{"room/1", "room/3"}},
		{"from=1&deviceId=hall-1", []string{"hall-1", "hall-1"}},
		{"from=1&sections=reported,tags", []string{"room/2", "room/3", "hall-1", "hall-10"}},
	} {
		f := h.open(c.query, nil)
		// A marker after the others shows that nothing else came first.
		if got := devices(f, len(c.want)); !slices.Equal(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.query, got, c.want)
		}
	}
	for _, q := range []string{"sections=state", "from=x", "from=0", "deviceId=a&deviceIdPrefix=b"} {
		resp := h.get(q, nil)
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "ErrorCode:ArgumentInvalid;") {
			t.Errorf("GET /events?%s: %d %s, want 400 ArgumentInvalid", q, resp.StatusCode, b)
		}
	}
	resp := h.get("", nil, "Last-Event-ID", "abc")
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("Last-Event-ID abc: %d, want 400", resp.StatusCode)
	}
}

// TestEventsSlowClientCutOff: a client that stops reading is cut off with a
// cutoff event that says where to resume, while another client keeps
// getting every event; resuming there misses nothing.
func TestEventsSlowClientCutOff(t *testing.T) {
	h := startFeedHub(t, FeedConfig{Buffer: 8, MaxStall: time.Second, WriteTimeout: 30 * time.Second}, nil)
	// The slow client's socket takes little, so the hub's writes block soon.
	slowClient := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				c.(*net.TCPConn).SetReadBuffer(64 << 10)
			}
			return c, err
		},
		ReadBufferSize: 4 << 10,
	}}
	slow := h.open("from=1", slowClient)
	fast := h.open("from=1", nil)

	const n = 300
	fastGot := make(chan []uint64, 1)
	// Reads until n events arrived or the feed failed.
	go func() {
		var ids []uint64
		for len(ids) < n {
			ev, err := fast.read()
			if err != nil || ev.Event != "change" {
				break
			}
			ids = append(ids, ev.ID)
		}
		fastGot <- ids
	}()
	for i := range n {
		h.publish(fmt.Sprintf("dev-%d", i%7), 32<<10, "reported")
	}
	select {
	case got := <-fastGot:
		if !slices.Equal(got, seqs(1, n)) {
			t.Fatalf("the fast client got %d events, not 1..%d in order", len(got), n)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the fast client did not get every event within 20s")
	}
	waitFor(t, "the slow client to be cut off", func() bool {
		return h.feedMetric(t, "cutoff") == 1
	})

	var got []uint64
	var end sseEvent
	for {
		ev := slow.next()
		if ev.Event != "change" {
			end = ev
			break
		}
		got = append(got, ev.ID)
	}
	var e feedEnd
	if end.Event != "cutoff" || json.Unmarshal([]byte(end.Data), &e) != nil || e.Reason != "slow" {
		t.Fatalf("the slow client's feed ended with %q %s, want a cutoff event", end.Event, end.Data)
	}
	if len(got) == n || !slices.Equal(got, seqs(1, uint64(len(got)))) || e.ResumeFrom != uint64(len(got))+1 {
		t.Fatalf("before the cutoff the slow client got 1..%d (in order: %v), resumeFrom %d", len(got), slices.Equal(got, seqs(1, uint64(len(got)))), e.ResumeFrom)
	}
	t.Logf("the slow client got %d events, then a cutoff: %s", len(got), end.Data)

	resumed := h.open(fmt.Sprintf("from=%d", e.ResumeFrom), nil)
	if rest := resumed.nextChanges(n - len(got)); !slices.Equal(rest, seqs(e.ResumeFrom, n)) {
		t.Fatalf("resuming from %d sent %v, want %d..%d", e.ResumeFrom, rest, e.ResumeFrom, n)
	}
}

// TestEventsWrongCredentials: a feed needs a SAS token of a policy with
// ServiceConnect or RegistryRead; others get 401 with IoT Hub's error body.
func TestEventsWrongCredentials(t *testing.T) {
	policies, _, err := sas.OpenPolicies(filepath.Join(t.TempDir(), "policies.json"))
	if err != nil {
		t.Fatal(err)
	}
	h := startFeedHub(t, FeedConfig{}, policies)
	token := func(policy, key string) string {
		if key == "" {
			p, _ := policies.Get(policy)
			key = p.PrimaryKey
		}
		tok, err := sas.New("localhost", key, policy, time.Now().Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	for _, c := range []struct{ name, auth string }{
		{"no token", ""},
		{"wrong key", token("registryRead", sas.NewKey())},
		{"policy without the right", token("device", "")},
	} {
		h.auth = c.auth
		resp := h.get("", nil)
		b, _ := io.ReadAll(resp.Body)
		var body struct{ Message string }
		json.Unmarshal(b, &body)
		if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(body.Message, "ErrorCode:IotHubUnauthorizedAccess;") ||
			resp.Header.Get("iothub-errorcode") != "IotHubUnauthorizedAccess" {
			t.Errorf("%s: %d %s, want 401 IotHubUnauthorizedAccess", c.name, resp.StatusCode, b)
		}
	}
	for _, policy := range []string{"registryRead", "service"} {
		h.auth = token(policy, "")
		h.open("", nil).resp.Body.Close()
	}
}

// feedMetric returns the value of a feed metric by short name (cutoff:
// the slow clients').
func (h *feedHub) feedMetric(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"sent": "twinhub_http_feed_events_sent_total", "open": "twinhub_http_feeds_open",
		"cutoff": "twinhub_http_feed_cutoffs_total"}[name]
	for _, mf := range mfs {
		if mf.GetName() != want {
			continue
		}
		for _, m := range mf.GetMetric() {
			if name == "cutoff" && m.GetLabel()[0].GetValue() != cutSlow {
				continue
			}
			return m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", want)
	return 0
}

func waitFeeds(t *testing.T, reg *prometheus.Registry, n float64) {
	t.Helper()
	h := &feedHub{t: t, reg: reg}
	waitFor(t, fmt.Sprintf("%v open feeds", n), func() bool { return h.feedMetric(t, "open") == n })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
