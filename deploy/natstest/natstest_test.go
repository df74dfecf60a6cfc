package natstest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestKillLeaderAndRestart: the harness finds an R3 stream's leader; after
// that node is killed (shut down in-process, SIGKILL as a process) another
// node leads, an acknowledged message written before the kill is still
// there, and the killed node rejoins from its store.
func TestKillLeaderAndRestart(t *testing.T) {
	t.Run("in-process", func(t *testing.T) { testKillLeaderAndRestart(t, StartCluster(t, 3)) })
	t.Run("process", func(t *testing.T) {
		c := NewProcessCluster(t, 3)
		c.StartAll()
		c.WaitHealthy(30 * time.Second)
		testKillLeaderAndRestart(t, c)
	})
}

func testKillLeaderAndRestart(t *testing.T, c *Cluster) {
	js, err := jetstream.New(c.Connect())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "s.1", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	leader := c.WaitStreamLeader("S", 10*time.Second)
	start := time.Now()
	c.Kill(leader)
	if c.Running(leader) {
		t.Fatalf("node %d still listed as running after Kill", leader)
	}
	next := c.WaitStreamLeader("S", 30*time.Second)
	if next == leader {
		t.Fatalf("the killed node %d still leads", leader)
	}
	t.Logf("node %d led; node %d leads %s after the kill", leader, next, time.Since(start).Round(time.Millisecond))
	var got jetstream.RawStreamMsg
	for {
		s, err := js.Stream(ctx, "S")
		if err == nil {
			m, err := s.GetMsg(ctx, 1)
			if err == nil {
				got = *m
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("reading the message after the leader's loss: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if string(got.Data) != "kept" {
		t.Errorf("message after failover: %q", got.Data)
	}
	c.Start(leader)
	c.WaitHealthy(30 * time.Second)
}
