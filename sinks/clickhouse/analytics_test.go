package clickhouse

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	chdeploy "github.com/twinhub/twinhub/deploy/clickhouse"
	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
	"github.com/twinhub/twinhub/pipeline/twin"
)

// fleet publishes hand-made change events with chosen times.
type fleet struct {
	t      *testing.T
	e      *env
	ver    map[string]int64
	gen    map[string]string
	events []pipeline.Event
}

func (f *fleet) publish(ev pipeline.Event, at time.Time) {
	f.t.Helper()
	ev.Time = twin.FormatTime(at)
	ev.CommandID = fmt.Sprintf("cmd-%d", len(f.events))
	if ev.Op == pipeline.OpCreateDevice {
		f.gen[ev.DeviceID] = fmt.Sprintf("g%d", len(f.events))
		f.ver[ev.DeviceID] = 2
	} else {
		f.ver[ev.DeviceID]++
	}
	ev.GenerationID, ev.Version = f.gen[ev.DeviceID], f.ver[ev.DeviceID]
	if ev.Source == "" {
		ev.Source = pipeline.SourceBackend
	}
	b, _ := json.Marshal(ev)
	if _, err := f.e.js.Publish(context.Background(), topology.EventSubject(ev.DeviceID), b); err != nil {
		f.t.Fatal(err)
	}
	f.events = append(f.events, ev)
}

func (f *fleet) create(dev string, at time.Time) {
	f.publish(pipeline.Event{DeviceID: dev, Op: pipeline.OpCreateDevice, Status: "enabled"}, at)
}

func (f *fleet) report(dev string, at time.Time, patch string) {
	f.publish(pipeline.Event{DeviceID: dev, Op: pipeline.OpUpdateTwin, Source: pipeline.SourceDevice,
		Patch: pipeline.EventPatch{Properties: &pipeline.EventProperties{Reported: json.RawMessage(patch)}}}, at)
}

func (f *fleet) service(dev string, at time.Time, tags, desired string) {
	ev := pipeline.Event{DeviceID: dev, Op: pipeline.OpUpdateTwin}
	if tags != "" {
		ev.Patch.Tags = json.RawMessage(tags)
	}
	if desired != "" {
		ev.Patch.Properties = &pipeline.EventProperties{Desired: json.RawMessage(desired)}
	}
	f.publish(ev, at)
}

func (f *fleet) replace(dev string, at time.Time, tags, desired string) {
	f.publish(pipeline.Event{DeviceID: dev, Op: pipeline.OpReplaceTwin, Patch: pipeline.EventPatch{Tags: json.RawMessage(tags),
		Properties: &pipeline.EventProperties{Desired: json.RawMessage(desired)}}}, at)
}

