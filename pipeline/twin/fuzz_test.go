package twin

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// FuzzParseJSON checks the strict parser. Invariants: ParseJSON never
// panics; every rejection is an *Error with RuleJSON; encoding/json (with
// UseNumber) decodes every accepted input to the same value (strictness only
// removes inputs, it never changes a value); and an accepted value, rendered
// with appendValue and parsed again, gives a deep-equal value whose
// rendering is byte-identical (the rendering is canonical).
func FuzzParseJSON(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `[]`, `null`, `true`, `0`, `-0.0e+0`, `1e400`, `1e-400`, `01`, `"\ud800"`, `"\ud83d\ude00"`,
		`"\udc00"`, `{"a":1,"a":2}`, `{"a":[1,{"b":null}]} `, "\"\xff\"", `"\u0000<&>\u2028"`, `{"a":1} x`,
		strings.Repeat("[", 64) + strings.Repeat("]", 64), strings.Repeat("[", 65) + strings.Repeat("]", 65),
		`{"deviceId":"d","properties":{"desired":{"$version":1}}}`, `"\/\b\f\n\r\t\\\""`, `123456789012345678901234567890`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := ParseJSON(data)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Rule != RuleJSON || !errors.Is(err, ErrInvalid) {
				t.Fatalf("rejection is not a json *Error: %#v", err)
			}
			return
		}
		var std any
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if err := dec.Decode(&std); err != nil || !reflect.DeepEqual(v, std) {
			t.Fatalf("accepted %q as %#v; encoding/json gives %#v, %v", data, v, std, err)
		}
		b, err := appendValue(nil, v)
		if err != nil {
			t.Fatalf("cannot render accepted value: %v", err)
		}
		v2, err := ParseJSON(b)
		if err != nil {
			t.Fatalf("rendering %s of %q does not parse: %v", b, data, err)
		}
		if !reflect.DeepEqual(v, v2) {
			t.Fatalf("re-parse differs: %#v vs %#v", v, v2)
		}
		b2, _ := appendValue(nil, v2)
		if string(b) != string(b2) {
			t.Fatalf("rendering is not canonical: %s vs %s", b, b2)
		}
		if s, ok := v.(string); ok {
			if want, _ := json.Marshal(s); string(want) != string(b) {
				t.Fatalf("string escaping %s differs from encoding/json %s", b, want)
			}
		}
	})
}

// fuzzOp is one operation FuzzApply drives: which sections it touches, and
// how it runs on the input twin and the parsed patch.
type fuzzOp struct {
	name                    string
	tags, desired, reported bool
	replace                 bool
	run                     func(tw *Twin, p map[string]any) (*Twin, error)
	tagsPatch, desiredPatch func(p map[string]any) map[string]any // the part of p each section gets
}

// fuzzOps lists the operations, all at now; FuzzApply's op argument selects one.
func fuzzOps(now time.Time) []fuzzOp {
	return []fuzzOp{
		{name: "reported", reported: true,
			run: func(tw *Twin, p map[string]any) (*Twin, error) { return ApplyReported(tw, p, now) }},
		{name: "service tags", tags: true, tagsPatch: self,
			run: func(tw *Twin, p map[string]any) (*Twin, error) { return ApplyService(tw, p, nil, now) }},
		{name: "service desired", desired: true, desiredPatch: self,
			run: func(tw *Twin, p map[string]any) (*Twin, error) { return ApplyService(tw, nil, p, now) }},
		{name: "service both", tags: true, desired: true, tagsPatch: self, desiredPatch: self,
			run: func(tw *Twin, p map[string]any) (*Twin, error) { return ApplyService(tw, p, p, now) }},
		{name: "service split", tags: true, desired: true, tagsPatch: member("tags"), desiredPatch: member("desired"),
			run: func(tw *Twin, p map[string]any) (*Twin, error) {
				return ApplyService(tw, member("tags")(p), member("desired")(p), now)
			}},
		{name: "replace", tags: true, desired: true, replace: true, tagsPatch: member("tags"), desiredPatch: member("desired"),
			run: func(tw *Twin, p map[string]any) (*Twin, error) {
				return Replace(tw, member("tags")(p), member("desired")(p), now)
			}},
	}
}

func self(p map[string]any) map[string]any { return p }

// member returns p[name] when it is an object, else nil.
func member(name string) func(map[string]any) map[string]any {
	return func(p map[string]any) map[string]any {
		m, _ := p[name].(map[string]any)
		return m
	}
}

