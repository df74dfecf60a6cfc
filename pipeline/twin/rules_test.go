package twin

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tNew() and tNow() are when applyTo creates its twin and changes it.
func tNew() time.Time { return time.Date(2024, 5, 1, 9, 59, 0, 0, time.UTC) }
func tNow() time.Time { return time.Date(2024, 5, 1, 10, 0, 3, 123456789, time.UTC) }

// nested returns n objects nested below the section root, the innermost
// holding "property":"value": nested(2) is {"l1":{"l2":{"property":"value"}}}.
func nested(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		b.WriteString(`{"l` + itoa(i) + `":`)
	}
	b.WriteString(`{"property":"value"}`)
	b.WriteString(strings.Repeat("}", n))
	return b.String()
}

// nestedPath is the path of the innermost object of nested(n) under root.
func nestedPath(root string, n int) string {
	for i := 1; i <= n; i++ {
		root += ".l" + itoa(i)
	}
	return root
}

func itoa(i int) string { return strconv.Itoa(i) }

// patchOf parses a patch literal or fails the test.
func patchOf(t testing.TB, s string) map[string]any {
	t.Helper()
	m, err := ParseObject([]byte(s))
	if err != nil {
		t.Fatalf("ParseObject(%q): %v", s, err)
	}
	return m
}

// applyTo applies patch to a fresh twin through the operation named by
// section: "tags" and "desired" go through ApplyService, "reported" through
// ApplyReported, "replace-tags" and "replace-desired" through Replace.
func applyTo(t testing.TB, section string, patch map[string]any) (*Twin, error) {
	t.Helper()
	tw := New("dev", tNew())
	switch section {
	case "tags":
		return ApplyService(tw, patch, nil, tNow())
	case "desired":
		return ApplyService(tw, nil, patch, tNow())
	case "reported":
		return ApplyReported(tw, patch, tNow())
	case "replace-tags":
		return Replace(tw, patch, nil, tNow())
	case "replace-desired":
		return Replace(tw, nil, patch, tNow())
	}
	t.Fatalf("unknown section %q", section)
	return nil, nil
}

func rootOf(section string) string {
	switch strings.TrimPrefix(section, "replace-") {
	case "tags":
		return "tags"
	case "desired":
		return "properties.desired"
	default:
		return "properties.reported"
	}
}