// TestAnalyticsQueries runs every documented analytics query
// (deploy/clickhouse/analytics, copied into the README) over a small fleet
// whose answers are known, written by the sink. The fleet has desired
// properties on devices whose twin is then replaced (d4) or that are
// deleted (d6) or deleted and created again (d8), an object of desired
// properties deleted with null (d5) and a value replaced by an object
// (d1's fan): none of those may be pending in 07.
func TestAnalyticsQueries(t *testing.T) {
	e := newEnv(t, "")
	f := &fleet{t: t, e: e, ver: map[string]int64{}, gen: map[string]string{}}
	now := time.Now().UTC()
	h := now.Truncate(time.Hour).Add(-2 * time.Hour) // an hour well inside the last day
	twoDaysAgo := now.Add(-48 * time.Hour)
	recent := now.Add(-10 * time.Minute)

	for _, d := range []string{"d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8"} {
		f.create(d, twoDaysAgo.Add(-time.Hour))
	}
	f.service("d1", twoDaysAgo, `{"location":{"plant":"berlin"}}`, "")
	f.service("d2", twoDaysAgo, `{"location":{"plant":"paris"}}`, "")
	f.service("d2", h, `{"location":{"plant":"berlin"},"line":{"id":2}}`, "") // the latest plant counts for all of d2's history
	f.service("d3", twoDaysAgo, `{"location":{"plant":"paris"}}`, "")
	f.service("d4", twoDaysAgo, `{"location":{"plant":"rome"}}`, `{"fan":{"speed":3}}`)
	f.replace("d4", h, `{}`, `{}`) // d4 has no plant and no desired fan any more
	f.service("d5", twoDaysAgo, `{"location":{"plant":"oslo"}}`, `{"mode":{"eco":true}}`)
	f.service("d5", h, `{"location":null}`, `{"mode":null}`)                 // no plant, no desired mode.eco
	f.replace("d7", h, `{"location":{"plant":"paris","region":"EU"}}`, `{}`) // section delete and set in one event
	f.service("d6", h, "", `{"interval":60}`)                                // d6 is deleted below
	f.service("d1", twoDaysAgo, "", `{"fan":"auto"}`)
	f.service("d1", h, "", `{"fan":{"speed":2}}`) // an object replaces the value
	f.service("d8", h, "", `{"interval":40}`)
	f.publish(pipeline.Event{DeviceID: "d8", Op: pipeline.OpDeleteDevice}, h.Add(time.Minute))
	f.create("d8", h.Add(2*time.Minute)) // the same ID again: a new device
	f.service("d8", h.Add(3*time.Minute), "", `{"interval":45}`)

	f.report("d1", twoDaysAgo, `{"firmware":{"version":"1.0"}}`)
	f.report("d2", twoDaysAgo, `{"firmware":{"version":"1.0"}}`)
	f.report("d1", h.Add(10*time.Minute), `{"temperature":20}`)
	f.report("d2", h.Add(11*time.Minute), `{"temperature":22}`)
	f.report("d3", h.Add(12*time.Minute), `{"temperature":30,"firmware":{"version":"2.0"}}`)
	f.report("d7", h.Add(13*time.Minute), `{"temperature":32}`)
	f.report("d4", h.Add(14*time.Minute), `{"temperature":99}`)
	f.report("d1", h.Add(70*time.Minute), `{"temperature":24,"status":"ok"}`)
	f.report("d1", h.Add(71*time.Minute), `{"status":null}`)

	desiredAt := h.Add(20 * time.Minute)
	f.service("d1", desiredAt, "", `{"interval":10}`)
	f.service("d2", desiredAt, "", `{"interval":20}`)
	f.service("d3", desiredAt, "", `{"interval":30}`)
	f.report("d1", desiredAt.Add(2*time.Second), `{"interval":10}`)
	f.report("d2", desiredAt.Add(4*time.Second), `{"interval":20}`)
	f.report("d1", recent, `{"firmware":{"version":"1.1"}}`)
	f.publish(pipeline.Event{DeviceID: "d6", Op: pipeline.OpDeleteDevice}, recent)

	s := e.sink(Config{FlushInterval: 50 * time.Millisecond}, nil)
	run(t, s)
	e.waitCommitted(s, 30*time.Second)

	hour := func(t time.Time) string { return t.Truncate(time.Hour).Format(time.DateTime) }
	want := map[string][][]string{
		"01_temperature_per_plant_hour": {
			{"berlin", hour(h), "21", "2"},
			{"berlin", hour(h.Add(time.Hour)), "24", "1"},
			{"paris", hour(h), "31", "2"},
		},
		"02_firmware_changed_last_day": {
			{"d1", "1.0", "1.1", recent.Format(time.DateTime)},
			{"d3", "", "2.0", h.Add(12 * time.Minute).Format(time.DateTime)},
		},
		"03_desired_to_reported_latency": {
			{"interval", "2", "3", "4"},
		},
		"04_most_changed_properties":    mostChanged(t, f.events, now),
		"05_changes_per_hour_by_source": changesPerHour(f.events, now),
		"06_silent_devices": {
			{"d5", "1970-01-01 00:00:00"}, // clickhouse-client prints 0000-00-00 00:00:00
			{"d8", "1970-01-01 00:00:00"},
			{"d3", h.Add(12 * time.Minute).Format(time.DateTime)},
			{"d7", h.Add(13 * time.Minute).Format(time.DateTime)},
			{"d4", h.Add(14 * time.Minute).Format(time.DateTime)},
			{"d2", desiredAt.Add(4 * time.Second).Format(time.DateTime)},
		},
		"07_desired_not_yet_reported": {
			{"d1", "fan.speed", "2", ""},
			{"d3", "interval", "30", ""},
			{"d8", "interval", "45", ""},
		},
	}
	queries := chdeploy.Analytics()
	if len(queries) < 6 {
		t.Fatalf("%d analytics queries, the README promises at least six", len(queries))
	}
	for _, q := range queries {
		t.Run(q.Name, func(t *testing.T) {
			w, ok := want[q.Name]
			if !ok {
				t.Fatalf("no expected result for analytics query %s", q.Name)
			}
			got := queryStrings(t, e, q.SQL)
			if len(w) == 0 {
				t.Fatal("BUG: the expected result is empty; the query would prove nothing")
			}
			if !reflect.DeepEqual(got, w) {
				t.Errorf("%s\n got %q\nwant %q", q.Title, got, w)
			}
		})
	}
}

