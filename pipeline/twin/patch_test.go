package twin

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

func equalJSON(a, b any) bool    { return reflect.DeepEqual(a, b) }
func equalTwins(a, b *Twin) bool { return reflect.DeepEqual(a, b) }

// compact strips the insignificant white space of a golden literal.
func compact(t testing.TB, s string) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatalf("golden literal is not JSON: %v", err)
	}
	return b.String()
}

func mustMarshal(t testing.TB, tw *Twin) string {
	t.Helper()
	b, err := tw.MarshalJSON()
	if err != nil {
		t.Fatalf("MarshalJSON: %v", err)
	}
	return string(b)
}

// The times of the seed flow; t1() has digits beyond 100 ns and t3() is not in
// UTC, to show that changes truncate and convert now.
func t0() time.Time { return time.Date(2024, 5, 1, 9, 59, 0, 0, time.UTC) }
func t1() time.Time { return time.Date(2024, 5, 1, 10, 0, 3, 123456789, time.UTC) } // ...3.1234567
func t2() time.Time { return time.Date(2024, 5, 1, 10, 0, 5, 500000000, time.UTC) }
func t3() time.Time { return time.Date(2024, 5, 1, 12, 1, 0, 0, time.FixedZone("CEST", 2*3600)) } // 10:01:00Z

