package projection

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/twinhub/twinhub/queries/lang"
)

// grouped answers a query with GROUP BY or aggregates. Simple shapes (GROUP
// BY paths, select items that are those paths or COUNT, SUM, AVG, MIN, MAX of
// a path) are folded straight from the twins' nodes; others go through
// lang over sparse documents. Groups are recomputed on every page, and a
// page resumes at an offset.
func (x *execution) grouped(tok token, size int) (*Page, error) {
	rows, err := x.fold()
	if errors.Is(err, errNotFoldable) {
		rows, err = x.groupWithLang()
	}
	if err != nil {
		return nil, err
	}
	page := &Page{}
	if tok.Done < len(rows) {
		end := min(len(rows), tok.Done+size)
		if page.Items, err = marshalRows(rows[tok.Done:end]); err != nil {
			return nil, err
		}
		if end < len(rows) {
			page.Continuation = token{Hash: tok.Hash, Done: end}.encode()
		}
	}
	return page, nil
}

// groupWithLang groups with lang's evaluator, streaming the matching twins'
// sparse documents into it (lang keeps one accumulator per group, never the
// documents).
func (x *execution) groupWithLang() ([]map[string]any, error) {
	var visitErr error
	docs := func(yield func(map[string]any) bool) {
		visitErr = x.visit("", 0, func(_ docID, d *doc, sp map[string]any) bool {
			if sp == nil {
				sp = x.pl.sparse(x.s, d)
			}
			return yield(sp)
		})
	}
	gq := *x.pl.q
	gq.Where = nil
	rows, err := gq.Execute(docs)
	if visitErr != nil {
		return nil, visitErr
	}
	if err != nil {
		return nil, fmt.Errorf("BUG: projection: a parsed query failed: %w", err)
	}
	return rows, nil
}

// errNotFoldable means the query's shape needs lang's evaluator.
var errNotFoldable = errors.New("not foldable")

// folder is the state of a grouped query folded from nodes.
type folder struct {
	groupPaths []string // dotted GROUP BY paths
	groupIDs   []uint32 // their path ids; 0 while no twin has the path
	// items say where each select item's value comes from: a GROUP BY key
	// (key >= 0) or an aggregate over a path ("" for COUNT).
	items  []foldItem
	groups map[string]*foldGroup
	order  []*foldGroup
	// byValues finds the group of a combination of value ids without
	// looking at the values: ids are stable while a query runs.
	byValues map[[maxFoldPaths]vid]*foldGroup
	buf      []byte
}

// maxFoldPaths bounds the GROUP BY paths of a folded query.
const maxFoldPaths = 4

// undefinedVID stands for an undefined GROUP BY value in folder.byValues.
const undefinedVID = ^vid(0)

type foldItem struct {
	key    int
	agg    string // COUNT, SUM, AVG, MIN, MAX
	path   string
	pathID uint32
}

type foldGroup struct {
	keys []any // the first twin's value of each GROUP BY path
	has  []bool
	accs []acc
}

// acc folds one aggregate, exactly as lang's accumulator does.
type acc struct {
	count int
	sum   float64
	best  any
	bestV sortValue
	have  bool
}

// fold computes the rows of a grouped query from the twins' nodes, or
// returns errNotFoldable.
func (x *execution) fold() ([]map[string]any, error) {
	q := x.pl.q
	s := x.s
	if len(q.GroupBy) > maxFoldPaths {
		return nil, errNotFoldable
	}
	f := &folder{groups: map[string]*foldGroup{}, byValues: map[[maxFoldPaths]vid]*foldGroup{}}
	for _, g := range q.GroupBy {
		if fullPath(g.Segments) {
			return nil, errNotFoldable
		}
		f.groupPaths = append(f.groupPaths, strings.Join(g.Segments, "."))
	}
	f.groupIDs = make([]uint32, len(f.groupPaths))
	for _, it := range q.Select {
		switch e := it.Expr.(type) {
		case *lang.Path:
			k := slices.IndexFunc(q.GroupBy, func(g lang.Path) bool { return g.Equal(e) })
			if k < 0 {
				return nil, errNotFoldable
			}
			f.items = append(f.items, foldItem{key: k})
		case *lang.Aggregate:
			fi := foldItem{key: -1, agg: e.Func}
			if e.Arg != nil {
				p, ok := e.Arg.(*lang.Path)
				if !ok || fullPath(p.Segments) {
					return nil, errNotFoldable
				}
				fi.path = strings.Join(p.Segments, ".")
			}
			f.items = append(f.items, fi)
		default:
			return nil, errNotFoldable
		}
	}
	if len(q.GroupBy) == 0 {
		g := &foldGroup{accs: make([]acc, len(f.items))}
		f.groups[""] = g
		f.order = append(f.order, g)
	}
	f.resolve(s)
	var fail error
	visits := 0
	err := x.visit("", 0, func(_ docID, d *doc, _ map[string]any) bool {
		if visits++; visits%4096 == 0 {
			f.resolve(s) // paths may have appeared during a pause
		}
		if err := f.add(s, d); err != nil {
			fail = err
			return false
		}
		return true
	})
	if fail != nil {
		return nil, fail
	}
	if err != nil {
		return nil, err
	}
	return f.rows(q), nil
}

// resolve looks up the ids of the paths the folder reads.
func (f *folder) resolve(s *store) {
	for i, p := range f.groupPaths {
		if f.groupIDs[i] == 0 {
			f.groupIDs[i] = s.pathIDs[p]
		}
	}
	for i := range f.items {
		if it := &f.items[i]; it.path != "" && it.pathID == 0 {
			it.pathID = s.pathIDs[it.path]
		}
	}
}

