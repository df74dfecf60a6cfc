package projection

import "errors"

var (
	// ErrInvalidContinuation means a continuation token is malformed or was
	// issued for another query. The caller made the mistake (HTTP 400): send
	// the same query text with the token, or start again without one.
	ErrInvalidContinuation = errors.New("invalid continuation token")

	// ErrLagging means the projection could not apply, within
	// Config.CatchUpTimeout, every change acknowledged before the query
	// started (or has not finished its initial load). The query was not run;
	// retry it (HTTP 503). If it persists, check the connection to NATS and
	// the twinhub_projection_revision metric.
	ErrLagging = errors.New("the query projection is behind the twin records")

	// ErrClosed means the projection stopped (its Run returned).
	ErrClosed = errors.New("the query projection is stopped")
)
