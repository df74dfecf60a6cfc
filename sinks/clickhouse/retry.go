package clickhouse

import (
	"context"
	"errors"
	"time"
)

// retry runs f until it succeeds or ctx ends, logging failures.
func (s *Sink) retry(ctx context.Context, what string, f func(context.Context) error) error {
	failures := 0
	return s.retryQuiet(ctx, f, func(err error, backoff time.Duration) {
		failures++
		if failures <= 1 || failures%10 == 0 {
			s.log.Warn(what+" failed; retrying", "err", err, "failures", failures, "backoff", backoff)
		}
	})
}

// retryQuiet runs f until it succeeds, ctx ends or another sink replaced
// this one, calling onErr with each failure and the wait after it.
func (s *Sink) retryQuiet(ctx context.Context, f func(context.Context) error, onErr func(error, time.Duration)) error {
	wait := s.newBackoff()
	for {
		err := f(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrReplaced) {
			return err // final: another sink writes these events
		}
		d := wait.next()
		onErr(err, d)
		if !sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// fetchFailed logs a failed fetch of change events and waits before the
// next one.
func (s *Sink) fetchFailed(ctx context.Context, err error, wait *backoff) {
	d := wait.next()
	s.log.Warn("fetching change events failed; retrying", "err", err, "backoff", d)
	sleep(ctx, d)
}

// backoff is the wait between failed attempts: RetryMin after the first
// failure, doubling with each further one up to RetryMax.
type backoff struct{ min, max, cur time.Duration }

func (s *Sink) newBackoff() *backoff { return &backoff{min: s.cfg.RetryMin, max: s.cfg.RetryMax} }

// next is the wait after one more failure.
func (b *backoff) next() time.Duration {
	d := max(b.cur, b.min)
	b.cur = min(2*d, b.max)
	return d
}

// reset starts over after a success.
func (b *backoff) reset() { b.cur = 0 }

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
