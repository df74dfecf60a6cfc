package main

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twinhub/twinhub/bridge/httpapi"
	"github.com/twinhub/twinhub/deploy/natstest"
)

// readyz reads /readyz without credentials.
func readyz(t *testing.T, base string) (int, httpapi.ReadyzBody, string) {
	t.Helper()
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		return 0, httpapi.ReadyzBody{}, err.Error()
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var body httpapi.ReadyzBody
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("/readyz is not JSON: %v: %s", err, raw)
	}
	return resp.StatusCode, body, string(raw)
}

// runHealthcheck runs `twinhub healthcheck` and returns its exit status
// and output.
func runHealthcheck(t *testing.T, args ...string) (int, string) {
	t.Helper()
	out, err := exec.Command(binary, append([]string{"healthcheck"}, args...)...).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	default:
		t.Fatalf("running twinhub healthcheck: %v", err)
		return -1, ""
	}
}

// TestProbes drives the probes of a hub on an external NATS with history
// in a real ClickHouse, with authentication on: /livez and /readyz answer
// without a token; /readyz lists every component; ClickHouse stopped
// degrades the hub (200, clickhouse down) and NATS stopped makes it not
// ready (503, nats down) while /livez stays 200; `twinhub healthcheck`
// exits 0 and 1 accordingly with a one-line reason; and /metrics has
// twinhub_build_info and the TLS certificate's expiry.
func TestProbes(t *testing.T) {
	ch := startClickHouse(t)
	nc := natstest.StartStandalone(t)
	p := startTwinhub(t, "", "--nats-url", nc.URLs(), "--clickhouse-url", ch.URL(""))
	hc := "--url=" + p.HTTP + "/readyz"

	resp, err := http.Get(p.HTTP + "/livez")
	if err != nil {
		t.Fatal(err)
	}
	live, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(live) != `{"status":"live"}` {
		t.Fatalf("/livez: %d %s", resp.StatusCode, live)
	}

	code, body, raw := readyz(t, p.HTTP)
	if code != 200 || body.Status != httpapi.StatusReady {
		t.Fatalf("/readyz of a running hub: %d %s", code, raw)
	}
	for _, name := range []string{"twinhub", "nats", "jetstream", "projection", "broker", "clickhouse"} {
		if c, ok := body.Components[name]; !ok || c.Status != httpapi.ComponentOK || c.Message == "" {
			t.Errorf("/readyz component %s: %+v, want ok with a message (body %s)", name, c, raw)
		}
	}
	if exit, out := runHealthcheck(t, hc); exit != 0 || strings.TrimSpace(out) != "ready" {
		t.Errorf("healthcheck of a ready hub: exit %d, %q; want 0, \"ready\"", exit, out)
	}

	metrics := string(p.call(t, "GET", "/metrics", "").Body)
	if !regexp.MustCompile(`(?m)^twinhub_build_info\{goversion="go[^"]+",revision="[^"]+",version="dev"\} 1$`).MatchString(metrics) {
		t.Errorf("no twinhub_build_info 1 with goversion, revision and version=\"dev\":\n%s", grepLines(metrics, "build_info"))
	}
	for _, listener := range []string{"https", "mqtts"} {
		m := regexp.MustCompile(`(?m)^twinhub_tls_cert_expiry_timestamp_seconds\{listener="` + listener + `"\} (\S+)$`).FindStringSubmatch(metrics)
		if m == nil {
			t.Errorf("no certificate expiry for the %s listener:\n%s", listener, grepLines(metrics, "tls_cert"))
			continue
		}
		if v, err := strconv.ParseFloat(m[1], 64); err != nil || time.Unix(int64(v), 0).Before(time.Now().Add(24*time.Hour)) {
			t.Errorf("certificate expiry of %s is %s; want a time more than a day ahead (the local CA issues long-lived ones)", listener, m[1])
		}
	}

	// ClickHouse stopped: history falls behind, writes go on.
	ch.Stop()
	waitFor(t, 30*time.Second, "/readyz to report ClickHouse down", func() bool {
		_, body, _ := readyz(t, p.HTTP)
		return body.Components["clickhouse"].Status == httpapi.ComponentDown
	})
	code, body, raw = readyz(t, p.HTTP)
	if code != 200 || body.Status != httpapi.StatusDegraded || !strings.Contains(body.Components["clickhouse"].Message, "ClickHouse") {
		t.Errorf("/readyz with ClickHouse stopped: %d %s; want 200, degraded, naming ClickHouse", code, raw)
	}
	if r := p.call(t, "PUT", "/devices/probe-1", `{"deviceId":"probe-1"}`); r.Status != 200 {
		t.Errorf("a write while ClickHouse is down: %d %s; want 200", r.Status, r.Body)
	}
	if exit, out := runHealthcheck(t, hc); exit != 0 || !strings.HasPrefix(out, "degraded: clickhouse down (") || strings.Count(out, "\n") != 1 {
		t.Errorf("healthcheck with ClickHouse down: exit %d, %q; want 0 and one line \"degraded: clickhouse down (…)\"", exit, out)
	}

	// NATS stopped: the hub cannot take writes.
	nc.Kill(0)
	waitFor(t, 30*time.Second, "/readyz 503", func() bool { code, _, _ := readyz(t, p.HTTP); return code == 503 })
	code, body, raw = readyz(t, p.HTTP)
	if code != 503 || body.Status != httpapi.StatusNotReady || body.Components["nats"].Status != httpapi.ComponentDown ||
		!strings.Contains(body.Components["nats"].Message, "not connected to NATS") {
		t.Errorf("/readyz with NATS stopped: %d %s; want 503, not ready, nats down", code, raw)
	}
	if resp, err := http.Get(p.HTTP + "/livez"); err != nil || resp.StatusCode != 200 {
		t.Errorf("/livez with NATS stopped: %v %v; want 200 (the process is alive)", resp, err)
	} else {
		resp.Body.Close()
	}
	exit, out := runHealthcheck(t, hc)
	if exit != 1 || !strings.Contains(out, "not ready: nats down (not connected to NATS") || strings.Count(out, "\n") != 1 {
		t.Errorf("healthcheck with NATS down: exit %d, %q; want 1 and one line naming NATS", exit, out)
	}
	t.Logf("healthcheck with NATS and ClickHouse down: %s", strings.TrimSpace(out))

	// NATS back: writes again, ClickHouse still down.
	nc.Start(0)
	waitFor(t, 30*time.Second, "/readyz 200 after NATS is back", func() bool { code, _, _ := readyz(t, p.HTTP); return code == 200 })

	// A hub that does not answer, and a URL that is no URL.
	if exit, out := runHealthcheck(t, "--url=http://127.0.0.1:1/readyz", "--timeout=2s"); exit != 1 || !strings.Contains(out, "unreachable") {
		t.Errorf("healthcheck of nothing: exit %d, %q; want 1, unreachable", exit, out)
	}
	if exit, out := runHealthcheck(t, "--url=127.0.0.1:8080"); exit != 1 || !strings.Contains(out, "http://") {
		t.Errorf("healthcheck with a bad URL: exit %d, %q; want 1 and how to write it", exit, out)
	}
}