// TestSeedFlow runs the seed samples (§6): the device reports connectivity,
// the service adds tags, then sets a desired property.
func TestSeedFlow(t *testing.T) {
	tw := New("myDeviceId", t0())
	if tw.Version != 2 || tw.Etag != 1 || tw.Desired.Version != 1 || tw.Reported.Version != 1 || tw.ETag() != "AAAAAAAAAAE=" {
		t.Fatalf("New: version %d etag %d (%s) desired %d reported %d", tw.Version, tw.Etag, tw.ETag(), tw.Desired.Version, tw.Reported.Version)
	}
	if got, want := mustMarshal(t, tw), compact(t, `{
		"deviceId":"myDeviceId","etag":"AAAAAAAAAAE=","status":"enabled","statusUpdateTime":"0001-01-01T00:00:00Z",
		"connectionState":"Disconnected","lastActivityTime":"0001-01-01T00:00:00Z","cloudToDeviceMessageCount":0,
		"authenticationType":"sas","x509Thumbprint":{"primaryThumbprint":null,"secondaryThumbprint":null},"modelId":"","version":2,
		"properties":{
			"desired":{"$metadata":{"$lastUpdated":"2024-05-01T09:59:00.0000000Z","$lastUpdatedVersion":1},"$version":1},
			"reported":{"$metadata":{"$lastUpdated":"2024-05-01T09:59:00.0000000Z"},"$version":1}},
		"capabilities":{"iotEdge":false}}`); got != want {
		t.Fatalf("new twin:\n got %s\nwant %s", got, want)
	}

	tw, err := ApplyReported(tw, patchOf(t, `{"connectivity":{"type":"cellular"}}`), t1())
	if err != nil {
		t.Fatal(err)
	}
	tw.LastActivityTime = t1().Truncate(100) // the registry's field, set by the caller
	if tw.Version != 3 || tw.Reported.Version != 2 || tw.Etag != 1 || tw.Desired.Version != 1 {
		t.Fatalf("after reported: version %d reported %d etag %d desired %d", tw.Version, tw.Reported.Version, tw.Etag, tw.Desired.Version)
	}

	tw, err = ApplyService(tw, patchOf(t, `{"location":{"region":"US","plant":"Redmond43"}}`), nil, t2())
	if err != nil {
		t.Fatal(err)
	}
	if tw.Version != 4 || tw.Etag != 2 || tw.ETag() != "AAAAAAAAAAI=" || tw.Desired.Version != 1 || tw.Reported.Version != 2 {
		t.Fatalf("after tags: version %d etag %d (%s) desired %d reported %d", tw.Version, tw.Etag, tw.ETag(), tw.Desired.Version, tw.Reported.Version)
	}
	// The reference's example twin (§1.3), without deviceEtag, which the
	// registry owns.
	if got, want := mustMarshal(t, tw), compact(t, `{
		"deviceId": "myDeviceId",
		"etag": "AAAAAAAAAAI=",
		"status": "enabled",
		"statusUpdateTime": "0001-01-01T00:00:00Z",
		"connectionState": "Disconnected",
		"lastActivityTime": "2024-05-01T10:00:03.1234567Z",
		"cloudToDeviceMessageCount": 0,
		"authenticationType": "sas",
		"x509Thumbprint": {"primaryThumbprint": null, "secondaryThumbprint": null},
		"modelId": "",
		"version": 4,
		"tags": {"location": {"plant": "Redmond43", "region": "US"}},
		"properties": {
			"desired": {
				"$metadata": {"$lastUpdated": "2024-05-01T09:59:00.0000000Z", "$lastUpdatedVersion": 1},
				"$version": 1
			},
			"reported": {
				"connectivity": {"type": "cellular"},
				"$metadata": {
					"$lastUpdated": "2024-05-01T10:00:03.1234567Z",
					"connectivity": {
						"$lastUpdated": "2024-05-01T10:00:03.1234567Z",
						"type": {"$lastUpdated": "2024-05-01T10:00:03.1234567Z"}
					}
				},
				"$version": 2
			}
		},
		"capabilities": {"iotEdge": false}
	}`); got != want {
		t.Fatalf("after tags:\n got %s\nwant %s", got, want)
	}

	tw, err = ApplyService(tw, nil, patchOf(t, `{"telemetryConfig":{"sendFrequency":"5m"}}`), t3())
	if err != nil {
		t.Fatal(err)
	}
	if tw.Version != 5 || tw.Desired.Version != 2 || tw.Etag != 3 || tw.Reported.Version != 2 {
		t.Fatalf("after desired: version %d desired %d etag %d reported %d", tw.Version, tw.Desired.Version, tw.Etag, tw.Reported.Version)
	}
	if m := tw.Desired.Meta.Children["telemetryConfig"].Children["sendFrequency"]; m.LastUpdatedVersion != 2 || !m.LastUpdated.Equal(t3()) {
		t.Fatalf("sendFrequency metadata = %+v", m)
	}
	const golden = `{"deviceId":"myDeviceId","etag":"AAAAAAAAAAM=","status":"enabled","statusUpdateTime":"0001-01-01T00:00:00Z",` +
		`"connectionState":"Disconnected","lastActivityTime":"2024-05-01T10:00:03.1234567Z","cloudToDeviceMessageCount":0,` +
		`"authenticationType":"sas","x509Thumbprint":{"primaryThumbprint":null,"secondaryThumbprint":null},"modelId":"","version":5,` +
		`"tags":{"location":{"plant":"Redmond43","region":"US"}},` +
		`"properties":{"desired":{"telemetryConfig":{"sendFrequency":"5m"},` +
		`"$metadata":{"$lastUpdated":"2024-05-01T10:01:00.0000000Z","$lastUpdatedVersion":2,` +
		`"telemetryConfig":{"$lastUpdated":"2024-05-01T10:01:00.0000000Z","$lastUpdatedVersion":2,` +
		`"sendFrequency":{"$lastUpdated":"2024-05-01T10:01:00.0000000Z","$lastUpdatedVersion":2}}},"$version":2},` +
		`"reported":{"connectivity":{"type":"cellular"},"$metadata":{"$lastUpdated":"2024-05-01T10:00:03.1234567Z",` +
		`"connectivity":{"$lastUpdated":"2024-05-01T10:00:03.1234567Z","type":{"$lastUpdated":"2024-05-01T10:00:03.1234567Z"}}},"$version":2}},` +
		`"capabilities":{"iotEdge":false}}`
	if got := mustMarshal(t, tw); got != golden {
		t.Fatalf("after desired:\n got %s\nwant %s", got, golden)
	}
	if got, want := string(tw.DeviceView()), `{"desired":{"telemetryConfig":{"sendFrequency":"5m"},"$version":2},"reported":{"connectivity":{"type":"cellular"},"$version":2}}`; got != want {
		t.Fatalf("DeviceView:\n got %s\nwant %s", got, want)
	}
	var back Twin
	if err := back.UnmarshalJSON([]byte(golden)); err != nil {
		t.Fatal(err)
	}
	if !equalTwins(&back, tw) {
		t.Fatalf("round trip of the seed twin differs:\n got %+v\nwant %+v", &back, tw)
	}
}

// base is a twin with nested desired and reported content at distinct times.
func base(t testing.TB) *Twin {
	t.Helper()
	tw := New("dev", t0())
	tw, err := ApplyService(tw, patchOf(t, `{"env":"prod","loc":{"a":1,"b":2}}`),
		patchOf(t, `{"a":{"b":{"c":1,"d":[1,2]},"e":"x"},"f":true,"g":{"h":"i"}}`), t1())
	if err != nil {
		t.Fatal(err)
	}
	tw, err = ApplyReported(tw, patchOf(t, `{"r":{"s":1,"t":{"u":"v"}},"w":[{"x":1}]}`), t1())
	if err != nil {
		t.Fatal(err)
	}
	return tw
}

