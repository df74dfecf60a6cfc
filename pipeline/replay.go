package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/pipeline/topology"
)

// lagsSeveral reports whether rec is more than one change behind ev, its
// device's newest event. A crash leaves a record at most one event behind
// (the batch loop writes a device's record before its next command), so
// this happens only when the bucket lost its newest writes with damaged
// files while the event stream kept them.
func lagsSeveral(rec *Record, ev *Event) bool {
	return rec.Exists() && rec.LastEventSeq > 0 && ev.Op != OpCreateDevice && ev.Version > rec.Twin.Version+1
}

// replayForward brings a record that lags several events behind up to its
// device's newest event, by applying every event after the record's, in
// order, as rollForward applies one. It fails, leaving the record as it is,
// if one of those events is missing too (their versions do not follow on).
func (p *Processor) replayForward(ctx context.Context, deviceID string, rec *Record, rev uint64) error {
	subject := topology.EventSubject(deviceID)
	next, replayed := rec, 0
	for seq := rec.LastEventSeq + 1; ; {
		msg, err := p.events.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading the events of %s from seq %d: %w", deviceID, seq, err)
		}
		var ev Event
		if err := json.Unmarshal(msg.Data, &ev); err != nil {
			return fmt.Errorf("decoding event seq %d of %s: %w", msg.Sequence, deviceID, err)
		}
		if err := checkNext(next, &ev); err != nil {
			return fmt.Errorf("cannot replay the events of %s into its record: event seq %d: %w; "+
				"events between them are missing, restore the data directory from a backup", deviceID, msg.Sequence, err)
		}
		applied, err := applyEvent(next, &ev)
		if err != nil {
			return fmt.Errorf("replaying event seq %d of %s: %w", msg.Sequence, deviceID, err)
		}
		applied.LastEventSeq = msg.Sequence
		next, replayed, seq = applied, replayed+1, msg.Sequence+1
	}
	if _, err := p.store.save(ctx, deviceID, next, rev); err != nil {
		if isWrongLastSeq(err) || errors.Is(err, jetstream.ErrKeyExists) {
			return nil // another writer saved the record meanwhile; the caller reads it again
		}
		return fmt.Errorf("saving the replayed record of %s: %w", deviceID, err)
	}
	p.metrics.rollForwards.Add(float64(replayed))
	p.log.Warn("replayed a twin record's lost writes from its events", "device", deviceID,
		"events", replayed, "from_seq", rec.LastEventSeq+1, "to_seq", next.LastEventSeq, "version", next.Twin.Version)
	return nil
}
