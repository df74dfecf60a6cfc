package projection

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// pathEntry is one path that some twin holds (tags.location.plant), with its
// inverted index.
type pathEntry struct {
	name   string
	segs   []string
	parent uint32 // the parent path; 0, the root, for top-level properties
	// post maps each value the path holds to the twins holding it: a twin
	// id with singleRef set, or an index into lists.
	post      map[vid]uint32
	lists     []*postings
	freeLists []uint32
	// sorted lists the path's comparable values (null, booleans, numbers,
	// strings) in order, for range and prefix scans. It is built by the
	// first query that needs it and kept current from then on.
	sorted *ordered
	// docs counts the twins in which the path is defined.
	docs int
}

// node is one node of a twin: path id in the high half, value id in the low.
type node = uint64

func makeNode(path uint32, v vid) node { return node(path)<<32 | node(v) }
func nodePath(n node) uint32           { return uint32(n >> 32) }
func nodeValue(n node) vid             { return vid(n) }

// doc is one twin.
type doc struct {
	deviceID string
	// blob is the twin's JSON exactly as GET /twins/{id} returns it (it is
	// what the KV record holds), compressed with dictionary dict of the
	// codec; nil while the slot is free.
	blob []byte
	dict uint8
	// nodes are the twin's nodes, sorted by path id (so parents come first),
	// without the sections' $metadata.
	nodes []node
}

// store is the projection's data: twins, the path and value dictionaries and
// the indexes. It is not safe for concurrent use; Projection guards it.
type store struct {
	dict     *dictionary
	pathIDs  map[string]uint32
	paths    []*pathEntry
	docs     []doc
	byDevice map[string]docID
	// order holds the live twins in deviceId order (bytewise), the order in
	// which queries return rows.
	order *ordered
	codec *codec
	// sharedCodec is set on a store that uses another store's codec,
	// which that store trains.
	sharedCodec bool
	freeDocs    []docID
	// pendingDocs are freed slots that queries in flight may still name.
	pendingDocs []docID
	nodeBuf     []node
	// lazy guards what queries build on first use under the shared lock
	// (pathEntry.sorted).
	lazy sync.Mutex
	// shape holds the path ids of the last twin flattened, by position:
	// twins of a fleet look alike, so most paths are found here without a
	// map lookup.
	shape []uint32
}

func newStore() *store {
	s := &store{
		dict:     newDictionary(),
		pathIDs:  map[string]uint32{"": 0},
		paths:    []*pathEntry{{post: map[vid]uint32{}}},
		byDevice: map[string]docID{},
		codec:    newCodec(),
	}
	s.order = newOrdered(func(a, b uint32) int { return strings.Compare(s.docs[a].deviceID, s.docs[b].deviceID) })
	return s
}

func (s *store) live() int { return len(s.byDevice) }

// universe is the size of the doc id space.
func (s *store) universe() int { return len(s.docs) }

// pathID returns the id of a dotted path, interning it.
func (s *store) pathID(path []byte) uint32 {
	if id, ok := s.pathIDs[string(path)]; ok {
		return id
	}
	name := string(path)
	pe := &pathEntry{name: name, segs: strings.Split(name, "."), post: map[vid]uint32{}}
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		pe.parent = s.pathID(path[:i])
	}
	id := uint32(len(s.paths))
	s.paths = append(s.paths, pe)
	s.pathIDs[name] = id
	return id
}

// lookupPath returns the id of a path given as segments, if any twin ever
// held it.
func (s *store) lookupPath(segs []string) (uint32, bool) {
	id, ok := s.pathIDs[strings.Join(segs, ".")]
	return id, ok && id != 0
}

// nodesOf flattens a twin into nodes, interning paths and values (each value
// gets one more reference).
func (s *store) nodesOf(twinJSON []byte) ([]node, error) {
	nodes := s.nodeBuf[:0]
	err := flatten(twinJSON, func(path []byte, kind byte, raw []byte) error {
		i := len(nodes)
		var id uint32
		if i < len(s.shape) && s.paths[s.shape[i]].name == string(path) {
			id = s.shape[i]
		} else {
			id = s.pathID(path)
			if i < len(s.shape) {
				s.shape[i] = id
			} else {
				s.shape = append(s.shape, id)
			}
		}
		nodes = append(nodes, makeNode(id, s.dict.intern(kind, raw)))
		return nil
	})
	s.nodeBuf = nodes
	if err != nil {
		for _, n := range nodes {
			s.dict.release(nodeValue(n))
		}
		return nil, err
	}
	slices.Sort(nodes)
	return slices.Clone(nodes), nil
}

