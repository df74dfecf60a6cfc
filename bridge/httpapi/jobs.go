package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/jobs"
)

// Jobs keeps twin-update jobs; *jobs.Store implements it.
type Jobs interface {
	Create(ctx context.Context, j *jobs.Job) error
	Get(ctx context.Context, jobID string) (*jobs.Job, error)
	Cancel(ctx context.Context, jobID string, now time.Time) (*jobs.Job, error)
	List(ctx context.Context, jobType, status string) ([]*jobs.Job, error)
}

var _ Jobs = (*jobs.Store)(nil)

// jobsAvailable answers 503 when the hub runs no jobs.
func (a *API) jobsAvailable(w http.ResponseWriter) bool {
	if a.cfg.Jobs == nil {
		writeError(w, pipeline.CodeServiceUnavailable, "jobs are not available on this hub")
		return false
	}
	return true
}

// putJob serves PUT /jobs/v2/{jobId}: schedule a twin-update job.
func (a *API) putJob(w http.ResponseWriter, r *http.Request) {
	if !a.jobsAvailable(w) {
		return
	}
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	j, err := jobs.NewJob(r.PathValue("jobId"), body, time.Now())
	if err != nil {
		writeError(w, pipeline.CodeArgumentInvalid, err.Error())
		return
	}
	switch err := a.cfg.Jobs.Create(r.Context(), j); {
	case errors.Is(err, jobs.ErrExists):
		writeError(w, pipeline.CodeJobAlreadyExists, fmt.Sprintf("job %q exists; job IDs are not reused", j.JobID))
		return
	case err != nil:
		a.jobFailed(w, "storing", j.JobID, err)
		return
	}
	writeJob(w, j)
}

// getJob serves GET /jobs/v2/{jobId}.
func (a *API) getJob(w http.ResponseWriter, r *http.Request) {
	if !a.jobsAvailable(w) {
		return
	}
	j, err := a.cfg.Jobs.Get(r.Context(), r.PathValue("jobId"))
	if err != nil {
		a.jobFailed(w, "reading", r.PathValue("jobId"), err)
		return
	}
	writeJob(w, j)
}

// cancelJob serves POST /jobs/v2/{jobId}/cancel: a job that has not ended
// stops (devices already patched stay patched).
func (a *API) cancelJob(w http.ResponseWriter, r *http.Request) {
	if !a.jobsAvailable(w) {
		return
	}
	j, err := a.cfg.Jobs.Cancel(r.Context(), r.PathValue("jobId"), time.Now())
	if err != nil {
		a.jobFailed(w, "cancelling", r.PathValue("jobId"), err)
		return
	}
	writeJob(w, j)
}

// queryJobs serves GET /jobs/v2/query[?jobType=][&jobStatus=]: every
// matching job, oldest first, in one page.
func (a *API) queryJobs(w http.ResponseWriter, r *http.Request) {
	if !a.jobsAvailable(w) {
		return
	}
	list, err := a.cfg.Jobs.List(r.Context(), r.URL.Query().Get("jobType"), r.URL.Query().Get("jobStatus"))
	if err != nil {
		a.jobFailed(w, "listing", "", err)
		return
	}
	if list == nil {
		list = []*jobs.Job{}
	}
	b, _ := json.Marshal(list)
	writeJSON(w, http.StatusOK, b)
}

func (a *API) jobFailed(w http.ResponseWriter, doing, jobID string, err error) {
	if errors.Is(err, jobs.ErrNotFound) {
		writeError(w, pipeline.CodeJobNotFound, fmt.Sprintf("job %q does not exist", jobID))
		return
	}
	a.log.Error(doing+" a job failed", "job", jobID, "err", err)
	writeError(w, pipeline.CodeServiceUnavailable, doing+" the job failed; retry")
}

func writeJob(w http.ResponseWriter, j *jobs.Job) {
	b, err := json.Marshal(j)
	if err != nil {
		panic("BUG: marshalling a job: " + err.Error())
	}
	writeJSON(w, http.StatusOK, b)
}
