package pipeline

import (
	"errors"
	"time"
)

// This file holds what history readers share with the API: replaying change
// events into records, and the shapes of a history read.

// ApplyEvent returns the record after ev, computed exactly as the processor
// computes it when it applies the change, so that replaying a device's events
// from its createDevice event rebuilds its twin as it was (tags, properties,
// $metadata, versions and etag). It does not change prev. It fails when ev
// does not fit prev (e.g. an update of a device that does not exist).
func ApplyEvent(prev *Record, ev *Event) (*Record, error) { return applyEvent(prev, ev) }

// StoredEvent is a change event with its sequence in the event stream, which
// orders a device's events and pages through them.
type StoredEvent struct {
	Sequence uint64 `json:"sequence"`
	Event
}

// HistoryQuery selects a device's change events.
type HistoryQuery struct {
	// From and To bound the event time, inclusive; zero means unbounded.
	From, To time.Time
	// Limit is the page size.
	Limit int
	// Before, when not 0, selects only events with a smaller sequence: the
	// continuation of a previous page.
	Before uint64
}

// HistoryPage is one page of a device's change events, newest first.
type HistoryPage struct {
	Events []StoredEvent
	// More is true when older events match the query: ask again with Before
	// set to the last event's Sequence.
	More bool
}

// ErrInvalidQuery means a history query's arguments are invalid (a bad time
// range or page size); the error text says which.
var ErrInvalidQuery = errors.New("invalid history query")
