package lang

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// queryGen writes random valid queries from the grammar, over paths of the
// fixture, so that combinations the table does not list get exercised.
type queryGen struct {
	r *rand.Rand
}

var genPaths = []string{
	"deviceId", "DeviceId", "devices.status", "version", "connectionState", "lastActivityTime", "modelId",
	"tags.location.region", "tags.location.plant", "tags.floor", "tags.critical", "tags.owner", "tags.labels",
	"tags.location", "tags.group", "Tags.nothing", "properties.reported.temp", "properties.reported.battery",
	"properties.reported.fw", "properties.reported.online", "properties.reported.sensors.a.b.value",
	"properties.reported.telemetryConfig.status", "properties.desired.$version", "capabilities.iotEdge", "missing",
}

func (g *queryGen) pick(s ...string) string { return s[g.r.IntN(len(s))] }

func (g *queryGen) constant(depth int) string {
	switch g.r.IntN(9) {
	case 0:
		return fmt.Sprint(g.r.IntN(40) - 5)
	case 1:
		return fmt.Sprintf("%.1f", g.r.Float64()*40)
	case 2:
		return fmt.Sprintf("0x%X", g.r.IntN(64))
	case 3:
		return g.pick(`'US'`, `"EU"`, `'Redmond43'`, `'1.0'`, `'hot'`, `'d01'`, `'it\'s'`, `'\u0041'`, `''`, `'3'`)
	case 4:
		return g.pick("true", "false", "null", "TRUE", "Null")
	case 5:
		if depth > 0 {
			return "[" + g.constant(depth-1) + ", " + g.constant(depth-1) + "]"
		}
	}
	return fmt.Sprint(g.r.IntN(30))
}

