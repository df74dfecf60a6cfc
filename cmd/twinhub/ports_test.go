package main

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestBusyPortsReportedAtOnce: `twinhub run` with two of its ports taken
// exits at once with one error naming both flags and addresses, instead
// of failing on the first after NATS's 30 s readiness wait. The bound of
// 15 s is the task's "at once", with room for a loaded machine.
func TestBusyPortsReportedAtOnce(t *testing.T) {
	var busy []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		busy = append(busy, ln.Addr().String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, binary, "run", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0",
		"--mqtt-addr", busy[0], "--nats-addr", busy[1], "--mqtts-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0").CombinedOutput()
	took := time.Since(start)
	if err == nil {
		t.Fatalf("twinhub run started on busy ports:\n%s", out)
	}
	for _, want := range []string{"--mqtt-addr " + busy[0] + " (in use)", "--nats-addr " + busy[1] + " (in use)"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the error does not name %q:\n%s", want, out)
		}
	}
	if took > 15*time.Second {
		t.Errorf("twinhub run took %s to report busy ports", took)
	}
}

// TestCheckPorts: the same address given to two flags is reported, and
// addresses of parts that do not run (an external NATS or MQTT broker,
// HTTPS off) are not tried.
func TestCheckPorts(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	taken := ln.Addr().String()
	free := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}
	same := free()
	c := runConfig{httpAddr: same, mqttAddr: same, natsAddr: "127.0.0.1:0", mqttsAddr: "127.0.0.1:0"}
	if err := checkPorts(c); err == nil || !strings.Contains(err.Error(), "--mqtt-addr "+same+" (also --http-addr's)") {
		t.Errorf("one address for two flags: %v", err)
	}
	c = runConfig{httpAddr: "127.0.0.1:0", natsURL: "nats://elsewhere:4222", natsAddr: taken, mqttURL: "tcp://elsewhere:1883", mqttAddr: taken, mqttsAddr: taken}
	if err := checkPorts(c); err != nil {
		t.Errorf("addresses of parts that do not run were tried: %v", err)
	}
}
