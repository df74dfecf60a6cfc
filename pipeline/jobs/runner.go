package jobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/twinhub/twinhub/pipeline"
)

// Devices pages through the devices a query selects, in deviceId order;
// cmd/twinhub adapts the query projection to it. An error wrapping
// ErrInvalid means the query can never run.
type Devices interface {
	Page(ctx context.Context, query, continuation string, size int) (deviceIDs []string, next string, err error)
}

// Commands applies pipeline commands; *pipeline.Client implements it.
type Commands interface {
	Do(ctx context.Context, cmd pipeline.Command) (pipeline.Result, error)
}

// Records reads twin records; *pipeline.Store implements it.
type Records interface {
	Get(ctx context.Context, deviceID string) (*pipeline.Record, error)
}

// Config configures a Runner.
type Config struct {
	Store    *Store
	Devices  Devices
	Commands Commands
	Records  Records
	// Instance names this instance in the leases it takes.
	Instance string
	// Lease is how long a job stays with its runner after its last
	// progress write (default 15 s): after a runner dies, another instance
	// resumes its job within about this long.
	Lease time.Duration
	// Rate bounds the devices a job patches per second (default 1,000), so
	// that a job over a large fleet leaves room for device traffic.
	Rate int
	// Concurrency bounds a job's patches in flight (default 32).
	Concurrency int
	// PageSize is how many devices are patched between progress writes
	// (default 100): after a crash, at most this many are visited again.
	PageSize int
	// Poll is how often the runner looks for jobs to run (default 1 s).
	Poll   time.Duration
	Now    func() time.Time
	Logger *slog.Logger
}

func (c *Config) defaults() {
	if c.Lease == 0 {
		c.Lease = 15 * time.Second
	}
	if c.Rate == 0 {
		c.Rate = 1000
	}
	if c.Concurrency == 0 {
		c.Concurrency = 32
	}
	if c.PageSize == 0 {
		c.PageSize = 100
	}
	if c.Poll == 0 {
		c.Poll = time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports what is wrong with the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Store == nil || c.Devices == nil || c.Commands == nil || c.Records == nil {
		errs = append(errs, errors.New("BUG: jobs runner needs its store, devices, commands and records"))
	}
	if c.Instance == "" {
		errs = append(errs, errors.New("jobs runner needs an instance name"))
	}
	if c.Rate < 0 || c.Concurrency < 0 || c.PageSize < 0 || c.Lease < 0 {
		errs = append(errs, errors.New("jobs runner rate, concurrency, page size and lease must not be negative"))
	}
	return errors.Join(errs...)
}

// Runner runs the jobs whose start time has come, one at a time, each to its
// end or until its lease is lost.
type Runner struct {
	cfg     Config
	log     *slog.Logger
	devices *prometheus.CounterVec
	running prometheus.Gauge
	// ended holds the keys of jobs seen ended (Run's goroutine only).
	ended map[string]bool
}

// NewRunner builds a runner.
func NewRunner(cfg Config, reg prometheus.Registerer) (*Runner, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	f := promauto.With(reg)
	r := &Runner{cfg: cfg, log: cfg.Logger.With("component", "jobs"), ended: map[string]bool{},
		devices: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "twinhub", Subsystem: "jobs", Name: "devices_total",
			Help: "Devices visited by twin-update jobs on this instance, by result (succeeded, failed).",
		}, []string{"result"}),
		running: f.NewGauge(prometheus.GaugeOpts{
			Namespace: "twinhub", Subsystem: "jobs", Name: "running",
			Help: "Twin-update jobs this instance is running (0 or 1).",
		}),
	}
	r.devices.WithLabelValues("succeeded")
	r.devices.WithLabelValues("failed")
	return r, nil
}