// mostChanged computes query 04 from the events: leaf changes per
// (section, path) in the last 7 days, sections in enum order.
func mostChanged(t *testing.T, events []pipeline.Event, now time.Time) [][]string {
	type key struct{ section, path string }
	changes := map[key]int{}
	devices := map[key]map[string]bool{}
	for _, ev := range events {
		at, _ := time.Parse(time.RFC3339Nano, ev.Time)
		if at.Before(now.Add(-7 * 24 * time.Hour)) {
			continue
		}
		leaves, err := Leaves(&ev)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range leaves {
			if l.Path == "" {
				continue
			}
			k := key{l.Section, l.Path}
			changes[k]++
			if devices[k] == nil {
				devices[k] = map[string]bool{}
			}
			devices[k][ev.DeviceID] = true
		}
	}
	order := map[string]int{SectionTags: 1, SectionDesired: 2, SectionReported: 3}
	keys := make([]key, 0, len(changes))
	for k := range changes {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if changes[a] != changes[b] {
			return changes[a] > changes[b]
		}
		if a.section != b.section {
			return order[a.section] < order[b.section]
		}
		return a.path < b.path
	})
	var out [][]string
	for _, k := range keys[:min(20, len(keys))] {
		out = append(out, []string{k.section, k.path, fmt.Sprint(changes[k]), fmt.Sprint(len(devices[k]))})
	}
	return out
}

// changesPerHour computes query 05 from the events.
func changesPerHour(events []pipeline.Event, now time.Time) [][]string {
	type key struct{ hour, source string }
	n := map[key]int{}
	devices := map[key]map[string]bool{}
	for _, ev := range events {
		at, _ := time.Parse(time.RFC3339Nano, ev.Time)
		if at.Before(now.Add(-24*time.Hour)) || (ev.Op != pipeline.OpUpdateTwin && ev.Op != pipeline.OpReplaceTwin) {
			continue
		}
		k := key{at.Truncate(time.Hour).Format(time.DateTime), ev.Source}
		n[k]++
		if devices[k] == nil {
			devices[k] = map[string]bool{}
		}
		devices[k][ev.DeviceID] = true
	}
	keys := make([]key, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].hour != keys[j].hour {
			return keys[i].hour < keys[j].hour
		}
		return keys[i].source < keys[j].source
	})
	var out [][]string
	for _, k := range keys {
		out = append(out, []string{k.hour, k.source, fmt.Sprint(n[k]), fmt.Sprint(len(devices[k]))})
	}
	return out
}

// queryStrings runs sql and renders every cell as text: times as
// "2006-01-02 15:04:05" (UTC), NULL as "NULL".
func queryStrings(t *testing.T, e *env, sql string) [][]string {
	t.Helper()
	rows, err := e.conn.Query(context.Background(), sql)
	if err != nil {
		t.Fatalf("%v\n%s", err, sql)
	}
	defer rows.Close()
	types := rows.ColumnTypes()
	var out [][]string
	for rows.Next() {
		dest := make([]any, len(types))
		for i, ct := range types {
			dest[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			t.Fatal(err)
		}
		row := make([]string, len(dest))
		for i, d := range dest {
			v := reflect.ValueOf(d).Elem()
			for v.Kind() == reflect.Pointer {
				if v.IsNil() {
					break
				}
				v = v.Elem()
			}
			switch x := v.Interface().(type) {
			case time.Time:
				row[i] = x.UTC().Format(time.DateTime)
			default:
				if v.Kind() == reflect.Pointer && v.IsNil() {
					row[i] = "NULL"
				} else {
					row[i] = strings.TrimSpace(fmt.Sprint(x))
				}
			}
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
