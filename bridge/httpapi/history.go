package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/twin"
)

// History reads twin history; *history.Reader (queries/history) implements
// it. Errors matching pipeline.ErrInvalidQuery become 400, those matching
// pipeline.ErrNotFound 404, others 503.
type History interface {
	// Events returns a page of a device's change events, newest first.
	Events(ctx context.Context, deviceID string, q pipeline.HistoryQuery) (pipeline.HistoryPage, error)
	// AsOf rebuilds a device's twin as it was at an instant.
	AsOf(ctx context.Context, deviceID string, at time.Time) (*twin.Twin, error)
}

// historyOff is the answer when twinhub runs without ClickHouse.
const historyOff = "twin history is off: start twinhub with --clickhouse-url clickhouse://host:9000/twinhub " +
	"or with --clickhouse-local on (needs the clickhouse-server package)"

// historyPage is the body of GET /twins/{id}/history.
type historyPage struct {
	DeviceID string                 `json:"deviceId"`
	Events   []pipeline.StoredEvent `json:"events"`
	// ContinuationToken, when present, fetches the next (older) page:
	// repeat the request with ?continuationToken=<it>.
	ContinuationToken string `json:"continuationToken,omitempty"`
}

// twinHistory serves GET /twins/{id}/history?from=&to=&limit=&continuationToken=.
func (a *API) twinHistory(w http.ResponseWriter, r *http.Request) {
	if a.cfg.History == nil {
		writeError(w, pipeline.CodeServiceUnavailable, historyOff)
		return
	}
	id := r.PathValue("id")
	params := r.URL.Query()
	var q pipeline.HistoryQuery
	var ok bool
	if q.From, ok = parseTime(w, "from", params.Get("from")); !ok {
		return
	}
	if q.To, ok = parseTime(w, "to", params.Get("to")); !ok {
		return
	}
	if v := params.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			writeError(w, pipeline.CodeArgumentInvalid, fmt.Sprintf("limit must be an integer, got %q", v))
			return
		}
		if n < 1 {
			writeError(w, pipeline.CodeArgumentInvalid, fmt.Sprintf("limit must be positive, got %d", n))
			return
		}
		q.Limit = n
	}
	token := params.Get("continuationToken")
	if token == "" {
		token = r.Header.Get("x-ms-continuation")
	}
	if token != "" {
		n, err := strconv.ParseUint(token, 10, 64)
		if err != nil || n == 0 {
			writeError(w, pipeline.CodeArgumentInvalid, fmt.Sprintf("continuationToken %q is not one this API returned", token))
			return
		}
		q.Before = n
	}
	page, err := a.cfg.History.Events(r.Context(), id, q)
	if !a.historyError(w, id, err) {
		return
	}
	body := historyPage{DeviceID: id, Events: page.Events}
	if page.More && len(page.Events) > 0 {
		body.ContinuationToken = strconv.FormatUint(page.Events[len(page.Events)-1].Sequence, 10)
		w.Header().Set("x-ms-continuation", body.ContinuationToken)
	}
	b, err := json.Marshal(body)
	if err != nil {
		panic("BUG: marshalling a history page: " + err.Error())
	}
	writeJSON(w, http.StatusOK, b)
}

// twinAsOf serves GET /twins/{id}?asOf=<RFC 3339 time>: the twin as it was then.
func (a *API) twinAsOf(w http.ResponseWriter, r *http.Request) {
	if a.cfg.History == nil {
		writeError(w, pipeline.CodeServiceUnavailable, historyOff)
		return
	}
	id := r.PathValue("id")
	v := r.URL.Query().Get("asOf")
	if v == "" {
		writeError(w, pipeline.CodeArgumentInvalid, "asOf must be an RFC 3339 time, e.g. 2026-01-02T15:04:05Z")
		return
	}
	at, ok := parseTime(w, "asOf", v)
	if !ok {
		return
	}
	t, err := a.cfg.History.AsOf(r.Context(), id, at)
	if !a.historyError(w, id, err) {
		return
	}
	b, err := json.Marshal(t)
	if err != nil {
		panic("BUG: marshalling a twin: " + err.Error())
	}
	writeJSON(w, http.StatusOK, b)
}

// historyError writes the error response for err and reports whether there was none.
func (a *API) historyError(w http.ResponseWriter, id string, err error) bool {
	switch {
	case err == nil:
		return true
	case errors.Is(err, pipeline.ErrInvalidQuery):
		writeError(w, pipeline.CodeArgumentInvalid, err.Error())
	case errors.Is(err, pipeline.ErrNotFound):
		writeError(w, pipeline.CodeDeviceNotFound, err.Error())
	default:
		a.log.Warn("reading twin history failed", "device", id, "err", err)
		writeError(w, pipeline.CodeServiceUnavailable, "reading the twin history failed; retry: "+err.Error())
	}
	return false
}

// parseTime parses an optional RFC 3339 query parameter ("" is the zero time).
func parseTime(w http.ResponseWriter, name, v string) (time.Time, bool) {
	if v == "" {
		return time.Time{}, true
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		writeError(w, pipeline.CodeArgumentInvalid,
			fmt.Sprintf("%s %q is not an RFC 3339 time, e.g. 2026-01-02T15:04:05Z or 2026-01-02T15:04:05.1234567+01:00", name, v))
		return time.Time{}, false
	}
	return t, true
}
