package lang

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestParseConstructs parses every construct of the language and checks the
// tree through its canonical rendering, which is fully parenthesised.
func TestParseConstructs(t *testing.T) {
	tests := []struct{ src, want string }{
		{`SELECT * FROM devices`, `SELECT * FROM devices`},
		{`select * from Devices.Modules where moduleId = 'm'`, `SELECT * FROM devices.modules WHERE (moduleId = 'm')`},
		{`select top 5 * from Devices where a.b = 1`, `SELECT TOP 5 * FROM devices WHERE (a.b = 1)`},
		{"SELECT *\n\tFROM devices\r\n WHERE a = 1", `SELECT * FROM devices WHERE (a = 1)`},
		{`SELECT * FROM devices WHERE a = 1 OR b = 2 AND NOT c = 3`, `SELECT * FROM devices WHERE ((a = 1) OR ((b = 2) AND (NOT (c = 3))))`},
		{`SELECT * FROM devices WHERE (a = 1 OR b = 2) AND c`, `SELECT * FROM devices WHERE (((a = 1) OR (b = 2)) AND c)`},
		{`SELECT * FROM devices WHERE a OR b OR c AND d AND e`, `SELECT * FROM devices WHERE ((a OR b) OR ((c AND d) AND e))`},
		{`SELECT * FROM devices WHERE NOT NOT a`, `SELECT * FROM devices WHERE (NOT (NOT a))`},
		{`SELECT * FROM devices WHERE a + b * c - d / e % f = -g`, `SELECT * FROM devices WHERE (((a + (b * c)) - ((d / e) % f)) = (-g))`},
		{`SELECT * FROM devices WHERE (a + b) * c > 2`, `SELECT * FROM devices WHERE (((a + b) * c) > 2)`},
		{`SELECT * FROM devices WHERE x <> 1 AND y != 2 AND z <= 3 AND w >= 4 AND v < 5 AND u > 6`,
			`SELECT * FROM devices WHERE ((((((x != 1) AND (y != 2)) AND (z <= 3)) AND (w >= 4)) AND (v < 5)) AND (u > 6))`},
		{`SELECT * FROM devices WHERE a = b = c`, `SELECT * FROM devices WHERE ((a = b) = c)`},
		{`SELECT * FROM devices WHERE x IN ['a', "b", 1, -2.5, +3, 0x1F, true, FALSE, Null, [1, [2]]]`,
			`SELECT * FROM devices WHERE (x IN ['a', 'b', 1, -2.5, 3, 31, true, false, null, [1, [2]]])`},
		{`SELECT * FROM devices WHERE x NIN [] AND y nin ['a'] AND z in [1]`, `SELECT * FROM devices WHERE (((x NIN []) AND (y NIN ['a'])) AND (z IN [1]))`},
		{`SELECT * FROM devices WHERE x + 1 IN [2]`, `SELECT * FROM devices WHERE ((x + 1) IN [2])`},
		{`SELECT * FROM devices WHERE NOT x IN [2]`, `SELECT * FROM devices WHERE (NOT (x IN [2]))`},
		{`SELECT * FROM devices WHERE is_defined(devices.tags.x) AND StartsWith(DeviceId, 'a') AND ENDSWITH(x, "b") AND IS_NULL(y)`,
			`SELECT * FROM devices WHERE (((IS_DEFINED(tags.x) AND STARTSWITH(deviceId, 'a')) AND ENDSWITH(x, 'b')) AND IS_NULL(y))`},
		{`SELECT * FROM devices WHERE undefined = null OR true != false`, `SELECT * FROM devices WHERE ((undefined = null) OR (true != false))`},
		{`SELECT * FROM devices WHERE 'it\'s' = "\"q\" \\ \u00e9 \/ \t"`, `SELECT * FROM devices WHERE ('it\'s' = '"q" \\ é / \u0009')`},
		{`SELECT * FROM devices WHERE '\uD83D\uDE00' = '\uD83D' + '\uDE00x'`, `SELECT * FROM devices WHERE ('😀' = ('` + "\uFFFD" + `' + '` + "\uFFFD" + `x'))`},
		{`SELECT * FROM devices WHERE 1.5e3 = 1500 AND 0X10 = 16 AND 2E-1 = .2`, ``}, // .2 is no number: see errors
		{`SELECT * FROM devices WHERE - - 5 = +x AND -(3) = -y AND -'a' = 1`, `SELECT * FROM devices WHERE (((5 = (+x)) AND (-3 = (-y))) AND ((-'a') = 1))`},
		{`SELECT * FROM devices WHERE tags.group = 1 AND tags.order.by = 2 AND tags.select.true = 3`,
			`SELECT * FROM devices WHERE (((tags.group = 1) AND (tags.order.by = 2)) AND (tags.select.true = 3))`},
		{`SELECT * FROM devices WHERE properties.desired.$metadata.$lastUpdated > '' AND _x1 = $y`,
			`SELECT * FROM devices WHERE ((properties.desired.$metadata.$lastUpdated > '') AND (_x1 = $y))`},
		{`SELECT * FROM devices WHERE [1, 'a'] = x`, `SELECT * FROM devices WHERE ([1, 'a'] = x)`},
		{`SELECT deviceId, tags.location AS loc, COUNT() AS n FROM devices GROUP BY deviceId, tags.location ORDER BY n DESC, deviceId ASC`,
			`SELECT deviceId, tags.location AS loc, COUNT() AS n FROM devices GROUP BY deviceId, tags.location ORDER BY n DESC, deviceId`},
		{`SELECT a.b + 1 AS c FROM devices ORDER BY c`, `SELECT (a.b + 1) AS c FROM devices ORDER BY c`},
		{`SELECT count(), Avg(x), SUM(x * 2), min(x), MAX(x) FROM devices`, `SELECT COUNT(), AVG(x), SUM((x * 2)), MIN(x), MAX(x) FROM devices`},
		{`SELECT x FROM devices GROUP BY x`, `SELECT x FROM devices GROUP BY x`},
		{`SELECT TOP 0x10 x, 'c' AS k FROM devices WHERE x > 1 GROUP BY x ORDER BY x`, `SELECT TOP 16 x, 'c' AS k FROM devices WHERE (x > 1) GROUP BY x ORDER BY x`},
		{`SELECT * FROM devices ORDER BY Status, devices.tags.a desc`, `SELECT * FROM devices ORDER BY status, tags.a DESC`},
		{`SELECT DeviceId AS Status FROM devices ORDER BY Status`, `SELECT deviceId AS Status FROM devices ORDER BY Status`},
	}
	for _, tt := range tests {
		if tt.want == "" {
			continue
		}
		t.Run(tt.src, func(t *testing.T) {
			q, err := Parse(tt.src)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got := q.String(); got != tt.want {
				t.Fatalf("String() = %s\nwant       %s", got, tt.want)
			}
			q2, err := Parse(q.String())
			if err != nil {
				t.Fatalf("Parse(String()): %v", err)
			}
			if q2.String() != q.String() {
				t.Fatalf("String() does not round-trip: %s", q2.String())
			}
		})
	}
}

