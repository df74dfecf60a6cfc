package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twinhub/twinhub/bridge/deviceclient"
	"github.com/twinhub/twinhub/deploy/embedded"
)

// mosquittoBinary is where Debian's mosquitto package installs the broker;
// `make deps` installs it.
const mosquittoBinary = "/usr/sbin/mosquitto"

// mosquitto is a Debian mosquitto broker on a fixed loopback port, run for
// one test. It can be killed and started again on the same port.
type mosquitto struct {
	t    *testing.T
	conf string
	addr string // 127.0.0.1:port
	URL  string // tcp://127.0.0.1:port
	logs *syncBuffer

	// cmd and exited belong to the current process; replaced by start.
	cmd    *exec.Cmd
	exited chan struct{}
}

// startMosquitto writes a configuration for a free loopback port and starts
// mosquitto with it. It skips the test when mosquitto is not installed.
func startMosquitto(t *testing.T) *mosquitto {
	t.Helper()
	if _, err := os.Stat(mosquittoBinary); err != nil {
		t.Skipf("%s is not installed (%v); run `make deps` to install Debian's mosquitto", mosquittoBinary, err)
	}
	m := &mosquitto{t: t, addr: freeLoopbackAddr(t), logs: &syncBuffer{}}
	m.URL = "tcp://" + m.addr
	_, port, _ := net.SplitHostPort(m.addr)
	// No persistence: a restart loses every session and subscription, the
	// hardest case for the bridge. No queue limit: the bridge's persistent
	// session must not lose requests to max_queued_messages under load.
	conf := fmt.Sprintf(`listener %s 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 0
max_inflight_messages 0
log_dest stderr
log_type all
connection_messages true
log_timestamp_format %%H:%%M:%%S
`, port)
	m.conf = filepath.Join(t.TempDir(), "mosquitto.conf")
	if err := os.WriteFile(m.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.kill()
		if t.Failed() {
			t.Logf("mosquitto log:\n%s", m.logs.String())
		}
	})
	return m
}

