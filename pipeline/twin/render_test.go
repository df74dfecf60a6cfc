package twin

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestFormatTime(t *testing.T) {
	tests := []struct {
		in   time.Time
		want string
	}{
		{time.Time{}, "0001-01-01T00:00:00Z"},
		{time.Date(2021, 3, 11, 14, 22, 3, 929195100, time.UTC), "2021-03-11T14:22:03.9291951Z"},
		{time.Date(2021, 3, 11, 14, 22, 3, 929195199, time.UTC), "2021-03-11T14:22:03.9291951Z"},
		{time.Date(2021, 3, 11, 14, 22, 3, 0, time.UTC), "2021-03-11T14:22:03.0000000Z"},
		{time.Date(2021, 3, 11, 16, 22, 3, 500, time.FixedZone("X", 2*3600)), "2021-03-11T14:22:03.0000005Z"},
	}
	for _, tt := range tests {
		if got := FormatTime(tt.in); got != tt.want {
			t.Errorf("FormatTime(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestETag(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{1, "AAAAAAAAAAE="},
		{2, "AAAAAAAAAAI="},
		{22, "AAAAAAAAABY="},
		{0, "AAAAAAAAAAA="},
	}
	for _, tt := range tests {
		tw := &Twin{Etag: tt.n}
		if got := tw.ETag(); got != tt.want {
			t.Errorf("ETag(%d) = %q, want %q", tt.n, got, tt.want)
		}
		if n, err := ParseETag(tt.want); err != nil || n != tt.n {
			t.Errorf("ParseETag(%q) = %d, %v", tt.want, n, err)
		}
	}
	for _, bad := range []string{"", "AAAA", "not base64!", "AAAAAAAAAAAAAAAA"} {
		if _, err := ParseETag(bad); ruleOf(err) != RuleShape {
			t.Errorf("ParseETag(%q): %v, want a shape violation", bad, err)
		}
	}
}

// twinsForRoundTrip returns twins of varied shapes.
func twinsForRoundTrip(t testing.TB) map[string]*Twin {
	t.Helper()
	full := base(t)
	full.StatusReason = "maintenance \"window\" <b>"
	full.Status = "disabled"
	full.StatusUpdateTime = normTime(t2())
	full.LastActivityTime = normTime(t3())
	full.CloudToDeviceMessageCount = 7
	full.ModelID = "dtmi:com:example:Thermostat;1"
	full.AuthenticationType = "selfSigned"
	full.ConnectionState = "Connected"
	full.Etag = 1 << 40

	odd, err := ApplyService(New("o", t0()), patchOf(t, `{"s":"\u0000\u2028é😀<&>","n":-0.5e-3,"z":-0,"e":{}}`),
		patchOf(t, `{"arr":[[],{},[{"a":[1]}]],"deep":`+nested(9)+`,"big":4503599627370495}`), t3())
	if err != nil {
		t.Fatal(err)
	}
	replaced, err := Replace(full, nil, patchOf(t, `{"x":{"y":{"z":true}}}`), t3())
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*Twin{
		"new":      New("myDeviceId", t0()),
		"base":     base(t),
		"full":     full,
		"odd":      odd,
		"replaced": replaced,
		"zero-new": New("", time.Time{}),
	}
}

func TestRoundTrip(t *testing.T) {
	for name, tw := range twinsForRoundTrip(t) {
		t.Run(name, func(t *testing.T) {
			b, err := tw.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid(b) {
				t.Fatalf("MarshalJSON is not valid JSON: %s", b)
			}
			var back Twin
			if err := back.UnmarshalJSON(b); err != nil {
				t.Fatalf("UnmarshalJSON(%s): %v", b, err)
			}
			if !reflect.DeepEqual(&back, tw) {
				t.Fatalf("round trip differs:\n got %#v\nwant %#v\njson %s", &back, tw, b)
			}
			// encoding/json calls the methods too.
			b2, err := json.Marshal(tw)
			if err != nil || string(b2) != string(b) {
				t.Fatalf("json.Marshal differs: %v", err)
			}
			var viaStd Twin
			if err := json.Unmarshal(b, &viaStd); err != nil || !reflect.DeepEqual(&viaStd, tw) {
				t.Fatalf("json.Unmarshal: %v", err)
			}
		})
	}
}

func TestMarshalOmitsEmpty(t *testing.T) {
	tw := New("d", t0())
	tw.Tags = map[string]any{}
	s := mustMarshal(t, tw)
	if strings.Contains(s, `"tags"`) || strings.Contains(s, `"statusReason"`) {
		t.Fatalf("empty tags or statusReason rendered: %s", s)
	}
	tw.StatusReason = "r"
	if s := mustMarshal(t, tw); !strings.Contains(s, `"status":"enabled","statusReason":"r","statusUpdateTime"`) {
		t.Fatalf("statusReason not rendered after status: %s", s)
	}
}

func TestMarshalRejectsForeignValues(t *testing.T) {
	tw := New("d", t0())
	tw.Desired.Props["x"] = struct{}{}
	if _, err := tw.MarshalJSON(); err == nil {
		t.Fatal("MarshalJSON accepted a struct value")
	}
	if got, want := string(tw.DeviceView()), `{"desired":{"x":null,"$version":1},"reported":{"$version":1}}`; got != want {
		t.Fatalf("DeviceView = %s, want %s", got, want)
	}
}

func TestDeviceView(t *testing.T) {
	tw := base(t)
	want := `{"desired":{"a":{"b":{"c":1,"d":[1,2]},"e":"x"},"f":true,"g":{"h":"i"},"$version":2},` +
		`"reported":{"r":{"s":1,"t":{"u":"v"}},"w":[{"x":1}],"$version":2}}`
	if got := string(tw.DeviceView()); got != want {
		t.Fatalf("DeviceView:\n got %s\nwant %s", got, want)
	}
	if got, want := string(New("d", t0()).DeviceView()), `{"desired":{"$version":1},"reported":{"$version":1}}`; got != want {
		t.Fatalf("DeviceView of a new twin = %s, want %s", got, want)
	}
}

func TestDesiredNotification(t *testing.T) {
	tests := []struct {
		patch   map[string]any
		version int64
		want    string
	}{
		{map[string]any{"telemetrySendFrequency": "5m", "route": nil}, 8, `{"route":null,"telemetrySendFrequency":"5m","$version":8}`},
		{map[string]any{}, 2, `{"$version":2}`},
		{nil, 3, `{"$version":3}`},
		{map[string]any{"a": map[string]any{"b": nil, "c": []any{json.Number("1.0")}}, "n": 2.5}, 4, `{"a":{"b":null,"c":[1.0]},"n":2.5,"$version":4}`},
		{map[string]any{"$version": json.Number("99"), "x": 1}, 5, `{"x":1,"$version":5}`},
	}
	for _, tt := range tests {
		if got := string(DesiredNotification(tt.patch, tt.version)); got != tt.want {
			t.Errorf("DesiredNotification(%v, %d) = %s, want %s", tt.patch, tt.version, got, tt.want)
		}
	}
}

func TestUnmarshalLenientMetadata(t *testing.T) {
	// An Azure-style dump: 6 fractional digits, missing leaf metadata,
	// $lastUpdatedBy, metadata for a key that does not exist, unknown
	// top-level fields, deviceEtag and a null statusReason.
	doc := `{"deviceId":"d","etag":"AAAAAAAAABY=","deviceEtag":"NjE2NTM2ODIz","statusReason":null,"version":24,
	  "configurations":{"c1":{"status":"Applied"}},
	  "properties":{
	    "desired":{"a":{"b":1},"c":2,"$metadata":{"$lastUpdated":"2020-11-19T10:10:06.005758Z","$lastUpdatedVersion":21,
	       "a":{"$lastUpdated":"2020-11-19T10:10:05Z","$lastUpdatedVersion":20,"$lastUpdatedBy":"cfg"},"gone":{"$lastUpdated":"2020-01-01T00:00:00Z"}},"$version":21},
	    "reported":{"$version":2}}}`
	var tw Twin
	if err := tw.UnmarshalJSON([]byte(doc)); err != nil {
		t.Fatal(err)
	}
	root := time.Date(2020, 11, 19, 10, 10, 6, 5758000, time.UTC)
	a := time.Date(2020, 11, 19, 10, 10, 5, 0, time.UTC)
	m := tw.Desired.Meta
	if m.LastUpdated != root || m.LastUpdatedVersion != 21 {
		t.Errorf("root meta %+v", m)
	}
	if n := m.Children["a"].Children["b"]; n.LastUpdated != a || n.LastUpdatedVersion != 20 {
		t.Errorf("a.b inherits from a: %+v", n)
	}
	if n := m.Children["c"]; n.LastUpdated != root || n.LastUpdatedVersion != 21 {
		t.Errorf("c inherits from root: %+v", n)
	}
	if _, ok := m.Children["gone"]; ok {
		t.Error("metadata of a missing key kept")
	}
	if tw.Etag != 22 || tw.Version != 24 || tw.Desired.Version != 21 || tw.Reported.Version != 2 {
		t.Errorf("counters %d %d %d %d", tw.Etag, tw.Version, tw.Desired.Version, tw.Reported.Version)
	}
	if tw.Reported.Meta == nil || tw.Reported.Props == nil {
		t.Error("reported section without metadata left nil")
	}
}

func TestUnmarshalRejects(t *testing.T) {
	tests := []struct {
		name     string
		doc      string
		wantRule string
		wantPath string
	}{
		{"not JSON", `{"deviceId":`, RuleJSON, "deviceId"},
		{"array", `[]`, RuleShape, ""},
		{"deviceId type", `{"deviceId":1}`, RuleShape, "deviceId"},
		{"version type", `{"version":"1"}`, RuleShape, "version"},
		{"version fraction", `{"version":1.5}`, RuleShape, "version"},
		{"etag", `{"etag":"x"}`, RuleShape, "etag"},
		{"time", `{"statusUpdateTime":"yesterday"}`, RuleShape, "statusUpdateTime"},
		{"tags type", `{"tags":[]}`, RuleShape, "tags"},
		{"tags null value", `{"tags":{"a":null}}`, RuleValue, "tags.a"},
		{"tags bad key", `{"tags":{"a b":1}}`, RuleKey, `tags["a b"]`},
		{"desired depth", `{"properties":{"desired":` + nested(11) + `}}`, RuleDepth, nestedPath("properties.desired", 11)},
		{"reported array null", `{"properties":{"reported":{"a":[null]}}}`, RuleArrayNull, "properties.reported.a[0]"},
		{"section type", `{"properties":{"desired":1}}`, RuleShape, "properties.desired"},
		{"metadata type", `{"properties":{"desired":{"a":1,"$metadata":{"a":5}}}}`, RuleShape, "properties.desired.$metadata.a"},
		{"metadata time", `{"properties":{"reported":{"$metadata":{"$lastUpdated":5}}}}`, RuleShape, "properties.reported.$metadata.$lastUpdated"},
		{"$version type", `{"properties":{"reported":{"$version":"2"}}}`, RuleShape, "properties.reported.$version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tw := New("keep", t0())
			before := tw.Clone()
			err := tw.UnmarshalJSON([]byte(tt.doc))
			if r := ruleOf(err); r != tt.wantRule {
				t.Fatalf("rule %q (%v), want %q", r, err, tt.wantRule)
			}
			if err == nil {
				return
			}
			if e := err.(*Error); e.Path != tt.wantPath {
				t.Fatalf("path %q, want %q", e.Path, tt.wantPath)
			}
			if !reflect.DeepEqual(tw, before) {
				t.Fatal("failed UnmarshalJSON modified the twin")
			}
		})
	}
	big := map[string]any{}
	for k, v := range sized(MaxReportedSize + 1) {
		big[k] = v
	}
	b, _ := appendValue(nil, big)
	var tw Twin
	if err := tw.UnmarshalJSON([]byte(`{"properties":{"reported":` + string(b) + `}}`)); ruleOf(err) != RuleSize {
		t.Fatalf("oversized reported: %v, want a size violation", err)
	}
}

func TestClone(t *testing.T) {
	in := base(t)
	c := in.Clone()
	if !reflect.DeepEqual(c, in) {
		t.Fatal("clone differs")
	}
	c.Tags["env"] = "dev"
	c.Desired.Props["a"].(map[string]any)["e"] = "changed"
	c.Desired.Props["a"].(map[string]any)["b"].(map[string]any)["d"].([]any)[0] = json.Number("9")
	c.Desired.Meta.Children["a"].LastUpdatedVersion = 99
	c.Reported.Meta.Children["r"].Children["s"].LastUpdated = time.Time{}
	if !reflect.DeepEqual(in, base(t)) {
		t.Fatal("changing the clone changed the original")
	}
	var nilTwin *Twin
	if nilTwin.Clone() != nil {
		t.Fatal("Clone of nil")
	}
}