// TestParsePaths checks the devices. qualifier and system-property case
// rules.
func TestParsePaths(t *testing.T) {
	tests := []struct {
		src  string
		want []string
	}{
		{"deviceId", []string{"deviceId"}},
		{"DEVICEID", []string{"deviceId"}},
		{"devices.DeviceId", []string{"deviceId"}},
		{"Devices.Tags.Location", []string{"tags", "Location"}},
		{"devices", []string{"devices"}},
		{"devices.devices", []string{"devices"}},
		{"PROPERTIES.Reported.x", []string{"properties", "Reported", "x"}},
		{"lastactivitytime", []string{"lastActivityTime"}},
		{"StatusUpdateTime", []string{"statusUpdateTime"}},
		{"cloudtodevicemessagecount", []string{"cloudToDeviceMessageCount"}},
		{"X509THUMBPRINT.primaryThumbprint", []string{"x509Thumbprint", "primaryThumbprint"}},
		{"Capabilities.iotEdge", []string{"capabilities", "iotEdge"}},
		{"myTag.DeviceId", []string{"myTag", "DeviceId"}},
		{"tags.deviceid", []string{"tags", "deviceid"}},
	}
	for _, tt := range tests {
		q, err := Parse("SELECT " + tt.src + " AS v FROM devices")
		if err != nil {
			t.Fatalf("%s: %v", tt.src, err)
		}
		p, ok := q.Select[0].Expr.(*Path)
		if !ok {
			t.Fatalf("%s: got %T, want *Path", tt.src, q.Select[0].Expr)
		}
		if !slices.Equal(p.Segments, tt.want) {
			t.Errorf("%s: segments %q, want %q", tt.src, p.Segments, tt.want)
		}
	}
}

