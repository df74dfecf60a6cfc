package lang

import (
	"errors"
	"fmt"
)

// ErrQuery is the sentinel every query error matches with errors.Is: a query
// that cannot be parsed, that breaks a rule of the language (say a select item
// that is neither grouped nor aggregated), or that is longer than
// MaxQueryLength. A caller answering an HTTP request maps it to 400 Bad
// Request; any other error from this package would be a bug.
var ErrQuery = errors.New("invalid query")

// Error is a query error with the place in the query where it was found.
//
// Line and Column are 1-based and count characters (runes), not bytes; a
// query that was built by hand rather than parsed has Line and Column 0.
// Msg says what was expected and what was found instead, e.g.
// "expected FROM, found 'FORM'".
type Error struct {
	Line, Column int
	Msg          string
}

// Error formats the error as "query: line L, column C: msg".
func (e *Error) Error() string {
	if e.Line == 0 {
		return "query: " + e.Msg
	}
	return fmt.Sprintf("query: line %d, column %d: %s", e.Line, e.Column, e.Msg)
}

// Unwrap makes errors.Is(err, ErrQuery) true for every *Error.
func (e *Error) Unwrap() error { return ErrQuery }

// position is a place in the query text, 1-based, in characters.
type position struct{ line, col int }

// errorAt builds an *Error at pos.
func errorAt(pos position, format string, args ...any) *Error {
	return &Error{Line: pos.line, Column: pos.col, Msg: fmt.Sprintf(format, args...)}
}
