package lang

import (
	"math"
	"strings"
	"unicode/utf8"
)

// MaxQueryLength is the longest query accepted, in characters, as in IoT Hub.
const MaxQueryLength = 8192

// maxDepth bounds the nesting of parentheses, NOTs, signs and arrays, so
// that a hostile query gets an error instead of deep recursion.
const maxDepth = 128

// maxTop bounds TOP n.
const maxTop = math.MaxInt32

// systemProperties maps the lower-case spelling of each top-level twin
// property that IoT Hub resolves case-insensitively to its canonical
// spelling.
var systemProperties = func() map[string]string {
	m := map[string]string{}
	for _, s := range []string{
		"deviceId", "moduleId", "etag", "deviceEtag", "version", "status", "statusReason",
		"statusUpdateTime", "connectionState", "lastActivityTime", "cloudToDeviceMessageCount",
		"authenticationType", "x509Thumbprint", "modelId", "capabilities", "configurations",
		"deviceScope", "parentScopes", "tags", "properties",
	} {
		m[strings.ToLower(s)] = s
	}
	return m
}()

// reserved are the keywords that cannot start a path or be an alias. After
// a '.' any identifier is a property name, so tags.group works.
var reserved = map[string]bool{
	"SELECT": true, "TOP": true, "FROM": true, "WHERE": true, "GROUP": true, "ORDER": true,
	"BY": true, "ASC": true, "DESC": true, "AS": true, "AND": true, "OR": true, "NOT": true,
	"IN": true, "NIN": true, "TRUE": true, "FALSE": true, "NULL": true, "UNDEFINED": true,
}

// functions maps each scalar function to its number of arguments.
var functions = map[string]int{"IS_DEFINED": 1, "IS_NULL": 1, "STARTSWITH": 2, "ENDSWITH": 2}

// aggregates are the aggregate functions, allowed only as whole select items.
var aggregates = map[string]bool{"COUNT": true, "AVG": true, "SUM": true, "MIN": true, "MAX": true}

// Parse parses a query. Every error it returns is an *Error that matches
// ErrQuery and says where the problem is and what was expected there.
func Parse(src string) (q *Query, err error) {
	if n := utf8.RuneCountInString(src); n > MaxQueryLength {
		return nil, errorAt(positionOfRune(src, MaxQueryLength), "query is %d characters long: expected at most %d", n, MaxQueryLength)
	}
	p := &parser{toks: lex(src)}
	// The parser stops at the first error by panicking with a bailout, which
	// is caught here and only here; any other panic is a bug and goes on.
	defer func() {
		if r := recover(); r != nil {
			b, ok := r.(bailout)
			if !ok {
				panic(r)
			}
			q, err = nil, b.err
		}
	}()
	q = p.query()
	pl, err := q.prepare()
	if err != nil {
		return nil, err
	}
	for i := range q.Select {
		q.Select[i].Name = pl.names[i]
	}
	for i, o := range pl.order {
		if o.item >= 0 {
			q.OrderBy[i].Alias = pl.names[o.item]
		}
	}
	return q, nil
}

// positionOfRune returns the position of the character after the first n.
func positionOfRune(src string, n int) position {
	pos := position{1, 1}
	for _, r := range src {
		if n == 0 {
			break
		}
		n--
		if r == '\n' {
			pos.line++
			pos.col = 1
		} else {
			pos.col++
		}
	}
	return pos
}

// bailout carries a parse error up to Parse.
type bailout struct{ err *Error }

// parser is a recursive-descent parser over the token slice.
type parser struct {
	toks  []token
	i     int
	depth int
}

func (p *parser) tok() token { return p.toks[p.i] }

func (p *parser) peek() token {
	if p.i+1 < len(p.toks) {
		return p.toks[p.i+1]
	}
	return p.toks[p.i]
}

func (p *parser) advance() {
	if p.i < len(p.toks)-1 {
		p.i++
	}
}

// isKw reports whether the current token is the keyword kw (upper case).
func (p *parser) isKw(kw string) bool {
	t := p.tok()
	return t.kind == tIdent && strings.EqualFold(t.text, kw)
}

func (p *parser) isPunct(s string) bool {
	t := p.tok()
	return t.kind == tPunct && t.text == s
}