func TestMergeContent(t *testing.T) {
	tests := []struct {
		name  string
		patch string
		want  string // desired props after the patch
	}{
		{"nested merge", `{"a":{"b":{"c":2,"new":"n"}}}`, `{"a":{"b":{"c":2,"d":[1,2],"new":"n"},"e":"x"},"f":true,"g":{"h":"i"}}`},
		{"null deletes", `{"a":{"b":null},"f":null}`, `{"a":{"e":"x"},"g":{"h":"i"}}`},
		{"null for a missing key is a no-op", `{"zz":null,"a":{"zz":null}}`, `{"a":{"b":{"c":1,"d":[1,2]},"e":"x"},"f":true,"g":{"h":"i"}}`},
		{"array replaces whole", `{"a":{"b":{"d":[3]}}}`, `{"a":{"b":{"c":1,"d":[3]},"e":"x"},"f":true,"g":{"h":"i"}}`},
		{"scalar replaces object", `{"a":5}`, `{"a":5,"f":true,"g":{"h":"i"}}`},
		{"array replaces object", `{"g":[{"h":"j"}]}`, `{"a":{"b":{"c":1,"d":[1,2]},"e":"x"},"f":true,"g":[{"h":"j"}]}`},
		{"object over scalar loses its nulls", `{"f":{"k":1,"gone":null,"o":{"p":null}}}`, `{"a":{"b":{"c":1,"d":[1,2]},"e":"x"},"f":{"k":1,"o":{}},"g":{"h":"i"}}`},
		{"object over missing key loses its nulls", `{"n":{"k":null}}`, `{"a":{"b":{"c":1,"d":[1,2]},"e":"x"},"f":true,"g":{"h":"i"},"n":{}}`},
		{"object over array", `{"a":{"b":{"d":{"x":1}}}}`, `{"a":{"b":{"c":1,"d":{"x":1}},"e":"x"},"f":true,"g":{"h":"i"}}`},
		{"empty patch", `{}`, `{"a":{"b":{"c":1,"d":[1,2]},"e":"x"},"f":true,"g":{"h":"i"}}`},
		{"empty object merges nothing", `{"a":{}}`, `{"a":{"b":{"c":1,"d":[1,2]},"e":"x"},"f":true,"g":{"h":"i"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := base(t)
			before := in.Clone()
			patch := patchOf(t, tt.patch)
			patchBefore := patchOf(t, tt.patch)
			got, err := ApplyService(in, nil, patch, t2())
			if err != nil {
				t.Fatal(err)
			}
			if !equalJSON(got.Desired.Props, patchOf(t, tt.want)) {
				b, _ := appendValue(nil, got.Desired.Props)
				t.Fatalf("desired = %s, want %s", b, tt.want)
			}
			if !equalTwins(in, before) || !equalJSON(patch, patchBefore) {
				t.Fatal("an input was modified")
			}
			checkMetaShape(t, got.Desired.Props, got.Desired.Meta, "properties.desired")
			if got.Desired.Version != in.Desired.Version+1 || got.Version != in.Version+1 || got.Etag != in.Etag+1 {
				t.Fatal("counters did not advance by one")
			}
		})
	}
}

// checkMetaShape fails unless meta mirrors content: one node per object
// level (Children with exactly its keys) and per leaf (Children nil).
func checkMetaShape(t testing.TB, content any, meta *Meta, path string) {
	t.Helper()
	if meta == nil {
		t.Fatalf("%s: no metadata", path)
	}
	obj, isObj := content.(map[string]any)
	if !isObj {
		if meta.Children != nil {
			t.Fatalf("%s: leaf has metadata children", path)
		}
		return
	}
	if meta.Children == nil || len(meta.Children) != len(obj) {
		t.Fatalf("%s: metadata children %d, content keys %d", path, len(meta.Children), len(obj))
	}
	for k, v := range obj {
		checkMetaShape(t, v, meta.Children[k], path+"."+k)
	}
}

func TestMergeMetadata(t *testing.T) {
	in := base(t)
	st1 := normTime(t1())
	st2 := normTime(t2())
	got, err := ApplyService(in, nil, patchOf(t, `{"a":{"b":{"c":2}},"g":null,"f":{"k":{"l":1}}}`), t2())
	if err != nil {
		t.Fatal(err)
	}
	m := got.Desired.Meta
	tests := []struct {
		name    string
		node    *Meta
		at      time.Time
		version int64
	}{
		{"root is an ancestor", m, st2, 3},
		{"a is an ancestor", m.Children["a"], st2, 3},
		{"a.b is an ancestor", m.Children["a"].Children["b"], st2, 3},
		{"a.b.c is set", m.Children["a"].Children["b"].Children["c"], st2, 3},
		{"a.b.d is an untouched sibling", m.Children["a"].Children["b"].Children["d"], st1, 2},
		{"a.e is an untouched sibling", m.Children["a"].Children["e"], st1, 2},
		{"f replaced by an object", m.Children["f"], st2, 3},
		{"f.k is a descendant of a set object", m.Children["f"].Children["k"], st2, 3},
		{"f.k.l is a descendant of a set object", m.Children["f"].Children["k"].Children["l"], st2, 3},
	}
	for _, tt := range tests {
		if tt.node == nil {
			t.Fatalf("%s: no metadata node", tt.name)
		}
		if !tt.node.LastUpdated.Equal(tt.at) || tt.node.LastUpdatedVersion != tt.version {
			t.Errorf("%s: %v v%d, want %v v%d", tt.name, tt.node.LastUpdated, tt.node.LastUpdatedVersion, tt.at, tt.version)
		}
	}
	if _, ok := m.Children["g"]; ok {
		t.Error("deleted key g kept its metadata")
	}
	checkMetaShape(t, got.Desired.Props, got.Desired.Meta, "properties.desired")
	// The untouched reported section and its metadata are unchanged.
	if !reflect.DeepEqual(got.Reported, in.Reported) {
		t.Error("reported changed on a desired patch")
	}

	// Reported: deleting a nested key updates its ancestors, only
	// $lastUpdated, never a version.
	got, err = ApplyReported(in, patchOf(t, `{"r":{"t":{"u":null}}}`), t2())
	if err != nil {
		t.Fatal(err)
	}
	rm := got.Reported.Meta
	for name, n := range map[string]*Meta{"root": rm, "r": rm.Children["r"], "r.t": rm.Children["r"].Children["t"]} {
		if !n.LastUpdated.Equal(st2) || n.LastUpdatedVersion != 0 {
			t.Errorf("reported %s: %v v%d, want %v v0", name, n.LastUpdated, n.LastUpdatedVersion, st2)
		}
	}
	if n := rm.Children["r"].Children["s"]; !n.LastUpdated.Equal(st1) {
		t.Errorf("reported r.s (untouched): %v, want %v", n.LastUpdated, st1)
	}
	if len(rm.Children["r"].Children["t"].Children) != 0 {
		t.Error("deleted reported key kept its metadata")
	}
	if !reflect.DeepEqual(got.Desired, in.Desired) || !reflect.DeepEqual(got.Tags, in.Tags) {
		t.Error("desired or tags changed on a reported patch")
	}
}

func TestReplace(t *testing.T) {
	in := base(t)
	got, err := Replace(in, patchOf(t, `{"only":"tag"}`), patchOf(t, `{"x":{"y":[1]},"z":"w"}`), t2())
	if err != nil {
		t.Fatal(err)
	}
	if !equalJSON(got.Tags, patchOf(t, `{"only":"tag"}`)) || !equalJSON(got.Desired.Props, patchOf(t, `{"x":{"y":[1]},"z":"w"}`)) {
		t.Fatalf("tags %v desired %v", got.Tags, got.Desired.Props)
	}
	want := fullMeta(got.Desired.Props, stamp{normTime(t2()), in.Desired.Version + 1})
	if !reflect.DeepEqual(got.Desired.Meta, want) {
		t.Fatal("desired metadata was not rebuilt with now and the new version")
	}
	if got.Version != in.Version+1 || got.Etag != in.Etag+1 || got.Desired.Version != in.Desired.Version+1 || got.Reported.Version != in.Reported.Version {
		t.Fatal("counters")
	}
	if !reflect.DeepEqual(got.Reported, in.Reported) {
		t.Fatal("reported changed")
	}
	got, err = Replace(in, nil, nil, t2())
	if err != nil {
		t.Fatal(err)
	}
	if got.Tags != nil || len(got.Desired.Props) != 0 || len(got.Desired.Meta.Children) != 0 {
		t.Fatalf("replace with nothing left tags %v desired %v", got.Tags, got.Desired.Props)
	}
}

func TestCounters(t *testing.T) {
	type counts struct{ version, etag, desired, reported int64 }
	tests := []struct {
		name string
		op   func(*Twin) (*Twin, error)
		want counts // increments
	}{
		{"reported patch", func(tw *Twin) (*Twin, error) { return ApplyReported(tw, map[string]any{"a": json.Number("1")}, t2()) }, counts{1, 0, 0, 1}},
		{"empty reported patch", func(tw *Twin) (*Twin, error) { return ApplyReported(tw, map[string]any{}, t2()) }, counts{1, 0, 0, 1}},
		{"nil reported patch", func(tw *Twin) (*Twin, error) { return ApplyReported(tw, nil, t2()) }, counts{1, 0, 0, 1}},
		{"tags only", func(tw *Twin) (*Twin, error) { return ApplyService(tw, map[string]any{"a": "b"}, nil, t2()) }, counts{1, 1, 0, 0}},
		{"desired only", func(tw *Twin) (*Twin, error) { return ApplyService(tw, nil, map[string]any{"a": "b"}, t2()) }, counts{1, 1, 1, 0}},
		{"tags and desired are one operation", func(tw *Twin) (*Twin, error) {
			return ApplyService(tw, map[string]any{"a": "b"}, map[string]any{"a": "b"}, t2())
		}, counts{1, 1, 1, 0}},
		{"empty desired still counts", func(tw *Twin) (*Twin, error) { return ApplyService(tw, nil, map[string]any{}, t2()) }, counts{1, 1, 1, 0}},
		{"empty tags still count", func(tw *Twin) (*Twin, error) { return ApplyService(tw, map[string]any{}, nil, t2()) }, counts{1, 1, 0, 0}},
		{"deleting a missing key still counts", func(tw *Twin) (*Twin, error) { return ApplyService(tw, nil, map[string]any{"nope": nil}, t2()) }, counts{1, 1, 1, 0}},
		{"nothing", func(tw *Twin) (*Twin, error) { return ApplyService(tw, nil, nil, t2()) }, counts{0, 0, 0, 0}},
		{"replace", func(tw *Twin) (*Twin, error) { return Replace(tw, nil, nil, t2()) }, counts{1, 1, 1, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := base(t)
			got, err := tt.op(in)
			if err != nil {
				t.Fatal(err)
			}
			d := counts{got.Version - in.Version, got.Etag - in.Etag, got.Desired.Version - in.Desired.Version, got.Reported.Version - in.Reported.Version}
			if d != tt.want {
				t.Fatalf("increments %+v, want %+v", d, tt.want)
			}
			if got == in {
				t.Fatal("returned the input twin itself")
			}
			if tt.want.desired == 1 && (!got.Desired.Meta.LastUpdated.Equal(normTime(t2())) || got.Desired.Meta.LastUpdatedVersion != got.Desired.Version) {
				t.Fatal("desired root metadata not stamped")
			}
			if tt.want.reported == 1 && !got.Reported.Meta.LastUpdated.Equal(normTime(t2())) {
				t.Fatal("reported root metadata not stamped")
			}
		})
	}
}

// TestRejectedChangeLeavesInput: on any error the result is nil and the
// input twin is deep-equal to what it was.
func TestRejectedChangeLeavesInput(t *testing.T) {
	in := base(t)
	before := in.Clone()
	ops := map[string]func() (*Twin, error){
		"reported": func() (*Twin, error) { return ApplyReported(in, map[string]any{"a": "ok", "b$": 1}, t2()) },
		"service desired bad": func() (*Twin, error) {
			return ApplyService(in, map[string]any{"ok": 1}, map[string]any{"x": []any{nil}}, t2())
		},
		"service desired too big": func() (*Twin, error) { return ApplyService(in, map[string]any{"ok": 1}, sized(MaxDesiredSize+1), t2()) },
		"replace null":            func() (*Twin, error) { return Replace(in, map[string]any{"ok": 1}, map[string]any{"x": nil}, t2()) },
	}
	for name, op := range ops {
		got, err := op()
		if err == nil || got != nil {
			t.Errorf("%s: got %v, %v; want nil and an error", name, got, err)
		}
		if !equalTwins(in, before) {
			t.Fatalf("%s: input twin modified", name)
		}
	}
}

func TestTagsEmptiedBecomeNil(t *testing.T) {
	in := base(t)
	got, err := ApplyService(in, map[string]any{"env": nil, "loc": nil}, nil, t2())
	if err != nil {
		t.Fatal(err)
	}
	if got.Tags != nil {
		t.Fatalf("tags = %#v, want nil", got.Tags)
	}
}

func TestNowTruncated(t *testing.T) {
	now := time.Date(2024, 1, 2, 3, 4, 5, 123456789, time.FixedZone("X", 3600))
	tw := New("d", now)
	want := time.Date(2024, 1, 2, 2, 4, 5, 123456700, time.UTC)
	if got := tw.Desired.Meta.LastUpdated; got != want {
		t.Fatalf("LastUpdated = %#v, want %#v", got, want)
	}
}
