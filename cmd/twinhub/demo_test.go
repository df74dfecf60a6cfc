package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	chdeploy "github.com/twinhub/twinhub/deploy/clickhouse"
)

// TestDemo runs `twinhub demo` against a real hub with history in a real
// ClickHouse, the way a user does, and checks that afterwards every
// analytics SQL file returns rows, that 07 (pending desired properties)
// lists exactly the demo's two stuck devices and none of the replaced,
// deleted or re-created ones, that the history endpoint and the query the
// demo suggests show the fleet, and that a second run succeeds and leaves
// the same registry.
func TestDemo(t *testing.T) {
	srv := startClickHouse(t)
	p := startTwinhub(t, "", "--clickhouse-url", srv.URL(""))
	demo := func() {
		t.Helper()
		start := time.Now()
		out, err := exec.Command(binary, "demo", "--server", p.HTTP, "--mqtt", p.MQTT, "--data-dir", p.dataDir).CombinedOutput()
		if err != nil {
			t.Fatalf("twinhub demo: %v\n%s", err, out)
		}
		t.Logf("twinhub demo took %s:\n%s", time.Since(start).Round(time.Millisecond), out)
	}
	demo()

	opts, err := chdeploy.ParseURL(srv.URL(""))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := chdeploy.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	query := func(sql string) [][]string {
		t.Helper()
		rows, err := conn.Query(ctx, sql)
		if err != nil {
			t.Fatalf("%v\n%s", err, sql)
		}
		defer rows.Close()
		var out [][]string
		cols := rows.ColumnTypes()
		for rows.Next() {
			dest := make([]any, len(cols))
			for i, c := range cols {
				dest[i] = reflectNew(c.ScanType())
			}
			if err := rows.Scan(dest...); err != nil {
				t.Fatal(err)
			}
			row := make([]string, len(dest))
			for i, d := range dest {
				v := reflect.ValueOf(d).Elem()
				for v.Kind() == reflect.Pointer && !v.IsNil() {
					v = v.Elem()
				}
				row[i] = fmt.Sprint(v.Interface())
			}
			out = append(out, row)
		}
		return out
	}
	// The demo's last change is the new demo-03 reporting over cellular;
	// the sink writes in stream order, so once it is in, all is.
	waitFor(t, 30*time.Second, "the demo's last change in ClickHouse", func() bool {
		return len(query(`SELECT 1 FROM twin_events WHERE device_id = 'demo-03' AND source = 'device' AND position(patch, 'cellular') > 0`)) > 0
	})

	for _, q := range chdeploy.Analytics() {
		got := query(q.SQL)
		if len(got) == 0 {
			t.Errorf("analytics %s returns no rows after the demo: %s", q.Name, q.Title)
			continue
		}
		t.Logf("%s: %d rows, first %q", q.Name, len(got), got[0])
		switch {
		case strings.HasPrefix(q.Name, "07_"):
			want := [][]string{
				{"demo-06", "firmware.version", `"1.1.0"`, `"1.0.0"`},
				{"demo-08", "firmware.version", `"1.1.0"`, ""},
				{"demo-08", "telemetryConfig.sendFrequency", `"5m"`, ""},
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("07 after the demo:\n got %q\nwant %q", got, want)
			}
		case strings.HasPrefix(q.Name, "01_"):
			var plants []string
			for _, r := range got {
				plants = append(plants, r[0])
			}
			if want := []string{"Berlin", "Lyon", "Redmond43"}; !slices.Equal(slices.Compact(plants), want) {
				t.Errorf("01 after the demo: plants %q, want %q", plants, want)
			}
		}
	}

	r := p.call(t, "GET", "/twins/demo-01/history", "")
	var hist struct{ Events []json.RawMessage }
	if err := json.Unmarshal(r.Body, &hist); r.Status != 200 || err != nil || len(hist.Events) < 8 {
		t.Errorf("demo-01's history: %d, %d events (want at least 8): %.300s", r.Status, len(hist.Events), r.Body)
	}
	out, err := exec.Command(binary, "query", "--server", p.HTTP, "--data-dir", p.dataDir, "-o", "json",
		"SELECT deviceId, tags.location.plant AS plant, properties.reported.firmware.version AS firmware FROM devices WHERE tags.model = 'TH-200'").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"1.2.0"`) || !strings.Contains(string(out), "demo-08") || strings.Contains(string(out), "demo-07") {
		t.Errorf("the demo's suggested query: %v\n%s", err, out)
	}

	devices := func() []string {
		var list []struct{ DeviceID string }
		json.Unmarshal(p.call(t, "GET", "/devices", "").Body, &list)
		var ids []string
		for _, d := range list {
			ids = append(ids, d.DeviceID)
		}
		slices.Sort(ids)
		return ids
	}
	first := devices()
	demo() // again: the earlier fleet is deleted and seeded afresh
	if second := devices(); !slices.Equal(first, second) || len(second) != 7 {
		t.Errorf("devices after the first demo %q, after the second %q; want the same 7", first, second)
	}
}

func reflectNew(t reflect.Type) any { return reflect.New(t).Interface() }