// fail stops parsing with an error at the current token.
func (p *parser) fail(format string, args ...any) {
	t := p.tok()
	if t.kind == tErr {
		panic(bailout{t.err})
	}
	panic(bailout{errorAt(t.pos, format, args...)})
}

// expected stops parsing with "expected <what>, found <current token>", or
// with the lexical error when the current token is one.
func (p *parser) expected(what string) {
	p.fail("expected %s, found %s", what, describe(p.tok()))
}

func (p *parser) expectKw(kw, what string) {
	if !p.isKw(kw) {
		p.expected(what)
	}
	p.advance()
}

func (p *parser) expectPunct(s, what string) {
	if !p.isPunct(s) {
		p.expected(what)
	}
	p.advance()
}

// enter guards recursion; each call is paired with leave.
func (p *parser) enter() {
	p.depth++
	if p.depth > maxDepth {
		p.fail("expression nested too deeply: expected at most %d levels of parentheses, NOT, signs or arrays", maxDepth)
	}
}

func (p *parser) leave() { p.depth-- }

// query parses a whole query.
func (p *parser) query() *Query {
	q := &Query{}
	p.expectKw("SELECT", "SELECT")
	if p.isKw("TOP") {
		p.advance()
		t := p.tok()
		if t.kind != tNumber || t.num < 1 || t.num > maxTop || t.num != math.Trunc(t.num) {
			p.expected("a whole number from 1 to 2147483647 after TOP")
		}
		q.Top = int(t.num)
		p.advance()
	}
	if p.isPunct("*") {
		q.Star = true
		p.advance()
		p.expectKw("FROM", "FROM")
	} else {
		for {
			q.Select = append(q.Select, p.selectItem())
			if !p.isPunct(",") {
				break
			}
			p.advance()
		}
		if !p.isKw("FROM") {
			last := q.Select[len(q.Select)-1]
			if last.Alias != "" {
				p.expected("',' or FROM")
			}
			if _, ok := last.Expr.(*Aggregate); ok {
				p.expected("AS, ',' or FROM")
			}
			p.expected("an operator, AS, ',' or FROM")
		}
		p.advance()
	}
	p.from(q)
	next := "WHERE, GROUP BY, ORDER BY or end of query"
	if p.isKw("WHERE") {
		p.advance()
		q.Where = p.expr()
		next = "an operator, GROUP BY, ORDER BY or end of query"
	}
	if p.isKw("GROUP") {
		q.groupPos = p.tok().pos
		p.advance()
		p.expectKw("BY", "BY after GROUP")
		for {
			q.GroupBy = append(q.GroupBy, *p.pathOnly("a property path in GROUP BY"))
			if !p.isPunct(",") {
				break
			}
			p.advance()
		}
		next = "',', ORDER BY or end of query"
	}
	if p.isKw("ORDER") {
		p.advance()
		p.expectKw("BY", "BY after ORDER")
		for {
			it := OrderItem{pos: p.tok().pos}
			if t := p.tok(); t.kind == tIdent && p.peek().text != "." {
				it.raw = t.text
			}
			it.Path = *p.pathOnly("a property path or alias in ORDER BY")
			next = "ASC, DESC, ',' or end of query"
			if p.isKw("ASC") || p.isKw("DESC") {
				it.Desc = p.isKw("DESC")
				p.advance()
				next = "',' or end of query"
			}
			q.OrderBy = append(q.OrderBy, it)
			if !p.isPunct(",") {
				break
			}
			p.advance()
		}
	}
	if p.tok().kind != tEOF {
		p.expected(next)
	}
	return q
}

// from parses the collection after FROM: devices, or devices.modules.
func (p *parser) from(q *Query) {
	t := p.tok()
	if t.kind != tIdent || !strings.EqualFold(t.text, "devices") {
		if t.kind == tIdent {
			p.fail("only FROM devices and FROM devices.modules are supported, found '%s'", clip(t.text))
		}
		p.expected("devices after FROM")
	}
	p.advance()
	if p.isPunct(".") {
		name := t.text
		for p.isPunct(".") {
			p.advance()
			name += "."
			if p.tok().kind != tIdent {
				break
			}
			name += p.tok().text
			p.advance()
		}
		if !strings.EqualFold(name, "devices.modules") {
			panic(bailout{errorAt(t.pos, "only FROM devices and FROM devices.modules are supported, found '%s'", clip(name))})
		}
		q.Modules = true
	}
}

