package twin

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// MaxJSONNesting is how deeply ParseJSON lets objects and arrays nest; a
// top-level object or array is level 1. It bounds the parser's recursion, so
// hostile input can never exhaust the stack.
const MaxJSONNesting = 64

// ParseJSON parses data as strict JSON (RFC 8259) into map[string]any, []any,
// string, json.Number, bool and nil. It is stricter than encoding/json:
// invalid UTF-8, escaped lone surrogates, duplicate object keys, numbers that
// overflow float64 (kept otherwise verbatim as json.Number), nesting deeper
// than MaxJSONNesting, trailing data and empty input are all rejected. Every
// error is an *Error with RuleJSON whose Msg gives the byte offset.
func ParseJSON(data []byte) (any, error) {
	p := parser{data: data}
	p.skipSpace()
	if p.pos >= len(p.data) {
		return nil, p.fail(p.pos, "empty input")
	}
	v, err := p.value()
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos < len(p.data) {
		return nil, p.fail(p.pos, "trailing data "+quoteByte(p.data[p.pos])+" after the top-level value")
	}
	return v, nil
}

// ParseObject is ParseJSON requiring a top-level object; any other top-level
// value is an *Error with RuleShape.
func ParseObject(data []byte) (map[string]any, error) {
	v, err := ParseJSON(data)
	if err != nil {
		return nil, err
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, &Error{Rule: RuleShape, Msg: "top-level value is " + kindOf(v) + "; an object is required"}
	}
	return m, nil
}

// parser is a recursive-descent JSON parser over one input. path holds the
// segments of the node being parsed, used only to build error paths.
type parser struct {
	data  []byte
	pos   int
	depth int
	path  []pathSeg
}

// pathSeg is one step of a path: an object key, or an array index when
// isIndex is set.
type pathSeg struct {
	key     string
	index   int
	isIndex bool
}

func (p *parser) pathString() string {
	s := ""
	for _, seg := range p.path {
		if seg.isIndex {
			s = joinIndex(s, seg.index)
		} else {
			s = joinKey(s, seg.key)
		}
	}
	return s
}

// fail returns a RuleJSON error at byte offset off.
func (p *parser) fail(off int, msg string) *Error {
	return &Error{Rule: RuleJSON, Path: p.pathString(), Msg: "byte offset " + strconv.Itoa(off) + ": " + msg}
}

func (p *parser) skipSpace() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

// value parses the value starting at p.pos (after white space).
func (p *parser) value() (any, error) {
	if p.pos >= len(p.data) {
		return nil, p.fail(p.pos, "unexpected end of input; a value is expected")
	}
	switch c := p.data[p.pos]; {
	case c == '{':
		return p.object()
	case c == '[':
		return p.array()
	case c == '"':
		return p.str()
	case c == 't':
		return true, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == 'n':
		return nil, p.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	default:
		return nil, p.fail(p.pos, "invalid character "+quoteByte(c)+"; a value is expected")
	}
}

func (p *parser) literal(word string) error {
	end := p.pos + len(word)
	if end > len(p.data) || string(p.data[p.pos:end]) != word {
		return p.fail(p.pos, "invalid literal; "+strconv.Quote(word)+" is expected")
	}
	p.pos = end
	return nil
}

func (p *parser) enter() error {
	p.depth++
	if p.depth > MaxJSONNesting {
		return p.fail(p.pos, "nesting is deeper than "+strconv.Itoa(MaxJSONNesting)+" levels")
	}
	return nil
}

func (p *parser) object() (any, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	p.pos++ // '{'
	m := map[string]any{}
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		return m, nil
	}
	for {
		p.skipSpace()
		if p.pos >= len(p.data) {
			return nil, p.fail(p.pos, "unexpected end of input; an object key is expected")
		}
		if p.data[p.pos] != '"' {
			return nil, p.fail(p.pos, "invalid character "+quoteByte(p.data[p.pos])+"; an object key (string) is expected")
		}
		keyOff := p.pos
		k, err := p.str()
		if err != nil {
			return nil, err
		}
		if _, dup := m[k]; dup {
			return nil, p.fail(keyOff, "duplicate object key "+strconv.Quote(k))
		}
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != ':' {
			return nil, p.fail(p.pos, "':' is expected after an object key")
		}
		p.pos++
		p.skipSpace()
		p.path = append(p.path, pathSeg{key: k})
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		p.path = p.path[:len(p.path)-1]
		m[k] = v
		p.skipSpace()
		if p.pos >= len(p.data) {
			return nil, p.fail(p.pos, "unexpected end of input; ',' or '}' is expected")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case '}':
			p.pos++
			return m, nil
		default:
			return nil, p.fail(p.pos, "invalid character "+quoteByte(p.data[p.pos])+"; ',' or '}' is expected")
		}
	}
}

