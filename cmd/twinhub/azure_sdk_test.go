package main

// Compatibility tests with the unmodified Azure IoT Node.js SDKs
// (azure-iot-device 1.18.4 + azure-iot-device-mqtt 1.16.4 on the device side,
// azure-iothub 1.16.6 on the back end; pinned in testdata/azure-sdk) against
// a real `twinhub run`. The scripts in testdata/azure-sdk print one JSON
// object per line, or exit non-zero with a message on stderr.
//
// The service SDK only speaks HTTPS on port 443, so these tests run the hub
// with --https-addr 127.0.0.1:443 (one test at a time) and need root or
// CAP_NET_BIND_SERVICE. Devices reach the random MQTTS port through
// GatewayHostName, and both SDKs trust the hub's local CA through
// NODE_EXTRA_CA_CERTS, as a user moving from Azure IoT Hub would set them.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// sdkDir holds the scripts, package.json and package-lock.json.
const sdkDir = "testdata/azure-sdk"

var (
	// port443 keeps tests that bind 127.0.0.1:443 from overlapping.
	port443 sync.Mutex
	// npmOnce installs node_modules at most once per test binary.
	npmOnce sync.Once
	npmErr  error
)

// sdkUnavailable skips a test whose prerequisites (Node.js, npm packages,
// port 443) this machine lacks, and fails it in CI, where they must be there.
func sdkUnavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// requireAzureSDK makes sure node runs and the pinned SDKs are installed,
// running `npm ci` when node_modules is missing (`make deps` does the same).
func requireAzureSDK(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		sdkUnavailable(t, "node is not installed: install Node.js 20 and npm to run the Azure SDK compatibility tests")
	}
	npmOnce.Do(func() {
		installed := true
		for _, pkg := range []string{"azure-iot-device", "azure-iot-device-mqtt", "azure-iothub"} {
			if _, err := os.Stat(filepath.Join(sdkDir, "node_modules", pkg, "package.json")); err != nil {
				installed = false
			}
		}
		if installed {
			return
		}
		if _, err := exec.LookPath("npm"); err != nil {
			npmErr = fmt.Errorf("npm is not installed: install npm, or run `make deps`")
			return
		}
		out, err := exec.Command("npm", "ci", "--prefix", sdkDir, "--no-audit", "--no-fund").CombinedOutput()
		if err != nil {
			npmErr = fmt.Errorf("npm ci --prefix %s: %v\n%s", sdkDir, err, out)
		}
	})
	if npmErr != nil {
		sdkUnavailable(t, "the Azure SDKs are not installed: %v", npmErr)
	}
}

// azureHub is a `twinhub run` that the Azure SDKs can reach: HTTPS on
// 127.0.0.1:443, MQTTS on a random port that stays the same across restarts
// (extra flags, such as another --mqtts-addr, go to twinhub run).
type azureHub struct {
	*proc
	mqttsPort string
	ca        string // the local CA, for NODE_EXTRA_CA_CERTS
}

func startAzureHub(t *testing.T, extra ...string) *azureHub {
	t.Helper()
	requireAzureSDK(t)
	port443.Lock()
	t.Cleanup(port443.Unlock) // registered first, so it runs after the hub is gone
	ln, err := net.Listen("tcp", "127.0.0.1:443")
	if err != nil {
		sdkUnavailable(t, "cannot listen on 127.0.0.1:443 (%v): the Azure service SDK only speaks port 443: free the port, and run the tests as root or with CAP_NET_BIND_SERVICE", err)
	}
	ln.Close()
	p := startTwinhub(t, "", append([]string{"--https-addr", "127.0.0.1:443"}, extra...)...)
	h := &azureHub{proc: p, ca: filepath.Join(p.dataDir, "tls", "ca.pem")}
	_, h.mqttsPort, _ = strings.Cut(regexpFind(t, p.logs.String(), `tls_addr=(\S+)`), ":")
	return h
}