// Run looks for due jobs every Poll and runs them, until ctx ends.
func (r *Runner) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Poll)
	defer t.Stop()
	for {
		if err := r.runDue(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("looking for due jobs failed; trying again", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// runDue claims and runs the first due job no other instance holds. A
// job seen ended is not read again: jobs are kept, and an ended job never
// runs again.
func (r *Runner) runDue(ctx context.Context) error {
	recs, err := r.cfg.Store.records(ctx, func(key string) bool { return r.ended[key] })
	if err != nil {
		return err
	}
	now := r.cfg.Now()
	for _, sr := range recs {
		rec := sr.rec
		if rec.Job.Terminal() {
			r.ended[sr.key] = true
			continue
		}
		if rec.Job.start().After(now) {
			continue
		}
		if rec.Owner != "" && rec.Owner != r.cfg.Instance && now.Before(rec.LeaseUntil) {
			continue
		}
		if rec.Owner != "" && rec.Owner != r.cfg.Instance {
			r.log.Info("taking over a job whose runner's lease expired", "job", rec.Job.JobID, "previous_owner", rec.Owner)
		}
		rec.Owner, rec.LeaseUntil = r.cfg.Instance, now.Add(r.cfg.Lease)
		rec.Job.Status = StatusRunning
		rev, err := r.cfg.Store.save(ctx, rec, sr.rev)
		if errors.Is(err, ErrConflict) {
			continue // another instance claimed it, or it was cancelled
		}
		if err != nil {
			return err
		}
		r.running.Set(1)
		err = r.run(ctx, rec, rev)
		r.running.Set(0)
		return err
	}
	return nil
}

// run works through a claimed job page by page, writing its progress (and
// renewing the lease) after each page.
func (r *Runner) run(ctx context.Context, rec *record, rev uint64) error {
	log := r.log.With("job", rec.Job.JobID)
	deadline := rec.Job.start().Add(time.Duration(rec.Job.MaxExecutionTimeInSeconds) * time.Second)
	query := DeviceQuery(rec.Job.QueryCondition)
	// Only the first page after a claim can hold devices patched already:
	// a page's progress is written before the next page starts.
	resumed := true
	for ctx.Err() == nil {
		now := r.cfg.Now()
		if !now.Before(deadline) {
			rec.Job.Status, rec.Job.FailureReason = StatusFailed,
				fmt.Sprintf("the job ran past its maxExecutionTimeInSeconds (%d s) with devices left to update", rec.Job.MaxExecutionTimeInSeconds)
			rec.Job.EndTime = formatTime(now)
			_, err := r.cfg.Store.save(ctx, rec, rev)
			log.Warn("a job ran out of time", "reason", rec.Job.FailureReason)
			return err
		}
		ids, next, err := r.cfg.Devices.Page(ctx, query, rec.Cursor, r.cfg.PageSize)
		if errors.Is(err, ErrInvalid) {
			rec.Job.Status, rec.Job.FailureReason, rec.Job.EndTime = StatusFailed, err.Error(), formatTime(now)
			_, err := r.cfg.Store.save(ctx, rec, rev)
			return err
		}
		if err != nil {
			log.Warn("reading a job's devices failed; trying again", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(r.cfg.Poll):
			}
			continue
		}
		pageStart := time.Now()
		ok, failed := r.patch(ctx, rec.Job.JobID, rec.Job.UpdateTwin, ids, resumed)
		resumed = false
		if ctx.Err() != nil {
			return nil // progress of this page is not written: the next runner visits it again
		}
		// Pace the job to Rate devices per second.
		if min := time.Duration(len(ids)) * time.Second / time.Duration(r.cfg.Rate); time.Since(pageStart) < min {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(min - time.Since(pageStart)):
			}
		}
		st := &rec.Job.DeviceJobStatistics
		st.DeviceCount += int64(len(ids))
		st.SucceededCount += int64(ok)
		st.FailedCount += int64(len(failed))
		for _, f := range failed {
			if len(rec.Failed) < 100 {
				rec.Failed = append(rec.Failed, f)
			}
		}
		rec.Cursor, rec.LeaseUntil = next, r.cfg.Now().Add(r.cfg.Lease)
		if next == "" {
			rec.Job.Status, rec.Job.EndTime, rec.Owner = StatusCompleted, formatTime(r.cfg.Now()), ""
			if st.FailedCount > 0 {
				rec.Job.StatusMessage = fmt.Sprintf("%d of %d devices failed, e.g. %s", st.FailedCount, st.DeviceCount, rec.Failed[0])
			}
		}
		newRev, err := r.cfg.Store.save(ctx, rec, rev)
		if errors.Is(err, ErrConflict) {
			// Cancelled, or taken over after our lease ran out: read it again.
			cur, curRev, err := r.cfg.Store.load(ctx, key(rec.Job.JobID))
			if err != nil {
				return err
			}
			if cur.Job.Terminal() || cur.Owner != r.cfg.Instance {
				log.Info("a job stopped here", "status", cur.Job.Status, "owner", cur.Owner)
				return nil
			}
			rec, rev = cur, curRev // our write raced with ourselves: go on from what is stored
			continue
		}
		if err != nil {
			return err
		}
		rev = newRev
		if next == "" {
			log.Info("a job completed", "devices", st.DeviceCount, "succeeded", st.SucceededCount, "failed", st.FailedCount)
			return nil
		}
	}
	return nil
}

// patch applies the job's patch to each device, Concurrency at a time, and
// returns how many succeeded and why the others failed. resumed says the
// page may hold devices a runner patched before it died.
func (r *Runner) patch(ctx context.Context, jobID string, patch []byte, ids []string, resumed bool) (ok int, failed []string) {
	var mu sync.Mutex
	sem := make(chan struct{}, r.cfg.Concurrency)
	var wg sync.WaitGroup
	for _, id := range ids {
		sem <- struct{}{}
		wg.Add(1)
		// Exits when the device's command has its result (or ctx ends).
		go func() {
			defer func() { <-sem; wg.Done() }()
			err := r.patchOne(ctx, jobID, patch, id, resumed)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				r.devices.WithLabelValues("failed").Inc()
				failed = append(failed, id+": "+err.Error())
				return
			}
			r.devices.WithLabelValues("succeeded").Inc()
			ok++
		}()
	}
	wg.Wait()
	slices.Sort(failed)
	return ok, failed
}

// patchOne applies the job's patch to one device. On a resumed page it
// first asks the device's record whether the command was applied already
// (by a runner that died before recording it): resubmitted within the
// command stream's duplicate window, the command would get no result and
// wait out the client's timeout. Elsewhere that read is saved; the
// processor would answer a repeated command ID as a duplicate anyway.
func (r *Runner) patchOne(ctx context.Context, jobID string, patch []byte, deviceID string, resumed bool) error {
	cmdID := CommandID(jobID, deviceID)
	applied := func() (bool, error) {
		rec, err := r.cfg.Records.Get(ctx, deviceID)
		if err != nil {
			return false, err
		}
		return slices.Contains(rec.Recent, cmdID), nil
	}
	if resumed {
		if done, err := applied(); err != nil {
			return err
		} else if done {
			return nil
		}
	}
	res, err := r.cfg.Commands.Do(ctx, pipeline.Command{ID: cmdID, Kind: pipeline.KindPatchTwin, DeviceID: deviceID, Body: patch})
	if errors.Is(err, pipeline.ErrTimeout) {
		// A command stored before (under the same ID, within the stream's
		// duplicate window) gets no second result: ask the record.
		if done, err2 := applied(); err2 == nil && done {
			return nil
		}
	}
	if err != nil {
		return err
	}
	if !res.OK() {
		return res.Err()
	}
	return nil
}

// CommandID is the ID of the command that applies job jobID to a device:
// the same on every runner, so the device's record recognises it.
func CommandID(jobID, deviceID string) string {
	sum := sha256.Sum256([]byte(jobID + "\x00" + deviceID))
	return "job" + hex.EncodeToString(sum[:16])
}
