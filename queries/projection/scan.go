package projection

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"unicode/utf8"
)

// Node kinds, one byte each. They prefix value keys in the dictionary, so
// that "1" the number and "1" the string are different values.
const (
	kindNull   byte = 'n'
	kindFalse  byte = 'f'
	kindTrue   byte = 't'
	kindNumber byte = 'd'
	kindString byte = 's'
	kindArray  byte = 'a' // the raw JSON text is the value
	kindObject byte = 'o' // an object node; its members are nodes of their own
)

// maxNesting bounds how deeply the scanner follows objects and arrays, so
// that hostile input cannot exhaust the stack. Twins nest at most 10 levels
// below their sections; the twin package's parser allows 64.
const maxNesting = 64

// errSyntax is wrapped by every scanning error.
var errSyntax = errors.New("malformed JSON")

// scanner reads one JSON document. It validates what it reads (strings,
// numbers, literals, structure), and decodes strings with escapes through
// encoding/json so that the result is exactly what a decoder produces.
type scanner struct {
	b     []byte
	i     int
	depth int
	buf   []byte // scratch for decoded strings
}

func (s *scanner) fail(msg string) error {
	return fmt.Errorf("%w at byte %d: %s", errSyntax, s.i, msg)
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// expect consumes c after optional white space.
func (s *scanner) expect(c byte) error {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != c {
		return s.fail(fmt.Sprintf("expected %q", c))
	}
	s.i++
	return nil
}

// str reads a string at s.i (after white space) and returns its decoded
// bytes, which stay valid until the next call.
func (s *scanner) str() ([]byte, error) {
	s.ws()
	if s.i >= len(s.b) || s.b[s.i] != '"' {
		return nil, s.fail("expected a string")
	}
	start := s.i
	s.i++
	plain := true
	for s.i < len(s.b) {
		s.i += plainRun(s.b[s.i:])
		if s.i >= len(s.b) {
			break
		}
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			if plain {
				return s.b[start+1 : s.i-1], nil
			}
			// Escapes or bytes beyond ASCII that are not valid UTF-8: let
			// encoding/json decode them, as a twin decoder would.
			var v string
			if err := json.Unmarshal(s.b[start:s.i], &v); err != nil {
				return nil, fmt.Errorf("%w at byte %d: %v", errSyntax, start, err)
			}
			s.buf = append(s.buf[:0], v...)
			return s.buf, nil
		case c == '\\':
			plain = false
			s.i += 2
		case c < 0x20:
			return nil, s.fail("control character in a string")
		default: // c >= utf8.RuneSelf
			r, n := utf8.DecodeRune(s.b[s.i:])
			if r == utf8.RuneError && n == 1 {
				plain = false
			}
			s.i += n
		}
	}
	return nil, s.fail("unterminated string")
}

// skipStr skips a string at s.i without decoding or validating its
// contents (only its end matters): for parts the projection does not keep.
func (s *scanner) skipStr() error {
	s.i++ // the opening quote
	for {
		j := bytes.IndexByte(s.b[s.i:], '"')
		if j < 0 {
			return s.fail("unterminated string")
		}
		s.i += j + 1
		bs := 0
		for k := s.i - 2; k >= 0 && s.b[k] == '\\'; k-- {
			bs++
		}
		if bs%2 == 0 {
			return nil
		}
	}
}

// plainRun returns how many leading bytes of b need no attention in a
// string: not '"', not '\\', not a control character, ASCII. It looks at
// eight bytes at a time.
func plainRun(b []byte) int {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	i := 0
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		q := x ^ (ones * '"')
		bs := x ^ (ones * '\\')
		// A byte is special when it is 0x80 or more, below 0x20, or equal
		// to '"' or '\\' (a zero byte of q or bs).
		special := (x | ((x - ones*0x20) & ^x) | ((q - ones) & ^q) | ((bs - ones) & ^bs)) & highs
		if special != 0 {
			return i + bits.TrailingZeros64(special)/8
		}
	}
	for ; i < len(b); i++ {
		if c := b[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			return i
		}
	}
	return i
}

// number reads a number and returns its text.
func (s *scanner) number() ([]byte, error) {
	start := s.i
	b := s.b
	i := s.i
	if i < len(b) && b[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case digits() == 0:
		s.i = i
		return nil, s.fail("expected a digit")
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			s.i = i
			return nil, s.fail("expected a digit after '.'")
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			s.i = i
			return nil, s.fail("expected a digit in the exponent")
		}
	}
	s.i = i
	return b[start:i], nil
}

func (s *scanner) literal(word string) error {
	if len(s.b)-s.i < len(word) || string(s.b[s.i:s.i+len(word)]) != word {
		return s.fail("invalid literal")
	}
	s.i += len(word)
	return nil
}