// restart stops the hub cleanly and starts it again on the same data
// directory and MQTTS port, which drops every device connection.
func (h *azureHub) restart(t *testing.T) {
	t.Helper()
	h.stop()
	h.proc = startTwinhub(t, h.dataDir, "--https-addr", "127.0.0.1:443", "--mqtts-addr", "127.0.0.1:"+h.mqttsPort)
}

// cli runs a twinhub client command against the hub and returns its output.
func (h *azureHub) cli(t *testing.T, args ...string) string {
	t.Helper()
	args = append(args, "--server", h.HTTP, "--data-dir", h.dataDir)
	out, err := exec.Command(binary, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("twinhub %s: %v\n%s", strings.Join(args, " "), err, stderr)
	}
	return strings.TrimSpace(string(out))
}

// serviceCS is iothubowner's connection string, as `twinhub connection-string` prints it.
func (h *azureHub) serviceCS(t *testing.T) string {
	t.Helper()
	return h.cli(t, "connection-string")
}

// deviceCS is a device's connection string with GatewayHostName pointing at
// the MQTTS port, as `twinhub connection-string --device` prints it.
func (h *azureHub) deviceCS(t *testing.T, deviceID string) string {
	t.Helper()
	return h.cli(t, "connection-string", "--device", deviceID, "--gateway", "localhost:"+h.mqttsPort)
}

// createDevice creates a device over the HTTP API.
func (h *azureHub) createDevice(t *testing.T, deviceID string) {
	t.Helper()
	if r := h.call(t, "PUT", "/devices/"+deviceID, ""); r.Status != 200 {
		t.Fatalf("creating %s: %d %s", deviceID, r.Status, r.Body)
	}
}

// twin reads a twin over the HTTP API.
func (h *azureHub) twin(t *testing.T, deviceID string) map[string]any {
	t.Helper()
	r := h.call(t, "GET", "/twins/"+deviceID, "")
	if r.Status != 200 {
		t.Fatalf("reading twin %s: %d %s", deviceID, r.Status, r.Body)
	}
	return r.json(t)
}

// requireQueryAPI fails fast, with a clear message, when the hub does not
// answer POST /devices/query (the catch-all 404 NotFound).
func (h *azureHub) requireQueryAPI(t *testing.T) {
	t.Helper()
	r := h.call(t, "POST", "/devices/query", `{"query":"SELECT * FROM devices"}`, "Content-Type", "application/json")
	if r.Status == http.StatusNotFound && r.Header.Get("iothub-errorcode") == "NotFound" {
		t.Fatal("the hub has no POST /devices/query")
	}
}

// nodeEnv is the environment of a script: the caller's, minus anything that
// would weaken TLS checks, plus the CA and the connection strings.
func (h *azureHub) nodeEnv(vars ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "NODE_TLS_REJECT_UNAUTHORIZED", "NODE_EXTRA_CA_CERTS", "NODE_OPTIONS", "DEBUG":
			continue
		}
		env = append(env, kv)
	}
	return append(append(env, "NODE_EXTRA_CA_CERTS="+h.ca), vars...)
}

// sdkEvent is one JSON line a script printed.
type sdkEvent map[string]any

func (e sdkEvent) name() string { s, _ := e["event"].(string); return s }

func (e sdkEvent) String() string { b, _ := json.Marshal(e); return string(b) }

// sameJSON reports whether a decoded JSON value equals the JSON text want.
func sameJSON(t *testing.T, got any, want string) bool {
	t.Helper()
	var w any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("BUG: bad JSON in the test: %s", want)
	}
	return reflect.DeepEqual(got, w)
}

func parseEvents(t *testing.T, out []byte) []sdkEvent {
	t.Helper()
	var evs []sdkEvent
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line == "" {
			continue
		}
		var e sdkEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("script printed a line that is not JSON: %q", line)
		}
		evs = append(evs, e)
	}
	return evs
}