// TestSelectNames checks output names: alias, last path segment in
// canonical spelling, else $1, $2, ... for the unnamed items.
func TestSelectNames(t *testing.T) {
	_, err := Parse(`SELECT DeviceId, tags.location.plant, 1 + 1, COUNT() AS c, MAX(x), devices.LastActivityTime FROM devices`)
	if err == nil {
		t.Fatalf("mixing ungrouped paths and aggregates parsed")
	}
	q, err := Parse(`SELECT DeviceId, tags.location.plant, 1 + 1, x AS c, STARTSWITH(x, 'a'), devices.LastActivityTime FROM devices`)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, it := range q.Select {
		names = append(names, it.Name)
	}
	if want := []string{"deviceId", "plant", "$1", "c", "$2", "lastActivityTime"}; !slices.Equal(names, want) {
		t.Fatalf("names %q, want %q", names, want)
	}
	q, err = Parse(`SELECT COUNT(), SUM(x), x.y AS a, AVG(y) FROM devices GROUP BY x.y`)
	if err != nil {
		t.Fatal(err)
	}
	names = names[:0]
	for _, it := range q.Select {
		names = append(names, it.Name)
	}
	if want := []string{"$1", "$2", "a", "$3"}; !slices.Equal(names, want) {
		t.Fatalf("names %q, want %q", names, want)
	}
}

