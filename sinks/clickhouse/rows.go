package clickhouse

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/twin"
)

// Sections of the twin_leaves table (Enum8 values of the column).
const (
	SectionTags     = "tags"
	SectionDesired  = "desired"
	SectionReported = "reported"
)

// Leaf operations (Enum8 values of twin_leaves.op).
const (
	LeafSet    = "set"
	LeafDelete = "delete"
)

// Value types (Enum8 values of twin_leaves.value_type).
const (
	TypeNull   = "null"
	TypeNumber = "number"
	TypeString = "string"
	TypeBool   = "bool"
	TypeArray  = "array"
	TypeObject = "object"
)

// eventRow is one row of twin_events.
type eventRow struct {
	seq             uint64
	deviceID        string
	generationID    string
	version         int64
	op              string
	source          string
	etag            string
	desiredVersion  int64
	reportedVersion int64
	time            time.Time
	commandID       string
	status          string
	patch           string
	leaves          []Leaf
}

// Leaf is one changed leaf of a change event: a row of twin_leaves without
// the event's columns.
type Leaf struct {
	Section string
	// Path is the property path below the section, keys joined by "." (twin
	// keys cannot contain "."); "" is the section itself.
	Path string
	// Op is LeafSet or LeafDelete.
	Op string
	// JSON is the value as JSON text ("null" for a delete).
	JSON string
	// Type is the value's type; exactly the matching typed field is set.
	Type   string
	Number *float64
	String *string
	Bool   *uint8
}

// wireEvent is a change event as it travels, with its patch kept as text:
// the text is stored as it is and parsed once, for the leaves.
type wireEvent struct {
	pipeline.Event
	RawPatch json.RawMessage `json:"patch"` // shadows Event.Patch
}

// decodeEvent parses a change event from the event stream into its row.
func decodeEvent(seq uint64, data []byte) (eventRow, error) {
	var ev wireEvent
	if err := json.Unmarshal(data, &ev); err != nil {
		return eventRow{}, fmt.Errorf("decoding change event seq %d: %w", seq, err)
	}
	at, err := time.Parse(time.RFC3339Nano, ev.Time)
	if err != nil {
		return eventRow{}, fmt.Errorf("change event seq %d: time %q: %w", seq, ev.Time, err)
	}
	var patch map[string]any
	if len(ev.RawPatch) > 0 && string(ev.RawPatch) != "{}" {
		if patch, err = twin.ParseObject(ev.RawPatch); err != nil {
			return eventRow{}, fmt.Errorf("change event seq %d of %s: patch: %w", seq, ev.DeviceID, err)
		}
	}
	leaves, err := leavesOf(ev.Op, patch)
	if err != nil {
		return eventRow{}, fmt.Errorf("change event seq %d of %s: %w", seq, ev.DeviceID, err)
	}
	text := string(ev.RawPatch)
	if text == "" {
		text = "{}"
	}
	return eventRow{
		seq: seq, deviceID: ev.DeviceID, generationID: ev.GenerationID, version: ev.Version,
		op: ev.Op, source: ev.Source, etag: ev.Etag,
		desiredVersion: ev.DesiredVersion, reportedVersion: ev.ReportedVersion,
		time: at.UTC(), commandID: ev.CommandID, status: ev.Status, patch: text, leaves: leaves,
	}, nil
}

// Leaves lists the leaves a change event changed, sections in the order
// tags, desired, reported and paths sorted within each:
//
//   - updateTwin: every leaf of each merge patch; null is a delete, an
//     array or empty object is a leaf set as a whole.
//   - replaceTwin: a delete of the tags and desired roots (path ""), then
//     every leaf of the patches: the new tags and desired, and a delete for
//     each key the replacement removed.
//   - deleteDevice: a delete of each section's root.
//   - createDevice: nothing (a new twin has no properties).
func Leaves(ev *pipeline.Event) ([]Leaf, error) {
	b, err := json.Marshal(ev.Patch)
	if err != nil {
		return nil, err
	}
	var patch map[string]any
	if string(b) != "{}" {
		if patch, err = twin.ParseObject(b); err != nil {
			return nil, fmt.Errorf("patch: %w", err)
		}
	}
	return leavesOf(ev.Op, patch)
}

// leavesOf lists the leaves of a change event with operation op and the
// parsed patch (nil when empty); see Leaves.
func leavesOf(op string, patch map[string]any) ([]Leaf, error) {
	var out []Leaf
	switch op {
	case pipeline.OpCreateDevice:
		return nil, nil
	case pipeline.OpDeleteDevice:
		for _, s := range []string{SectionTags, SectionDesired, SectionReported} {
			out = append(out, deleteLeaf(s, ""))
		}
		return out, nil
	case pipeline.OpUpdateTwin, pipeline.OpReplaceTwin:
	default:
		return nil, fmt.Errorf("unknown event op %q", op)
	}
	props, _ := patch["properties"].(map[string]any)
	replace := op == pipeline.OpReplaceTwin
	for _, sec := range []struct {
		name string
		v    any
	}{{SectionTags, patch["tags"]}, {SectionDesired, props["desired"]}, {SectionReported, props["reported"]}} {
		if replace && sec.name != SectionReported {
			out = append(out, deleteLeaf(sec.name, ""))
		}
		if sec.v == nil {
			continue
		}
		obj, ok := sec.v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s patch is not an object", sec.name)
		}
		var err error
		if out, err = flattenLeaves(out, sec.name, "", obj); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func deleteLeaf(section, path string) Leaf {
	return Leaf{Section: section, Path: path, Op: LeafDelete, JSON: "null", Type: TypeNull}
}

func flattenLeaves(out []Leaf, section, prefix string, obj map[string]any) ([]Leaf, error) {
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		v := obj[k]
		if m, ok := v.(map[string]any); ok && len(m) > 0 {
			var err error
			if out, err = flattenLeaves(out, section, p, m); err != nil {
				return nil, err
			}
			continue
		}
		l, err := valueLeaf(section, p, v)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

func valueLeaf(section, path string, v any) (Leaf, error) {
	l := Leaf{Section: section, Path: path, Op: LeafSet}
	switch v := v.(type) {
	case nil:
		return deleteLeaf(section, path), nil
	case json.Number:
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			return l, fmt.Errorf("%s.%s: number %q: %w", section, path, v, err)
		}
		l.Type, l.JSON, l.Number = TypeNumber, string(v), &f
	case string:
		b, err := marshal(v)
		if err != nil {
			return l, fmt.Errorf("%s.%s: %w", section, path, err)
		}
		l.Type, l.JSON, l.String = TypeString, string(b), &v
	case bool:
		var b uint8
		if v {
			b = 1
		}
		l.Type, l.JSON, l.Bool = TypeBool, strconv.FormatBool(v), &b
	case []any:
		b, err := marshal(v)
		if err != nil {
			return l, fmt.Errorf("%s.%s: %w", section, path, err)
		}
		l.Type, l.JSON = TypeArray, string(b)
	case map[string]any: // only the empty object reaches here
		l.Type, l.JSON = TypeObject, "{}"
	default:
		return l, fmt.Errorf("BUG: %s.%s: unexpected value type %T", section, path, v)
	}
	return l, nil
}

// marshal renders v as compact JSON without HTML escaping, so value_json
// holds the text the device or back end sent.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}
