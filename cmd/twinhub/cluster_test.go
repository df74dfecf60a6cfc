package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/bridge/sas"
	"github.com/twinhub/twinhub/deploy/natstest"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// runTwinhubFails runs `twinhub run` with the flags and expects it to exit
// with an error within a minute; it returns the output.
func runTwinhubFails(t *testing.T, dataDir string, extra ...string) string {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := append([]string{"run", "--data-dir", dataDir, "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0",
		"--nats-addr", "127.0.0.1:0", "--mqtts-addr", "", "--https-addr", "", "--partitions", "4"}, extra...)
	cmd := exec.CommandContext(ctx, binary, args...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("twinhub %v did not exit within a minute:\n%s", extra, out)
	}
	if err == nil {
		t.Fatalf("twinhub %v exited without an error:\n%s", extra, out)
	}
	return string(out)
}

// checkStreams asserts that every stream and bucket twinhub provisions is
// configured with and placed on the given number of replicas, and that no
// bucket allows direct gets (stale reads from followers). Placement of a
// raised stream completes in the background, so it is polled.
func checkStreams(t *testing.T, js jetstream.JetStream, replicas int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, name := range topology.Streams() {
		var info *jetstream.StreamInfo
		waitFor(t, 30*time.Second, name+" placed on its replicas", func() bool {
			s, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatalf("stream %s: %v", name, err)
			}
			info = s.CachedInfo()
			return info.Cluster == nil || 1+len(info.Cluster.Replicas) >= info.Config.Replicas
		})
		if info.Config.Replicas != replicas {
			t.Errorf("stream %s has %d replicas, want %d", name, info.Config.Replicas, replicas)
		}
		if strings.HasPrefix(name, "KV_") && info.Config.AllowDirect {
			t.Errorf("bucket stream %s allows direct gets", name)
		}
	}
}

// TestClusterReplicas runs twinhub with --replicas 3 on a real 3-node NATS
// cluster: every stream and bucket gets 3 replicas and no bucket allows
// direct gets; the hub works; a restart keeps R3; a start with the default
// --replicas 1 is refused with an error naming the streams, both counts
// and the remedies, and changes nothing.
func TestClusterReplicas(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	js, err := jetstream.New(c.Connect())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := startTwinhub(t, dir, "--replicas", "3", "--nats-url", c.URLs())
	checkStreams(t, js, 3)
	if r := p.call(t, "PUT", "/devices/r3", ""); r.Status != 200 {
		t.Fatalf("create device: %d %s", r.Status, r.Body)
	}
	if r := p.call(t, "PATCH", "/twins/r3", `{"tags":{"zone":"a"}}`); r.Status != 200 {
		t.Fatalf("patch twin: %d %s", r.Status, r.Body)
	}
	if tw := p.call(t, "GET", "/twins/r3", "").json(t); get(tw, "tags.zone") != "a" {
		t.Errorf("twin after the patch: %v", tw)
	}
	p.stop()

	p = startTwinhub(t, dir, "--replicas", "3", "--nats-url", c.URLs())
	checkStreams(t, js, 3)
	if tw := p.call(t, "GET", "/twins/r3", "").json(t); get(tw, "tags.zone") != "a" {
		t.Errorf("twin after the restart: %v", tw)
	}
	p.stop()

	out := runTwinhubFails(t, dir, "--nats-url", c.URLs())
	for _, want := range []string{"TWINHUB_EVENTS has 3", "KV_twinhub_hub has 3", "--replicas 1", "--replicas 3", "--allow-replica-decrease"} {
		if !strings.Contains(out, want) {
			t.Errorf("the refusal to lower the replicas does not mention %q:\n%s", want, out)
		}
	}
	checkStreams(t, js, 3)
}

// TestClusterReplicasStandalone: --replicas 3 on a single server (the
// embedded one) fails at once with an error that names the remedy.
func TestClusterReplicasStandalone(t *testing.T) {
	start := time.Now()
	out := runTwinhubFails(t, "", "--replicas", "3")
	for _, want := range []string{"not clustered", "--replicas 1", "--nats-url"} {
		if !strings.Contains(out, want) {
			t.Errorf("the error for R3 on one server does not mention %q:\n%s", want, out)
		}
	}
	t.Logf("failed after %s", time.Since(start).Round(time.Millisecond))
}

// TestClusterStartupWaits: twinhub started before the NATS cluster's
// servers says it is waiting for them, keeps waiting, and becomes ready
// with R3 streams once they start.
func TestClusterStartupWaits(t *testing.T) {
	c := natstest.NewCluster(t, 3)
	p := launchTwinhub(t, "", "--replicas", "3", "--nats-url", c.URLs())
	waitFor(t, 40*time.Second, "the log line about waiting for the cluster", func() bool {
		select {
		case <-p.exited:
			t.Fatalf("twinhub exited while the cluster was down: %v\n%s", p.exitErr, p.logs.String())
		default:
		}
		return strings.Contains(p.logs.String(), "waiting for NATS JetStream")
	})
	c.StartAll()
	p.waitReady(90 * time.Second)
	js, err := jetstream.New(c.Connect())
	if err != nil {
		t.Fatal(err)
	}
	checkStreams(t, js, 3)
	if r := p.call(t, "PUT", "/devices/late", ""); r.Status != 200 {
		t.Fatalf("create device: %d %s", r.Status, r.Body)
	}
}