// TestParseErrors checks the position and message of each kind of error.
func TestParseErrors(t *testing.T) {
	long := "SELECT * FROM devices WHERE deviceId = '" + strings.Repeat("a", MaxQueryLength) + "'"
	tests := []struct {
		name, src string
		line, col int
		msg       string
	}{
		{"empty", ``, 1, 1, "expected SELECT, found end of query"},
		{"misspelt SELECT", `SELEC * FROM devices`, 1, 1, "expected SELECT, found 'SELEC'"},
		{"misspelt FROM", `SELECT * FORM devices`, 1, 10, "expected FROM, found 'FORM'"},
		{"missing FROM", `SELECT *`, 1, 9, "expected FROM, found end of query"},
		{"missing FROM after item", `SELECT deviceId devices`, 1, 17, "expected an operator, AS, ',' or FROM, found 'devices'"},
		{"missing FROM after alias", `SELECT deviceId AS id devices`, 1, 23, "expected ',' or FROM, found 'devices'"},
		{"missing FROM after aggregate", `SELECT COUNT() + 1 FROM devices`, 1, 16, "expected AS, ',' or FROM, found '+'"},
		{"empty select list", `SELECT FROM devices`, 1, 8, "expected an expression, found 'FROM'"},
		{"comma only", `SELECT , FROM devices`, 1, 8, "expected an expression, found ','"},
		{"trailing comma", `SELECT a, FROM devices`, 1, 11, "expected an expression, found 'FROM'"},
		{"FROM devices.modules.x", `SELECT * FROM devices.modules.x`, 1, 15, "only FROM devices and FROM devices.modules are supported, found 'devices.modules.x'"},
		{"FROM devices.jobs", `select * from Devices.Jobs where x = 1`, 1, 15, "only FROM devices and FROM devices.modules are supported, found 'Devices.Jobs'"},
		{"FROM devices dot", `SELECT * FROM devices.`, 1, 15, "only FROM devices and FROM devices.modules are supported, found 'devices.'"},
		{"FROM other", `SELECT * FROM twins`, 1, 15, "only FROM devices and FROM devices.modules are supported, found 'twins'"},
		{"FROM nothing", `SELECT * FROM`, 1, 14, "expected devices after FROM, found end of query"},
		{"FROM string", `SELECT * FROM 'devices'`, 1, 15, "expected devices after FROM, found string 'devices'"},
		{"unterminated string", `SELECT * FROM devices WHERE x = 'abc`, 1, 33, "unterminated string: expected a closing ' before the end of the query"},
		{"unterminated escaped quote", `SELECT * FROM devices WHERE x = "abc\"`, 1, 33, `unterminated string: expected a closing " before the end of the query`},
		{"unterminated after backslash", `SELECT * FROM devices WHERE x = 'abc\`, 1, 33, "unterminated string: expected a closing ' before the end of the query"},
		{"bad escape", `SELECT * FROM devices WHERE x = 'a\qb'`, 1, 35, `invalid escape '\q' in string: expected one of \' \" \\ \/ \b \f \n \r \t \uXXXX`},
		{"short \\u", `SELECT * FROM devices WHERE x = '\u12'`, 1, 34, `invalid escape in string: expected four hexadecimal digits after \u`},
		{"bad number dots", "SELECT *\nFROM devices\nWHERE x = 1.2.3", 3, 11, "invalid number '1.2.3': expected a space or an operator after the number"},
		{"bad number letters", `SELECT * FROM devices WHERE x = 12abc`, 1, 33, "invalid number '12abc': expected a space or an operator after the number"},
		{"bad number point", `SELECT * FROM devices WHERE x = 1.`, 1, 33, "invalid number '1.': expected a digit after '.'"},
		{"bad number exponent", `SELECT * FROM devices WHERE x = 1e+`, 1, 33, "invalid number '1e+': expected a digit in the exponent"},
		{"bad hex", `SELECT * FROM devices WHERE x = 0x`, 1, 33, "invalid number '0x': expected a hexadecimal digit after 0x"},
		{"bad hex digit", `SELECT * FROM devices WHERE x = 0x1G`, 1, 33, "invalid number '0x1G': expected a space or an operator after the number"},
		{"hex too long", `SELECT * FROM devices WHERE x = 0x1FFFFFFFFFFFFFFFF`, 1, 33, "number 0x1FFFFFFFFFFFFFFFF is out of range: expected at most 16 hexadecimal digits"},
		{"number too large", `SELECT * FROM devices WHERE x = 1e999`, 1, 33, "number 1e999 is out of range: expected a magnitude below 1.8e308"},
		{"leading point", `SELECT * FROM devices WHERE x = .5`, 1, 33, "expected an expression, found '.'"},
		{"unknown function", `SELECT * FROM devices WHERE FOO(x)`, 1, 29, "unknown function 'FOO': expected one of IS_DEFINED, IS_NULL, STARTSWITH, ENDSWITH"},
		{"routing-only function", `SELECT * FROM devices WHERE STARTS_WITH(deviceId, 'a')`, 1, 29, "unknown function 'STARTS_WITH': expected one of IS_DEFINED, IS_NULL, STARTSWITH, ENDSWITH"},
		{"aggregate in WHERE", `SELECT * FROM devices WHERE COUNT() > 1`, 1, 29, "aggregate COUNT is only allowed as a whole item of the select list"},
		{"aggregate in expression", `SELECT 1 + count() FROM devices`, 1, 12, "aggregate COUNT is only allowed as a whole item of the select list"},
		{"nested aggregate", `SELECT AVG(MAX(x)) FROM devices`, 1, 12, "aggregate MAX is only allowed as a whole item of the select list"},
		{"too many arguments", `SELECT * FROM devices WHERE IS_DEFINED(x, y)`, 1, 29, "IS_DEFINED expects 1 argument, found 2"},
		{"too few arguments", `SELECT * FROM devices WHERE STARTSWITH(x)`, 1, 29, "STARTSWITH expects 2 arguments, found 1"},
		{"no arguments", `SELECT * FROM devices WHERE IS_NULL()`, 1, 29, "IS_NULL expects 1 argument, found 0"},
		{"unclosed call", `SELECT * FROM devices WHERE IS_NULL(x`, 1, 38, "expected ',' or ')' in the arguments of IS_NULL, found end of query"},
		{"COUNT with argument", `SELECT COUNT(x) FROM devices`, 1, 14, "expected ')' after COUNT( (COUNT takes no argument), found 'x'"},
		{"AVG without argument", `SELECT AVG() FROM devices`, 1, 12, "expected an expression, found ')'"},
		{"AVG unclosed", `SELECT AVG(x FROM devices`, 1, 14, "expected ')' after the argument of AVG, found 'FROM'"},
		{"TOP without number", `SELECT TOP * FROM devices`, 1, 12, "expected a whole number from 1 to 2147483647 after TOP, found '*'"},
		{"TOP 0", `SELECT TOP 0 * FROM devices`, 1, 12, "expected a whole number from 1 to 2147483647 after TOP, found number 0"},
		{"TOP fraction", `SELECT TOP 1.5 * FROM devices`, 1, 12, "expected a whole number from 1 to 2147483647 after TOP, found number 1.5"},
		{"TOP negative", `SELECT TOP -1 * FROM devices`, 1, 12, "expected a whole number from 1 to 2147483647 after TOP, found '-'"},
		{"TOP huge", `SELECT TOP 3000000000 * FROM devices`, 1, 12, "expected a whole number from 1 to 2147483647 after TOP, found number 3000000000"},
		{"too long", long, 1, MaxQueryLength + 1, "query is 8233 characters long: expected at most 8192"},
		{"unbalanced open", `SELECT * FROM devices WHERE ((x = 1)`, 1, 37, "expected ')' or an operator, found end of query"},
		{"unbalanced open multi-line", "SELECT *\n  FROM devices\n  WHERE ((a = 1)\n", 4, 1, "expected ')' or an operator, found end of query"},
		{"unbalanced close", `SELECT * FROM devices WHERE (x = 1))`, 1, 36, "expected an operator, GROUP BY, ORDER BY or end of query, found ')'"},
		{"trailing token", `SELECT * FROM devices x`, 1, 23, "expected WHERE, GROUP BY, ORDER BY or end of query, found 'x'"},
		{"trailing after WHERE", `SELECT * FROM devices WHERE x = 1 y`, 1, 35, "expected an operator, GROUP BY, ORDER BY or end of query, found 'y'"},
		{"trailing after GROUP BY", `SELECT COUNT() FROM devices GROUP BY x y`, 1, 40, "expected ',', ORDER BY or end of query, found 'y'"},
		{"trailing after ORDER BY", `SELECT * FROM devices ORDER BY x y`, 1, 34, "expected ASC, DESC, ',' or end of query, found 'y'"},
		{"trailing after DESC", `SELECT * FROM devices ORDER BY x DESC y`, 1, 39, "expected ',' or end of query, found 'y'"},
		{"WHERE after ORDER BY", `SELECT * FROM devices ORDER BY x WHERE y = 1`, 1, 34, "expected ASC, DESC, ',' or end of query, found 'WHERE'"},
		{"GROUP without BY", `SELECT COUNT() FROM devices GROUP x`, 1, 35, "expected BY after GROUP, found 'x'"},
		{"ORDER without BY", `SELECT * FROM devices ORDER x`, 1, 29, "expected BY after ORDER, found 'x'"},
		{"ORDER BY number", `SELECT * FROM devices ORDER BY 1`, 1, 32, "expected a property path or alias in ORDER BY, found number 1"},
		{"ORDER BY trailing comma", `SELECT * FROM devices ORDER BY x DESC,`, 1, 39, "expected a property path or alias in ORDER BY, found end of query"},
		{"GROUP BY expression", `SELECT COUNT() FROM devices GROUP BY 'x'`, 1, 38, "expected a property path in GROUP BY, found string 'x'"},
		{"IN without array", `SELECT * FROM devices WHERE x IN 'a'`, 1, 34, "expected '[' after IN, found string 'a'"},
		{"NIN without array", `SELECT * FROM devices WHERE x NIN (1)`, 1, 35, "expected '[' after NIN, found '('"},
		{"IN with path", `SELECT * FROM devices WHERE x IN [a]`, 1, 35, "expected a constant (string, number, true, false, null or array) in the array, found 'a'"},
		{"IN with undefined", `SELECT * FROM devices WHERE x IN [undefined]`, 1, 35, "expected a constant (string, number, true, false, null or array) in the array, found 'undefined'"},
		{"array without comma", `SELECT * FROM devices WHERE x IN [1 2]`, 1, 37, "expected ',' or ']' in the array, found number 2"},
		{"array unclosed", `SELECT * FROM devices WHERE x IN [1,`, 1, 37, "expected a constant (string, number, true, false, null or array) in the array, found end of query"},
		{"array sign", `SELECT * FROM devices WHERE x IN [-'a']`, 1, 36, "expected a number after '-' in the array, found string 'a'"},
		{"missing operand", `SELECT * FROM devices WHERE x = `, 1, 33, "expected an expression, found end of query"},
		{"missing condition", `SELECT * FROM devices WHERE`, 1, 28, "expected an expression, found end of query"},
		{"keyword as operand", `SELECT * FROM devices WHERE AND`, 1, 29, "expected an expression, found 'AND'"},
		{"keyword as first segment", `SELECT * FROM devices WHERE group = 1`, 1, 29, "expected an expression, found 'group'"},
		{"dangling dot", `SELECT * FROM devices WHERE tags. = 1`, 1, 35, "expected a property name after '.', found '='"},
		{"bang", `SELECT * FROM devices WHERE x ! y`, 1, 31, "unexpected character '!': expected '!='"},
		{"hash", `SELECT * FROM devices WHERE x = #`, 1, 33, "unexpected character '#'"},
		{"multibyte column", `SELECT * FROM devices WHERE 'ä€😀' = #`, 1, 37, "unexpected character '#'"},
		{"invalid UTF-8", "SELECT * FROM devices WHERE x = \xff", 1, 33, "unexpected byte 0xff (the query is not valid UTF-8)"},
		{"call on path", `SELECT * FROM devices WHERE tags.f(1)`, 1, 35, "expected an operator, GROUP BY, ORDER BY or end of query, found '('"},
		{"alias keyword", `SELECT x AS FROM devices`, 1, 13, "expected a name after AS, found 'FROM'"},
		{"alias string", `SELECT x AS 'y' FROM devices`, 1, 13, "expected a name after AS, found string 'y'"},
		{"syntax error before lexical error", `SELECT * FROM devices WHERE x y = 'abc`, 1, 31, "expected an operator, GROUP BY, ORDER BY or end of query, found 'y'"},
		{"ungrouped path with aggregate", `SELECT deviceId, COUNT() FROM devices`, 1, 8, "'deviceId' is selected with aggregates or GROUP BY: expected it in GROUP BY or inside an aggregate"},
		{"ungrouped path in expression", `SELECT x + y AS z, COUNT() FROM devices GROUP BY x`, 1, 12, "'y' is selected with aggregates or GROUP BY: expected it in GROUP BY or inside an aggregate"},
		{"ungrouped path without aggregate", `SELECT y FROM devices GROUP BY x`, 1, 8, "'y' is selected with aggregates or GROUP BY: expected it in GROUP BY or inside an aggregate"},
		{"star with GROUP BY", `SELECT * FROM devices GROUP BY x`, 1, 23, "SELECT * cannot be combined with GROUP BY: expected a select list of GROUP BY paths and aggregates"},
		{"duplicate alias", `SELECT x AS a, y AS a FROM devices`, 1, 16, "duplicate name 'a' in the select list: expected distinct names (use AS to rename)"},
		{"duplicate implicit name", `SELECT tags.a.x, tags.b.x FROM devices`, 1, 18, "duplicate name 'x' in the select list: expected distinct names (use AS to rename)"},
		{"ORDER BY ungrouped", `SELECT COUNT() AS n FROM devices GROUP BY x ORDER BY y`, 1, 54, "ORDER BY y in a grouped query: expected a GROUP BY path or the name of a select item"},
		{"ORDER BY in aggregate without GROUP BY", `SELECT COUNT() AS n FROM devices ORDER BY deviceId`, 1, 43, "ORDER BY deviceId in a grouped query: expected a GROUP BY path or the name of a select item"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := Parse(tt.src)
			if err == nil {
				t.Fatalf("Parse(%q) = %s, want an error", tt.src, q)
			}
			if !errors.Is(err, ErrQuery) {
				t.Fatalf("errors.Is(%v, ErrQuery) = false", err)
			}
			var qe *Error
			if !errors.As(err, &qe) {
				t.Fatalf("error %T is not an *Error", err)
			}
			want := &Error{Line: tt.line, Column: tt.col, Msg: tt.msg}
			if !reflect.DeepEqual(qe, want) {
				t.Fatalf("got  %v\nwant %v", qe, want)
			}
		})
	}
}

