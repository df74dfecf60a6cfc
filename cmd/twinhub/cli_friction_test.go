package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/twinhub/twinhub/bridge/deviceclient"
)

// TestCLIFriction drives the client commands where a newcomer stumbled:
// each subtest is one friction point of the README walkthrough.
func TestCLIFriction(t *testing.T) {
	p := startTwinhub(t, "")
	for _, id := range []string{"zeta", "alpha", "mid"} {
		if _, err := p.cli(t, "device", "create", id); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("DeviceListIsASortedTableWithoutKeys", func(t *testing.T) {
		out, err := p.cli(t, "device", "list")
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 4 || !strings.HasPrefix(lines[0], "DEVICE ID") || !strings.HasPrefix(lines[1], "alpha ") ||
			!strings.HasPrefix(lines[2], "mid ") || !strings.HasPrefix(lines[3], "zeta ") {
			t.Errorf("device list:\n%s", out)
		}
		keys := regexp.MustCompile(`"primaryKey": "([^"]+)"`)
		full, err := p.cli(t, "device", "get", "alpha")
		key := keys.FindStringSubmatch(full)
		if err != nil || key == nil {
			t.Fatalf("device get: %v\n%s", err, full)
		}
		if strings.Contains(out, key[1]) || strings.Contains(strings.ToLower(out), "key") {
			t.Errorf("the device table shows keys:\n%s", out)
		}
		js, err := p.cli(t, "device", "list", "--output", "json")
		var docs []struct{ DeviceID string }
		if err != nil || json.Unmarshal([]byte(js), &docs) != nil || len(docs) != 3 || docs[0].DeviceID != "alpha" || docs[2].DeviceID != "zeta" {
			t.Errorf("device list --output json: %v\n%s", err, js)
		}
	})

	t.Run("TwinUpdatePrintsVersions", func(t *testing.T) {
		out, err := p.cli(t, "twin", "update", "alpha", "--desired", `{"mode":"eco"}`)
		if err != nil || !regexp.MustCompile(`^updated alpha: version \d+, desired \$version 2, etag \S+=\n$`).MatchString(out) {
			t.Errorf("twin update: %v %q", err, out)
		}
		out, err = p.cli(t, "twin", "update", "alpha", "--tags", `{"a":1}`, "--output", "json")
		var tw map[string]any
		if err != nil || json.Unmarshal([]byte(out), &tw) != nil || get(tw, "tags.a") != 1.0 {
			t.Errorf("twin update --output json: %v\n%s", err, out)
		}
		out, err = p.cli(t, "twin", "get", "alpha", "-o", "yaml")
		var y map[string]any
		if err != nil || yaml.Unmarshal([]byte(out), &y) != nil || get(y, "properties.desired.mode") != "eco" || get(y, "tags.a") != 1 {
			t.Errorf("twin get -o yaml: %v\n%s", err, out)
		}
		out, err = p.cli(t, "twin", "get", "alpha", "-o", "table")
		if err != nil || !regexp.MustCompile(`(?m)^properties\.desired\.mode\s+eco$`).MatchString(out) {
			t.Errorf("twin get -o table: %v\n%s", err, out)
		}
		if _, err := p.cli(t, "twin", "get", "alpha", "-o", "xml"); err == nil || !strings.Contains(err.Error(), "want table, json or yaml") {
			t.Errorf("--output xml: %v", err)
		}
	})

	t.Run("ReplaceAloneIsRefused", func(t *testing.T) {
		before := p.call(t, "GET", "/twins/alpha", "").json(t)
		_, err := p.cli(t, "twin", "update", "alpha", "--replace")
		if err == nil || !strings.Contains(err.Error(), "--replace needs --tags and/or --desired") {
			t.Errorf("twin update --replace alone: %v", err)
		}
		if after := p.call(t, "GET", "/twins/alpha", "").json(t); after["etag"] != before["etag"] {
			t.Errorf("the refused --replace changed the twin: %v -> %v", before["etag"], after["etag"])
		}
	})

	t.Run("SASToken", func(t *testing.T) {
		tok, err := p.cli(t, "sas-token", "--ttl", "5m")
		if err != nil || !strings.HasPrefix(tok, "SharedAccessSignature sr=localhost&") || !strings.Contains(tok, "skn=iothubowner") {
			t.Fatalf("sas-token: %v %q", err, tok)
		}
		if r := p.call(t, "GET", "/twins/alpha", "", "Authorization", strings.TrimSpace(tok)); r.Status != 200 {
			t.Errorf("GET with the minted token: %d %s", r.Status, r.Body)
		}
		tok, err = p.cli(t, "sas-token", "--policy", "registryRead")
		if err != nil {
			t.Fatal(err)
		}
		if r := p.call(t, "PATCH", "/twins/alpha", `{"tags":{"b":1}}`, "Authorization", strings.TrimSpace(tok)); r.Status != 401 {
			t.Errorf("registryRead's token changed a twin: %d %s", r.Status, r.Body)
		}
		tok, err = p.cli(t, "sas-token", "--device", "alpha")
		if err != nil || !strings.HasPrefix(tok, "SharedAccessSignature sr=localhost%2Fdevices%2Falpha&") {
			t.Fatalf("sas-token --device: %v %q", err, tok)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		dev, err := deviceclient.Dial(ctx, p.MQTT, "alpha", deviceclient.Options{Username: "alpha", Password: strings.TrimSpace(tok)})
		if err != nil {
			t.Fatalf("a device connecting with sas-token --device's token: %v", err)
		}
		dev.Close()
	})

	t.Run("DeviceUpdate", func(t *testing.T) {
		doc := p.call(t, "GET", "/devices/mid", "").json(t)
		oldKey := get(doc, "authentication.symmetricKey.primaryKey")
		oldSecondary := get(doc, "authentication.symmetricKey.secondaryKey")
		if _, err := p.cli(t, "device", "update", "mid", "--status", "disabled", "--etag", "stale"); err == nil || !strings.Contains(err.Error(), "412") {
			t.Errorf("device update with a stale --etag: %v", err)
		}
		out, err := p.cli(t, "device", "update", "mid", "--status", "disabled", "--status-reason", "maintenance", "--etag", doc["etag"].(string))
		var d map[string]any
		if err != nil || json.Unmarshal([]byte(out), &d) != nil || d["status"] != "disabled" || d["statusReason"] != "maintenance" {
			t.Fatalf("device update --status disabled: %v\n%s", err, out)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if dev, err := p.dialDevice(t, ctx, "mid"); err == nil {
			dev.Close()
			t.Errorf("a disabled device connected")
		}
		if _, err := p.cli(t, "device", "update", "mid", "--rotate-key", "primary"); err != nil {
			t.Fatal(err)
		}
		doc = p.call(t, "GET", "/devices/mid", "").json(t)
		if k := get(doc, "authentication.symmetricKey.primaryKey"); k == oldKey || k == "" {
			t.Errorf("--rotate-key primary kept the primary key")
		}
		if get(doc, "authentication.symmetricKey.secondaryKey") != oldSecondary {
			t.Errorf("--rotate-key primary changed the secondary key")
		}
		if _, err := p.cli(t, "device", "update", "mid"); err == nil || !strings.Contains(err.Error(), "needs --status") {
			t.Errorf("device update with nothing to do: %v", err)
		}
	})

	t.Run("QueryFailurePrintsNothing", func(t *testing.T) {
		out, err := p.cli(t, "query", "SELECT * FORM devices")
		if err == nil || out != "" {
			t.Errorf("a failed query printed %q (err %v); stdout must stay empty", out, err)
		}
	})

	t.Run("QueryHintKeepsFlags", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, binary, "query", "SELECT deviceId FROM devices WHERE status = 'enabled'", "--page-size", "1", "--one-page")
		cmd.Env = append(cmd.Environ(), "TWINHUB_SERVER="+p.HTTP, "TWINHUB_DATA_DIR="+p.dataDir)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%v: %s", err, stderr.String())
		}
		hint := regexp.MustCompile(`more rows: (twinhub query .*)`).FindStringSubmatch(stderr.String())
		if hint == nil || !strings.Contains(hint[1], "--page-size 1") {
			t.Fatalf("the hint drops --page-size: %q", stderr.String())
		}
		// The hint, run as printed, gives the next page.
		next := exec.CommandContext(ctx, "bash", "-c", strings.Replace(hint[1], "twinhub", binary, 1))
		next.Env = cmd.Env
		page2, err := next.Output()
		var first, second []map[string]string
		if err != nil || json.Unmarshal(out, &first) != nil || json.Unmarshal(page2, &second) != nil ||
			len(first) != 1 || len(second) != 1 || first[0]["deviceId"] != "alpha" || second[0]["deviceId"] != "zeta" {
			t.Errorf("pages %s then %s (%v)", out, page2, err)
		}
	})

	t.Run("NoPoliciesNamesTheDirectory", func(t *testing.T) {
		dir := t.TempDir()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, binary, "device", "list", "--server", p.HTTP)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		want := "no shared access policies at " + filepath.Join(dir, "data", "policies.json")
		if err == nil || !strings.Contains(string(out), want) || !strings.Contains(string(out), "--data-dir") {
			t.Errorf("device list outside the hub's directory: %v %s; want %q", err, out, want)
		}
	})

	t.Run("DeviceSimTrustsTheHubCA", func(t *testing.T) {
		mqtts := "mqtts://" + regexpFind(t, p.logs.String(), `msg="embedded MQTT broker listening" addr=\S+ tls_addr=(\S+)`)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		sim := exec.CommandContext(ctx, binary, "device-sim", "zeta", "--mqtt", mqtts, "--ca", filepath.Join(p.dataDir, "tls", "ca.pem"))
		sim.Env = append(sim.Environ(), "TWINHUB_SERVER="+p.HTTP, "TWINHUB_DATA_DIR="+p.dataDir)
		stdout, _ := sim.StdoutPipe()
		if err := sim.Start(); err != nil {
			t.Fatal(err)
		}
		defer sim.Wait()
		defer cancel()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "reported $version is now 2") {
				return
			}
		}
		t.Errorf("device-sim over MQTTS with --ca did not report")
	})
}
