package twin

import (
	"errors"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrInvalid is the sentinel every *Error matches with errors.Is: the twin
// document or patch broke one of the rules of the Azure IoT Hub twin model.
// It is the client's fault: protocol edges answer it with a 400 (IoT Hub's
// errorCode 400004 over HTTP, status 400 over MQTT).
var ErrInvalid = errors.New("invalid twin document or patch")

// The rules an *Error can name. They are stable strings, safe to show to
// users and to use as metric label values.
const (
	// RuleJSON: the input is not strict JSON (syntax, UTF-8, lone surrogate
	// escapes, duplicate keys, overflowing numbers, nesting beyond
	// MaxJSONNesting, trailing data, empty input).
	RuleJSON = "json"
	// RuleKey: a property key is empty, not UTF-8, longer than MaxKeyBytes,
	// or contains '.', '$', space or a control character.
	RuleKey = "key"
	// RuleValue: a value has a type the twin model does not hold, a null
	// where only patches may carry one, a non-finite or malformed number, or
	// a string that is not UTF-8.
	RuleValue = "value"
	// RuleArrayNull: a null appears somewhere inside an array.
	RuleArrayNull = "array-null"
	// RuleInteger: an integer lies outside MinInteger..MaxInteger.
	RuleInteger = "integer-range"
	// RuleString: a string value is longer than MaxStringBytes.
	RuleString = "string-length"
	// RuleDepth: objects and arrays nest more than MaxDepth levels below a
	// section root.
	RuleDepth = "depth"
	// RuleSize: a section would exceed its size limit (MaxTagsSize,
	// MaxDesiredSize, MaxReportedSize) after the change.
	RuleSize = "size"
	// RuleShape: a document is well-formed JSON of the wrong shape, e.g. a
	// top-level array where an object is required, or a twin field of the
	// wrong type.
	RuleShape = "shape"
)

// Error is a rule violation. Path is the dotted path of the offending node
// ("properties.desired.a.b", "tags.x[2]"; the section roots are "tags",
// "properties.desired" and "properties.reported"; for RuleJSON the path is
// relative to the parsed document and "" is its root). A key that is not a
// valid key itself is written in brackets as a Go-quoted string, so a path
// stays unambiguous and printable: `tags["a.b"]`, `tags["\x00"]`.
type Error struct {
	Rule string // one of the Rule* constants
	Path string // where the violation is
	Msg  string // what is wrong, with the limit that applies
}

// Error renders the violation, e.g.
// `twin: key rule violated at tags["a$"]: key contains '$'; keys may not contain '.', '$', space or control characters`.
func (e *Error) Error() string {
	if e.Path == "" {
		return "twin: " + e.Rule + " rule violated: " + e.Msg
	}
	return "twin: " + e.Rule + " rule violated at " + e.Path + ": " + e.Msg
}

// Is reports whether target is ErrInvalid, so callers can classify every
// rule violation with errors.Is(err, ErrInvalid).
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// Section root paths, as they appear in Error.Path.
const (
	pathTags     = "tags"
	pathDesired  = "properties.desired"
	pathReported = "properties.reported"
)

// joinKey returns the path of key under parent. Valid keys are joined with a
// dot; anything else is bracketed and quoted (see Error).
func joinKey(parent, key string) string {
	if keyProblem(key) != "" {
		return parent + "[" + strconv.Quote(key) + "]"
	}
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// joinIndex returns the path of element i of the array at parent.
func joinIndex(parent string, i int) string {
	return parent + "[" + strconv.Itoa(i) + "]"
}

// keyProblem returns why key is not a valid property key (§2.1), or "" when
// it is valid.
func keyProblem(key string) string {
	if key == "" {
		return "key is empty"
	}
	if !utf8.ValidString(key) {
		return "key is not valid UTF-8"
	}
	if len(key) > MaxKeyBytes {
		return "key is " + strconv.Itoa(len(key)) + " bytes; the limit is " + strconv.Itoa(MaxKeyBytes)
	}
	for _, r := range key {
		var what string
		switch {
		case r == '.' || r == '$':
			what = "'" + string(r) + "'"
		case r == ' ':
			what = "a space"
		case isControl(r):
			what = "control character " + uPlus(r)
		default:
			continue
		}
		return "key contains " + what + "; keys may not contain '.', '$', space or control characters"
	}
	return ""
}

// isControl reports whether r is a Unicode control character: C0
// (U+0000–U+001F), DEL (U+007F) or C1 (U+0080–U+009F).
func isControl(r rune) bool {
	return r < 0x20 || (r >= 0x7f && r <= 0x9f)
}

// uPlus renders r as U+XXXX.
func uPlus(r rune) string {
	h := strings.ToUpper(strconv.FormatInt(int64(r), 16))
	return "U+" + strings.Repeat("0", max(0, 4-len(h))) + h
}
