package twin

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

// TestClearPatch: a section set to null deletes every key, and applied as a
// patch it gives what a Replace with nothing gives (content, $metadata and
// counters), so the two spellings of "delete everything" cannot drift apart.
func TestClearPatch(t *testing.T) {
	in := base(t)
	if got := DesiredNotification(ClearPatch(in.Desired.Props), 3); string(got) != `{"a":null,"f":null,"g":null,"$version":3}` {
		t.Errorf("notification of a cleared desired section: %s", got)
	}
	if got := ClearPatch(nil); got == nil || len(got) != 0 {
		t.Errorf("ClearPatch(nil) = %#v, want an empty patch", got)
	}
	cleared, err := ApplyService(in, ClearPatch(in.Tags), ClearPatch(in.Desired.Props), t2())
	if err != nil {
		t.Fatal(err)
	}
	replaced, err := Replace(in, nil, nil, t2())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cleared, replaced) {
		t.Errorf("clearing by patch:\n%s\ndiffers from replacing with nothing:\n%s", mustMarshal(t, cleared), mustMarshal(t, replaced))
	}
	if cleared.Tags != nil || len(cleared.Desired.Props) != 0 || cleared.Desired.Version != in.Desired.Version+1 ||
		cleared.Etag != in.Etag+1 || cleared.Version != in.Version+1 || !reflect.DeepEqual(cleared.Reported, in.Reported) {
		t.Errorf("cleared twin: %s", mustMarshal(t, cleared))
	}
}

