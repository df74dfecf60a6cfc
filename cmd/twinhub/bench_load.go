package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/bridge/deviceclient"
)

// getPause separates the GETs measured under load (over MQTT and over HTTP,
// one at a time each): about 20 of each per second, a sample of latency that
// takes little from the load it measures (a GET costs the hub about as much
// CPU as a reported update).
const getPause = 50 * time.Millisecond

// pacer hands out send slots at a fixed rate (or unlimited when rate is 0).
type pacer struct {
	start    time.Time
	interval time.Duration
	n        atomic.Int64
}

func newPacer(rate float64) *pacer {
	p := &pacer{start: time.Now()}
	if rate > 0 {
		p.interval = time.Duration(float64(time.Second) / rate)
	}
	return p
}

// wait blocks until the next slot, or returns false when ctx ends.
func (p *pacer) wait(ctx context.Context) bool {
	if p.interval == 0 {
		return ctx.Err() == nil
	}
	at := p.start.Add(time.Duration(p.n.Add(1)) * p.interval)
	if d := time.Until(at); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return false
		}
	}
	return ctx.Err() == nil
}

func benchReported(ctx context.Context, c benchConfig, devs []*deviceclient.Client, api *apiClient, nc *nats.Conn, out io.Writer) (reported, event, row, mqttGet, httpGet *stat) {
	reported = &stat{Name: fmt.Sprintf("reported update: publish → 204 (QoS %d)", c.qos)}
	event = &stat{Name: "reported update: publish → change event"}
	row = &stat{Name: "reported update: publish → ClickHouse row (1 in 50 sampled)"}
	mqttGet = &stat{Name: "twin GET over MQTT, under load"}
	httpGet = &stat{Name: "twin GET over HTTP, under load"}

	// Rows are sampled only when the hub keeps history (its sink reports a
	// committed sequence).
	_, history := scrapeGauge(api.base, "twinhub_history_committed_sequence")
	track := &eventTracker{sent: map[patchKey]time.Time{}, event: event, row: row, sampleRows: history}
	rowCtx, stopRows := context.WithCancel(ctx)
	rowsDone := make(chan struct{})
	if nc != nil {
		stop, err := track.follow(ctx, nc)
		if err != nil {
			fmt.Fprintf(out, "no event latency: %v\n", err)
		} else {
			defer stop()
		}
		// Follows the sink's acknowledged stream sequence; exits when rowCtx ends.
		go func() {
			defer close(rowsDone)
			if history {
				track.followRows(rowCtx, nc)
			}
		}()
	} else {
		close(rowsDone)
	}

	pad := strings.Repeat("x", max(0, c.patchSize-60))
	rctx, cancel := context.WithTimeout(ctx, c.duration)
	defer cancel()
	pace := newPacer(c.rate)
	var wg sync.WaitGroup
	start := time.Now()
	for i, d := range devs {
		wg.Add(1)
		// Exits when the phase ends.
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("bench-%05d", i)
			for seq := int64(1); pace.wait(rctx); seq++ {
				patch := fmt.Sprintf(`{"seq":%d,"temperature":%d.5,"pad":"%s"}`, seq, 20+seq%10, pad)
				t0 := time.Now()
				if nc != nil {
					track.published(id, seq, t0)
				}
				qctx, qcancel := context.WithTimeout(ctx, 30*time.Second)
				_, err := d.Report(qctx, []byte(patch))
				qcancel()
				if err != nil {
					if rctx.Err() == nil {
						reported.fail()
					}
					continue
				}
				reported.add(time.Since(t0))
			}
		}()
	}
	// GETs under load: one device over MQTT, one client over HTTP, in a loop.
	wg.Add(2)
	// Both exit when the phase ends.
	go func() {
		defer wg.Done()
		d := devs[len(devs)-1]
		for rctx.Err() == nil {
			t0 := time.Now()
			qctx, qcancel := context.WithTimeout(ctx, 30*time.Second)
			_, err := d.GetTwin(qctx)
			qcancel()
			if err != nil {
				mqttGet.fail()
				continue
			}
			mqttGet.add(time.Since(t0))
			time.Sleep(getPause)
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; rctx.Err() == nil; i++ {
			t0 := time.Now()
			if _, err := api.call(ctx, http.MethodGet, fmt.Sprintf("/twins/bench-%05d", i%len(devs)), nil, nil); err != nil {
				httpGet.fail()
				continue
			}
			httpGet.add(time.Since(t0))
			time.Sleep(getPause)
		}
	}()
	// Progress, every 5 s.
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
				reported.mu.Lock()
				n := len(reported.samples)
				reported.mu.Unlock()
				fmt.Fprintf(out, "  %5.0fs: %d updates acknowledged (%.0f/s), %d errors\n",
					time.Since(start).Seconds(), n, float64(n)/time.Since(start).Seconds(), reported.errs.Load())
			}
		}
	}()
	wg.Wait()
	elapsed := time.Since(start)
	// Give events in flight a moment to arrive, and rows up to 10 s.
	time.Sleep(500 * time.Millisecond)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && track.rowsPending() > 0; {
		time.Sleep(50 * time.Millisecond)
	}
	stopRows()
	<-rowsDone
	for range track.rowsPending() {
		row.fail() // never reached ClickHouse within 10 s of the phase's end
	}
	reported.finish(elapsed)
	event.finish(elapsed)
	row.finish(elapsed)
	row.Rate = 0 // a sample, not a rate
	mqttGet.finish(elapsed)
	httpGet.finish(elapsed)
	return
}

