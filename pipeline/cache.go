package pipeline

import "sync"

// recordCache keeps recently used twin records with their KV revisions, so
// the processor does not read and decode a record for every command. It is
// safe because every write is a compare-and-swap on the cached revision: if
// another writer changed the record, the write fails, the entry is dropped
// and the record is read again. Cached records are never modified in place.
type recordCache struct {
	mu      sync.Mutex
	max     int
	entries map[string]cached
}

type cached struct {
	rec *Record
	rev uint64
}

func newRecordCache(max int) *recordCache {
	return &recordCache{max: max, entries: make(map[string]cached, min(max, 1<<16))}
}

func (c *recordCache) get(deviceID string) (*Record, uint64, bool) {
	if c == nil {
		return nil, 0, false
	}
	c.mu.Lock()
	e, ok := c.entries[deviceID]
	c.mu.Unlock()
	return e.rec, e.rev, ok
}

func (c *recordCache) put(deviceID string, rec *Record, rev uint64) {
	if c == nil || c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[deviceID]; !ok && len(c.entries) >= c.max {
		// Evict about a tenth, in map order (pseudo-random): cheap, and
		// good enough for a cache whose misses cost one KV read.
		n := c.max / 10
		for k := range c.entries {
			if n <= 0 {
				break
			}
			delete(c.entries, k)
			n--
		}
	}
	c.entries[deviceID] = cached{rec: rec, rev: rev}
}

func (c *recordCache) drop(deviceID string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	delete(c.entries, deviceID)
	c.mu.Unlock()
}