// put adds or replaces a twin, compressing it unless c.blob already holds
// it compressed. With appendOrder the caller
// promises that the device sorts after every twin in the store (the
// initial load), so the order is extended without a search.
func (s *store) put(c *change, appendOrder bool) error {
	twinJSON := c.twin
	if twinJSON == nil {
		twinJSON = s.codec.decode(c.blob, c.dict)
	}
	nodes, err := s.nodesOf(twinJSON)
	if err != nil {
		return fmt.Errorf("indexing the twin of %s: %w", c.deviceID, err)
	}
	if c.blob == nil {
		c.blob, c.dict = s.codec.encode(c.twin)
	}
	id, exists := s.byDevice[c.deviceID]
	if !exists {
		id = s.allocDoc()
		s.docs[id] = doc{deviceID: c.deviceID, blob: c.blob, dict: c.dict, nodes: nodes}
		s.byDevice[c.deviceID] = id
		if appendOrder && s.order.n > 0 {
			last := s.order.blocks[len(s.order.blocks)-1]
			if len(last) < 2*blockSize {
				s.order.blocks[len(s.order.blocks)-1] = append(last, id)
			} else {
				s.order.blocks = append(s.order.blocks, []uint32{id})
			}
			s.order.n++
		} else {
			s.order.insert(id)
		}
		for _, n := range nodes {
			s.index(n, id)
		}
		return nil
	}
	d := &s.docs[id]
	old := d.nodes
	// Both lists are sorted: walk them together and touch the indexes only
	// for nodes that changed.
	i, j := 0, 0
	for i < len(old) || j < len(nodes) {
		switch {
		case j == len(nodes) || (i < len(old) && old[i] < nodes[j]):
			s.unindex(old[i], id)
			i++
		case i == len(old) || nodes[j] < old[i]:
			s.index(nodes[j], id)
			j++
		default:
			i++
			j++
		}
	}
	for _, n := range old {
		s.dict.release(nodeValue(n))
	}
	d.blob, d.dict, d.nodes = c.blob, c.dict, nodes
	return nil
}

// twinJSON returns a twin's JSON; callers must not change it.
func (s *store) twinJSON(d *doc) []byte { return s.codec.decode(d.blob, d.dict) }

// train makes a new compression dictionary from twins spread over the
// fleet, when it has grown enough since the last one.
func (s *store) train() {
	if s.sharedCodec {
		return
	}
	n := s.live()
	if !s.codec.wantsTraining(n) {
		return
	}
	var samples [][]byte
	step := max(1, len(s.docs)/dictSamples)
	for i := 0; i < len(s.docs) && len(samples) < dictSamples; i += step {
		if d := &s.docs[i]; d.blob != nil {
			samples = append(samples, s.twinJSON(d))
		}
	}
	s.codec.train(n, samples)
}

// remove deletes a twin; removing an unknown device does nothing.
func (s *store) remove(deviceID string) {
	id, ok := s.byDevice[deviceID]
	if !ok {
		return
	}
	d := &s.docs[id]
	for _, n := range d.nodes {
		s.unindex(n, id)
		s.dict.release(nodeValue(n))
	}
	if !s.order.remove(id) {
		panic("BUG: projection: a live twin is missing from the deviceId order: " + deviceID)
	}
	delete(s.byDevice, deviceID)
	d.blob, d.nodes = nil, nil // deviceID stays until the slot is reused
	s.pendingDocs = append(s.pendingDocs, id)
}

func (s *store) allocDoc() docID {
	if n := len(s.freeDocs); n > 0 {
		id := s.freeDocs[n-1]
		s.freeDocs = s.freeDocs[:n-1]
		return id
	}
	if len(s.docs) >= singleRef {
		panic("BUG: projection: more than 2^31 twins")
	}
	s.docs = append(s.docs, doc{})
	return docID(len(s.docs) - 1)
}

