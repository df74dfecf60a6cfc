package main

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// natsCLIVersion is the nats CLI the README's recipe is tested with.
const natsCLIVersion = "v0.5.0"

// natsCLI returns the nats CLI: the one on PATH, or one built from its Go
// module at natsCLIVersion (the build cache makes later runs quick).
func natsCLI(t *testing.T) string {
	t.Helper()
	if path, err := exec.LookPath("nats"); err == nil {
		return path
	}
	bin := t.TempDir()
	cmd := exec.Command("go", "install", "github.com/nats-io/natscli/nats@"+natsCLIVersion)
	cmd.Dir = bin // outside this module
	cmd.Env = append(os.Environ(), "GOBIN="+bin, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the nats CLI %s: %v\n%s", natsCLIVersion, err, out)
	}
	return filepath.Join(bin, "nats")
}

// TestNATSCLIRecipe runs the README's nats CLI recipe ("Change events")
// verbatim against a hub: the consumer is created as the events user, `nats
// consumer next` prints the first events of the stream, the same command run
// again continues after them (the consumer is durable and they were
// acknowledged), and the consumer is removed.
func TestNATSCLIRecipe(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeShellBlocks(string(readme), "## Change events")
	if len(blocks) != 1 || len(blocks[0].lines) < 3 || !strings.HasPrefix(blocks[0].lines[0], "export ") {
		t.Fatalf("want one sh block in the README's Change events that starts with export, found %+v", blocks)
	}
	lines := blocks[0].lines
	nats := natsCLI(t)
	p := startTwinhub(t, "")
	for i := range 4 {
		id := fmt.Sprintf("cli-%d", i)
		if r := p.call(t, "PUT", "/devices/"+id, `{"deviceId":"`+id+`"}`); r.Status != 200 {
			t.Fatalf("creating %s: %d %s", id, r.Status, r.Body)
		}
	}
	for i := range 20 {
		path := fmt.Sprintf("/twins/cli-%d", i%4)
		if r := p.call(t, "PATCH", path, fmt.Sprintf(`{"properties":{"desired":{"n":%d}}}`, i)); r.Status != 200 {
			t.Fatalf("PATCH %s: %d %s", path, r.Status, r.Body)
		}
	}
	stored := readEvents(t, p)

	// twinhub and nats on PATH; the hub's data directory and NATS address as
	// its environment variables, which `twinhub nats-credentials` reads.
	dir := t.TempDir()
	for name, target := range map[string]string{"twinhub": binary, "nats": nats} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	u, err := url.Parse(p.NATS)
	if err != nil {
		t.Fatal(err)
	}
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "NATS_") || strings.HasPrefix(kv, "PATH=") || strings.HasPrefix(kv, "TWINHUB_")
	})
	env = append(env, "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"),
		"TWINHUB_DATA_DIR="+p.dataDir, "TWINHUB_NATS_ADDR="+u.Host, "HOME="+dir)
	run := func(line string) string {
		t.Helper()
		cmd := exec.Command("bash", "-c", "set -e\n"+lines[0]+"\n"+line)
		cmd.Dir, cmd.Env = dir, env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("README: %s: %v\n%s%s", line, err, stdout.String(), stderr.String())
		}
		return stdout.String()
	}

	next := 0 // events read so far
	for _, line := range lines[1:] {
		if !strings.HasPrefix(line, "nats consumer next ") {
			run(line)
			continue
		}
		// Twice: the second run continues where the first stopped.
		for range 2 {
			out := strings.Split(strings.TrimSpace(run(line)), "\n")
			for k, got := range out {
				if next+k >= len(stored) || got != string(stored[next+k].data) {
					t.Fatalf("README: %s: line %d is\n%s\nwant event %d of the stream", line, k+1, got, next+k+1)
				}
			}
			next += len(out)
		}
	}
	if next == 0 {
		t.Fatal("the recipe read no event")
	}
	t.Logf("the recipe read events 1 to %d of %d", next, len(stored))
}
