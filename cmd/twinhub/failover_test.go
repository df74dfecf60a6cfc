package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/bridge/deviceclient"
	chdeploy "github.com/twinhub/twinhub/deploy/clickhouse"
	"github.com/twinhub/twinhub/deploy/natstest"
	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// failoverDevices is the closed-loop load: each device has one reported
// patch in flight at a time.
const failoverDevices = 20

// TestClusterFailover runs two `twinhub run` processes with --replicas 3 on
// a 3-node NATS cluster of real nats-server processes, with history in a
// real ClickHouse written by the history sinks of both (one writer at a
// time), under a closed-loop load of reported patches from MQTT devices
// spread over both instances and of HTTP tag and desired patches. Under
// that load it kills -9 the NATS node leading TWINHUB_EVENTS, then the
// instance writing history (its devices reconnect to the other, as a
// device with a list of gateways does), then restarts both. After each step: every
// acknowledged change is in the change events and in the twin as read from
// every running instance; each device's versions run without gaps and no
// change is applied twice; ClickHouse holds each version exactly once. The
// longest stretch without an acknowledged change is logged per step; only
// a generous sanity bound (the load resumes within a minute) is asserted.
func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("failover test")
	}
	ch := startClickHouse(t)
	c := natstest.NewProcessCluster(t, 3)
	c.StartAll()
	c.WaitHealthy(30 * time.Second)
	js, err := jetstream.New(c.Connect())
	if err != nil {
		t.Fatal(err)
	}
	// Both run the history sink, as by default: one writes at a time.
	args := []string{"--replicas", "3", "--nats-url", c.URLs(), "--clickhouse-url", ch.URL("")}
	h := &failoverHub{t: t}
	h.procs[0] = startTwinhub(t, "", args...)
	h.procs[1] = startTwinhub(t, "", args...)

	l := newFailoverLoad(t, h)
	for i := range failoverDevices {
		id := l.ids[i]
		if r := h.procs[i%2].call(t, "PUT", "/devices/"+id, ""); r.Status != 200 {
			t.Fatalf("create %s: %d %s", id, r.Status, r.Body)
		}
		l.opts[i] = h.procs[0].deviceOptions(t, id)
	}
	v := &failoverVerifier{t: t, js: js, ch: ch, l: l}

	natsLeader := -1
	l.step("kill -9 of the NATS node leading "+topology.EventStream, func() {
		natsLeader = c.WaitStreamLeader(topology.EventStream, 10*time.Second)
		c.Kill(natsLeader)
	})
	v.verify("after the NATS leader's kill", h.live())

	writer := h.historyWriter()
	l.step("kill -9 of the instance writing history", func() { h.kill(writer) })
	v.verify("after the history writer's kill", h.live())

	l.step("restart of the NATS node and of the instance", func() {
		c.Start(natsLeader)
		h.restart(writer, args)
		c.WaitHealthy(60 * time.Second)
	})
	l.step("devices on both instances again", nil)
	v.verify("after both restarted", h.live())
}

// failoverHub holds the two instances; the load reads it while the test
// kills and restarts them.
type failoverHub struct {
	t     *testing.T
	mu    sync.Mutex
	procs [2]*proc
}

func alive(p *proc) bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// live returns the running instances.
func (h *failoverHub) live() []*proc {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*proc
	for _, p := range h.procs {
		if alive(p) {
			out = append(out, p)
		}
	}
	return out
}

// gateway returns instance i if it runs, else the other one, or nil.
func (h *failoverHub) gateway(i int) *proc {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range []*proc{h.procs[i], h.procs[1-i]} {
		if alive(p) {
			return p
		}
	}
	return nil
}

// historyWriter waits until one instance's history sink is the writer and
// returns its index.
func (h *failoverHub) historyWriter() int {
	writer := -1
	waitFor(h.t, 30*time.Second, "one instance to write the history", func() bool {
		for i, p := range h.procs {
			if p.metricValue(h.t, "twinhub_history_writer") == "1" {
				writer = i
				return true
			}
		}
		return false
	})
	return writer
}

func (h *failoverHub) kill(i int) {
	h.mu.Lock()
	p := h.procs[i]
	h.mu.Unlock()
	p.kill()
}

func (h *failoverHub) restart(i int, args []string) {
	h.mu.Lock()
	dir := h.procs[i].dataDir
	h.mu.Unlock()
	p := startTwinhub(h.t, dir, args...)
	h.mu.Lock()
	h.procs[i] = p
	h.mu.Unlock()
}

