package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
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
)

// A second `twinhub run` on a data directory another one uses fails at
// once, naming the directory and the holder; the first keeps serving; once
// the first is killed (kill -9, so nothing is cleaned up), a new one starts.
func TestSecondInstanceOnDataDirFails(t *testing.T) {
	dir := t.TempDir()
	first := startTwinhub(t, dir)
	first.call(t, "PUT", "/devices/lock-1", `{"deviceId":"lock-1"}`)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	second := exec.CommandContext(ctx, binary, "run", "--data-dir", dir, "--http-addr", "127.0.0.1:0",
		"--mqtt-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0", "--mqtts-addr", "127.0.0.1:0",
		"--https-addr", "127.0.0.1:0", "--partitions", "4")
	start := time.Now()
	out, err := second.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the second instance was still running after 10s:\n%s", out)
	}
	if err == nil {
		t.Fatalf("the second instance exited 0; want a failure:\n%s", out)
	}
	t.Logf("second instance exited after %s: %v", time.Since(start).Round(time.Millisecond), err)
	for _, want := range []string{dir, "pid " + strconv.Itoa(first.cmd.Process.Pid), "in use"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the second instance's error does not contain %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "twinhub is ready") {
		t.Errorf("the second instance said it was ready:\n%s", out)
	}

	// The first is unharmed.
	if r := first.call(t, "PATCH", "/twins/lock-1", `{"tags":{"a":1}}`); r.Status != 200 {
		t.Fatalf("first instance after the second tried: PATCH %d %s", r.Status, r.Body)
	}

	first.kill()
	again := startTwinhub(t, dir)
	r := again.call(t, "GET", "/twins/lock-1", "")
	if r.Status != 200 || get(r.json(t), "tags.a") != float64(1) {
		t.Fatalf("after kill -9 and a restart: GET %d %s", r.Status, r.Body)
	}
}

// smallFS mounts a tmpfs of the given size on a fresh directory and
// unmounts it when the test ends (after the processes started later are
// killed: cleanups run last-registered first). It skips the test when it
// cannot mount (not root, no tmpfs).
func smallFS(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a %s tmpfs on %s: %v %s", size, dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("unmounting %s: %v %s; trying a lazy unmount", dir, err, out)
			exec.Command("umount", "-l", dir).Run()
		}
	})
	return dir
}

// fill writes a file in dir until the file system is full, leaving
// about keep bytes free.
func fill(t *testing.T, path string, keep int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(path), &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	chunk := make([]byte, 64<<10)
	for written := int64(0); written+int64(len(chunk)) <= free-keep; written += int64(len(chunk)) {
		if _, err := f.Write(chunk); err != nil {
			break // full already
		}
	}
	if keep == 0 {
		for {
			if _, err := f.Write(chunk[:4096]); err != nil {
				break
			}
		}
	}
	f.Sync()
}

