package explorer

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHandler: the explorer's files are served under Prefix with a content
// security policy that keeps its pages to the hub's own scripts and API.
func TestHandler(t *testing.T) {
	h := Handler()
	for _, c := range []struct{ path, contentType, contains string }{
		{"/ui/", "text/html", `<script src="app.js"`},
		{"/ui/app.js", "text/javascript", "crypto.subtle.sign"},
		{"/ui/app.css", "text/css", ".conflict"},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", c.path, nil))
		body, _ := io.ReadAll(rec.Body)
		if rec.Code != http.StatusOK || !strings.HasPrefix(rec.Header().Get("Content-Type"), c.contentType) || !strings.Contains(string(body), c.contains) {
			t.Errorf("GET %s: %d %q, want 200 %s with %q", c.path, rec.Code, rec.Header().Get("Content-Type"), c.contentType, c.contains)
		}
		if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "connect-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q does not keep scripts and requests to the hub", c.path, csp)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/ui/nothing.js", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("GET /ui/nothing.js: %d, want 404", rec.Code)
	}
}
