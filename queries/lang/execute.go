package lang

import (
	"fmt"
	"iter"
	"slices"
	"strconv"
)

// plan is what Execute needs beyond the Query: whether rows are grouped and
// what each ORDER BY key refers to. prepare derives it without changing the
// Query, so one Query may be executed by several goroutines at once.
type plan struct {
	grouped bool
	names   []string // output key of each select item
	order   []orderRef
}

// orderRef says where an ORDER BY key takes its value from: a select item
// (item >= 0), a GROUP BY key (group >= 0), or else the twin path.
type orderRef struct {
	item, group int
	path        *Path
	desc        bool
}

// prepare checks the rules a grammar cannot express and builds the plan:
//   - SELECT * has no GROUP BY;
//   - aggregates stand only as whole select items;
//   - in a grouped query (GROUP BY or an aggregate), every path outside an
//     aggregate is a GROUP BY path, and every ORDER BY key names a select
//     item or a GROUP BY path;
//   - output names are distinct.
func (q *Query) prepare() (*plan, error) {
	pl := &plan{grouped: q.IsAggregate()}
	if q.Star && len(q.GroupBy) > 0 {
		return nil, errorAt(q.groupPos, "SELECT * cannot be combined with GROUP BY: expected a select list of GROUP BY paths and aggregates")
	}
	if !q.Star && len(q.Select) == 0 {
		return nil, &Error{Msg: "expected * or at least one select item"}
	}
	if q.Top < 0 {
		return nil, &Error{Msg: fmt.Sprintf("TOP %d: expected a positive number", q.Top)}
	}
	unnamed := 0
	seen := map[string]bool{}
	for _, it := range q.Select {
		if it.Expr == nil {
			return nil, errorAt(it.pos, "expected an expression in the select list")
		}
		if err := q.checkItem(it, pl.grouped); err != nil {
			return nil, err
		}
		name := it.Alias
		if name == "" {
			if p, ok := it.Expr.(*Path); ok && len(p.Segments) > 0 {
				name = p.Segments[len(p.Segments)-1]
			} else {
				unnamed++
				name = "$" + strconv.Itoa(unnamed)
			}
		}
		if seen[name] {
			return nil, errorAt(it.pos, "duplicate name '%s' in the select list: expected distinct names (use AS to rename)", clip(name))
		}
		seen[name] = true
		pl.names = append(pl.names, name)
	}
	if q.Where != nil {
		if err := checkNoAggregate(q.Where, "WHERE"); err != nil {
			return nil, err
		}
	}
	for _, o := range q.OrderBy {
		ref, err := q.resolveOrder(o, pl)
		if err != nil {
			return nil, err
		}
		pl.order = append(pl.order, ref)
	}
	return pl, nil
}

// checkItem checks one select item.
func (q *Query) checkItem(it SelectItem, grouped bool) error {
	if a, ok := it.Expr.(*Aggregate); ok {
		if !aggregates[a.Func] || (a.Func == "COUNT") != (a.Arg == nil) {
			return errorAt(it.pos, "invalid aggregate %s: expected COUNT() or AVG, SUM, MIN, MAX of one argument", clip(a.Func))
		}
		if a.Arg != nil {
			return checkNoAggregate(a.Arg, "an aggregate's argument")
		}
		return nil
	}
	if err := checkNoAggregate(it.Expr, "a select expression"); err != nil {
		return err
	}
	if !grouped {
		return nil
	}
	var bad *Path
	Walk(it.Expr, func(e Expr) bool {
		if p, ok := e.(*Path); ok && bad == nil && !slices.ContainsFunc(q.GroupBy, func(g Path) bool { return g.Equal(p) }) {
			bad = p
		}
		return true
	})
	if bad != nil {
		pos := bad.pos
		if pos.line == 0 {
			pos = it.pos
		}
		return errorAt(pos, "'%s' is selected with aggregates or GROUP BY: expected it in GROUP BY or inside an aggregate", clip(bad.String()))
	}
	return nil
}

// checkNoAggregate rejects aggregates and foreign node types inside e.
func checkNoAggregate(e Expr, where string) error {
	var err error
	Walk(e, func(x Expr) bool {
		if err != nil {
			return false
		}
		switch x := x.(type) {
		case *Aggregate:
			err = &Error{Msg: fmt.Sprintf("aggregate %s in %s: expected aggregates only as whole select items", clip(x.Func), where)}
		case *Path, *Literal, *Unary, *Binary, *In:
		case *Call:
			if n, ok := functions[x.Func]; !ok || n != len(x.Args) {
				err = &Error{Msg: fmt.Sprintf("invalid call %s with %d arguments: expected IS_DEFINED(x), IS_NULL(x), STARTSWITH(x, y) or ENDSWITH(x, y)", clip(x.Func), len(x.Args))}
			}
		default:
			err = &Error{Msg: fmt.Sprintf("unsupported expression %T in %s", x, where)}
		}
		return err == nil
	})
	return err
}