func (p *parser) array() (any, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	p.pos++ // '['
	a := []any{}
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		return a, nil
	}
	for {
		p.skipSpace()
		p.path = append(p.path, pathSeg{index: len(a), isIndex: true})
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		p.path = p.path[:len(p.path)-1]
		a = append(a, v)
		p.skipSpace()
		if p.pos >= len(p.data) {
			return nil, p.fail(p.pos, "unexpected end of input; ',' or ']' is expected")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case ']':
			p.pos++
			return a, nil
		default:
			return nil, p.fail(p.pos, "invalid character "+quoteByte(p.data[p.pos])+"; ',' or ']' is expected")
		}
	}
}

// str parses a string starting at the opening quote.
func (p *parser) str() (string, error) {
	p.pos++ // '"'
	start := p.pos
	var buf []byte // nil until the first escape
	for {
		if p.pos >= len(p.data) {
			return "", p.fail(p.pos, "unexpected end of input inside a string")
		}
		c := p.data[p.pos]
		switch {
		case c == '"':
			var s string
			if buf == nil {
				s = string(p.data[start:p.pos])
			} else {
				s = string(append(buf, p.data[start:p.pos]...))
			}
			p.pos++
			return s, nil
		case c == '\\':
			buf = append(buf, p.data[start:p.pos]...)
			var err error
			if buf, err = p.escape(buf); err != nil {
				return "", err
			}
			start = p.pos
		case c < 0x20:
			return "", p.fail(p.pos, "control character "+uPlus(rune(c))+" in a string must be escaped")
		case c < utf8.RuneSelf:
			p.pos++
		default:
			r, size := utf8.DecodeRune(p.data[p.pos:])
			if r == utf8.RuneError && size <= 1 {
				return "", p.fail(p.pos, "invalid UTF-8 in a string")
			}
			p.pos += size
		}
	}
}

// escape decodes the escape sequence at p.pos (at the backslash), appends
// its UTF-8 form to buf and moves past it.
func (p *parser) escape(buf []byte) ([]byte, error) {
	off := p.pos
	if p.pos+1 >= len(p.data) {
		return nil, p.fail(off, "unexpected end of input inside an escape sequence")
	}
	c := p.data[p.pos+1]
	p.pos += 2
	switch c {
	case '"', '\\', '/':
		return append(buf, c), nil
	case 'b':
		return append(buf, '\b'), nil
	case 'f':
		return append(buf, '\f'), nil
	case 'n':
		return append(buf, '\n'), nil
	case 'r':
		return append(buf, '\r'), nil
	case 't':
		return append(buf, '\t'), nil
	case 'u':
	default:
		return nil, p.fail(off, "invalid escape sequence: a backslash followed by "+quoteByte(c))
	}
	r, ok := hex4(p.data, p.pos)
	if !ok {
		return nil, p.fail(off, "invalid \\u escape; four hex digits are expected")
	}
	p.pos += 4
	switch {
	case r >= 0xdc00 && r <= 0xdfff:
		return nil, p.fail(off, "lone low surrogate "+uEscape(r))
	case r >= 0xd800 && r <= 0xdbff:
		if p.pos+1 >= len(p.data) || p.data[p.pos] != '\\' || p.data[p.pos+1] != 'u' {
			return nil, p.fail(off, "lone high surrogate "+uEscape(r))
		}
		lo, ok := hex4(p.data, p.pos+2)
		if !ok || lo < 0xdc00 || lo > 0xdfff {
			return nil, p.fail(off, "lone high surrogate "+uEscape(r))
		}
		p.pos += 6
		r = 0x10000 + (r-0xd800)<<10 + (lo - 0xdc00)
	}
	return utf8.AppendRune(buf, r), nil
}

