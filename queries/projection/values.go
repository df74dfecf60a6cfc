package projection

import (
	"cmp"
	"encoding/json"
	"math"
	"strconv"
	"strings"
)

// vid identifies a distinct value in the dictionary: its kind and its text
// exactly as stored (the number 1.0 and the number 1 are different values,
// so that rows show numbers as the twin holds them; comparisons and groups
// treat them as equal).
type vid = uint32

// objectVID is the value of every object node.
const objectVID vid = 0

// valueEntry is one distinct value.
type valueEntry struct {
	// key is the kind byte followed by the value's text; "" while the entry
	// is free.
	key string
	// num is the value of a number; numOK is false for a number that does
	// not fit a float64 (such numbers compare to nothing, as in lang).
	num   float64
	numOK bool
	// refs counts the nodes of live twins that hold the value.
	refs int64
}

func (e *valueEntry) kind() byte { return e.key[0] }

// text is the string of a string value, the text of a number, the JSON of
// an array.
func (e *valueEntry) text() string { return e.key[1:] }

// dictionary interns values. Freed ids are reused only when no query is in
// flight (see Projection.release), so a query may hold ids across the points
// where it lets the applier run.
type dictionary struct {
	ids     map[string]vid
	entries []valueEntry
	free    []vid // reusable now
	pending []vid // freed while queries may still refer to them
	// aliases lists, by numeric value, the numbers whose text is not the
	// canonical one (1.0, 1e2, -0): equality on a number looks up the
	// canonical text and these.
	aliases map[float64][]vid
	scratch []byte // for intern, which only the applier calls
}

func newDictionary() *dictionary {
	d := &dictionary{ids: map[string]vid{}, aliases: map[float64][]vid{}}
	d.entries = append(d.entries, valueEntry{key: string(kindObject), refs: 1})
	d.ids[string(kindObject)] = objectVID
	return d
}

// lookup returns the id of a value, if interned. Queries call it
// concurrently, so it changes nothing.
func (d *dictionary) lookup(kind byte, text string) (vid, bool) {
	var buf [64]byte
	key := append(append(buf[:0], kind), text...)
	id, ok := d.ids[string(key)]
	return id, ok
}

// intern returns the id of a value and counts one more reference to it.
func (d *dictionary) intern(kind byte, text []byte) vid {
	if kind == kindObject {
		return objectVID
	}
	d.scratch = append(append(d.scratch[:0], kind), text...)
	if id, ok := d.ids[string(d.scratch)]; ok {
		d.entries[id].refs++
		return id
	}
	e := valueEntry{key: string(d.scratch), refs: 1}
	if kind == kindNumber {
		f, err := strconv.ParseFloat(e.text(), 64)
		e.num, e.numOK = f, err == nil
	}
	var id vid
	if n := len(d.free); n > 0 {
		id = d.free[n-1]
		d.free = d.free[:n-1]
		d.entries[id] = e
	} else {
		id = vid(len(d.entries))
		d.entries = append(d.entries, e)
	}
	d.ids[e.key] = id
	if e.numOK && canonicalNumber(e.num) != e.text() {
		d.aliases[e.num] = append(d.aliases[e.num], id)
	}
	return id
}

// release drops one reference; a value nobody holds leaves the dictionary
// and its id waits in pending until no query can refer to it.
func (d *dictionary) release(id vid) {
	if id == objectVID {
		return
	}
	e := &d.entries[id]
	if e.refs--; e.refs > 0 {
		return
	}
	delete(d.ids, e.key)
	if e.kind() == kindNumber && e.numOK {
		if a := d.aliases[e.num]; len(a) > 0 {
			for i, x := range a {
				if x == id {
					a = append(a[:i], a[i+1:]...)
					break
				}
			}
			if len(a) == 0 {
				delete(d.aliases, e.num)
			} else {
				d.aliases[e.num] = a
			}
		}
	}
	d.pending = append(d.pending, id)
}

// recycle makes the pending ids reusable; the caller knows no query runs.
func (d *dictionary) recycle() {
	for _, id := range d.pending {
		d.entries[id] = valueEntry{}
	}
	d.free = append(d.free, d.pending...)
	d.pending = d.pending[:0]
}

// numbers returns the ids of every number equal to f.
func (d *dictionary) numbers(f float64, out []vid) []vid {
	if id, ok := d.lookup(kindNumber, canonicalNumber(f)); ok {
		out = append(out, id)
	}
	return append(out, d.aliases[f]...)
}

