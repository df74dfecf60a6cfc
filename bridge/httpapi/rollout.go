package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/twinhub/twinhub/pipeline"
)

// Rollouts answers rollout queries from history; *history.Reader
// (queries/history) implements it. A History that does not gets 503.
type Rollouts interface {
	Rollout(ctx context.Context, q pipeline.RolloutQuery) ([]pipeline.RolloutPoint, error)
}

// rolloutPage is the body of GET /rollout.
type rolloutPage struct {
	Path   string                  `json:"path"`
	Points []pipeline.RolloutPoint `json:"points"`
}

// rollout serves GET /rollout?path=&from=&to=&points=: for one desired
// property, how many devices had it set and how many had reported the same
// value, at evenly spread instants (default 50) from from to to (default:
// the last 24 hours).
func (a *API) rollout(w http.ResponseWriter, r *http.Request) {
	ro, ok := a.cfg.History.(Rollouts)
	if !ok {
		writeError(w, pipeline.CodeServiceUnavailable, historyOff)
		return
	}
	params := r.URL.Query()
	q := pipeline.RolloutQuery{Path: params.Get("path"), Points: 50}
	if q.From, ok = parseTime(w, "from", params.Get("from")); !ok {
		return
	}
	if q.To, ok = parseTime(w, "to", params.Get("to")); !ok {
		return
	}
	if q.To.IsZero() {
		q.To = time.Now()
	}
	if q.From.IsZero() {
		q.From = q.To.Add(-24 * time.Hour)
	}
	if v := params.Get("points"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			writeError(w, pipeline.CodeArgumentInvalid, fmt.Sprintf("points must be an integer, got %q", v))
			return
		}
		q.Points = n
	}
	points, err := ro.Rollout(r.Context(), q)
	if !a.historyError(w, "", err) {
		return
	}
	b, err := json.Marshal(rolloutPage{Path: q.Path, Points: points})
	if err != nil {
		panic("BUG: marshalling a rollout: " + err.Error())
	}
	writeJSON(w, http.StatusOK, b)
}
