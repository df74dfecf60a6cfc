package twin

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseJSONAccepts(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want any
	}{
		{"object", `{"a":1,"b":"x"}`, map[string]any{"a": json.Number("1"), "b": "x"}},
		{"empty object", `{}`, map[string]any{}},
		{"empty array", `[]`, []any{}},
		{"literals", `[true,false,null]`, []any{true, false, nil}},
		{"white space", " \t\r\n{ \"a\" : [ 1 , 2 ] }\n", map[string]any{"a": []any{json.Number("1"), json.Number("2")}}},
		{"number kept verbatim", `[1.50,-0,1E+2,0.0e-0]`, []any{json.Number("1.50"), json.Number("-0"), json.Number("1E+2"), json.Number("0.0e-0")}},
		{"huge integer within float64", `123456789012345678901234567890`, json.Number("123456789012345678901234567890")},
		{"underflow is not overflow", `1e-400`, json.Number("1e-400")},
		{"escapes", `"\"\\\/\b\f\n\r\t\u00e9\u0000"`, "\"\\/\b\f\n\r\té\x00"},
		{"surrogate pair", `"\ud83d\ude00"`, "😀"},
		{"raw UTF-8", `"日本語"`, "日本語"},
		{"depth 64", strings.Repeat("[", 64) + strings.Repeat("]", 64), nest64()},
		{"scalar top level", `"x"`, "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseJSON([]byte(tt.in))
			if err != nil {
				t.Fatalf("ParseJSON(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("ParseJSON(%q) = %#v, want %#v", tt.in, got, tt.want)
			}
		})
	}
}

func nest64() any {
	var v any = []any{}
	for range 63 {
		v = []any{v}
	}
	return v
}

func TestParseJSONRejects(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantMsg string // substring of Msg
		path    string
	}{
		{"empty input", ``, "byte offset 0: empty input", ""},
		{"only white space", "  \n", "byte offset 3: empty input", ""},
		{"invalid UTF-8", "{\"a\":\"\xff\"}", "byte offset 6: invalid UTF-8", "a"},
		{"invalid UTF-8 overlong", "\"\xc0\xaf\"", "invalid UTF-8", ""},
		{"UTF-8 encoded surrogate", "\"\xed\xa0\x80\"", "invalid UTF-8", ""},
		{"lone high surrogate", `"\ud800"`, "lone high surrogate", ""},
		{"high surrogate then letter", `"\ud800x"`, "lone high surrogate", ""},
		{"high surrogate then non-low", `"\ud800\u0041"`, "lone high surrogate", ""},
		{"lone low surrogate", `"\udc00"`, "lone low surrogate", ""},
		{"duplicate key", `{"a":1,"a":2}`, `byte offset 7: duplicate object key "a"`, ""},
		{"duplicate key via escape", `{"a":1,"\u0061":2}`, `duplicate object key "a"`, ""},
		{"nested duplicate key", `{"x":[{"b":1,"b":1}]}`, `duplicate object key "b"`, "x[0]"},
		{"overflow", `1e400`, "overflows float64", ""},
		{"negative overflow", `{"a":-1e400}`, "overflows float64", "a"},
		{"trailing garbage", `{} x`, "byte offset 3: trailing data 'x'", ""},
		{"two values", `1 2`, "trailing data", ""},
		{"depth 65", strings.Repeat("[", 65) + strings.Repeat("]", 65), "deeper than 64", strings.Repeat("[0]", 64)},
		{"depth 65 unterminated", strings.Repeat(`{"a":`, 100000), "deeper than 64", strings.TrimSuffix(strings.Repeat("a.", 64), ".")},
		{"bad escape", `"\x"`, `invalid escape sequence: a backslash followed by 'x'`, ""},
		{"short unicode escape", `"\u12"`, `four hex digits`, ""},
		{"leading zero", `01`, "leading zero", ""},
		{"leading zero negative", `-012`, "leading zero", ""},
		{"bare minus", `-`, "a digit is expected", ""},
		{"dot without digits", `1.`, "after the decimal point", ""},
		{"exponent without digits", `1e+`, "in the exponent", ""},
		{"plus sign", `+1`, "invalid character '+'", ""},
		{"raw control character", "\"a\nb\"", "control character U+000A", ""},
		{"single quotes", `{'a':1}`, "object key", ""},
		{"trailing comma object", `{"a":1,}`, "object key", ""},
		{"trailing comma array", `[1,]`, "invalid character ']'", "[1]"},
		{"missing colon", `{"a" 1}`, "':' is expected", ""},
		{"bad literal", `tru`, `"true" is expected`, ""},
		{"NaN", `NaN`, "invalid character 'N'", ""},
		{"unterminated string", `"abc`, "inside a string", ""},
		{"unterminated object", `{"a":1`, "',' or '}'", ""},
		{"BOM", "\xef\xbb\xbf{}", "invalid character", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := ParseJSON([]byte(tt.in))
			if err == nil {
				t.Fatalf("ParseJSON(%q) = %#v, want an error", tt.in, v)
			}
			var e *Error
			if !errors.As(err, &e) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v is not an *Error matching ErrInvalid", err)
			}
			if e.Rule != RuleJSON || !strings.Contains(e.Msg, tt.wantMsg) || e.Path != tt.path {
				t.Fatalf("got rule %q path %q msg %q; want rule json path %q msg containing %q", e.Rule, e.Path, e.Msg, tt.path, tt.wantMsg)
			}
		})
	}
}

func TestParseObject(t *testing.T) {
	tests := []struct {
		in       string
		wantRule string
	}{
		{`{"a":1}`, ""},
		{`[1]`, RuleShape},
		{`"s"`, RuleShape},
		{`null`, RuleShape},
		{`{`, RuleJSON},
	}
	for _, tt := range tests {
		_, err := ParseObject([]byte(tt.in))
		if got := ruleOf(err); got != tt.wantRule {
			t.Errorf("ParseObject(%q): rule %q (%v), want %q", tt.in, got, err, tt.wantRule)
		}
	}
}

// TestAppendStringMatchesEncodingJSON pins the string escaping to
// encoding/json's.
func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{
		"", "plain", `quote " and \ backslash`, "<tag>&amp;", "\x00\x01\b\f\n\r\t\x1f\x7f",
		"\u0085 \u2028 \u2029 é 日本 😀", "bad \xff utf8 \xc0", "/slash",
	} {
		want, _ := json.Marshal(s)
		if got := appendString(nil, s); string(got) != string(want) {
			t.Errorf("appendString(%q) = %s, want %s", s, got, want)
		}
	}
}

func TestErrorFormat(t *testing.T) {
	e := &Error{Rule: RuleKey, Path: "tags.a", Msg: "key contains '$'"}
	if got, want := e.Error(), "twin: key rule violated at tags.a: key contains '$'"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	e = &Error{Rule: RuleJSON, Msg: "byte offset 0: empty input"}
	if got, want := e.Error(), "twin: json rule violated: byte offset 0: empty input"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(e, ErrInvalid) {
		t.Error("errors.Is(*Error, ErrInvalid) = false")
	}
	if errors.Is(errors.New("other"), ErrInvalid) {
		t.Error("unrelated error matches ErrInvalid")
	}
}

// ruleOf returns the Rule of err, "" for nil and "not *Error" otherwise.
func ruleOf(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if !errors.As(err, &e) {
		return "not *Error"
	}
	return e.Rule
}
