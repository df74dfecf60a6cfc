package clickhouse

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	chdeploy "github.com/twinhub/twinhub/deploy/clickhouse"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// The crash tests run the sink in a child process (this test binary again)
// and kill it with SIGKILL, either at a named point of a batch or at a
// random moment.
const (
	childEnv      = "TWINHUB_SINK_TEST_CHILD"
	childNATS     = "TWINHUB_SINK_TEST_NATS"
	childCH       = "TWINHUB_SINK_TEST_CLICKHOUSE"
	childCrashAt  = "TWINHUB_SINK_TEST_CRASH_AT"  // a hook point, e.g. "inserted:twin_events"
	childCrashHit = "TWINHUB_SINK_TEST_CRASH_HIT" // crash on this hit of the point (default 1)
)

// runChild is the child process: a sink that kills itself at the crash point.
func runChild() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	nc, err := nats.Connect(os.Getenv(childNATS))
	if err != nil {
		log.Error("child: connecting to NATS", "err", err)
		return 3
	}
	js, _ := jetstream.New(nc)
	opts, err := chdeploy.ParseURL(os.Getenv(childCH))
	if err != nil {
		log.Error("child", "err", err)
		return 3
	}
	s, err := New(Config{BatchEvents: 300, FetchSize: 100, FlushInterval: 50 * time.Millisecond, RetryMin: 20 * time.Millisecond,
		RetryMax: 200 * time.Millisecond, Logger: log}, opts, js, prometheus.NewRegistry())
	if err != nil {
		log.Error("child", "err", err)
		return 3
	}
	at := os.Getenv(childCrashAt)
	hit, _ := strconv.Atoi(os.Getenv(childCrashHit))
	var hits atomic.Int32
	s.hook = func(point string) {
		if point == at {
			if n := hits.Add(1); int(n) >= max(hit, 1) {
				fmt.Fprintf(os.Stderr, "child: crashing at %s (hit %d), committed %d\n", point, n, s.Committed())
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {}
			}
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	s.Run(ctx)
	return 0
}

// child is a running sink process.
type child struct {
	cmd    *exec.Cmd
	out    *bytes.Buffer
	exited chan struct{}
}

func startChild(t *testing.T, e *env, crashAt string, hit int) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", childNATS+"="+strings.Replace(e.ns.ClientURL(), "nats://", "nats://"+testNATSUser.Name+":"+testNATSUser.Password+"@", 1), childCH+"="+e.chURL,
		childCrashAt+"="+crashAt, childCrashHit+"="+strconv.Itoa(hit))
	c := &child{cmd: cmd, out: &bytes.Buffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = c.out, c.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Reaps the child.
	go func() {
		cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-c.exited
		if t.Failed() {
			t.Logf("sink child output:\n%s", c.out)
		}
	})
	return c
}

// TestExactlyOnceAcrossCrashes kills the sink with SIGKILL at every point
// of a batch (after a fetch, with the insert's data appended but not sent,
// after the events insert but before the leaves insert, after both inserts
// but before the acknowledgement) and at random moments, while events keep
// arriving, with a short AckWait so that redeliveries come back during the
// test. At the end ClickHouse holds every event of the stream exactly once.
func TestExactlyOnceAcrossCrashes(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	// Redeliveries after 2 s instead of a minute, so they happen here.
	cons, err := e.stream.Consumer(ctx, topology.HistoryConsumer)
	if err != nil {
		t.Fatal(err)
	}
	cfg := cons.CachedInfo().Config
	cfg.AckWait = 2 * time.Second
	if _, err := e.js.UpdateConsumer(ctx, topology.EventStream, cfg); err != nil {
		t.Fatal(err)
	}
	g := newGen(50, 3)
	e.publish(g, 2000)
	stop := make(chan struct{})
	published := e.publishAt(g, 3000, stop)

	points := []string{"fetched", "send:twin_events", "inserted:twin_events", "send:twin_leaves", "inserted:twin_leaves", "ack"}
	crashes, gaps := 0, 0
	for round, point := range append(points, points...) {
		c := startChild(t, e, point, 1+round%3)
		select {
		case <-c.exited:
			crashes++
		case <-time.After(30 * time.Second):
			t.Fatalf("the sink did not reach %s within 30s\n%s", point, c.out)
		}
		if !bytes.Contains(c.out.Bytes(), []byte("child: crashing at "+point)) {
			t.Fatalf("the sink exited without crashing at %s:\n%s", point, c.out)
		}
		if bytes.Contains(c.out.Bytes(), []byte("to close a gap")) {
			gaps++
		}
		t.Logf("round %d: %s", round, lastLine(c.out.String()))
	}
	// Random moments.
	for i := range 6 {
		c := startChild(t, e, "", 0)
		select {
		case <-c.exited:
			t.Fatalf("the sink exited by itself:\n%s", c.out)
		case <-time.After(time.Duration(300+150*i) * time.Millisecond):
		}
		c.cmd.Process.Signal(syscall.SIGKILL)
		<-c.exited
		crashes++
	}
	close(stop)
	n := <-published
	t.Logf("%d crashes while %d events were published; %d sinks read skipped events from the stream", crashes, n+2000, gaps)
	if gaps == 0 {
		t.Error("no sink met a gap: the crash after a fetch must leave events pending that a new sink skips over")
	}

	// A last sink runs until it has everything.
	s := e.sink(Config{}, nil)
	run(t, s)
	e.waitCommitted(s, 60*time.Second)
	e.verifyExactlyOnce()
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
