package lang

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// fuzzSeeds are queries that reach corners the oracle table does not.
var fuzzSeeds = []string{
	"",
	"SELECT",
	"SELECT * FORM devices",
	"SELECT * FROM devices.modules",
	"SELECT * FROM devices WHERE x = 'abc",
	"SELECT * FROM devices WHERE x = '\\u12'",
	"SELECT * FROM devices WHERE x = '\\uD83D\\uDE00'",
	"SELECT * FROM devices WHERE x = 1.2.3",
	"SELECT * FROM devices WHERE x = 0x1FFFFFFFFFFFFFFFF",
	"SELECT * FROM devices WHERE x = 1e999 OR y = -0",
	"SELECT TOP 0 * FROM devices",
	"SELECT * FROM devices WHERE ((((x = 1)",
	"SELECT * FROM devices WHERE NOT NOT NOT NOT x",
	"SELECT * FROM devices WHERE x IN [[[[1]]], -2, +3, 'a', null]",
	"SELECT x AS a, y AS a FROM devices",
	"SELECT COUNT(), AVG(x), SUM(x), MIN(x), MAX(x) FROM devices GROUP BY y ORDER BY $1 DESC",
	"SELECT * FROM devices WHERE x = \xff",
	"SELECT * FROM devices WHERE 'ä€😀' = #",
	"SELECT 1 + 1, 2 * 3 FROM devices ORDER BY $1",
	"SELECT DeviceId AS Status FROM devices ORDER BY Status",
}

// FuzzQuery checks, for any string:
//   - Parse never panics, and each error it returns is an *Error that
//     matches ErrQuery and has a position inside the query;
//   - a parsed query executes over the fixture without panicking or
//     returning an error, returns at most TOP rows, and for SELECT * without
//     TOP or ORDER BY returns exactly the twins Match accepts, in order;
//   - the canonical rendering String() parses back to the same rendering
//     (when it fits in MaxQueryLength).
func FuzzQuery(f *testing.F) {
	for _, tc := range oracleCases {
		f.Add(tc.q)
	}
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		q, err := Parse(src)
		if err != nil {
			var qe *Error
			if !errors.As(err, &qe) || !errors.Is(err, ErrQuery) {
				t.Fatalf("Parse(%q): error %T %v is not a query error", src, err, err)
			}
			lines := strings.Count(src, "\n") + 1
			if qe.Line < 1 || qe.Line > lines || qe.Column < 1 || qe.Column > utf8.RuneCountInString(src)+1 {
				t.Fatalf("Parse(%q): position %d:%d outside the query", src, qe.Line, qe.Column)
			}
			return
		}
		rows, err := q.Execute(slices.Values(fleet))
		if err != nil {
			t.Fatalf("Execute(%q): %v", src, err)
		}
		if q.Top > 0 && len(rows) > q.Top {
			t.Fatalf("Execute(%q): %d rows, more than TOP %d", src, len(rows), q.Top)
		}
		if q.IsSelectStar() && q.Top == 0 && len(q.OrderBy) == 0 {
			var want []doc
			for _, d := range fleet {
				if q.Match(d) {
					want = append(want, d)
				}
			}
			if !slices.Equal(ids(rows), ids(want)) {
				t.Fatalf("Execute(%q) = %v, but Match accepts %v", src, ids(rows), ids(want))
			}
		}
		s := q.String()
		if utf8.RuneCountInString(s) > MaxQueryLength {
			return
		}
		q2, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%q).String() = %q does not parse: %v", src, s, err)
		}
		if s2 := q2.String(); s2 != s {
			t.Fatalf("String() does not round-trip:\n%q\n%q", s, s2)
		}
	})
}