// resolveOrder decides what an ORDER BY key refers to:
//   - an OrderItem with Alias set refers to the select item of that name;
//   - a single name equal to a select item's alias refers to that item;
//   - in a grouped query, a GROUP BY path refers to the group key, and else a
//     single name equal to an item's output name (say fw for
//     properties.reported.fw) refers to that item; anything else is an error;
//   - otherwise the key is a path into the twin.
func (q *Query) resolveOrder(o OrderItem, pl *plan) (orderRef, error) {
	ref := orderRef{item: -1, group: -1, path: &o.Path, desc: o.Desc}
	if o.Alias != "" {
		if ref.item = slices.Index(pl.names, o.Alias); ref.item < 0 {
			return ref, errorAt(o.pos, "ORDER BY %s: expected the name of a select item", clip(o.Alias))
		}
		return ref, nil
	}
	name := ""
	if len(o.Path.Segments) == 1 {
		if name = o.raw; name == "" {
			name = o.Path.Segments[0]
		}
		for i, it := range q.Select {
			if it.Alias != "" && it.Alias == name {
				ref.item = i
				return ref, nil
			}
		}
	}
	if !pl.grouped {
		return ref, nil
	}
	for i := range q.GroupBy {
		if q.GroupBy[i].Equal(&o.Path) {
			ref.group = i
			return ref, nil
		}
	}
	if name != "" {
		if ref.item = slices.Index(pl.names, name); ref.item >= 0 {
			return ref, nil
		}
	}
	return ref, errorAt(o.pos, "ORDER BY %s in a grouped query: expected a GROUP BY path or the name of a select item", clip(o.Path.String()))
}

// Execute runs the query over docs, in their order, and returns the rows.
//
// For SELECT * the rows are the input documents themselves (not copies);
// projection rows map each item's name to its value, leaving out undefined
// values, and share nested objects with the input. Without ORDER BY, rows
// come in input order (groups in order of first appearance); with it, the
// sort is stable. TOP n keeps the first n rows after ordering, and stops
// reading docs early when there is no ORDER BY and no grouping.
//
// Grouped queries stream: only one accumulator per group is kept, never the
// matching documents. Execute returns an error (matching ErrQuery) only for
// a hand-built Query that breaks the language's rules; every Query from
// Parse executes without error.
func (q *Query) Execute(docs iter.Seq[map[string]any]) ([]map[string]any, error) {
	pl, err := q.prepare()
	if err != nil {
		return nil, err
	}
	if docs == nil {
		docs = func(func(map[string]any) bool) {}
	}
	if pl.grouped {
		return q.executeGrouped(pl, docs), nil
	}
	return q.executeRows(pl, docs), nil
}

// sortRow is a result row with its ORDER BY key values and input index.
type sortRow struct {
	row  map[string]any
	keys []value
}

// executeRows runs a query with one row per matching twin.
func (q *Query) executeRows(pl *plan, docs iter.Seq[map[string]any]) []map[string]any {
	var rows []sortRow
	var vals []value
	for doc := range docs {
		if !q.Match(doc) {
			continue
		}
		row := doc
		en := env{doc: doc}
		if !q.Star {
			row = make(map[string]any, len(q.Select))
			vals = vals[:0]
			for i, it := range q.Select {
				v, ok := en.eval(it.Expr)
				vals = append(vals, value{v, ok})
				if ok {
					row[pl.names[i]] = v
				}
			}
		}
		sr := sortRow{row: row}
		if len(pl.order) > 0 {
			sr.keys = make([]value, len(pl.order))
			for i, o := range pl.order {
				if o.item >= 0 {
					sr.keys[i] = vals[o.item]
				} else {
					v, ok := en.eval(o.path)
					sr.keys[i] = value{v, ok}
				}
			}
		}
		rows = append(rows, sr)
		if q.Top > 0 {
			if len(pl.order) == 0 && len(rows) >= q.Top {
				break
			}
			// Keep memory bounded by 2*Top: sorting stably and cutting keeps
			// the earliest rows among equal keys, as a full sort would.
			if len(pl.order) > 0 && len(rows)/2 >= q.Top && len(rows) >= 64 {
				rows = pl.sortAndCut(rows, q.Top)
			}
		}
	}
	rows = pl.sortAndCut(rows, q.Top)
	out := make([]map[string]any, len(rows))
	for i, r := range rows {
		out[i] = r.row
	}
	return out
}

// sortAndCut sorts rows stably by the ORDER BY keys and keeps the first top
// (all when top is 0).
func (pl *plan) sortAndCut(rows []sortRow, top int) []sortRow {
	if len(pl.order) > 0 {
		slices.SortStableFunc(rows, func(a, b sortRow) int {
			for i, o := range pl.order {
				c := orderValues(a.keys[i].v, a.keys[i].ok, b.keys[i].v, b.keys[i].ok)
				if o.desc {
					c = -c
				}
				if c != 0 {
					return c
				}
			}
			return 0
		})
	}
	if top > 0 && len(rows) > top {
		clear(rows[top:])
		rows = rows[:top]
	}
	return rows
}

