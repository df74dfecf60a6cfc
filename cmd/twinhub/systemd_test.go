package main

import (
	"crypto/tls"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/twinhub/twinhub/deploy/embedded"
)

var systemdDir = filepath.Join("..", "..", "deploy", "systemd")

// TestSystemdUnits: `systemd-analyze verify` accepts deploy/systemd's units
// without a single warning (it exits 0 on unknown keys and bad values, so
// any output fails the test), with their ExecStart pointed at a binary that
// exists here (the twinhub under test; verify only checks that it is
// executable), and `systemd-analyze security` rates each unit's exposure
// 2.0 or lower (of 10).
func TestSystemdUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed (Debian package systemd); the units are not verified")
	}
	dir := t.TempDir()
	for unit, exe := range map[string]string{"twinhub.service": "/usr/local/bin/twinhub", "nats-server.service": "/usr/local/bin/nats-server"} {
		b, err := os.ReadFile(filepath.Join(systemdDir, unit))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "ExecStart="+exe+" ") {
			t.Fatalf("%s does not start %s", unit, exe)
		}
		path := filepath.Join(dir, unit)
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(b), exe, binary)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(analyze, "verify", path).CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
		}
		out, err = exec.Command(analyze, "security", "--offline=yes", "--threshold=20", "--no-pager", path).CombinedOutput()
		if err != nil {
			t.Errorf("systemd-analyze security %s: %v (exposure above 2.0, or it failed)\n%s", unit, err, out)
		} else if m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`).FindSubmatch(out); m != nil {
			t.Logf("%s: exposure %s", unit, m[1])
		}
	}
}

// TestSystemdConfigFiles: deploy/systemd/nats-server.conf loads with
// nats-server's own parser (auth.conf beside it, certificates where it
// names them, passwords in the environment) as a JetStream cluster node
// with TLS on its client port and mutual TLS on its routes, and every
// TWINHUB_ variable in twinhub.env is a flag of `twinhub run`.
func TestSystemdConfigFiles(t *testing.T) {
	dir := t.TempDir()
	conf, err := os.ReadFile(filepath.Join(systemdDir, "nats-server.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := embedded.LocalTLS(dir, []string{"nats-1"}); err != nil { // dir/tls/{ca,server,server-key}.pem
		t.Fatal(err)
	}
	s := strings.NewReplacer("/etc/nats/tls/", filepath.Join(dir, "tls")+"/", "/var/lib/nats", filepath.Join(dir, "store")).Replace(string(conf))
	if err := os.WriteFile(filepath.Join(dir, "nats-server.conf"), []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	auth, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nats", "cluster", "auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "auth.conf"), auth, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TWINHUB_NATS_PASSWORD", "pw-twinhub")
	t.Setenv("TWINHUB_EVENTS_PASSWORD", "pw-events")
	o, err := server.ProcessConfigFile(filepath.Join(dir, "nats-server.conf"))
	if err != nil {
		t.Fatalf("nats-server.conf: %v", err)
	}
	if !o.JetStream || o.Cluster.Name != "twinhub" || len(o.Routes) != 3 || o.HTTPHost != "127.0.0.1" ||
		o.TLSConfig == nil || o.Cluster.TLSConfig == nil || o.Cluster.TLSConfig.ClientAuth != tls.RequireAndVerifyClientCert || len(o.Users) != 2 {
		t.Errorf("nats-server.conf: JetStream %t, cluster %q with %d routes, monitoring on %q, client TLS %t, route TLS %t, %d users",
			o.JetStream, o.Cluster.Name, len(o.Routes), o.HTTPHost, o.TLSConfig != nil, o.Cluster.TLSConfig != nil, len(o.Users))
	}

	// nats-server's own validation of the options, on loopback ports
	// instead of the configured ones and without dialing the routes.
	o.Host, o.Port, o.Cluster.Host, o.Cluster.Port, o.HTTPHost, o.HTTPPort, o.Routes = "127.0.0.1", -1, "127.0.0.1", -1, "127.0.0.1", -1, nil
	if _, err := server.NewServer(o); err != nil {
		t.Errorf("nats-server refuses nats-server.conf's options: %v", err)
	}

	env, err := os.ReadFile(filepath.Join(systemdDir, "twinhub.env"))
	if err != nil {
		t.Fatal(err)
	}
	help, err := exec.Command(binary, "run", "--help").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	vars := regexp.MustCompile(`(?m)^#?TWINHUB_([A-Z_]+)=`).FindAllStringSubmatch(string(env), -1)
	if len(vars) < 5 {
		t.Fatalf("twinhub.env names only %d TWINHUB_ variables", len(vars))
	}
	for _, v := range vars {
		flag := "--" + strings.ReplaceAll(strings.ToLower(v[1]), "_", "-")
		if !strings.Contains(string(help), flag+" ") {
			t.Errorf("twinhub.env sets TWINHUB_%s, but `twinhub run` has no %s", v[1], flag)
		}
	}
}