// Disk full: nothing acknowledged is lost, /readyz says what is wrong, and
// once space is freed acknowledged changes resume within 10 s with no
// restart.
func TestDiskFullRecoversWithoutRestart(t *testing.T) {
	mnt := smallFS(t, "64m")
	p := startTwinhub(t, filepath.Join(mnt, "data"))
	const devices = 4
	for d := range devices {
		if r := p.call(t, "PUT", fmt.Sprintf("/devices/full-%d", d), `{}`); r.Status != 200 {
			t.Fatalf("creating device: %d %s", r.Status, r.Body)
		}
	}
	filler := filepath.Join(mnt, "filler")
	fill(t, filler, 2<<20)

	// Load each device with sequential changes until writes have failed
	// for a while; remember the last acknowledged change of each.
	client := &http.Client{Timeout: 5 * time.Second}
	var patchWith func(client *http.Client, d, n int) (int, error)
	patch := func(d, n int) (int, error) { return patchWith(client, d, n) }
	patchWith = func(client *http.Client, d, n int) (int, error) {
		req, _ := http.NewRequest("PATCH", fmt.Sprintf("%s/twins/full-%d", p.HTTP, d), strings.NewReader(fmt.Sprintf(`{"tags":{"n":%d}}`, n)))
		req.Header.Set("Authorization", p.ownerToken(t))
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	var (
		mu        sync.Mutex
		lastAcked [devices]int
		acked     [devices]int
		failed    int
		next      [devices]int
	)
	deadline := time.Now().Add(60 * time.Second)
	var wg sync.WaitGroup
	for d := range devices {
		wg.Add(1)
		// Exits after 3 failed changes or at the deadline.
		go func() {
			defer wg.Done()
			fails := 0
			for n := 1; fails < 3 && time.Now().Before(deadline); n++ {
				code, err := patch(d, n)
				mu.Lock()
				next[d] = n + 1
				if err == nil && code/100 == 2 {
					lastAcked[d], acked[d] = n, acked[d]+1
				} else {
					fails++
					failed++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("before freeing space: %v acknowledged, %d failed", acked, failed)
	if failed == 0 {
		t.Fatal("no change failed; the file system never filled up")
	}
	ready := func() (int, string) {
		resp, err := http.Get(p.HTTP + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := ready(); code != 503 || !strings.Contains(body, "write") {
		t.Errorf("/readyz while the disk is full: %d %s; want 503 naming the write failure", code, body)
	}
	if !regexp.MustCompile(`level=ERROR msg="JetStream cannot store writes.*no space left`).MatchString(p.logs.String()) {
		t.Errorf("no ERROR log line says JetStream cannot store writes, and why")
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	var resumed time.Duration
	waitFor(t, 10*time.Second, "an acknowledged change after space was freed", func() bool {
		mu.Lock()
		n := next[0]
		next[0]++
		mu.Unlock()
		// Short attempts, so that the time measured is close to the truth.
		code, err := patchWith(&http.Client{Timeout: time.Second}, 0, n)
		if err == nil && code/100 == 2 {
			lastAcked[0], acked[0] = n, acked[0]+1
			resumed = time.Since(freed)
			return true
		}
		return false
	})
	t.Logf("acknowledged changes resumed %s after space was freed", resumed.Round(time.Millisecond))
	waitFor(t, 10*time.Second, "/readyz 200 after recovery", func() bool { code, _ := ready(); return code == 200 })
	// The store watcher logs its recovery line after its next check, which
	// may come after the first write went through and /readyz turned 200.
	waitFor(t, 10*time.Second, "the log to say that JetStream recovered", func() bool {
		return strings.Contains(p.logs.String(), `msg="JetStream stores writes again"`)
	})
	// The rest of the pipeline followed: the query projection sees the
	// change made after the recovery.
	waitFor(t, 30*time.Second, "the query projection to see the change made after recovery", func() bool {
		rows := p.query(t, "SELECT * FROM devices WHERE deviceId = 'full-0'").rows
		var twin struct{ Tags struct{ N int } }
		return len(rows) == 1 && json.Unmarshal(rows[0], &twin) == nil && twin.Tags.N == lastAcked[0]
	})

	// No acknowledged change is lost: each device's twin holds its last
	// acknowledged value or a later one, and counts at least as many versions.
	for d := range devices {
		r := p.call(t, "GET", fmt.Sprintf("/twins/full-%d", d), "")
		if r.Status != 200 {
			t.Fatalf("GET twin %d: %d %s", d, r.Status, r.Body)
		}
		doc := r.json(t)
		n, _ := get(doc, "tags.n").(float64)
		v, _ := get(doc, "version").(float64)
		if int(n) < lastAcked[d] {
			t.Errorf("device full-%d: tag n = %v, but change %d was acknowledged", d, n, lastAcked[d])
		}
		if int(v) < acked[d]+1 {
			t.Errorf("device full-%d: version %v after %d acknowledged changes", d, v, acked[d])
		}
	}
	select {
	case <-p.exited:
		t.Fatalf("twinhub exited: %v", p.exitErr)
	default:
	}
}

// lastBlock returns the newest message block of a stream in a data directory.
func lastBlock(t *testing.T, dataDir, stream string) string {
	t.Helper()
	blocks, err := filepath.Glob(filepath.Join(dataDir, "jetstream", "jetstream", "*", "streams", stream, "msgs", "*.blk"))
	if err != nil || len(blocks) == 0 {
		t.Fatalf("no message blocks of %s under %s: %v", stream, dataDir, err)
	}
	index := func(p string) int {
		n, _ := strconv.Atoi(strings.TrimSuffix(filepath.Base(p), ".blk"))
		return n
	}
	last := blocks[0]
	for _, b := range blocks {
		if index(b) > index(last) {
			last = b
		}
	}
	return last
}

// Data JetStream finds damaged at start is reported loudly: an ERROR log
// line naming the stream and what was lost, a metric, and /readyz (which
// stays 200: see reportLostData). The device whose files were cut keeps
// taking changes, and what survives in the other stream is not lost.
func TestCorruptionAtStartIsLoud(t *testing.T) {
	for _, tc := range []struct {
		name, stream string
		// logged is what the ERROR line must say besides the stream.
		logged *regexp.Regexp
		// wantN is tags.n after the restart and one more change: the last
		// acknowledged value whatever stream still holds it.
		wantN float64
	}{
		// The newest events are gone; the twin record, written after them,
		// still holds every acknowledged change.
		{"event stream tail", "TWINHUB_EVENTS", regexp.MustCompile(`lost_sequences="?[1-9]`), 100},
		// The newest record writes are gone; the events still hold them and
		// are replayed into the record.
		{"twin bucket tail", "KV_twinhub_twins", regexp.MustCompile(`lost_bytes=[1-9]`), 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p := startTwinhub(t, dir)
			if r := p.call(t, "PUT", "/devices/torn-1", `{}`); r.Status != 200 {
				t.Fatalf("creating device: %d %s", r.Status, r.Body)
			}
			for n := 1; n <= 100; n++ {
				if r := p.call(t, "PATCH", "/twins/torn-1", fmt.Sprintf(`{"tags":{"n":%d,"pad":"%s"}}`, n, strings.Repeat("x", 200))); r.Status != 200 {
					t.Fatalf("PATCH %d: %d %s", n, r.Status, r.Body)
				}
			}
			p.kill()

			blk := lastBlock(t, dir, tc.stream)
			st, err := os.Stat(blk)
			if err != nil {
				t.Fatal(err)
			}
			cut := min(int64(4096), st.Size()/2)
			if err := os.Truncate(blk, st.Size()-cut); err != nil {
				t.Fatal(err)
			}
			t.Logf("cut %d of %d bytes off %s", cut, st.Size(), blk)

			p = startTwinhub(t, dir)
			var errLine string
			for _, l := range strings.Split(p.logs.String(), "\n") {
				if strings.Contains(l, "level=ERROR") && strings.Contains(l, "stream="+tc.stream) && tc.logged.MatchString(l) {
					errLine = l
					break
				}
			}
			if errLine == "" {
				t.Errorf("no ERROR log line names %s and what it lost (%s)", tc.stream, tc.logged)
			} else {
				t.Logf("log: %s", errLine)
			}

			metrics := p.call(t, "GET", "/metrics", "")
			re := regexp.MustCompile(`(?m)^twinhub_jetstream_lost_bytes\{stream="` + tc.stream + `"\} (\d+)`)
			if m := re.FindSubmatch(metrics.Body); m == nil || string(m[1]) == "0" {
				t.Errorf("twinhub_jetstream_lost_bytes does not report %s's loss:\n%s", tc.stream, grepLines(string(metrics.Body), "twinhub_jetstream_lost"))
			}

			resp, err := http.Get(p.HTTP + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(body), tc.stream) || !strings.Contains(string(body), "lost") {
				t.Errorf("/readyz after corruption at start: %d %s; want 200 naming %s and the loss", resp.StatusCode, body, tc.stream)
			} else {
				t.Logf("/readyz: %s", body)
			}

			// The device still takes changes (before, its partition was stuck
			// for good), and its twin holds the last acknowledged change.
			if r := p.call(t, "PATCH", "/twins/torn-1", `{"tags":{"m":1}}`); r.Status != 200 {
				t.Fatalf("PATCH after the loss: %d %s", r.Status, r.Body)
			}
			doc := p.call(t, "GET", "/twins/torn-1", "").json(t)
			if n, m := get(doc, "tags.n"), get(doc, "tags.m"); n != tc.wantN || m != float64(1) {
				t.Fatalf("twin after the loss and a new change: tags.n = %v, tags.m = %v; want %v and 1", n, m, tc.wantN)
			}
		})
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