// canonicalNumber formats f as encoding/json writes a float64, which is
// also how JavaScript and most JSON writers print it.
func canonicalNumber(f float64) string {
	if f == 0 {
		return "0" // and -0, which must be an alias
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs < 1e-6 || abs >= 1e21 {
		format = 'e'
	}
	s := strconv.FormatFloat(f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9, as encoding/json does
		if n := len(s); n >= 4 && s[n-4] == 'e' && s[n-3] == '-' && s[n-2] == '0' {
			s = s[:n-2] + s[n-1:]
		}
	}
	return s
}

// value returns the entry's value as lang evaluates it: nil, a bool, a
// json.Number, a string, or a decoded array.
func (e *valueEntry) value() any {
	switch e.kind() {
	case kindNull:
		return nil
	case kindFalse:
		return false
	case kindTrue:
		return true
	case kindNumber:
		return json.Number(e.text())
	case kindString:
		return e.text()
	case kindArray:
		var a any
		dec := json.NewDecoder(strings.NewReader(e.text()))
		dec.UseNumber()
		if err := dec.Decode(&a); err != nil {
			panic("BUG: projection: an interned array does not decode: " + err.Error())
		}
		return a
	}
	return map[string]any{}
}

// Ranks of the kinds in ORDER BY order, as lang orders them: undefined <
// null < false < true < numbers < strings < arrays < objects < anything else
// (a number that does not fit a float64).
const (
	rankUndefined = iota
	rankNull
	rankFalse
	rankTrue
	rankNumber
	rankString
	rankArray
	rankObject
	rankOther
)

// sortValue is a value reduced to what ORDER BY and MIN/MAX compare.
type sortValue struct {
	Rank int     `json:"r"`
	Num  float64 `json:"n,omitempty"`
	Str  string  `json:"s,omitempty"`
}

func compareSortValues(a, b sortValue) int {
	if c := cmp.Compare(a.Rank, b.Rank); c != 0 {
		return c
	}
	switch a.Rank {
	case rankNumber:
		return cmp.Compare(a.Num, b.Num)
	case rankString:
		return strings.Compare(a.Str, b.Str)
	}
	return 0
}

func (e *valueEntry) sortValue() sortValue {
	switch e.kind() {
	case kindNull:
		return sortValue{Rank: rankNull}
	case kindFalse:
		return sortValue{Rank: rankFalse}
	case kindTrue:
		return sortValue{Rank: rankTrue}
	case kindNumber:
		if !e.numOK {
			return sortValue{Rank: rankOther}
		}
		return sortValue{Rank: rankNumber, Num: e.num}
	case kindString:
		return sortValue{Rank: rankString, Str: e.text()}
	case kindArray:
		return sortValue{Rank: rankArray}
	}
	return sortValue{Rank: rankObject}
}

// sortValueOf classifies a value produced by lang or taken from a decoded
// twin, as lang's ORDER BY does.
func sortValueOf(v any, ok bool) sortValue {
	if !ok {
		return sortValue{Rank: rankUndefined}
	}
	switch v := v.(type) {
	case nil:
		return sortValue{Rank: rankNull}
	case bool:
		if v {
			return sortValue{Rank: rankTrue}
		}
		return sortValue{Rank: rankFalse}
	case string:
		return sortValue{Rank: rankString, Str: v}
	case []any:
		return sortValue{Rank: rankArray}
	case map[string]any:
		return sortValue{Rank: rankObject}
	}
	if f, ok := toFloat(v); ok {
		return sortValue{Rank: rankNumber, Num: f}
	}
	return sortValue{Rank: rankOther}
}

// toFloat converts the numbers lang computes with (json.Number from twins,
// float64 from arithmetic and aggregates, int from COUNT).
func toFloat(v any) (float64, bool) {
	switch v := v.(type) {
	case json.Number:
		f, err := strconv.ParseFloat(string(v), 64)
		return f, err == nil
	case float64:
		return v, true
	case int:
		return float64(v), true
	case int64:
		return float64(v), true
	}
	return 0, false
}

// compareScalar orders two dictionary values of one comparable kind for
// range scans: numbers by value, strings by bytes, false before true; ties
// are broken by id so that the order is total.
func (d *dictionary) compareScalar(a, b vid) int {
	ea, eb := &d.entries[a], &d.entries[b]
	ra, rb := ea.sortValue(), eb.sortValue()
	if c := compareSortValues(ra, rb); c != 0 {
		return c
	}
	return cmp.Compare(a, b)
}

// scalar reports whether values of this entry take part in comparisons
// (null, booleans, numbers that fit a float64, strings).
func (e *valueEntry) scalar() bool {
	switch e.kind() {
	case kindNull, kindFalse, kindTrue, kindString:
		return true
	case kindNumber:
		return e.numOK
	}
	return false
}