// TestErrorFormat checks the text of Error and its use with errors.Is.
func TestErrorFormat(t *testing.T) {
	_, err := Parse("SELECT * FORM devices")
	if got, want := err.Error(), "query: line 1, column 10: expected FROM, found 'FORM'"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if got, want := (&Error{Msg: "x"}).Error(), "query: x"; got != want {
		t.Fatalf("Error() without position = %q, want %q", got, want)
	}
	if !errors.Is(&Error{}, ErrQuery) {
		t.Fatal("an *Error does not match ErrQuery")
	}
}

// TestLengthLimit checks that exactly MaxQueryLength characters parse,
// counted in characters rather than bytes.
func TestLengthLimit(t *testing.T) {
	head := "SELECT * FROM devices WHERE deviceId = '"
	fill := MaxQueryLength - len(head) - 1
	if _, err := Parse(head + strings.Repeat("a", fill) + "'"); err != nil {
		t.Fatalf("a query of exactly %d characters: %v", MaxQueryLength, err)
	}
	if _, err := Parse(head + strings.Repeat("é", fill) + "'"); err != nil {
		t.Fatalf("%d characters of which some take two bytes: %v", MaxQueryLength, err)
	}
	if _, err := Parse(head + strings.Repeat("a", fill+1) + "'"); err == nil {
		t.Fatalf("a query of %d characters parsed", MaxQueryLength+1)
	}
}

