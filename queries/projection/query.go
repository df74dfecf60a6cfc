package projection

import (
	"cmp"
	"container/heap"
	"context"
	"encoding/json"
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"time"

	"github.com/twinhub/twinhub/queries/lang"
)

// Page sizes of Query.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// Request asks for one page of a query.
type Request struct {
	// Query is the query text (see queries/lang).
	Query string
	// PageSize is the most rows to return: DefaultPageSize when 0 (or
	// less), at most MaxPageSize.
	PageSize int
	// Continuation is the token of the previous page, "" for the first.
	Continuation string
}

// Page is one page of a query's results.
type Page struct {
	// Items are the rows, as JSON: whole twins for SELECT *, else objects
	// of the selected values.
	Items []json.RawMessage
	// Twins is true when the rows are whole twins (x-ms-item-type: twin).
	Twins bool
	// Continuation is the token of the next page, "" on the last page.
	Continuation string
}

// defaultChunk is how many twins a query visits per hold of the shared
// lock; in between, changes are applied.
const defaultChunk = 1 << 16

// Query answers one page of a query. It first waits until the projection
// applied every change acknowledged before the call (ErrLagging when that
// takes longer than Config.CatchUpTimeout). Errors matching lang.ErrQuery or
// ErrInvalidContinuation are the caller's; others mean the hub could not
// answer now.
func (p *Projection) Query(ctx context.Context, req Request) (*Page, error) {
	q, err := lang.Parse(req.Query)
	if err != nil {
		return nil, err
	}
	tok, err := parseToken(req.Continuation, req.Query)
	if err != nil {
		return nil, err
	}
	size := req.PageSize
	if size <= 0 {
		size = DefaultPageSize
	}
	size = min(size, MaxPageSize)
	if err := p.catchUp(ctx); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.QueryTimeout)
	defer cancel()
	select {
	case p.sem <- struct{}{}:
		defer func() { <-p.sem }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	start := time.Now()
	p.inflight.Add(1)
	defer p.inflight.Add(-1)
	p.mu.RLock()
	s := p.store
	if q.Modules {
		s = p.modules
	}
	x := &execution{p: p, ctx: ctx, s: s, q: q}
	defer func() { x.unlock() }()
	x.locked = true
	x.plan()
	var page *Page
	shape := shapeRows
	switch {
	case q.IsAggregate():
		shape = shapeGrouped
		page, err = x.grouped(tok, size)
	case len(q.OrderBy) > 0:
		shape = shapeOrdered
		page, err = x.ordered(tok, size)
	default:
		page, err = x.rows(tok, size)
	}
	p.metrics.duration.WithLabelValues(shape).Observe(time.Since(start).Seconds())
	p.metrics.checked.Add(float64(x.checked))
	p.metrics.candidates.Add(float64(x.visited))
	if err != nil {
		return nil, err
	}
	page.Twins = q.IsSelectStar()
	return page, nil
}

// execution is one page of one query.
type execution struct {
	p   *Projection
	ctx context.Context
	s   *store
	q   *lang.Query
	pl  *plan
	// planTime is how long planning took: after a pause, a plan that was
	// quick to make is made again, so its candidates are current.
	planTime time.Duration
	// locked is true while the execution holds the shared lock.
	locked bool
	// stale is true when the candidates may be out of date (the lock was
	// let go since planning and the plan was not made again), so every
	// twin is checked.
	stale   bool
	visited int
	checked int
}

// replanBelow is how quick a plan must have been to be made again after a
// pause rather than having every twin checked.
const replanBelow = time.Millisecond

func (x *execution) plan() {
	start := time.Now()
	x.pl = newPlan(x.s, x.q)
	x.planTime = time.Since(start)
	x.stale = false
}

func (x *execution) unlock() {
	if x.locked {
		x.p.mu.RUnlock()
		x.locked = false
	}
}

// pause lets the applier run, then takes the lock again.
func (x *execution) pause() error {
	x.unlock()
	if err := x.ctx.Err(); err != nil {
		return fmt.Errorf("query stopped after visiting %d twins: %w", x.visited, err)
	}
	x.p.mu.RLock()
	x.locked = true
	x.stale = true
	return nil
}