func TestValidationRules(t *testing.T) {
	long := func(n int) string { return strings.Repeat("k", n) }
	tests := []struct {
		name     string
		section  string
		patch    string
		wantRule string // "" means accepted
		wantPath string
	}{
		// keys
		{"key with dot", "tags", `{"a.b":1}`, RuleKey, `tags["a.b"]`},
		{"key with dollar", "desired", `{"$version":1}`, RuleKey, `properties.desired["$version"]`},
		{"nested key with dollar", "reported", `{"a":{"b$":1}}`, RuleKey, `properties.reported.a["b$"]`},
		{"key with space", "tags", `{"a b":1}`, RuleKey, `tags["a b"]`},
		{"key with NUL", "desired", `{"\u0000":1}`, RuleKey, `properties.desired["\x00"]`},
		{"key with DEL", "desired", `{"a\u007f":1}`, RuleKey, `properties.desired["a\x7f"]`},
		{"key with C1 U+0085", "reported", `{"a\u0085":1}`, RuleKey, `properties.reported["a\u0085"]`},
		{"empty key", "tags", `{"":1}`, RuleKey, `tags[""]`},
		{"key of 1024 bytes", "tags", `{"` + long(1024) + `":1}`, "", ""},
		{"key of 1025 bytes", "tags", `{"` + long(1025) + `":1}`, RuleKey, `tags["` + long(1025) + `"]`},
		{"unicode key", "tags", `{"日本":1,"é-_:@":2}`, "", ""},
		{"key in object in array", "desired", `{"a":[{"b.c":1}]}`, RuleKey, `properties.desired.a[0]["b.c"]`},
		// strings
		{"string of 4096 bytes", "tags", `{"s":"` + strings.Repeat("x", 4096) + `"}`, "", ""},
		{"string of 4097 bytes", "tags", `{"s":"` + strings.Repeat("x", 4097) + `"}`, RuleString, "tags.s"},
		{"string of 4097 bytes in array", "reported", `{"a":[1,"` + strings.Repeat("é", 2049) + `"]}`, RuleString, "properties.reported.a[1]"},
		// integers
		{"integer 2^52 rejected", "desired", `{"n":4503599627370496}`, RuleInteger, "properties.desired.n"},
		{"integer 2^52-1 accepted", "desired", `{"n":4503599627370495}`, "", ""},
		{"integer -2^52 accepted", "desired", `{"n":-4503599627370496}`, "", ""},
		{"integer -2^52-1 rejected", "reported", `{"a":{"n":-4503599627370497}}`, RuleInteger, "properties.reported.a.n"},
		{"integer beyond int64 rejected", "tags", `{"n":123456789012345678901234567890}`, RuleInteger, "tags.n"},
		{"float with exponent accepted", "tags", `{"n":1e300}`, "", ""},
		{"decimal accepted", "tags", `{"n":4503599627370496.5}`, "", ""},
		// arrays
		{"array accepted", "tags", `{"a":[1,"x",true,{"b":[2]}]}`, "", ""},
		{"null in array", "tags", `{"a":[1,null]}`, RuleArrayNull, "tags.a[1]"},
		{"null in nested array", "desired", `{"a":[[null]]}`, RuleArrayNull, "properties.desired.a[0][0]"},
		{"null in object in array", "reported", `{"a":[{"b":null}]}`, RuleArrayNull, "properties.reported.a[0].b"},
		{"null in array in replace", "replace-desired", `{"a":[null]}`, RuleArrayNull, "properties.desired.a[0]"},
		// null
		{"null in patch deletes", "desired", `{"a":null}`, "", ""},
		{"null in replace", "replace-tags", `{"a":{"b":null}}`, RuleValue, "tags.a.b"},
		// depth
		{"tags depth 10 accepted", "tags", nested(10), "", ""},
		{"tags depth 11 rejected", "tags", nested(11), RuleDepth, nestedPath("tags", 11)},
		{"desired depth 10 accepted", "desired", nested(10), "", ""},
		{"desired depth 11 rejected", "desired", nested(11), RuleDepth, nestedPath("properties.desired", 11)},
		{"reported depth 10 accepted", "reported", nested(10), "", ""},
		{"reported depth 11 rejected", "reported", nested(11), RuleDepth, nestedPath("properties.reported", 11)},
		{"replace depth 11 rejected", "replace-desired", nested(11), RuleDepth, nestedPath("properties.desired", 11)},
		{"arrays count as levels: 10", "tags", `{"a":` + strings.Repeat("[", 10) + strings.Repeat("]", 10) + `}`, "", ""},
		{"arrays count as levels: 11", "tags", `{"a":` + strings.Repeat("[", 11) + strings.Repeat("]", 11) + `}`, RuleDepth, "tags.a" + strings.Repeat("[0]", 10)},
		{"empty object at level 11", "tags", strings.Repeat(`{"o":`, 11) + `{}` + strings.Repeat("}", 11), RuleDepth, "tags" + strings.Repeat(".o", 11)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := applyTo(t, tt.section, patchOf(t, tt.patch))
			if tt.wantRule == "" {
				if err != nil || got == nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if got != nil {
				t.Fatalf("returned a twin with the error")
			}
			var e *Error
			if !errors.As(err, &e) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not an *Error matching ErrInvalid", err)
			}
			if e.Rule != tt.wantRule || e.Path != tt.wantPath {
				t.Fatalf("got rule %q at %q (%s); want rule %q at %q", e.Rule, e.Path, e.Msg, tt.wantRule, tt.wantPath)
			}
		})
	}
}

