package pipeline_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinhub/twinhub/deploy/natstest"
	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// stall makes a processor's clock block, once armed, on its next reading:
// the processor then holds the command it is deciding, as a process that
// froze or died there would.
type stall struct {
	mu      sync.Mutex
	armed   bool
	blocked chan struct{} // closed when a reading blocks
	release chan struct{} // closed to let it go on
}

func newStall() *stall {
	return &stall{blocked: make(chan struct{}), release: make(chan struct{})}
}

func (s *stall) arm() {
	s.mu.Lock()
	s.armed = true
	s.mu.Unlock()
}

func (s *stall) now() time.Time {
	s.mu.Lock()
	armed := s.armed
	s.armed = false
	s.mu.Unlock()
	if armed {
		close(s.blocked)
		<-s.release
	}
	return time.Now()
}

// member is one processor of several on the hub's NATS, on connections
// of its own.
type member struct {
	*pipeline.Processor
	reg  *prometheus.Registry
	nc   *nats.Conn
	sub  *nats.Conn
	stop func() // graceful: Run's context ends and Run returns
}

// kill closes the processor's NATS connections without any cleanup, as a
// process killed with SIGKILL leaves them: no unpin, no goodbye, no ack of
// the command it holds.
func (m *member) kill() {
	m.sub.Close()
	m.nc.Close()
}

// startMember starts a processor on the hub's NATS. now is its clock
// (nil: time.Now).
func startMember(t *testing.T, h *hub, name string, topo topology.Config, now func() time.Time) *member {
	t.Helper()
	nc, err := h.connect(name)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := h.connect(name + "-sub")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	proc, err := pipeline.NewProcessor(context.Background(), pipeline.ProcessorConfig{Topology: topo, Now: now}, nc, sub, reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// Runs until stop (or the test's cleanup) cancels ctx.
	go func() { done <- proc.Run(ctx) }()
	<-proc.Running()
	var once sync.Once
	m := &member{Processor: proc, reg: reg, nc: nc, sub: sub}
	m.stop = func() {
		once.Do(func() {
			cancel()
			<-done
			nc.Close()
		})
	}
	t.Cleanup(m.stop)
	return m
}

// onePerPartition names a device in each partition.
func onePerPartition(prefix string, partitions int) []string {
	devs := make([]string, partitions)
	for i := 0; slices.Contains(devs, ""); i++ {
		id := fmt.Sprintf("%s%d", prefix, i)
		if p := topology.Partition(id, partitions); devs[p] == "" {
			devs[p] = id
		}
	}
	return devs
}

// patchAll sends one reported patch to each device, all at once, and
// waits for every result.
func patchAll(t *testing.T, h *hub, devs []string) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(devs))
	for _, id := range devs {
		wg.Add(1)
		// Exits when its patch is answered or times out.
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res, err := h.client.Do(ctx, pipeline.Command{Kind: pipeline.KindPatchReported, DeviceID: id, Body: []byte(`{"x":1}`)})
			if err == nil && res.Status != 204 {
				err = fmt.Errorf("%+v", res)
			}
			if err != nil {
				errs <- fmt.Errorf("patching %s: %w", id, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// checkOwners asserts that every partition is owned by exactly one of ms.
func checkOwners(ms ...*member) error {
	seen := map[int]int{}
	for i, m := range ms {
		for _, p := range m.Owned() {
			if j, ok := seen[p]; ok {
				return fmt.Errorf("partition %d owned by processors %d and %d", p, j, i)
			}
			seen[p] = i
		}
	}
	return nil
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", timeout, what)
		}
	}
}

// balanced patches every device (one per partition) until the two
// processors own all the partitions between them, each exactly one, each
// between 3/8 and 5/8 of them (6 and 10 of 16), and pull every partition
// again (none parked after a hand-over).
func balanced(t *testing.T, h *hub, devs []string, a, b *member) {
	t.Helper()
	n := len(devs)
	fair := func(k int) bool { return k*8 >= 3*n && k*8 <= 5*n }
	waitFor(t, 15*time.Second, "two processors balance the partitions", func() bool {
		patchAll(t, h, devs)
		if err := checkOwners(a, b); err != nil {
			t.Fatal(err)
		}
		na, nb := len(a.Owned()), len(b.Owned())
		return na+nb == n && fair(na) && fair(nb) &&
			pipeline.Pulling(a.Processor) == n && pipeline.Pulling(b.Processor) == n
	})
	t.Logf("balanced: %v and %v", a.Owned(), b.Owned())
}

// TestPartitionOwnership runs processors on one NATS as instances would.
// The first owns every partition; a second joins and they balance, each
// partition owned by exactly one; the second stops gracefully and the first
// owns everything within a second; a third joins and they balance; the
// first dies without cleanup while holding a command, and the third owns
// everything and applies that command, exactly once, within
// max(PinnedTTL, AckWait) and a second.
// presenceTimeout is how long a processor counts another that went silent.
const presenceTimeout = 3 * time.Second

func TestPartitionOwnership(t *testing.T) {
	topo := topology.Config{Partitions: 16}
	h := startBare(t, t.TempDir(), topo)
	devs := onePerPartition("own", 16)
	stallA := newStall()
	a := startMember(t, h, "a", topo, stallA.now)
	for _, id := range devs {
		h.do(t, pipeline.Command{Kind: pipeline.KindCreateDevice, DeviceID: id})
	}
	if got := a.Owned(); len(got) != 16 {
		t.Fatalf("a lone processor owns %v, want all 16 partitions", got)
	}
	if v := gaugeValue(t, a.reg, "twinhub_pipeline_partitions_owned"); v != 16 {
		t.Fatalf("twinhub_pipeline_partitions_owned = %v, want 16", v)
	}

	b := startMember(t, h, "b", topo, nil)
	balanced(t, h, devs, a, b)

	// The stop unpins at once, then waits for its outstanding pulls to
	// end: commands sent meanwhile go to the other.
	stopped := time.Now()
	stopDone := make(chan struct{})
	// Exits when b's Run has returned.
	go func() { b.stop(); close(stopDone) }()
	for len(a.Owned()) < 16 {
		patchAll(t, h, devs)
		if took := time.Since(stopped); took > time.Second {
			t.Fatalf("%s after the other began to stop, a owns %v, want all 16 within 1s", took, a.Owned())
		}
	}
	t.Logf("graceful stop: every partition applied by the other within %s", time.Since(stopped))
	<-stopDone

	c := startMember(t, h, "c", topo, nil)
	balanced(t, h, devs, a, c)

	// a holds a command of one of its partitions, and dies.
	held := devs[a.Owned()[0]]
	stallA.arm()
	heldDone := make(chan error, 1)
	// Exits when the held command is answered (by c) or times out.
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := h.client.Do(ctx, pipeline.Command{Kind: pipeline.KindPatchReported, DeviceID: held, Body: []byte(`{"held":true}`)})
		if err == nil && res.Status != 204 {
			err = fmt.Errorf("%+v", res)
		}
		heldDone <- err
	}()
	<-stallA.blocked
	a.kill()
	killed := time.Now()
	patchAll(t, h, devs)
	if err := <-heldDone; err != nil {
		t.Fatalf("the command the dead processor held: %v", err)
	}
	took := time.Since(killed)
	close(stallA.release)
	// c may take the dead processor's partitions before it stops counting
	// it (presenceTimeout), and hand its surplus over meanwhile: once the
	// dead one is forgotten, c owns every partition.
	waitFor(t, presenceTimeout+5*time.Second, "c owns all 16 partitions after the other died", func() bool {
		patchAll(t, h, devs)
		return len(c.Owned()) == 16
	})
	cfg := topo.WithDefaults()
	bound := max(cfg.PinnedTTL, cfg.AckWait) + time.Second
	t.Logf("kill: every partition of the dead processor applied by the other %s after the kill (bound %s)", took, bound)
	if took > bound {
		t.Errorf("failover took %s, want at most %s", took, bound)
	}
	// Each patch once: created (2), then patched in every balance round
	// and after each move; the held patch appears once, versions gapless.
	evs := h.events(t, held)
	heldSeen := 0
	for i, ev := range evs {
		if ev.Version != int64(i+2) {
			t.Fatalf("%s: event %d has version %d, want %d (versions %v)", held, i, ev.Version, i+2, versions(evs))
		}
		if string(ev.Patch.Reported()) == `{"held":true}` {
			heldSeen++
		}
	}
	if heldSeen != 1 {
		t.Fatalf("the held patch has %d change events, want 1", heldSeen)
	}
}