// runScript runs a script to its end and returns the events it printed,
// failing the test with its stderr if it exits non-zero.
func (h *azureHub) runScript(t *testing.T, env []string, script string, args ...string) []sdkEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", append([]string{filepath.Join(sdkDir, script)}, args...)...)
	cmd.Env = h.nodeEnv(env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("node %s %s: %v\nstderr:\n%s\nstdout:\n%s", script, strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	t.Logf("node %s %s: %s", script, strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	return parseEvents(t, stdout.Bytes())
}

// findEvents returns the events with a name.
func findEvents(evs []sdkEvent, name string) []sdkEvent {
	var out []sdkEvent
	for _, e := range evs {
		if e.name() == name {
			out = append(out, e)
		}
	}
	return out
}

// oneEvent returns the only event with a name.
func oneEvent(t *testing.T, evs []sdkEvent, name string) sdkEvent {
	t.Helper()
	found := findEvents(evs, name)
	if len(found) != 1 {
		t.Fatalf("want one %q event, got %d in %v", name, len(found), evs)
	}
	return found[0]
}

// queryIDs returns the device IDs of the add_tags_and_query.js query named name.
func queryIDs(t *testing.T, evs []sdkEvent, name string) []any {
	t.Helper()
	for _, e := range findEvents(evs, "query") {
		if e["name"] == name {
			ids, _ := e["ids"].([]any)
			if ids == nil {
				ids = []any{}
			}
			return ids
		}
	}
	t.Fatalf("no result of query %s in %v", name, evs)
	return nil
}

// nodeProc is a long-running script: events arrive on a channel, commands
// go to its stdin.
type nodeProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan sdkEvent
	stderr *syncBuffer
	seen   []sdkEvent // every event read so far, for failure messages
	done   chan struct{}
	err    error
}

func (h *azureHub) startScript(t *testing.T, env []string, script string, args ...string) *nodeProc {
	t.Helper()
	n := &nodeProc{events: make(chan sdkEvent, 256), stderr: &syncBuffer{}, done: make(chan struct{})}
	n.cmd = exec.Command("node", append([]string{filepath.Join(sdkDir, script)}, args...)...)
	n.cmd.Env = h.nodeEnv(env...)
	n.cmd.Stderr = n.stderr
	var err error
	if n.stdin, err = n.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := n.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Reads stdout until the process closes it, then reaps the process.
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var e sdkEvent
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				e = sdkEvent{"event": "notJSON", "line": sc.Text()}
			}
			n.events <- e
		}
		n.err = n.cmd.Wait()
		close(n.events)
		close(n.done)
	}()
	t.Cleanup(func() {
		select {
		case <-n.done:
		default:
			n.cmd.Process.Kill()
			<-n.done
		}
	})
	return n
}

// next returns the next event whose name is one of names; others are kept
// in seen. It fails the test on a timeout or if the script exits.
func (n *nodeProc) next(t *testing.T, timeout time.Duration, names ...string) sdkEvent {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case e, ok := <-n.events:
			if !ok {
				t.Fatalf("the script exited (%v) while waiting for %v; events: %v\nstderr:\n%s", n.err, names, n.seen, n.stderr.String())
			}
			n.seen = append(n.seen, e)
			if e.name() == "error" || e.name() == "notJSON" {
				t.Errorf("script reported %v", e)
			}
			if slices.Contains(names, e.name()) {
				return e
			}
		case <-deadline:
			t.Fatalf("no %v event within %s; events: %v\nstderr:\n%s", names, timeout, n.seen, n.stderr.String())
		}
	}
}

// send writes a command line to the script.
func (n *nodeProc) send(t *testing.T, command string) {
	t.Helper()
	if _, err := io.WriteString(n.stdin, command+"\n"); err != nil {
		t.Fatalf("sending %q to the script: %v", command, err)
	}
}

// wait waits for the script to exit and fails the test unless it exited 0.
func (n *nodeProc) wait(t *testing.T) {
	t.Helper()
	for {
		select {
		case e, ok := <-n.events:
			if !ok {
				if n.err != nil {
					t.Fatalf("the script exited with %v\nstderr:\n%s", n.err, n.stderr.String())
				}
				return
			}
			n.seen = append(n.seen, e)
		case <-time.After(20 * time.Second):
			t.Fatalf("the script did not exit within 20s; events: %v", n.seen)
		}
	}
}