// TestReplacePatches: the patch of a replacement is the new document plus
// null for each key it drops, at every level both documents hold an object;
// the patch applied by ReplaceByPatches gives what Replace gives.
func TestReplacePatches(t *testing.T) {
	tests := []struct {
		name               string
		oldTags, oldDes    string // applied to a fresh twin first
		tags, desired      string // the replacement ("" is nil)
		wantTags, wantDesP string // the patches
	}{
		{"the issue's example", `{}`, `{"a":1,"b":2}`, ``, `{"a":1,"c":100}`, `{}`, `{"a":1,"b":null,"c":100}`},
		{"nothing replaced by nothing", `{}`, `{}`, ``, ``, `{}`, `{}`},
		{"everything removed", `{"t":{"u":1}}`, `{"x":{"y":1},"z":[1]}`, ``, ``, `{"t":null}`, `{"x":null,"z":null}`},
		{"nested keys removed", `{}`, `{"x":{"p":1,"q":{"r":2,"s":3}}}`, ``, `{"x":{"p":1,"q":{"s":4}}}`, `{}`, `{"x":{"p":1,"q":{"r":null,"s":4}}}`},
		{"object emptied", `{}`, `{"x":{"p":1}}`, ``, `{"x":{}}`, `{}`, `{"x":{"p":null}}`},
		{"object becomes a scalar", `{}`, `{"x":{"p":1}}`, ``, `{"x":5}`, `{}`, `{"x":5}`},
		{"scalar becomes an object", `{}`, `{"x":5}`, ``, `{"x":{"p":1}}`, `{}`, `{"x":{"p":1}}`},
		{"array replaced whole", `{}`, `{"x":[1,2,3]}`, ``, `{"x":[9]}`, `{}`, `{"x":[9]}`},
		{"tags too", `{"env":"prod","loc":{"a":1}}`, `{}`, `{"loc":{"b":2}}`, ``, `{"env":null,"loc":{"a":null,"b":2}}`, `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, err := ApplyService(New("dev", t0()), patchOf(t, tt.oldTags), patchOf(t, tt.oldDes), t1())
			if err != nil {
				t.Fatal(err)
			}
			var tags, desired map[string]any
			if tt.tags != "" {
				tags = patchOf(t, tt.tags)
			}
			if tt.desired != "" {
				desired = patchOf(t, tt.desired)
			}
			tagsCopy, desiredCopy, inCopy := cloneObject(tags), cloneObject(desired), in.Clone()
			tp, dp, err := ReplacePatches(in, tags, desired)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(tp, patchOf(t, tt.wantTags)) || !reflect.DeepEqual(dp, patchOf(t, tt.wantDesP)) {
				t.Errorf("patches %v %v, want %s %s", tp, dp, tt.wantTags, tt.wantDesP)
			}
			if !reflect.DeepEqual(tags, tagsCopy) || !reflect.DeepEqual(desired, desiredCopy) || !reflect.DeepEqual(in, inCopy) {
				t.Error("ReplacePatches modified its inputs")
			}
			byPatch, err := ReplaceByPatches(in, tp, dp, t2())
			if err != nil {
				t.Fatal(err)
			}
			want, err := Replace(in, tags, desired, t2())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(byPatch, want) {
				t.Errorf("ReplaceByPatches:\n%s\nReplace:\n%s", mustMarshal(t, byPatch), mustMarshal(t, want))
			}
		})
	}
}

// TestReplacePatchesRejects: a replacement document is a document, not a
// patch: null in it is refused as Replace refuses it, and so is anything
// else that breaks a rule; nulls in arrays stay refused after the patch's
// own nulls are dropped.
func TestReplacePatchesRejects(t *testing.T) {
	in := base(t)
	for _, tt := range []struct {
		tags, desired string
		rule          string
		path          string
	}{
		{`{"a":null}`, `{}`, RuleValue, "tags.a"},
		{`{}`, `{"x":{"y":null}}`, RuleValue, "properties.desired.x.y"},
		{`{}`, `{"x":[null]}`, RuleArrayNull, "properties.desired.x[0]"},
		{`{"$v":1}`, `{}`, RuleKey, `tags["$v"]`},
	} {
		_, _, err := ReplacePatches(in, patchOf(t, tt.tags), patchOf(t, tt.desired))
		var e *Error
		if !errors.As(err, &e) || e.Rule != tt.rule || e.Path != tt.path {
			t.Errorf("ReplacePatches(%s, %s) = %v, want %s at %s", tt.tags, tt.desired, err, tt.rule, tt.path)
		}
	}
	if _, err := ReplaceByPatches(in, nil, patchOf(t, `{"x":[null],"y":null}`), t2()); !errors.Is(err, ErrInvalid) {
		t.Errorf("ReplaceByPatches with a null in an array: %v", err)
	}
}

// FuzzReplacePatches reads arbitrary bytes as {"old":…,"tags":…,"desired":…}:
// old is merged into tags and desired of a fixed twin, then tags and desired
// replace them. Invariants: nothing panics and no input changes;
// ReplacePatches fails exactly when Replace fails for a reason other than
// size, with the same error; otherwise ReplaceByPatches gives the twin
// Replace gives (or the same error), each patch merged into its old section
// (RFC 7396) gives the new section, every null in a patch names a key the
// new document lacks; and clearing tags and desired by ClearPatch equals
// replacing them with nothing.
func FuzzReplacePatches(f *testing.F) {
	for _, s := range []string{
		`{}`, `{"old":{"a":1,"b":2},"desired":{"a":1,"c":100}}`, `{"old":{"x":{"p":1,"q":2}},"tags":{"x":{"p":1}}}`,
		`{"old":{"x":{"p":1}},"desired":{"x":{}}}`, `{"desired":{"x":null}}`, `{"tags":{"x":[null]}}`,
		`{"old":{"x":[1,2]},"tags":{"x":{"y":[3]}},"desired":{"x":"s"}}`, `{"tags":{"$":1}}`, `{"desired":{"n":1e400}}`,
		`{"old":{"deep":` + nested(9) + `},"desired":{"deep":` + nested(9) + `}}`,
	} {
		f.Add([]byte(s))
	}
	fixed := fuzzBase(f)
	now := time.Date(2024, 6, 1, 12, 0, 0, 987654321, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := ParseObject(data)
		if err != nil {
			return
		}
		in := fixed
		if old := member("old")(doc); old != nil {
			if in, err = ApplyService(fixed, old, old, now.Add(-time.Hour)); err != nil {
				in = fixed
			}
		}
		inCopy, docCopy := in.Clone(), cloneObject(doc)
		tags, desired := member("tags")(doc), member("desired")(doc)
		tp, dp, perr := ReplacePatches(in, tags, desired)
		want, rerr := Replace(in, tags, desired, now)
		if !reflect.DeepEqual(in, inCopy) || !reflect.DeepEqual(doc, docCopy) {
			t.Fatal("an input changed")
		}
		var re *Error
		switch {
		case perr != nil && (rerr == nil || perr.Error() != rerr.Error()):
			t.Fatalf("ReplacePatches: %v; Replace: %v", perr, rerr)
		case perr != nil:
			return
		case rerr != nil && (!errors.As(rerr, &re) || re.Rule != RuleSize):
			t.Fatalf("ReplacePatches accepted what Replace refused: %v", rerr)
		}
		got, err := ReplaceByPatches(in, tp, dp, now)
		if (err == nil) != (rerr == nil) || (err != nil && err.Error() != rerr.Error()) || !reflect.DeepEqual(got, want) {
			t.Fatalf("ReplaceByPatches: %v %v; Replace: %v %v", got, err, want, rerr)
		}
		for _, s := range []struct {
			name       string
			old, patch map[string]any
			doc        map[string]any
		}{{"tags", in.Tags, tp, tags}, {"desired", in.Desired.Props, dp, desired}} {
			merged, _ := rfc7396(cloneObject(s.old), s.patch).(map[string]any)
			norm, _ := normalizeObject(s.doc, "", 0, nullRejected)
			if !reflect.DeepEqual(merged, norm) {
				t.Fatalf("%s: old merged with the patch %v is %v, want %v", s.name, s.patch, merged, norm)
			}
			checkNullsRemoved(t, s.name, s.patch, norm)
		}
		cleared, err := ApplyService(in, ClearPatch(in.Tags), ClearPatch(in.Desired.Props), now)
		empty, rerr := Replace(in, nil, nil, now)
		if err != nil || rerr != nil || !reflect.DeepEqual(cleared, empty) {
			t.Fatalf("clearing (%v) differs from replacing with nothing (%v)", err, rerr)
		}
	})
}

// checkNullsRemoved fails unless every null in patch names a key doc lacks.
func checkNullsRemoved(t *testing.T, name string, patch, doc map[string]any) {
	t.Helper()
	for k, v := range patch {
		switch v := v.(type) {
		case nil:
			if _, ok := doc[k]; ok {
				t.Fatalf("%s: the patch deletes %q, which the new document holds", name, k)
			}
		case map[string]any:
			sub, _ := doc[k].(map[string]any)
			checkNullsRemoved(t, name, v, sub)
		}
	}
}
