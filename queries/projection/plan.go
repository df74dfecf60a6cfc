package projection

import (
	"math"
	"slices"
	"strings"

	"github.com/twinhub/twinhub/pipeline/twin"
	"github.com/twinhub/twinhub/queries/lang"
)

// maxEvalValues bounds how many distinct values of a path the planner
// evaluates a condition on (see singlePath); beyond it the condition is
// checked twin by twin instead.
const maxEvalValues = 65536

// plan is how a query runs: which twins may match, whether they all do, and
// which parts of a twin evaluating the query needs.
type plan struct {
	q *lang.Query
	// cand holds the twins the WHERE condition may be true for; nil means
	// every twin.
	cand *idSet
	// exact is true when cand is exactly the twins WHERE is true for (when
	// the projection has not changed since planning), so rows need no check.
	exact bool
	// reads are the paths the query reads anywhere.
	reads []lang.Path
	// full is true when a read path reaches into a section's $metadata (or
	// is a section itself, or properties): such queries decode whole twins.
	full bool
	// readNames holds the dotted names of reads; include (computed from
	// it) tells which nodes a sparse document carries.
	readNames map[string]bool
	include   []bool
	objs      []sparseObj // scratch for sparse
}

// cands is what the planner knows of a condition: a superset of the twins it
// is true for (set nil: every twin), and whether the set is exact.
type cands struct {
	set   *idSet
	exact bool
}

var (
	everyTwin = cands{nil, true}  // true for every twin
	unknown   = cands{nil, false} // anything
)

func none() cands { return cands{&idSet{}, true} }

// newPlan plans q over the store.
func newPlan(s *store, q *lang.Query) *plan {
	pl := &plan{q: q, readNames: map[string]bool{}}
	addPath := func(p *lang.Path) {
		if !slices.ContainsFunc(pl.reads, func(r lang.Path) bool { return r.Equal(p) }) {
			pl.reads = append(pl.reads, *p)
		}
	}
	visit := func(e lang.Expr) {
		lang.Walk(e, func(x lang.Expr) bool {
			if p, ok := x.(*lang.Path); ok {
				addPath(p)
			}
			return true
		})
	}
	visit(q.Where)
	for _, it := range q.Select {
		visit(it.Expr)
	}
	for i := range q.GroupBy {
		addPath(&q.GroupBy[i])
	}
	for i, o := range q.OrderBy {
		if o.Alias == "" {
			addPath(&q.OrderBy[i].Path)
		}
	}
	for _, r := range pl.reads {
		if fullPath(r.Segments) {
			pl.full = true
		}
		pl.readNames[strings.Join(r.Segments, ".")] = true
	}
	c := everyTwin
	if q.Where != nil {
		c = (&planner{s: s}).cands(q.Where)
	}
	pl.cand, pl.exact = c.set, c.exact
	return pl
}

// fullPath reports whether a path's value is not fully in the nodes:
// properties, a section, or anything in a section's $metadata.
func fullPath(segs []string) bool {
	if len(segs) == 0 || segs[0] != "properties" {
		return false
	}
	if len(segs) == 1 {
		return true
	}
	if segs[1] != "desired" && segs[1] != "reported" {
		return false
	}
	return len(segs) == 2 || segs[2] == "$metadata"
}

// includes reports whether sparse documents carry the nodes of path id.
func (pl *plan) includes(s *store, id uint32) bool {
	for len(pl.include) <= int(id) {
		i := uint32(len(pl.include))
		inc := i > 0 && pl.readNames[s.paths[i].name]
		if !inc && i > 0 {
			inc = pl.include[s.paths[i].parent]
		}
		pl.include = append(pl.include, inc)
	}
	return pl.include[id]
}

type sparseObj struct {
	path uint32
	m    map[string]any
}

// sparse builds the part of a twin the query reads, as lang evaluates it: for
// every read path, the value at that path (with its whole subtree) is
// exactly as in the decoded twin, and paths that are undefined in the twin
// are undefined here. It decodes the whole twin when a read path needs it.
func (pl *plan) sparse(s *store, d *doc) map[string]any {
	if pl.full {
		return decodeTwin(s.twinJSON(d))
	}
	root := map[string]any{}
	pl.objs = pl.objs[:0]
	var container func(path uint32) map[string]any
	container = func(path uint32) map[string]any {
		if path == 0 {
			return root
		}
		for i := len(pl.objs) - 1; i >= 0; i-- {
			if pl.objs[i].path == path {
				return pl.objs[i].m
			}
		}
		pe := s.paths[path]
		m := map[string]any{}
		container(pe.parent)[pe.segs[len(pe.segs)-1]] = m
		pl.objs = append(pl.objs, sparseObj{path, m})
		return m
	}
	for _, n := range d.nodes {
		path := nodePath(n)
		if !pl.includes(s, path) {
			continue
		}
		if v := nodeValue(n); v == objectVID {
			container(path)
		} else {
			pe := s.paths[path]
			container(pe.parent)[pe.segs[len(pe.segs)-1]] = s.dict.entries[v].value()
		}
	}
	return root
}

