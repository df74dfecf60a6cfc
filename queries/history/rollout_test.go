package history

import (
	"context"
	"errors"
	"testing"
	"time"

	chdeploy "github.com/twinhub/twinhub/deploy/clickhouse"
	"github.com/twinhub/twinhub/deploy/clickhouse/testserver"
	"github.com/twinhub/twinhub/pipeline"
)

// TestRollout: for a desired property, each instant counts the devices
// with it set and those whose reported value matches it, with deletes of the
// property or a parent clearing it, and a replacement (a delete of the root
// and a set in the same event) setting it. The answers were worked out by hand.
func TestRollout(t *testing.T) {
	opts, err := chdeploy.ParseURL(testserver.Database(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := chdeploy.EnsureSchema(ctx, opts); err != nil {
		t.Fatal(err)
	}
	conn, err := chdeploy.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	t0 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	type leaf struct {
		device, section, path, op, value string
		at                               time.Duration
		seq                              uint64
	}
	leaves := []leaf{
		{"a", "desired", "fw.v", "set", `"2"`, 0, 1},
		{"a", "reported", "fw.v", "set", `"2"`, 2 * time.Minute, 2},
		{"b", "desired", "fw.v", "set", `"2"`, time.Minute, 3},
		{"b", "reported", "fw.v", "set", `"1"`, 3 * time.Minute, 4},
		{"b", "reported", "fw.v", "set", `"2"`, 4 * time.Minute, 5},
		{"c", "desired", "fw.v", "set", `"2"`, time.Minute, 6},
		{"c", "desired", "fw", "delete", "null", 3 * time.Minute, 7}, // a parent deleted
		{"d", "reported", "fw.v", "set", `"2"`, 0, 8},                // never targeted
		{"e", "desired", "", "delete", "null", 2 * time.Minute, 9},   // replaceTwin: root deleted, then set
		{"e", "desired", "fw.v", "set", `"3"`, 2 * time.Minute, 9},
		{"e", "desired", "other", "set", `"2"`, 2 * time.Minute, 9},
	}
	b, err := conn.PrepareBatch(ctx, "INSERT INTO twin_leaves (device_id, generation_id, version, event_time, event_time_ns, "+
		"section, path, op, value_json, value_type, value_number, value_string, value_bool, stream_seq)")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range leaves {
		at := t0.Add(l.at)
		typ := "string"
		if l.op == "delete" {
			typ = "null"
		}
		if err := b.Append(l.device, "g1", int64(l.seq+1), at, at.UnixNano(), l.section, l.path, l.op, l.value, typ,
			nil, nil, nil, l.seq); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}

	r := New(Config{}, conn, nil)
	got, err := r.Rollout(ctx, pipeline.RolloutQuery{Path: "fw.v", From: t0.Add(-30 * time.Second), To: t0.Add(4*time.Minute + 30*time.Second), Points: 6})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ targeted, matching uint64 }{{0, 0}, {1, 0}, {3, 0}, {4, 1}, {3, 1}, {3, 2}}
	if len(got) != len(want) {
		t.Fatalf("got %d points, want %d", len(got), len(want))
	}
	for i, w := range want {
		at := t0.Add(-30*time.Second + time.Duration(i)*time.Minute).Format(time.RFC3339)
		if g := got[i]; g.Targeted != w.targeted || g.Matching != w.matching || g.Time[:19]+"Z" != at {
			t.Errorf("point %d: %+v, want %s targeted %d matching %d", i, g, at, w.targeted, w.matching)
		}
	}

	for _, q := range []pipeline.RolloutQuery{
		{Path: "", From: t0, To: t0.Add(time.Hour), Points: 10},
		{Path: "a..b", From: t0, To: t0.Add(time.Hour), Points: 10},
		{Path: "x", From: t0, To: t0.Add(time.Hour), Points: 1},
		{Path: "x", From: t0, To: t0.Add(time.Hour), Points: MaxRolloutPoints + 1},
		{Path: "x", From: t0, To: t0, Points: 10},
	} {
		if _, err := r.Rollout(ctx, q); !errors.Is(err, pipeline.ErrInvalidQuery) {
			t.Errorf("%+v: %v, want ErrInvalidQuery", q, err)
		}
	}
}