// failoverLoad is the closed loop, and what it was acknowledged.
type failoverLoad struct {
	t    *testing.T
	h    *failoverHub
	ids  []string
	opts []deviceclient.Options
	// nextSeq numbers each device's reported patches (seq), and nextH the
	// HTTP patches (h): every attempt gets a new number, so a change applied
	// twice shows as a number found twice.
	nextSeq []int
	nextH   int

	mu   sync.Mutex
	acks []time.Time // when each acknowledged change was acknowledged
	// deviceAcks[i] is when device i's reports were acknowledged in the
	// current step.
	deviceAcks [failoverDevices][]time.Time
	// reported[i][seq] is the reported $version device i got with its 204.
	reported []map[int]int64
	// patched[device][h] is the twin version an HTTP patch got with its 200.
	patched map[string]map[int]int64
	errs    map[string]int // failed attempts of the current step, by kind
}

func newFailoverLoad(t *testing.T, h *failoverHub) *failoverLoad {
	l := &failoverLoad{t: t, h: h, opts: make([]deviceclient.Options, failoverDevices),
		nextSeq: make([]int, failoverDevices), patched: map[string]map[int]int64{}}
	for i := range failoverDevices {
		l.ids = append(l.ids, fmt.Sprintf("fo-%02d", i))
		l.reported = append(l.reported, map[int]int64{})
	}
	return l
}

func (l *failoverLoad) ack(at time.Time) {
	l.acks = append(l.acks, at)
}

func (l *failoverLoad) fail(kind string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.errs[kind]++
}

// acksAfter counts the acknowledgements after t0 and returns the first.
func (l *failoverLoad) acksAfter(t0 time.Time) (int, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, first := 0, time.Time{}
	for _, at := range l.acks {
		if at.After(t0) {
			if n == 0 || at.Before(first) {
				first = at
			}
			n++
		}
	}
	return n, first
}

// devicesAckedAfter counts the devices with a report acknowledged after t0.
func (l *failoverLoad) devicesAckedAfter(t0 time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, acks := range l.deviceAcks {
		if len(acks) > 0 && acks[len(acks)-1].After(t0) {
			n++
		}
	}
	return n
}

// longestDeviceWait is the longest a device waited, from t0 on, between two
// acknowledgements of its reports (or from t0 to its first one).
func (l *failoverLoad) longestDeviceWait(t0 time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	var longest time.Duration
	for _, acks := range l.deviceAcks {
		prev := t0
		for _, at := range acks {
			if at.After(prev) {
				longest = max(longest, at.Sub(prev))
				prev = at
			}
		}
	}
	return longest
}

// longestGap is the longest stretch between from and to without an
// acknowledgement, and where it began.
func (l *failoverLoad) longestGap(from, to time.Time) (time.Duration, time.Time) {
	l.mu.Lock()
	ts := []time.Time{from}
	for _, at := range l.acks {
		if at.After(from) && at.Before(to) {
			ts = append(ts, at)
		}
	}
	l.mu.Unlock()
	ts = append(ts, to)
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	var gap time.Duration
	var at time.Time
	for i := 1; i < len(ts); i++ {
		if d := ts[i].Sub(ts[i-1]); d > gap {
			gap, at = d, ts[i-1]
		}
	}
	return gap, at
}

// step runs the load, applies the fault once it is flowing, waits for the
// load to resume and run on for a while, then stops it and logs what it saw.
func (l *failoverLoad) step(name string, fault func()) {
	t := l.t
	t.Helper()
	l.mu.Lock()
	l.errs = map[string]int{}
	l.deviceAcks = [failoverDevices][]time.Time{}
	l.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range failoverDevices {
		wg.Add(1)
		// Reports until the step ends.
		go func() {
			defer wg.Done()
			l.device(ctx, i)
		}()
	}
	wg.Add(1)
	// Patches until the step ends.
	go func() {
		defer wg.Done()
		l.backEnd(ctx)
	}()
	start := time.Now()
	waitFor(t, 60*time.Second, "the load to run before the "+name, func() bool {
		n, _ := l.acksAfter(start)
		return n >= 100
	})
	faultAt := time.Now()
	if fault != nil {
		fault()
	}
	faultDone := time.Now()
	// The sanity bound: every device's reports are acknowledged again
	// within a minute of the fault, and the load then runs on for two
	// seconds.
	waitFor(t, 60*time.Second, "every device's reports to be acknowledged after the "+name, func() bool {
		return l.devicesAckedAfter(faultDone) == failoverDevices
	})
	resumed := time.Now()
	waitFor(t, 30*time.Second, "two seconds of load after the "+name, func() bool {
		return time.Since(resumed) > 2*time.Second
	})
	end := time.Now()
	cancel()
	wg.Wait()
	n, _ := l.acksAfter(start)
	gap, gapAt := l.longestGap(start, end)
	l.mu.Lock()
	errs := fmt.Sprint(l.errs)
	l.mu.Unlock()
	// The hub rides out a NATS election and an instance's loss: a request
	// is answered with its result, never with a server error, and no
	// device waits for an answer that does not come. (Requests in flight
	// on a killed instance lose their connection; that is allowed.)
	for kind, n := range l.errs {
		if strings.HasPrefix(kind, "mqtt 5") || strings.HasPrefix(kind, "http 5") || kind == "mqtt no answer in 20s" {
			t.Errorf("%s: %d requests failed with %s", name, n, kind)
		}
	}
	t.Logf("%s: %d changes acknowledged in %s; longest stretch without an acknowledged change %s, from %s after the fault began "+
		"(the fault itself took %s); longest wait of one device for its next acknowledgement %s; failed attempts %s",
		name, n, end.Sub(start).Round(time.Millisecond), gap.Round(time.Millisecond), gapAt.Sub(faultAt).Round(time.Millisecond),
		faultDone.Sub(faultAt).Round(time.Millisecond), l.longestDeviceWait(faultAt).Round(time.Millisecond), errs)
}

