package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// cli runs a twinhub client command against p and returns its stdout.
func (p *proc) cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(cmd.Environ(), "TWINHUB_SERVER="+p.HTTP, "TWINHUB_DATA_DIR="+p.dataDir)
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), &cliError{err: err, stderr: string(ee.Stderr)}
	}
	return string(out), err
}

type cliError struct {
	err    error
	stderr string
}

func (e *cliError) Error() string { return e.err.Error() + ": " + e.stderr }

// TestCLI walks the README's first ten minutes with the CLI: create a
// device, run the device simulator, tag the device and set a desired
// property that the simulator prints, read the twin, list, print
// connection strings, and delete.
func TestCLI(t *testing.T) {
	p := startTwinhub(t, "")
	out, err := p.cli(t, "device", "create", "myDeviceId")
	if err != nil || !strings.Contains(out, `"deviceId": "myDeviceId"`) {
		t.Fatalf("device create: %v\n%s", err, out)
	}
	// The simulator reads its twin, reports connectivity and prints desired changes.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sim := exec.CommandContext(ctx, binary, "device-sim", "--mqtt", p.MQTT, "myDeviceId")
	sim.Env = append(sim.Environ(), "TWINHUB_SERVER="+p.HTTP, "TWINHUB_DATA_DIR="+p.dataDir)
	stdout, _ := sim.StdoutPipe()
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	defer sim.Wait()
	defer cancel() // before Wait, also when the test fails
	lines := make(chan string, 100)
	// Copies the simulator's output until it exits.
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	expect := func(want string) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("device-sim exited before printing %q", want)
				}
				if strings.Contains(l, want) {
					return
				}
			case <-deadline:
				t.Fatalf("device-sim did not print %q", want)
			}
		}
	}
	expect("reported $version is now 2")
	expect("waiting for desired property changes")

	if out, err := p.cli(t, "twin", "update", "myDeviceId", "--tags", `{"location":{"region":"US","plant":"Redmond43"}}`); err != nil || !strings.HasPrefix(out, "updated myDeviceId: version ") {
		t.Fatalf("twin update --tags: %v\n%s", err, out)
	}
	if _, err := p.cli(t, "twin", "update", "myDeviceId", "--desired", `{"telemetryConfig":{"sendFrequency":"5m"}}`); err != nil {
		t.Fatal(err)
	}
	expect(`desired change, $version 2: {"telemetryConfig":{"sendFrequency":"5m"},"$version":2}`)

	out, err = p.cli(t, "twin", "get", "myDeviceId")
	var tw map[string]any
	if err != nil || json.Unmarshal([]byte(out), &tw) != nil || get(tw, "properties.reported.connectivity.type") != "cellular" || tw["etag"] != "AAAAAAAAAAM=" {
		t.Fatalf("twin get: %v\n%s", err, out)
	}
	if _, err := p.cli(t, "twin", "update", "myDeviceId", "--tags", `{"x":1}`, "--etag", "AAAAAAAAAAE="); err == nil || !strings.Contains(err.Error(), "412") {
		t.Errorf("a stale --etag was not refused: %v", err)
	}
	if _, err := p.cli(t, "twin", "update", "--tags", `{"x":`, "myDeviceId"); err == nil || !strings.Contains(err.Error(), "not valid JSON") {
		t.Errorf("bad --tags JSON: %v", err)
	}
	if out, err := p.cli(t, "device", "list"); err != nil || !strings.Contains(out, "myDeviceId") {
		t.Errorf("device list: %v\n%s", err, out)
	}
	if out, err := p.cli(t, "connection-string"); err != nil || !strings.HasPrefix(out, "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=") {
		t.Errorf("connection-string: %v %q", err, out)
	}
	if out, err := p.cli(t, "connection-string", "--device", "myDeviceId", "--gateway", "localhost:8883"); err != nil ||
		!strings.HasPrefix(out, "HostName=localhost;DeviceId=myDeviceId;SharedAccessKey=") || !strings.Contains(out, ";GatewayHostName=localhost:8883") {
		t.Errorf("device connection-string: %v %q", err, out)
	}
	cancel()
	if out, err := p.cli(t, "device", "delete", "myDeviceId"); err != nil || !strings.Contains(out, "deleted") {
		t.Errorf("device delete: %v %s", err, out)
	}
	if _, err := p.cli(t, "device", "get", "myDeviceId"); err == nil || !strings.Contains(err.Error(), "DeviceNotFound") {
		t.Errorf("device get after delete: %v", err)
	}
	if _, err := p.cli(t, "device", "frobnicate"); err == nil {
		t.Errorf("an unknown subcommand succeeded")
	}
}
