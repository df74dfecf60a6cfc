package lang

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// kind classifies a JSON value. The order of the constants is the order
// ORDER BY uses across kinds.
type kind int

const (
	kUndefined kind = iota
	kNull
	kBool
	kNumber
	kString
	kArray
	kObject
	kOther // a Go value that is not JSON; never equal or ordered to anything
)

// kindOf returns the kind of a defined value.
func kindOf(v any) kind {
	switch v := v.(type) {
	case nil:
		return kNull
	case bool:
		return kBool
	case string:
		return kString
	case map[string]any:
		return kObject
	case []any:
		return kArray
	case json.Number:
		if _, err := strconv.ParseFloat(string(v), 64); err != nil {
			return kOther
		}
		return kNumber
	case float64, float32, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return kNumber
	}
	return kOther
}

// toFloat converts any of the numeric types a twin may hold to float64.
func toFloat(v any) (float64, bool) {
	switch v := v.(type) {
	case float64:
		return v, true
	case json.Number:
		f, err := strconv.ParseFloat(string(v), 64)
		return f, err == nil
	case int:
		return float64(v), true
	case int64:
		return float64(v), true
	case float32:
		return float64(v), true
	case int8:
		return float64(v), true
	case int16:
		return float64(v), true
	case int32:
		return float64(v), true
	case uint:
		return float64(v), true
	case uint8:
		return float64(v), true
	case uint16:
		return float64(v), true
	case uint32:
		return float64(v), true
	case uint64:
		return float64(v), true
	}
	return 0, false
}

// isPrimitive reports whether v is null, a bool, a number or a string.
func isPrimitive(v any) bool {
	k := kindOf(v)
	return k >= kNull && k <= kString
}

// comparePrimitives compares two primitives of the same kind; ok is false
// when they are not (then the comparison is undefined). Numbers compare
// numerically whatever their Go type, strings by bytes (ordinal), false
// before true, and null equals null.
func comparePrimitives(a, b any) (c int, ok bool) {
	ka, kb := kindOf(a), kindOf(b)
	if ka != kb {
		return 0, false
	}
	switch ka {
	case kNull:
		return 0, true
	case kBool:
		return cmpBool(a.(bool), b.(bool)), true
	case kNumber:
		fa, _ := toFloat(a)
		fb, _ := toFloat(b)
		if math.IsNaN(fa) || math.IsNaN(fb) {
			return 0, false
		}
		return cmp.Compare(fa, fb), true
	case kString:
		return strings.Compare(a.(string), b.(string)), true
	}
	return 0, false
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// orderValues is the total order of ORDER BY and of MIN/MAX across kinds:
// undefined < null < false < true < numbers < strings < arrays < objects <
// other Go values. Within a kind, numbers compare numerically (NaN first),
// strings ordinally; arrays, objects and other values are all equal to each
// other within their kind.
func orderValues(a any, aok bool, b any, bok bool) int {
	ka, kb := kUndefined, kUndefined
	if aok {
		ka = kindOf(a)
	}
	if bok {
		kb = kindOf(b)
	}
	if ka != kb {
		return cmp.Compare(ka, kb)
	}
	switch ka {
	case kBool:
		return cmpBool(a.(bool), b.(bool))
	case kNumber:
		fa, _ := toFloat(a)
		fb, _ := toFloat(b)
		return cmp.Compare(fa, fb)
	case kString:
		return strings.Compare(a.(string), b.(string))
	}
	return 0
}

// appendKey appends an encoding of a value to buf such that two values get
// the same encoding exactly when they fall in the same GROUP BY group:
// numbers by numeric value whatever their Go type, everything else by JSON
// value (object keys in sorted order). Strings are length-prefixed, so no
// concatenation of encodings is ambiguous.
func appendKey(buf []byte, v any, ok bool) []byte {
	if !ok {
		return append(buf, 'u')
	}
	switch kindOf(v) {
	case kNull:
		return append(buf, 'n')
	case kBool:
		if v.(bool) {
			return append(buf, 't')
		}
		return append(buf, 'f')
	case kNumber:
		f, _ := toFloat(v)
		if f == 0 {
			f = 0 // -0 and 0 are one group
		}
		buf = append(buf, 'd')
		buf = strconv.AppendFloat(buf, f, 'g', -1, 64)
		return append(buf, ';')
	case kString:
		return appendLenString(append(buf, 's'), v.(string))
	case kArray:
		a := v.([]any)
		buf = strconv.AppendInt(append(buf, 'a'), int64(len(a)), 10)
		buf = append(buf, ':')
		for _, e := range a {
			buf = appendKey(buf, e, true)
		}
		return buf
	case kObject:
		m := v.(map[string]any)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		buf = strconv.AppendInt(append(buf, 'o'), int64(len(m)), 10)
		buf = append(buf, ':')
		for _, k := range keys {
			buf = appendLenString(buf, k)
			buf = appendKey(buf, m[k], true)
		}
		return buf
	}
	return appendLenString(append(buf, 'x'), fmt.Sprintf("%T:%v", v, v))
}

func appendLenString(buf []byte, s string) []byte {
	buf = strconv.AppendInt(buf, int64(len(s)), 10)
	buf = append(buf, ':')
	return append(buf, s...)
}

func isNonFinite(f float64) bool { return math.IsInf(f, 0) || math.IsNaN(f) }
