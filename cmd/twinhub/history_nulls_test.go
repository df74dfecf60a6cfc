package main

import (
	"context"
	"encoding/json"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"

	chdeploy "github.com/twinhub/twinhub/deploy/clickhouse"
)

// TestHistoryNullSections: deletions made wholesale (desired and tags set to
// null, a replacement dropping keys) are history like any change. Each
// change event states the removed keys as nulls, ClickHouse holds a delete
// row in twin_leaves for each, and GET /twins/{id}?asOf= gives the twin as
// it was after each change, from JetStream right away and from ClickHouse
// once the sink wrote the events.
func TestHistoryNullSections(t *testing.T) {
	srv := startClickHouse(t)
	p := startTwinhub(t, "", "--clickhouse-url", srv.URL(""))
	const id = "hist-nulls"
	if r := p.call(t, "PUT", "/devices/"+id, ""); r.Status != 200 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	type moment struct {
		at   time.Time
		twin map[string]any
	}
	var moments []moment
	change := func(method, body string) {
		t.Helper()
		if r := p.call(t, method, "/twins/"+id, body, "If-Match", "*"); r.Status != 200 {
			t.Fatalf("%s %s: %d %s", method, body, r.Status, r.Body)
		}
		r := p.call(t, "GET", "/twins/"+id, "")
		moments = append(moments, moment{time.Now().UTC(), historyView(t, r.Body)})
	}
	change("PATCH", `{"tags":{"site":"x","loc":{"a":1}},"properties":{"desired":{"foo":1,"bar":{"b":2}}}}`)
	change("PATCH", `{"properties":{"desired":null}}`)
	change("PATCH", `{"tags":null,"properties":{"desired":{"a":1,"b":{"c":2}}}}`)
	change("PUT", `{"tags":{"t":1},"properties":{"desired":{"a":1,"d":3}}}`)

	// The events state the deletions (newest first).
	r := p.call(t, "GET", "/twins/"+id+"/history?limit=3", "")
	if r.Status != 200 {
		t.Fatalf("history: %d %s", r.Status, r.Body)
	}
	var page struct {
		Events []struct {
			Version float64
			Patch   json.RawMessage
		}
	}
	json.Unmarshal(r.Body, &page)
	wantPatches := []string{
		`{"tags":{"t":1},"properties":{"desired":{"a":1,"b":null,"d":3}}}`,
		`{"tags":{"site":null,"loc":null},"properties":{"desired":{"a":1,"b":{"c":2}}}}`,
		`{"properties":{"desired":{"foo":null,"bar":null}}}`,
	}
	if len(page.Events) != 3 {
		t.Fatalf("history: %s", r.Body)
	}
	for i, e := range page.Events {
		var got any
		json.Unmarshal(e.Patch, &got)
		if !sameJSON(t, got, wantPatches[i]) {
			t.Errorf("event version %v: patch %s, want %s", e.Version, e.Patch, wantPatches[i])
		}
	}

	check := func(when string) {
		t.Helper()
		for i, m := range moments {
			r := p.call(t, "GET", "/twins/"+id+"?asOf="+url.QueryEscape(m.at.Format(time.RFC3339Nano)), "")
			if got := historyView(t, r.Body); r.Status != 200 || !reflect.DeepEqual(got, m.twin) {
				gb, _ := json.Marshal(got)
				wb, _ := json.Marshal(m.twin)
				t.Errorf("%s: asOf moment %d: %d\n got %s\nwant %s", when, i, r.Status, gb, wb)
			}
		}
	}
	check("right away")
	waitFor(t, 30*time.Second, "the sink to write every event", func() bool {
		w, _ := strconv.ParseFloat(p.metricValue(t, "twinhub_history_events_written_total"), 64)
		return p.metricValue(t, "twinhub_history_lag_events") == "0" && w >= 5
	})
	check("from ClickHouse")

	opts, err := chdeploy.ParseURL(srv.URL(""))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := chdeploy.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rows, err := conn.Query(ctx, `SELECT version, toString(section), path FROM twin_leaves
		WHERE device_id = ? AND op = 'delete' ORDER BY version, section, path`, id)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var deletes []string
	for rows.Next() {
		var v int64
		var section, path string
		if err := rows.Scan(&v, &section, &path); err != nil {
			t.Fatal(err)
		}
		deletes = append(deletes, strconv.FormatInt(v, 10)+" "+section+" "+path)
	}
	// Version 4 deletes desired foo and bar; 5 the tags site and loc; the
	// replacement (6) deletes the roots of tags and desired, and b.
	want := []string{"4 desired bar", "4 desired foo", "5 tags loc", "5 tags site", "6 tags ", "6 desired ", "6 desired b"}
	if !slices.Equal(deletes, want) {
		t.Errorf("delete rows in twin_leaves: %q, want %q", deletes, want)
	}
}
