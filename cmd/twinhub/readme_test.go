package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestREADMEWalkthrough runs every shell block of the README's "Your first
// ten minutes" and "CLI" sections verbatim, line by line, in a directory
// laid out as the walkthrough's (./twinhub, ./data of a running hub). A
// line must exit 0, except one whose comment says "refused: X", which must
// fail with X on stderr. `device-sim` runs in the background as in its own
// terminal, and a comment "terminal N prints: X" waits for terminal N's
// output to show X. The hub is started by the test (`make run` is its
// `twinhub run`) and the binary built by TestMain (`go build`); the hub
// listens on free ports, which TWINHUB_SERVER and TWINHUB_MQTT give the
// commands.
func TestREADMEWalkthrough(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeShellBlocks(string(readme), "## Your first ten minutes", "## CLI")
	if len(blocks) < 4 {
		t.Fatalf("found %d shell blocks in the README's walkthrough and CLI sections", len(blocks))
	}

	dir := t.TempDir()
	p := startTwinhub(t, filepath.Join(dir, "data"))
	if err := os.Symlink(binary, filepath.Join(dir, "twinhub")); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "TWINHUB_SERVER="+p.HTTP, "TWINHUB_MQTT="+p.MQTT)
	env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "TWINHUB_DATA_DIR=") })
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	terminals := map[string]*terminalOutput{}
	var background sync.WaitGroup
	defer background.Wait()
	defer cancel() // ends the background commands before waiting for them

	refused := regexp.MustCompile(`#.*\brefused: (.+)$`)
	prints := regexp.MustCompile(`^#\s+terminal (\d+) prints: (.+)$`)
	var setup []string
	for _, b := range blocks {
		for _, line := range b.lines {
			if m := prints.FindStringSubmatch(line); m != nil {
				out := terminals[m[1]]
				if out == nil {
					t.Fatalf("README: %q: terminal %s runs nothing in the background", line, m[1])
				}
				if !out.waitFor(ctx, m[2]) {
					t.Fatalf("README: terminal %s did not print %q; it printed:\n%s", m[1], m[2], out.String())
				}
				continue
			}
			if strings.HasPrefix(line, "#") {
				continue
			}
			if line == "make run" || strings.HasPrefix(line, "go build ") {
				setup = append(setup, line)
				continue
			}
			if strings.HasPrefix(line, "./twinhub device-sim ") {
				out := &terminalOutput{}
				terminals[b.terminal] = out
				cmd := exec.CommandContext(ctx, "bash", "-c", line)
				cmd.Dir, cmd.Env = dir, env
				stdout, _ := cmd.StdoutPipe()
				cmd.Stderr = out
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				background.Add(1)
				// Copies the simulator's output until ctx ends it.
				go func() {
					defer background.Done()
					sc := bufio.NewScanner(stdout)
					for sc.Scan() {
						out.Write([]byte(sc.Text() + "\n"))
					}
					cmd.Wait()
				}()
				if !out.waitFor(ctx, "waiting for desired property changes") {
					t.Fatalf("README: %s did not start:\n%s", line, out.String())
				}
				continue
			}
			cmd := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-c", line)
			cmd.Dir, cmd.Env = dir, env
			var stderr strings.Builder
			cmd.Stderr = &stderr
			stdout, err := cmd.Output()
			if m := refused.FindStringSubmatch(line); m != nil {
				if err == nil || !strings.Contains(stderr.String(), strings.TrimSpace(m[1])) {
					t.Errorf("README: %s\nwas not refused with %q: %v\n%s%s", line, m[1], err, stdout, stderr.String())
				}
				continue
			}
			if err != nil {
				t.Errorf("README: %s\nfailed: %v\n%s%s", line, err, stdout, stderr.String())
			}
		}
	}
	if want := []string{"make run", "go build -o twinhub ./cmd/twinhub        # or use `go run ./cmd/twinhub`"}; !slices.Equal(setup, want) {
		t.Errorf("lines the test does not run itself: %q, want only %q", setup, want)
	}
}

// shellBlock is a ```sh block: its commands (continuation lines joined)
// and comment lines, and the terminal the text before it names.
type shellBlock struct {
	terminal string
	lines    []string
}

// readmeShellBlocks returns the shell blocks of the README sections with
// the given headings.
func readmeShellBlocks(readme string, headings ...string) []shellBlock {
	var blocks []shellBlock
	inSection, inBlock, terminal := false, false, ""
	terminalRe := regexp.MustCompile(`^Terminal (\d+):`)
	var cur *shellBlock
	for _, line := range strings.Split(readme, "\n") {
		switch {
		case !inBlock && strings.HasPrefix(line, "## "):
			inSection = slices.Contains(headings, strings.TrimSpace(line))
		case !inSection:
		case !inBlock && line == "```sh":
			inBlock = true
			blocks = append(blocks, shellBlock{terminal: terminal})
			cur = &blocks[len(blocks)-1]
		case inBlock && line == "```":
			inBlock = false
		case inBlock:
			if n := len(cur.lines); n > 0 && strings.HasSuffix(cur.lines[n-1], "\\") {
				cur.lines[n-1] = strings.TrimSuffix(cur.lines[n-1], "\\") + strings.TrimSpace(line)
				continue
			}
			if strings.TrimSpace(line) != "" {
				cur.lines = append(cur.lines, strings.TrimSpace(line))
			}
		default:
			if m := terminalRe.FindStringSubmatch(line); m != nil {
				terminal = m[1]
			}
		}
	}
	return blocks
}

// terminalOutput collects a background command's output.
type terminalOutput struct {
	mu sync.Mutex
	b  strings.Builder
}

func (o *terminalOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

func (o *terminalOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}

// waitFor polls until the output contains want, for 30 s at most.
func (o *terminalOutput) waitFor(ctx context.Context, want string) bool {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if strings.Contains(o.String(), want) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return strings.Contains(o.String(), want)
}
