package twin

import "time"

// change is one accepted operation on a twin: which sections it carries,
// and whether it replaces them (PUT) or merge-patches them (PATCH).
type change struct {
	tags, desired, reported          map[string]any
	hasTags, hasDesired, hasReported bool
	replace                          bool
}

// ApplyReported applies a device's reported-properties merge patch (§2.5)
// and returns the new twin: Version and Reported.Version go up by 1, Etag is
// unchanged. A nil patch counts as {} (the operation still counts). On a
// rule violation it returns nil and an *Error; t is never modified. now is
// truncated to 100 ns. t must not be nil.
func ApplyReported(t *Twin, patch map[string]any, now time.Time) (*Twin, error) {
	return change{reported: patch, hasReported: true}.apply(t, now)
}

// ApplyService applies a back-end PATCH (§2.5): tags and desired are merge
// patches, and a nil map means that part is absent. One call is one
// operation: Version and Etag go up by 1, Desired.Version by 1 when desired
// is present. With both nil it returns t.Clone() and no counter changes. On
// a rule violation it returns nil and an *Error; t is never modified. now is
// truncated to 100 ns. t must not be nil.
func ApplyService(t *Twin, tags, desired map[string]any, now time.Time) (*Twin, error) {
	if tags == nil && desired == nil {
		return t.Clone(), nil
	}
	return change{tags: tags, hasTags: tags != nil, desired: desired, hasDesired: desired != nil}.apply(t, now)
}

// Replace replaces tags and desired wholesale (PUT /twins/{id}); a nil map
// replaces with nothing. Values may not be null (RuleValue): null only means
// something in patches. Every desired $metadata node gets now and the new
// desired $version. Version, Etag and Desired.Version go up by 1. On a rule
// violation it returns nil and an *Error; t is never modified. t must not be
// nil.
func Replace(t *Twin, tags, desired map[string]any, now time.Time) (*Twin, error) {
	return change{tags: tags, hasTags: true, desired: desired, hasDesired: true, replace: true}.apply(t, now)
}

// stamp is what a change writes into the $metadata nodes it touches.
type stamp struct {
	at      time.Time
	version int64 // desired $version; 0 in reported
}

func (s stamp) leaf() *Meta { return &Meta{LastUpdated: s.at, LastUpdatedVersion: s.version} }

func (m *Meta) set(s stamp) {
	m.LastUpdated = s.at
	m.LastUpdatedVersion = s.version
}

func (c change) apply(t *Twin, now time.Time) (*Twin, error) {
	now = normTime(now)
	nulls := nullDeletes
	if c.replace {
		nulls = nullRejected
	}
	var tags, desired, reported map[string]any
	var err error
	if c.hasTags {
		if tags, err = normalizeObject(c.tags, pathTags, 0, nulls); err != nil {
			return nil, err
		}
	}
	if c.hasDesired {
		if desired, err = normalizeObject(c.desired, pathDesired, 0, nulls); err != nil {
			return nil, err
		}
	}
	if c.hasReported {
		if reported, err = normalizeObject(c.reported, pathReported, 0, nulls); err != nil {
			return nil, err
		}
	}

	nt := t.Clone()
	if c.hasTags {
		if c.replace || nt.Tags == nil {
			nt.Tags = stripNulls(tags)
		} else {
			merge(nt.Tags, nil, tags, stamp{})
		}
		if err := checkSize(nt.Tags, pathTags, MaxTagsSize); err != nil {
			return nil, err
		}
		if len(nt.Tags) == 0 {
			nt.Tags = nil
		}
	}
	if c.hasDesired {
		nt.Desired.Version++
		if err := nt.Desired.change(desired, c.replace, stamp{now, nt.Desired.Version}, pathDesired, MaxDesiredSize); err != nil {
			return nil, err
		}
	}
	if c.hasReported {
		nt.Reported.Version++
		if err := nt.Reported.change(reported, c.replace, stamp{at: now}, pathReported, MaxReportedSize); err != nil {
			return nil, err
		}
	}
	nt.Version++
	if c.hasTags || c.hasDesired {
		nt.Etag++
	}
	return nt, nil
}

// change applies a normalized patch (or replacement) to s, a section of a
// clone, and checks the section's size afterwards.
func (s *Section) change(patch map[string]any, replace bool, st stamp, path string, limit int) error {
	if replace || s.Props == nil || s.Meta == nil {
		// A replacement, or a section that lacks its content or metadata
		// (possible only in a hand-built twin): rebuild everything.
		if !replace {
			old := s.Props
			if old == nil {
				old = map[string]any{}
			}
			merge(old, nil, patch, st)
			patch = old
		}
		s.Props = stripNulls(patch)
		s.Meta = fullMeta(s.Props, st)
	} else {
		if s.Meta.Children == nil {
			s.Meta.Children = map[string]*Meta{}
		}
		merge(s.Props, s.Meta, patch, st)
		s.Meta.set(st)
	}
	return checkSize(s.Props, path, limit)
}

// merge applies the normalized merge patch to dst in place (§2.5) and, when
// meta is not nil, keeps meta (dst's node) in step: every node the patch
// sets gets st, with metadata for each descendant of a set object; ancestors
// of touched nodes get st (the caller stamps meta itself); deleted keys lose
// their metadata subtree; untouched siblings keep theirs. patch is owned by
// merge: its values end up in dst without copying.
func merge(dst map[string]any, meta *Meta, patch map[string]any, st stamp) {
	for k, pv := range patch {
		if pv == nil {
			delete(dst, k)
			if meta != nil {
				delete(meta.Children, k)
			}
			continue
		}
		pm, isObj := pv.(map[string]any)
		if !isObj {
			dst[k] = pv
			if meta != nil {
				meta.Children[k] = st.leaf()
			}
			continue
		}
		em, exists := dst[k].(map[string]any)
		if !exists {
			v := stripNulls(pm)
			dst[k] = v
			if meta != nil {
				meta.Children[k] = fullMeta(v, st)
			}
			continue
		}
		if meta == nil {
			merge(em, nil, pm, st)
			continue
		}
		cm := meta.Children[k]
		if cm == nil || cm.Children == nil {
			// Metadata out of step with the content (hand-built twin):
			// treat the whole object as set now.
			cm = fullMeta(em, st)
			meta.Children[k] = cm
		}
		merge(em, cm, pm, st)
		cm.set(st)
	}
}

// stripNulls returns m without null members, recursively through objects
// (arrays hold no nulls once validated). It reuses m's maps.
func stripNulls(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	for k, v := range m {
		switch v := v.(type) {
		case nil:
			delete(m, k)
		case map[string]any:
			m[k] = stripNulls(v)
		}
	}
	return m
}

// fullMeta builds the metadata tree of v with every node set to st.
func fullMeta(v any, st stamp) *Meta {
	n := st.leaf()
	if m, ok := v.(map[string]any); ok {
		n.Children = make(map[string]*Meta, len(m))
		for k, c := range m {
			n.Children[k] = fullMeta(c, st)
		}
	}
	return n
}
