package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twinhub/twinhub/deploy/embedded"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// ownedPartitions replays a process's "owning" and "no longer owning" log
// lines into the partitions it owns now.
func ownedPartitions(logs string) []int {
	owned := map[int]bool{}
	re := regexp.MustCompile(`msg="(owning|no longer owning) a command partition".* partition=(\d+)`)
	for _, m := range re.FindAllStringSubmatch(logs, -1) {
		p, _ := strconv.Atoi(m[2])
		owned[p] = m[1] == "owning"
	}
	var out []int
	for p, ok := range owned {
		if ok {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// patchDesired sends a desired patch {"n":n} to a device and returns the
// twin version it answered with. It does not stop the test: load
// goroutines call it.
func patchDesired(p *proc, t *testing.T, deviceID string, n int) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "PATCH", p.HTTP+"/twins/"+deviceID,
		strings.NewReader(fmt.Sprintf(`{"properties":{"desired":{"n":%d}}}`, n)))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", p.ownerToken(t))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return 0, fmt.Errorf("PATCH /twins/%s: %d %s", deviceID, resp.StatusCode, b)
	}
	var tw struct{ Version int64 }
	if err := json.Unmarshal(b, &tw); err != nil {
		return 0, err
	}
	return tw.Version, nil
}

// TestKillAnInstanceMovesItsPartitions runs a second instance on A's NATS
// under a closed loop of desired patches (through A) to a device in every
// partition, waits until it owns its share, and stops it with SIGTERM;
// then a third, killed with SIGKILL. Every partition each owned is applied
// by A again, and every acknowledged change is in the twins, each device's
// versions without gaps. It logs the time from the stop and from the kill
// to the first change applied in each of the partitions that moved.
func TestKillAnInstanceMovesItsPartitions(t *testing.T) {
	// The default partition count, so that each instance owns several.
	a := startTwinhub(t, "", "--partitions", "16")
	b := startTwinhub(t, "", "--partitions", "16", "--nats-url", a.natsURL(t, embedded.InternalNATSUser))
	parts, err := strconv.Atoi(regexpFind(t, a.logs.String(), `msg="twinhub is ready".* partitions=(\d+)`))
	if err != nil {
		t.Fatal(err)
	}
	devs := make([]string, parts) // devs[p] is in partition p
	for i := 0; slices.Contains(devs, ""); i++ {
		id := fmt.Sprintf("own-%d", i)
		if p := topology.Partition(id, parts); devs[p] == "" {
			devs[p] = id
		}
	}
	for _, id := range devs {
		if r := a.call(t, "PUT", "/devices/"+id, ""); r.Status != 200 {
			t.Fatalf("create %s: %d %s", id, r.Status, r.Body)
		}
	}

	// The closed loop: one worker per device, one patch at a time.
	type ack struct {
		n       int
		version int64
		at      time.Time
	}
	var (
		mu    sync.Mutex
		acks  = make([][]ack, len(devs))
		fails []error
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, id := range devs {
		wg.Add(1)
		// Exits when stop is closed, or at its first failure.
		go func() {
			defer wg.Done()
			for n := 1; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				v, err := patchDesired(a, t, id, n)
				mu.Lock()
				if err != nil {
					fails = append(fails, err)
					mu.Unlock()
					return
				}
				acks[i] = append(acks[i], ack{n: n, version: v, at: time.Now()})
				mu.Unlock()
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()

	// owns waits until the instance owns its share of the partitions.
	owns := func(p *proc) []int {
		deadline := time.Now().Add(30 * time.Second)
		for {
			owned := ownedPartitions(p.logs.String())
			if len(owned) >= parts/2-parts/8 {
				return owned
			}
			if time.Now().After(deadline) {
				t.Fatalf("the instance owns %v, not its share of the partitions; its log:\n%s", owned, p.logs.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// movedAfter waits until each partition has a change acknowledged after
	// the moment, and returns the longest wait and every partition's.
	movedAfter := func(moment time.Time, partitions []int) (time.Duration, string) {
		firstAfter := func(p int) (time.Duration, bool) {
			mu.Lock()
			defer mu.Unlock()
			for _, k := range acks[p] {
				if k.at.After(moment) {
					return k.at.Sub(moment), true
				}
			}
			return 0, false
		}
		waitFor(t, 60*time.Second, "every partition of the instance applies changes again", func() bool {
			for _, p := range partitions {
				if _, ok := firstAfter(p); !ok {
					return false
				}
			}
			return true
		})
		var worst time.Duration
		var each []string
		for _, p := range partitions {
			d, _ := firstAfter(p)
			worst = max(worst, d)
			each = append(each, fmt.Sprintf("p%d %.2fs", p, d.Seconds()))
		}
		return worst, strings.Join(each, ", ")
	}

	bOwned := owns(b)
	stopping := time.Now()
	b.stop()
	exited := time.Now()
	worst, each := movedAfter(exited, bOwned)
	t.Logf("SIGTERM of B (owning %v): exited after %.2fs; from its exit to the first change applied by A in each of its partitions: worst %.2fs (%s)",
		bOwned, exited.Sub(stopping).Seconds(), worst.Seconds(), each)

	c := startTwinhub(t, "", "--partitions", "16", "--nats-url", a.natsURL(t, embedded.InternalNATSUser))
	cOwned := owns(c)
	c.kill()
	killed := time.Now()
	worst, each = movedAfter(killed, cOwned)
	t.Logf("kill -9 of C (owning %v) to the first change applied by A in each of its partitions: worst %.2fs (%s)",
		cOwned, worst.Seconds(), each)
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	for _, err := range fails {
		t.Errorf("a patch failed: %v", err)
	}
	for i, id := range devs {
		if len(acks[i]) == 0 {
			t.Fatalf("%s: no patch acknowledged", id)
		}
		for j, k := range acks[i] {
			if k.version != int64(j+3) {
				t.Fatalf("%s: patch %d answered version %d, want %d: versions have a gap or a repeat", id, k.n, k.version, j+3)
			}
		}
		last := acks[i][len(acks[i])-1]
		checkTwin(t, a, id, map[string]any{
			"version":                     float64(last.version),
			"properties.desired.n":        float64(last.n),
			"properties.desired.$version": float64(len(acks[i]) + 1),
		})
	}
}
