package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/bridge/deviceclient"
	"github.com/twinhub/twinhub/deploy/embedded"
	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// TestCrashLosesNothingAcknowledged kills twinhub with SIGKILL while many
// devices stream reported patches, twice, and checks after each restart that
// every patch a device got its 204 for is in the twin and in the change
// events, that each device's event versions run without gaps, and that no
// change event was published twice.
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test")
	}
	const devices = 24
	p := startTwinhub(t, "")
	for i := range devices {
		if r := p.call(t, "PUT", fmt.Sprintf("/devices/crash-%02d", i), ""); r.Status != 200 {
			t.Fatalf("create: %d %s", r.Status, r.Body)
		}
	}
	// acked[device] = versions the hub acknowledged, by the patch's seq.
	acked := make([]map[int]int64, devices)
	for i := range acked {
		acked[i] = map[int]int64{}
	}
	nextSeq := make([]int, devices)
	opts := make([]deviceclient.Options, devices)
	for i := range opts {
		opts[i] = p.deviceOptions(t, fmt.Sprintf("crash-%02d", i))
	}
	for round := range 2 {
		var wg sync.WaitGroup
		ctx, cancel := context.WithCancel(context.Background())
		for i := range devices {
			wg.Add(1)
			// Reports until the hub dies (its requests then fail).
			go func() {
				defer wg.Done()
				dctx, dcancel := context.WithTimeout(ctx, 20*time.Second)
				defer dcancel()
				dev, err := deviceclient.Dial(dctx, p.MQTT, fmt.Sprintf("crash-%02d", i), opts[i])
				if err != nil {
					t.Errorf("device %d: %v", i, err)
					return
				}
				defer dev.Close()
				for ctx.Err() == nil {
					seq := nextSeq[i]
					rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
					v, err := dev.Report(rctx, []byte(fmt.Sprintf(`{"seq":%d,"round":%d,"payload":{"a":[1,2,3],"b":"%064d"}}`, seq, round, seq)))
					rcancel()
					if err != nil {
						return
					}
					acked[i][seq] = v
					nextSeq[i]++
				}
			}()
		}
		time.Sleep(1500 * time.Millisecond)
		p.kill()
		cancel()
		wg.Wait()
		total := 0
		for i := range acked {
			total += len(acked[i])
		}
		t.Logf("round %d: %d patches acknowledged before kill -9", round, total)
		p = startTwinhub(t, p.dataDir)
		verifyAgainstEvents(t, p, devices, acked)
	}
}

func verifyAgainstEvents(t *testing.T, p *proc, devices int, acked []map[int]int64) {
	t.Helper()
	nc, err := nats.Connect(p.natsURL(t, embedded.InternalNATSUser)) // it reads the command stream
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// Commands stored before the kill are applied after the restart, once
	// their ack wait expires; wait until none is left.
	cmds, err := js.Stream(ctx, topology.CommandStream)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the command backlog to drain", func() bool {
		info, err := cmds.Info(ctx)
		return err == nil && info.State.Msgs == 0
	})
	// Read every change event.
	evs, err := js.Stream(ctx, topology.EventStream)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := evs.Info(ctx)
	cons, err := evs.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	type key struct {
		dev string
		v   int64
	}
	seen := map[key]int{} // version -> seq of the patch
	last := map[string]int64{}
	for n := uint64(0); n < info.State.Msgs; n++ {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("reading event %d of %d: %v", n, info.State.Msgs, err)
		}
		var ev pipeline.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		k := key{ev.DeviceID, ev.Version}
		if _, dup := seen[k]; dup {
			t.Errorf("duplicate change event: %s version %d", ev.DeviceID, ev.Version)
		}
		if want := last[ev.DeviceID] + 1; ev.Op != pipeline.OpCreateDevice && ev.Version != want {
			t.Errorf("%s: event version %d follows %d", ev.DeviceID, ev.Version, last[ev.DeviceID])
		}
		last[ev.DeviceID] = ev.Version
		var patch struct{ Seq int }
		json.Unmarshal(ev.Patch.Reported(), &patch)
		seen[k] = patch.Seq
	}
	for i := range devices {
		id := fmt.Sprintf("crash-%02d", i)
		r := p.call(t, "GET", "/twins/"+id, "")
		tw := r.json(t)
		version := int64(tw["version"].(float64))
		if version != last[id] {
			t.Errorf("%s: twin version %d, last event version %d", id, version, last[id])
		}
		reportedVersion := int64(get(tw, "properties.reported.$version").(float64))
		for seq, v := range acked[i] {
			// Reported $version v means twin version v+1 (created at 2 with reported 1).
			got, ok := seen[key{id, v + 1}]
			if !ok || got != seq {
				t.Errorf("%s: acknowledged patch seq %d (reported version %d) is not the change event at that version (found seq %d, present %v)", id, seq, v, got, ok)
			}
			if v > reportedVersion {
				t.Errorf("%s: acknowledged reported version %d, twin has %d", id, v, reportedVersion)
			}
		}
	}
}