// refresh makes the plan again after a pause, when that is cheap, so that
// its candidates reflect the projection now.
func (x *execution) refresh() {
	if x.stale && x.planTime < replanBelow {
		x.plan()
	}
}

// check evaluates the WHERE condition on a twin unless the candidates are
// known to be exact; it returns the sparse document it built, if any.
func (x *execution) check(d *doc) (bool, map[string]any) {
	if x.pl.exact && !x.stale {
		return true, nil
	}
	x.checked++
	sp := x.pl.sparse(x.s, d)
	return x.pl.q.Match(sp), sp
}

// visitFunc receives a matching twin (and the sparse document built to
// check it, or nil); it returns false to stop the visit.
type visitFunc func(id docID, d *doc, sparse map[string]any) bool

// visit calls fn for every twin the query's condition holds for, in deviceId
// order, starting after the device after. need is how many twins the caller
// wants (0: all); it chooses between walking the deviceId order and testing
// candidates, or sorting the candidates.
func (x *execution) visit(after string, need int, fn visitFunc) error {
	s := x.s
	if cand := x.pl.cand; cand != nil {
		n, k := max(s.live(), 1), cand.len()
		walk := n
		if need > 0 && k > 0 {
			walk = min(n, need*(n/k+1))
		}
		if k+k*bits.Len(uint(k))*4 < walk {
			return x.visitSorted(after, fn)
		}
	}
	pos := s.order.seek(func(id uint32) bool { return s.docs[id].deviceID > after })
	for {
		steps, stopped := 0, false
		last := after
		s.order.each(pos, func(id uint32) bool {
			if steps == x.p.chunk {
				return false
			}
			steps++
			d := &s.docs[id]
			last = d.deviceID
			if x.pl.cand != nil && !x.pl.cand.contains(id) {
				return true
			}
			x.visited++
			ok, sp := x.check(d)
			if ok && !fn(id, d, sp) {
				stopped = true
				return false
			}
			return true
		})
		if stopped || steps < x.p.chunk {
			return nil
		}
		if err := x.pause(); err != nil {
			return err
		}
		x.refresh()
		after = last
		pos = s.order.seek(func(id uint32) bool { return s.docs[id].deviceID > after })
	}
}

// visitSorted visits a small candidate set by sorting it by deviceId.
func (x *execution) visitSorted(after string, fn visitFunc) error {
	s := x.s
	type item struct {
		deviceID string
		id       docID
	}
	var items []item
	x.pl.cand.each(func(id docID) bool {
		if d := &s.docs[id]; d.blob != nil && d.deviceID > after {
			items = append(items, item{d.deviceID, id})
		}
		return true
	})
	slices.SortFunc(items, func(a, b item) int { return strings.Compare(a.deviceID, b.deviceID) })
	for i, it := range items {
		if i > 0 && i%x.p.chunk == 0 {
			if err := x.pause(); err != nil {
				return err
			}
		}
		d := &s.docs[it.id]
		if d.blob == nil || d.deviceID != it.deviceID {
			continue // deleted while the query paused
		}
		x.visited++
		if ok, sp := x.check(d); ok && !fn(it.id, d, sp) {
			return nil
		}
	}
	return nil
}

// rows answers a query with one row per twin and no ORDER BY: rows come in
// deviceId order and a page resumes after the last deviceId of the previous.
func (x *execution) rows(tok token, size int) (*Page, error) {
	q := x.pl.q
	want := size
	if q.Top > 0 {
		want = min(want, q.Top-tok.Done)
	}
	fetch := want + 1 // one more, to know whether a next page exists
	if q.Top > 0 && tok.Done+want >= q.Top {
		fetch = want
	}
	type hit struct {
		deviceID string
		blob     []byte
		dict     uint8
		sparse   map[string]any
	}
	var hits []hit
	if fetch > 0 {
		err := x.visit(tok.After, fetch, func(_ docID, d *doc, sp map[string]any) bool {
			h := hit{deviceID: d.deviceID, blob: d.blob, dict: d.dict}
			if !q.Star {
				if sp == nil {
					sp = x.pl.sparse(x.s, d)
				}
				h.sparse = sp
			}
			hits = append(hits, h)
			return len(hits) < fetch
		})
		if err != nil {
			return nil, err
		}
	}
	page := &Page{}
	if len(hits) > want {
		hits = hits[:want]
		page.Continuation = token{Hash: tok.Hash, After: hits[want-1].deviceID, Done: tok.Done + want}.encode()
	}
	if q.Star {
		for _, h := range hits {
			page.Items = append(page.Items, x.s.codec.decode(h.blob, h.dict))
		}
		return page, nil
	}
	docs := make([]map[string]any, len(hits))
	for i, h := range hits {
		docs[i] = h.sparse
	}
	items, err := project(q, docs)
	page.Items = items
	return page, err
}

