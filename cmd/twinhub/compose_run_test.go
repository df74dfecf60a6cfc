package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
)

// TestComposeStackRuns runs the NATS cluster and both twinhub instances of
// deploy/compose/compose.yaml in podman, as compose would: one network
// where each service is reachable by its name, each service's command,
// environment and configuration files from the compose file with the
// example .env. The images are the ones the stack names, built here from
// binaries (the registry is out of reach): nats-server at go.mod's version
// on an empty base, and twinhub's Containerfile.prebuilt. ClickHouse,
// Prometheus and Grafana are left out for the same reason, and with them
// TWINHUB_CLICKHOUSE_URL; history, scraping and provisioning are tested
// elsewhere. The cluster forms, both instances get ready with --replicas 3,
// the streams have three replicas, and a change made through one instance
// is read through the other.
func TestComposeStackRuns(t *testing.T) {
	if _, err := exec.LookPath("podman"); err != nil {
		t.Skip("podman is not installed (Debian package podman)")
	}
	p, err := loadCompose(t, ".env.example")
	if err != nil {
		t.Fatal(err)
	}
	twinhubImage := buildPrebuiltImage(t, "twinhub-compose-test", "deploy/container/Containerfile.prebuilt", map[string]string{
		"twinhub": ".", "ca-certificates.crt": "/etc/ssl/certs/ca-certificates.crt"})
	natsfile := filepath.Join(t.TempDir(), "Containerfile")
	if err := os.WriteFile(natsfile, []byte("FROM scratch\nCOPY nats-server /nats-server\nENTRYPOINT [\"/nats-server\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	natsImage := buildPrebuiltImage(t, "nats-compose-test", natsfile, map[string]string{
		"nats-server": "github.com/nats-io/nats-server/v2"})
	run, reason := podmanRun(t, twinhubImage)
	if run == nil {
		t.Skip(reason)
	}

	suffix := fmt.Sprintf("-%d", os.Getpid())
	network := "twinhub-compose-test" + suffix
	if out, err := exec.Command("podman", "network", "create", network).CombinedOutput(); err != nil {
		t.Skipf("podman network create (a network with name resolution, as compose's): %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("podman", "network", "rm", "-f", network).Run() })

	start := func(name, image string, publish ...string) string {
		t.Helper()
		svc := p.Services[name]
		container := name + suffix
		args := append(append([]string{}, run[1:]...), "-d", "--name", container, "--network", network, "--network-alias", name)
		for k, v := range svc.Environment {
			if k == "TWINHUB_CLICKHOUSE_URL" || v == nil {
				continue
			}
			args = append(args, "-e", k+"="+*v)
		}
		for _, v := range svc.Volumes {
			if v.Type == types.VolumeTypeBind {
				args = append(args, "-v", v.Source+":"+v.Target+":ro")
			}
		}
		for _, port := range publish {
			args = append(args, "-p", "127.0.0.1::"+port)
		}
		args = append(append(args, image), svc.Command...)
		if out, err := exec.Command(run[0], args...).CombinedOutput(); err != nil {
			t.Fatalf("podman run %s: %v\n%s", name, err, out)
		}
		t.Cleanup(func() {
			if t.Failed() {
				logs, _ := exec.Command("podman", "logs", container).CombinedOutput()
				t.Logf("%s log:\n%s", name, logs)
			}
			exec.Command("podman", "rm", "-f", container).Run()
		})
		return container
	}
	hostPort := func(container, port string) string {
		t.Helper()
		out, err := exec.Command("podman", "port", container, port).Output()
		if err != nil {
			t.Fatalf("podman port %s %s: %v", container, port, err)
		}
		return strings.TrimSpace(string(out))
	}
	nats1 := start("nats1", natsImage, "8222")
	start("nats2", natsImage)
	start("nats3", natsImage)
	a := start("twinhub-a", twinhubImage, "8080")
	b := start("twinhub-b", twinhubImage, "8080")
	for _, c := range []string{a, b} {
		waitFor(t, 120*time.Second, c+" to be ready", func() bool {
			logs, _ := exec.Command("podman", "logs", c).CombinedOutput()
			return strings.Contains(string(logs), `msg="twinhub is ready"`)
		})
	}
	for _, c := range []string{a, b} {
		resp, err := http.Get("http://" + hostPort(c, "8080") + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("/readyz of %s: %d", c, resp.StatusCode)
		}
	}

	// Every stream of twinhub has three replicas on the three nodes.
	resp, err := http.Get("http://" + hostPort(nats1, "8222") + "/jsz?streams=true&config=true")
	if err != nil {
		t.Fatal(err)
	}
	var jsz struct {
		AccountDetails []struct {
			StreamDetail []struct {
				Name   string `json:"name"`
				Config struct {
					Replicas int `json:"num_replicas"`
				} `json:"config"`
				Cluster struct {
					Replicas []struct {
						Name string `json:"name"`
					} `json:"replicas"`
				} `json:"cluster"`
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	err = json.NewDecoder(resp.Body).Decode(&jsz)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	streams := 0
	for _, acc := range jsz.AccountDetails {
		for _, s := range acc.StreamDetail {
			streams++
			if s.Config.Replicas != 3 || len(s.Cluster.Replicas) != 2 {
				t.Errorf("stream %s: %d replicas configured, %d peers besides the leader; want 3 and 2", s.Name, s.Config.Replicas, len(s.Cluster.Replicas))
			}
		}
	}
	if streams < 4 {
		t.Errorf("nats1 reports %d streams; want twinhub's commands, events and two buckets", streams)
	}

	// A change through A is read through B (each container's twinhub signs
	// with the policies in its own volume: the same, shared through NATS).
	twinhub := func(container string, args ...string) string {
		t.Helper()
		out, err := exec.Command("podman", append([]string{"exec", container, "/twinhub"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("twinhub %s in %s: %v\n%s", strings.Join(args, " "), container, err, out)
		}
		return string(out)
	}
	twinhub(a, "device", "create", "composeDevice")
	twinhub(a, "twin", "update", "composeDevice", "--desired", `{"mode":"eco"}`)
	if twin := twinhub(b, "twin", "get", "composeDevice"); !strings.Contains(twin, `"eco"`) {
		t.Errorf("the twin read through twinhub-b lacks the change made through twinhub-a:\n%s", twin)
	}
}