// device is one device's closed loop: connect to its home instance (or the
// other when its home is down), report, and on a dropped connection connect
// again from the gateway list.
func (l *failoverLoad) device(ctx context.Context, i int) {
	var dev *deviceclient.Client
	defer func() {
		if dev != nil {
			dev.Close()
		}
	}()
	for ctx.Err() == nil {
		if dev == nil {
			gw := l.h.gateway(i % 2)
			if gw == nil {
				l.fail("no gateway")
				pause(ctx, 100*time.Millisecond)
				continue
			}
			dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			d, err := deviceclient.Dial(dctx, gw.MQTT, l.ids[i], l.opts[i])
			cancel()
			if err != nil {
				l.fail("connect")
				pause(ctx, 100*time.Millisecond)
				continue
			}
			dev = d
		}
		seq := l.nextSeq[i]
		l.nextSeq[i]++
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		v, err := dev.Report(rctx, []byte(fmt.Sprintf(`{"seq":%d,"load":{"n":%d,"pad":"%032d"}}`, seq, seq, seq)))
		cancel()
		if err == nil {
			at := time.Now()
			l.mu.Lock()
			l.deviceAcks[i] = append(l.deviceAcks[i], at)
			l.reported[i][seq] = v
			l.ack(at)
			l.mu.Unlock()
			continue
		}
		if ctx.Err() != nil {
			return
		}
		var de *deviceclient.Error
		switch {
		case errors.As(err, &de):
			l.fail(fmt.Sprintf("mqtt %d", de.Status))
			pause(ctx, 50*time.Millisecond) // a device backs off before it retries
		case errors.Is(err, deviceclient.ErrConnectionLost):
			l.fail("mqtt connection lost")
		case errors.Is(err, context.DeadlineExceeded):
			l.fail("mqtt no answer in 20s")
		default:
			l.fail("mqtt " + err.Error())
		}
		if !dev.Connected() {
			dev.Close()
			dev = nil
		}
	}
}

// backEnd patches tags and desired properties of the devices in turn
// through the running instances in turn.
func (l *failoverLoad) backEnd(ctx context.Context) {
	for k := 0; ctx.Err() == nil; k++ {
		live := l.h.live()
		if len(live) == 0 {
			pause(ctx, 100*time.Millisecond)
			continue
		}
		p := live[k%len(live)]
		id := l.ids[k%failoverDevices]
		n := l.nextH
		l.nextH++
		body := fmt.Sprintf(`{"tags":{"h":%d}}`, n)
		if n%2 == 1 {
			body = fmt.Sprintf(`{"properties":{"desired":{"h":%d}}}`, n)
		}
		r, err := tryCall(ctx, p, "PATCH", "/twins/"+id, body)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			l.fail("http transport")
			pause(ctx, 50*time.Millisecond)
		case r.Status != 200:
			l.fail(fmt.Sprintf("http %d", r.Status))
			pause(ctx, 50*time.Millisecond)
		default:
			var tw struct{ Version int64 }
			if err := json.Unmarshal(r.Body, &tw); err != nil || tw.Version == 0 {
				l.t.Errorf("PATCH %s answered 200 without a version: %s", id, r.Body)
				continue
			}
			at := time.Now()
			l.mu.Lock()
			if l.patched[id] == nil {
				l.patched[id] = map[int]int64{}
			}
			l.patched[id][n] = tw.Version
			l.ack(at)
			l.mu.Unlock()
		}
	}
}