// TestAzureSDKHowTo runs Microsoft's device-twin how-to with the unmodified
// SDKs: the service app (AddTagsAndQuery) tags myDeviceId with the etag it
// read and runs the how-to's two queries, which find the device by plant
// but not yet by connectivity; the device app (ReportConnectivity) reads its
// twin and reports cellular connectivity over MQTTS; the service app run
// again finds the device with both queries; the twin over HTTP shows it all.
func TestAzureSDKHowTo(t *testing.T) {
	h := startAzureHub(t)
	h.requireQueryAPI(t)
	h.createDevice(t, "myDeviceId")
	h.createDevice(t, "otherDevice") // must not match the queries
	svc := []string{"SERVICE_CONNECTION_STRING=" + h.serviceCS(t)}
	dev := []string{"DEVICE_CONNECTION_STRING=" + h.deviceCS(t, "myDeviceId")}

	evs := h.runScript(t, svc, "add_tags_and_query.js", "myDeviceId")
	tagged := oneEvent(t, evs, "tagged")
	if tagged["deviceId"] != "myDeviceId" || tagged["etagBefore"] != "AAAAAAAAAAE=" || tagged["etag"] == tagged["etagBefore"] ||
		!sameJSON(t, tagged["tags"], `{"location":{"region":"US","plant":"Redmond43"}}`) {
		t.Errorf("twin.update of the tags: %v", tagged)
	}
	if ids := queryIDs(t, evs, "plant"); !sameJSON(t, ids, `["myDeviceId"]`) {
		t.Errorf("first run, query by plant: %v, want [myDeviceId]", ids)
	}
	if ids := queryIDs(t, evs, "plantCellular"); len(ids) != 0 {
		t.Errorf("first run, query by plant and cellular: %v, want none (the device has not reported)", ids)
	}

	evs = h.runScript(t, dev, "report_connectivity.js")
	if tw := oneEvent(t, evs, "twin"); !sameJSON(t, tw["desired"], `{"$version":1}`) || !sameJSON(t, tw["reported"], `{"$version":1}`) {
		t.Errorf("device getTwin: %v", tw)
	}
	oneEvent(t, evs, "reported")

	evs = h.runScript(t, svc, "add_tags_and_query.js", "myDeviceId")
	for _, q := range []string{"plant", "plantCellular"} {
		if ids := queryIDs(t, evs, q); !sameJSON(t, ids, `["myDeviceId"]`) {
			t.Errorf("second run, query %s: %v, want [myDeviceId]", q, ids)
		}
	}

	tw := h.twin(t, "myDeviceId")
	if !sameJSON(t, tw["tags"], `{"location":{"region":"US","plant":"Redmond43"}}`) ||
		get(tw, "properties.reported.connectivity.type") != "cellular" || get(tw, "properties.reported.$version") != 2.0 {
		t.Errorf("twin after the how-to: %v", tw)
	}
}

