package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestReadyz: the hub is not ready (503) exactly when some component
// reports a blocking condition; a component that is down without blocking
// makes it degraded (200), a warning leaves it ready; every component is
// listed with its state, whatever the others report.
func TestReadyz(t *testing.T) {
	warning := Condition{Message: "stream X lost 3 messages"}
	down := Condition{Message: "ClickHouse unreachable", Down: true}
	blocking := Condition{Message: "write error", Blocking: true}
	for _, tc := range []struct {
		name       string
		conds      map[string][]Condition
		wantCode   int
		wantStatus string
		want       map[string]string // component → state
	}{
		{"nothing to report", map[string][]Condition{"a": nil, "b": nil}, 200, StatusReady,
			map[string]string{"a": ComponentOK, "b": ComponentOK}},
		{"a warning keeps it ready", map[string][]Condition{"a": {warning}, "b": nil}, 200, StatusReady,
			map[string]string{"a": ComponentWarning, "b": ComponentOK}},
		{"down without blocking: degraded", map[string][]Condition{"a": {warning}, "b": {down}}, 200, StatusDegraded,
			map[string]string{"a": ComponentWarning, "b": ComponentDown}},
		{"a blocking condition", map[string][]Condition{"a": {warning}, "b": {blocking}}, 503, StatusNotReady,
			map[string]string{"a": ComponentWarning, "b": ComponentDown}},
		{"blocking wins over degraded", map[string][]Condition{"a": {down}, "b": {warning, blocking}}, 503, StatusNotReady,
			map[string]string{"a": ComponentDown, "b": ComponentDown}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var comps []Component
			nconds := 0
			for _, name := range []string{"a", "b"} {
				conds := tc.conds[name]
				nconds += len(conds)
				comps = append(comps, Component{Name: name, OK: "fine", Check: func() []Condition { return conds }})
			}
			rec := httptest.NewRecorder()
			Readyz(comps...)(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			var body ReadyzBody
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body is not JSON: %v: %s", err, rec.Body)
			}
			if rec.Code != tc.wantCode || body.Status != tc.wantStatus || len(body.Conditions) != nconds {
				t.Fatalf("got %d %s, want %d with status %q and %d conditions", rec.Code, rec.Body, tc.wantCode, tc.wantStatus, nconds)
			}
			for name, state := range tc.want {
				got := body.Components[name]
				if got.Status != state || got.Message == "" {
					t.Errorf("component %s: %+v, want %s with a message", name, got, state)
				}
			}
			for _, c := range body.Conditions {
				if c.Component == "" {
					t.Errorf("condition without its component: %+v", c)
				}
			}
		})
	}
}

func TestLivez(t *testing.T) {
	rec := httptest.NewRecorder()
	Livez(rec, httptest.NewRequest(http.MethodGet, "/livez", nil))
	if rec.Code != 200 || rec.Body.String() != `{"status":"live"}` {
		t.Fatalf("/livez: %d %s", rec.Code, rec.Body)
	}
}
