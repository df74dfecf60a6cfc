package lang

import (
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Query is a parsed query. Parse fills every field; a planner may read them
// (and Execute accepts a Query built by hand, checking it first).
type Query struct {
	// Top is the n of SELECT TOP n, 0 when there is no TOP.
	Top int
	// Star is true for SELECT *: each row is a whole twin.
	Star bool
	// Select lists the projections and aggregates; empty when Star is true.
	Select []SelectItem
	// Where is the condition, nil when there is no WHERE clause.
	Where Expr
	// GroupBy lists the GROUP BY paths in the order written.
	GroupBy []Path
	// OrderBy lists the ORDER BY keys, most significant first.
	OrderBy []OrderItem
	// Modules is true for FROM devices.modules: the query runs over module
	// twins instead of device twins.
	Modules bool

	groupPos position // where GROUP BY was written, for error messages
}

// SelectItem is one entry of the select list.
type SelectItem struct {
	// Expr is the projected expression, or an *Aggregate. An *Aggregate may
	// only appear here, as the whole item.
	Expr Expr
	// Alias is the name given with AS, "" when there is none.
	Alias string
	// Name is the key of this item in the result rows: Alias when given,
	// else the last segment of a path, else "$1", "$2", ... numbering the
	// unnamed items from left to right. Parse fills it; Execute derives the
	// names again from Alias and Expr, so a hand-built Query sets Alias.
	Name string

	pos position
}

// OrderItem is one ORDER BY key.
type OrderItem struct {
	// Path is the key as written (a path into the twin, or a GROUP BY path).
	Path Path
	// Alias is set when the key names a select item (by its alias, or in a
	// grouped query by its output name) instead of a twin property; then the
	// rows are ordered by that item's value and Path is not looked up.
	Alias string
	// Desc is true for DESC.
	Desc bool

	raw string // the single segment as written, before system-name canonicalisation
	pos position
}

// Expr is a node of an expression tree: *Path, *Literal, *Unary, *Binary,
// *In, *Call or *Aggregate. String renders it back as query text (fully
// parenthesised), which Parse reads back to the same tree.
type Expr interface {
	String() string
	isExpr()
}

// Path is a property reference such as tags.location.plant. Segments has the
// "devices." qualifier removed and a first segment that names a twin system
// property (deviceId, status, tags, properties, ...) in its canonical
// spelling; the other segments are kept as written (keys are case-sensitive).
type Path struct {
	Segments []string

	pos position
}

// Literal is a constant: Value is a string, a float64, a bool, nil (null) or
// an []any array of such values; Undefined is true for the literal undefined
// (Value is then nil).
type Literal struct {
	Value     any
	Undefined bool
}

// Op is an operator of a Unary or Binary expression.
type Op int

// The operators. OpNeg and OpPos are unary minus and plus, OpNot is NOT; the
// others are binary.
const (
	OpOr Op = iota
	OpAnd
	OpNot
	OpEq
	OpNe
	OpLt
	OpLe
	OpGt
	OpGe
	OpAdd
	OpSub
	OpMul
	OpDiv
	OpMod
	OpNeg
	OpPos
)

var opText = [...]string{
	OpOr: "OR", OpAnd: "AND", OpNot: "NOT", OpEq: "=", OpNe: "!=", OpLt: "<", OpLe: "<=",
	OpGt: ">", OpGe: ">=", OpAdd: "+", OpSub: "-", OpMul: "*", OpDiv: "/", OpMod: "%",
	OpNeg: "-", OpPos: "+",
}

// String returns the operator as written in a query ("<>" is written "!=").
func (o Op) String() string {
	if o < 0 || int(o) >= len(opText) {
		return "Op(" + strconv.Itoa(int(o)) + ")"
	}
	return opText[o]
}

// IsComparison reports whether o is one of = != < <= > >=.
func (o Op) IsComparison() bool { return o >= OpEq && o <= OpGe }

// Unary is NOT X, -X or +X.
type Unary struct {
	Op Op
	X  Expr
}

// Binary is Left Op Right for a logical, comparison or arithmetic operator.
type Binary struct {
	Op          Op
	Left, Right Expr
}

// In is X IN [Values...], or X NIN [Values...] when Negate is true. Values
// are constants as in Literal.Value.
type In struct {
	X      Expr
	Values []any
	Negate bool
}

// Call is a call of a scalar function: Func is IS_DEFINED, IS_NULL,
// STARTSWITH or ENDSWITH (upper case whatever the query's spelling).
type Call struct {
	Func string
	Args []Expr
}

// Aggregate is COUNT(), AVG(Arg), SUM(Arg), MIN(Arg) or MAX(Arg); Func is
// upper case and Arg is nil for COUNT.
type Aggregate struct {
	Func string
	Arg  Expr
}

func (*Path) isExpr()      {}
func (*Literal) isExpr()   {}
func (*Unary) isExpr()     {}
func (*Binary) isExpr()    {}
func (*In) isExpr()        {}
func (*Call) isExpr()      {}
func (*Aggregate) isExpr() {}

// String returns the dotted path, e.g. "properties.reported.fw". A path
// whose first segment could not start a path in a query (a keyword, as in
// devices.select, or "devices" itself, as in devices.devices.x) keeps the
// "devices." qualifier, so that the text parses back to the same path.
func (p *Path) String() string {
	s := strings.Join(p.Segments, ".")
	if len(p.Segments) > 0 {
		first := p.Segments[0]
		if reserved[strings.ToUpper(first)] || (len(p.Segments) > 1 && strings.EqualFold(first, "devices")) {
			return "devices." + s
		}
	}
	return s
}

// Equal reports whether p and o name the same property.
func (p *Path) Equal(o *Path) bool {
	if len(p.Segments) != len(o.Segments) {
		return false
	}
	for i := range p.Segments {
		if p.Segments[i] != o.Segments[i] {
			return false
		}
	}
	return true
}

// String returns the literal as query text.
func (l *Literal) String() string {
	if l.Undefined {
		return "undefined"
	}
	return constString(l.Value)
}

// constString renders a constant (see Literal.Value) as query text.
func constString(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case bool:
		return strconv.FormatBool(v)
	case string:
		return quote(v)
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			parts[i] = constString(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	if f, ok := toFloat(v); ok {
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return "undefined" // no literal for these; they only come from hand-built trees
		}
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return "undefined"
}

// quote renders s as a single-quoted string literal.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('\'')
	for i, r := range s {
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"):
			b.WriteByte(s[i]) // an invalid byte, kept as the lexer keeps it
		case r == '\'' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			b.WriteString(`\u00`)
			b.WriteByte("0123456789abcdef"[r>>4])
			b.WriteByte("0123456789abcdef"[r&0xf])
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('\'')
	return b.String()
}

// String renders the expression, e.g. "(NOT x)" or "(-x)".
func (u *Unary) String() string {
	if u.Op == OpNot {
		return "(NOT " + u.X.String() + ")"
	}
	return "(" + u.Op.String() + u.X.String() + ")"
}

// String renders the expression, e.g. "(a = 1)".
func (b *Binary) String() string {
	return "(" + b.Left.String() + " " + b.Op.String() + " " + b.Right.String() + ")"
}

// String renders the expression, e.g. "(deviceId IN ['d1', 'd2'])".
func (in *In) String() string {
	op := " IN "
	if in.Negate {
		op = " NIN "
	}
	return "(" + in.X.String() + op + constString(in.Values) + ")"
}

// String renders the call, e.g. "STARTSWITH(deviceId, 'x')".
func (c *Call) String() string {
	parts := make([]string, len(c.Args))
	for i, a := range c.Args {
		parts[i] = a.String()
	}
	return c.Func + "(" + strings.Join(parts, ", ") + ")"
}

// String renders the aggregate, e.g. "COUNT()" or "AVG(properties.reported.temp)".
func (a *Aggregate) String() string {
	if a.Arg == nil {
		return a.Func + "()"
	}
	return a.Func + "(" + a.Arg.String() + ")"
}

// String renders the query in a canonical form that Parse reads back to the
// same Query.
func (q *Query) String() string {
	var b strings.Builder
	b.WriteString("SELECT ")
	if q.Top > 0 {
		b.WriteString("TOP " + strconv.Itoa(q.Top) + " ")
	}
	if q.Star {
		b.WriteString("*")
	}
	for i, it := range q.Select {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(it.Expr.String())
		if it.Alias != "" {
			b.WriteString(" AS " + it.Alias)
		}
	}
	b.WriteString(" FROM devices")
	if q.Modules {
		b.WriteString(".modules")
	}
	if q.Where != nil {
		b.WriteString(" WHERE " + q.Where.String())
	}
	for i, p := range q.GroupBy {
		if i == 0 {
			b.WriteString(" GROUP BY ")
		} else {
			b.WriteString(", ")
		}
		b.WriteString(p.String())
	}
	for i, o := range q.OrderBy {
		if i == 0 {
			b.WriteString(" ORDER BY ")
		} else {
			b.WriteString(", ")
		}
		if o.Alias != "" {
			b.WriteString(o.Alias)
		} else {
			b.WriteString(o.Path.String())
		}
		if o.Desc {
			b.WriteString(" DESC")
		}
	}
	return b.String()
}

// IsSelectStar reports whether the query is SELECT *: its rows are whole
// twins (x-ms-item-type: twin) rather than raw projections.
func (q *Query) IsSelectStar() bool { return q.Star }

// IsAggregate reports whether the query groups rows: it has GROUP BY or an
// aggregate in its select list, so its rows are per group, not per twin.
func (q *Query) IsAggregate() bool {
	if len(q.GroupBy) > 0 {
		return true
	}
	for _, it := range q.Select {
		if _, ok := it.Expr.(*Aggregate); ok {
			return true
		}
	}
	return false
}

// ConjunctivePredicates returns the terms of the WHERE condition that are
// joined by top-level ANDs, left to right: for "a = 1 AND (b > 2 AND c)" it
// returns [a = 1, b > 2, c]. A row matches only if every term is true, so a
// planner may use any one of them to narrow the candidates. It returns nil
// when there is no WHERE clause.
func (q *Query) ConjunctivePredicates() []Expr {
	if q.Where == nil {
		return nil
	}
	var out []Expr
	var walk func(e Expr)
	walk = func(e Expr) {
		if b, ok := e.(*Binary); ok && b.Op == OpAnd {
			walk(b.Left)
			walk(b.Right)
			return
		}
		out = append(out, e)
	}
	walk(q.Where)
	return out
}

// Walk calls fn for e and, while fn returns true, for each of its
// sub-expressions, depth first.
func Walk(e Expr, fn func(Expr) bool) {
	if e == nil || !fn(e) {
		return
	}
	switch e := e.(type) {
	case *Unary:
		Walk(e.X, fn)
	case *Binary:
		Walk(e.Left, fn)
		Walk(e.Right, fn)
	case *In:
		Walk(e.X, fn)
	case *Call:
		for _, a := range e.Args {
			Walk(a, fn)
		}
	case *Aggregate:
		Walk(e.Arg, fn)
	}
}