// TestAzureSDKDesiredListeners: a device listening on 'properties.desired',
// on the subtree 'properties.desired.climate' and on the leaf
// 'properties.desired.climate.hvac.systemControl' receives the back end's
// twin.update patches as the SDK's events, each with the patch's $version;
// and it keeps receiving them after the hub drops its connection, although
// the SDK reconnects with clean=false and never subscribes again: when
// another connection takes over its client ID with a clean session, and
// when the hub restarts (forgetting every MQTT session); and after the
// application closes and reopens the client's transport.
func TestAzureSDKDesiredListeners(t *testing.T) {
	h := startAzureHub(t)
	h.createDevice(t, "listener")
	svc := []string{"SERVICE_CONNECTION_STRING=" + h.serviceCS(t)}
	n := h.startScript(t, []string{"DEVICE_CONNECTION_STRING=" + h.deviceCS(t, "listener")}, "desired_listener.js")
	// Attaching the listener replays the twin's desired properties at once;
	// "ready" follows when the SUBACK arrived.
	if e := n.next(t, 20*time.Second, "desired"); e["name"] != "properties.desired" || !sameJSON(t, e["value"], `{"$version":1}`) {
		t.Fatalf("replay of the desired properties read with getTwin: %v", e)
	}
	if e := n.next(t, 10*time.Second, "ready"); e["desiredVersion"] != 1.0 {
		t.Fatalf("ready: %v", e)
	}

	// patch sends a desired patch with the service SDK; want lists the
	// listener events it must cause, in order, as name → value (JSON).
	version := 1
	patch := func(what, body string, want ...[2]string) {
		t.Helper()
		version++
		if e := oneEvent(t, h.runScript(t, svc, "update_desired.js", "listener", body), "updated"); e["desiredVersion"] != float64(version) {
			t.Fatalf("%s: twin.update returned desired $version %v, want %d", what, e["desiredVersion"], version)
		}
		for i, w := range want {
			e := n.next(t, 10*time.Second, "desired")
			if i == 0 {
				// The whole patch, with its $version, goes to 'properties.desired'.
				var full map[string]any
				json.Unmarshal([]byte(body), &full)
				full["$version"] = float64(version)
				b, _ := json.Marshal(full)
				w[1] = string(b)
			}
			if e["name"] != w[0] || !sameJSON(t, e["value"], w[1]) {
				t.Fatalf("%s: event %d is %v, want %s = %s", what, i, e, w[0], w[1])
			}
		}
	}
	const all, climate, leaf = "properties.desired", "properties.desired.climate", "properties.desired.climate.hvac.systemControl"
	// The leaf listener does not fire for a patch without the leaf: the next
	// event after the subtree's is the next patch's 'properties.desired'.
	patch("subtree patch", `{"climate":{"minTemperature":68,"maxTemperature":76}}`,
		[2]string{all}, [2]string{climate, `{"minTemperature":68,"maxTemperature":76}`})
	patch("leaf patch", `{"climate":{"hvac":{"systemControl":{"fanOn":true}}}}`,
		[2]string{all}, [2]string{climate, `{"hvac":{"systemControl":{"fanOn":true}}}`}, [2]string{leaf, `{"fanOn":true}`})
	patch("unrelated patch", `{"telemetryConfig":{"sendFrequency":"5m"}}`, [2]string{all})

	// The server drops the device because another connection takes its
	// client ID with a clean session, which discards the session and its
	// subscriptions. The SDK reconnects at once (taking the ID back) and
	// does not subscribe again.
	opts := h.deviceOptions(t, "listener")
	intruder := paho.NewClient(paho.NewClientOptions().AddBroker(h.MQTT).SetClientID("listener").
		SetUsername(opts.Username).SetPassword(opts.Password).SetCleanSession(true).SetAutoReconnect(false))
	if tk := intruder.Connect(); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("connecting a second client as the device: %v", tk.Error())
	}
	n.next(t, 20*time.Second, "connect")
	waitFor(t, 10*time.Second, "the SDK to take its connection back", func() bool { return !intruder.IsConnectionOpen() })
	intruder.Disconnect(0)
	patch("patch after a session takeover dropped the device", `{"climate":{"minTemperature":66}}`,
		[2]string{all}, [2]string{climate, `{"minTemperature":66}`})

	// The server drops the device by restarting, which also loses every
	// broker session. The SDK reconnects on its own and does not subscribe
	// again.
	h.restart(t)
	restarted := time.Now()
	n.next(t, 30*time.Second, "connect")
	// The connect event may come from a reconnect to the stopping hub; the
	// new hub's broker tells when the device is really back.
	waitFor(t, 30*time.Second, "the SDK to reconnect to the restarted hub", func() bool {
		return h.metricValue(t, "twinhub_mqtt_broker_clients_connected") == "1"
	})
	// The connection-state commands of the disconnect and of the reconnect
	// are applied in order once the new hub owns the partitions.
	waitFor(t, 20*time.Second, "the reconnected device to show as connected", func() bool {
		return h.twin(t, "listener")["connectionState"] == "Connected"
	})
	t.Logf("the twin showed the reconnected device %s after the restart", time.Since(restarted).Round(time.Millisecond))
	patch("patch after a restart dropped the device", `{"climate":{"hvac":{"systemControl":{"fanOn":false}}}}`,
		[2]string{all}, [2]string{climate, `{"hvac":{"systemControl":{"fanOn":false}}}`}, [2]string{leaf, `{"fanOn":false}`})

	// The application closes the transport and opens it again.
	n.send(t, "reopen")
	n.next(t, 20*time.Second, "reopened")
	patch("patch after the client reopened", `{"climate":{"maxTemperature":80}}`,
		[2]string{all}, [2]string{climate, `{"maxTemperature":80}`})

	n.send(t, "exit")
	read := len(n.seen)
	n.wait(t)
	for i, e := range n.seen {
		if e.name() == "disconnect" {
			t.Errorf("the SDK gave up reconnecting: %v", e)
		}
		if i >= read && e.name() == "desired" {
			t.Errorf("an event no patch should have caused: %v", e)
		}
	}
	tw := h.twin(t, "listener")
	if !sameJSON(t, get(tw, "properties.desired.climate"), `{"minTemperature":66,"maxTemperature":80,"hvac":{"systemControl":{"fanOn":false}}}`) ||
		get(tw, "properties.desired.$version") != float64(version) {
		t.Errorf("desired properties after the patches: %v", get(tw, "properties.desired"))
	}
}

