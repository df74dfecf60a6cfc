package projection

import (
	"math/bits"
	"slices"
)

// singleRef flags, in a path's map from values to postings, a value held
// by a single twin: the entry is that twin's id, with no postings
// allocated (most values of paths like deviceId or a serial number). Other
// entries index the path's lists. Doc ids stay below it.
const singleRef = 1 << 31

// docID numbers a twin inside one projection. Ids are dense and reused
// (only while no query is in flight), so sets of them are small.
type docID = uint32

// postings is a set of doc ids: a sorted slice while small, a bitmap once
// the slice would be larger than the bitmap. A value held by one twin costs
// a one-element slice.
type postings struct {
	ids  []docID // sorted, when bits is nil
	bits *bitmap
}

// bitmap is a dense set of doc ids.
type bitmap struct {
	words []uint64
	n     int
}

// Switching points between the two forms: a set goes dense when its slice
// would outgrow a bitmap over the current id space (4 bytes per member
// against one bit per id), and back to a slice when it has shrunk to a
// quarter of that, so a set at the boundary does not flip back and forth.
const minDense = 1024

func denseAt(universe int) int { return max(minDense, universe/32) }

func (p *postings) len() int {
	if p.bits != nil {
		return p.bits.n
	}
	return len(p.ids)
}

// add inserts id; universe is the size of the id space, for choosing the form.
func (p *postings) add(id docID, universe int) {
	if p.bits != nil {
		p.bits.add(id)
		return
	}
	if n := len(p.ids); n == 0 || p.ids[n-1] < id {
		p.ids = append(p.ids, id)
	} else {
		i, found := slices.BinarySearch(p.ids, id)
		if found {
			return
		}
		p.ids = slices.Insert(p.ids, i, id)
	}
	if len(p.ids) > denseAt(universe) {
		b := &bitmap{}
		for _, x := range p.ids {
			b.add(x)
		}
		p.bits, p.ids = b, nil
	}
}

func (p *postings) remove(id docID, universe int) {
	if p.bits != nil {
		p.bits.remove(id)
		if p.bits.n < denseAt(universe)/4 {
			ids := make([]docID, 0, p.bits.n)
			p.bits.each(func(x docID) bool { ids = append(ids, x); return true })
			p.ids, p.bits = ids, nil
		}
		return
	}
	if i, found := slices.BinarySearch(p.ids, id); found {
		p.ids = slices.Delete(p.ids, i, i+1)
		if cap(p.ids) > 64 && len(p.ids) < cap(p.ids)/4 {
			p.ids = slices.Clip(slices.Clone(p.ids))
		}
	}
}

// each calls fn for every id in ascending order until fn returns false.
func (p *postings) each(fn func(docID) bool) {
	if p.bits != nil {
		p.bits.each(fn)
		return
	}
	for _, x := range p.ids {
		if !fn(x) {
			return
		}
	}
}

func (b *bitmap) contains(id docID) bool {
	w := int(id >> 6)
	return w < len(b.words) && b.words[w]&(1<<(id&63)) != 0
}

func (b *bitmap) add(id docID) {
	w := int(id >> 6)
	if w >= len(b.words) {
		b.words = append(b.words, make([]uint64, w+1-len(b.words)+len(b.words)/4)...)
	}
	if m := uint64(1) << (id & 63); b.words[w]&m == 0 {
		b.words[w] |= m
		b.n++
	}
}

func (b *bitmap) remove(id docID) {
	w := int(id >> 6)
	if w >= len(b.words) {
		return
	}
	if m := uint64(1) << (id & 63); b.words[w]&m != 0 {
		b.words[w] &^= m
		b.n--
	}
}

func (b *bitmap) each(fn func(docID) bool) {
	for w, word := range b.words {
		for word != 0 {
			t := bits.TrailingZeros64(word)
			if !fn(docID(w<<6 | t)) {
				return
			}
			word &= word - 1
		}
	}
}

// idSet is a set of doc ids that a query owns: the candidates of a plan.
// It never aliases the projection's postings, so a query may keep it while
// the applier changes the projection.
type idSet struct {
	ids  []docID // sorted, when bits is nil
	bits *bitmap
}

func (s *idSet) len() int {
	if s.bits != nil {
		return s.bits.n
	}
	return len(s.ids)
}

