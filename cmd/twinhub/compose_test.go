package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/nats-io/nats-server/v2/server"
	"sigs.k8s.io/yaml"
)

// helpFlags returns the flags `twinhub run --help` lists, without dashes.
func helpFlags(t *testing.T) map[string]bool {
	t.Helper()
	out, err := exec.Command(binary, "run", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("twinhub run --help: %v\n%s", err, out)
	}
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([a-z0-9-]+)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if !flags["nats-url"] || !flags["replicas"] {
		t.Fatalf("twinhub run --help lists no --nats-url or --replicas: is the pattern stale?\n%s", out)
	}
	return flags
}

// checkRunArgs fails the test for each --flag in args that `twinhub run`
// does not have, and for each TWINHUB_* variable that names no flag.
func checkRunArgs(t *testing.T, where string, flags map[string]bool, args []string, env []string) {
	t.Helper()
	for _, a := range args {
		if !strings.HasPrefix(a, "--") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !flags[name] {
			t.Errorf("%s passes %s, which twinhub run does not have", where, a)
		}
	}
	for _, k := range env {
		if !strings.HasPrefix(k, "TWINHUB_") {
			continue
		}
		name := strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(k, "TWINHUB_")), "_", "-")
		if !flags[name] {
			t.Errorf("%s sets %s, which names no twinhub run flag (--%s)", where, k, name)
		}
	}
}

// imageTag returns an image reference's tag ("" without one).
func imageTag(ref string) string {
	name := ref[strings.LastIndex(ref, "/")+1:]
	if _, digest, ok := strings.Cut(name, "@"); ok {
		return digest
	}
	_, tag, _ := strings.Cut(name, ":")
	return tag
}

// natsServerVersion is the nats-server version go.mod pins, without the v.
func natsServerVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/nats-io/nats-server/v2 v(\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("go.mod requires no nats-server")
	}
	return string(m[1])
}

func loadCompose(t *testing.T, envFiles ...string) (*types.Project, error) {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join(repoRoot, "deploy/compose"))
	if err != nil {
		t.Fatal(err)
	}
	var files []string // the env files compose reads beside compose.yaml
	for _, f := range envFiles {
		files = append(files, filepath.Join(dir, f))
	}
	if len(files) == 0 { // none at all, not even a user's deploy/compose/.env
		empty := filepath.Join(t.TempDir(), "empty.env")
		if err := os.WriteFile(empty, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		files = []string{empty}
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(dir, "compose.yaml")},
		cli.WithWorkingDirectory(dir), cli.WithEnvFiles(files...), cli.WithDotEnv)
	if err != nil {
		t.Fatal(err)
	}
	return opts.LoadProject(context.Background())
}

