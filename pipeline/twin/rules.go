package twin

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits of the twin model (reference §2.1–2.4).
const (
	// MaxKeyBytes is the longest property key, in UTF-8 bytes (RuleKey).
	MaxKeyBytes = 1024
	// MaxStringBytes is the longest string value, in UTF-8 bytes (RuleString).
	MaxStringBytes = 4096
	// MinInteger is the smallest integer value, −2^52 (RuleInteger).
	MinInteger = -4503599627370496
	// MaxInteger is the largest integer value, 2^52−1 (RuleInteger).
	MaxInteger = 4503599627370495
	// MaxDepth is how many object or array levels may nest below a section
	// root, which is level 0 (RuleDepth).
	MaxDepth = 10
	// MaxTagsSize is the largest SectionSize of tags (RuleSize).
	MaxTagsSize = 8192
	// MaxDesiredSize is the largest SectionSize of desired properties (RuleSize).
	MaxDesiredSize = 32768
	// MaxReportedSize is the largest SectionSize of reported properties (RuleSize).
	MaxReportedSize = 32768
)

// nullMode says what a null means where it is met.
type nullMode int

const (
	nullDeletes  nullMode = iota // inside a merge patch object: delete the key
	nullRejected                 // in a document (Replace, stored twin): RuleValue
	nullInArray                  // anywhere inside an array: RuleArrayNull
)

// normalizeObject validates m, an object at nesting level level below a
// section root whose path is path, and returns a deep copy of it in which
// every number is a json.Number. Keys are visited in sorted order so that the
// reported violation is deterministic.
func normalizeObject(m map[string]any, path string, level int, nulls nullMode) (map[string]any, error) {
	if level > MaxDepth {
		return nil, depthError(path, level)
	}
	out := make(map[string]any, len(m))
	for _, k := range sortedKeys(m) {
		if problem := keyProblem(k); problem != "" {
			return nil, &Error{Rule: RuleKey, Path: joinKey(path, k), Msg: problem}
		}
		kp := k
		if path != "" {
			kp = path + "." + k
		}
		v, err := normalizeValue(m[k], kp, level, nulls)
		if err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, nil
}

// normalizeValue validates v, a value held at nesting level level (that of
// the object or array holding it), see normalizeObject.
func normalizeValue(v any, path string, level int, nulls nullMode) (any, error) {
	switch v := v.(type) {
	case nil:
		switch nulls {
		case nullDeletes:
			return nil, nil
		case nullInArray:
			return nil, &Error{Rule: RuleArrayNull, Path: path, Msg: "null is not allowed inside arrays"}
		default:
			return nil, &Error{Rule: RuleValue, Path: path, Msg: "null is only allowed in patches, where it deletes a key"}
		}
	case map[string]any:
		return normalizeObject(v, path, level+1, nulls)
	case []any:
		if level+1 > MaxDepth {
			return nil, depthError(path, level+1)
		}
		out := make([]any, len(v))
		for i, e := range v {
			n, err := normalizeValue(e, joinIndex(path, i), level+1, nullInArray)
			if err != nil {
				return nil, err
			}
			out[i] = n
		}
		return out, nil
	case string:
		if !utf8.ValidString(v) {
			return nil, &Error{Rule: RuleValue, Path: path, Msg: "string is not valid UTF-8"}
		}
		if len(v) > MaxStringBytes {
			return nil, &Error{Rule: RuleString, Path: path, Msg: "string is " + strconv.Itoa(len(v)) + " bytes; the limit is " + strconv.Itoa(MaxStringBytes)}
		}
		return v, nil
	case bool:
		return v, nil
	case json.Number:
		return checkNumber(string(v), path)
	}
	if text, ok := goNumber(v); ok {
		if text == "" {
			return nil, &Error{Rule: RuleValue, Path: path, Msg: "number is not finite"}
		}
		return checkNumber(text, path)
	}
	return nil, &Error{Rule: RuleValue, Path: path, Msg: "values must be objects, arrays, strings, numbers or booleans; got a value of Go type " + typeName(v)}
}

// checkNumber validates the JSON number text s (§2.2): integers (no '.',
// 'e' or 'E') must lie in MinInteger..MaxInteger, other numbers must be
// finite float64 values.
func checkNumber(s, path string) (any, error) {
	if !validNumber(s) {
		return nil, &Error{Rule: RuleValue, Path: path, Msg: strconv.Quote(s) + " is not a JSON number"}
	}
	if !strings.ContainsAny(s, ".eE") {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < MinInteger || n > MaxInteger {
			return nil, &Error{Rule: RuleInteger, Path: path, Msg: "integer " + s + " is out of range; integers must lie within " +
				strconv.Itoa(MinInteger) + " ... " + strconv.Itoa(MaxInteger)}
		}
		return json.Number(s), nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, &Error{Rule: RuleValue, Path: path, Msg: "number " + s + " is not a finite float64"}
	}
	return json.Number(s), nil
}

func depthError(path string, level int) *Error {
	return &Error{Rule: RuleDepth, Path: path, Msg: "nesting reaches level " + strconv.Itoa(level) + "; the limit is " + strconv.Itoa(MaxDepth) + " levels below the section root"}
}

func typeName(v any) string { return fmt.Sprintf("%T", v) }

// SectionSize is the size of a section's properties as IoT Hub counts it
// against MaxTagsSize, MaxDesiredSize and MaxReportedSize (§2.4): the sum
// over every property of its key length in UTF-8 bytes plus its value size.
// A string counts its characters (runes) excluding control characters (C0,
// U+007F, C1); a number counts 8; a boolean 4; null 0; an object the sum
// over its properties (keys plus values). The reference does not say how
// arrays count: here an array counts the sum of its elements' sizes (no
// per-element overhead, since elements have no keys). $version and
// $metadata are not part of props and so never count. Values of types the
// twin model does not hold count 0.
func SectionSize(props map[string]any) int {
	n := 0
	for k, v := range props {
		n += len(k) + valueSize(v)
	}
	return n
}

func valueSize(v any) int {
	switch v := v.(type) {
	case string:
		n := 0
		for _, r := range v {
			if !isControl(r) {
				n++
			}
		}
		return n
	case bool:
		return 4
	case json.Number:
		return 8
	case map[string]any:
		return SectionSize(v)
	case []any:
		n := 0
		for _, e := range v {
			n += valueSize(e)
		}
		return n
	}
	if _, ok := goNumber(v); ok {
		return 8
	}
	return 0
}

// checkSize returns a RuleSize error when props at the section root path is
// larger than limit.
func checkSize(props map[string]any, path string, limit int) error {
	if n := SectionSize(props); n > limit {
		return &Error{Rule: RuleSize, Path: path, Msg: path + " is " + strconv.Itoa(n) + " bytes; the limit is " + strconv.Itoa(limit)}
	}
	return nil
}
