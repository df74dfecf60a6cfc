package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestReadyz(t *testing.T) {
	warning := Condition{Component: "jetstream", Message: "stream X lost 3 messages"}
	blocking := Condition{Component: "jetstream", Message: "write error", Blocking: true}
	for _, tc := range []struct {
		name       string
		conds      [][]Condition
		wantStatus int
		wantText   string
		wantConds  int
	}{
		{"nothing to report", [][]Condition{nil, nil}, 200, "ready", 0},
		{"a warning keeps it ready", [][]Condition{{warning}}, 200, "ready", 1},
		{"a blocking condition", [][]Condition{{warning}, {blocking}}, 503, "not ready", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var checks []ReadinessCheck
			for _, c := range tc.conds {
				checks = append(checks, func() []Condition { return c })
			}
			rec := httptest.NewRecorder()
			Readyz(checks...)(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
			var body readyzBody
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatalf("body is not JSON: %v: %s", err, rec.Body)
			}
			if rec.Code != tc.wantStatus || body.Status != tc.wantText || len(body.Conditions) != tc.wantConds {
				t.Fatalf("got %d %s, want %d with status %q and %d conditions", rec.Code, rec.Body, tc.wantStatus, tc.wantText, tc.wantConds)
			}
		})
	}
}
