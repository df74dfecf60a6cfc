package projection

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/twin"
)

type flatNode struct {
	Path string
	Kind byte
	Raw  string
}

func flat(t testing.TB, doc string) ([]flatNode, error) {
	var out []flatNode
	err := flatten([]byte(doc), func(path []byte, kind byte, raw []byte) error {
		out = append(out, flatNode{string(path), kind, string(raw)})
		return nil
	})
	return out, err
}

// TestFlatten lists the nodes of a few documents: every node but the root,
// parents first, arrays whole, the sections' $metadata left out, strings
// decoded as encoding/json decodes them.
func TestFlatten(t *testing.T) {
	got, err := flat(t, `{"deviceId":"d1","tags":{"a":{"b":1.0,"c":[1,{"x":2}]},"e":{}},`+
		`"properties":{"desired":{"$metadata":{"$lastUpdated":"x","k":{"$lastUpdated":"y"}},"k":"v\u003c\"\\é","$version":2},`+
		`"reported":{"n":null,"t":true,"f":false,"$metadata":{}}},"x":{"$metadata":1}}`)
	if err != nil {
		t.Fatal(err)
	}
	want := []flatNode{
		{"deviceId", 's', "d1"},
		{"tags", 'o', ""}, {"tags.a", 'o', ""}, {"tags.a.b", 'd', "1.0"}, {"tags.a.c", 'a', `[1,{"x":2}]`}, {"tags.e", 'o', ""},
		{"properties", 'o', ""}, {"properties.desired", 'o', ""}, {"properties.desired.k", 's', "v<\"\\é"},
		{"properties.desired.$version", 'd', "2"},
		{"properties.reported", 'o', ""}, {"properties.reported.n", 'n', ""}, {"properties.reported.t", 't', ""},
		{"properties.reported.f", 'f', ""},
		{"x", 'o', ""}, {"x.$metadata", 'd', "1"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("nodes:\n got %q\nwant %q", got, want)
	}
	for _, bad := range []string{``, `[]`, `{`, `{"a":}`, `{"a":1,}`, `{"a":01}`, `{"a":"x`, "{\"a\":\"\x01\"}", `{"a":1} x`, `{"a":tru}`,
		`{"a":-}`, `{"a":1.}`, `{"a":1e}`, strings.Repeat(`{"a":`, 100) + "1" + strings.Repeat("}", 100)} {
		if _, err := flat(t, bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestPlainRun checks the eight-bytes-at-a-time scan against the plain
// loop on random strings.
func TestPlainRun(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("abcXYZ09 {}:,\"\\\x00\x1f\x7f\x80\xc3\xa9\xff")
	for range 20000 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			if r.IntN(4) == 0 {
				b[i] = alphabet[r.IntN(len(alphabet))]
			} else {
				b[i] = byte('a' + r.IntN(26))
			}
		}
		want := len(b)
		for i, c := range b {
			if c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
				want = i
				break
			}
		}
		if got := plainRun(b); got != want {
			t.Fatalf("plainRun(%q) = %d, want %d", b, got, want)
		}
	}
}

// TestRecordFields reads the twin and the tombstone flag out of real
// records, as the processor encodes them.
func TestRecordFields(t *testing.T) {
	f := newFleet(t, 9)
	f.build(20)
	for _, id := range f.ids() {
		rec := &pipeline.Record{Twin: f.twins[id], Identity: pipeline.Identity{GenerationID: "1", Etag: 3}, LastEventSeq: 7, Recent: []string{"a"}}
		b, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		c, err := decodeEntry("k", b, jetstream.KeyValuePut, 1)
		if err != nil || !bytes.Equal(c.twin, f.twinJSON(id)) {
			t.Fatalf("%s: %v\n%s", id, err, c.twin)
		}
		rec.Deleted, rec.Twin = true, nil
		b, _ = json.Marshal(rec)
		if c, err := decodeEntry("k", b, jetstream.KeyValuePut, 1); err != nil || !c.gone() {
			t.Fatalf("tombstone of %s: %+v %v", id, c, err)
		}
	}
	if c, _ := decodeEntry("dev=2E1", nil, jetstream.KeyValueDelete, 1); c.deviceID != "dev.1" || !c.gone() {
		t.Fatalf("KV delete: %+v", c)
	}
}

// rebuild makes a document from flattened nodes, as a check of flatten.
func rebuild(t testing.TB, nodes []flatNode) map[string]any {
	root := map[string]any{}
	objs := map[string]map[string]any{"": root}
	for _, n := range nodes {
		parent, key := "", n.Path
		if i := strings.LastIndexByte(n.Path, '.'); i >= 0 {
			parent, key = n.Path[:i], n.Path[i+1:]
		}
		m := objs[parent]
		if m == nil {
			t.Fatalf("node %s before its parent", n.Path)
		}
		switch n.Kind {
		case kindObject:
			objs[n.Path] = map[string]any{}
			m[key] = objs[n.Path]
		case kindArray:
			dec := json.NewDecoder(strings.NewReader(n.Raw))
			dec.UseNumber()
			var a any
			if err := dec.Decode(&a); err != nil {
				t.Fatalf("array %s: %v", n.Raw, err)
			}
			m[key] = a
		case kindString:
			m[key] = n.Raw
		case kindNumber:
			m[key] = json.Number(n.Raw)
		case kindNull:
			m[key] = nil
		case kindTrue:
			m[key] = true
		case kindFalse:
			m[key] = false
		}
	}
	return root
}

// FuzzFlatten: flatten never panics, and for every JSON object whose keys
// hold no '.' it succeeds and its nodes rebuild the document encoding/json
// decodes, but the sections' $metadata. recordFields never panics either.
func FuzzFlatten(f *testing.F) {
	fl := newFleet(f, 3)
	fl.build(5)
	for _, id := range fl.ids() {
		f.Add(fl.twinJSON(id))
	}
	f.Add([]byte(`{"a":"\u00e9\ud83d\ude00\\\"","b":[1,[2,{"c":null}]],"properties":{"reported":{"$metadata":{"x":"\u003c"}}}}`))
	f.Add([]byte(`{"twin":{"deviceId":"x"},"deleted":true}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		recordFields(b)
		nodes, err := flat(t, string(b))
		if !json.Valid(b) || !utf8.Valid(b) {
			return
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var doc any
		if dec.Decode(&doc) != nil {
			return
		}
		m, ok := doc.(map[string]any)
		if !ok || hasDottedKey(m) {
			return
		}
		if err != nil {
			t.Fatalf("flatten(%s): %v", b, err)
		}
		if props, ok := m["properties"].(map[string]any); ok {
			for _, s := range []string{"desired", "reported"} {
				if sec, ok := props[s].(map[string]any); ok {
					delete(sec, "$metadata")
				}
			}
		}
		if got := rebuild(t, nodes); !reflect.DeepEqual(got, m) {
			t.Fatalf("flatten(%s) rebuilds\n%v\nwant\n%v", b, got, m)
		}
	})
}

// hasDottedKey reports a key with '.', ” or duplicate-looking structure
// flatten cannot express as a path (twins never have such keys).
func hasDottedKey(v any) bool {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if k == "" || strings.Contains(k, ".") || hasDottedKey(e) {
				return true
			}
		}
	}
	return false
}

// TestCanonicalNumber: the canonical text is encoding/json's, and numbers
// written otherwise are found as aliases.
func TestCanonicalNumber(t *testing.T) {
	for _, f := range []float64{0, 1, -1, 1.5, 1e20, 1e21, 1e-6, 1e-7, 123456789, 0.1, 4503599627370495, -2.5e-10} {
		b, _ := json.Marshal(f)
		if got := canonicalNumber(f); got != string(b) {
			t.Errorf("canonicalNumber(%v) = %s, encoding/json writes %s", f, got, b)
		}
	}
	d := newDictionary()
	ids := map[string]vid{}
	for _, s := range []string{"1", "1.0", "1e0", "10", "1e1", "-0", "0", "0.0"} {
		ids[s] = d.intern(kindNumber, []byte(s))
	}
	for f, want := range map[float64][]string{1: {"1", "1.0", "1e0"}, 10: {"10", "1e1"}, 0: {"0", "-0", "0.0"}} {
		got := d.numbers(f, nil)
		if len(got) != len(want) {
			t.Errorf("numbers(%v) = %v, want %v", f, got, want)
		}
		for _, s := range want {
			found := false
			for _, id := range got {
				found = found || id == ids[s]
			}
			if !found {
				t.Errorf("numbers(%v) misses %s", f, s)
			}
		}
	}
	d.release(ids["1.0"])
	if got := d.numbers(1, nil); len(got) != 2 {
		t.Errorf("after releasing 1.0: %v", got)
	}
}

// TestOrdered checks the block list against a sorted slice under random
// inserts and removes, with seeks.
func TestOrdered(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 5))
	o := newOrdered(func(a, b uint32) int { return int(a) - int(b) })
	ref := map[uint32]bool{}
	for step := range 40000 {
		x := uint32(r.IntN(5000))
		if r.IntN(3) > 0 && !ref[x] {
			o.insert(x)
			ref[x] = true
		} else if ref[x] {
			if !o.remove(x) {
				t.Fatalf("remove(%d) missed", x)
			}
			delete(ref, x)
		}
		if step%997 == 0 {
			all := o.all()
			if len(all) != len(ref) || o.len() != len(ref) {
				t.Fatalf("%d elements, want %d", len(all), len(ref))
			}
			for i := 1; i < len(all); i++ {
				if all[i-1] >= all[i] {
					t.Fatalf("out of order at %d", i)
				}
			}
			at := uint32(r.IntN(5000))
			var got []uint32
			o.each(o.seek(func(y uint32) bool { return y >= at }), func(y uint32) bool { got = append(got, y); return len(got) < 3 })
			var want []uint32
			for _, y := range all {
				if y >= at && len(want) < 3 {
					want = append(want, y)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("seek(%d): %v, want %v", at, got, want)
			}
		}
	}
}

// TestPostings checks the set forms and their switches (singleton, sorted
// ids, bitmap and back) and the set operations against maps.
func TestPostings(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 7))
	const universe = 40000
	pe := &pathEntry{post: map[vid]uint32{}}
	s := &store{docs: make([]doc, universe), paths: []*pathEntry{pe}, dict: newDictionary()}
	ref := map[vid]map[docID]bool{}
	for step := range 200000 {
		v := vid(1 + r.IntN(3))
		id := docID(r.IntN(universe))
		if ref[v] == nil {
			ref[v] = map[docID]bool{}
		}
		// Value 1 grows dense then shrinks back, 2 stays mid-sized, 3 flips
		// around one holder.
		grow := map[vid]int{1: 9, 2: 5, 3: 1}[v]
		if v == 1 && step > 100000 {
			grow = 1
		}
		if r.IntN(10) < grow && !ref[v][id] {
			s.index(makeNode(0, v), id)
			ref[v][id] = true
		} else if len(ref[v]) > 0 {
			for x := range ref[v] {
				id = x
				break
			}
			s.unindex(makeNode(0, v), id)
			delete(ref[v], id)
		}
		if step == 199999 {
			if ref, ok := pe.post[1]; ok && ref&singleRef == 0 && pe.lists[ref].bits != nil {
				t.Fatalf("value 1 is still a bitmap with %d twins", pe.lists[ref].len())
			}
		}
		if step%5000 == 0 {
			if ref1 := pe.post[1]; step == 100000 && (ref1&singleRef != 0 || pe.lists[ref1].bits == nil) {
				t.Fatalf("value 1 is not a bitmap with %d twins", len(ref[1]))
			}
			for v, want := range ref {
				g := &gather{}
				g.add(pe, v)
				got := g.union(universe)
				if got.len() != len(want) || pe.holders(v) != len(want) {
					t.Fatalf("value %d: %d twins, want %d", v, got.len(), len(want))
				}
				for x := range want {
					if !got.contains(x) {
						t.Fatalf("value %d misses %d", v, x)
					}
				}
			}
			all := &gather{}
			for v := range ref {
				all.add(pe, v)
			}
			u := all.union(universe)
			a, b := func() (*idSet, *idSet) {
				g1, g2 := &gather{}, &gather{}
				g1.add(pe, 1)
				g2.add(pe, 2)
				return g1.union(universe), g2.union(universe)
			}()
			in, diff := intersect(a, b), subtract(a, b)
			for x := range docID(universe) {
				inU := ref[1][x] || ref[2][x] || ref[3][x]
				if u.contains(x) != inU || in.contains(x) != (ref[1][x] && ref[2][x]) || diff.contains(x) != (ref[1][x] && !ref[2][x]) {
					t.Fatalf("set operations wrong at %d", x)
				}
			}
		}
	}
}

// TestDecodeTwinMatchesEncodingJSON: decodeTwin (twin.ParseObject) gives
// what encoding/json with UseNumber gives for stored twins.
func TestDecodeTwinMatchesEncodingJSON(t *testing.T) {
	f := newFleet(t, 12)
	f.build(50)
	for _, id := range f.ids() {
		b := f.twinJSON(id)
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var want map[string]any
		dec.Decode(&want)
		if got := decodeTwin(b); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s decodes differently", id)
		}
	}
	if _, err := twin.ParseObject([]byte(`{"a":1}`)); err != nil {
		t.Fatal(err)
	}
}
