package httpapi

import (
	"encoding/json"
	"net/http"
	"strings"
)

// Condition is one finding of a readiness check.
type Condition struct {
	// Component names the part of the hub the finding is about.
	Component string `json:"component"`
	// Message says what is wrong and what an operator can do.
	Message string `json:"message"`
	// Blocking means the hub cannot take writes while the condition lasts:
	// /readyz answers 503. A condition that is not blocking (such as data
	// found lost at start, or ClickHouse down) is reported with a 200.
	Blocking bool `json:"blocking"`
	// Down means the component does not work. It is implied by Blocking;
	// a component that is down without blocking (ClickHouse: the history
	// falls behind, writes go on) makes the hub "degraded", not unready.
	// A condition that is neither is a warning about a working component.
	Down bool `json:"down,omitempty"`
}

// The states of a component on /readyz.
const (
	ComponentOK      = "ok"
	ComponentWarning = "warning"
	ComponentDown    = "down"
)

// The hub's states on /readyz.
const (
	StatusReady    = "ready"
	StatusDegraded = "degraded"
	StatusNotReady = "not ready"
)

// ComponentStatus is what /readyz says about one component.
type ComponentStatus struct {
	// Status is ComponentOK, ComponentWarning or ComponentDown.
	Status string `json:"status"`
	// Message joins the component's conditions' messages ("; "), or says
	// what is fine.
	Message string `json:"message,omitempty"`
}

// ReadinessCheck reports the conditions of one part of the hub; none
// means the part is fine.
type ReadinessCheck func() []Condition

// Component is one part of the hub /readyz lists, with its check.
type Component struct {
	// Name is the key in /readyz's "components".
	Name string
	// OK is the message while the check finds nothing ("connected").
	OK    string
	Check ReadinessCheck
}

// ReadyzBody is what /readyz answers.
type ReadyzBody struct {
	// Status is StatusReady, StatusDegraded (a component is down, the hub
	// still takes writes) or StatusNotReady (it does not: 503).
	Status     string                     `json:"status"`
	Components map[string]ComponentStatus `json:"components"`
	Conditions []Condition                `json:"conditions,omitempty"`
}

// Readyz serves /readyz: 200 when no component reports a blocking
// condition, with status "ready", or "degraded" while a component that
// writes can do without is down; else 503 "not ready". The body lists
// every component with its status and every condition found. /healthz, in
// contrast, only says the process runs and has started, and /livez that it
// answers at all.
func Readyz(components ...Component) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, status := Evaluate(components...)
		b, _ := json.Marshal(body)
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, status, b)
	}
}

// Evaluate runs every component's check and returns /readyz's body and
// HTTP status.
func Evaluate(components ...Component) (ReadyzBody, int) {
	body := ReadyzBody{Status: StatusReady, Components: make(map[string]ComponentStatus, len(components))}
	status := http.StatusOK
	for _, c := range components {
		cs := ComponentStatus{Status: ComponentOK, Message: c.OK}
		var msgs []string
		for _, cond := range c.Check() {
			if cond.Component == "" {
				cond.Component = c.Name
			}
			body.Conditions = append(body.Conditions, cond)
			msgs = append(msgs, cond.Message)
			switch {
			case cond.Blocking:
				cs.Status = ComponentDown
				body.Status, status = StatusNotReady, http.StatusServiceUnavailable
			case cond.Down:
				cs.Status = ComponentDown
				if body.Status == StatusReady {
					body.Status = StatusDegraded
				}
			case cs.Status == ComponentOK:
				cs.Status = ComponentWarning
			}
		}
		if len(msgs) > 0 {
			cs.Message = strings.Join(msgs, "; ")
		}
		body.Components[c.Name] = cs
	}
	return body, status
}

// Livez serves /livez: 200 {"status":"live"} whenever the process can
// answer HTTP at all. It checks nothing else, so a liveness probe never
// restarts the hub for a dependency's outage (that is what /readyz is for).
func Livez(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, []byte(`{"status":"live"}`))
}