// connectionString runs `twinhub connection-string` with the flags.
func connectionString(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(binary, append([]string{"connection-string"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("twinhub connection-string %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestClusterSharedPolicies: two instances on the same NATS cluster, with
// their own data directories, share the shared access policies: a token
// signed with a key from either is accepted by both, and `twinhub
// connection-string` gives the same working string from either data
// directory.
func TestClusterSharedPolicies(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	a := startTwinhub(t, "", "--replicas", "3", "--nats-url", c.URLs())
	b := startTwinhub(t, "", "--replicas", "3", "--nats-url", c.URLs())
	if a.owner == "" || a.owner != b.owner {
		t.Fatalf("instances have different owner keys: A %q, B %q", a.owner, b.owner)
	}
	if r := b.call(t, "PUT", "/devices/shared", "", "Authorization", a.ownerToken(t)); r.Status != 200 {
		t.Fatalf("B refuses A's token: %d %s", r.Status, r.Body)
	}
	if r := a.call(t, "GET", "/devices/shared", "", "Authorization", b.ownerToken(t)); r.Status != 200 {
		t.Fatalf("A refuses B's token: %d %s", r.Status, r.Body)
	}
	csA := connectionString(t, "--data-dir", a.dataDir)
	csB := connectionString(t, "--data-dir", b.dataDir)
	if csA != csB {
		t.Errorf("connection strings differ between the instances:\nA %s\nB %s", csA, csB)
	}
	for _, p := range []*proc{a, b} {
		out, err := exec.Command(binary, "device", "get", "--server", p.HTTP, "--connection-string", csA, "shared").CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"deviceId": "shared"`) {
			t.Errorf("device get through %s with A's connection string: %v\n%s", p.HTTP, err, out)
		}
	}
	wrong, err := sas.New("localhost", sas.NewKey(), sas.OwnerPolicy, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if r := b.call(t, "GET", "/devices/shared", "", "Authorization", wrong); r.Status != 401 {
		t.Errorf("B accepted a token with a foreign key: %d", r.Status)
	}
}

// TestPoliciesImported: a data directory with a policies.json from before
// the policies lived in NATS keeps its keys: the first start imports the
// file into NATS and says so, and a restart uses the shared copy.
func TestPoliciesImported(t *testing.T) {
	dir := t.TempDir()
	old, _, err := sas.OpenPolicies(filepath.Join(dir, "policies.json"))
	if err != nil {
		t.Fatal(err)
	}
	owner, _ := old.Get(sas.OwnerPolicy)
	p := startTwinhub(t, dir)
	if !strings.Contains(p.logs.String(), "imported the data directory's shared access policies into NATS") {
		t.Errorf("the first start did not log the import:\n%s", p.logs.String())
	}
	if p.owner != owner.PrimaryKey {
		t.Fatalf("the owner key changed on import")
	}
	if r := p.call(t, "GET", "/devices", ""); r.Status != 200 {
		t.Errorf("the imported owner key is refused: %d %s", r.Status, r.Body)
	}
	p.stop()
	p = startTwinhub(t, dir)
	if !strings.Contains(p.logs.String(), "using the hub's shared access policies from NATS") || p.owner != owner.PrimaryKey {
		t.Errorf("the restart did not use the shared policies with the same keys:\n%s", p.logs.String())
	}
	if info, err := os.Stat(filepath.Join(dir, "policies.json")); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("the data directory's copy: %v, %v", info, err)
	}
}

// TestClusterConfigFiles: the nats-server configuration files of README's
// "Running a cluster" load (nats-server's own parser, with the passwords
// in the environment), form one cluster on loopback, and include the
// authorization block that `twinhub nats-credentials --server-config`
// prints today.
func TestClusterConfigFiles(t *testing.T) {
	dir := filepath.Join("..", "..", "deploy", "nats", "cluster")
	out, err := exec.Command(binary, "nats-credentials", "--server-config").Output()
	if err != nil {
		t.Fatal(err)
	}
	auth, err := os.ReadFile(filepath.Join(dir, "auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, _ := strings.Cut(string(auth), "\n") // after its comment line
	if block != string(out) {
		t.Errorf("deploy/nats/cluster/auth.conf differs from `twinhub nats-credentials --server-config`; regenerate it:\n" +
			"(echo '# Generated by: twinhub nats-credentials --server-config'; twinhub nats-credentials --server-config) > deploy/nats/cluster/auth.conf")
	}
	t.Setenv("TWINHUB_NATS_PASSWORD", "pw-twinhub")
	t.Setenv("TWINHUB_EVENTS_PASSWORD", "pw-events")
	for i := range 3 {
		o, err := server.ProcessConfigFile(filepath.Join(dir, fmt.Sprintf("n%d.conf", i+1)))
		if err != nil {
			t.Fatalf("n%d.conf: %v", i+1, err)
		}
		if o.ServerName != fmt.Sprintf("n%d", i+1) || o.Host != "127.0.0.1" || o.Cluster.Host != "127.0.0.1" ||
			o.HTTPHost != "127.0.0.1" || o.Cluster.Name != "twinhub" || len(o.Routes) != 3 || !o.JetStream {
			t.Errorf("n%d.conf: server %q on %s, cluster %q on %s, monitoring on %s, %d routes, JetStream %t",
				i+1, o.ServerName, o.Host, o.Cluster.Name, o.Cluster.Host, o.HTTPHost, len(o.Routes), o.JetStream)
		}
		users := map[string]string{}
		for _, u := range o.Users {
			users[u.Username] = u.Password
		}
		if users["twinhub"] != "pw-twinhub" || users["events"] != "pw-events" || len(users) != 2 {
			t.Errorf("n%d.conf: users %v, want twinhub and events with the passwords from the environment", i+1, slices.Collect(maps.Keys(users)))
		}
	}
}