// recycle makes freed doc slots and value ids reusable; the caller knows
// that no query is in flight.
func (s *store) recycle() {
	for _, id := range s.pendingDocs {
		s.docs[id] = doc{}
	}
	s.freeDocs = append(s.freeDocs, s.pendingDocs...)
	s.pendingDocs = s.pendingDocs[:0]
	s.dict.recycle()
}

func (s *store) index(n node, id docID) {
	pe := s.paths[nodePath(n)]
	v := nodeValue(n)
	pe.docs++
	ref, ok := pe.post[v]
	switch {
	case !ok:
		pe.post[v] = id | singleRef
		if pe.sorted != nil && s.dict.entries[v].scalar() {
			pe.sorted.insert(v)
		}
	case ref&singleRef != 0:
		p := &postings{ids: make([]docID, 1, 2)}
		p.ids[0] = ref &^ singleRef
		p.add(id, s.universe())
		pe.post[v] = pe.newList(p)
	default:
		pe.lists[ref].add(id, s.universe())
	}
}

func (s *store) unindex(n node, id docID) {
	pe := s.paths[nodePath(n)]
	v := nodeValue(n)
	pe.docs--
	ref, ok := pe.post[v]
	switch {
	case !ok || ref == id|singleRef:
		if !ok {
			panic("BUG: projection: unindexing a value the path does not hold: " + pe.name)
		}
		delete(pe.post, v)
		if pe.sorted != nil && s.dict.entries[v].scalar() {
			pe.sorted.remove(v)
		}
	case ref&singleRef != 0:
		panic("BUG: projection: unindexing a twin that does not hold the value: " + pe.name)
	default:
		p := pe.lists[ref]
		p.remove(id, s.universe())
		if p.len() == 1 {
			var only docID
			p.each(func(x docID) bool { only = x; return false })
			pe.lists[ref] = nil
			pe.freeLists = append(pe.freeLists, ref)
			pe.post[v] = only | singleRef
		}
	}
}

// newList stores postings in the path's lists and returns their index.
func (pe *pathEntry) newList(p *postings) uint32 {
	if n := len(pe.freeLists); n > 0 {
		ref := pe.freeLists[n-1]
		pe.freeLists = pe.freeLists[:n-1]
		pe.lists[ref] = p
		return ref
	}
	pe.lists = append(pe.lists, p)
	return uint32(len(pe.lists) - 1)
}

// holders returns how many twins hold value v at the path.
func (pe *pathEntry) holders(v vid) int {
	ref, ok := pe.post[v]
	switch {
	case !ok:
		return 0
	case ref&singleRef != 0:
		return 1
	}
	return pe.lists[ref].len()
}

// sortedValues returns the path's comparable values in order, building the
// list on first use.
func (s *store) sortedValues(pe *pathEntry) *ordered {
	s.lazy.Lock()
	defer s.lazy.Unlock()
	if pe.sorted == nil {
		// Sort on the values themselves rather than through the dictionary,
		// which would cost two random reads per comparison.
		type keyed struct {
			sv sortValue
			v  vid
		}
		vals := make([]keyed, 0, len(pe.post))
		for v := range pe.post {
			if e := &s.dict.entries[v]; e.scalar() {
				vals = append(vals, keyed{e.sortValue(), v})
			}
		}
		slices.SortFunc(vals, func(a, b keyed) int {
			if c := compareSortValues(a.sv, b.sv); c != 0 {
				return c
			}
			return cmp.Compare(a.v, b.v)
		})
		ids := make([]uint32, len(vals))
		for i, k := range vals {
			ids[i] = k.v
		}
		o := newOrdered(s.dict.compareScalar)
		o.build(ids)
		pe.sorted = o
	}
	return pe.sorted
}

// valueAt returns the value id a twin holds at a path.
func (d *doc) valueAt(path uint32) (vid, bool) {
	lo, hi := 0, len(d.nodes)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if nodePath(d.nodes[m]) < path {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(d.nodes) && nodePath(d.nodes[lo]) == path {
		return nodeValue(d.nodes[lo]), true
	}
	return 0, false
}