func pause(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// tryCall is call for a process that may die: a transport error is
// returned, not fatal.
func tryCall(ctx context.Context, p *proc, method, path, body string) (httpResp, error) {
	ctx, cancel := context.WithTimeout(ctx, 40*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, p.HTTP+path, strings.NewReader(body))
	if err != nil {
		return httpResp{}, err
	}
	req.Header.Set("Authorization", p.ownerToken(p.t))
	req.Header.Set("If-Match", "*")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return httpResp{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return httpResp{Status: resp.StatusCode, Header: resp.Header, Body: b}, err
}

// failoverVerifier checks the twins, the change events and ClickHouse
// against what the load was acknowledged.
type failoverVerifier struct {
	t  *testing.T
	js jetstream.JetStream
	ch *chdeploy.Server
	l  *failoverLoad
}

// failoverEvent is what the checks need of a change event.
type failoverEvent struct {
	op, commandID string
	version       int64
	reported      int64 // the reported $version after it
	seq, h        int   // the patch's seq (reported) or h (tags, desired); -1 if none
}

func (v *failoverVerifier) verify(when string, live []*proc) {
	t := v.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Commands an instance held when it died are applied once their ack
	// wait runs out: wait until none is left.
	cmds, err := v.js.Stream(ctx, topology.CommandStream)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the command backlog to drain "+when, func() bool {
		info, err := cmds.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
	events := v.readEvents(ctx, when)
	total := 0
	for _, evs := range events {
		total += len(evs)
	}
	// The load is stopped: its records are read without its lock.
	acked := 0
	for i, id := range v.l.ids {
		evs := events[id]
		byReported := map[int64]failoverEvent{}
		byVersion := map[int64]failoverEvent{}
		seqs, hs, cmdIDs := map[int]bool{}, map[int]bool{}, map[string]bool{}
		var last, lastSeq, lastTagH, lastDesiredH failoverEvent
		lastSeq.seq, lastTagH.h, lastDesiredH.h = -1, -1, -1
		for k, e := range evs {
			if k == 0 && e.op != pipeline.OpCreateDevice {
				t.Errorf("%s: %s's first event is %s version %d", when, id, e.op, e.version)
			}
			if k > 0 && e.version != last.version+1 {
				t.Errorf("%s: %s: event version %d follows %d", when, id, e.version, last.version)
			}
			if cmdIDs[e.commandID] {
				t.Errorf("%s: %s: command %s applied twice (version %d)", when, id, e.commandID, e.version)
			}
			cmdIDs[e.commandID] = true
			if e.seq >= 0 {
				if seqs[e.seq] {
					t.Errorf("%s: %s: reported patch seq %d applied twice (version %d)", when, id, e.seq, e.version)
				}
				seqs[e.seq] = true
				byReported[e.reported] = e
				lastSeq = e
			}
			if e.h >= 0 {
				if hs[e.h] {
					t.Errorf("%s: %s: HTTP patch h %d applied twice (version %d)", when, id, e.h, e.version)
				}
				hs[e.h] = true
				if e.h%2 == 0 {
					lastTagH = e
				} else {
					lastDesiredH = e
				}
			}
			byVersion[e.version] = e
			last = e
		}
		for seq, rv := range v.l.reported[i] {
			acked++
			if e, ok := byReported[rv]; !ok || e.seq != seq {
				t.Errorf("%s: %s: acknowledged report seq %d (reported version %d) is not the change event at that version (found %+v)", when, id, seq, rv, e)
			}
		}
		for h, tv := range v.l.patched[id] {
			acked++
			if e, ok := byVersion[tv]; !ok || e.h != h {
				t.Errorf("%s: %s: acknowledged HTTP patch h %d (version %d) is not the change event at that version (found %+v)", when, id, h, tv, e)
			}
		}
		for _, p := range live {
			r, err := tryCall(ctx, p, "GET", "/twins/"+id, "")
			if err != nil || r.Status != 200 {
				t.Errorf("%s: GET %s from %s: %v %d %s", when, id, p.HTTP, err, r.Status, r.Body)
				continue
			}
			var tw struct {
				Version    int64
				Tags       struct{ H *int }
				Properties struct {
					Desired  struct{ H *int }
					Reported struct {
						Seq     *int
						Version int64 `json:"$version"`
					}
				}
			}
			if err := json.Unmarshal(r.Body, &tw); err != nil {
				t.Fatalf("twin %s: %v: %s", id, err, r.Body)
			}
			value := func(p *int) int {
				if p == nil {
					return -1
				}
				return *p
			}
			if tw.Version != last.version || value(tw.Properties.Reported.Seq) != lastSeq.seq ||
				tw.Properties.Reported.Version != last.reported || value(tw.Tags.H) != lastTagH.h ||
				value(tw.Properties.Desired.H) != lastDesiredH.h {
				t.Errorf("%s: %s read from %s is version %d, reported $version %d, seq %d, tags.h %d, desired.h %d; "+
					"its last event is version %d, reported $version %d, seq %d, tags.h %d, desired.h %d", when, id, p.HTTP,
					tw.Version, tw.Properties.Reported.Version, value(tw.Properties.Reported.Seq), value(tw.Tags.H), value(tw.Properties.Desired.H),
					last.version, last.reported, lastSeq.seq, lastTagH.h, lastDesiredH.h)
			}
		}
	}
	t.Logf("%s: %d acknowledged changes checked against %d change events and %d instance(s)", when, acked, total, len(live))
	v.checkClickHouse(ctx, when, events, total)
}

// readEvents reads every change event, by device, in stream order.
func (v *failoverVerifier) readEvents(ctx context.Context, when string) map[string][]failoverEvent {
	t := v.t
	t.Helper()
	s, err := v.js.Stream(ctx, topology.EventStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// An ordered consumer may fail while the cluster settles after a
	// restart; a new one starts after the last event read.
	var cons jetstream.Consumer
	var next uint64 = 1
	out := map[string][]failoverEvent{}
	deadline := time.Now().Add(time.Minute)
	for next <= info.State.LastSeq {
		if cons == nil {
			cons, err = s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
				DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: next})
			if err != nil {
				if time.Now().After(deadline) {
					t.Fatalf("%s: reading change events: %v", when, err)
				}
				pause(ctx, 100*time.Millisecond)
				continue
			}
		}
		m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			if time.Now().After(deadline) {
				t.Fatalf("%s: reading change event %d of %d: %v", when, next, info.State.LastSeq, err)
			}
			cons = nil
			continue
		}
		meta, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		next = meta.Sequence.Stream + 1
		var ev pipeline.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		e := failoverEvent{op: ev.Op, commandID: ev.CommandID, version: ev.Version, reported: ev.ReportedVersion, seq: -1, h: -1}
		var rep struct{ Seq *int }
		if json.Unmarshal(ev.Patch.Reported(), &rep) == nil && rep.Seq != nil {
			e.seq = *rep.Seq
		}
		var tags struct{ H *int }
		if json.Unmarshal(ev.Patch.Tags, &tags) == nil && tags.H != nil {
			e.h = *tags.H
		}
		var des struct{ H *int }
		if json.Unmarshal(ev.Patch.Desired(), &des) == nil && des.H != nil {
			e.h = *des.H
		}
		out[ev.DeviceID] = append(out[ev.DeviceID], e)
	}
	return out
}