// decodeTwin decodes a twin as lang expects it (numbers as json.Number).
func decodeTwin(b []byte) map[string]any {
	m, err := twin.ParseObject(b)
	if err != nil {
		panic("BUG: projection: a stored twin does not decode: " + err.Error())
	}
	return m
}

// planner turns a condition into candidate sets from the indexes.
type planner struct {
	s *store
}

func and(l, r cands) cands {
	switch {
	case l == everyTwin:
		return r
	case r == everyTwin:
		return l
	case l.set == nil:
		return cands{r.set, false}
	case r.set == nil:
		return cands{l.set, false}
	}
	return cands{intersect(l.set, r.set), l.exact && r.exact}
}

func (p *planner) or(l, r cands) cands {
	switch {
	case l == everyTwin || r == everyTwin:
		return everyTwin
	case l.set == nil || r.set == nil:
		return unknown
	}
	return cands{union(l.set, r.set, p.s.universe()), l.exact && r.exact}
}

func (p *planner) cands(e lang.Expr) cands {
	switch e := e.(type) {
	case *lang.Binary:
		switch {
		case e.Op == lang.OpAnd:
			return and(p.cands(e.Left), p.cands(e.Right))
		case e.Op == lang.OpOr:
			return p.or(p.cands(e.Left), p.cands(e.Right))
		case e.Op.IsComparison():
			if c, ok := p.comparison(e); ok {
				return c
			}
		}
	case *lang.Unary:
		if e.Op == lang.OpNot {
			if pos := negate(e.X); pos != nil {
				return p.cands(pos)
			}
		}
	case *lang.In:
		if c, ok := p.in(e); ok {
			return c
		}
	case *lang.Call:
		if c, ok := p.call(e); ok {
			return c
		}
	}
	return p.generic(e)
}

// negate returns an expression that is true exactly where NOT x is true, in
// a form the planner indexes better, or nil. The rewrites hold in the
// language's three-valued logic (De Morgan, and comparisons and IN are
// undefined exactly when their negations are).
func negate(x lang.Expr) lang.Expr {
	switch x := x.(type) {
	case *lang.Unary:
		if x.Op == lang.OpNot {
			return x.X
		}
	case *lang.Binary:
		switch x.Op {
		case lang.OpAnd:
			return &lang.Binary{Op: lang.OpOr, Left: &lang.Unary{Op: lang.OpNot, X: x.Left}, Right: &lang.Unary{Op: lang.OpNot, X: x.Right}}
		case lang.OpOr:
			return &lang.Binary{Op: lang.OpAnd, Left: &lang.Unary{Op: lang.OpNot, X: x.Left}, Right: &lang.Unary{Op: lang.OpNot, X: x.Right}}
		case lang.OpEq, lang.OpNe, lang.OpLt, lang.OpLe, lang.OpGt, lang.OpGe:
			inverse := map[lang.Op]lang.Op{lang.OpEq: lang.OpNe, lang.OpNe: lang.OpEq, lang.OpLt: lang.OpGe,
				lang.OpLe: lang.OpGt, lang.OpGt: lang.OpLe, lang.OpGe: lang.OpLt}
			return &lang.Binary{Op: inverse[x.Op], Left: x.Left, Right: x.Right}
		}
	case *lang.In:
		return &lang.In{X: x.X, Values: x.Values, Negate: !x.Negate}
	}
	return nil
}

// indexedPath returns the entry of a path whose nodes hold its value, or
// nil and ok when no twin holds the path.
func (p *planner) indexedPath(e lang.Expr) (pe *pathEntry, ok bool) {
	path, isPath := e.(*lang.Path)
	if !isPath || fullPath(path.Segments) {
		return nil, false
	}
	if id, found := p.s.lookupPath(path.Segments); found {
		return p.s.paths[id], true
	}
	return nil, true
}