// TestNestingLimit checks that deep nesting is an error, not a stack
// overflow, and that nesting within the limit parses.
func TestNestingLimit(t *testing.T) {
	for _, tt := range []struct{ name, open, close string }{
		{"parentheses", "(", ")"},
		{"NOT", "NOT ", ""},
		{"minus", "-", ""},
		{"arrays", "", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			build := func(n int) string {
				if tt.name == "arrays" {
					return "SELECT * FROM devices WHERE x IN " + strings.Repeat("[", n) + strings.Repeat("]", n)
				}
				return "SELECT * FROM devices WHERE " + strings.Repeat(tt.open, n) + "x" + strings.Repeat(tt.close, n)
			}
			if _, err := Parse(build(100)); err != nil {
				t.Fatalf("100 levels: %v", err)
			}
			_, err := Parse(build(1500))
			var qe *Error
			if !errors.As(err, &qe) || !strings.Contains(qe.Msg, "nested too deeply") {
				t.Fatalf("1500 levels: got %v, want a nesting error", err)
			}
		})
	}
}

// TestConjunctivePredicates checks the split of WHERE into AND-ed terms.
func TestConjunctivePredicates(t *testing.T) {
	tests := []struct {
		where string
		want  []string
	}{
		{"", nil},
		{"a = 1", []string{"(a = 1)"}},
		{"a = 1 AND (b > 2 AND STARTSWITH(c, 'x')) AND d IN [1]", []string{"(a = 1)", "(b > 2)", "STARTSWITH(c, 'x')", "(d IN [1])"}},
		{"a = 1 OR b = 2", []string{"((a = 1) OR (b = 2))"}},
		{"NOT (a AND b)", []string{"(NOT (a AND b))"}},
	}
	for _, tt := range tests {
		src := "SELECT * FROM devices"
		if tt.where != "" {
			src += " WHERE " + tt.where
		}
		q, err := Parse(src)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range q.ConjunctivePredicates() {
			got = append(got, e.String())
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: got %q, want %q", tt.where, got, tt.want)
		}
	}
}