func benchFanout(ctx context.Context, c benchConfig, devs []*deviceclient.Client, api *apiClient) *stat {
	s := &stat{Name: "desired fan-out: back-end PATCH → device receives"}
	// Drain anything queued before the phase.
	for _, d := range devs {
	drain:
		for {
			select {
			case <-d.Desired():
			default:
				break drain
			}
		}
	}
	var wg sync.WaitGroup
	pace := newPacer(c.fanoutRate)
	start := time.Now()
	jobs := make(chan int)
	for range 32 {
		wg.Add(1)
		// Exits when jobs closes.
		go func() {
			defer wg.Done()
			for i := range jobs {
				d := devs[i]
				t0 := time.Now()
				body := []byte(fmt.Sprintf(`{"properties":{"desired":{"setpoint":%d}}}`, i))
				if _, err := api.call(ctx, http.MethodPatch, fmt.Sprintf("/twins/bench-%05d", i), body, nil); err != nil {
					s.fail()
					continue
				}
				select {
				case <-d.Desired():
					s.add(time.Since(t0))
				case <-time.After(10 * time.Second):
					s.fail()
				}
			}
		}()
	}
	for i := range devs {
		if !pace.wait(ctx) {
			break
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	s.finish(time.Since(start))
	return s
}

// benchRawBroker measures the broker alone: each device publishes QoS 1 to
// a topic of its own that it subscribes to, and waits for its message to
// come back before the next, the same closed loop as a reported update.
func benchRawBroker(ctx context.Context, c benchConfig, ids, keys []string) *stat {
	s := &stat{Name: fmt.Sprintf("baseline: raw broker QoS %d round trip (paho, same broker)", c.qos)}
	payload := []byte(strings.Repeat("x", c.patchSize))
	rctx, cancel := context.WithTimeout(ctx, min(c.duration, 20*time.Second))
	defer cancel()
	var wg sync.WaitGroup
	start := time.Now()
	for i, id := range ids {
		wg.Add(1)
		// Exits when the phase ends.
		go func() {
			defer wg.Done()
			opts := paho.NewClientOptions().AddBroker(strings.Split(c.mqttURL, ",")[0]).SetClientID(id).SetUsername(id).SetPassword(devicePassword(id, keys[i]))
			got := make(chan struct{}, 1)
			topic := "devices/" + id + "/raw"
			opts.SetOnConnectHandler(func(cl paho.Client) {
				cl.Subscribe(topic, byte(c.qos), func(paho.Client, paho.Message) { got <- struct{}{} }).Wait()
			})
			cl := paho.NewClient(opts)
			if t := cl.Connect(); !t.WaitTimeout(30*time.Second) || t.Error() != nil {
				s.fail()
				return
			}
			defer cl.Disconnect(0)
			time.Sleep(200 * time.Millisecond) // let the subscription settle
			for rctx.Err() == nil {
				t0 := time.Now()
				cl.Publish(topic, byte(c.qos), false, payload)
				select {
				case <-got:
					s.add(time.Since(t0))
				case <-time.After(10 * time.Second):
					s.fail()
				case <-rctx.Done():
				}
			}
		}()
	}
	wg.Wait()
	s.finish(time.Since(start))
	return s
}

// benchRawJetStream measures asynchronous JetStream publishing (window 256)
// into a scratch stream, the storage limit under the pipeline.
func benchRawJetStream(ctx context.Context, nc *nats.Conn, size int) *stat {
	s := &stat{Name: "baseline: raw JetStream async publish (file, R1)"}
	// A publish the server never acknowledges (a user not allowed to
	// publish there, say) fails after the timeout instead of holding the
	// bench.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(256), jetstream.WithPublishAsyncTimeout(5*time.Second))
	if err != nil {
		s.fail()
		return s
	}
	const stream = "TWINHUB_BENCH_RAW"
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{"twinhub.bench.raw"}, Storage: jetstream.FileStorage}); err != nil {
		s.fail()
		return s
	}
	defer js.DeleteStream(context.WithoutCancel(ctx), stream)
	payload := []byte(strings.Repeat("x", size))
	start := time.Now()
	deadline := start.Add(5 * time.Second)
	var acked atomic.Int64
	for time.Now().Before(deadline) && ctx.Err() == nil {
		t0 := time.Now()
		f, err := js.PublishAsync("twinhub.bench.raw", payload)
		if err != nil {
			s.fail()
			continue
		}
		go func() {
			select {
			case <-f.Ok():
				acked.Add(1)
				s.add(time.Since(t0))
			case <-f.Err():
				s.fail()
			}
		}()
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(10 * time.Second):
	case <-ctx.Done():
	}
	s.finish(time.Since(start))
	return s
}