// project computes the select list of a row query over documents that are
// known to match, with lang.
func project(q *lang.Query, docs []map[string]any) ([]json.RawMessage, error) {
	pq := *q
	pq.Where, pq.OrderBy, pq.Top = nil, nil, 0
	rows, err := pq.Execute(slices.Values(docs))
	if err != nil {
		return nil, fmt.Errorf("BUG: projection: a parsed query failed: %w", err)
	}
	if len(rows) != len(docs) {
		panic(fmt.Sprintf("BUG: projection: %d rows from %d documents", len(rows), len(docs)))
	}
	return marshalRows(rows)
}

func marshalRows(rows []map[string]any) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, len(rows))
	for i, r := range rows {
		b, err := json.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("encoding a result row: %w", err)
		}
		out[i] = b
	}
	return out, nil
}

// sortKeyer computes the ORDER BY values of a twin's row.
type sortKeyer struct {
	x     *execution
	items []*lang.Query // per ORDER BY key: the query that evaluates its select item, or nil
	paths []string      // per key: the dotted path read from the nodes, or ""
	ids   []uint32      // per key: the id of paths[i], 0 while unknown
	segs  [][]string    // per key: the path, when read from the sparse document
	n     int
}

func newSortKeyer(x *execution) *sortKeyer {
	q := x.pl.q
	k := &sortKeyer{x: x}
	for _, o := range q.OrderBy {
		var expr lang.Expr
		if o.Alias != "" {
			for _, it := range q.Select {
				if it.Name == o.Alias {
					expr = it.Expr
				}
			}
		} else {
			expr = &o.Path
		}
		var item *lang.Query
		path, segs := "", []string(nil)
		if p, ok := expr.(*lang.Path); ok && !fullPath(p.Segments) {
			path = strings.Join(p.Segments, ".")
		} else if ok {
			segs = p.Segments
		} else {
			item = &lang.Query{Select: []lang.SelectItem{{Expr: expr, Alias: "v"}}}
		}
		k.items = append(k.items, item)
		k.paths = append(k.paths, path)
		k.ids = append(k.ids, 0)
		k.segs = append(k.segs, segs)
	}
	return k
}

// keys returns the ORDER BY values of d; sp is its sparse document if built.
func (k *sortKeyer) keys(d *doc, sp map[string]any) []sortValue {
	s := k.x.s
	if k.n++; k.n%4096 == 1 { // paths may appear while the query pauses
		for i, p := range k.paths {
			if p != "" && k.ids[i] == 0 {
				k.ids[i] = s.pathIDs[p]
			}
		}
	}
	out := make([]sortValue, len(k.paths))
	for i := range k.paths {
		switch {
		case k.paths[i] != "":
			if k.ids[i] != 0 {
				if v, ok := d.valueAt(k.ids[i]); ok {
					out[i] = s.dict.entries[v].sortValue()
				}
			}
		default:
			if sp == nil {
				sp = k.x.pl.sparse(s, d)
			}
			if k.segs[i] != nil {
				v, ok := lookup(sp, k.segs[i])
				out[i] = sortValueOf(v, ok)
				continue
			}
			rows, err := k.items[i].Execute(slices.Values([]map[string]any{sp}))
			if err != nil || len(rows) != 1 {
				panic(fmt.Sprintf("BUG: projection: evaluating an ORDER BY item: %v", err))
			}
			v, ok := rows[0]["v"]
			out[i] = sortValueOf(v, ok)
		}
	}
	return out
}