// gaugeValue reads an unlabelled gauge of reg.
func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestForcedSplitBrainLosesNothing forces two owners of one partition:
// while its owner holds a command (frozen in the middle of applying it), the
// partition is unpinned, so the other processor takes it, gets that command
// again after the ack wait and goes on with the device's stream of patches.
// Then the first wakes up and finishes its stale attempt. No patch is
// lost, the versions have no gaps, and no version has two change events.
func TestForcedSplitBrainLosesNothing(t *testing.T) {
	// One partition: balancing never moves it, only the unpin does.
	topo := topology.Config{Partitions: 1, AckWait: 2 * time.Second}
	h := startBare(t, t.TempDir(), topo)
	stallA := newStall()
	a := startMember(t, h, "a", topo, stallA.now)
	h.do(t, pipeline.Command{Kind: pipeline.KindCreateDevice, DeviceID: "split"})
	b := startMember(t, h, "b", topo, nil)
	if !slices.Equal(a.Owned(), []int{0}) || len(b.Owned()) != 0 {
		t.Fatalf("owners before the split: %v and %v, want the first only", a.Owned(), b.Owned())
	}

	const patches = 40
	progress := make(chan int, patches)
	errc := make(chan error, 1)
	// Exits after the last patch or the first failure.
	go func() {
		for n := 1; n <= patches; n++ {
			if n == 10 {
				stallA.arm()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			res, err := h.client.Do(ctx, pipeline.Command{Kind: pipeline.KindPatchReported, DeviceID: "split",
				Body: []byte(fmt.Sprintf(`{"n":%d}`, n))})
			cancel()
			if err == nil && (res.Status != 204 || res.Version != int64(n+1)) {
				err = fmt.Errorf("patch %d: %+v, want 204 with reported version %d", n, res, n+1)
			}
			if err != nil {
				errc <- err
				return
			}
			progress <- n
		}
		errc <- nil
	}()
	<-stallA.blocked
	cmds, err := h.js.Stream(context.Background(), topology.CommandStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := cmds.UnpinConsumer(context.Background(), topology.ConsumerName(0), topology.PartitionGroup); err != nil {
		t.Fatal(err)
	}
	for n := range progress {
		if n == 20 {
			break // the other owner has applied the held patch and ten more
		}
	}
	close(stallA.release) // the first owner finishes its stale attempt
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the stale owner finishes the held patch", func() bool {
		return counter(t, a.reg, "duplicate")+counter(t, a.reg, "applied") >= 10
	})
	if got := counter(t, b.reg, "applied"); got < patches-9 {
		t.Errorf("the second owner applied %v patches, want at least %d", got, patches-9)
	}

	evs := h.events(t, "split")
	perVersion := map[int64]int{}
	for i, ev := range evs {
		perVersion[ev.Version]++
		if i > 0 {
			if want := fmt.Sprintf(`{"n":%d}`, i); ev.Version != int64(i+2) || string(ev.Patch.Reported()) != want {
				t.Errorf("event %d: version %d, patch %s; want version %d, patch %s", i, ev.Version, ev.Patch.Reported(), i+2, want)
			}
		}
	}
	for v, n := range perVersion {
		if n != 1 {
			t.Errorf("version %d has %d change events", v, n)
		}
	}
	if len(evs) != patches+1 {
		t.Errorf("%d change events, want %d (versions %v)", len(evs), patches+1, versions(evs))
	}
	rec, err := h.store.Get(context.Background(), "split")
	if err != nil {
		t.Fatal(err)
	}
	if rec.Twin.Version != patches+2 || rec.Twin.Reported.Version != patches+1 {
		t.Errorf("twin version %d, reported version %d; want %d and %d", rec.Twin.Version, rec.Twin.Reported.Version, patches+2, patches+1)
	}
}