// checkClickHouse checks that ClickHouse holds each change event of the
// stream exactly once, once the sink has caught up.
func (v *failoverVerifier) checkClickHouse(ctx context.Context, when string, events map[string][]failoverEvent, total int) {
	t := v.t
	t.Helper()
	opts, err := chdeploy.ParseURL(v.ch.URL(""))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := chdeploy.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var rows, distinct uint64
	count := func() {
		if err := conn.QueryRow(ctx, "SELECT count(), uniqExact(device_id, generation_id, version) FROM twin_events").Scan(&rows, &distinct); err != nil {
			t.Fatalf("%s: counting ClickHouse rows: %v", when, err)
		}
	}
	waitFor(t, 60*time.Second, "ClickHouse to hold every change event "+when, func() bool {
		count()
		return rows >= uint64(total)
	})
	count()
	if rows != distinct {
		t.Errorf("%s: ClickHouse holds %d rows for %d distinct versions: some changes are there more than once", when, rows, distinct)
	}
	got := map[string][]string{}
	r, err := conn.Query(ctx, "SELECT device_id, command_id FROM twin_events ORDER BY device_id, version")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for r.Next() {
		var id, cmd string
		if err := r.Scan(&id, &cmd); err != nil {
			t.Fatal(err)
		}
		got[id] = append(got[id], cmd)
	}
	for id, evs := range events {
		want := make([]string, len(evs))
		for k, e := range evs {
			want[k] = e.commandID
		}
		if !slices.Equal(got[id], want) {
			t.Errorf("%s: ClickHouse holds %d changes of %s, the stream %d, or in another order", when, len(got[id]), id, len(evs))
		}
	}
	t.Logf("%s: ClickHouse holds each of the %d change events exactly once", when, total)
}
