package twin

import "time"

// Changes that remove keys wholesale (a replacement, or a section set to
// null in a back-end PATCH) are carried as merge patches that name each
// removed key with null. Devices keep a cached copy of their desired
// properties and merge every notification into it (the Azure SDKs do a deep
// merge, then drop nulls), so they forget a key only when it arrives as
// null; the change stream's consumers see the deletion the same way.

// ClearPatch returns the merge patch (§2.5) that deletes every property of a
// section whose content is props: null for each of its keys, {} for an
// empty section. A back-end PATCH that sets tags or properties.desired to
// null as a whole means this patch.
func ClearPatch(props map[string]any) map[string]any {
	out := make(map[string]any, len(props))
	for k := range props {
		out[k] = nil
	}
	return out
}

// ReplacePatches validates the documents of a Replace of t's tags and
// desired properties and returns the change as two merge patches (§2.5):
// each is the new document with null added for every key the old section
// has and the new one lacks, at every object level both have. Merged into
// the old section, a patch gives exactly the new one; ReplaceByPatches
// applies them as Replace does. A nil document counts as {}. The documents
// are checked with Replace's rules except the size limits (which Replace
// checks): a null in them is a RuleValue error. t and the documents are not
// modified.
func ReplacePatches(t *Twin, tags, desired map[string]any) (tagsPatch, desiredPatch map[string]any, err error) {
	nt, err := normalizeObject(tags, pathTags, 0, nullRejected)
	if err != nil {
		return nil, nil, err
	}
	nd, err := normalizeObject(desired, pathDesired, 0, nullRejected)
	if err != nil {
		return nil, nil, err
	}
	return replacementPatch(t.Tags, nt), replacementPatch(t.Desired.Props, nd), nil
}

// replacementPatch is next (normalized, and owned by the caller: it is
// changed in place) plus null for each key of old that next lacks,
// recursively where both hold an object.
func replacementPatch(old, next map[string]any) map[string]any {
	for k, ov := range old {
		nv, ok := next[k]
		if !ok {
			next[k] = nil
			continue
		}
		om, oldObj := ov.(map[string]any)
		nm, nextObj := nv.(map[string]any)
		if oldObj && nextObj {
			next[k] = replacementPatch(om, nm)
		}
	}
	return next
}

// ReplaceByPatches replaces tags and desired wholesale with the patches
// ReplacePatches returned: the nulls mark removed keys and are dropped (null
// inside an array is still refused), and the rest is the new document,
// applied by Replace with its rules and counters. A document without nulls
// is applied as it is, so replacements recorded before the nulls were added
// replay unchanged. Inputs are not modified; errors are Replace's.
func ReplaceByPatches(t *Twin, tagsPatch, desiredPatch map[string]any, now time.Time) (*Twin, error) {
	return Replace(t, withoutNulls(tagsPatch), withoutNulls(desiredPatch), now)
}

// withoutNulls returns a copy of m without its null members, at every object
// level; arrays are copied as they are.
func withoutNulls(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, v := range m {
		switch v := v.(type) {
		case nil:
		case map[string]any:
			out[k] = withoutNulls(v)
		default:
			out[k] = cloneValue(v)
		}
	}
	return out
}