// skip reads and validates any value, returning its kind.
func (s *scanner) skip() (byte, error) {
	s.ws()
	if s.i >= len(s.b) {
		return 0, s.fail("expected a value")
	}
	switch c := s.b[s.i]; {
	case c == '{':
		return kindObject, s.members(func(*scanner, []byte) error {
			_, err := s.skip()
			return err
		})
	case c == '[':
		return kindArray, s.elements()
	case c == '"':
		return kindString, s.skipStr()
	case c == 't':
		return kindTrue, s.literal("true")
	case c == 'f':
		return kindFalse, s.literal("false")
	case c == 'n':
		return kindNull, s.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		_, err := s.number()
		return kindNumber, err
	}
	return 0, s.fail("expected a value")
}

// members reads an object at s.i, calling member for each key with the
// scanner positioned before the value; member must consume the value. The
// key bytes are only valid until the value is read.
func (s *scanner) members(member func(s *scanner, key []byte) error) error {
	if err := s.expect('{'); err != nil {
		return err
	}
	if s.depth++; s.depth > maxNesting {
		return s.fail("nested too deeply")
	}
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == '}' {
		s.i++
		s.depth--
		return nil
	}
	for {
		key, err := s.str()
		if err != nil {
			return err
		}
		if err := s.expect(':'); err != nil {
			return err
		}
		if err := member(s, key); err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) {
			return s.fail("unterminated object")
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case '}':
			s.i++
			s.depth--
			return nil
		default:
			return s.fail("expected ',' or '}'")
		}
	}
}

func (s *scanner) elements() error {
	if err := s.expect('['); err != nil {
		return err
	}
	if s.depth++; s.depth > maxNesting {
		return s.fail("nested too deeply")
	}
	s.ws()
	if s.i < len(s.b) && s.b[s.i] == ']' {
		s.i++
		s.depth--
		return nil
	}
	for {
		if _, err := s.skip(); err != nil {
			return err
		}
		s.ws()
		if s.i >= len(s.b) {
			return s.fail("unterminated array")
		}
		switch s.b[s.i] {
		case ',':
			s.i++
		case ']':
			s.i++
			s.depth--
			return nil
		default:
			return s.fail("expected ',' or ']'")
		}
	}
}

// end checks that only white space follows the document.
func (s *scanner) end() error {
	s.ws()
	if s.i != len(s.b) {
		return s.fail("trailing data")
	}
	return nil
}

// emitFunc receives one node of a twin: its dotted path, its kind and its
// value (the decoded string, the number's text, the array's JSON text, or
// nothing). Both slices are only valid during the call.
type emitFunc func(path []byte, kind byte, raw []byte) error

// flatten walks a twin document (an object) and emits every node below the
// root in document order, parents before their members. The $metadata of
// properties.desired and properties.reported is skipped: queries that read
// it decode the twin instead. Arrays are single nodes (paths cannot index
// into them).
func flatten(doc []byte, emit emitFunc) error {
	s := &scanner{b: doc}
	path := make([]byte, 0, 128)
	if err := s.object(&path, emit); err != nil {
		return err
	}
	return s.end()
}

// object reads the members of an object whose path is *path ("" for the root).
func (s *scanner) object(path *[]byte, emit emitFunc) error {
	base := len(*path)
	section := isSection(*path)
	return s.members(func(s *scanner, key []byte) error {
		if section && string(key) == "$metadata" {
			_, err := s.skip()
			return err
		}
		p := *path
		if base > 0 {
			p = append(p, '.')
		}
		p = append(p, key...)
		*path = p
		defer func() { *path = (*path)[:base] }()
		s.ws()
		if s.i >= len(s.b) {
			return s.fail("expected a value")
		}
		switch c := s.b[s.i]; {
		case c == '{':
			if err := emit(*path, kindObject, nil); err != nil {
				return err
			}
			return s.object(path, emit)
		case c == '[':
			start := s.i
			if err := s.elements(); err != nil {
				return err
			}
			return emit(*path, kindArray, s.b[start:s.i])
		case c == '"':
			v, err := s.str()
			if err != nil {
				return err
			}
			return emit(*path, kindString, v)
		case c == '-' || (c >= '0' && c <= '9'):
			v, err := s.number()
			if err != nil {
				return err
			}
			return emit(*path, kindNumber, v)
		}
		k, err := s.skip()
		if err != nil {
			return err
		}
		return emit(*path, k, nil)
	})
}

// isSection reports whether path is properties.desired or properties.reported.
func isSection(path []byte) bool {
	return string(path) == "properties.desired" || string(path) == "properties.reported"
}

// recordFields extracts from a twin record (pipeline.Record's JSON) the twin
// document's bytes (a sub-slice of rec, nil when absent or null) and whether
// the record is a deletion tombstone.
func recordFields(rec []byte) (twinJSON []byte, deleted bool, err error) {
	s := &scanner{b: rec}
	err = s.members(func(s *scanner, key []byte) error {
		switch string(key) {
		case "twin":
			s.ws()
			start := s.i
			k, err := s.skip()
			if err != nil {
				return err
			}
			if k == kindObject {
				twinJSON = s.b[start:s.i]
			}
			return nil
		case "deleted":
			k, err := s.skip()
			deleted = k == kindTrue
			return err
		}
		_, err := s.skip()
		return err
	})
	if err == nil {
		err = s.end()
	}
	return twinJSON, deleted, err
}