// counter reads twinhub_pipeline_commands_total for reported patches with
// the outcome.
func counter(t *testing.T, reg *prometheus.Registry, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "twinhub_pipeline_commands_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["kind"] == string(pipeline.KindPatchReported) && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestConsumerLeaderChangeMovesThePin runs two processors on a 3-node
// cluster at R3 and makes the leader of a partition consumer step down:
// the new leader has forgotten the pin, so the partition is pinned anew
// at its next command (a new pin ID). Afterwards every partition is still
// owned by exactly one processor (the one that lost the pin notices it),
// and the device's patches go on without gaps.
func TestConsumerLeaderChangeMovesThePin(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	c.WaitHealthy(30 * time.Second)
	topo := topology.Config{Partitions: 4, Replicas: 3}
	nc := c.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := topology.Ensure(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	store, err := pipeline.OpenStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	client, err := pipeline.NewClient(nc, 4, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	h := &hub{js: js, client: client, store: store,
		connect: func(string) (*nats.Conn, error) { return c.Connect(), nil }}
	devs := onePerPartition("lc", 4)
	a := startMember(t, h, "a", topo, nil)
	for _, id := range devs {
		h.do(t, pipeline.Command{Kind: pipeline.KindCreateDevice, DeviceID: id})
	}
	b := startMember(t, h, "b", topo, nil)
	balanced(t, h, devs, a, b)

	p := a.Owned()[0]
	name := topology.ConsumerName(p)
	pinOf := func() string {
		cons, err := js.Consumer(ctx, topology.CommandStream, name)
		if err != nil {
			t.Fatal(err)
		}
		if g := cons.CachedInfo().PriorityGroups; len(g) > 0 {
			return g[0].PinnedClientID
		}
		return ""
	}
	before := pinOf()
	resp, err := nc.Request("$JS.API.CONSUMER.LEADER.STEPDOWN."+topology.CommandStream+"."+name, nil, 10*time.Second)
	if err != nil || !strings.Contains(string(resp.Data), `"success":true`) {
		t.Fatalf("consumer leader step-down: %v %s", err, resp.Data)
	}
	waitFor(t, 30*time.Second, "the partition pinned anew after the leader change, owned by exactly one processor", func() bool {
		patchAll(t, h, devs)
		if err := checkOwners(a, b); err != nil {
			return false // the loser notices within a second
		}
		pin := pinOf()
		return pin != "" && pin != before && len(a.Owned())+len(b.Owned()) == 4
	})
	t.Logf("after the step-down: %v and %v", a.Owned(), b.Owned())
	evs := h.events(t, devs[p])
	for i, ev := range evs {
		if ev.Version != int64(i+2) {
			t.Fatalf("%s: versions %v have a gap or a repeat", devs[p], versions(evs))
		}
	}
}
