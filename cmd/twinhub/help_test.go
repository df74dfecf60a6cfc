package main

import (
	"net"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestHelp: every command and command group answers -h and --help with
// exit status 0, and its help lists exactly its own flags (a leaf's help
// does not list its siblings' flags: `twin get -h` has no --tags).
func TestHelp(t *testing.T) {
	flagRe := regexp.MustCompile(`(?m)^\s+(?:-\w, )?--([\w-]+)`)
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		path := strings.Fields(c.CommandPath())[1:]
		c.InitDefaultHelpFlag()
		c.InitDefaultVersionFlag()
		var want []string
		c.Flags().VisitAll(func(f *pflag.Flag) { want = append(want, f.Name) })
		c.InheritedFlags().VisitAll(func(f *pflag.Flag) { want = append(want, f.Name) })
		for _, h := range []string{"-h", "--help"} {
			out, err := exec.Command(binary, append(path, h)...).CombinedOutput()
			if err != nil {
				t.Errorf("twinhub %s %s: %v\n%s", strings.Join(path, " "), h, err, out)
				continue
			}
			if !strings.Contains(string(out), "Usage:") {
				t.Errorf("twinhub %s %s prints no usage:\n%s", strings.Join(path, " "), h, out)
			}
			var got []string
			for _, m := range flagRe.FindAllStringSubmatch(string(out), -1) {
				got = append(got, m[1])
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(slices.Compact(got), slices.Compact(want)) {
				t.Errorf("twinhub %s %s lists flags %q, want its own %q", strings.Join(path, " "), h, got, want)
			}
		}
	}
	// The `help` command has its own calling convention.
	root := newRootCommand()
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	walk(root)
}

// TestCompletion: `twinhub completion bash|zsh|fish` print completion
// scripts that complete twinhub's commands.
func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		out, err := exec.Command(binary, "completion", sh).Output()
		if err != nil || !strings.Contains(string(out), "twinhub") {
			t.Errorf("completion %s: %v\n%.200s", sh, err, out)
		}
	}
	out, err := exec.Command(binary, "__complete", "twin", "").Output()
	if err != nil || !strings.Contains(string(out), "update") || !strings.Contains(string(out), "history") {
		t.Errorf("completing `twinhub twin `: %v\n%s", err, out)
	}
}

// TestUsageErrors: a wrong command line exits 2 with a message that names
// the problem and where to read about it, on stderr.
func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"device", "frobnicate"}, `unknown command "frobnicate" for 'twinhub device'; run 'twinhub device --help'`},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"twin", "update"}, `'twinhub twin update' needs <device-id>`},
		{[]string{"twin", "get", "a", "b"}, `takes <device-id>, got 2 arguments`},
		{[]string{"twin", "update", "myDeviceId", "--nope"}, `unknown flag: --nope; run 'twinhub twin update --help' for its flags`},
		{[]string{"query", "SELECT", "*", "FROM", "devices"}, `quote a query`},
	} {
		cmd := exec.Command(binary, c.args...)
		out, err := cmd.CombinedOutput()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), c.want) {
			t.Errorf("twinhub %q: %v, output %q; want exit 2 and %q", c.args, err, out, c.want)
		}
	}
}

// TestUnreachableHub: a client command with no hub behind --server says
// how to fix it.
func TestUnreachableHub(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	cmd := exec.Command(binary, "device", "list", "--server", "http://"+addr, "--auth=false")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "cannot reach twinhub at http://"+addr+": start it with `twinhub run`, or point --server") {
		t.Errorf("device list without a hub: %v\n%s", err, out)
	}
}
