package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/deploy/embedded"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// consumerRun is one run of the example event consumer.
type consumerRun struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	seqs []uint64 // stream sequences it processed, in order
	done chan struct{}
}

var processedRe = regexp.MustCompile(`^seq=(\d+) device=\S+ generation=\S+ version=\d+ op=\w+ source=\w+ sections=`)

// startConsumer runs the example consumer; with killAfter > 0 it is killed
// (SIGKILL) as soon as it has printed that many events.
func startConsumer(t *testing.T, exe, natsURL string, killAfter int) *consumerRun {
	t.Helper()
	r := &consumerRun{cmd: exec.Command(exe, "-durable", "example", "-ack-wait", "1s"), done: make(chan struct{})}
	r.cmd.Env = append(os.Environ(), "NATS_URL="+natsURL)
	out, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &syncBuffer{}
	r.cmd.Stderr = stderr
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Reads the consumer's output until it exits.
	go func() {
		defer close(r.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			m := processedRe.FindStringSubmatch(sc.Text())
			if m == nil {
				t.Errorf("the consumer printed %q", sc.Text())
				continue
			}
			n, _ := strconv.ParseUint(m[1], 10, 64)
			r.mu.Lock()
			r.seqs = append(r.seqs, n)
			if len(r.seqs) == killAfter {
				r.cmd.Process.Signal(syscall.SIGKILL)
			}
			r.mu.Unlock()
		}
		r.cmd.Wait()
	}()
	t.Cleanup(func() {
		r.cmd.Process.Kill()
		<-r.done
		if t.Failed() {
			t.Logf("consumer's log:\n%s", stderr.String())
		}
	})
	return r
}

func (r *consumerRun) processed() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.seqs...)
}

// TestEventConsumerExample builds deploy/examples/eventconsumer and runs it
// against the real hub as the events user while changes are made: it is
// killed (SIGKILL) mid-stream and started again, and must have processed
// every event in the stream at least once, in stream order in each run, and
// resumed where it left off rather than from the start.
func TestEventConsumerExample(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "eventconsumer")
	if out, err := exec.Command("go", "build", "-o", exe, "../../deploy/examples/eventconsumer").CombinedOutput(); err != nil {
		t.Fatalf("building the example: %v\n%s", err, out)
	}
	p := startTwinhub(t, "")
	url := p.natsURL(t, embedded.EventsNATSUser)
	const devices, changes = 4, 240
	for i := range devices {
		id := fmt.Sprintf("ec-%d", i)
		if r := p.call(t, "PUT", "/devices/"+id, `{"deviceId":"`+id+`"}`); r.Status != 200 {
			t.Fatalf("creating %s: %d %s", id, r.Status, r.Body)
		}
	}
	change := func(i int) {
		t.Helper()
		path := fmt.Sprintf("/twins/ec-%d", i%devices)
		if r := p.call(t, "PATCH", path, fmt.Sprintf(`{"properties":{"desired":{"n":%d}}}`, i)); r.Status != 200 {
			t.Fatalf("PATCH %s: %d %s", path, r.Status, r.Body)
		}
	}

	// A backlog, which the first run is killed in the middle of.
	i := 0
	for ; i < changes/2; i++ {
		change(i)
	}
	first := startConsumer(t, exe, url, 20)
	<-first.done
	before := first.processed()
	if len(before) == 0 || before[len(before)-1] >= devices+changes/2 {
		t.Fatalf("the first run processed %v before it was killed; want it killed with events left", before)
	}
	// More changes while it is down.
	for ; i < changes; i++ {
		change(i)
	}
	second := startConsumer(t, exe, url, 0)

	// Every event in the stream, now that no more are made.
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, topology.EventStream)
	if err != nil {
		t.Fatal(err)
	}
	last := stream.CachedInfo().State.LastSeq
	if last != devices+changes {
		t.Fatalf("the stream holds %d events, want %d", last, devices+changes)
	}
	waitFor(t, 60*time.Second, "the restarted consumer reached the last event", func() bool {
		s := second.processed()
		return len(s) > 0 && s[len(s)-1] == last
	})
	after := second.processed()

	seen := map[uint64]int{}
	for run, seqs := range [][]uint64{before, after} {
		for k, s := range seqs {
			seen[s]++
			if k > 0 && s <= seqs[k-1] {
				t.Errorf("run %d processed %d after %d", run+1, s, seqs[k-1])
			}
		}
	}
	for s := uint64(1); s <= last; s++ {
		if seen[s] == 0 {
			t.Errorf("event %d was never processed", s)
		}
	}
	// It resumed after what it had acknowledged: the event it was killed
	// processing comes again at most once, nothing earlier does.
	if resumed, killedAt := after[0], before[len(before)-1]; resumed != killedAt && resumed != killedAt+1 {
		t.Errorf("after processing up to %d the restarted consumer began at %d", killedAt, resumed)
	}
	t.Logf("%d events; the first run processed %d, the second %d from %d", last, len(before), len(after), after[0])
}