func (s *idSet) contains(id docID) bool {
	if s.bits != nil {
		return s.bits.contains(id)
	}
	_, ok := slices.BinarySearch(s.ids, id)
	return ok
}

func (s *idSet) each(fn func(docID) bool) {
	if s.bits != nil {
		s.bits.each(fn)
		return
	}
	for _, x := range s.ids {
		if !fn(x) {
			return
		}
	}
}

// setOf copies postings into an idSet.
func setOf(p *postings) *idSet {
	if p == nil {
		return &idSet{}
	}
	if p.bits != nil {
		return &idSet{bits: &bitmap{words: slices.Clone(p.bits.words), n: p.bits.n}}
	}
	return &idSet{ids: slices.Clone(p.ids)}
}

// gather collects the postings of several values for a union.
type gather struct {
	lists   []*postings
	singles []docID
	n       int
}

// add adds the twins holding value v at path pe, if any.
func (g *gather) add(pe *pathEntry, v vid) {
	ref, ok := pe.post[v]
	switch {
	case !ok:
	case ref&singleRef != 0:
		g.singles = append(g.singles, ref&^singleRef)
		g.n++
	default:
		g.lists = append(g.lists, pe.lists[ref])
		g.n += pe.lists[ref].len()
	}
}

// union builds the union; universe sizes a bitmap when it is large.
func (g *gather) union(universe int) *idSet {
	if g.n > denseAt(universe) {
		b := &bitmap{words: make([]uint64, (universe+63)/64)}
		or := func(x docID) {
			w := int(x >> 6)
			if w >= len(b.words) {
				b.words = append(b.words, make([]uint64, w+1-len(b.words))...)
			}
			b.words[w] |= 1 << (x & 63)
		}
		for _, p := range g.lists {
			if p.bits != nil {
				for w, word := range p.bits.words {
					if w >= len(b.words) {
						b.words = append(b.words, make([]uint64, len(p.bits.words)-len(b.words))...)
					}
					b.words[w] |= word
				}
				continue
			}
			for _, x := range p.ids {
				or(x)
			}
		}
		for _, x := range g.singles {
			or(x)
		}
		for _, w := range b.words {
			b.n += bits.OnesCount64(w)
		}
		return &idSet{bits: b}
	}
	if len(g.lists) == 1 && len(g.singles) == 0 {
		return setOf(g.lists[0])
	}
	ids := make([]docID, 0, g.n)
	ids = append(ids, g.singles...)
	for _, p := range g.lists {
		p.each(func(x docID) bool { ids = append(ids, x); return true })
	}
	slices.Sort(ids)
	return &idSet{ids: slices.Compact(ids)}
}

// union of two owned sets.
func union(a, b *idSet, universe int) *idSet {
	g := &gather{lists: []*postings{{ids: a.ids, bits: a.bits}, {ids: b.ids, bits: b.bits}}, n: a.len() + b.len()}
	return g.union(universe)
}

// intersect of two owned sets: the smaller one filtered by the larger.
func intersect(a, b *idSet) *idSet {
	if a.len() > b.len() {
		a, b = b, a
	}
	if a.bits != nil && b.bits != nil {
		out := &bitmap{words: make([]uint64, min(len(a.bits.words), len(b.bits.words)))}
		for i := range out.words {
			out.words[i] = a.bits.words[i] & b.bits.words[i]
			out.n += bits.OnesCount64(out.words[i])
		}
		return &idSet{bits: out}
	}
	ids := make([]docID, 0, a.len())
	a.each(func(x docID) bool {
		if b.contains(x) {
			ids = append(ids, x)
		}
		return true
	})
	return &idSet{ids: ids}
}

// subtract returns a minus b.
func subtract(a, b *idSet) *idSet {
	if a.bits != nil {
		out := &bitmap{words: slices.Clone(a.bits.words)}
		b.each(func(x docID) bool {
			if w := int(x >> 6); w < len(out.words) {
				out.words[w] &^= 1 << (x & 63)
			}
			return true
		})
		for _, w := range out.words {
			out.n += bits.OnesCount64(w)
		}
		return &idSet{bits: out}
	}
	ids := make([]docID, 0, a.len())
	for _, x := range a.ids {
		if !b.contains(x) {
			ids = append(ids, x)
		}
	}
	return &idSet{ids: ids}
}
