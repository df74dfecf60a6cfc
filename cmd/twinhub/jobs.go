package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinhub/twinhub/bridge/httpapi"
	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/jobs"
)

// startJobs opens the job store and builds this instance's job runner,
// which patches devices through client and selects them with queries.
func startJobs(ctx context.Context, js jetstream.JetStream, client *pipeline.Client, store *pipeline.Store, queries *queryService,
	rate int, log *slog.Logger, reg prometheus.Registerer) (*jobs.Store, *jobs.Runner, error) {
	jobStore, err := jobs.OpenStore(ctx, js)
	if err != nil {
		return nil, nil, err
	}
	host, _ := os.Hostname()
	runner, err := jobs.NewRunner(jobs.Config{Store: jobStore, Devices: jobDevices{queries}, Commands: client, Records: store,
		Instance: fmt.Sprintf("%s-%d-%s", host, os.Getpid(), nuid.Next()[:8]), Rate: rate, Logger: log}, reg)
	if err != nil {
		return nil, nil, err
	}
	return jobStore, runner, nil
}

// jobDevices pages through a job's devices with the query projection.
type jobDevices struct{ q *queryService }

func (d jobDevices) Page(ctx context.Context, query, continuation string, size int) ([]string, string, error) {
	page, err := d.q.Query(ctx, httpapi.QueryRequest{Query: query, PageSize: size, Continuation: continuation})
	if errors.Is(err, httpapi.ErrBadQuery) {
		return nil, "", fmt.Errorf("%w: %v", jobs.ErrInvalid, err)
	}
	if err != nil {
		return nil, "", err
	}
	ids := make([]string, 0, len(page.Items))
	for _, item := range page.Items {
		var row struct {
			DeviceID string `json:"deviceId"`
		}
		if err := json.Unmarshal(item, &row); err != nil || row.DeviceID == "" {
			return nil, "", fmt.Errorf("BUG: a job's device query returned the row %s", item)
		}
		ids = append(ids, row.DeviceID)
	}
	return ids, page.Continuation, nil
}