// TestVersion: `twinhub version` says the version set at build with
// -ldflags -X main.version, and the VCS revision Go recorded (when the
// checkout is a Git repository Go can stamp from), or "unknown".
func TestVersion(t *testing.T) {
	out, err := exec.Command(binary, "version").CombinedOutput()
	if err != nil || !regexp.MustCompile(`^twinhub dev \(revision \S+.*, go\d`).Match(out) {
		t.Errorf("twinhub version: %v %q; want \"twinhub dev (revision …, go…)\"", err, out)
	}

	bin := filepath.Join(t.TempDir(), "twinhub")
	build := exec.Command("go", "build", "-buildvcs=auto", "-ldflags", "-X main.version=1.2.3-test", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("twinhub version: %v %s", err, out)
	}
	want := "unknown"
	// Go stamps the revision when the module's Git directory is a
	// directory (not a worktree's .git file).
	if root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output(); err == nil {
		if fi, err := os.Stat(filepath.Join(strings.TrimSpace(string(root)), ".git")); err == nil && fi.IsDir() {
			head, _ := exec.Command("git", "rev-parse", "HEAD").Output()
			want = strings.TrimSpace(string(head))
		}
	}
	if !strings.HasPrefix(string(out), "twinhub 1.2.3-test (revision "+want) {
		t.Errorf("twinhub version of a build with -X main.version=1.2.3-test: %q; want \"twinhub 1.2.3-test (revision %s…\"", out, want)
	}
	t.Logf("%s", out)
}

// TestDefaultHealthcheckURL: healthcheck asks the address `twinhub run`
// reads from TWINHUB_HTTP_ADDR (an unspecified host on loopback), else the
// clients' TWINHUB_SERVER, else the default address.
func TestDefaultHealthcheckURL(t *testing.T) {
	for _, tc := range []struct{ httpAddr, server, want string }{
		{"", "", "http://127.0.0.1:8080/readyz"},
		{"0.0.0.0:9000", "", "http://127.0.0.1:9000/readyz"},
		{"[::]:9000", "http://hub:1", "http://127.0.0.1:9000/readyz"},
		{":9000", "", "http://127.0.0.1:9000/readyz"},
		{"10.0.0.5:8080", "", "http://10.0.0.5:8080/readyz"},
		{"", "http://127.0.0.1:8081/", "http://127.0.0.1:8081/readyz"},
		{"no port", "http://127.0.0.1:8081", "http://127.0.0.1:8081/readyz"},
	} {
		t.Setenv("TWINHUB_HTTP_ADDR", tc.httpAddr)
		t.Setenv("TWINHUB_SERVER", tc.server)
		if got := defaultHealthcheckURL(); got != tc.want {
			t.Errorf("TWINHUB_HTTP_ADDR=%q TWINHUB_SERVER=%q: %s, want %s", tc.httpAddr, tc.server, got, tc.want)
		}
	}
}

// TestHealthcheckLine: the line names the components that keep the hub
// from being ready first, then those down without blocking, then warnings.
func TestHealthcheckLine(t *testing.T) {
	body := httpapi.ReadyzBody{Status: httpapi.StatusNotReady,
		Components: map[string]httpapi.ComponentStatus{
			"clickhouse": {Status: httpapi.ComponentDown, Message: "unreachable"},
			"jetstream":  {Status: httpapi.ComponentWarning, Message: "lost 3"},
			"nats":       {Status: httpapi.ComponentDown, Message: "not connected"},
			"broker":     {Status: httpapi.ComponentOK, Message: "listening"},
		},
		Conditions: []httpapi.Condition{
			{Component: "clickhouse", Message: "unreachable", Down: true},
			{Component: "jetstream", Message: "lost 3"},
			{Component: "nats", Message: "not connected", Blocking: true},
		}}
	want := "nats down (not connected); clickhouse down (unreachable); jetstream warning (lost 3)"
	if got := componentProblems(body); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
