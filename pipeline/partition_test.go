package pipeline_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// pipelinePatches has each device submit patches {"n":1}…{"n":patches}
// without waiting for their results (each is stored before the next is
// submitted, so the stream holds them in order), calls midway once half of
// the devices have submitted half of their patches, and then waits for
// every result: each must be a 204.
func pipelinePatches(t *testing.T, h *hub, devs []string, patches int, midway func()) {
	t.Helper()
	var half sync.WaitGroup
	half.Add(len(devs) / 2)
	errs := make(chan error, len(devs))
	for d, id := range devs {
		// Exits once its device's patches are answered.
		go func() {
			var pending []*pipeline.Pending
			err := func() error {
				for n := 1; n <= patches; n++ {
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					p, err := h.client.Submit(ctx, pipeline.Command{Kind: pipeline.KindPatchReported, DeviceID: id,
						Body: []byte(fmt.Sprintf(`{"n":%d}`, n))})
					cancel()
					if err != nil {
						return err
					}
					pending = append(pending, p)
					if n == patches/2 && d < len(devs)/2 {
						half.Done()
					}
				}
				for n, p := range pending {
					res, err := p.Wait(context.Background())
					if err != nil {
						return fmt.Errorf("patch %d: %w", n+1, err)
					}
					if res.Status != 204 {
						return fmt.Errorf("patch %d: %+v, want 204", n+1, res)
					}
				}
				return nil
			}()
			if err != nil {
				err = fmt.Errorf("%s: %w", id, err)
			}
			errs <- err
		}()
	}
	half.Wait()
	midway()
	for range devs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// checkInOrder asserts that each device's change events are its creation
// and then its patches, each once, in the order they were submitted, with
// gapless versions.
func checkInOrder(t *testing.T, h *hub, devs []string, patches int) {
	t.Helper()
	for _, id := range devs {
		evs := h.events(t, id)
		if len(evs) != patches+1 {
			t.Fatalf("%s: %d events, want %d", id, len(evs), patches+1)
		}
		for i, ev := range evs[1:] {
			if want := fmt.Sprintf(`{"n":%d}`, i+1); ev.Version != int64(i+3) || string(ev.Patch.Reported()) != want {
				t.Fatalf("%s event %d: version %d, patch %s; want version %d, patch %s", id, i+1, ev.Version, ev.Patch.Reported(), i+3, want)
			}
		}
	}
}

func createDevices(t *testing.T, h *hub, prefix string, n int) []string {
	t.Helper()
	devs := make([]string, n)
	for i := range devs {
		devs[i] = fmt.Sprintf("%s%d", prefix, i)
		if res := h.do(t, pipeline.Command{Kind: pipeline.KindCreateDevice, DeviceID: devs[i]}); res.Status != 200 {
			t.Fatalf("creating %s: %+v", devs[i], res)
		}
	}
	return devs
}

// TestOnePartitionAppliesManyDevicesAtOnce: with a single partition, the
// owner still applies the commands of different devices together (batches
// of more than one command), while each device's patches stay in order.
func TestOnePartitionAppliesManyDevicesAtOnce(t *testing.T) {
	h := startHub(t, t.TempDir(), topology.Config{Partitions: 1})
	devs := createDevices(t, h, "m", 24)
	pipelinePatches(t, h, devs, 20, func() {})
	checkInOrder(t, h, devs, 20)
	sum, count := histogramSumCount(t, h.reg, "twinhub_pipeline_batch_commands")
	if count == 0 || sum <= count {
		t.Fatalf("%v commands in %v batches: one partition never applied two commands together", sum, count)
	}
	t.Logf("%v commands in %v batches", sum, count)
}

// TestDeviceOrderSurvivesAMovingPartition moves a busy partition, with many
// commands held by its owner, to a standby: once by a graceful stop (the
// owner returns what it has not started and finishes the rest) and once by
// a kill (what the dead owner held comes back after the ack wait). The new
// owner must apply nothing of a device before the commands the old owner
// held of it: every device's patches are applied once each, in order.
func TestDeviceOrderSurvivesAMovingPartition(t *testing.T) {
	for _, how := range []string{"stop", "kill"} {
		t.Run(how, func(t *testing.T) {
			topo := topology.Config{Partitions: 1, AckWait: 2 * time.Second, PinnedTTL: 2 * time.Second}
			h := startBare(t, t.TempDir(), topo)
			a := startMember(t, h, "a", topo, nil)
			devs := createDevices(t, h, "o", 16)
			b := startMember(t, h, "b", topo, nil)
			pipelinePatches(t, h, devs, 40, func() {
				if how == "stop" {
					a.stop()
				} else {
					a.kill()
				}
			})
			checkInOrder(t, h, devs, 40)
			if got := b.Owned(); len(got) != 1 {
				t.Fatalf("the standby owns partitions %v after the owner's %s, want [0]", got, how)
			}
		})
	}
}