// selectItem parses one projection or aggregate with its optional alias.
func (p *parser) selectItem() SelectItem {
	it := SelectItem{pos: p.tok().pos}
	if t := p.tok(); t.kind == tIdent && aggregates[strings.ToUpper(t.text)] && p.peek().text == "(" && p.peek().kind == tPunct {
		it.Expr = p.aggregate()
	} else {
		it.Expr = p.expr()
	}
	if p.isKw("AS") {
		p.advance()
		t := p.tok()
		if t.kind != tIdent || reserved[strings.ToUpper(t.text)] {
			p.expected("a name after AS")
		}
		it.Alias = t.text
		p.advance()
	}
	return it
}

// aggregate parses COUNT() or AVG/SUM/MIN/MAX(expr).
func (p *parser) aggregate() *Aggregate {
	a := &Aggregate{Func: strings.ToUpper(p.tok().text)}
	p.advance()
	p.advance() // '('
	if a.Func == "COUNT" {
		p.expectPunct(")", "')' after COUNT( (COUNT takes no argument)")
		return a
	}
	a.Arg = p.expr()
	p.expectPunct(")", "')' after the argument of "+a.Func)
	return a
}

// expr parses a full expression: OR has the lowest precedence, then AND,
// NOT, comparisons (including IN and NIN), + and -, * / and %, unary signs.
func (p *parser) expr() Expr {
	p.enter()
	defer p.leave()
	l := p.and()
	for p.isKw("OR") {
		p.advance()
		l = &Binary{Op: OpOr, Left: l, Right: p.and()}
	}
	return l
}

func (p *parser) and() Expr {
	l := p.not()
	for p.isKw("AND") {
		p.advance()
		l = &Binary{Op: OpAnd, Left: l, Right: p.not()}
	}
	return l
}

func (p *parser) not() Expr {
	if !p.isKw("NOT") {
		return p.comparison()
	}
	p.enter()
	defer p.leave()
	p.advance()
	return &Unary{Op: OpNot, X: p.not()}
}

var comparisonOps = map[string]Op{"=": OpEq, "!=": OpNe, "<>": OpNe, "<": OpLt, "<=": OpLe, ">": OpGt, ">=": OpGe}

func (p *parser) comparison() Expr {
	l := p.additive()
	for {
		if t := p.tok(); t.kind == tPunct {
			if op, ok := comparisonOps[t.text]; ok {
				p.advance()
				l = &Binary{Op: op, Left: l, Right: p.additive()}
				continue
			}
		}
		if p.isKw("IN") || p.isKw("NIN") {
			negate := p.isKw("NIN")
			kw := strings.ToUpper(p.tok().text)
			p.advance()
			if !p.isPunct("[") {
				p.expected("'[' after " + kw)
			}
			l = &In{X: l, Values: p.array(), Negate: negate}
			continue
		}
		return l
	}
}

func (p *parser) additive() Expr {
	l := p.multiplicative()
	for p.isPunct("+") || p.isPunct("-") {
		op := OpAdd
		if p.isPunct("-") {
			op = OpSub
		}
		p.advance()
		l = &Binary{Op: op, Left: l, Right: p.multiplicative()}
	}
	return l
}

func (p *parser) multiplicative() Expr {
	l := p.unary()
	for p.isPunct("*") || p.isPunct("/") || p.isPunct("%") {
		op := map[string]Op{"*": OpMul, "/": OpDiv, "%": OpMod}[p.tok().text]
		p.advance()
		l = &Binary{Op: op, Left: l, Right: p.unary()}
	}
	return l
}

// unary parses a signed operand; a sign applied to a number literal is
// folded into the literal, so "-5" is the Literal -5.
func (p *parser) unary() Expr {
	if !p.isPunct("-") && !p.isPunct("+") {
		return p.primary()
	}
	p.enter()
	defer p.leave()
	op := OpPos
	if p.isPunct("-") {
		op = OpNeg
	}
	p.advance()
	x := p.unary()
	if l, ok := x.(*Literal); ok {
		if f, ok := l.Value.(float64); ok && !l.Undefined {
			if op == OpNeg {
				f = -f
			}
			return &Literal{Value: f}
		}
	}
	return &Unary{Op: op, X: x}
}