func (g *queryGen) array() string {
	n := g.r.IntN(4)
	parts := make([]string, n)
	for i := range parts {
		parts[i] = g.constant(1)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func (g *queryGen) expr(depth int) string {
	if depth <= 0 || g.r.IntN(4) == 0 {
		if g.r.IntN(3) == 0 {
			if g.r.IntN(8) == 0 {
				return "undefined"
			}
			return g.constant(1)
		}
		return g.pick(genPaths...)
	}
	d := depth - 1
	switch g.r.IntN(12) {
	case 0, 1:
		return g.expr(d) + " " + g.pick("AND", "OR", "and", "or") + " " + g.expr(d)
	case 2:
		return "(NOT " + g.expr(d) + ")"
	case 3, 4:
		return g.expr(d) + " " + g.pick("=", "!=", "<>", "<", "<=", ">", ">=") + " " + g.expr(d)
	case 5:
		return g.expr(d) + " " + g.pick("+", "-", "*", "/", "%") + " " + g.expr(d)
	case 6:
		return "-" + g.expr(d)
	case 7:
		return "(" + g.expr(d) + " " + g.pick("IN", "NIN") + " " + g.array() + ")"
	case 8:
		return g.pick("IS_DEFINED", "IS_NULL", "is_defined") + "(" + g.expr(d) + ")"
	case 9:
		return g.pick("STARTSWITH", "ENDSWITH") + "(" + g.expr(d) + ", " + g.pick(genPaths...) + ")"
	case 10:
		return g.pick("STARTSWITH", "ENDSWITH") + "(" + g.pick(genPaths...) + ", " + g.constant(0) + ")"
	}
	return "(" + g.expr(d) + ")"
}

// cond writes a condition that is often true for some twins and false for
// others: typed comparisons of fixture paths, combined with AND, OR, NOT.
func (g *queryGen) cond(depth int) string {
	if depth > 0 {
		switch g.r.IntN(6) {
		case 0:
			return g.cond(depth-1) + " AND " + g.cond(depth-1)
		case 1:
			return "(" + g.cond(depth-1) + " OR " + g.cond(depth-1) + ")"
		case 2:
			return "NOT (" + g.cond(depth-1) + ")"
		}
	}
	op := g.pick("=", "!=", "<", "<=", ">", ">=")
	switch g.r.IntN(9) {
	case 0:
		return g.pick("properties.reported.temp", "properties.reported.battery", "tags.floor", "version") + " " + op + " " + fmt.Sprint(g.r.IntN(40))
	case 1:
		return g.pick("tags.location.region", "devices.Tags.location.region") + " " + op + " " + g.pick("'US'", "'EU'", "'APAC'", "'F'")
	case 2:
		return g.pick("tags.location.plant", "properties.reported.fw", "deviceId", "lastActivityTime") + " " + op + " " + g.pick("'Redmond43'", "'Seattle'", "'1.1'", "'d15'", "'2024-05-10'")
	case 3:
		return g.pick("tags.critical", "properties.reported.online", "capabilities.iotEdge", "NOT tags.critical")
	case 4:
		return g.pick("IS_DEFINED", "IS_NULL", "NOT IS_DEFINED", "NOT IS_NULL") + "(" + g.pick(genPaths...) + ")"
	case 5:
		return g.pick("tags.floor", "tags.owner", "properties.reported.fw", "status") + g.pick(" IN ", " NIN ") + g.pick("[1, 2]", "['1.0', null]", "['ops']", "['enabled', 3]")
	case 6:
		return g.pick("STARTSWITH", "ENDSWITH") + "(" + g.pick("deviceId", "tags.location.plant") + ", " + g.pick("'d'", "'x'", "'1'", "'n'", "'Red'") + ")"
	case 7:
		return "properties.reported.temp " + g.pick("+", "-", "*", "%") + " " + fmt.Sprint(1+g.r.IntN(5)) + " " + op + " " + fmt.Sprint(g.r.IntN(40))
	}
	return g.expr(2)
}

func (g *queryGen) query() string {
	var b strings.Builder
	b.WriteString("SELECT ")
	if g.r.IntN(4) == 0 {
		fmt.Fprintf(&b, "TOP %d ", 1+g.r.IntN(12))
	}
	var aliases, groups []string
	switch g.r.IntN(3) {
	case 0:
		b.WriteString("*")
	case 1:
		n := 1 + g.r.IntN(3)
		for i := range n {
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s AS a%d", g.expr(2), i)
			aliases = append(aliases, fmt.Sprintf("a%d", i))
		}
	default:
		for range g.r.IntN(3) {
			p := g.pick(genPaths...)
			if !slices.Contains(groups, p) {
				groups = append(groups, p)
			}
		}
		var items []string
		for i, p := range groups {
			items = append(items, fmt.Sprintf("%s AS k%d", p, i))
			aliases = append(aliases, fmt.Sprintf("k%d", i))
		}
		for i := range 1 + g.r.IntN(3) {
			agg := "COUNT()"
			if f := g.pick("COUNT", "AVG", "SUM", "MIN", "MAX"); f != "COUNT" {
				agg = f + "(" + g.expr(1) + ")"
			}
			items = append(items, fmt.Sprintf("%s AS g%d", agg, i))
			aliases = append(aliases, fmt.Sprintf("g%d", i))
		}
		b.WriteString(strings.Join(items, ", "))
	}
	b.WriteString(" FROM devices")
	if g.r.IntN(4) != 0 {
		b.WriteString(" WHERE " + g.cond(3))
	}
	if len(groups) > 0 {
		b.WriteString(" GROUP BY " + strings.Join(groups, ", "))
	}
	if g.r.IntN(2) == 0 {
		var keys []string
		for range 1 + g.r.IntN(2) {
			var k string
			switch {
			case groups != nil || (aliases != nil && strings.HasPrefix(aliases[0], "g")):
				k = aliases[g.r.IntN(len(aliases))]
			case aliases != nil && g.r.IntN(2) == 0:
				k = aliases[g.r.IntN(len(aliases))]
			default:
				k = g.pick(genPaths...)
			}
			keys = append(keys, k+g.pick("", " ASC", " DESC"))
		}
		b.WriteString(" ORDER BY " + strings.Join(keys, ", "))
	}
	return b.String()
}

// tri is a truth value of the reference evaluator.
type tri int

const (
	triUndef tri = iota
	triFalse
	triTrue
)

func toTri(v any, ok bool) tri {
	b, isBool := v.(bool)
	switch {
	case !ok || !isBool:
		return triUndef
	case b:
		return triTrue
	}
	return triFalse
}

// primKind names the kind of a primitive, "" for anything else.
func primKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "bool"
	case string:
		return "string"
	}
	if _, ok := num(v); ok {
		return "number"
	}
	return ""
}

