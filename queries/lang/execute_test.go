package lang

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"sync"
	"testing"
)

// TestExpressionSemantics evaluates single expressions over one twin and
// checks the value, or that it is undefined (left out of the row).
func TestExpressionSemantics(t *testing.T) {
	twin := doc{
		"deviceId": "d1", "n": json.Number("4"), "f": 2.5, "i": 3, "i64": int64(-7), "s": "abc",
		"t": true, "no": false, "z": nil, "o": doc{"k": "v"}, "a": []any{1.0},
		"bad": json.Number("x1"),
	}
	const undef = "undefined"
	tests := []struct {
		expr string
		want any // undef for undefined
	}{
		{"n + f", 6.5}, {"n - i", 1.0}, {"i * i64", -21.0}, {"n / 8", 0.5}, {"i64 % 4", -3.0}, {"-n", -4.0}, {"+f", 2.5},
		{"n / 0", undef}, {"n % 0", undef}, {"s + 1", undef}, {"s + 'x'", undef}, {"-s", undef}, {"+t", undef},
		{"1e308 * 10", undef}, {"missing + 1", undef}, {"z + 1", undef}, {"bad + 1", undef},
		{"n = 4", true}, {"n = 4.0", true}, {"n = i + 1", true}, {"i64 < i", true}, {"s > 'abb'", true}, {"s >= 'abd'", false},
		{"t = true", true}, {"no < t", true}, {"t != no", true}, {"z = null", true}, {"z != null", false}, {"z <= null", true}, {"z < null", false},
		{"n = '4'", undef}, {"t = 1", undef}, {"z = 0", undef}, {"s != null", undef}, {"o = o", undef}, {"a = [1]", undef}, {"missing = missing", undef},
		{"bad = bad", undef}, {"missing != 1", undef},
		{"t AND t", true}, {"t AND no", false}, {"no AND missing", false}, {"missing AND no", false}, {"t AND missing", undef}, {"t AND s", undef},
		{"no OR no", false}, {"t OR missing", true}, {"missing OR t", true}, {"no OR missing", undef}, {"no OR z", undef},
		{"NOT t", false}, {"NOT no", true}, {"NOT missing", undef}, {"NOT z", undef}, {"NOT s", undef},
		{"n IN [1, 4]", true}, {"n IN ['4']", false}, {"s IN ['abc']", true}, {"z IN [null]", true}, {"t IN [1, 'true']", false},
		{"n NIN [1, 4]", false}, {"n NIN [1]", true}, {"missing IN [1]", undef}, {"missing NIN [1]", undef}, {"o IN [1]", undef}, {"a NIN [1]", undef},
		{"IS_DEFINED(z)", true}, {"IS_DEFINED(missing)", false}, {"IS_DEFINED(o.k)", true}, {"IS_DEFINED(s.k)", false},
		{"IS_NULL(z)", true}, {"IS_NULL(missing)", false}, {"IS_NULL(s)", false},
		{"STARTSWITH(s, 'ab')", true}, {"STARTSWITH(s, 'AB')", false}, {"ENDSWITH(s, 'bc')", true}, {"ENDSWITH(deviceId, s)", false},
		{"STARTSWITH(n, '4')", undef}, {"STARTSWITH(s, missing)", undef}, {"ENDSWITH(missing, 'a')", undef},
		{"o", doc{"k": "v"}}, {"o.k", "v"}, {"a", []any{1.0}}, {"z", nil}, {"undefined", undef}, {"[1, 'x']", []any{1.0, "x"}},
		{"devices.o.k", "v"}, {"devices", undef},
	}
	for _, tt := range tests {
		q, err := Parse("SELECT " + tt.expr + " AS v FROM devices")
		if err != nil {
			t.Fatalf("%s: %v", tt.expr, err)
		}
		rows, err := q.Execute(slices.Values([]doc{twin}))
		if err != nil || len(rows) != 1 {
			t.Fatalf("%s: %d rows, %v", tt.expr, len(rows), err)
		}
		got, ok := rows[0]["v"]
		switch {
		case tt.want == undef && ok:
			t.Errorf("%s = %#v, want undefined", tt.expr, got)
		case tt.want != undef && !ok:
			t.Errorf("%s is undefined, want %#v", tt.expr, tt.want)
		case tt.want != undef && !reflect.DeepEqual(normalize(got), normalize(tt.want)):
			t.Errorf("%s = %#v, want %#v", tt.expr, got, tt.want)
		}
	}
}

// TestTopStopsReading checks that TOP without ORDER BY stops consuming the
// input once it has its rows.
func TestTopStopsReading(t *testing.T) {
	q, err := Parse("SELECT TOP 2 * FROM devices WHERE status = 'enabled'")
	if err != nil {
		t.Fatal(err)
	}
	read := 0
	rows, err := q.Execute(func(yield func(doc) bool) {
		for _, d := range fleet {
			read++
			if !yield(d) {
				return
			}
		}
	})
	if err != nil || len(rows) != 2 {
		t.Fatalf("%d rows, %v", len(rows), err)
	}
	if read != 2 {
		t.Fatalf("read %d twins for TOP 2 over enabled twins, want 2", read)
	}
}