// FuzzApply applies arbitrary bytes, parsed as a patch, to a fixed
// non-trivial twin through ApplyReported, ApplyService and Replace.
// Invariants: nothing panics; on error the result is nil, the error is an
// *Error matching ErrInvalid, and neither the input twin nor the patch
// changed; on success the result satisfies every rule (keys, values, depth,
// sizes, no nulls, tags nil or non-empty), its content equals an RFC 7396
// merge of the patch (or the replacement), its $metadata mirrors the content
// with now at the roots of touched sections and no node newer than now,
// untouched sections are unchanged, counters advanced exactly as specified,
// and Unmarshal(Marshal(result)) is deep-equal to the result.
func FuzzApply(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"a":null}`, `{"a":{"b":{"c":1,"d":null}}}`, `{"r":{"t":null},"w":{"x":2}}`, `{"env":{"k":null}}`,
		`{"tags":{"env":null,"loc":{"a":null}},"desired":{"f":{"k":[1,2]}}}`, `{"a.b":1}`, `{"$version":3}`,
		`{"a":[null]}`, `{"a":[{"b":null}]}`, `{"n":4503599627370496}`, `{"n":-4503599627370496}`, `{"f":1.5e300}`,
		`{"s":"` + strings.Repeat("x", 4097) + `"}`, `{"s":"` + strings.Repeat("é", 2048) + `"}`,
		nested(10), nested(11), `{"a":` + strings.Repeat("[", 11) + strings.Repeat("]", 11) + `}`,
		`{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{"i":{"j":{"k":1}}}}}}}}}}`, `{"tags":{},"desired":{}}`,
		`{"\u0085":1}`, `{"a\u0000":1}`, `{"":1}`, `{"g":{"h":{}}}`, `{"f":{"new":{"x":null}}}`,
	} {
		for op := range fuzzOps(time.Time{}) {
			f.Add([]byte(s), uint8(op))
		}
	}
	fixed := fuzzBase(f)
	now := time.Date(2024, 6, 1, 12, 0, 0, 987654321, time.UTC)
	ops := fuzzOps(now)
	f.Fuzz(func(t *testing.T, data []byte, op uint8) {
		patch, err := ParseObject(data)
		if err != nil {
			return
		}
		o := ops[int(op)%len(ops)]
		in := fixed.Clone()
		patchCopy, _ := ParseObject(data)
		got, err := o.run(in, patch)
		if !reflect.DeepEqual(patch, patchCopy) {
			t.Fatalf("%s: patch modified", o.name)
		}
		if !reflect.DeepEqual(in, fixed) {
			t.Fatalf("%s: input twin modified", o.name)
		}
		if err != nil {
			var e *Error
			if got != nil || !errors.As(err, &e) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("%s: got %v with error %#v", o.name, got, err)
			}
			if !strings.HasPrefix(e.Path, "tags") && !strings.HasPrefix(e.Path, "properties.") {
				t.Fatalf("%s: error path %q is not under a section", o.name, e.Path)
			}
			return
		}
		checkResult(t, o.name, now, in, got, o.tags, o.desired, o.reported, o.replace,
			call(o.tagsPatch, patch), call(o.desiredPatch, patch), patch)
	})
}

func call(fn func(map[string]any) map[string]any, p map[string]any) map[string]any {
	if fn == nil {
		return nil
	}
	return fn(p)
}

// fuzzBase is the non-trivial twin FuzzApply starts from.
func fuzzBase(tb testing.TB) *Twin {
	tw := base(tb)
	tw, err := ApplyService(tw, patchOf(tb, `{"deep":`+nested(9)+`}`), patchOf(tb, `{"deep":`+nested(9)+`,"big":"`+strings.Repeat("b", 4000)+`"}`), t2())
	if err != nil {
		tb.Fatal(err)
	}
	tw.StatusReason = "fuzz"
	tw.LastActivityTime = normTime(t2())
	return tw
}

// checkResult verifies a successful change (see FuzzApply).
func checkResult(t *testing.T, name string, now time.Time, in, got *Twin, tags, desired, reported, replace bool, tagsPatch, desiredPatch, reportedPatch map[string]any) {
	t.Helper()
	now = normTime(now)
	if tags && !replace && tagsPatch == nil {
		tags = false
	}
	if desired && !replace && desiredPatch == nil {
		desired = false
	}
	if !tags && !desired && !reported {
		// ApplyService with neither part: a clone, no counter change.
		if got == in || !reflect.DeepEqual(got, in) {
			t.Fatalf("%s: empty service patch did not return a clone", name)
		}
		return
	}
	// Rules on the result.
	for _, s := range []struct {
		path  string
		props map[string]any
		limit int
	}{{"tags", got.Tags, MaxTagsSize}, {"properties.desired", got.Desired.Props, MaxDesiredSize}, {"properties.reported", got.Reported.Props, MaxReportedSize}} {
		norm, err := normalizeObject(s.props, s.path, 0, nullRejected)
		if err != nil {
			t.Fatalf("%s: result breaks a rule: %v", name, err)
		}
		if !reflect.DeepEqual(norm, s.props) && !(s.props == nil && len(norm) == 0) {
			t.Fatalf("%s: %s holds non-normalized values", name, s.path)
		}
		if n := SectionSize(s.props); n > s.limit {
			t.Fatalf("%s: %s is %d bytes", name, s.path, n)
		}
	}
	if got.Tags != nil && len(got.Tags) == 0 {
		t.Fatalf("%s: empty non-nil tags", name)
	}
	// Content equals an RFC 7396 merge (or the replacement).
	wantContent := func(old, p map[string]any) map[string]any {
		if replace {
			if p == nil {
				return map[string]any{}
			}
			return p
		}
		m, _ := rfc7396(cloneObject(old), p).(map[string]any)
		return m
	}
	if tags {
		want := wantContent(in.Tags, tagsPatch)
		if len(want) == 0 {
			want = nil
		}
		if !reflect.DeepEqual(got.Tags, want) {
			t.Fatalf("%s: tags %v, want %v", name, got.Tags, want)
		}
	} else if !reflect.DeepEqual(got.Tags, in.Tags) {
		t.Fatalf("%s: untouched tags changed", name)
	}
	checkSection := func(label string, touched bool, gs, is Section, p map[string]any, isDesired bool) {
		if !touched {
			if !reflect.DeepEqual(gs, is) {
				t.Fatalf("%s: untouched %s changed", name, label)
			}
			return
		}
		if gs.Version != is.Version+1 {
			t.Fatalf("%s: %s $version %d, want %d", name, label, gs.Version, is.Version+1)
		}
		if want := wantContent(is.Props, p); !reflect.DeepEqual(gs.Props, want) {
			t.Fatalf("%s: %s %v, want %v", name, label, gs.Props, want)
		}
		checkMetaShape(t, gs.Props, gs.Meta, label)
		wantVersion := int64(0)
		if isDesired {
			wantVersion = gs.Version
		}
		if !gs.Meta.LastUpdated.Equal(now) || gs.Meta.LastUpdatedVersion != wantVersion {
			t.Fatalf("%s: %s root metadata %v v%d", name, label, gs.Meta.LastUpdated, gs.Meta.LastUpdatedVersion)
		}
		walkMeta(gs.Meta, func(m *Meta) {
			if m.LastUpdated.After(now) || m.LastUpdatedVersion > wantVersion || (!isDesired && m.LastUpdatedVersion != 0) {
				t.Fatalf("%s: %s metadata node %+v out of range", name, label, m)
			}
		})
	}
	checkSection("desired", desired, got.Desired, in.Desired, desiredPatch, true)
	checkSection("reported", reported, got.Reported, in.Reported, reportedPatch, false)
	// Counters.
	wantEtag := in.Etag
	if tags || desired {
		wantEtag++
	}
	if got.Version != in.Version+1 || got.Etag != wantEtag {
		t.Fatalf("%s: version %d etag %d, want %d %d", name, got.Version, got.Etag, in.Version+1, wantEtag)
	}
	// Round trip.
	b, err := got.MarshalJSON()
	if err != nil {
		t.Fatalf("%s: MarshalJSON: %v", name, err)
	}
	var back Twin
	if err := back.UnmarshalJSON(b); err != nil {
		t.Fatalf("%s: UnmarshalJSON(%s): %v", name, b, err)
	}
	if !reflect.DeepEqual(&back, got) {
		t.Fatalf("%s: round trip differs for %s", name, b)
	}
}

func walkMeta(m *Meta, fn func(*Meta)) {
	fn(m)
	for _, c := range m.Children {
		walkMeta(c, fn)
	}
}

// rfc7396 is the reference MergePatch of RFC 7396, section 2, used as an
// oracle for merge.
func rfc7396(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(t, k)
		} else {
			t[k] = rfc7396(t[k], v)
		}
	}
	return t
}
