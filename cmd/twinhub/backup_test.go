package main

import (
	"context"
	"encoding/json"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/pipeline/topology"
)

// hubState is what a restore must bring back: every twin as the API reads
// it, every twin's history as `twinhub twin history --all` prints it, and
// the history tables' rows as ClickHouse holds them.
type hubState struct {
	Twins   map[string]map[string]any
	History map[string]string
	Rows    map[string]string
}

func captureState(t *testing.T, p *proc, chHost, chPort string) hubState {
	t.Helper()
	s := hubState{Twins: map[string]map[string]any{}, History: map[string]string{}, Rows: map[string]string{}}
	out, err := exec.Command(binary, "query", "SELECT deviceId FROM devices", "--server", p.HTTP, "--data-dir", p.dataDir).Output()
	if err != nil {
		t.Fatalf("twinhub query: %v", err)
	}
	var ids []struct{ DeviceID string }
	if err := json.Unmarshal(out, &ids); err != nil {
		t.Fatalf("query output: %v\n%s", err, out)
	}
	if len(ids) == 0 {
		t.Fatal("the hub has no devices")
	}
	for _, d := range ids {
		r := p.call(t, "GET", "/twins/"+d.DeviceID, "")
		if r.Status != 200 {
			t.Fatalf("GET /twins/%s: %d %s", d.DeviceID, r.Status, r.Body)
		}
		s.Twins[d.DeviceID] = historyView(t, r.Body)
		h, err := exec.Command(binary, "twin", "history", "--all", d.DeviceID, "--server", p.HTTP, "--data-dir", p.dataDir).Output()
		if err != nil {
			t.Fatalf("twinhub twin history %s: %v", d.DeviceID, err)
		}
		s.History[d.DeviceID] = string(h)
	}
	for table, order := range map[string]string{
		"twin_events": "stream_seq",
		"twin_leaves": "stream_seq, section, path, op",
	} {
		s.Rows[table] = clickhouseQuery(t, chHost, chPort, "SELECT * FROM twinhub."+table+" ORDER BY "+order+" FORMAT TabSeparated")
	}
	return s
}

func clickhouseQuery(t *testing.T, host, port, query string) string {
	t.Helper()
	out, err := exec.Command("clickhouse-client", "--host", host, "--port", port, "--query", query).CombinedOutput()
	if err != nil {
		t.Fatalf("clickhouse-client --query %q: %v\n%s", query, err, out)
	}
	return string(out)
}

// waitHistoryWritten waits until ClickHouse holds a row for every change
// event in the hub's stream.
func waitHistoryWritten(t *testing.T, p *proc, chHost, chPort string) {
	t.Helper()
	u, err := url.Parse(p.NATS)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := exec.Command(binary, "nats-credentials", "--data-dir", p.dataDir, "--nats-addr", u.Host).Output()
	if err != nil {
		t.Fatalf("twinhub nats-credentials: %v", err)
	}
	natsURL := ""
	for _, l := range strings.Split(string(creds), "\n") {
		if v, ok := strings.CutPrefix(l, "NATS_URL="); ok {
			natsURL = v
		}
	}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, topology.EventStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := strconv.FormatUint(info.State.LastSeq, 10)
	waitFor(t, 60*time.Second, "ClickHouse to hold all "+want+" change events", func() bool {
		return strings.TrimSpace(clickhouseQuery(t, chHost, chPort, "SELECT count() FROM twinhub.twin_events")) == want
	})
}

// TestBackupRestore backs a hub up the way the README says (stop it, run
// deploy/backup/backup.sh for its data directory and its ClickHouse
// database), wipes both, restores them with deploy/backup/restore.sh, and
// starts the hub again: every twin, every twin's history and every history
// row are as they were, and the hub goes on from there.
func TestBackupRestore(t *testing.T) {
	if _, err := exec.LookPath("clickhouse-client"); err != nil {
		t.Skip("clickhouse-client is not installed (make deps)")
	}
	srv := startClickHouse(t)
	chHost, chPort, err := net.SplitHostPort(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(t.TempDir(), "data")
	p := startTwinhub(t, dataDir, "--clickhouse-url", srv.URL(""))
	if out, err := exec.Command(binary, "demo", "--server", p.HTTP, "--data-dir", dataDir, "--mqtt", p.MQTT).CombinedOutput(); err != nil {
		t.Fatalf("twinhub demo: %v\n%s", err, out)
	}
	waitHistoryWritten(t, p, chHost, chPort)
	before := captureState(t, p, chHost, chPort)
	p.stop()

	backup := t.TempDir()
	env := append(os.Environ(), "TWINHUB_DATA_DIR="+dataDir, "CLICKHOUSE_HOST="+chHost, "CLICKHOUSE_PORT="+chPort)
	script := func(name string) {
		t.Helper()
		cmd := exec.Command("sh", filepath.Join(repoRoot, "deploy/backup", name), backup)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		t.Logf("%s:\n%s", name, out)
	}
	script("backup.sh")

	// Wipe: the data directory and the history database are gone.
	if err := os.RemoveAll(dataDir); err != nil {
		t.Fatal(err)
	}
	clickhouseQuery(t, chHost, chPort, "DROP DATABASE twinhub")

	script("restore.sh")
	// Restoring again over the restored state is refused, rows are never doubled.
	cmd := exec.Command("sh", filepath.Join(repoRoot, "deploy/backup/restore.sh"), backup)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "not empty") {
		t.Errorf("a second restore into the restored data directory: %v\n%s", err, out)
	}

	p = startTwinhub(t, dataDir, "--clickhouse-url", srv.URL(""))
	after := captureState(t, p, chHost, chPort)
	for id, twin := range before.Twins {
		if !reflect.DeepEqual(twin, after.Twins[id]) {
			t.Errorf("twin %s after the restore:\n%v\nbefore:\n%v", id, after.Twins[id], twin)
		}
		if before.History[id] != after.History[id] {
			t.Errorf("history of %s after the restore:\n%s\nbefore:\n%s", id, after.History[id], before.History[id])
		}
	}
	if len(after.Twins) != len(before.Twins) {
		t.Errorf("%d twins after the restore, %d before", len(after.Twins), len(before.Twins))
	}
	for table, rows := range before.Rows {
		if after.Rows[table] != rows {
			t.Errorf("ClickHouse %s differs after the restore: %d bytes, %d before", table, len(after.Rows[table]), len(rows))
		}
	}

	// The restored hub goes on: a change gets the next version, and its
	// history row is written once, after the restored ones.
	r := p.call(t, "PATCH", "/twins/demo-01", `{"tags":{"restored":true}}`)
	if r.Status != 200 {
		t.Fatalf("PATCH after the restore: %d %s", r.Status, r.Body)
	}
	if got, want := r.json(t)["version"], before.Twins["demo-01"]["version"].(float64)+1; got != want {
		t.Errorf("version after the restore's first change: %v, want %v", got, want)
	}
	waitHistoryWritten(t, p, chHost, chPort)
	if dup := clickhouseQuery(t, chHost, chPort, "SELECT count() - uniqExact(device_id, generation_id, version) FROM twinhub.twin_events"); strings.TrimSpace(dup) != "0" {
		t.Errorf("ClickHouse holds %s duplicate versions after the restore", strings.TrimSpace(dup))
	}
}
