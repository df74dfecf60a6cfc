package topology

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/deploy/natstest"
)

// TestCheckExisting: a lower replica count than a stream has is refused with
// an error that names the stream, both counts and the remedies, unless
// decreases are allowed; equal or higher counts and new streams pass.
func TestCheckExisting(t *testing.T) {
	r := func(n int) jetstream.StreamConfig { return jetstream.StreamConfig{Replicas: n} }
	cases := []struct {
		name     string
		existing map[string]jetstream.StreamConfig
		cfg      Config
		want     error
		mentions []string
	}{
		{name: "nothing yet", cfg: Config{Replicas: 3}},
		{name: "same", existing: map[string]jetstream.StreamConfig{EventStream: r(3)}, cfg: Config{Replicas: 3}},
		{name: "raise", existing: map[string]jetstream.StreamConfig{EventStream: r(1), "KV_twinhub_twins": r(1)}, cfg: Config{Replicas: 3}},
		{name: "zero means one", existing: map[string]jetstream.StreamConfig{EventStream: r(0)}, cfg: Config{Replicas: 1}},
		{
			name:     "lower",
			existing: map[string]jetstream.StreamConfig{EventStream: r(3), "KV_twinhub_hub": r(3)},
			cfg:      Config{Replicas: 1},
			want:     ErrReplicaDecrease,
			mentions: []string{"TWINHUB_EVENTS has 3", "KV_twinhub_hub has 3", "--replicas 1", "--replicas 3", "--allow-replica-decrease"},
		},
		{name: "lower allowed", existing: map[string]jetstream.StreamConfig{EventStream: r(5)}, cfg: Config{Replicas: 3, AllowReplicaDecrease: true}},
		{
			name:     "partitions",
			existing: map[string]jetstream.StreamConfig{CommandStream: {Replicas: 1, Metadata: map[string]string{partitionsMetadataKey: "8"}}},
			cfg:      Config{Replicas: 1},
			want:     ErrPartitionMismatch,
			mentions: []string{"--partitions 8"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := checkExisting(c.existing, c.cfg.WithDefaults())
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("checkExisting = %v, want %v", err, c.want)
			}
			for _, m := range c.mentions {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
		})
	}
}

// TestBucketsNeverAllowDirect: every bucket twinhub provisions has direct
// gets off, at every replica count (a direct get may be answered by a
// follower that missed the latest write).
func TestBucketsNeverAllowDirect(t *testing.T) {
	for _, replicas := range []int{1, 3, 5} {
		n := 0
		for _, sc := range streamConfigs(Config{Replicas: replicas}.WithDefaults()) {
			if !strings.HasPrefix(sc.Name, "KV_") {
				continue
			}
			n++
			if sc.AllowDirect || sc.MirrorDirect {
				t.Errorf("R%d: bucket stream %s allows direct gets", replicas, sc.Name)
			}
			if sc.Replicas != replicas {
				t.Errorf("bucket stream %s has %d replicas, want %d", sc.Name, sc.Replicas, replicas)
			}
		}
		if n != 2 {
			t.Errorf("found %d bucket streams, want 2 (twins and hub)", n)
		}
	}
}

// TestEnsureTurnsDirectGetOff: a bucket made the way nats.go makes it
// (direct gets on), as earlier versions of Ensure did, has direct gets off
// after Ensure, stays so at the next start, and still works as a KV bucket.
func TestEnsureTurnsDirectGetOff(t *testing.T) {
	c := natstest.StartStandalone(t)
	js, err := jetstream.New(c.Connect())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: TwinBucket, History: 1, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	for start := range 2 {
		if err := Ensure(ctx, js, Config{Partitions: 2}); err != nil {
			t.Fatalf("start %d: %v", start, err)
		}
		for _, name := range []string{"KV_" + TwinBucket, "KV_" + HubBucket} {
			s, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if s.CachedInfo().Config.AllowDirect {
				t.Errorf("start %d: %s allows direct gets", start, name)
			}
		}
	}
	kv, err := js.KeyValue(ctx, HubBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, PoliciesKey, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, PoliciesKey, []byte("y")); !errors.Is(err, jetstream.ErrKeyExists) {
		t.Errorf("second Create of a key: %v, want ErrKeyExists", err)
	}
	if e, err := kv.Get(ctx, PoliciesKey); err != nil || string(e.Value()) != "x" {
		t.Errorf("Get = %v, %v", e, err)
	}
}