// primary parses a literal, path, function call, array or parenthesised
// expression.
func (p *parser) primary() Expr {
	t := p.tok()
	switch t.kind {
	case tNumber:
		p.advance()
		return &Literal{Value: t.num}
	case tString:
		p.advance()
		return &Literal{Value: t.str}
	case tPunct:
		switch t.text {
		case "(":
			p.advance() // expr guards the depth
			x := p.expr()
			p.expectPunct(")", "')' or an operator")
			return x
		case "[":
			return &Literal{Value: p.array()}
		}
	case tIdent:
		switch up := strings.ToUpper(t.text); {
		case up == "TRUE" || up == "FALSE":
			p.advance()
			return &Literal{Value: up == "TRUE"}
		case up == "NULL":
			p.advance()
			return &Literal{Value: nil}
		case up == "UNDEFINED":
			p.advance()
			return &Literal{Undefined: true}
		case reserved[up]:
		case p.peek().kind == tPunct && p.peek().text == "(":
			return p.call()
		default:
			return p.path()
		}
	}
	p.expected("an expression")
	return nil
}

// call parses a scalar function call.
func (p *parser) call() Expr {
	t := p.tok()
	name := strings.ToUpper(t.text)
	arity, ok := functions[name]
	if !ok {
		if aggregates[name] {
			p.fail("aggregate %s is only allowed as a whole item of the select list", name)
		}
		p.fail("unknown function '%s': expected one of IS_DEFINED, IS_NULL, STARTSWITH, ENDSWITH", clip(t.text))
	}
	p.advance()
	p.advance() // '('
	c := &Call{Func: name}
	if !p.isPunct(")") {
		for {
			c.Args = append(c.Args, p.expr())
			if !p.isPunct(",") {
				break
			}
			p.advance()
		}
	}
	p.expectPunct(")", "',' or ')' in the arguments of "+name)
	if len(c.Args) != arity {
		panic(bailout{errorAt(t.pos, "%s expects %d argument%s, found %d", name, arity, plural(arity), len(c.Args))})
	}
	return c
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// pathOnly parses a path where nothing else may stand.
func (p *parser) pathOnly(what string) *Path {
	t := p.tok()
	if t.kind != tIdent || reserved[strings.ToUpper(t.text)] {
		p.expected(what)
	}
	return p.path()
}

// path parses dotted identifiers: drops a leading "devices." and
// canonicalises a first segment naming a system property.
func (p *parser) path() *Path {
	path := &Path{pos: p.tok().pos}
	path.Segments = append(path.Segments, p.tok().text)
	p.advance()
	for p.isPunct(".") {
		p.advance()
		if p.tok().kind != tIdent {
			p.expected("a property name after '.'")
		}
		path.Segments = append(path.Segments, p.tok().text)
		p.advance()
	}
	if len(path.Segments) > 1 && strings.EqualFold(path.Segments[0], "devices") {
		path.Segments = path.Segments[1:]
	}
	if c, ok := systemProperties[strings.ToLower(path.Segments[0])]; ok {
		path.Segments[0] = c
	}
	return path
}

// array parses an array constant: '[' [constant {',' constant}] ']', where a
// constant is a string, an optionally signed number, true, false, null or a
// nested array.
func (p *parser) array() []any {
	p.enter()
	defer p.leave()
	p.advance() // '['
	out := []any{}
	if p.isPunct("]") {
		p.advance()
		return out
	}
	for {
		out = append(out, p.constant())
		if p.isPunct("]") {
			p.advance()
			return out
		}
		p.expectPunct(",", "',' or ']' in the array")
	}
}

func (p *parser) constant() any {
	t := p.tok()
	switch t.kind {
	case tString:
		p.advance()
		return t.str
	case tNumber:
		p.advance()
		return t.num
	case tPunct:
		switch t.text {
		case "-", "+":
			p.advance()
			n := p.tok()
			if n.kind != tNumber {
				p.expected("a number after '" + t.text + "' in the array")
			}
			p.advance()
			if t.text == "-" {
				return -n.num
			}
			return n.num
		case "[":
			return p.array()
		}
	case tIdent:
		switch strings.ToUpper(t.text) {
		case "TRUE":
			p.advance()
			return true
		case "FALSE":
			p.advance()
			return false
		case "NULL":
			p.advance()
			return nil
		}
	}
	p.expected("a constant (string, number, true, false, null or array) in the array")
	return nil
}
