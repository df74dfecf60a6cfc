package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/twinhub/twinhub/pipeline"
)

// Querier answers twin queries for POST /devices/query; cmd/twinhub adapts
// the query projection (queries/projection) to it.
type Querier interface {
	// Query returns one page of a query. Errors wrapping ErrBadQuery are the
	// request's fault (400); any other means the hub cannot answer now (503).
	Query(ctx context.Context, req QueryRequest) (QueryPage, error)
}

// QueryRequest is one page request of POST /devices/query.
type QueryRequest struct {
	// Query is the query text, the body's "query".
	Query string
	// PageSize is x-ms-max-item-count: 0 when absent (the Querier's
	// default, 100), at most MaxQueryPageSize.
	PageSize int
	// Continuation is x-ms-continuation, "" for the first page.
	Continuation string
}

// QueryPage is one page of query results.
type QueryPage struct {
	// Items are the rows as JSON values.
	Items []json.RawMessage
	// Twins is true when the rows are whole twins (SELECT *):
	// x-ms-item-type twin, else raw.
	Twins bool
	// Continuation is the next page's token, "" on the last page (then the
	// x-ms-continuation header is left out, as the Azure SDKs expect).
	Continuation string
}

// MaxQueryPageSize caps x-ms-max-item-count.
const MaxQueryPageSize = 1000

// ErrBadQuery marks errors a query request caused: a query that does not
// parse or break the language's rules, or a bad continuation token.
var ErrBadQuery = errors.New("bad query request")

// query serves POST /devices/query: body {"query":"SELECT …"}, headers
// x-ms-max-item-count and x-ms-continuation in; a JSON array of rows,
// x-ms-item-type and (but on the last page) x-ms-continuation out.
func (a *API) query(w http.ResponseWriter, r *http.Request) {
	if a.cfg.Querier == nil {
		writeError(w, pipeline.CodeServiceUnavailable, "twin queries are not available on this hub")
		return
	}
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	var req struct {
		Query *string `json:"query"`
	}
	if err := json.Unmarshal(body, &req); err != nil || req.Query == nil {
		writeError(w, pipeline.CodeArgumentInvalid, `the body must be a JSON object {"query":"SELECT … FROM devices …"}`)
		return
	}
	size := 0
	if v := r.Header.Get("x-ms-max-item-count"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, pipeline.CodeArgumentInvalid, fmt.Sprintf("x-ms-max-item-count must be a positive integer, got %q", v))
			return
		}
		size = min(n, MaxQueryPageSize)
	}
	page, err := a.cfg.Querier.Query(r.Context(), QueryRequest{Query: *req.Query, PageSize: size, Continuation: r.Header.Get("x-ms-continuation")})
	switch {
	case errors.Is(err, ErrBadQuery):
		writeError(w, pipeline.CodeArgumentInvalid, err.Error())
		return
	case err != nil:
		a.log.Warn("a twin query failed", "err", err)
		writeError(w, pipeline.CodeServiceUnavailable, err.Error())
		return
	}
	itemType := "raw"
	if page.Twins {
		itemType = "twin"
	}
	w.Header().Set("x-ms-item-type", itemType)
	if page.Continuation != "" {
		w.Header().Set("x-ms-continuation", page.Continuation)
	}
	n := 2
	for _, it := range page.Items {
		n += len(it) + 1
	}
	out := make([]byte, 0, n)
	out = append(out, '[')
	for i, it := range page.Items {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, it...)
	}
	writeJSON(w, http.StatusOK, append(out, ']'))
}