// freeLoopbackAddr returns a loopback address whose port was free a moment ago.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// start runs mosquitto and returns once it accepts connections, or with an
// error if it exits first (e.g. the port is still taken) or takes too long.
func (m *mosquitto) start() error {
	fmt.Fprintf(m.logs, "--- starting %s -c %s\n", mosquittoBinary, m.conf)
	cmd := exec.Command(mosquittoBinary, "-c", m.conf)
	cmd.Stdout, cmd.Stderr = m.logs, m.logs
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting mosquitto: %w", err)
	}
	exited := make(chan struct{})
	// Reaps the process; exits when mosquitto does.
	go func() {
		cmd.Wait()
		close(exited)
	}()
	m.cmd, m.exited = cmd, exited
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("mosquitto exited before it listened on %s: %v\n%s", m.addr, cmd.ProcessState, m.logs.String())
		default:
		}
		if c, err := net.DialTimeout("tcp", m.addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			m.kill()
			return fmt.Errorf("mosquitto does not accept connections on %s after 10s\n%s", m.addr, m.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// restart starts mosquitto again on the same port, retrying while the old
// socket is not released yet.
func (m *mosquitto) restart() {
	m.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := m.start()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("restarting mosquitto on %s: %v", m.addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits until the process is gone.
func (m *mosquitto) kill() {
	select {
	case <-m.exited:
		return
	default:
	}
	m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.exited
	fmt.Fprintf(m.logs, "--- killed with SIGKILL\n")
}

// dialDevice connects a device to brokerURL (with credentials, when given)
// and closes it when the test ends.
func dialDevice(ctx context.Context, t *testing.T, brokerURL, deviceID string, opts ...deviceclient.Options) *deviceclient.Client {
	t.Helper()
	var o deviceclient.Options
	if len(opts) > 0 {
		o = opts[0]
	}
	dev, err := deviceclient.Dial(ctx, brokerURL, deviceID, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dev.Close)
	return dev
}

// pollGetTwin repeats the device's GET, each try bounded to 2 s, until one
// is answered or timeout passes. A request published before the bridge
// (re)subscribed is dropped by the broker and never answered, so this is how
// a test waits for the bridge to be connected.
func pollGetTwin(t *testing.T, dev *deviceclient.Client, timeout time.Duration) []byte {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tries := 0
	for {
		tries++
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		body, err := dev.GetTwin(ctx)
		cancel()
		if err == nil {
			t.Logf("device GET answered on try %d", tries)
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("device GET not answered within %s (%d tries); last error: %v", timeout, tries, err)
		}
		var de *deviceclient.Error
		if errors.As(err, &de) {
			t.Fatalf("device GET answered with an error: %v", err)
		}
	}
}

// expectDesired waits for the device's next desired notification and checks
// it is exactly {"telemetryConfig":{"sendFrequency":freq},"$version":version}.
func expectDesired(ctx context.Context, t *testing.T, dev *deviceclient.Client, version int64, freq string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	select {
	case n := <-dev.Desired():
		var body map[string]any
		if err := json.Unmarshal(n.Body, &body); err != nil {
			t.Fatalf("desired notification body is not JSON: %v: %s", err, n.Body)
		}
		if n.Version != version || body["$version"] != float64(version) ||
			get(body, "telemetryConfig.sendFrequency") != freq || len(body) != 2 {
			t.Fatalf("desired notification: topic $version %d body %s; want $version %d and sendFrequency %q", n.Version, n.Body, version, freq)
		}
	case <-ctx.Done():
		t.Fatalf("the device did not receive the desired patch with $version %d", version)
	}
}

// checkTwin reads a twin over HTTP and compares the given paths.
func checkTwin(t *testing.T, p *proc, deviceID string, want map[string]any) map[string]any {
	t.Helper()
	r := p.call(t, "GET", "/twins/"+deviceID, "")
	if r.Status != 200 {
		t.Fatalf("GET /twins/%s: %d %s", deviceID, r.Status, r.Body)
	}
	tw := r.json(t)
	for path, v := range want {
		if got := get(tw, path); got != v {
			t.Errorf("twin of %s on %s: %s = %v, want %v\n%s", deviceID, p.HTTP, path, got, v, r.Body)
		}
	}
	return tw
}

// hubTopicWarning is what the service logs when a client publishes on a
// hub → device topic. Through an external broker the bridge receives its
// own responses and notifications back (its shared subscription matches
// them); those must not be mistaken for a misbehaving client.
const hubTopicWarning = "a client published on a hub topic"

// TestExternalMosquitto runs the seed flow through Debian's mosquitto with
// twinhub bridging it: the device reads its twin and reports connectivity
// (acknowledged with reported $version 2), and a desired patch made over
// HTTP reaches the device as $version 2. The twin read over HTTP shows both.
func TestExternalMosquitto(t *testing.T) {
	m := startMosquitto(t)
	p := startTwinhub(t, "", "--mqtt-url", m.URL, "--bridge-client-id", "twinhub-e2e-bridge")
	if p.MQTT != "" {
		t.Errorf("with --mqtt-url twinhub must not embed a broker, yet it logged one at %s", p.MQTT)
	}
	// Devices there are the broker's to authenticate: twinhub says so, loudly.
	if !strings.Contains(p.logs.String(), `level=WARN msg="MQTT is TRANSPORT ONLY with --mqtt-url: the external broker authenticates devices`) {
		t.Errorf("with --mqtt-url twinhub does not warn that MQTT is transport only")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	if r := p.call(t, "PUT", "/devices/extDevice?api-version=2021-04-12", `{"deviceId":"extDevice"}`); r.Status != 200 {
		t.Fatalf("create device: %d %s", r.Status, r.Body)
	}
	dev := dialDevice(ctx, t, m.URL, "extDevice")
	if body := pollGetTwin(t, dev, 30*time.Second); string(body) != `{"desired":{"$version":1},"reported":{"$version":1}}` {
		t.Fatalf("device GET: %s", body)
	}
	v, err := dev.Report(ctx, []byte(`{"connectivity":{"type":"cellular"}}`))
	if err != nil || v != 2 {
		t.Fatalf("reported patch through mosquitto: version %d, %v", v, err)
	}
	// Read-your-writes: the 204 came after the processor applied the patch.
	checkTwin(t, p, "extDevice", map[string]any{
		"version":                               3.0,
		"properties.reported.$version":          2.0,
		"properties.reported.connectivity.type": "cellular",
	})

	r := p.call(t, "PATCH", "/twins/extDevice", `{"properties":{"desired":{"telemetryConfig":{"sendFrequency":"5m"}}}}`, "If-Match", `"*"`)
	if r.Status != 200 {
		t.Fatalf("desired patch: %d %s", r.Status, r.Body)
	}
	expectDesired(ctx, t, dev, 2, "5m")

	checkTwin(t, p, "extDevice", map[string]any{
		"deviceId":                    "extDevice",
		"version":                     4.0,
		"etag":                        "AAAAAAAAAAI=",
		"properties.desired.$version": 2.0,
		"properties.desired.telemetryConfig.sendFrequency": "5m",
		"properties.reported.$version":                     2.0,
		"properties.reported.connectivity.type":            "cellular",
	})
	// The device reads the same twin.
	body, err := dev.GetTwin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var tw map[string]any
	if err := json.Unmarshal(body, &tw); err != nil || get(tw, "desired.$version") != 2.0 ||
		get(tw, "reported.$version") != 2.0 || get(tw, "desired.telemetryConfig.sendFrequency") != "5m" {
		t.Fatalf("device GET after the changes: %s", body)
	}
	if n := strings.Count(p.logs.String(), hubTopicWarning); n != 0 {
		t.Errorf("twinhub logged %q %d times: the bridge treats its own responses, which the broker sends back to it, as a misbehaving client", hubTopicWarning, n)
	}
}

// TestExternalMosquittoRestart kills mosquitto with SIGKILL while twinhub
// bridges it and starts it again on the same port, without persistence, so
// the broker forgets the bridge's session and subscription. Without any help
// the bridge must reconnect and subscribe again: a new device connection has
// its GET answered within 30 s, its report is acknowledged with the next
// version, and desired notifications reach it.
func TestExternalMosquittoRestart(t *testing.T) {
	m := startMosquitto(t)
	p := startTwinhub(t, "", "--mqtt-url", m.URL, "--bridge-client-id", "twinhub-e2e-bridge")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if r := p.call(t, "PUT", "/devices/restartDevice", ""); r.Status != 200 {
		t.Fatalf("create device: %d %s", r.Status, r.Body)
	}
	before := dialDevice(ctx, t, m.URL, "restartDevice")
	pollGetTwin(t, before, 30*time.Second)
	if v, err := before.Report(ctx, []byte(`{"phase":"before"}`)); err != nil || v != 2 {
		t.Fatalf("report before the restart: version %d, %v", v, err)
	}
	connectedRe := regexp.MustCompile(`msg="bridge connected to the MQTT broker"`)
	if n := len(connectedRe.FindAllString(p.logs.String(), -1)); n != 1 {
		t.Fatalf("bridge connected %d times before the restart, want 1", n)
	}

	m.kill()
	// The old connection would reconnect with the same client ID and take
	// the session over from the new one.
	before.Close()
	waitFor(t, 30*time.Second, "twinhub to notice the broker is gone", func() bool {
		return strings.Contains(p.logs.String(), "bridge lost the MQTT broker")
	})
	m.restart()
	restarted := time.Now()

	after := dialDevice(ctx, t, m.URL, "restartDevice")
	body := pollGetTwin(t, after, 30*time.Second)
	t.Logf("device GET answered %s after mosquitto restarted", time.Since(restarted).Round(time.Millisecond))
	var tw map[string]any
	if err := json.Unmarshal(body, &tw); err != nil || get(tw, "reported.phase") != "before" || get(tw, "reported.$version") != 2.0 {
		t.Fatalf("device GET after the restart: %s", body)
	}
	if v, err := after.Report(ctx, []byte(`{"phase":"after"}`)); err != nil || v != 3 {
		t.Fatalf("report after the restart: version %d, %v", v, err)
	}
	r := p.call(t, "PATCH", "/twins/restartDevice", `{"properties":{"desired":{"telemetryConfig":{"sendFrequency":"1m"}}}}`, "If-Match", `"*"`)
	if r.Status != 200 {
		t.Fatalf("desired patch: %d %s", r.Status, r.Body)
	}
	expectDesired(ctx, t, after, 2, "1m")
	checkTwin(t, p, "restartDevice", map[string]any{
		"version":                                          5.0,
		"properties.reported.$version":                     3.0,
		"properties.reported.phase":                        "after",
		"properties.desired.$version":                      2.0,
		"properties.desired.telemetryConfig.sendFrequency": "1m",
	})
	if n := len(connectedRe.FindAllString(p.logs.String(), -1)); n < 2 {
		t.Errorf("bridge logged %d connects, want at least 2 (one after the restart)", n)
	}
	select {
	case <-p.exited:
		t.Fatalf("twinhub exited while the broker was down: %v", p.exitErr)
	default:
	}
}

// TestExternalNATSAndTwoInstances runs two twinhub instances on one
// JetStream: A embeds NATS, B uses A's through --nats-url and embeds its own
// MQTT broker. A change made through one instance is visible through the
// other as soon as it is acknowledged, etags work across them, and while
// devices report through both brokers at once, and both processors pull
// from the same partition consumers, every device's acknowledged reported
// versions run 2, 3, … without gaps or repeats and the twin ends at the last
// acknowledged one.
func TestExternalNATSAndTwoInstances(t *testing.T) {
	a := startTwinhub(t, "")
	// B authenticates as twinhub's own user of A's NATS, and never logs its password.
	natsURL := a.natsURL(t, embedded.InternalNATSUser)
	b := startTwinhub(t, "", "--nats-url", natsURL)
	u, _ := url.Parse(natsURL)
	if pw, _ := u.User.Password(); strings.Contains(b.logs.String(), pw) {
		t.Error("B logged the password of --nats-url")
	}
	if b.NATS != "" {
		t.Errorf("with --nats-url twinhub must not embed NATS, yet it logged one at %s", b.NATS)
	}
	if b.MQTT == "" || b.MQTT == a.MQTT {
		t.Fatalf("instance B must embed its own MQTT broker: A %q, B %q", a.MQTT, b.MQTT)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()

	// One device across both instances.
	if r := a.call(t, "PUT", "/devices/shared", ""); r.Status != 200 {
		t.Fatalf("create device through A: %d %s", r.Status, r.Body)
	}
	if r := b.call(t, "GET", "/devices/shared", ""); r.Status != 200 {
		t.Fatalf("B does not see the device A created: %d %s", r.Status, r.Body)
	}
	dev := dialDevice(ctx, t, b.MQTT, "shared", b.deviceOptions(t, "shared"))
	if v, err := dev.Report(ctx, []byte(`{"connectivity":{"type":"cellular"}}`)); err != nil || v != 2 {
		t.Fatalf("report through B's broker: version %d, %v", v, err)
	}
	tw := checkTwin(t, a, "shared", map[string]any{
		"version":                               3.0,
		"etag":                                  "AAAAAAAAAAE=", // reported changes leave the etag alone
		"properties.reported.$version":          2.0,
		"properties.reported.connectivity.type": "cellular",
	})
	etagA, _ := tw["etag"].(string)
	r := b.call(t, "PATCH", "/twins/shared", `{"properties":{"desired":{"mode":"eco"}}}`, "If-Match", strconv.Quote(etagA))
	if r.Status != 200 {
		t.Fatalf("desired patch through B with A's etag: %d %s", r.Status, r.Body)
	}
	patched := r.json(t)
	if patched["version"] != 4.0 || patched["etag"] != "AAAAAAAAAAI=" || get(patched, "properties.desired.$version") != 2.0 {
		t.Errorf("B's answer to the desired patch: %s", r.Body)
	}
	for _, p := range []*proc{a, b} {
		checkTwin(t, p, "shared", map[string]any{
			"version":                      4.0,
			"etag":                         "AAAAAAAAAAI=",
			"properties.desired.$version":  2.0,
			"properties.desired.mode":      "eco",
			"properties.reported.$version": 2.0,
		})
	}
	if r := a.call(t, "PATCH", "/twins/shared", `{"tags":{"x":1}}`, "If-Match", strconv.Quote(etagA)); r.Status != 412 {
		t.Errorf("A accepted the etag B's patch replaced: %d %s", r.Status, r.Body)
	}
	// Desired changes reach the device whichever instance took them: each
	// instance's notifier serves the devices on its own broker.
	for i, hub := range []*proc{b, a, a, b} {
		if r := hub.call(t, "PATCH", "/twins/shared", fmt.Sprintf(`{"properties":{"desired":{"n":%d}}}`, i)); r.Status != 200 {
			t.Fatalf("desired patch %d: %d %s", i, r.Status, r.Body)
		}
	}
	got := map[int64]bool{}
	for len(got) < 5 {
		select {
		case n := <-dev.Desired():
			got[n.Version] = true
		case <-ctx.Done():
			t.Fatalf("the device on B received desired versions %v, want 2 to 6", got)
		}
	}
	for v := int64(2); v <= 6; v++ {
		if !got[v] {
			t.Errorf("desired version %d never reached the device on B (got %v)", v, got)
		}
	}
	body, err := dev.GetTwin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(body, &tw); err != nil || get(tw, "desired.mode") != "eco" || get(tw, "desired.$version") != 6.0 {
		t.Errorf("device GET through B after the patch: %s", body)
	}

	// Many devices reporting through both brokers at once.
	const devices = 20
	brokers := []string{a.MQTT, b.MQTT}
	hubs := []*proc{a, b}
	devs := make([]*deviceclient.Client, devices)
	for i := range devices {
		id := fmt.Sprintf("both-%02d", i)
		if r := hubs[i%2].call(t, "PUT", "/devices/"+id, ""); r.Status != 200 {
			t.Fatalf("create %s: %d %s", id, r.Status, r.Body)
		}
		// The device talks to the other instance than the one that created it.
		devs[i] = dialDevice(ctx, t, brokers[(i+1)%2], id, hubs[(i+1)%2].deviceOptions(t, id))
	}
	appliedBefore := [2]int{scrapeApplied(t, a), scrapeApplied(t, b)}
	acked := make([][]int64, devices) // reported versions in the order acknowledged
	failures := make([]error, devices)
	slowest := make([]time.Duration, devices)
	var wg sync.WaitGroup
	stop := time.Now().Add(time.Second)
	for i := range devices {
		wg.Add(1)
		// Reports one patch at a time until stop, or until a report fails.
		go func() {
			defer wg.Done()
			for seq := 0; time.Now().Before(stop); seq++ {
				rctx, rcancel := context.WithTimeout(ctx, 15*time.Second)
				start := time.Now()
				v, err := devs[i].Report(rctx, []byte(fmt.Sprintf(`{"seq":%d}`, seq)))
				rcancel()
				slowest[i] = max(slowest[i], time.Since(start))
				if err != nil {
					failures[i] = fmt.Errorf("report seq %d: %w", seq, err)
					return
				}
				acked[i] = append(acked[i], v)
			}
		}()
	}
	wg.Wait()
	total := 0
	var slowestAll time.Duration
	for i := range devices {
		slowestAll = max(slowestAll, slowest[i])
		id := fmt.Sprintf("both-%02d", i)
		total += len(acked[i])
		if failures[i] != nil {
			// The failed patch may or may not be applied: only bounds hold.
			t.Errorf("%s: %v", id, failures[i])
		}
		for k, v := range acked[i] {
			if v != int64(k)+2 {
				t.Errorf("%s: acknowledged reported versions %v; want 2, 3, … without gaps or repeats", id, acked[i])
				break
			}
		}
		if len(acked[i]) == 0 {
			t.Errorf("%s: no report was acknowledged in a second", id)
			continue
		}
		if failures[i] != nil {
			continue
		}
		n := len(acked[i])
		for _, p := range hubs {
			checkTwin(t, p, id, map[string]any{
				"properties.reported.$version": float64(n + 1),
				"properties.reported.seq":      float64(n - 1),
				"version":                      float64(n + 2), // created at 2
			})
		}
	}
	applied := [2]int{scrapeApplied(t, a) - appliedBefore[0], scrapeApplied(t, b) - appliedBefore[1]}
	t.Logf("%d reported patches acknowledged, the slowest in %s; applied by A's processor %d, by B's %d",
		total, slowestAll.Round(time.Millisecond), applied[0], applied[1])
	if applied[0]+applied[1] != total && !t.Failed() {
		t.Errorf("processors applied %d reported patches, devices got %d acknowledgements", applied[0]+applied[1], total)
	}
	if applied[0] == 0 || applied[1] == 0 {
		t.Errorf("both processors should have applied commands from the shared partition consumers: A %d, B %d", applied[0], applied[1])
	}
}

var appliedReportsRe = regexp.MustCompile(`(?m)^twinhub_pipeline_commands_total\{kind="patchReported",outcome="applied"\} (\d+)`)

// scrapeApplied returns how many reported patches the instance's own
// processor applied, from its /metrics.
func scrapeApplied(t *testing.T, p *proc) int {
	t.Helper()
	resp, err := http.Get(p.HTTP + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s/metrics: %v", p.HTTP, err)
	}
	m := appliedReportsRe.FindSubmatch(body)
	if m == nil {
		t.Fatalf("%s/metrics has no applied patchReported counter", p.HTTP)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// TestExternalMosquittoTwoBridges runs two instances on one NATS, each
// bridging the same mosquitto with its own client ID: the shared
// subscription splits the device traffic between the two bridges, every
// request is answered exactly once, and no patch is lost or doubled.
func TestExternalMosquittoTwoBridges(t *testing.T) {
	m := startMosquitto(t)
	a := startTwinhub(t, "", "--mqtt-url", m.URL, "--bridge-client-id", "bridge-a")
	b := startTwinhub(t, "", "--mqtt-url", m.URL, "--bridge-client-id", "bridge-b", "--nats-url", a.natsURL(t, embedded.InternalNATSUser))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const devices = 8
	devs := make([]*deviceclient.Client, devices)
	for i := range devs {
		id := fmt.Sprintf("twob-%d", i)
		if r := a.call(t, "PUT", "/devices/"+id, ""); r.Status != 200 {
			t.Fatalf("create: %d %s", r.Status, r.Body)
		}
		devs[i] = dialDevice(ctx, t, m.URL, id)
		pollGetTwin(t, devs[i], 30*time.Second)
	}
	const reports = 25
	for i, d := range devs {
		for n := 1; n <= reports; n++ {
			v, err := d.Report(ctx, []byte(fmt.Sprintf(`{"n":%d}`, n)))
			if err != nil || v != int64(n+1) {
				t.Fatalf("device %d report %d: version %d, %v", i, n, v, err)
			}
		}
	}
	var total [2]int
	for i, p := range []*proc{a, b} {
		for _, line := range strings.Split(string(p.call(t, "GET", "/metrics", "").Body), "\n") {
			if v, ok := strings.CutPrefix(line, `twinhub_mqtt_requests_total{operation="patch_reported",result="ok"} `); ok {
				total[i], _ = strconv.Atoi(v)
			}
		}
	}
	if total[0]+total[1] != devices*reports || total[0] == 0 || total[1] == 0 {
		t.Errorf("bridges answered %d and %d reported patches; want both > 0 and %d in all", total[0], total[1], devices*reports)
	}
	for i := range devs {
		checkTwin(t, a, fmt.Sprintf("twob-%d", i), map[string]any{"properties.reported.n": float64(reports), "properties.reported.$version": float64(reports + 1)})
	}
}