// lookup resolves a path in a decoded document as lang does.
func lookup(doc map[string]any, segs []string) (any, bool) {
	var cur any = doc
	for _, seg := range segs {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[seg]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// keyedRow is a row of an ordered query, kept until the page is chosen.
type keyedRow struct {
	keys     []sortValue
	deviceID string
	id       docID
	blob     []byte // the twin, compressed, as it was when keyed
	dict     uint8
}

// rowOrder compares rows by the ORDER BY keys (with their directions), then
// by deviceId: a total order, the one lang's stable sort over twins in
// deviceId order gives.
type rowOrder []bool // desc per key

func (o rowOrder) compare(a, b *keyedRow) int {
	for i, desc := range o {
		c := compareSortValues(a.keys[i], b.keys[i])
		if desc {
			c = -c
		}
		if c != 0 {
			return c
		}
	}
	return cmp.Compare(a.deviceID, b.deviceID)
}

// topRows keeps the n smallest rows seen: a max-heap on rowOrder.
type topRows struct {
	order rowOrder
	rows  []*keyedRow
	n     int
}

func (h *topRows) Len() int           { return len(h.rows) }
func (h *topRows) Less(i, j int) bool { return h.order.compare(h.rows[i], h.rows[j]) > 0 }
func (h *topRows) Swap(i, j int)      { h.rows[i], h.rows[j] = h.rows[j], h.rows[i] }
func (h *topRows) Push(x any)         { h.rows = append(h.rows, x.(*keyedRow)) }
func (h *topRows) Pop() any {
	r := h.rows[len(h.rows)-1]
	h.rows = h.rows[:len(h.rows)-1]
	return r
}

func (h *topRows) offer(r *keyedRow) {
	if len(h.rows) < h.n {
		heap.Push(h, r)
		return
	}
	if h.order.compare(r, h.rows[0]) < 0 {
		h.rows[0] = r
		heap.Fix(h, 0)
	}
}

// ordered answers a row query with ORDER BY: every matching twin is keyed,
// the smallest rows after the token's row are kept, and a page resumes after
// the (keys, deviceId) of the previous page's last row.
func (x *execution) ordered(tok token, size int) (*Page, error) {
	q := x.pl.q
	want := size
	if q.Top > 0 {
		want = min(want, q.Top-tok.Done)
	}
	fetch := want + 1
	if q.Top > 0 && tok.Done+want >= q.Top {
		fetch = want
	}
	order := make(rowOrder, len(q.OrderBy))
	for i, o := range q.OrderBy {
		order[i] = o.Desc
	}
	var from *keyedRow
	if tok.After != "" {
		if len(tok.Keys) != len(order) {
			return nil, fmt.Errorf("%w: it does not match the ORDER BY", ErrInvalidContinuation)
		}
		from = &keyedRow{keys: tok.Keys, deviceID: tok.After}
	}
	keyer := newSortKeyer(x)
	top := &topRows{order: order, n: fetch}
	if fetch > 0 {
		err := x.visit("", 0, func(id docID, d *doc, sp map[string]any) bool {
			r := &keyedRow{keys: keyer.keys(d, sp), deviceID: d.deviceID, id: id, blob: d.blob, dict: d.dict}
			if from == nil || order.compare(r, from) > 0 {
				top.offer(r)
			}
			return true
		})
		if err != nil {
			return nil, err
		}
	}
	rows := top.rows
	slices.SortFunc(rows, order.compare)
	page := &Page{}
	if len(rows) > want {
		rows = rows[:want]
		last := rows[want-1]
		page.Continuation = token{Hash: tok.Hash, After: last.deviceID, Keys: last.keys, Done: tok.Done + want}.encode()
	}
	if q.Star {
		for _, r := range rows {
			page.Items = append(page.Items, x.s.codec.decode(r.blob, r.dict))
		}
		return page, nil
	}
	docs := make([]map[string]any, 0, len(rows))
	for _, r := range rows {
		d := &x.s.docs[r.id]
		if d.blob == nil || d.deviceID != r.deviceID {
			continue // deleted while the query paused
		}
		docs = append(docs, x.pl.sparse(x.s, d))
	}
	items, err := project(q, docs)
	page.Items = items
	return page, err
}
