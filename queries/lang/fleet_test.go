package lang

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// doc is a twin as the evaluator sees it.
type doc = map[string]any

// row is an expected or actual result row.
type row = map[string]any

// fleet is the fixture: 30 twins in Azure's service shape with varied
// tags, regions and plants, nested reported properties, nulls, missing
// properties, arrays, booleans, a string where numbers are usual, and
// numbers as json.Number (even twins), float64 (odd twins), int and int64.
var fleet = buildFleet()

func buildFleet() []doc {
	regions := []string{"US", "EU", "APAC"}
	plants := []string{"Redmond43", "Seattle", "Berlin", "Tokyo", "Dublin"}
	conn := []string{"cellular", "wifi", "ethernet"}
	tstatus := []string{"Success", "Pending", "Failed"}
	fws := []string{"1.0", "1.1", "2.0"}
	var out []doc
	for i := range 30 {
		id := fmt.Sprintf("d%02d", i+1)
		switch i {
		case 26:
			id = "x-sensor-1"
		case 27:
			id = "xray-2"
		case 28:
			id = "pump.7"
		case 29:
			id = "Sensor-X"
		}
		d := doc{
			"deviceId":                  id,
			"etag":                      "AAAAAAAAAAE=",
			"deviceEtag":                "NjE2NTM2ODIz",
			"version":                   1 + (i*3)%17,
			"status":                    "enabled",
			"statusUpdateTime":          "0001-01-01T00:00:00Z",
			"connectionState":           "Disconnected",
			"lastActivityTime":          fmt.Sprintf("2024-05-%02dT10:00:%02d.1234567Z", 1+i%28, i),
			"cloudToDeviceMessageCount": i % 5,
			"authenticationType":        "sas",
			"x509Thumbprint":            doc{"primaryThumbprint": nil, "secondaryThumbprint": nil},
			"modelId":                   "",
			"capabilities":              doc{"iotEdge": i%7 == 0},
		}
		if i%4 == 3 {
			d["status"] = "disabled"
			d["statusReason"] = "maintenance"
			if i == 7 {
				d["statusReason"] = nil
			}
		}
		if i%3 == 0 {
			d["connectionState"] = "Connected"
		}
		if i%6 == 5 {
			d["authenticationType"] = "selfSigned"
		}
		if i == 20 {
			d["authenticationType"] = "certificateAuthority"
		}
		if i%5 == 0 {
			d["modelId"] = "dtmi:com:example:Thermostat;1"
		}
		if i%10 != 9 {
			tags := doc{"critical": i%2 == 0, "floor": i % 4}
			if i != 16 {
				tags["location"] = doc{"region": regions[i%3], "plant": plants[i%5]}
			}
			switch i {
			case 12:
				tags["floor"] = "3"
			case 14:
				tags["floor"] = nil
			}
			if i%6 == 0 {
				tags["labels"] = []any{"a", "b"}
			}
			switch i % 8 {
			case 0:
				tags["owner"] = nil
			case 1:
				tags["owner"] = "ops"
			}
			if i%5 < 2 {
				tags["group"] = fmt.Sprintf("g%d", i%5+1)
			}
			d["tags"] = tags
		}
		reported := doc{
			"battery": (i * 13) % 100,
			"online":  i%3 != 1,
			"fw":      fws[i%3],
			"$metadata": doc{
				"$lastUpdated": "2024-05-01T10:00:03.1234567Z",
			},
			"$version": i + 2,
		}
		if i%8 != 5 {
			reported["connectivity"] = doc{"type": conn[i%3]}
		}
		switch {
		case i == 10:
			reported["telemetryConfig"] = doc{"status": nil}
		case i%7 != 6:
			reported["telemetryConfig"] = doc{"status": tstatus[i%3]}
		}
		switch {
		case i == 11:
			reported["temp"] = nil
		case i == 13:
			reported["temp"] = "hot"
		case i == 22:
			reported["temp"] = -3.5
		case i%9 != 4:
			reported["temp"] = 15 + float64((i*7)%20) + 0.5*float64(i%2)
		}
		switch {
		case i == 25:
			delete(reported, "fw")
		case i%10 == 7:
			reported["fw"] = nil
		}
		if i%4 == 0 {
			reported["sensors"] = doc{"a": doc{"b": doc{"value": i}}}
		}
		if i%7 == 2 {
			reported["list"] = []any{1, 2, 3}
		}
		d["properties"] = doc{
			"desired": doc{
				"telemetryConfig": doc{"sendFrequency": []string{"5m", "1m"}[i%2]},
				"$metadata":       doc{"$lastUpdated": "2024-05-01T09:59:00.0000000Z", "$lastUpdatedVersion": i + 1},
				"$version":        i + 1,
			},
			"reported": reported,
		}
		// Round-trip through JSON so the twin holds what a decoder gives:
		// json.Number for even twins, float64 for odd ones.
		b, err := json.Marshal(d)
		if err != nil {
			panic(err)
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		if i%2 == 0 {
			dec.UseNumber()
		}
		var t doc
		if err := dec.Decode(&t); err != nil {
			panic(err)
		}
		// And a few Go integers, as a projection built in memory may hold.
		rep := t["properties"].(doc)["reported"].(doc)
		switch i % 5 {
		case 1:
			rep["battery"] = (i * 13) % 100
		case 2:
			rep["battery"] = int64((i * 13) % 100)
		}
		if i == 15 {
			t["version"] = 1 + (i*3)%17
		}
		out = append(out, t)
	}
	return out
}

// The oracle: plain Go over the fixture's JSON, sharing no code with the
// engine.

// at returns the value at a dotted path, and whether it exists.
func at(d doc, path string) (any, bool) {
	var cur any = d
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(doc)
		if !ok {
			return nil, false
		}
		if cur, ok = m[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// num converts the numeric types of the fixture to float64.
func num(v any) (float64, bool) {
	switch v := v.(type) {
	case json.Number:
		f, err := v.Float64()
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

func numAt(d doc, path string) (float64, bool) {
	v, ok := at(d, path)
	if !ok {
		return 0, false
	}
	return num(v)
}

func strAt(d doc, path string) (string, bool) {
	v, ok := at(d, path)
	s, isString := v.(string)
	return s, ok && isString
}

func boolAt(d doc, path string) (bool, bool) {
	v, ok := at(d, path)
	b, isBool := v.(bool)
	return b, ok && isBool
}

func isNullAt(d doc, path string) bool {
	v, ok := at(d, path)
	return ok && v == nil
}

func isPrim(v any) bool {
	switch v.(type) {
	case nil, bool, string:
		return true
	}
	_, ok := num(v)
	return ok
}

func id(d doc) string { return d["deviceId"].(string) }

// where returns the fixture's twins that keep returns true for, in order.
func where(keep func(doc) bool) []doc {
	var out []doc
	for _, d := range fleet {
		if keep(d) {
			out = append(out, d)
		}
	}
	return out
}

// project maps each twin to a row.
func project(docs []doc, f func(doc) row) []row {
	out := []row{}
	for _, d := range docs {
		out = append(out, f(d))
	}
	return out
}

// put copies the value at path into r under key when it exists.
func put(r row, key string, d doc, path string) row {
	if v, ok := at(d, path); ok {
		r[key] = v
	}
	return r
}

// rank orders kinds as ORDER BY must: undefined, null, false, true,
// numbers, strings, arrays, objects.
func rank(v any, ok bool) int {
	if !ok {
		return 0
	}
	switch v := v.(type) {
	case nil:
		return 1
	case bool:
		if v {
			return 3
		}
		return 2
	case string:
		return 5
	case []any:
		return 6
	case doc:
		return 7
	}
	return 4
}

// less compares two values for ORDER BY: -1, 0 or 1.
func cmpValues(a any, aok bool, b any, bok bool) int {
	ra, rb := rank(a, aok), rank(b, bok)
	switch {
	case ra < rb:
		return -1
	case ra > rb:
		return 1
	case ra == 4:
		fa, _ := num(a)
		fb, _ := num(b)
		switch {
		case fa < fb:
			return -1
		case fa > fb:
			return 1
		}
	case ra == 5:
		return strings.Compare(a.(string), b.(string))
	}
	return 0
}

// sortKey is one ORDER BY key for the oracle.
type sortKey struct {
	path string
	desc bool
}

func asc(p string) sortKey  { return sortKey{p, false} }
func desc(p string) sortKey { return sortKey{p, true} }

// sortDocs sorts a copy of docs stably by keys.
func sortDocs(docs []doc, keys ...sortKey) []doc {
	out := slices.Clone(docs)
	sort.SliceStable(out, func(i, j int) bool {
		for _, k := range keys {
			a, aok := at(out[i], k.path)
			b, bok := at(out[j], k.path)
			c := cmpValues(a, aok, b, bok)
			if k.desc {
				c = -c
			}
			if c != 0 {
				return c < 0
			}
		}
		return false
	})
	return out
}

// sortRows sorts a copy of rows stably by keys (paths into the row).
func sortRows(rows []row, keys ...sortKey) []row {
	docs := make([]doc, len(rows))
	copy(docs, rows)
	return sortDocs(docs, keys...)
}

func top[T any](s []T, n int) []T {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// canon encodes a value for grouping: numbers by value, other kinds by JSON.
func canon(v any, ok bool) string {
	if !ok {
		return "<undefined>"
	}
	if f, isNum := num(v); isNum {
		v = f
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// grp is one group of twins, in order of first appearance.
type grp struct {
	first doc
	docs  []doc
}

// groupBy groups docs by the values at paths.
func groupBy(docs []doc, paths ...string) []*grp {
	var out []*grp
	idx := map[string]*grp{}
	for _, d := range docs {
		var k strings.Builder
		for _, p := range paths {
			v, ok := at(d, p)
			k.WriteString(canon(v, ok) + "|")
		}
		g := idx[k.String()]
		if g == nil {
			g = &grp{first: d}
			idx[k.String()] = g
			out = append(out, g)
		}
		g.docs = append(g.docs, d)
	}
	return out
}

// sum and avg of the numbers at path; ok is false when there are none.
func sumAt(docs []doc, path string) (float64, bool) {
	s, n := 0.0, 0
	for _, d := range docs {
		if f, ok := numAt(d, path); ok {
			s += f
			n++
		}
	}
	return s, n > 0
}

func avgAt(docs []doc, path string) (float64, bool) {
	s, n := 0.0, 0
	for _, d := range docs {
		if f, ok := numAt(d, path); ok {
			s += f
			n++
		}
	}
	return s / float64(max(n, 1)), n > 0
}

// extremeAt is MIN (max false) or MAX (max true) over the numbers and
// strings at path, numbers ranking below strings: MIN is the smallest
// number if any, else the smallest string; MAX is the largest string if
// any, else the largest number.
func extremeAt(docs []doc, path string, max bool) (any, bool) {
	var nums []float64
	var strs []string
	var raw = map[float64]any{}
	for _, d := range docs {
		v, ok := at(d, path)
		if !ok {
			continue
		}
		if f, isNum := num(v); isNum {
			nums = append(nums, f)
			if _, seen := raw[f]; !seen {
				raw[f] = v
			}
		} else if s, isStr := v.(string); isStr {
			strs = append(strs, s)
		}
	}
	switch {
	case max && len(strs) > 0:
		return slices.Max(strs), true
	case max && len(nums) > 0:
		return raw[slices.Max(nums)], true
	case !max && len(nums) > 0:
		return raw[slices.Min(nums)], true
	case !max && len(strs) > 0:
		return slices.Min(strs), true
	}
	return nil, false
}

// putV stores v under key when ok.
func putV(r row, key string, v any, ok bool) row {
	if ok {
		r[key] = v
	}
	return r
}

// normalize converts every number to float64 so rows compare by value.
func normalize(v any) any {
	switch v := v.(type) {
	case doc:
		out := doc{}
		for k, e := range v {
			out[k] = normalize(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = normalize(e)
		}
		return out
	}
	if f, ok := num(v); ok {
		return f
	}
	return v
}
