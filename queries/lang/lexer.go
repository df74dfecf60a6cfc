package lang

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// tokKind classifies a token.
type tokKind int

const (
	tEOF    tokKind = iota // end of the query
	tErr                   // a lexical error; token.err says which
	tIdent                 // identifier or keyword (keywords are recognised by the parser)
	tNumber                // numeric literal; token.num holds its value
	tString                // string literal; token.str holds its decoded value
	tPunct                 // operator or punctuation; token.text holds it
)

// token is one lexical unit of a query.
type token struct {
	kind tokKind
	text string  // the source text of the token (with quotes for strings)
	str  string  // decoded value of a string literal
	num  float64 // value of a numeric literal
	pos  position
	err  *Error // the lexical error of a tErr token
}

// lexer turns a query into tokens. It tracks lines and columns in
// characters so that errors point where a person reading the query looks.
type lexer struct {
	src  string
	off  int // byte offset of the next character
	line int
	col  int
}

// lex returns the tokens of src. The last token is tEOF, or tErr when src
// holds a lexical error: lexing stops at the first one, and the parser
// reports it when it reaches it, so that an earlier syntax error is reported
// first.
func lex(src string) []token {
	lx := &lexer{src: src, line: 1, col: 1}
	var toks []token
	for {
		t := lx.next()
		toks = append(toks, t)
		if t.kind == tEOF || t.kind == tErr {
			return toks
		}
	}
}

// peek returns the next character without consuming it, and its width
// (0 at the end, 1 with utf8.RuneError for an invalid byte).
func (lx *lexer) peek() (rune, int) {
	if lx.off >= len(lx.src) {
		return 0, 0
	}
	return utf8.DecodeRuneInString(lx.src[lx.off:])
}

// peekAt returns the byte n bytes ahead, or 0 past the end.
func (lx *lexer) peekByte(n int) byte {
	if lx.off+n >= len(lx.src) {
		return 0
	}
	return lx.src[lx.off+n]
}

// advance consumes one character and keeps line and column up to date.
func (lx *lexer) advance() rune {
	r, w := lx.peek()
	if w == 0 {
		return 0
	}
	lx.off += w
	if r == '\n' {
		lx.line++
		lx.col = 1
	} else {
		lx.col++
	}
	return r
}

func (lx *lexer) pos() position { return position{lx.line, lx.col} }

func isIdentStart(r rune) bool { return r == '_' || r == '$' || unicode.IsLetter(r) }
func isIdentPart(r rune) bool  { return isIdentStart(r) || unicode.IsDigit(r) }

// next returns the next token.
func (lx *lexer) next() token {
	for {
		r, w := lx.peek()
		if w == 0 || !unicode.IsSpace(r) || r == utf8.RuneError {
			break
		}
		lx.advance()
	}
	start, pos := lx.off, lx.pos()
	r, w := lx.peek()
	switch {
	case w == 0:
		return token{kind: tEOF, pos: pos}
	case r == utf8.RuneError && w == 1:
		return lx.fail(pos, "unexpected byte 0x%02x (the query is not valid UTF-8)", lx.src[lx.off])
	case isIdentStart(r):
		for {
			r, w := lx.peek()
			if w == 0 || !isIdentPart(r) {
				break
			}
			lx.advance()
		}
		return token{kind: tIdent, text: lx.src[start:lx.off], pos: pos}
	case r >= '0' && r <= '9':
		return lx.number(pos)
	case r == '\'' || r == '"':
		return lx.string(pos, r)
	}
	lx.advance()
	switch r {
	case '(', ')', '[', ']', ',', '.', '*', '+', '-', '/', '%', '=':
	case '<':
		if b := lx.peekByte(0); b == '=' || b == '>' {
			lx.advance()
		}
	case '>':
		if lx.peekByte(0) == '=' {
			lx.advance()
		}
	case '!':
		if lx.peekByte(0) != '=' {
			return lx.fail(pos, "unexpected character '!': expected '!='")
		}
		lx.advance()
	default:
		return lx.fail(pos, "unexpected character %q", r)
	}
	return token{kind: tPunct, text: lx.src[start:lx.off], pos: pos}
}

// fail returns an error token at pos.
func (lx *lexer) fail(pos position, format string, args ...any) token {
	return token{kind: tErr, pos: pos, err: errorAt(pos, format, args...)}
}

