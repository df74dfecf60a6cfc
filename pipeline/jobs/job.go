// Package jobs runs IoT Hub's twin-update jobs (PUT /jobs/v2/{jobId} with
// type scheduleUpdateTwin): one twin patch applied to every device a query
// condition selects, at a start time, within a maximum execution time.
//
// A job is stored in the hub bucket (topology.HubBucket, key "jobs.<token>")
// with its progress: a continuation token into the device query (devices
// are visited in deviceId order) and the device counts. Every instance runs
// a Runner; the one that holds a job's lease (its name and an expiry in the
// job's record, renewed with every progress write, each a compare-and-swap on
// the record's revision) runs it, and another takes over when the lease
// expires, from the last progress written. Each device's patch is an
// ordinary pipeline command whose ID is derived from the job and the device,
// so a device the previous runner patched but did not record is found in
// the twin record's recent commands and is not patched again.
package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/twin"
	"github.com/twinhub/twinhub/queries/lang"
)

// Job types and statuses, as IoT Hub names them.
const (
	TypeUpdateTwin = "scheduleUpdateTwin"

	StatusQueued    = "queued"
	StatusRunning   = "running"
	StatusCompleted = "completed"
	StatusFailed    = "failed"
	StatusCancelled = "cancelled"
)

// MaxJobIDLength bounds a job ID (IoT Hub: 128 characters).
const MaxJobIDLength = 128

// Job is a job in IoT Hub's JobResponse shape (GET /jobs/v2/{jobId}).
type Job struct {
	JobID                     string          `json:"jobId"`
	QueryCondition            string          `json:"queryCondition"`
	CreatedTime               string          `json:"createdTime"`
	StartTime                 string          `json:"startTime"`
	EndTime                   string          `json:"endTime,omitempty"`
	MaxExecutionTimeInSeconds int64           `json:"maxExecutionTimeInSeconds"`
	Type                      string          `json:"type"`
	Status                    string          `json:"status"`
	UpdateTwin                json.RawMessage `json:"updateTwin,omitempty"`
	FailureReason             string          `json:"failureReason,omitempty"`
	StatusMessage             string          `json:"statusMessage,omitempty"`
	DeviceJobStatistics       Statistics      `json:"deviceJobStatistics"`
}

// Statistics counts a job's devices.
type Statistics struct {
	DeviceCount    int64 `json:"deviceCount"`
	FailedCount    int64 `json:"failedCount"`
	SucceededCount int64 `json:"succeededCount"`
	RunningCount   int64 `json:"runningCount"`
	PendingCount   int64 `json:"pendingCount"`
}

// Terminal reports whether the job has ended.
func (j *Job) Terminal() bool {
	switch j.Status {
	case StatusCompleted, StatusFailed, StatusCancelled:
		return true
	}
	return false
}

// Request is the body of PUT /jobs/v2/{jobId}.
type Request struct {
	JobID                     string          `json:"jobId"`
	Type                      string          `json:"type"`
	QueryCondition            string          `json:"queryCondition"`
	UpdateTwin                json.RawMessage `json:"updateTwin"`
	StartTime                 string          `json:"startTime"`
	MaxExecutionTimeInSeconds *int64          `json:"maxExecutionTimeInSeconds"`
	CloudToDeviceMethod       json.RawMessage `json:"cloudToDeviceMethod"`
}

// ErrInvalid marks a job request that cannot be run; its message says why.
var ErrInvalid = errors.New("invalid job")

// DefaultMaxExecution is a job's maximum execution time when the request
// gives none.
const DefaultMaxExecution = time.Hour

// NewJob validates a job request for jobID and returns the job as created
// at now: status queued, every count zero. Errors wrap ErrInvalid.
func NewJob(jobID string, body []byte, now time.Time) (*Job, error) {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
	}
	if err := ValidateJobID(jobID); err != nil {
		return nil, invalid("%v", err)
	}
	var req Request
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, invalid("the body must be a JSON job request: %v", err)
	}
	if req.JobID != "" && req.JobID != jobID {
		return nil, invalid("jobId %q in the body differs from %q in the path", req.JobID, jobID)
	}
	switch req.Type {
	case TypeUpdateTwin:
	case "scheduleDeviceMethod":
		return nil, invalid("job type scheduleDeviceMethod is not supported: twinhub has no direct methods; use scheduleUpdateTwin")
	default:
		return nil, invalid("job type %q is not supported; use scheduleUpdateTwin", req.Type)
	}
	if strings.TrimSpace(req.QueryCondition) == "" {
		return nil, invalid("queryCondition is required, e.g. \"tags.building = '43'\" or \"deviceId IN ['d1','d2']\"")
	}
	q, err := lang.Parse(DeviceQuery(req.QueryCondition))
	if err != nil {
		return nil, invalid("queryCondition: %v", err)
	}
	if len(q.GroupBy) > 0 || len(q.OrderBy) > 0 {
		return nil, invalid("queryCondition must be a WHERE condition only, without GROUP BY or ORDER BY")
	}
	if len(req.UpdateTwin) == 0 || string(req.UpdateTwin) == "null" {
		return nil, invalid("updateTwin is required: the twin patch to apply, e.g. {\"properties\":{\"desired\":{…}}}")
	}
	if err := pipeline.CheckTwinPatch(req.UpdateTwin); err != nil {
		return nil, invalid("updateTwin: %v", err)
	}
	start := now
	if req.StartTime != "" {
		t, err := time.Parse(time.RFC3339Nano, req.StartTime)
		if err != nil {
			return nil, invalid("startTime %q is not an ISO 8601 time", req.StartTime)
		}
		start = t
	}
	maxExec := int64(DefaultMaxExecution / time.Second)
	if req.MaxExecutionTimeInSeconds != nil {
		if *req.MaxExecutionTimeInSeconds < 1 {
			return nil, invalid("maxExecutionTimeInSeconds must be positive, got %d", *req.MaxExecutionTimeInSeconds)
		}
		maxExec = *req.MaxExecutionTimeInSeconds
	}
	return &Job{
		JobID:                     jobID,
		QueryCondition:            req.QueryCondition,
		CreatedTime:               formatTime(now),
		StartTime:                 formatTime(start),
		MaxExecutionTimeInSeconds: maxExec,
		Type:                      TypeUpdateTwin,
		Status:                    StatusQueued,
		UpdateTwin:                req.UpdateTwin,
	}, nil
}

// ValidateJobID checks a job ID: 1 to 128 characters of those IoT Hub
// allows in device IDs.
func ValidateJobID(id string) error {
	if id == "" || len(id) > MaxJobIDLength {
		return fmt.Errorf("job ID must be 1 to %d characters", MaxJobIDLength)
	}
	if err := twin.ValidateDeviceID(id); err != nil {
		return fmt.Errorf("job ID %q: allowed are ASCII letters, digits and - . %% _ * ? ! ( ) , : = @ $ '", id)
	}
	return nil
}

// DeviceQuery is the query that selects a job's devices, in deviceId order.
func DeviceQuery(condition string) string {
	return "SELECT deviceId FROM devices WHERE " + condition
}

func (j *Job) start() time.Time {
	t, _ := time.Parse(time.RFC3339Nano, j.StartTime)
	return t
}

func formatTime(t time.Time) string { return twin.FormatTime(t.UTC().Truncate(100 * time.Nanosecond)) }
