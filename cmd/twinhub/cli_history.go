package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// twinHistoryOptions are the flags of `twinhub twin history`.
type twinHistoryOptions struct {
	from, to *string
	limit    *int
	all      *bool
}

func twinHistoryFlags(fs *envFlags) twinHistoryOptions {
	return twinHistoryOptions{
		from:  fs.String("from", "", "only changes at or after this RFC 3339 time"),
		to:    fs.String("to", "", "only changes at or before this RFC 3339 time"),
		limit: fs.Int("limit", 0, "changes per page (default 100, at most 1000)"),
		all:   fs.Bool("all", false, "follow the pages to the oldest change"),
	}
}

// fetch reads a twin's history, newest first: one page, or with --all every
// page, printed as one document.
func (o twinHistoryOptions) fetch(ctx context.Context, api *apiClient, path string) ([]byte, error) {
	q := url.Values{}
	if *o.from != "" {
		q.Set("from", *o.from)
	}
	if *o.to != "" {
		q.Set("to", *o.to)
	}
	if *o.limit != 0 {
		q.Set("limit", strconv.Itoa(*o.limit))
	}
	var all struct {
		DeviceID          string            `json:"deviceId"`
		Events            []json.RawMessage `json:"events"`
		ContinuationToken string            `json:"continuationToken,omitempty"`
	}
	for {
		b, err := api.call(ctx, http.MethodGet, path+"/history?"+q.Encode(), nil, nil)
		if err != nil {
			return nil, err
		}
		if !*o.all {
			return b, nil
		}
		var page struct {
			DeviceID          string            `json:"deviceId"`
			Events            []json.RawMessage `json:"events"`
			ContinuationToken string            `json:"continuationToken"`
		}
		if err := json.Unmarshal(b, &page); err != nil {
			return nil, fmt.Errorf("history page: %w", err)
		}
		all.DeviceID = page.DeviceID
		all.Events = append(all.Events, page.Events...)
		if page.ContinuationToken == "" {
			return json.Marshal(all)
		}
		q.Set("continuationToken", page.ContinuationToken)
	}
}