// hex4 decodes the four hex digits at data[i:].
func hex4(data []byte, i int) (rune, bool) {
	if i+4 > len(data) {
		return 0, false
	}
	var r rune
	for _, c := range data[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

func (p *parser) number() (any, error) {
	start := p.pos
	end, problem := scanNumber(p.data, start)
	if problem != "" {
		return nil, p.fail(end, problem)
	}
	p.pos = end
	s := string(p.data[start:end])
	if _, err := strconv.ParseFloat(s, 64); err != nil {
		return nil, p.fail(start, "number "+s+" overflows float64")
	}
	return json.Number(s), nil
}

// scanNumber scans the JSON number at s[i:] and returns where it ends, or a
// non-empty problem and where the problem is.
func scanNumber[T string | []byte](s T, i int) (end int, problem string) {
	digits := func() int {
		n := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i >= len(s) || s[i] < '0' || s[i] > '9':
		return i, "a digit is expected in a number"
	case s[i] == '0':
		i++
		if i < len(s) && s[i] >= '0' && s[i] <= '9' {
			return i, "leading zero in a number"
		}
	default:
		digits()
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return i, "a digit is expected after the decimal point"
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return i, "a digit is expected in the exponent"
		}
	}
	return i, ""
}

// validNumber reports whether s is exactly one JSON number.
func validNumber(s string) bool {
	end, problem := scanNumber(s, 0)
	return problem == "" && end == len(s)
}

func quoteByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return strconv.QuoteRune(rune(c))
	}
	return "byte 0x" + string([]byte{hexDigits[c>>4], hexDigits[c&0xf]})
}

// uEscape renders a UTF-16 code unit as a \uXXXX escape.
func uEscape(r rune) string {
	return `\u` + string([]byte{hexDigits[r>>12&0xf], hexDigits[r>>8&0xf], hexDigits[r>>4&0xf], hexDigits[r&0xf]})
}

// kindOf names the JSON kind of v, for messages.
func kindOf(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	default:
		return fmt.Sprintf("a %T", v)
	}
}

// appendValue appends the JSON form of v: map keys sorted, json.Number
// verbatim, strings escaped as encoding/json escapes them. Go integers and
// floats are accepted and written as encoding/json writes them. It fails on
// any other type, on a malformed json.Number and on non-finite floats.
func appendValue(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, v), nil
	case string:
		return appendString(b, v), nil
	case json.Number:
		if !validNumber(string(v)) {
			return nil, fmt.Errorf("twin: cannot render json.Number %q: not a JSON number", string(v))
		}
		return append(b, v...), nil
	case map[string]any:
		b = append(b, '{')
		for i, k := range sortedKeys(v) {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			var err error
			if b, err = appendValue(b, v[k]); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	case []any:
		b = append(b, '[')
		for i, e := range v {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendValue(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	}
	if n, ok := goNumber(v); ok {
		if n == "" {
			return nil, fmt.Errorf("twin: cannot render %v: not a finite number", v)
		}
		return append(b, n...), nil
	}
	return nil, fmt.Errorf("twin: cannot render a value of type %T", v)
}

// goNumber converts a Go integer or float to its JSON text as encoding/json
// writes it. ok is false for other types; the text is "" for NaN and ±Inf.
func goNumber(v any) (text string, ok bool) {
	switch v := v.(type) {
	case int:
		return strconv.FormatInt(int64(v), 10), true
	case int8:
		return strconv.FormatInt(int64(v), 10), true
	case int16:
		return strconv.FormatInt(int64(v), 10), true
	case int32:
		return strconv.FormatInt(int64(v), 10), true
	case int64:
		return strconv.FormatInt(v, 10), true
	case uint:
		return strconv.FormatUint(uint64(v), 10), true
	case uint8:
		return strconv.FormatUint(uint64(v), 10), true
	case uint16:
		return strconv.FormatUint(uint64(v), 10), true
	case uint32:
		return strconv.FormatUint(uint64(v), 10), true
	case uint64:
		return strconv.FormatUint(v, 10), true
	case float32:
		return floatText(float64(v), 32), true
	case float64:
		return floatText(v, 64), true
	}
	return "", false
}

func floatText(f float64, bits int) string {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return ""
	}
	var b []byte
	var err error
	if bits == 32 {
		b, err = json.Marshal(float32(f))
	} else {
		b, err = json.Marshal(f)
	}
	if err != nil {
		return ""
	}
	return string(b)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string escaped exactly as encoding/json's
// Marshal escapes it (HTML-safe: '<', '>' and '&' become \u003c, \u003e,
// \u0026; U+2028 and U+2029 are escaped; invalid UTF-8 becomes U+FFFD).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// sortedKeys returns m's keys in byte order, the order of every rendering
// and of validation (so that the violation reported is deterministic).
func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