// literalValue returns the value of a constant operand (a literal, or an
// expression without paths such as -5 or 2 * 3), as a sortValue when it is
// a primitive; ok is false when the operand is not constant.
func literalValue(e lang.Expr) (sv sortValue, primitive, ok bool) {
	var v any
	defined := true
	switch lit := e.(type) {
	case *lang.Literal:
		v, defined = lit.Value, !lit.Undefined
	case *lang.Path:
		return sortValue{}, false, false
	default:
		hasPath := false
		lang.Walk(e, func(x lang.Expr) bool {
			switch x.(type) {
			case *lang.Path, *lang.Aggregate:
				hasPath = true
			}
			return !hasPath
		})
		if hasPath {
			return sortValue{}, false, false
		}
		q := &lang.Query{Select: []lang.SelectItem{{Expr: e, Alias: "v"}}}
		rows, err := q.Execute(func(yield func(map[string]any) bool) { yield(map[string]any{}) })
		if err != nil || len(rows) != 1 {
			return sortValue{}, false, false
		}
		v, defined = rows[0]["v"]
	}
	if !defined {
		return sortValue{}, false, true
	}
	switch v.(type) {
	case nil, bool, string, float64:
		return sortValueOf(v, true), true, true
	}
	return sortValue{}, false, true // an array never compares
}

// class groups the ranks that compare with each other (false and true).
func class(rank int) int {
	if rank == rankTrue {
		return rankFalse
	}
	return rank
}

// comparison handles path op literal and literal op path.
func (p *planner) comparison(e *lang.Binary) (cands, bool) {
	op := e.Op
	pathSide, litSide := e.Left, e.Right
	if _, isPath := pathSide.(*lang.Path); !isPath {
		pathSide, litSide = litSide, pathSide
		switch op {
		case lang.OpLt:
			op = lang.OpGt
		case lang.OpLe:
			op = lang.OpGe
		case lang.OpGt:
			op = lang.OpLt
		case lang.OpGe:
			op = lang.OpLe
		}
	}
	pe, ok := p.indexedPath(pathSide)
	if !ok {
		return cands{}, false
	}
	lit, primitive, ok := literalValue(litSide)
	if !ok {
		return cands{}, false
	}
	if pe == nil || !primitive {
		return none(), true
	}
	g := &gather{}
	if op == lang.OpEq {
		p.equal(pe, lit, g)
		return cands{g.union(p.s.universe()), true}, true
	}
	test := func(c int) bool {
		switch op {
		case lang.OpNe:
			return c != 0
		case lang.OpLt:
			return c < 0
		case lang.OpLe:
			return c <= 0
		case lang.OpGt:
			return c > 0
		}
		return c >= 0
	}
	p.scanClass(pe, lit, op == lang.OpGt || op == lang.OpGe, func(v vid, c int) bool {
		if test(c) {
			g.add(pe, v)
		}
		// Stop at the first value past the literal for < and <=.
		return c <= 0 || op == lang.OpNe || op == lang.OpGt || op == lang.OpGe
	})
	return cands{g.union(p.s.universe()), true}, true
}

// scanClass calls fn, in order, for the path's values of the literal's
// class, with the comparison of each to the literal, until fn returns false.
// With fromLit the scan starts at the literal rather than at the class's
// first value.
func (p *planner) scanClass(pe *pathEntry, lit sortValue, fromLit bool, fn func(v vid, c int) bool) {
	s := p.s
	sorted := s.sortedValues(pe)
	start := lit
	if !fromLit {
		switch class(lit.Rank) {
		case rankNumber:
			start = sortValue{Rank: rankNumber, Num: math.Inf(-1)}
		case rankString:
			start = sortValue{Rank: rankString}
		default:
			start = sortValue{Rank: class(lit.Rank)}
		}
	}
	pos := sorted.seek(func(x uint32) bool { return compareSortValues(s.dict.entries[x].sortValue(), start) >= 0 })
	sorted.each(pos, func(x uint32) bool {
		sv := s.dict.entries[x].sortValue()
		if class(sv.Rank) != class(lit.Rank) {
			return false
		}
		return fn(x, compareSortValues(sv, lit))
	})
}

// equal adds the twins whose value at the path equals lit.
func (p *planner) equal(pe *pathEntry, lit sortValue, g *gather) {
	for _, v := range p.equalValues(lit) {
		g.add(pe, v)
	}
}

// equalValues returns the ids of the values equal to lit.
func (p *planner) equalValues(lit sortValue) []vid {
	switch lit.Rank {
	case rankNull:
		return p.lookup(kindNull, "")
	case rankFalse:
		return p.lookup(kindFalse, "")
	case rankTrue:
		return p.lookup(kindTrue, "")
	case rankString:
		return p.lookup(kindString, lit.Str)
	case rankNumber:
		return p.s.dict.numbers(lit.Num, nil)
	}
	return nil
}

func (p *planner) lookup(kind byte, text string) []vid {
	if v, ok := p.s.dict.lookup(kind, text); ok {
		return []vid{v}
	}
	return nil
}