// replicasOf returns the replica count of each stream and consumer: the
// configured count, or the servers it is placed on (leader and followers)
// while they are fewer.
func replicasOf(t *testing.T, ctx context.Context, js jetstream.JetStream) map[string]int {
	t.Helper()
	got := map[string]int{}
	for _, name := range Streams() {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := info.Config.Replicas
		if info.Cluster != nil && 1+len(info.Cluster.Replicas) < n {
			n = 1 + len(info.Cluster.Replicas) // not placed on every server yet
		}
		got[name] = n
		for cons := range s.ListConsumers(ctx).Info() {
			peers := 1
			if cons.Cluster != nil {
				peers += len(cons.Cluster.Replicas)
			}
			got[name+"/"+cons.Name] = peers
		}
	}
	return got
}

func checkReplicas(t *testing.T, when string, got map[string]int, want int) {
	t.Helper()
	if len(got) < len(Streams())+2 {
		t.Errorf("%s: only %d streams and consumers found: %v", when, len(got), got)
	}
	for name, n := range got {
		if n != want {
			t.Errorf("%s: %s has %d replicas, want %d", when, name, n, want)
		}
	}
}

// TestEnsureReplicasOnCluster runs Ensure against a real 3-node cluster:
// R1 streams are raised to R3 with their consumers, a second start keeps R3,
// a lowering is refused and changes nothing, and an allowed lowering applies.
func TestEnsureReplicasOnCluster(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	js, err := jetstream.New(c.Connect())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := Ensure(ctx, js, Config{Partitions: 2, Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	checkReplicas(t, "R1", replicasOf(t, ctx, js), 1)
	for start := range 2 {
		if err := Ensure(ctx, js, Config{Partitions: 2, Replicas: 3}); err != nil {
			t.Fatalf("start %d with R3: %v", start, err)
		}
		// Consumers follow their stream's scale-up asynchronously.
		deadline := time.Now().Add(30 * time.Second)
		for {
			got := replicasOf(t, ctx, js)
			done := true
			for _, n := range got {
				done = done && n == 3
			}
			if done || time.Now().After(deadline) {
				checkReplicas(t, "after R3", got, 3)
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	err = Ensure(ctx, js, Config{Partitions: 2, Replicas: 1})
	if !errors.Is(err, ErrReplicaDecrease) {
		t.Fatalf("lowering to R1: %v, want ErrReplicaDecrease", err)
	}
	for _, m := range []string{"TWINHUB_EVENTS has 3", "--replicas 1", "--allow-replica-decrease"} {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not mention %q", err, m)
		}
	}
	checkReplicas(t, "after the refused lowering", replicasOf(t, ctx, js), 3)
	if err := Ensure(ctx, js, Config{Partitions: 2, Replicas: 1, AllowReplicaDecrease: true}); err != nil {
		t.Fatal(err)
	}
	for _, name := range Streams() {
		s, _ := js.Stream(ctx, name)
		if n := s.CachedInfo().Config.Replicas; n != 1 {
			t.Errorf("after the allowed lowering %s has %d replicas", name, n)
		}
	}
}

// TestEnsureReplicasStandalone: R3 on a server that is not clustered fails
// at once with ErrReplicasUnsupported and names the remedy.
func TestEnsureReplicasStandalone(t *testing.T) {
	c := natstest.StartStandalone(t)
	js, err := jetstream.New(c.Connect())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = Ensure(ctx, js, Config{Partitions: 2, Replicas: 3})
	if !errors.Is(err, ErrReplicasUnsupported) || ctx.Err() != nil {
		t.Fatalf("R3 on a standalone server: %v, want ErrReplicasUnsupported without waiting", err)
	}
	for _, m := range []string{"--replicas 1", "--nats-url"} {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not mention %q", err, m)
		}
	}
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestEnsureWaitsForCluster: Ensure started before any server of the
// cluster runs says that it waits, and succeeds once the servers start.
func TestEnsureWaitsForCluster(t *testing.T) {
	c := natstest.NewCluster(t, 3)
	nc, err := nats.Connect(c.URLs(), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	done := make(chan error, 1)
	// Ends when Ensure returns; bounded by ctx.
	go func() {
		done <- Ensure(ctx, js, Config{Partitions: 2, Replicas: 3, Logger: slog.New(slog.NewTextHandler(logs, nil))})
	}()
	for !strings.Contains(logs.String(), "waiting for NATS JetStream") {
		select {
		case err := <-done:
			t.Fatalf("Ensure returned %v before any server ran", err)
		case <-time.After(20 * time.Millisecond):
		}
		if ctx.Err() != nil {
			t.Fatal("no waiting message")
		}
	}
	c.StartAll()
	if err := <-done; err != nil {
		t.Fatalf("Ensure after the cluster started: %v\n%s", err, logs.String())
	}
	checkReplicas(t, "R3", replicasOf(t, ctx, js), 3)
}

// TestEnsureRefusedIsNotWaitedFor: a user that may not use the JetStream
// API gets timeouts, as a cluster that is still electing does; Ensure tells
// them apart by the connection's permission error and fails soon with it.
func TestEnsureRefusedIsNotWaitedFor(t *testing.T) {
	c := natstest.StartStandalone(t, func(_ int, o *server.Options) {
		o.Users = []*server.User{{Username: "hub", Password: "pw", Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Allow: []string{"twinhub.>"}}}}}
	})
	nc, err := nats.Connect(c.URL(0), nats.UserInfo("hub", "pw"), nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	err = Ensure(ctx, js, Config{Partitions: 2})
	if !errors.Is(err, nats.ErrPermissionViolation) || errors.Is(err, ErrNotReady) {
		t.Fatalf("Ensure without JetStream API permissions: %v, want the permissions violation", err)
	}
	if waited := time.Since(start); waited > 3*attemptTimeout {
		t.Errorf("the refusal took %s to report", waited)
	}
}

// TestEnsurePinsHistoryConsumer: a history consumer as earlier versions
// made it (no priority group), with events already acknowledged, becomes a
// pinned priority group at the next Ensure and keeps its place: the next
// pull through the group gets the first unacknowledged event, carrying a
// pin, and a pull without the group is refused.
func TestEnsurePinsHistoryConsumer(t *testing.T) {
	c := natstest.StartStandalone(t)
	js, err := jetstream.New(c.Connect())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := Config{Partitions: 1}.WithDefaults()
	if _, err := js.CreateStream(ctx, streamConfigs(cfg)[1]); err != nil {
		t.Fatal(err)
	}
	var old jetstream.ConsumerConfig
	for _, c := range consumerConfigs(cfg) {
		if c.Durable == HistoryConsumer {
			old = c.ConsumerConfig
		}
	}
	old.PriorityPolicy, old.PriorityGroups, old.PinnedTTL = jetstream.PriorityPolicyNone, nil, 0
	cons, err := js.CreateConsumer(ctx, EventStream, old)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, EventSubject("dev"), []byte{byte('0' + i)}); err != nil {
			t.Fatal(err)
		}
	}
	mb, err := cons.Fetch(2, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var last jetstream.Msg
	for m := range mb.Messages() {
		last = m
	}
	if last == nil {
		t.Fatal("the old consumer delivered nothing")
	}
	if err := last.DoubleAck(ctx); err != nil { // AckAll: events 1 and 2
		t.Fatal(err)
	}

	if err := Ensure(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	cons, err = js.Consumer(ctx, EventStream, HistoryConsumer)
	if err != nil {
		t.Fatal(err)
	}
	got := cons.CachedInfo()
	if got.Config.PriorityPolicy != jetstream.PriorityPolicyPinned || len(got.Config.PriorityGroups) != 1 ||
		got.Config.PriorityGroups[0] != HistoryPriorityGroup || got.Config.PinnedTTL != HistoryPinnedTTL {
		t.Fatalf("history consumer after Ensure: policy %v, groups %v, pinned TTL %s", got.Config.PriorityPolicy,
			got.Config.PriorityGroups, got.Config.PinnedTTL)
	}
	if got.AckFloor.Stream != 2 {
		t.Errorf("ack floor after Ensure: %d, want 2 (Ensure must not reset the consumer)", got.AckFloor.Stream)
	}
	if mb, err := cons.Fetch(1, jetstream.FetchMaxWait(time.Second)); err == nil {
		for range mb.Messages() {
			t.Error("a pull without the priority group got an event")
		}
	}
	mb, err = cons.Fetch(5, jetstream.FetchMaxWait(2*time.Second), jetstream.FetchPriorityGroup(HistoryPriorityGroup))
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for m := range mb.Messages() {
		md, _ := m.Metadata()
		seqs = append(seqs, md.Sequence.Stream)
		if m.Headers().Get("Nats-Pin-Id") == "" {
			t.Errorf("event %d came without a pin", md.Sequence.Stream)
		}
	}
	if len(seqs) != 1 || seqs[0] != 3 {
		t.Errorf("first pull through the group after Ensure got events %v, want [3]", seqs)
	}
}

// TestEnsureMigratesPartitionConsumersToPinned: partition consumers created
// without a priority policy (as earlier versions made them, with a
// command delivered and not yet acknowledged) become pinned-client
// consumers of PartitionGroup with the configured PinnedTTL and AckWait at
// the next start, keeping their state, and a pull with the group then gets
// the held command with a pin.
func TestEnsureMigratesPartitionConsumersToPinned(t *testing.T) {
	c := natstest.StartStandalone(t)
	js, err := jetstream.New(c.Connect())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := Config{Partitions: 2}
	if err := Ensure(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	// The consumers as they were before ownership: no priority policy.
	for p := range 2 {
		var old consumer
		for _, c := range consumerConfigs(cfg.WithDefaults()) {
			if c.Durable == ConsumerName(p) {
				old = c
			}
		}
		old.PriorityPolicy, old.PriorityGroups, old.PinnedTTL, old.AckWait = jetstream.PriorityPolicyNone, nil, 0, 10*time.Second
		if err := js.DeleteConsumer(ctx, old.stream, old.Durable); err != nil {
			t.Fatal(err)
		}
		if _, err := js.CreateConsumer(ctx, old.stream, old.ConsumerConfig); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := js.Publish(ctx, CommandSubject("dev-1", 2), []byte("cmd")); err != nil {
		t.Fatal(err)
	}
	part := ConsumerName(Partition("dev-1", 2))
	cons, err := js.Consumer(ctx, CommandStream, part)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second)); err != nil { // held, not acknowledged
		t.Fatal(err)
	}

	if err := Ensure(ctx, js, Config{Partitions: 2, PinnedTTL: 6 * time.Second, AckWait: time.Second}); err != nil {
		t.Fatalf("start after the upgrade: %v", err)
	}
	for p := range 2 {
		cons, err := js.Consumer(ctx, CommandStream, ConsumerName(p))
		if err != nil {
			t.Fatal(err)
		}
		got := cons.CachedInfo().Config
		if got.PriorityPolicy != jetstream.PriorityPolicyPinned || len(got.PriorityGroups) != 1 ||
			got.PriorityGroups[0] != PartitionGroup || got.PinnedTTL != 6*time.Second || got.AckWait != time.Second {
			t.Errorf("%s after Ensure: policy %v, groups %v, pinned TTL %s, ack wait %s; want pinned, [%s], 6s, 1s",
				ConsumerName(p), got.PriorityPolicy, got.PriorityGroups, got.PinnedTTL, got.AckWait, PartitionGroup)
		}
	}
	cons, err = js.Consumer(ctx, CommandStream, part)
	if err != nil {
		t.Fatal(err)
	}
	if info := cons.CachedInfo(); info.NumAckPending != 1 {
		t.Errorf("the held command is no longer pending after the update: %+v", info)
	}
	// The held command comes back after the ack wait, pinned to this pull.
	msg, err := cons.Next(jetstream.FetchMaxWait(5*time.Second), jetstream.FetchPriorityGroup(PartitionGroup))
	if err != nil {
		t.Fatalf("pull with the priority group: %v", err)
	}
	if string(msg.Data()) != "cmd" || msg.Headers().Get("Nats-Pin-Id") == "" {
		t.Errorf("got %q with pin %q, want the held command with a pin", msg.Data(), msg.Headers().Get("Nats-Pin-Id"))
	}
}
