package topology

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// attemptTimeout bounds one JetStream API call while waiting for the cluster.
	attemptTimeout = 5 * time.Second
	// waitLogEvery is how often a start-up that keeps waiting says so.
	waitLogEvery = 5 * time.Second
	// maxBackoff is the longest pause between two attempts.
	maxBackoff = 2 * time.Second
)

// JetStream API error codes of a cluster that is not ready yet (nats-server's
// errors.json): it recovers by itself once leaders are elected and servers
// have joined.
var notReadyCodes = map[jetstream.ErrorCode]bool{
	10008: true, // JetStream system temporarily unavailable (no meta leader)
	10009: true, // JetStream cluster can not handle request
	10023: true, // insufficient resources (fewer servers up than replicas)
	10005: true, // no suitable peers for placement
}

// codeReplicasNotSupported is the refusal of R>1 by a server that is not
// clustered ("replicas > 1 not supported in non-clustered mode").
const codeReplicasNotSupported jetstream.ErrorCode = 10074

// notReady reports whether err means "JetStream is not available yet" rather
// than a refusal that waiting cannot change.
func notReady(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return notReadyCodes[apiErr.ErrorCode] || apiErr.ErrorCode == jetstream.JSErrCodeJetStreamNotEnabled
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled)
}

// isAPIError reports whether err is a JetStream API error with the code.
func isAPIError(err error, code jetstream.ErrorCode) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == code
}

// refused reports whether err is NATS refusing the client (credentials or
// permissions), which looks like a timeout to a request and which waiting
// does not cure.
func refused(err error) bool {
	return errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrPermissionViolation)
}

// waiter retries JetStream API calls while the cluster is not ready,
// logging every waitLogEvery that it is still waiting.
type waiter struct {
	conn    *nats.Conn // its LastError tells a refusal from a cluster that is not ready
	log     *slog.Logger
	since   time.Time // first not-ready answer, zero while there was none
	lastLog time.Time
}

// retry runs op, with its own attempt deadline, until it succeeds, fails
// with an error that waiting cannot fix, or ctx ends.
func (w *waiter) retry(ctx context.Context, what string, op func(context.Context) error) error {
	backoff := 100 * time.Millisecond
	for {
		if w.conn != nil && refused(w.conn.LastError()) {
			return fmt.Errorf("%s: NATS refused the client: %w", what, w.conn.LastError())
		}
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := op(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() == nil && !notReady(err) {
			return fmt.Errorf("%s: %w", what, err)
		}
		if w.conn != nil && refused(w.conn.LastError()) {
			return fmt.Errorf("%s: %w (NATS refused the client: %w)", what, err, w.conn.LastError())
		}
		if w.since.IsZero() {
			w.since = time.Now()
		}
		if ctx.Err() == nil && time.Since(w.lastLog) >= waitLogEvery {
			w.lastLog = time.Now()
			w.log.Info("waiting for NATS JetStream: the cluster is electing its leaders or servers are still joining",
				"doing", what, "waited", time.Since(w.since).Round(time.Second), "err", err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			if errors.Is(ctx.Err(), context.Canceled) {
				return fmt.Errorf("%s: %w", what, ctx.Err()) // stopped, not timed out
			}
			return fmt.Errorf("%s: %w after %s (last error: %v); check that the servers in --nats-url are running "+
				"with JetStream, that a majority of the cluster is up with at least --replicas JetStream servers, "+
				"and that twinhub's NATS user may use the JetStream API ($JS.API.>), whose refusals look like timeouts",
				what, ErrNotReady, time.Since(w.since).Round(time.Second), err)
		case <-t.C:
		}
		backoff = min(2*backoff, maxBackoff)
	}
}