// in handles path IN [...] and path NIN [...].
func (p *planner) in(e *lang.In) (cands, bool) {
	pe, ok := p.indexedPath(e.X)
	if !ok {
		return cands{}, false
	}
	if pe == nil {
		return none(), true
	}
	var listed []vid
	for _, c := range e.Values {
		if lit, primitive, _ := literalValue(&lang.Literal{Value: c}); primitive {
			listed = append(listed, p.equalValues(lit)...)
		}
	}
	g := &gather{}
	if !e.Negate {
		for _, v := range listed {
			g.add(pe, v)
		}
		return cands{g.union(p.s.universe()), true}, true
	}
	// NIN: every comparable value but those listed.
	for v := range pe.post {
		if p.s.dict.entries[v].scalar() && !slices.Contains(listed, v) {
			g.add(pe, v)
		}
	}
	return cands{g.union(p.s.universe()), true}, true
}

// call handles STARTSWITH(path, 'prefix'), IS_DEFINED(path), IS_NULL(path).
func (p *planner) call(e *lang.Call) (cands, bool) {
	if len(e.Args) == 0 {
		return cands{}, false
	}
	pe, ok := p.indexedPath(e.Args[0])
	if !ok {
		return cands{}, false
	}
	switch e.Func {
	case "IS_DEFINED":
		if pe == nil {
			return none(), true
		}
		return cands{p.defined(pe), true}, true
	case "IS_NULL":
		if pe == nil {
			return none(), true
		}
		g := &gather{}
		p.equal(pe, sortValue{Rank: rankNull}, g)
		return cands{g.union(p.s.universe()), true}, true
	case "STARTSWITH":
		if len(e.Args) != 2 {
			return cands{}, false
		}
		lit, ok := e.Args[1].(*lang.Literal)
		if !ok || lit.Undefined {
			return cands{}, false
		}
		prefix, isString := lit.Value.(string)
		if !isString {
			return cands{}, false
		}
		if pe == nil {
			return none(), true
		}
		g := &gather{}
		p.scanClass(pe, sortValue{Rank: rankString, Str: prefix}, true, func(v vid, _ int) bool {
			if !strings.HasPrefix(p.s.dict.entries[v].text(), prefix) {
				return false
			}
			g.add(pe, v)
			return true
		})
		return cands{g.union(p.s.universe()), true}, true
	}
	return cands{}, false
}

// generic handles a condition that reads at most one path by evaluating it
// on each distinct value of that path (and on the path being undefined),
// rather than on each twin. Objects are not evaluated: twins holding an
// object there stay candidates and are checked one by one.
func (p *planner) generic(e lang.Expr) cands {
	var path *lang.Path
	single := true
	lang.Walk(e, func(x lang.Expr) bool {
		switch x := x.(type) {
		case *lang.Path:
			if path != nil && !path.Equal(x) {
				single = false
			}
			path = x
		case *lang.Aggregate:
			single = false
		}
		return single
	})
	if !single {
		return unknown
	}
	q := &lang.Query{Star: true, Where: e}
	whenUndefined := q.Match(map[string]any{})
	if path == nil { // a constant
		if whenUndefined {
			return everyTwin
		}
		return none()
	}
	pe, ok := p.indexedPath(path)
	if !ok {
		return unknown
	}
	if pe == nil {
		if whenUndefined {
			return everyTwin
		}
		return none()
	}
	if len(pe.post) > maxEvalValues {
		return unknown
	}
	exact := true
	g := &gather{}
	doc := map[string]any{}
	for v := range pe.post {
		if v == objectVID {
			g.add(pe, v)
			exact = false
			continue
		}
		clear(doc)
		m := doc
		for _, seg := range path.Segments[:len(path.Segments)-1] {
			next := map[string]any{}
			m[seg] = next
			m = next
		}
		m[path.Segments[len(path.Segments)-1]] = p.s.dict.entries[v].value()
		if q.Match(doc) {
			g.add(pe, v)
		}
	}
	set := g.union(p.s.universe())
	if whenUndefined {
		// Twins without the path match too.
		set = union(set, subtract(p.s.allTwins(), p.defined(pe)), p.s.universe())
	}
	return cands{set, exact}
}

// defined returns the twins in which the path is defined.
func (p *planner) defined(pe *pathEntry) *idSet {
	g := &gather{}
	for v := range pe.post {
		g.add(pe, v)
	}
	return g.union(p.s.universe())
}

// allTwins is the set of live twins.
func (s *store) allTwins() *idSet {
	b := &bitmap{words: make([]uint64, (len(s.docs)+63)/64)}
	for i := range s.docs {
		if s.docs[i].blob != nil {
			b.add(docID(i))
		}
	}
	return &idSet{bits: b}
}
