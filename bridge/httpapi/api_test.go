package httpapi

import (
	"net/http"
	"slices"
	"testing"
)

func TestMatchesNothing(t *testing.T) {
	for _, c := range []struct {
		values []string
		want   bool
	}{
		{[]string{`""`}, true},
		{[]string{`W/""`}, true},
		{[]string{""}, true},
		{[]string{" , "}, true},
		{[]string{`"", W/""`}, true},
		{[]string{`"*"`}, false},
		{[]string{"*"}, false},
		{[]string{`"AAAAAAAAAAE="`}, false},
		{[]string{`"", "AAAAAAAAAAE="`}, false},
		{[]string{`""`, `"x"`}, false},
	} {
		if got := matchesNothing(c.values); got != c.want {
			t.Errorf("matchesNothing(%q) = %v, want %v", c.values, got, c.want)
		}
	}
}

// TestRouteResource: every route about one device is that device's
// resource; the others are the whole hub's.
func TestRouteResource(t *testing.T) {
	mux := http.NewServeMux()
	var got []string
	for _, pattern := range []string{"GET /devices/{id}", "GET /twins/{id}", "GET /twins/{id}/history", "GET /devices", "POST /devices/query", "GET /events",
		"GET /twins/{id}/modules/{mid}", "PUT /devices/{id}/modules/{mid}"} {
		mux.HandleFunc(pattern, func(_ http.ResponseWriter, r *http.Request) { got = routeResource(r) })
	}
	for _, c := range []struct {
		method, path string
		want         []string
	}{
		{"GET", "/devices/d1", []string{"devices", "d1"}},
		{"GET", "/twins/d1", []string{"devices", "d1"}},
		{"GET", "/twins/d1/history", []string{"devices", "d1"}},
		{"GET", "/twins/a%2Fb", []string{"devices", "a/b"}}, // covered by no token; the handler answers 400
		{"GET", "/twins/d1/modules/m1", []string{"devices", "d1", "modules", "m1"}},
		{"PUT", "/devices/d1/modules/m1", []string{"devices", "d1", "modules", "m1"}},
		{"GET", "/devices", nil},
		{"POST", "/devices/query", nil},
		{"GET", "/events?deviceId=d%2F1", []string{"devices", "d", "modules", "1"}},
		{"GET", "/events?deviceIdPrefix=d", nil},
	} {
		got = []string{"unset"}
		req, _ := http.NewRequest(c.method, "http://localhost"+c.path, nil)
		mux.ServeHTTP(nopWriter{}, req)
		if !slices.Equal(got, c.want) {
			t.Errorf("%s %s: resource %q, want %q", c.method, c.path, got, c.want)
		}
	}
}

type nopWriter struct{}

func (nopWriter) Header() http.Header         { return http.Header{} }
func (nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (nopWriter) WriteHeader(int)             {}
