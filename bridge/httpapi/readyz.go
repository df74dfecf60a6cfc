package httpapi

import (
	"encoding/json"
	"net/http"
)

// Condition is one finding of a readiness check.
type Condition struct {
	// Component names the part of the hub the finding is about.
	Component string `json:"component"`
	// Message says what is wrong and what an operator can do.
	Message string `json:"message"`
	// Blocking means the hub cannot take writes while the condition lasts:
	// /readyz answers 503. A condition that is not blocking is a warning
	// (such as data found lost at start) that /readyz reports with a 200.
	Blocking bool `json:"blocking"`
}

// ReadinessCheck reports the conditions of one part of the hub; none
// means the part is fine.
type ReadinessCheck func() []Condition

// readyzBody is what /readyz answers.
type readyzBody struct {
	// Status is "ready" or "not ready".
	Status     string      `json:"status"`
	Conditions []Condition `json:"conditions,omitempty"`
}

// Readyz serves /readyz: 200 {"status":"ready"} when no check reports a
// blocking condition, else 503 {"status":"not ready"}; both list every
// condition found. /healthz, in contrast, only says the process runs and
// has started.
func Readyz(checks ...ReadinessCheck) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body := readyzBody{Status: "ready"}
		status := http.StatusOK
		for _, check := range checks {
			for _, c := range check() {
				body.Conditions = append(body.Conditions, c)
				if c.Blocking {
					body.Status, status = "not ready", http.StatusServiceUnavailable
				}
			}
		}
		b, _ := json.Marshal(body)
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, status, b)
	}
}
