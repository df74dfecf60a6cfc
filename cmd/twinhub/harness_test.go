package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twinhub/twinhub/bridge/deviceclient"
	"github.com/twinhub/twinhub/bridge/sas"
)

// binary is the twinhub executable the end-to-end tests drive, built once.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "twinhub-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "twinhub")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building twinhub: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running `twinhub run` process on random loopback ports.
type proc struct {
	t       *testing.T
	cmd     *exec.Cmd
	dataDir string
	args    []string
	HTTP    string // http://127.0.0.1:port
	MQTT    string // tcp://127.0.0.1:port
	NATS    string // nats://127.0.0.1:port
	logs    *syncBuffer
	owner   string // iothubowner's primary key; empty with --auth=false
	exited  chan struct{}
	exitErr error
	ready   chan struct{} // closed when the process logged that it is ready
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var (
	readyRe = regexp.MustCompile(`msg="twinhub is ready" http=(\S+)`)
	mqttRe  = regexp.MustCompile(`msg="embedded MQTT broker listening" addr=(\S+)`)
	natsRe  = regexp.MustCompile(`msg="embedded NATS with JetStream started" url=(\S+)`)
)

// startTwinhub runs twinhub with a data directory (a fresh one if empty)
// and extra flags, and waits until /healthz answers 200.
func startTwinhub(t *testing.T, dataDir string, extra ...string) *proc {
	t.Helper()
	p := launchTwinhub(t, dataDir, extra...)
	p.waitReady(60 * time.Second)
	return p
}

// launchTwinhub starts twinhub like startTwinhub without waiting for it.
func launchTwinhub(t *testing.T, dataDir string, extra ...string) *proc {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	args := append([]string{"run", "--data-dir", dataDir, "--http-addr", "127.0.0.1:0",
		"--mqtt-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0", "--mqtts-addr", "127.0.0.1:0",
		"--https-addr", "127.0.0.1:0", "--partitions", "4"}, extra...)
	p := &proc{t: t, dataDir: dataDir, args: args, logs: &syncBuffer{}, exited: make(chan struct{}), ready: make(chan struct{})}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = append(os.Environ(), "TWINHUB_LOG_LEVEL=info")
	pr, pw := io.Pipe()
	p.cmd.Stderr = pw
	p.cmd.Stdout = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Copies the process's log until it exits.
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		closed := false
		for sc.Scan() {
			line := sc.Text()
			p.logs.Write([]byte(line + "\n"))
			if m := mqttRe.FindStringSubmatch(line); m != nil {
				p.MQTT = "tcp://" + m[1]
			}
			if m := natsRe.FindStringSubmatch(line); m != nil {
				p.NATS = m[1]
			}
			if m := readyRe.FindStringSubmatch(line); m != nil && !closed {
				p.HTTP = "http://" + m[1]
				closed = true
				close(p.ready)
			}
		}
	}()
	// Reaps the process.
	go func() {
		p.exitErr = p.cmd.Wait()
		pw.Close()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("twinhub log:\n%s", p.logs.String())
		}
	})
	return p
}

// waitReady waits until the process is ready and /healthz answers 200.
func (p *proc) waitReady(timeout time.Duration) {
	t := p.t
	t.Helper()
	select {
	case <-p.ready:
	case <-p.exited:
		t.Fatalf("twinhub exited before it was ready: %v\n%s", p.exitErr, p.logs.String())
	case <-time.After(timeout):
		t.Fatalf("twinhub not ready after %s\n%s", timeout, p.logs.String())
	}
	if ps, err := sas.LoadPolicies(filepath.Join(p.dataDir, "policies.json")); err == nil {
		if owner, ok := ps.Get(sas.OwnerPolicy); ok {
			p.owner = owner.PrimaryKey
		}
	}
	waitFor(t, 30*time.Second, "healthz 200", func() bool {
		resp, err := http.Get(p.HTTP + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// kill sends SIGKILL and waits for the process to go.
func (p *proc) kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop() {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		if p.exitErr != nil {
			p.t.Errorf("twinhub exited with %v after SIGTERM", p.exitErr)
		}
	case <-time.After(30 * time.Second):
		p.t.Errorf("twinhub did not exit within 30s of SIGTERM")
		p.kill()
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// httpResp is a response of the back-end API.
type httpResp struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r httpResp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("response body is not a JSON object: %v: %s", err, r.Body)
	}
	return m
}

// ownerToken is a SAS token of the iothubowner policy.
func (p *proc) ownerToken(t *testing.T) string {
	t.Helper()
	tok, err := sas.New("localhost", p.owner, sas.OwnerPolicy, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// deviceKey returns a device's primary key, read through the registry API.
func (p *proc) deviceKey(t *testing.T, deviceID string) string {
	t.Helper()
	r := p.call(t, "GET", "/devices/"+deviceID, "")
	if r.Status != 200 {
		t.Fatalf("reading device %s: %d %s", deviceID, r.Status, r.Body)
	}
	key, _ := get(r.json(t), "authentication.symmetricKey.primaryKey").(string)
	return key
}

// deviceOptions returns MQTT credentials for a device: user name = device
// ID, password = a SAS token signed with its primary key.
func (p *proc) deviceOptions(t *testing.T, deviceID string) deviceclient.Options {
	t.Helper()
	tok, err := sas.New(sas.DeviceResource("localhost", deviceID), p.deviceKey(t, deviceID), "", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return deviceclient.Options{Username: deviceID, Password: tok}
}

// dialDevice connects a device to the embedded broker with its credentials.
func (p *proc) dialDevice(t *testing.T, ctx context.Context, deviceID string) (*deviceclient.Client, error) {
	t.Helper()
	return deviceclient.Dial(ctx, p.MQTT, deviceID, p.deviceOptions(t, deviceID))
}

// call makes an API request signed with the owner policy (pass an
// "Authorization" header to override, "" for none); body may be empty.
func (p *proc) call(t *testing.T, method, path string, body string, header ...string) httpResp {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, p.HTTP+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if p.owner != "" {
		req.Header.Set("Authorization", p.ownerToken(t))
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return httpResp{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// get walks a path like "properties.reported.$version" into a JSON document.
func get(doc map[string]any, path string) any {
	var cur any = doc
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

func regexpFind(t *testing.T, s, expr string) string {
	t.Helper()
	m := regexp.MustCompile(expr).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("%q not found in:\n%s", expr, s)
	}
	return m[1]
}