// group is the state of one GROUP BY group.
type group struct {
	keys []value       // the group's key values, as first seen
	accs []accumulator // one per select item; zero for non-aggregates
}

// executeGrouped runs a query with GROUP BY or aggregates. Without GROUP BY
// there is exactly one group, even when nothing matches.
func (q *Query) executeGrouped(pl *plan, docs iter.Seq[map[string]any]) []map[string]any {
	newGroup := func(keys []value) *group {
		g := &group{keys: keys, accs: make([]accumulator, len(q.Select))}
		for i, it := range q.Select {
			if a, ok := it.Expr.(*Aggregate); ok {
				g.accs[i].agg = a
			}
		}
		return g
	}
	var order []*group
	index := map[string]*group{}
	if len(q.GroupBy) == 0 {
		order = append(order, newGroup(nil))
	}
	var buf []byte
	keys := make([]value, len(q.GroupBy))
	for doc := range docs {
		if !q.Match(doc) {
			continue
		}
		en := env{doc: doc}
		g := order0(order)
		if len(q.GroupBy) > 0 {
			buf = buf[:0]
			for i := range q.GroupBy {
				v, ok := lookup(doc, q.GroupBy[i].Segments)
				keys[i] = value{v, ok}
				buf = appendKey(buf, v, ok)
			}
			if g = index[string(buf)]; g == nil {
				g = newGroup(slices.Clone(keys))
				index[string(buf)] = g
				order = append(order, g)
			}
		}
		for i := range g.accs {
			if g.accs[i].agg != nil {
				g.accs[i].add(&en)
			}
		}
	}
	rows := make([]sortRow, 0, len(order))
	for _, g := range order {
		row := make(map[string]any, len(q.Select))
		vals := make([]value, len(q.Select))
		en := env{groupBy: q.GroupBy, groupKeys: g.keys}
		if en.groupBy == nil {
			en.groupBy = []Path{}
		}
		for i, it := range q.Select {
			var v any
			var ok bool
			if g.accs[i].agg != nil {
				v, ok = g.accs[i].result()
			} else {
				v, ok = en.eval(it.Expr)
			}
			vals[i] = value{v, ok}
			if ok {
				row[pl.names[i]] = v
			}
		}
		sr := sortRow{row: row, keys: make([]value, len(pl.order))}
		for i, o := range pl.order {
			switch {
			case o.item >= 0:
				sr.keys[i] = vals[o.item]
			case o.group >= 0:
				sr.keys[i] = g.keys[o.group]
			}
		}
		rows = append(rows, sr)
	}
	rows = pl.sortAndCut(rows, q.Top)
	out := make([]map[string]any, len(rows))
	for i, r := range rows {
		out[i] = r.row
	}
	return out
}

// order0 returns the single group of an aggregate without GROUP BY, or nil.
func order0(order []*group) *group {
	if len(order) == 0 {
		return nil
	}
	return order[0]
}

// accumulator folds the values of one aggregate over a group.
type accumulator struct {
	agg   *Aggregate
	count int     // COUNT: rows; AVG, SUM: numbers added
	sum   float64 // AVG, SUM
	best  value   // MIN, MAX: the raw value kept so far
}

// add folds one document in. AVG and SUM take numbers; MIN and MAX take
// numbers and strings (ordered as ORDER BY orders them, numbers before
// strings); other values, and undefined, are skipped.
func (a *accumulator) add(en *env) {
	if a.agg.Func == "COUNT" {
		a.count++
		return
	}
	v, ok := en.eval(a.agg.Arg)
	if !ok {
		return
	}
	switch a.agg.Func {
	case "AVG", "SUM":
		if f, isNum := toFloat(v); isNum {
			a.sum += f
			a.count++
		}
	case "MIN", "MAX":
		if k := kindOf(v); k != kNumber && k != kString {
			return
		}
		if !a.best.ok {
			a.best = value{v, true}
			return
		}
		c := orderValues(v, true, a.best.v, true)
		if (a.agg.Func == "MIN" && c < 0) || (a.agg.Func == "MAX" && c > 0) {
			a.best = value{v, true}
		}
	}
}

// result returns the aggregate's value: COUNT is an int (0 for no rows);
// SUM and AVG are float64 and undefined when no number was seen, as are MIN
// and MAX, which return the value as it was in the twin.
func (a *accumulator) result() (any, bool) {
	switch a.agg.Func {
	case "COUNT":
		return a.count, true
	case "SUM":
		return a.sum, a.count > 0 && !isNonFinite(a.sum)
	case "AVG":
		if a.count == 0 {
			return nil, false
		}
		avg := a.sum / float64(a.count)
		return avg, !isNonFinite(avg)
	}
	return a.best.v, a.best.ok
}