// TestTopOrderByMatchesFullSort checks that the bounded buffer of TOP with
// ORDER BY gives what a full stable sort gives, ties included.
func TestTopOrderByMatchesFullSort(t *testing.T) {
	var docs []doc
	for i := range 1000 {
		d := doc{"deviceId": fmt.Sprintf("g%04d", i), "k": float64((i * 37) % 11)}
		if i%13 == 0 {
			delete(d, "k")
		}
		docs = append(docs, d)
	}
	for _, n := range []int{1, 3, 31, 64, 200, 999, 1000, 5000} {
		for _, dir := range []string{"", " DESC"} {
			q, err := Parse(fmt.Sprintf("SELECT TOP %d * FROM devices ORDER BY k%s", n, dir))
			if err != nil {
				t.Fatal(err)
			}
			got, err := q.Execute(slices.Values(docs))
			if err != nil {
				t.Fatal(err)
			}
			sorted := slices.Clone(docs)
			sort.SliceStable(sorted, func(i, j int) bool {
				a, aok := sorted[i]["k"]
				b, bok := sorted[j]["k"]
				c := cmpValues(a, aok, b, bok)
				if dir != "" {
					c = -c
				}
				return c < 0
			})
			if want := top(sorted, n); !slices.Equal(ids(got), ids(want)) {
				t.Fatalf("TOP %d%s: got %v, want %v", n, dir, ids(got), ids(want))
			}
		}
	}
}

// TestAggregatesStream checks that grouped queries keep no twin: the input
// reuses one map for every twin, so any retained twin would be overwritten
// and spoil the result.
func TestAggregatesStream(t *testing.T) {
	q, err := Parse("SELECT properties.reported.fw AS fw, COUNT() AS n, SUM(properties.reported.temp) AS s, MAX(properties.reported.temp) AS m FROM devices GROUP BY properties.reported.fw")
	if err != nil {
		t.Fatal(err)
	}
	shared := doc{}
	rows, err := q.Execute(func(yield func(doc) bool) {
		for i := range 100 {
			clear(shared)
			shared["properties"] = doc{"reported": doc{"fw": fmt.Sprint(i % 3), "temp": float64(i)}}
			if !yield(shared) {
				return
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []row{
		{"fw": "0", "n": 34, "s": 1683.0, "m": 99.0},
		{"fw": "1", "n": 33, "s": 1617.0, "m": 97.0},
		{"fw": "2", "n": 33, "s": 1650.0, "m": 98.0},
	}
	if !reflect.DeepEqual(normalize(toAny(rows)), normalize(toAny(want))) {
		t.Fatalf("got %s, want %s", mustJSON(rows), mustJSON(want))
	}
}

// TestExecuteEdgeInputs covers a nil sequence, nil twins and empty input.
func TestExecuteEdgeInputs(t *testing.T) {
	for _, src := range []string{"SELECT * FROM devices", "SELECT COUNT() AS n FROM devices", "SELECT x FROM devices GROUP BY x"} {
		q, err := Parse(src)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := q.Execute(nil)
		if err != nil {
			t.Fatalf("%s over nil: %v", src, err)
		}
		if q.IsAggregate() && len(q.GroupBy) == 0 {
			if len(rows) != 1 || rows[0]["n"] != 0 {
				t.Fatalf("%s over nil: %v, want one row with n=0", src, rows)
			}
		} else if len(rows) != 0 {
			t.Fatalf("%s over nil: %v, want no rows", src, rows)
		}
		if _, err := q.Execute(slices.Values([]doc{nil, {}})); err != nil {
			t.Fatalf("%s over nil twins: %v", src, err)
		}
	}
}

// TestHandBuiltQueries checks that Execute validates a Query that did not
// come from Parse.
func TestHandBuiltQueries(t *testing.T) {
	count := &Aggregate{Func: "COUNT"}
	x := &Path{Segments: []string{"x"}}
	good := []*Query{
		{Star: true, Where: &Binary{Op: OpEq, Left: x, Right: &Literal{Value: 1.0}}},
		{Select: []SelectItem{{Expr: count, Alias: "n"}}},
		{Select: []SelectItem{{Expr: x}, {Expr: count}}, GroupBy: []Path{{Segments: []string{"x"}}}, OrderBy: []OrderItem{{Alias: "$1", Desc: true}}},
	}
	for _, q := range good {
		if _, err := q.Execute(slices.Values(fleet)); err != nil {
			t.Errorf("%s: %v", q, err)
		}
	}
	bad := []*Query{
		{},
		{Star: true, GroupBy: []Path{{Segments: []string{"x"}}}},
		{Select: []SelectItem{{Expr: x}, {Expr: count}}},
		{Select: []SelectItem{{Expr: nil}}},
		{Star: true, Where: count},
		{Select: []SelectItem{{Expr: &Aggregate{Func: "AVG"}}}},
		{Select: []SelectItem{{Expr: &Aggregate{Func: "MEDIAN", Arg: x}}}},
		{Select: []SelectItem{{Expr: &Call{Func: "LOWER", Args: []Expr{x}}}}},
		{Select: []SelectItem{{Expr: x}}, OrderBy: []OrderItem{{Alias: "nope"}}},
		{Star: true, Top: -1},
	}
	for _, q := range bad {
		_, err := q.Execute(slices.Values(fleet))
		if !errors.Is(err, ErrQuery) {
			t.Errorf("%+v: got %v, want a query error", q, err)
		}
	}
}

// TestConcurrentExecute runs one parsed Query from several goroutines; run
// with -race to check that Execute does not write to the Query.
func TestConcurrentExecute(t *testing.T) {
	q, err := Parse("SELECT tags.location.region AS r, COUNT() AS n FROM devices GROUP BY tags.location.region ORDER BY n DESC")
	if err != nil {
		t.Fatal(err)
	}
	want, _ := q.Execute(slices.Values(fleet))
	var wg sync.WaitGroup
	for range 4 {
		// Each goroutine exits after its one Execute.
		wg.Go(func() {
			got, err := q.Execute(slices.Values(fleet))
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("concurrent Execute: %v, %v", got, err)
			}
		})
	}
	wg.Wait()
}
