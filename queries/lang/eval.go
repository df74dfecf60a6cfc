package lang

import (
	"math"
	"strings"
)

// env is what paths resolve against: a twin document, or, when finishing a
// group, the group's key values.
type env struct {
	doc       map[string]any
	groupBy   []Path // non-nil when resolving against a group's keys
	groupKeys []value
}

// value is an evaluation result; ok is false for undefined.
type value struct {
	v  any
	ok bool
}

// lookup resolves a path in a document. A missing key, or a key below a
// value that is not an object, is undefined. No segments means the whole
// document.
func lookup(doc map[string]any, segs []string) (any, bool) {
	m := doc
	for i, s := range segs {
		v, ok := m[s]
		if !ok {
			return nil, false
		}
		if i == len(segs)-1 {
			return v, true
		}
		if m, ok = v.(map[string]any); !ok {
			return nil, false
		}
	}
	return doc, true
}

// Match reports whether doc satisfies the WHERE condition: the condition
// must evaluate to boolean true (anything else, including undefined and
// null, is false). It is true when there is no WHERE clause.
func (q *Query) Match(doc map[string]any) bool {
	if q.Where == nil {
		return true
	}
	en := env{doc: doc}
	v, ok := en.eval(q.Where)
	return ok && v == true
}

// eval evaluates e. ok is false when the result is undefined; evaluation
// never fails, since the language turns every type mismatch into undefined.
func (en *env) eval(e Expr) (any, bool) {
	switch e := e.(type) {
	case *Path:
		if en.groupBy != nil {
			for i := range en.groupBy {
				if en.groupBy[i].Equal(e) {
					return en.groupKeys[i].v, en.groupKeys[i].ok
				}
			}
			return nil, false
		}
		return lookup(en.doc, e.Segments)
	case *Literal:
		if e.Undefined {
			return nil, false
		}
		return e.Value, true
	case *Unary:
		return en.unary(e)
	case *Binary:
		return en.binary(e)
	case *In:
		return en.in(e)
	case *Call:
		return en.call(e)
	}
	// An *Aggregate outside the select list, or a foreign Expr: prepare
	// rejects both, so only a hand-built Query used with Match gets here.
	return nil, false
}

func (en *env) unary(e *Unary) (any, bool) {
	x, ok := en.eval(e.X)
	if !ok {
		return nil, false
	}
	switch e.Op {
	case OpNot:
		if b, isBool := x.(bool); isBool {
			return !b, true
		}
	case OpNeg:
		if f, isNum := toFloat(x); isNum {
			return -f, true
		}
	case OpPos:
		if f, isNum := toFloat(x); isNum {
			return f, true
		}
	}
	return nil, false
}

func (en *env) binary(e *Binary) (any, bool) {
	switch e.Op {
	case OpAnd, OpOr:
		return en.logical(e)
	}
	l, lok := en.eval(e.Left)
	if !lok {
		return nil, false
	}
	r, rok := en.eval(e.Right)
	if !rok {
		return nil, false
	}
	if e.Op.IsComparison() {
		c, ok := comparePrimitives(l, r)
		if !ok {
			return nil, false
		}
		switch e.Op {
		case OpEq:
			return c == 0, true
		case OpNe:
			return c != 0, true
		case OpLt:
			return c < 0, true
		case OpLe:
			return c <= 0, true
		case OpGt:
			return c > 0, true
		case OpGe:
			return c >= 0, true
		}
	}
	a, aok := toFloat(l)
	b, bok := toFloat(r)
	if !aok || !bok {
		return nil, false
	}
	var f float64
	switch e.Op {
	case OpAdd:
		f = a + b
	case OpSub:
		f = a - b
	case OpMul:
		f = a * b
	case OpDiv:
		if b == 0 {
			return nil, false
		}
		f = a / b
	case OpMod:
		if b == 0 {
			return nil, false
		}
		f = math.Mod(a, b)
	default:
		return nil, false
	}
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, false // JSON has no such numbers
	}
	return f, true
}

// logical implements three-valued AND and OR: false AND x is false, true OR
// x is true, and any other non-boolean operand makes the result undefined.
func (en *env) logical(e *Binary) (any, bool) {
	l, lok := en.eval(e.Left)
	lb, lIsBool := l.(bool)
	lIsBool = lIsBool && lok
	if lIsBool && lb == (e.Op == OpOr) {
		return lb, true // short circuit: false AND ..., true OR ...
	}
	r, rok := en.eval(e.Right)
	rb, rIsBool := r.(bool)
	rIsBool = rIsBool && rok
	if rIsBool && rb == (e.Op == OpOr) {
		return rb, true
	}
	if lIsBool && rIsBool {
		return lb, true // both are the non-dominant value
	}
	return nil, false
}

// in implements IN and NIN: the value must be a primitive, and is in the
// list when it equals (as with =) one of its elements. On undefined or a
// non-primitive the result is undefined.
func (en *env) in(e *In) (any, bool) {
	x, ok := en.eval(e.X)
	if !ok || !isPrimitive(x) {
		return nil, false
	}
	found := false
	for _, c := range e.Values {
		if r, ok := comparePrimitives(x, c); ok && r == 0 {
			found = true
			break
		}
	}
	return found != e.Negate, true
}

func (en *env) call(e *Call) (any, bool) {
	switch e.Func {
	case "IS_DEFINED":
		if len(e.Args) == 1 {
			_, ok := en.eval(e.Args[0])
			return ok, true
		}
	case "IS_NULL":
		if len(e.Args) == 1 {
			v, ok := en.eval(e.Args[0])
			return ok && v == nil, true
		}
	case "STARTSWITH", "ENDSWITH":
		if len(e.Args) != 2 {
			return nil, false
		}
		a, aok := en.eval(e.Args[0])
		b, bok := en.eval(e.Args[1])
		s, sIsString := a.(string)
		fix, fixIsString := b.(string)
		if !aok || !bok || !sIsString || !fixIsString {
			return nil, false
		}
		if e.Func == "STARTSWITH" {
			return strings.HasPrefix(s, fix), true
		}
		return strings.HasSuffix(s, fix), true
	}
	return nil, false
}