// refEval is a reference evaluator of the language's semantics, written
// apart from the engine's, over the fixture's JSON.
func refEval(e Expr, d doc) (any, bool) {
	switch e := e.(type) {
	case *Path:
		return at(d, strings.Join(e.Segments, "."))
	case *Literal:
		return e.Value, !e.Undefined
	case *Unary:
		v, ok := refEval(e.X, d)
		if e.Op == OpNot {
			t := toTri(v, ok)
			if t == triUndef {
				return nil, false
			}
			return t == triFalse, true
		}
		f, isNum := num(v)
		if !ok || !isNum {
			return nil, false
		}
		if e.Op == OpNeg {
			return -f, true
		}
		return f, true
	case *Binary:
		l, lok := refEval(e.Left, d)
		r, rok := refEval(e.Right, d)
		switch e.Op {
		case OpAnd:
			a, b := toTri(l, lok), toTri(r, rok)
			switch {
			case a == triFalse || b == triFalse:
				return false, true
			case a == triTrue && b == triTrue:
				return true, true
			}
			return nil, false
		case OpOr:
			a, b := toTri(l, lok), toTri(r, rok)
			switch {
			case a == triTrue || b == triTrue:
				return true, true
			case a == triFalse && b == triFalse:
				return false, true
			}
			return nil, false
		}
		if !lok || !rok {
			return nil, false
		}
		if e.Op.IsComparison() {
			k := primKind(l)
			if k == "" || k != primKind(r) {
				return nil, false
			}
			c := 0
			switch k {
			case "number":
				a, _ := num(l)
				b, _ := num(r)
				c = cmpFloat(a, b)
			case "string":
				c = strings.Compare(l.(string), r.(string))
			case "bool":
				a, b := l.(bool), r.(bool)
				if a != b {
					c = 1
					if !a {
						c = -1
					}
				}
			}
			return map[Op]bool{OpEq: c == 0, OpNe: c != 0, OpLt: c < 0, OpLe: c <= 0, OpGt: c > 0, OpGe: c >= 0}[e.Op], true
		}
		a, aok := num(l)
		b, bok := num(r)
		if !aok || !bok {
			return nil, false
		}
		var f float64
		switch e.Op {
		case OpAdd:
			f = a + b
		case OpSub:
			f = a - b
		case OpMul:
			f = a * b
		case OpDiv, OpMod:
			if b == 0 {
				return nil, false
			}
			if f = a / b; e.Op == OpMod {
				f = math.Mod(a, b)
			}
		}
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, false
		}
		return f, true
	case *In:
		v, ok := refEval(e.X, d)
		k := primKind(v)
		if !ok || k == "" {
			return nil, false
		}
		found := false
		for _, c := range e.Values {
			if eq, ok := refEval(&Binary{Op: OpEq, Left: &Literal{Value: v}, Right: &Literal{Value: c}}, d); ok && eq == true {
				found = true
			}
		}
		return found != e.Negate, true
	case *Call:
		v, ok := refEval(e.Args[0], d)
		switch e.Func {
		case "IS_DEFINED":
			return ok, true
		case "IS_NULL":
			return ok && v == nil, true
		}
		w, wok := refEval(e.Args[1], d)
		s, sIsStr := v.(string)
		x, xIsStr := w.(string)
		if !ok || !wok || !sIsStr || !xIsStr {
			return nil, false
		}
		if e.Func == "STARTSWITH" {
			return strings.HasPrefix(s, x), true
		}
		return strings.HasSuffix(s, x), true
	}
	panic(fmt.Sprintf("refEval: unexpected %T", e))
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestRandomQueries runs thousands of generated queries and checks them
// against the reference evaluator: which twins match, each projected value,
// the number of groups and the order of rows; and that String() round-trips.
func TestRandomQueries(t *testing.T) {
	n := 4000
	if testing.Short() {
		n = 500
	}
	g := &queryGen{r: rand.New(rand.NewPCG(1, 2))}
	for range n {
		src := g.query()
		q, err := Parse(src)
		if err != nil {
			t.Fatalf("Parse(%q): %v", src, err)
		}
		if s := q.String(); func() bool { q2, err := Parse(s); return err != nil || q2.String() != s }() {
			t.Fatalf("String() of %q does not round-trip: %q", src, s)
		}
		rows, err := q.Execute(slices.Values(fleet))
		if err != nil {
			t.Fatalf("Execute(%q): %v", src, err)
		}
		var matched []doc
		for _, d := range fleet {
			want := q.Where == nil || toTri(refEval(q.Where, d)) == triTrue
			if q.Match(d) != want {
				t.Fatalf("%q: Match(%s) = %v, reference says %v", src, id(d), !want, want)
			}
			if want {
				matched = append(matched, d)
			}
		}
		limit := func(n int) int {
			if q.Top > 0 {
				return min(n, q.Top)
			}
			return n
		}
		switch {
		case q.IsAggregate():
			groups := 1
			if len(q.GroupBy) > 0 {
				var paths []string
				for _, p := range q.GroupBy {
					paths = append(paths, p.String())
				}
				groups = len(groupBy(matched, paths...))
			}
			if len(rows) != limit(groups) {
				t.Fatalf("%q: %d rows, want %d groups", src, len(rows), limit(groups))
			}
			if len(q.OrderBy) == 0 {
				checkGroups(t, src, q, matched, rows)
			}
		case q.IsSelectStar():
			if len(rows) != limit(len(matched)) {
				t.Fatalf("%q: %d rows, want %d", src, len(rows), limit(len(matched)))
			}
			if len(q.OrderBy) == 0 {
				if !slices.Equal(ids(rows), ids(matched[:len(rows)])) {
					t.Fatalf("%q: rows %v, want %v", src, ids(rows), ids(matched))
				}
				break
			}
			var keys []sortKey
			for _, o := range q.OrderBy {
				keys = append(keys, sortKey{o.Path.String(), o.Desc})
			}
			if want := top(sortDocs(matched, keys...), len(rows)); !slices.Equal(ids(rows), ids(want)) {
				t.Fatalf("%q: rows %v, want %v", src, ids(rows), ids(want))
			}
		default:
			if len(rows) != limit(len(matched)) {
				t.Fatalf("%q: %d rows, want %d", src, len(rows), limit(len(matched)))
			}
			if len(q.OrderBy) > 0 {
				break
			}
			for i, r := range rows {
				for _, it := range q.Select {
					v, ok := refEval(it.Expr, matched[i])
					got, gok := r[it.Name]
					if ok != gok || (ok && !equalJSON(v, got)) {
						t.Fatalf("%q: row %d %s = %v (%v), reference %v (%v)", src, i, it.Name, got, gok, v, ok)
					}
				}
			}
		}
	}
}

