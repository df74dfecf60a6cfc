package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/twinhub/twinhub/bridge/sas"
)

// azureUser is the MQTT user name of a device on Azure IoT Hub's topics.
func azureUser(deviceID string) string { return "localhost/" + deviceID + "/?api-version=2021-04-12" }

// deviceToken is a SAS token for deviceID signed with its primary key.
func (p *proc) deviceToken(t *testing.T, deviceID string) string {
	t.Helper()
	tok, err := sas.New(sas.DeviceResource("localhost", deviceID), p.deviceKey(t, deviceID), "", time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// patchDesired patches a twin's desired properties; safe in any goroutine.
func (p *proc) patchDesired(ctx context.Context, deviceID, desired string) error {
	req, err := http.NewRequestWithContext(ctx, "PATCH", p.HTTP+"/twins/"+deviceID,
		strings.NewReader(`{"properties":{"desired":`+desired+`}}`))
	if err != nil {
		return err
	}
	tok, err := sas.New("localhost", p.owner, sas.OwnerPolicy, time.Now().Add(time.Hour))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("PATCH /twins/%s: %d %s", deviceID, resp.StatusCode, body)
	}
	return nil
}

// scrape reads one unlabelled series from /metrics; safe in any goroutine.
func (p *proc) scrape(series string) (float64, error) {
	resp, err := http.Get(p.HTTP + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("%s not in /metrics", series)
}

// dialNeverReading connects an Azure-mode device over a raw socket with a
// small receive buffer, reads its CONNACK, and then never reads again.
func dialNeverReading(t *testing.T, brokerURL, deviceID, token string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(brokerURL, "tcp://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, ClientIdentifier: deviceID,
			UsernameFlag: true, Username: []byte(azureUser(deviceID)), PasswordFlag: true, Password: []byte(token)}}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(buf.Bytes()); err != nil {
		t.Fatal(err)
	}
	connack := make([]byte, 4)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(conn, connack); err != nil || connack[0] != 0x20 || connack[3] != 0 {
		t.Fatalf("connecting the never-reading device: CONNACK % x, %v", connack, err)
	}
	return conn
}

// desiredVersion is the $version of an Azure desired notification's topic.
func desiredVersion(topic string) int64 {
	_, query, _ := strings.Cut(topic, "?")
	q, _ := url.ParseQuery(query)
	v, _ := strconv.ParseInt(q.Get("$version"), 10, 64)
	return v
}

// TestSlowDeviceDoesNotDelayOthers: an Azure-mode device that never reads
// its socket is flooded with desired patches (3,000 of 4 KB, then more while
// the canary is measured). Its queue fills and its notifications are dropped
// and counted, while a canary device on Azure's topics receives every one of
// its 20 desired notifications, with a p99 under 100 ms from the PATCH
// request to the notification.
func TestSlowDeviceDoesNotDelayOthers(t *testing.T) {
	p := startTwinhub(t, "")
	for _, id := range []string{"slowAz", "canaryAz"} {
		if r := p.call(t, "PUT", "/devices/"+id, ""); r.Status != 200 {
			t.Fatalf("creating %s: %d %s", id, r.Status, r.Body)
		}
	}
	dialNeverReading(t, p.MQTT, "slowAz", p.deviceToken(t, "slowAz"))

	type arrival struct {
		version int64
		at      time.Time
	}
	arrivals := make(chan arrival, 1024)
	canary := paho.NewClient(paho.NewClientOptions().AddBroker(p.MQTT).SetClientID("canaryAz").
		SetUsername(azureUser("canaryAz")).SetPassword(p.deviceToken(t, "canaryAz")).SetAutoReconnect(false))
	if tk := canary.Connect(); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("connecting the canary: %v", tk.Error())
	}
	defer canary.Disconnect(0)
	if tk := canary.Subscribe("$iothub/twin/PATCH/properties/desired/#", 0, func(_ paho.Client, m paho.Message) {
		arrivals <- arrival{desiredVersion(m.Topic()), time.Now()}
	}); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("subscribing the canary: %v", tk.Error())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	blob := strings.Repeat("x", 4000)
	flood := func(n int) error {
		return p.patchDesired(ctx, "slowAz", `{"blob":"`+blob+`","n":`+strconv.Itoa(n)+`}`)
	}
	const floodPatches, workers = 3000, 8
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		// Ends after its share of the flood.
		go func() {
			defer wg.Done()
			for n := w; n < floodPatches; n += workers {
				if err := flood(n); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("flooded the never-reading device with %d desired patches of 4 KB in %s", floodPatches, time.Since(start).Round(time.Millisecond))

	// Keep flooding while the canary is measured.
	stop := make(chan struct{})
	var trickled atomic.Int64
	var trickle sync.WaitGroup
	trickle.Add(1)
	// Ends when stop is closed.
	go func() {
		defer trickle.Done()
		for n := floodPatches; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			if flood(n) == nil {
				trickled.Add(1)
			}
		}
	}()
	const canaryPatches = 20
	var latencies []time.Duration
	for i := 1; i <= canaryPatches; i++ {
		want := int64(i + 1) // desired $version starts at 1
		sent := time.Now()
		if err := p.patchDesired(ctx, "canaryAz", `{"n":`+strconv.Itoa(i)+`}`); err != nil {
			t.Fatal(err)
		}
		timeout := time.After(10 * time.Second)
	wait:
		for {
			select {
			case a := <-arrivals:
				if a.version == want {
					latencies = append(latencies, a.at.Sub(sent))
					break wait
				}
			case <-timeout:
				close(stop)
				t.Fatalf("the canary received %d of %d desired notifications; notification $version %d missing after 10 s", i-1, canaryPatches, want)
			}
		}
	}
	close(stop)
	trickle.Wait()
	slices.Sort(latencies)
	p50, p99 := latencies[len(latencies)/2], latencies[(len(latencies)*99+99)/100-1]
	t.Logf("canary: %d of %d desired notifications, PATCH to notification p50 %s, p99 %s (max), while %d more patches went to the never-reading device",
		len(latencies), canaryPatches, p50.Round(100*time.Microsecond), p99.Round(100*time.Microsecond), trickled.Load())
	if p99 >= 100*time.Millisecond {
		t.Errorf("canary desired-notification p99 %s, want under 100 ms", p99)
	}
	if v, err := p.scrape("twinhub_mqtt_broker_messages_dropped_total"); err != nil || v == 0 {
		t.Errorf("no drops counted for the never-reading device's full queue: %v %v", v, err)
	} else {
		t.Logf("notifications dropped for the never-reading device: %.0f", v)
	}
}

// TestGETFloodDoesNotStarveOthers: a device that publishes 20,000 QoS 0
// twin GETs as fast as it can gets 429 beyond its in-flight limit, while a
// canary's 50 reported patches all get 204, and the hub's goroutine count
// stays bounded.
func TestGETFloodDoesNotStarveOthers(t *testing.T) {
	p := startTwinhub(t, "")
	for _, id := range []string{"flooder", "canaryGet"} {
		if r := p.call(t, "PUT", "/devices/"+id, ""); r.Status != 200 {
			t.Fatalf("creating %s: %d %s", id, r.Status, r.Body)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	canary, err := p.dialDevice(t, ctx, "canaryGet")
	if err != nil {
		t.Fatal(err)
	}
	defer canary.Close()

	var statuses sync.Map // status → *atomic.Int64
	flooder := paho.NewClient(paho.NewClientOptions().AddBroker(p.MQTT).SetClientID("flooder").SetUsername("flooder").
		SetPassword(p.deviceToken(t, "flooder")).SetAutoReconnect(false).SetOrderMatters(false))
	if tk := flooder.Connect(); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("connecting the flooder: %v", tk.Error())
	}
	defer flooder.Disconnect(0)
	if tk := flooder.Subscribe("devices/flooder/twin/res/#", 0, func(_ paho.Client, m paho.Message) {
		status, _, _ := strings.Cut(strings.TrimPrefix(m.Topic(), "devices/flooder/twin/res/"), "/")
		n, _ := statuses.LoadOrStore(status, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
	}); !tk.WaitTimeout(10*time.Second) || tk.Error() != nil {
		t.Fatalf("subscribing the flooder: %v", tk.Error())
	}

	baseline, err := p.scrape("go_goroutines")
	if err != nil {
		t.Fatal(err)
	}
	var peak atomic.Int64
	peak.Store(int64(baseline))
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	// Ends when stop is closed.
	go func() {
		defer sampler.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if v, err := p.scrape("go_goroutines"); err == nil && int64(v) > peak.Load() {
				peak.Store(int64(v))
			}
		}
	}()

	const gets = 20000
	floodDone := make(chan time.Duration, 1)
	// Ends after the last publish.
	go func() {
		start := time.Now()
		for i := range gets {
			flooder.Publish("devices/flooder/twin/GET/?$rid="+strconv.Itoa(i), 0, false, " ")
		}
		floodDone <- time.Since(start)
	}()
	var failed []string
	for i := range 50 {
		rctx, rcancel := context.WithTimeout(ctx, 15*time.Second)
		if _, err := canary.Report(rctx, []byte(`{"n":`+strconv.Itoa(i)+`}`)); err != nil {
			failed = append(failed, err.Error())
		}
		rcancel()
	}
	took := <-floodDone
	count := func(status string) int64 {
		if n, ok := statuses.Load(status); ok {
			return n.(*atomic.Int64).Load()
		}
		return 0
	}
	// Sample until the hub has read every GET and answered every one it took.
	waitFor(t, 2*time.Minute, "the flood's requests to be handled", func() bool {
		var handled float64
		for _, result := range []string{"ok", "throttled", "error"} {
			v, err := p.scrape(`twinhub_mqtt_requests_total{operation="get",result="` + result + `"}`)
			if err != nil {
				return false
			}
			handled += v
		}
		return handled >= gets
	})
	close(stop)
	sampler.Wait()
	t.Logf("flooder: %d GETs published in %s; answered 200: %d, 429: %d; hub goroutines: %.0f before, peak %d",
		gets, took.Round(time.Millisecond), count("200"), count("429"), baseline, peak.Load())
	if len(failed) > 0 {
		t.Errorf("%d of the canary's 50 reported patches failed, e.g. %s", len(failed), failed[0])
	}
	if count("429") == 0 {
		t.Errorf("the flooder never got 429 for exceeding its in-flight limit")
	}
	if grew := peak.Load() - int64(baseline); grew > 300 {
		t.Errorf("the hub's goroutines grew by %d during the flood (from %.0f to %d), want at most 300", grew, baseline, peak.Load())
	}
}