// add folds one twin into its group.
func (f *folder) add(s *store, d *doc) error {
	var vals [maxFoldPaths]vid
	for i, id := range f.groupIDs {
		vals[i] = undefinedVID
		if id != 0 {
			if v, ok := d.valueAt(id); ok {
				vals[i] = v
			}
		}
	}
	g := f.byValues[vals]
	if g == nil {
		var err error
		if g, err = f.group(s, vals); err != nil {
			return err
		}
		f.byValues[vals] = g
	}
	for i := range f.items {
		it := &f.items[i]
		if it.agg == "" {
			continue
		}
		a := &g.accs[i]
		if it.agg == "COUNT" {
			a.count++
			continue
		}
		if it.pathID == 0 {
			continue
		}
		v, ok := d.valueAt(it.pathID)
		if !ok {
			continue
		}
		e := &s.dict.entries[v]
		switch it.agg {
		case "SUM", "AVG":
			if e.kind() == kindNumber && e.numOK {
				a.sum += e.num
				a.count++
			}
		case "MIN", "MAX":
			sv := e.sortValue()
			if sv.Rank != rankNumber && sv.Rank != rankString {
				continue
			}
			c := compareSortValues(sv, a.bestV)
			if !a.have || (it.agg == "MIN" && c < 0) || (it.agg == "MAX" && c > 0) {
				a.best, a.bestV, a.have = e.value(), sv, true
			}
		}
	}
	return nil
}

// group finds or makes the group of a combination of values. Values that
// lang groups together (numbers by value) share a group.
func (f *folder) group(s *store, vals [maxFoldPaths]vid) (*foldGroup, error) {
	f.buf = f.buf[:0]
	for i := range f.groupPaths {
		if vals[i] == undefinedVID {
			f.buf = append(f.buf, 'u')
			continue
		}
		e := &s.dict.entries[vals[i]]
		switch k := e.kind(); k {
		case kindNull, kindFalse, kindTrue:
			f.buf = append(f.buf, k)
		case kindNumber:
			if !e.numOK {
				f.buf = appendLen(append(f.buf, 'x'), e.text())
				break
			}
			n := e.num
			if n == 0 {
				n = 0 // -0 and 0 are one group
			}
			f.buf = binary.BigEndian.AppendUint64(append(f.buf, 'd'), math.Float64bits(n))
		case kindString:
			f.buf = appendLen(append(f.buf, 's'), e.text())
		default:
			// Arrays and objects group by their whole value; lang does that.
			return nil, errNotFoldable
		}
	}
	g := f.groups[string(f.buf)]
	if g == nil {
		g = &foldGroup{keys: make([]any, len(f.groupPaths)), has: make([]bool, len(f.groupPaths)), accs: make([]acc, len(f.items))}
		for i := range f.groupPaths {
			if vals[i] != undefinedVID {
				g.keys[i], g.has[i] = s.dict.entries[vals[i]].value(), true
			}
		}
		f.groups[string(f.buf)] = g
		f.order = append(f.order, g)
	}
	return g, nil
}

func appendLen(b []byte, s string) []byte {
	b = strconv.AppendInt(b, int64(len(s)), 10)
	return append(append(b, ':'), s...)
}

// rows builds the result rows: groups in order of first appearance, then
// ORDER BY (stable) and TOP, as lang does.
func (f *folder) rows(q *lang.Query) []map[string]any {
	type sortRow struct {
		row  map[string]any
		keys []sortValue
	}
	out := make([]sortRow, 0, len(f.order))
	for _, g := range f.order {
		row := make(map[string]any, len(q.Select))
		for i, it := range f.items {
			var v any
			var ok bool
			if it.key >= 0 {
				v, ok = g.keys[it.key], g.has[it.key]
			} else {
				v, ok = g.accs[i].result(it.agg)
			}
			if ok {
				row[q.Select[i].Name] = v
			}
		}
		sr := sortRow{row: row}
		for _, o := range q.OrderBy {
			if o.Alias != "" {
				v, ok := row[o.Alias]
				sr.keys = append(sr.keys, sortValueOf(v, ok))
				continue
			}
			k := slices.IndexFunc(q.GroupBy, func(p lang.Path) bool { return p.Equal(&o.Path) })
			sr.keys = append(sr.keys, sortValueOf(g.keys[k], g.has[k]))
		}
		out = append(out, sr)
	}
	slices.SortStableFunc(out, func(a, b sortRow) int {
		for i, o := range q.OrderBy {
			c := compareSortValues(a.keys[i], b.keys[i])
			if o.Desc {
				c = -c
			}
			if c != 0 {
				return c
			}
		}
		return 0
	})
	if q.Top > 0 && len(out) > q.Top {
		out = out[:q.Top]
	}
	rows := make([]map[string]any, len(out))
	for i, r := range out {
		rows[i] = r.row
	}
	return rows
}

func (a *acc) result(agg string) (any, bool) {
	switch agg {
	case "COUNT":
		return a.count, true
	case "SUM":
		return a.sum, a.count > 0 && !math.IsInf(a.sum, 0) && !math.IsNaN(a.sum)
	case "AVG":
		if a.count == 0 {
			return nil, false
		}
		avg := a.sum / float64(a.count)
		return avg, !math.IsInf(avg, 0) && !math.IsNaN(avg)
	}
	return a.best, a.have
}