// number lexes a decimal (digits, optional fraction, optional exponent) or
// hexadecimal (0x...) literal. A number directly followed by a letter, digit
// or '.' is one malformed token ("12abc", "1.2.3"), not two.
func (lx *lexer) number(pos position) token {
	start := lx.off
	digits := func(ok func(byte) bool) int {
		n := 0
		for ok(lx.peekByte(0)) {
			lx.advance()
			n++
		}
		return n
	}
	isDec := func(b byte) bool { return b >= '0' && b <= '9' }
	isHex := func(b byte) bool { return isDec(b) || (b|0x20 >= 'a' && b|0x20 <= 'f') }
	bad := func(expected string) token {
		// Swallow the rest of the malformed token so the message shows it whole.
		for {
			r, w := lx.peek()
			if w == 0 || !(isIdentPart(r) || r == '.') {
				break
			}
			lx.advance()
		}
		return lx.fail(pos, "invalid number '%s': expected %s", clip(lx.src[start:lx.off]), expected)
	}
	var val float64
	if lx.peekByte(0) == '0' && lx.peekByte(1)|0x20 == 'x' {
		lx.advance()
		lx.advance()
		if digits(isHex) == 0 {
			return bad("a hexadecimal digit after 0x")
		}
		u, err := strconv.ParseUint(lx.src[start+2:lx.off], 16, 64)
		if err != nil {
			return lx.fail(pos, "number %s is out of range: expected at most 16 hexadecimal digits", clip(lx.src[start:lx.off]))
		}
		val = float64(u)
	} else {
		digits(isDec)
		if lx.peekByte(0) == '.' {
			lx.advance()
			if digits(isDec) == 0 {
				return bad("a digit after '.'")
			}
		}
		if lx.peekByte(0)|0x20 == 'e' {
			lx.advance()
			if b := lx.peekByte(0); b == '+' || b == '-' {
				lx.advance()
			}
			if digits(isDec) == 0 {
				return bad("a digit in the exponent")
			}
		}
		f, err := strconv.ParseFloat(lx.src[start:lx.off], 64)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return lx.fail(pos, "number %s is out of range: expected a magnitude below 1.8e308", clip(lx.src[start:lx.off]))
			}
			return bad("a decimal number")
		}
		val = f
	}
	if r, w := lx.peek(); w > 0 && (isIdentPart(r) || r == '.') {
		return bad("a space or an operator after the number")
	}
	return token{kind: tNumber, text: lx.src[start:lx.off], num: val, pos: pos}
}

// string lexes a literal quoted with q (' or "). Escapes: \' \" \\ \/ \b \f
// \n \r \t and \uXXXX (UTF-16 surrogate pairs are combined; a lone surrogate
// becomes U+FFFD). Bytes that are not valid UTF-8 are kept as they are.
func (lx *lexer) string(pos position, q rune) token {
	start := lx.off
	lx.advance()
	var b strings.Builder
	for {
		r, w := lx.peek()
		if w == 0 {
			return lx.fail(pos, "unterminated string: expected a closing %c before the end of the query", q)
		}
		escPos := lx.pos()
		if r == utf8.RuneError && w == 1 {
			b.WriteByte(lx.src[lx.off])
			lx.advance()
			continue
		}
		lx.advance()
		if r == q {
			return token{kind: tString, text: lx.src[start:lx.off], str: b.String(), pos: pos}
		}
		if r != '\\' {
			b.WriteRune(r)
			continue
		}
		e, w := lx.peek()
		if w == 0 {
			return lx.fail(pos, "unterminated string: expected a closing %c before the end of the query", q)
		}
		lx.advance()
		switch e {
		case '\'', '"', '\\', '/':
			b.WriteRune(e)
		case 'b':
			b.WriteByte('\b')
		case 'f':
			b.WriteByte('\f')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case 'u':
			u, ok := lx.hex4()
			if !ok {
				return lx.fail(escPos, `invalid escape in string: expected four hexadecimal digits after \u`)
			}
			r := rune(u)
			if utf16.IsSurrogate(r) && lx.peekByte(0) == '\\' && lx.peekByte(1) == 'u' {
				save := *lx
				lx.advance()
				lx.advance()
				if u2, ok := lx.hex4(); ok && utf16.DecodeRune(r, rune(u2)) != unicode.ReplacementChar {
					r = utf16.DecodeRune(r, rune(u2))
				} else {
					*lx = save
				}
			}
			if utf16.IsSurrogate(r) {
				r = unicode.ReplacementChar
			}
			b.WriteRune(r)
		default:
			return lx.fail(escPos, `invalid escape '\%c' in string: expected one of \' \" \\ \/ \b \f \n \r \t \uXXXX`, e)
		}
	}
}

// hex4 consumes four hexadecimal digits.
func (lx *lexer) hex4() (uint64, bool) {
	if lx.off+4 > len(lx.src) {
		return 0, false
	}
	u, err := strconv.ParseUint(lx.src[lx.off:lx.off+4], 16, 32)
	if err != nil {
		return 0, false
	}
	for range 4 {
		lx.advance()
	}
	return u, true
}

// clip shortens s for an error message.
func clip(s string) string {
	const max = 32
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	r := []rune(s)
	return string(r[:max]) + "..."
}

// describe says what a token is, for "expected X, found Y" messages.
func describe(t token) string {
	switch t.kind {
	case tEOF:
		return "end of query"
	case tNumber:
		return "number " + clip(t.text)
	case tString:
		return "string " + clip(t.text)
	}
	return fmt.Sprintf("'%s'", clip(t.text))
}