// TestPlannerView checks that a planner can recognise the indexable shapes
// of predicate: path = literal, path IN [...], ranges and STARTSWITH.
func TestPlannerView(t *testing.T) {
	q, err := Parse(`SELECT * FROM devices WHERE devices.Tags.location.plant = 'Redmond43' AND deviceId IN ['d1', 'd2'] AND properties.reported.temp >= -5 AND STARTSWITH(DeviceId, 'x')`)
	if err != nil {
		t.Fatal(err)
	}
	preds := q.ConjunctivePredicates()
	if len(preds) != 4 {
		t.Fatalf("%d predicates, want 4", len(preds))
	}
	eq := preds[0].(*Binary)
	if eq.Op != OpEq || eq.Left.(*Path).String() != "tags.location.plant" || eq.Right.(*Literal).Value != "Redmond43" {
		t.Errorf("equality: %s", eq)
	}
	in := preds[1].(*In)
	if in.Negate || in.X.(*Path).String() != "deviceId" || !reflect.DeepEqual(in.Values, []any{"d1", "d2"}) {
		t.Errorf("IN: %s", in)
	}
	rng := preds[2].(*Binary)
	if rng.Op != OpGe || !rng.Op.IsComparison() || rng.Right.(*Literal).Value != -5.0 {
		t.Errorf("range: %s", rng)
	}
	sw := preds[3].(*Call)
	if sw.Func != "STARTSWITH" || sw.Args[0].(*Path).String() != "deviceId" || sw.Args[1].(*Literal).Value != "x" {
		t.Errorf("STARTSWITH: %s", sw)
	}
	var paths []string
	Walk(q.Where, func(e Expr) bool {
		if p, ok := e.(*Path); ok {
			paths = append(paths, p.String())
		}
		return true
	})
	if want := []string{"tags.location.plant", "deviceId", "properties.reported.temp", "deviceId"}; !slices.Equal(paths, want) {
		t.Errorf("Walk found paths %q, want %q", paths, want)
	}
}

