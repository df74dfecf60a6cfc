package projection

import "slices"

// blockSize is the target length of the blocks of an ordered list: inserts
// and deletes move at most 2*blockSize elements, and a seek is two binary
// searches.
const blockSize = 512

// ordered is a list of uint32 elements (doc ids or value ids) kept sorted
// by cmp, which must be a total order over the elements in the list. It is
// a one-level B-tree: a sorted list of sorted blocks.
type ordered struct {
	blocks [][]uint32
	cmp    func(a, b uint32) int
	n      int
}

func newOrdered(cmp func(a, b uint32) int) *ordered { return &ordered{cmp: cmp} }

// build fills an empty list from elements already sorted by cmp.
func (o *ordered) build(sorted []uint32) {
	for len(sorted) > 0 {
		n := min(blockSize, len(sorted))
		o.blocks = append(o.blocks, slices.Clone(sorted[:n]))
		sorted = sorted[n:]
		o.n += n
	}
}

func (o *ordered) len() int { return o.n }

// position is a place in the list: block b, index i.
type position struct{ b, i int }

// seek returns the first position whose element satisfies ge, which must be
// false for a prefix of the list and true for the rest.
func (o *ordered) seek(ge func(x uint32) bool) position {
	b, _ := slices.BinarySearchFunc(o.blocks, true, func(blk []uint32, _ bool) int {
		if ge(blk[len(blk)-1]) {
			return 1
		}
		return -1
	})
	if b == len(o.blocks) {
		return position{b, 0}
	}
	blk := o.blocks[b]
	i, _ := slices.BinarySearchFunc(blk, true, func(x uint32, _ bool) int {
		if ge(x) {
			return 1
		}
		return -1
	})
	return position{b, i}
}

// find returns the position of x, and whether it is there.
func (o *ordered) find(x uint32) (position, bool) {
	p := o.seek(func(y uint32) bool { return o.cmp(y, x) >= 0 })
	return p, p.b < len(o.blocks) && o.blocks[p.b][p.i] == x
}

func (o *ordered) insert(x uint32) {
	o.n++
	if len(o.blocks) == 0 {
		o.blocks = append(o.blocks, []uint32{x})
		return
	}
	p := o.seek(func(y uint32) bool { return o.cmp(y, x) >= 0 })
	if p.b == len(o.blocks) { // after everything: append to the last block
		p = position{p.b - 1, len(o.blocks[p.b-1])}
	}
	blk := slices.Insert(o.blocks[p.b], p.i, x)
	if len(blk) > 2*blockSize {
		half := len(blk) / 2
		right := slices.Clone(blk[half:])
		blk = slices.Clip(blk[:half])
		o.blocks = slices.Insert(o.blocks, p.b+1, right)
	}
	o.blocks[p.b] = blk
}

// remove deletes x; it reports whether x was there.
func (o *ordered) remove(x uint32) bool {
	p, ok := o.find(x)
	if !ok {
		return false
	}
	o.n--
	blk := slices.Delete(o.blocks[p.b], p.i, p.i+1)
	if len(blk) == 0 {
		o.blocks = slices.Delete(o.blocks, p.b, p.b+1)
		return true
	}
	o.blocks[p.b] = blk
	// Merge a small block into its neighbour so the list stays shallow.
	if len(blk) < blockSize/4 && p.b+1 < len(o.blocks) && len(o.blocks[p.b+1])+len(blk) <= blockSize {
		o.blocks[p.b] = append(blk, o.blocks[p.b+1]...)
		o.blocks = slices.Delete(o.blocks, p.b+1, p.b+2)
	}
	return true
}

// each calls fn for the elements from p on, in order, until fn returns
// false; it returns the position after the last element fn accepted.
func (o *ordered) each(p position, fn func(x uint32) bool) position {
	for ; p.b < len(o.blocks); p = (position{p.b + 1, 0}) {
		blk := o.blocks[p.b]
		for ; p.i < len(blk); p.i++ {
			if !fn(blk[p.i]) {
				return p
			}
		}
	}
	return p
}

// all returns the elements in order.
func (o *ordered) all() []uint32 {
	out := make([]uint32, 0, o.n)
	for _, blk := range o.blocks {
		out = append(out, blk...)
	}
	return out
}