// TestDepthExampleFromDocs checks the docs' own example of the deepest
// valid property: tags.one.two.three.four.five.six.seven.eight.nine.ten.property.
func TestDepthExampleFromDocs(t *testing.T) {
	words := []string{"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}
	doc := `"value"`
	for i := len(words) - 1; i >= 0; i-- {
		if i == len(words)-1 {
			doc = `{"property":` + doc + `}`
		}
		doc = `{"` + words[i] + `":` + doc + `}`
	}
	if _, err := applyTo(t, "tags", patchOf(t, doc)); err != nil {
		t.Fatalf("docs example rejected: %v", err)
	}
	deeper := strings.Replace(doc, `"value"`, `{"eleven":"value"}`, 1)
	if _, err := applyTo(t, "tags", patchOf(t, deeper)); ruleOf(err) != RuleDepth {
		t.Fatalf("one more object level: got %v, want a depth violation", err)
	}
}

func TestGoValues(t *testing.T) {
	tests := []struct {
		name     string
		patch    map[string]any
		wantRule string
		want     any // stored value of "v" when accepted
	}{
		{"float64 integral becomes integer", map[string]any{"v": 3.0}, "", json.Number("3")},
		{"float64 fraction", map[string]any{"v": 2.5}, "", json.Number("2.5")},
		{"int", map[string]any{"v": 42}, "", json.Number("42")},
		{"int64 out of range", map[string]any{"v": int64(1) << 52}, RuleInteger, nil},
		{"float64 out of integer range", map[string]any{"v": float64(1 << 53)}, RuleInteger, nil},
		{"NaN", map[string]any{"v": math.NaN()}, RuleValue, nil},
		{"Inf", map[string]any{"v": math.Inf(1)}, RuleValue, nil},
		{"malformed json.Number", map[string]any{"v": json.Number("1x")}, RuleValue, nil},
		{"json.Number overflow", map[string]any{"v": json.Number("1e400")}, RuleValue, nil},
		{"func", map[string]any{"v": func() {}}, RuleValue, nil},
		{"typed map", map[string]any{"v": map[string]string{"a": "b"}}, RuleValue, nil},
		{"invalid UTF-8 string", map[string]any{"v": "\xff"}, RuleValue, nil},
		{"invalid UTF-8 key", map[string]any{"\xff": 1}, RuleKey, nil},
		{"nil []any", map[string]any{"v": []any(nil)}, "", []any{}},
		{"nil map", map[string]any{"v": map[string]any(nil)}, "", map[string]any{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ApplyService(New("dev", tNew()), nil, tt.patch, tNow())
			if r := ruleOf(err); r != tt.wantRule {
				t.Fatalf("rule %q (%v), want %q", r, err, tt.wantRule)
			}
			if err == nil && !equalJSON(got.Desired.Props["v"], tt.want) {
				t.Fatalf("stored %#v, want %#v", got.Desired.Props["v"], tt.want)
			}
		})
	}
}

func TestSectionSize(t *testing.T) {
	tests := []struct {
		props string
		want  int
	}{
		{`{}`, 0},
		{`{"a":"xyz"}`, 1 + 3},
		{`{"ab":12}`, 2 + 8},
		{`{"ab":1.5e10}`, 2 + 8},
		{`{"b":true,"c":false}`, 1 + 4 + 1 + 4},
		{`{"o":{"k":"v"}}`, 1 + (1 + 1)},
		{`{"o":{}}`, 1},
		{`{"arr":[1,"ab",true,{"k":"vv"}]}`, 3 + (8 + 2 + 4 + (1 + 2))},
		{`{"s":"a\u0001b\u0085c\u007f"}`, 1 + 3},                                    // control characters do not count
		{`{"é":"日本"}`, 2 + 2},                                                       // keys in bytes, strings in characters
		{`{"n":null}`, 1},                                                           // null counts 0 (only in patches)
		{`{"location":{"region":"US","plant":"Redmond43"}}`, 8 + (6 + 2) + (5 + 9)}, // the seed tags
	}
	for _, tt := range tests {
		if got := SectionSize(patchOf(t, tt.props)); got != tt.want {
			t.Errorf("SectionSize(%s) = %d, want %d", tt.props, got, tt.want)
		}
	}
}

// sized returns an object whose SectionSize is exactly n (n >= 2), made of
// keys "a", "b", ... each holding a string of at most 4096 bytes.
func sized(n int) map[string]any {
	m := map[string]any{}
	for k := 'a'; n > 0; k++ {
		v := min(n-1, MaxStringBytes)
		if n-1-v == 1 { // leave at least 2 for the next key
			v--
		}
		m[string(k)] = strings.Repeat("x", v)
		n -= 1 + v
	}
	return m
}

func TestSizeLimits(t *testing.T) {
	tests := []struct {
		name     string
		section  string
		size     int
		wantRule string
	}{
		{"tags 8192", "tags", MaxTagsSize, ""},
		{"tags 8193", "tags", MaxTagsSize + 1, RuleSize},
		{"desired 32768", "desired", MaxDesiredSize, ""},
		{"desired 32769", "desired", MaxDesiredSize + 1, RuleSize},
		{"reported 32768", "reported", MaxReportedSize, ""},
		{"reported 32769", "reported", MaxReportedSize + 1, RuleSize},
		{"replace tags 8193", "replace-tags", MaxTagsSize + 1, RuleSize},
		{"replace desired 32769", "replace-desired", MaxDesiredSize + 1, RuleSize},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := sized(tt.size)
			if got := SectionSize(p); got != tt.size {
				t.Fatalf("test helper: size %d, want %d", got, tt.size)
			}
			_, err := applyTo(t, tt.section, p)
			if r := ruleOf(err); r != tt.wantRule {
				t.Fatalf("rule %q (%v), want %q", r, err, tt.wantRule)
			}
			if err != nil {
				var e *Error
				errors.As(err, &e)
				if e.Path != rootOf(tt.section) {
					t.Fatalf("path %q, want %q", e.Path, rootOf(tt.section))
				}
			}
		})
	}
}

// TestSizeCheckedOnMergedResult: a patch that is small by itself is rejected
// when the merged section would pass the limit, and a patch that deletes
// keys can bring a section back under it.
func TestSizeCheckedOnMergedResult(t *testing.T) {
	tw, err := ApplyService(New("dev", tNew()), sized(MaxTagsSize-2), nil, tNow())
	if err != nil {
		t.Fatal(err)
	}
	before := tw.Clone()
	if _, err := ApplyService(tw, map[string]any{"zz": true}, nil, tNow()); ruleOf(err) != RuleSize {
		t.Fatalf("2+4 bytes more than 8190: got %v, want a size violation", err)
	}
	if !equalTwins(tw, before) {
		t.Fatal("rejected change modified the input twin")
	}
	if _, err := ApplyService(tw, map[string]any{"z": true, "a": nil}, nil, tNow()); err != nil {
		t.Fatalf("delete plus small add: %v", err)
	}
}