// layOut copies each bind mount of a service whose target is under
// prefix into dir, at the target's path below prefix: the files as the
// container sees them.
func layOut(t *testing.T, svc types.ServiceConfig, prefix, dir string) {
	t.Helper()
	for _, v := range svc.Volumes {
		if v.Type != types.VolumeTypeBind || !strings.HasPrefix(v.Target, prefix) {
			continue
		}
		b, err := os.ReadFile(v.Source)
		if err != nil {
			t.Fatalf("%s mounts %s: %v", svc.Name, v.Source, err)
		}
		dst := filepath.Join(dir, strings.TrimPrefix(v.Target, prefix))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestComposeStack loads deploy/compose/compose.yaml the way docker compose
// does (compose-go, schema validation included) with the example
// credentials, and checks what `docker compose up` needs: every file it
// mounts or builds from exists, every image is pinned, twinhub's flags and
// variables are real, the ports are the usual ones, the NATS nodes' shared
// configuration parses with nats-server's own parser into a JetStream
// cluster node, Prometheus's configuration passes promtool, and Grafana's
// provisioning finds the dashboards where the stack mounts them.
func TestComposeStack(t *testing.T) {
	if _, err := loadCompose(t); err == nil || !strings.Contains(err.Error(), "TWINHUB_NATS_PASSWORD") {
		t.Errorf("compose.yaml loads without credentials (want an error naming TWINHUB_NATS_PASSWORD): %v", err)
	}
	p, err := loadCompose(t, ".env.example")
	if err != nil {
		t.Fatalf("loading compose.yaml with .env.example: %v", err)
	}
	want := []string{"clickhouse", "grafana", "nats1", "nats2", "nats3", "prometheus", "twinhub-a", "twinhub-b"}
	if got := p.ServiceNames(); !slices.Equal(got, want) {
		t.Fatalf("services %v, want %v", got, want)
	}
	flags := helpFlags(t)
	natsVersion := natsServerVersion(t)
	for _, name := range want {
		svc := p.Services[name]
		if tag := imageTag(svc.Image); tag == "" || tag == "latest" {
			t.Errorf("%s: image %q is not pinned to a tag", name, svc.Image)
		}
		if strings.HasPrefix(name, "nats") && svc.Image != "nats:"+natsVersion {
			t.Errorf("%s: image %s, want nats:%s (the nats-server go.mod pins and the tests run)", name, svc.Image, natsVersion)
		}
		if svc.Build != nil {
			df := filepath.Join(svc.Build.Context, svc.Build.Dockerfile)
			if _, err := os.Stat(df); err != nil {
				t.Errorf("%s builds from %s: %v", name, df, err)
			}
		}
		for _, v := range svc.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s mounts %s, which does not exist (deploy/prometheus and deploy/grafana come with the monitoring files): %v", name, v.Source, err)
			}
			if !v.ReadOnly {
				t.Errorf("%s mounts %s writable; configuration is mounted read-only", name, v.Source)
			}
		}
	}

	published := map[string][]string{}
	for name, svc := range p.Services {
		for _, port := range svc.Ports {
			published[name] = append(published[name], port.HostIP+":"+port.Published)
		}
	}
	for name, ports := range map[string][]string{
		"twinhub-a":  {":8080", ":1883", ":8883", ":8443"},
		"twinhub-b":  {":8081", ":1884", ":8884", ":8444"},
		"grafana":    {":3000"},
		"prometheus": {"127.0.0.1:9090"},
		"nats1":      {"127.0.0.1:4222"},
	} {
		if !slices.Equal(published[name], ports) {
			t.Errorf("%s publishes %v, want %v", name, published[name], ports)
		}
	}

	for _, name := range []string{"twinhub-a", "twinhub-b"} {
		svc := p.Services[name]
		var env []string
		for k := range svc.Environment {
			env = append(env, k)
		}
		checkRunArgs(t, name, flags, svc.Command, env)
		cmd := strings.Join(svc.Command, " ")
		if !strings.HasPrefix(cmd, "run ") || !strings.Contains(cmd, "--replicas 3") ||
			!strings.Contains(cmd, "--nats-url nats://nats1:4222,nats://nats2:4222,nats://nats3:4222") {
			t.Errorf("%s runs %q, want run --replicas 3 on the three NATS nodes", name, cmd)
		}
		if ch := svc.Environment["TWINHUB_CLICKHOUSE_URL"]; ch == nil || !strings.HasPrefix(*ch, "clickhouse://twinhub:change-me-clickhouse@clickhouse:9000/") {
			t.Errorf("%s: TWINHUB_CLICKHOUSE_URL %v does not name the clickhouse service with the .env password", name, ch)
		}
		if pw := svc.Environment["TWINHUB_NATS_PASSWORD"]; pw == nil || *pw != "change-me-nats" {
			t.Errorf("%s: TWINHUB_NATS_PASSWORD is not the .env value", name)
		}
	}

	t.Run("nats.conf", func(t *testing.T) {
		for _, name := range []string{"nats1", "nats2", "nats3"} {
			svc := p.Services[name]
			dir := t.TempDir()
			layOut(t, svc, "/etc/nats/", dir)
			for k, v := range svc.Environment {
				t.Setenv(k, *v)
			}
			if len(svc.Command) != 2 || svc.Command[0] != "--config" {
				t.Fatalf("%s: command %v, want --config FILE", name, svc.Command)
			}
			opts, err := server.ProcessConfigFile(filepath.Join(dir, strings.TrimPrefix(svc.Command[1], "/etc/nats/")))
			if err != nil {
				t.Fatalf("%s: nats-server does not accept its configuration: %v", name, err)
			}
			if opts.ServerName != name || !opts.JetStream || opts.StoreDir != "/data" || opts.Cluster.Port != 6222 || len(opts.Routes) != 3 {
				t.Errorf("%s: server %q, JetStream %v in %q, cluster port %d, %d routes", name, opts.ServerName, opts.JetStream, opts.StoreDir, opts.Cluster.Port, len(opts.Routes))
			}
			for _, r := range opts.Routes {
				if _, ok := p.Services[r.Hostname()]; !ok {
					t.Errorf("%s: route %s names no service", name, r)
				}
			}
			users := map[string]string{}
			for _, u := range opts.Users {
				users[u.Username] = u.Password
			}
			if users["twinhub"] != "change-me-nats" || users["events"] != "change-me-events" {
				t.Errorf("%s: users %v, want twinhub and events with the .env passwords", name, slices.Sorted(func(yield func(string) bool) {
					for u := range users {
						if !yield(u) {
							return
						}
					}
				}))
			}
		}
	})

	t.Run("prometheus", func(t *testing.T) {
		svc := p.Services["prometheus"]
		dir := t.TempDir()
		for _, v := range svc.Volumes {
			if v.Type == types.VolumeTypeBind {
				if _, err := os.Stat(v.Source); err != nil {
					t.Skipf("%s is not in the repository yet (the monitoring files bring it)", v.Source)
				}
			}
		}
		layOut(t, svc, "/etc/prometheus/", dir)
		b, err := os.ReadFile(filepath.Join(dir, "prometheus.yml"))
		if err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			ScrapeConfigs []struct {
				StaticConfigs []struct {
					Targets []string `json:"targets"`
				} `json:"static_configs"`
			} `json:"scrape_configs"`
		}
		if err := yaml.Unmarshal(b, &cfg); err != nil {
			t.Fatal(err)
		}
		var targets []string
		for _, sc := range cfg.ScrapeConfigs {
			for _, st := range sc.StaticConfigs {
				targets = append(targets, st.Targets...)
			}
		}
		if slices.Sort(targets); !slices.Equal(targets, []string{"twinhub-a:8080", "twinhub-b:8080"}) {
			t.Errorf("Prometheus scrapes %v, want both twinhub instances", targets)
		}
		promtool, err := exec.LookPath("promtool")
		if err != nil {
			t.Skip("promtool is not installed (Debian package prometheus)")
		}
		if out, err := exec.Command(promtool, "check", "config", filepath.Join(dir, "prometheus.yml")).CombinedOutput(); err != nil {
			t.Fatalf("promtool check config (with the rules as mounted): %v\n%s", err, out)
		}
	})

	t.Run("grafana", func(t *testing.T) {
		svc := p.Services["grafana"]
		mounts := map[string]string{} // container path → repository path
		for _, v := range svc.Volumes {
			if v.Type == types.VolumeTypeBind {
				mounts[v.Target] = v.Source
			}
		}
		prov, dash := mounts["/etc/grafana/provisioning"], mounts["/etc/grafana/dashboards"]
		if prov == "" || dash == "" {
			t.Fatalf("grafana mounts %v, want /etc/grafana/provisioning and /etc/grafana/dashboards", mounts)
		}
		if _, err := os.Stat(filepath.Join(dash, "twinhub.json")); err != nil {
			t.Skipf("the dashboard is not in the repository yet (the monitoring files bring it): %v", err)
		}
		var paths, urls []string
		filepath.WalkDir(prov, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !(strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			var doc struct {
				Providers []struct {
					Options struct {
						Path string `json:"path"`
					} `json:"options"`
				} `json:"providers"`
				Datasources []struct {
					URL string `json:"url"`
				} `json:"datasources"`
			}
			if err := yaml.Unmarshal(b, &doc); err != nil {
				t.Errorf("%s: %v", path, err)
			}
			for _, pr := range doc.Providers {
				paths = append(paths, pr.Options.Path)
			}
			for _, ds := range doc.Datasources {
				urls = append(urls, ds.URL)
			}
			return nil
		})
		if len(paths) == 0 || len(urls) == 0 {
			t.Fatalf("provisioning under %s has dashboard providers %v and data sources %v; want both", prov, paths, urls)
		}
		for _, path := range paths {
			if path != "/etc/grafana/dashboards" && !strings.HasPrefix(path, "/etc/grafana/dashboards/") {
				t.Errorf("a dashboard provider reads %s; the stack mounts the dashboards at /etc/grafana/dashboards", path)
			}
		}
		for _, u := range urls {
			if !strings.Contains(u, "//prometheus:9090") {
				t.Errorf("a data source points at %s; in the stack Prometheus is http://prometheus:9090", u)
			}
		}
	})
}