// TestQueryKinds checks IsSelectStar and IsAggregate.
func TestQueryKinds(t *testing.T) {
	tests := []struct {
		src       string
		star, agg bool
	}{
		{"SELECT * FROM devices", true, false},
		{"SELECT TOP 3 * FROM devices ORDER BY x", true, false},
		{"SELECT deviceId FROM devices", false, false},
		{"SELECT COUNT() FROM devices", false, true},
		{"SELECT x FROM devices GROUP BY x", false, true},
		{"SELECT 1 AS one, MAX(x) FROM devices", false, true},
	}
	for _, tt := range tests {
		q, err := Parse(tt.src)
		if err != nil {
			t.Fatal(err)
		}
		if q.IsSelectStar() != tt.star || q.IsAggregate() != tt.agg {
			t.Errorf("%s: IsSelectStar %v IsAggregate %v, want %v %v", tt.src, q.IsSelectStar(), q.IsAggregate(), tt.star, tt.agg)
		}
	}
}

// TestStringKeepsInvalidBytes checks that a string literal holding bytes
// that are not UTF-8 (which the lexer keeps as they are) renders back to the
// same value.
func TestStringKeepsInvalidBytes(t *testing.T) {
	q, err := Parse("SELECT * FROM devices WHERE x = 'a\xffb\uFFFDc'")
	if err != nil {
		t.Fatal(err)
	}
	want := q.Where.(*Binary).Right.(*Literal).Value
	q2, err := Parse(q.String())
	if err != nil {
		t.Fatal(err)
	}
	if got := q2.Where.(*Binary).Right.(*Literal).Value; got != want {
		t.Fatalf("after String() and Parse: %q, want %q", got, want)
	}
}

// TestPathStringQualifies checks that paths the fuzzer found hard to render
// keep their devices. qualifier.
func TestPathStringQualifies(t *testing.T) {
	for src, want := range map[string]string{
		"devices.SELECT":      "devices.SELECT",
		"devices.null.x":      "devices.null.x",
		"devices.devices.x":   "devices.devices.x",
		"devices.devices":     "devices",
		"devices.DeviceId":    "deviceId",
		"tags.select.devices": "tags.select.devices",
	} {
		q, err := Parse("SELECT " + src + " AS v FROM devices")
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		if got := q.Select[0].Expr.String(); got != want {
			t.Errorf("%s renders as %s, want %s", src, got, want)
		}
	}
}
