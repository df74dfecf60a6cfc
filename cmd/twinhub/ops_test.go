package main

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A second `twinhub run` on a data directory another one uses fails at
// once, naming the directory and the holder; the first keeps serving; once
// the first is killed (kill -9, so nothing is cleaned up), a new one starts.
func TestSecondInstanceOnDataDirFails(t *testing.T) {
	dir := t.TempDir()
	first := startTwinhub(t, dir)
	first.call(t, "PUT", "/devices/lock-1", `{"deviceId":"lock-1"}`)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	second := exec.CommandContext(ctx, binary, "run", "--data-dir", dir, "--http-addr", "127.0.0.1:0",
		"--mqtt-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0", "--mqtts-addr", "127.0.0.1:0",
		"--https-addr", "127.0.0.1:0", "--partitions", "4")
	start := time.Now()
	out, err := second.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the second instance was still running after 10s:\n%s", out)
	}
	if err == nil {
		t.Fatalf("the second instance exited 0; want a failure:\n%s", out)
	}
	t.Logf("second instance exited after %s: %v", time.Since(start).Round(time.Millisecond), err)
	for _, want := range []string{dir, "pid " + strconv.Itoa(first.cmd.Process.Pid), "in use"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the second instance's error does not contain %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "twinhub is ready") {
		t.Errorf("the second instance said it was ready:\n%s", out)
	}

	// The first is unharmed.
	if r := first.call(t, "PATCH", "/twins/lock-1", `{"tags":{"a":1}}`); r.Status != 200 {
		t.Fatalf("first instance after the second tried: PATCH %d %s", r.Status, r.Body)
	}

	first.kill()
	again := startTwinhub(t, dir)
	r := again.call(t, "GET", "/twins/lock-1", "")
	if r.Status != 200 || get(r.json(t), "tags.a") != float64(1) {
		t.Fatalf("after kill -9 and a restart: GET %d %s", r.Status, r.Body)
	}
}
