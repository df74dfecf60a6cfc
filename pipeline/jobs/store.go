package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/pipeline/topology"
)

// ErrNotFound means no job has the ID.
var ErrNotFound = errors.New("job not found")

// ErrExists means a job with the ID exists already.
var ErrExists = errors.New("job exists")

// ErrConflict means the job's record changed since it was read.
var ErrConflict = errors.New("job record changed")

// record is a job as stored: the job and its runner's bookkeeping.
type record struct {
	Job Job `json:"job"`
	// Cursor is the device query's continuation token after the last
	// device whose result is counted; "" before the first.
	Cursor string `json:"cursor,omitempty"`
	// Owner and LeaseUntil name the instance running the job and until
	// when; another instance may take the job over after it.
	Owner      string    `json:"owner,omitempty"`
	LeaseUntil time.Time `json:"leaseUntil,omitzero"`
	// Failed lists the first devices the patch failed on, with why.
	Failed []string `json:"failed,omitempty"`
}

// keyPrefix starts the keys of jobs in the hub bucket.
const keyPrefix = "jobs."

func key(jobID string) string { return keyPrefix + topology.Token(jobID) }

// Store keeps jobs in the hub bucket.
type Store struct {
	kv jetstream.KeyValue
}

// OpenStore binds to the hub bucket, which topology.Ensure must have created.
func OpenStore(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	kv, err := js.KeyValue(ctx, topology.HubBucket)
	if err != nil {
		return nil, fmt.Errorf("opening KV bucket %s: %w", topology.HubBucket, err)
	}
	return &Store{kv: kv}, nil
}

// Create stores a new job; ErrExists if the ID is taken.
func (s *Store) Create(ctx context.Context, j *Job) error {
	b, err := json.Marshal(record{Job: *j})
	if err != nil {
		return fmt.Errorf("BUG: encoding job %s: %w", j.JobID, err)
	}
	if _, err := s.kv.Create(ctx, key(j.JobID), b); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("%w: %s", ErrExists, j.JobID)
		}
		return fmt.Errorf("storing job %s: %w", j.JobID, err)
	}
	return nil
}

// Get returns a job.
func (s *Store) Get(ctx context.Context, jobID string) (*Job, error) {
	rec, _, err := s.load(ctx, key(jobID))
	if err != nil {
		return nil, err
	}
	return &rec.Job, nil
}

func (s *Store) load(ctx context.Context, k string) (*record, uint64, error) {
	e, err := s.kv.Get(ctx, k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("reading job %s: %w", k, err)
	}
	var rec record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, 0, fmt.Errorf("decoding job %s: %w", k, err)
	}
	return &rec, e.Revision(), nil
}

// save writes rec if the record is still at revision rev; ErrConflict if not.
func (s *Store) save(ctx context.Context, rec *record, rev uint64) (uint64, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return 0, fmt.Errorf("BUG: encoding job %s: %w", rec.Job.JobID, err)
	}
	n, err := s.kv.Update(ctx, key(rec.Job.JobID), b, rev)
	if errors.Is(err, jetstream.ErrKeyExists) || isWrongLastSeq(err) {
		return 0, ErrConflict
	}
	if err != nil {
		return 0, fmt.Errorf("saving job %s: %w", rec.Job.JobID, err)
	}
	return n, nil
}

func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Cancel ends a job that has not ended: status cancelled. It returns the
// job as it is afterwards (a job that ended already is returned as it is).
func (s *Store) Cancel(ctx context.Context, jobID string, now time.Time) (*Job, error) {
	for {
		rec, rev, err := s.load(ctx, key(jobID))
		if err != nil {
			return nil, err
		}
		if rec.Job.Terminal() {
			return &rec.Job, nil
		}
		rec.Job.Status = StatusCancelled
		rec.Job.EndTime = formatTime(now)
		rec.Job.DeviceJobStatistics.RunningCount = 0
		if _, err := s.save(ctx, rec, rev); errors.Is(err, ErrConflict) {
			continue // the runner wrote progress meanwhile: read it again
		} else if err != nil {
			return nil, err
		}
		return &rec.Job, nil
	}
}

// List returns the jobs of a type and status ("" for any), oldest first.
func (s *Store) List(ctx context.Context, jobType, status string) ([]*Job, error) {
	recs, err := s.records(ctx, nil)
	if err != nil {
		return nil, err
	}
	var out []*Job
	for _, r := range recs {
		if (jobType == "" || r.rec.Job.Type == jobType) && (status == "" || r.rec.Job.Status == status) {
			out = append(out, &r.rec.Job)
		}
	}
	return out, nil
}

type storedRecord struct {
	key string
	rec *record
	rev uint64
}

// records reads every job whose key skip does not name (nil: every job),
// in creation order.
func (s *Store) records(ctx context.Context, skip func(key string) bool) ([]storedRecord, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, keyPrefix+">")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing jobs: %w", err)
	}
	defer lister.Stop()
	var out []storedRecord
	for k := range lister.Keys() {
		if !strings.HasPrefix(k, keyPrefix) || (skip != nil && skip(k)) {
			continue
		}
		rec, rev, err := s.load(ctx, k)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, storedRecord{k, rec, rev})
	}
	slices.SortFunc(out, func(a, b storedRecord) int {
		return strings.Compare(a.rec.Job.CreatedTime+a.rec.Job.JobID, b.rec.Job.CreatedTime+b.rec.Job.JobID)
	})
	return out, nil
}