// TestAzureSDKRegistry: registry.create without keys, or with empty keys,
// makes the hub generate them; the returned device carries them (and
// registry.get and the HTTP API agree); a device using them connects with
// the device SDK; creating the same ID again fails with
// DeviceAlreadyExistsError, and getTwin of an unknown device with
// DeviceNotFoundError. A Twin read before another writer changed the
// twin fails its update with InvalidEtagError, changing nothing; the
// current etag and "*" succeed.
func TestAzureSDKRegistry(t *testing.T) {
	h := startAzureHub(t)
	svc := []string{"SERVICE_CONNECTION_STRING=" + h.serviceCS(t)}

	evs := h.runScript(t, svc, "create_device.js", "sdkImplicitKeys", "sdkEmptyKeys")
	created := findEvents(evs, "created")
	if len(created) != 2 {
		t.Fatalf("created events: %v", evs)
	}
	keys := map[string][2]string{}
	for _, e := range created {
		dev, _ := e["device"].(map[string]any)
		id, _ := dev["deviceId"].(string)
		primary, _ := get(dev, "authentication.symmetricKey.primaryKey").(string)
		secondary, _ := get(dev, "authentication.symmetricKey.secondaryKey").(string)
		for _, k := range []string{primary, secondary} {
			if b, err := base64.StdEncoding.DecodeString(k); err != nil || len(b) < 16 {
				t.Errorf("%s: generated key %q is not base64 of at least 16 bytes", id, k)
			}
		}
		if e["status"] != 200.0 || get(dev, "authentication.type") != "sas" || primary == secondary {
			t.Errorf("registry.create returned %v", e)
		}
		keys[id] = [2]string{primary, secondary}
		r := h.call(t, "GET", "/devices/"+id, "")
		if got := get(r.json(t), "authentication.symmetricKey.primaryKey"); got != primary {
			t.Errorf("%s: HTTP API has primary key %v, registry.create returned %s", id, got, primary)
		}
	}
	if len(keys) != 2 || keys["sdkImplicitKeys"][0] == "" || keys["sdkEmptyKeys"][0] == "" {
		t.Fatalf("created devices: %v", created)
	}
	if e := oneEvent(t, evs, "fetched"); get(e["device"].(map[string]any), "authentication.symmetricKey.primaryKey") != keys["sdkImplicitKeys"][0] {
		t.Errorf("registry.get: %v", e)
	}
	if e := oneEvent(t, evs, "createAgain"); get(e, "error.name") != "DeviceAlreadyExistsError" || get(e, "error.status") != 409.0 {
		t.Errorf("creating an existing device: %v", e)
	}
	if e := oneEvent(t, evs, "notFound"); get(e, "error.name") != "DeviceNotFoundError" || get(e, "error.status") != 404.0 {
		t.Errorf("getTwin of an unknown device: %v", e)
	}
	// The generated keys work: the device SDK connects with the secondary
	// key, from a connection string built the way a user would.
	cs := fmt.Sprintf("HostName=localhost;DeviceId=sdkEmptyKeys;SharedAccessKey=%s;GatewayHostName=localhost:%s", keys["sdkEmptyKeys"][1], h.mqttsPort)
	oneEvent(t, h.runScript(t, []string{"DEVICE_CONNECTION_STRING=" + cs}, "report_connectivity.js"), "reported")

	h.createDevice(t, "etagDevice")
	evs = h.runScript(t, svc, "stale_etag.js", "etagDevice")
	read, updated := oneEvent(t, evs, "read"), oneEvent(t, evs, "updated")
	if read["etag"] == updated["etag"] || get(updated, "tags.owner") != "first" {
		t.Errorf("update with the current etag: read %v, updated %v", read, updated)
	}
	if e := oneEvent(t, evs, "stale"); get(e, "error.name") != "InvalidEtagError" || get(e, "error.status") != 412.0 {
		t.Errorf("update with a stale etag: %v", e)
	}
	if e := oneEvent(t, evs, "wildcard"); get(e, "tags.owner") != "wildcard" {
		t.Errorf("update with etag *: %v", e)
	}
	if tw := h.twin(t, "etagDevice"); get(tw, "tags.owner") != "wildcard" || tw["version"] != 4.0 {
		t.Errorf("twin after the etag checks (the stale update must change nothing): %v", tw)
	}
}