func equalJSON(a, b any) bool { return mustJSON(normalize(a)) == mustJSON(normalize(b)) }

// checkGroups recomputes each group's row with the reference evaluator.
func checkGroups(t *testing.T, src string, q *Query, matched []doc, rows []row) {
	t.Helper()
	var paths []string
	for _, p := range q.GroupBy {
		paths = append(paths, p.String())
	}
	gs := []*grp{{docs: matched}}
	if len(paths) > 0 {
		gs = groupBy(matched, paths...)
	}
	for i, r := range rows {
		want := row{}
		for _, it := range q.Select {
			switch e := it.Expr.(type) {
			case *Path:
				put(want, it.Name, gs[i].first, e.String())
			case *Aggregate:
				if e.Func == "COUNT" {
					want[it.Name] = len(gs[i].docs)
					continue
				}
				var vals []doc
				for _, d := range gs[i].docs {
					if v, ok := refEval(e.Arg, d); ok {
						vals = append(vals, doc{"v": v})
					}
				}
				switch e.Func {
				case "SUM":
					v, ok := sumAt(vals, "v")
					putV(want, it.Name, v, ok)
				case "AVG":
					v, ok := avgAt(vals, "v")
					putV(want, it.Name, v, ok)
				default:
					v, ok := extremeAt(vals, "v", e.Func == "MAX")
					putV(want, it.Name, v, ok)
				}
			}
		}
		if !equalJSON(r, want) {
			t.Fatalf("%q: group %d = %s, reference %s", src, i, mustJSON(r), mustJSON(want))
		}
	}
}