// TestAzureSDKQueryPaging: createQuery with a small page size walks the
// matching twins page by page: 6 matching twins at page size 2 give three
// pages of two, hasMoreResults true, true, then false with no continuation
// token, each twin exactly once and no twin that does not match; page size
// 4 gives 4 + 2, and a page size above the count one page.
func TestAzureSDKQueryPaging(t *testing.T) {
	h := startAzureHub(t)
	h.requireQueryAPI(t)
	var want []string
	for i := range 8 {
		id := fmt.Sprintf("page%d", i)
		h.createDevice(t, id)
		if i < 6 {
			want = append(want, id)
			if r := h.call(t, "PATCH", "/twins/"+id, `{"tags":{"paging":"yes"}}`, "If-Match", `"*"`); r.Status != 200 {
				t.Fatalf("tagging %s: %d %s", id, r.Status, r.Body)
			}
		}
	}
	svc := []string{"SERVICE_CONNECTION_STRING=" + h.serviceCS(t)}
	const sql = "SELECT * FROM devices WHERE tags.paging = 'yes'"
	for _, c := range []struct {
		pageSize string
		sizes    []int
	}{{"2", []int{2, 2, 2}}, {"4", []int{4, 2}}, {"100", []int{6}}} {
		t.Run("pageSize="+c.pageSize, func(t *testing.T) {
			pages := findEvents(h.runScript(t, svc, "query_pages.js", sql, c.pageSize), "page")
			var got []string
			for i, p := range pages {
				ids, _ := p["ids"].([]any)
				for _, id := range ids {
					got = append(got, id.(string))
				}
				last := i == len(pages)-1
				if i < len(c.sizes) && len(ids) != c.sizes[i] {
					t.Errorf("page %d has %d twins, want %d: %v", i+1, len(ids), c.sizes[i], p)
				}
				if p["hasMoreResults"] != !last || (last && p["continuationToken"] != nil) || (!last && p["continuationToken"] == nil) {
					t.Errorf("page %d of %d: hasMoreResults %v, continuationToken %v", i+1, len(pages), p["hasMoreResults"], p["continuationToken"])
				}
			}
			if len(pages) != len(c.sizes) {
				t.Errorf("%d pages, want %d: %v", len(pages), len(c.sizes), pages)
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("twins over all pages: %v, want each of %v once", got, want)
			}
		})
	}
}
