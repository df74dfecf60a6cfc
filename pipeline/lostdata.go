package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/pipeline/topology"
)

// LostData is data a stream no longer holds although it once stored it:
// what JetStream found damaged in the stream's files when it recovered the
// stream (a torn or corrupted tail after a crash or a disk fault) and
// dropped, or change events the twin records refer to beyond the end of
// the event stream.
type LostData struct {
	Stream string
	// Messages counts the lost messages known by sequence; Sequences
	// lists them as ranges ("96-101"). A record cut in half may be counted
	// in Bytes only.
	Messages  int
	Sequences string
	Bytes     uint64
	// How says how the loss was found.
	How string
}

// String describes the loss for an operator.
func (l LostData) String() string {
	var what string
	switch {
	case l.Messages > 0 && l.Bytes > 0:
		what = fmt.Sprintf("%d messages (sequences %s, %d bytes)", l.Messages, l.Sequences, l.Bytes)
	case l.Messages > 0:
		what = fmt.Sprintf("%d messages (sequences %s)", l.Messages, l.Sequences)
	default:
		what = fmt.Sprintf("%d bytes of damaged data", l.Bytes)
	}
	return fmt.Sprintf("stream %s lost %s: %s", l.Stream, what, l.How)
}

// maxDeletedDetails is the most deleted sequences a stream may have for
// FindLostData to ask for its detailed state (8 bytes or so each in the reply).
const maxDeletedDetails = 50_000

// FindLostData reports the data the streams lost: what JetStream dropped
// when it recovered each stream at this start (nats-server remembers it
// only until its next restart), and change events missing from the end of
// the event stream although the newest twin record refers to them. It
// reads every stream's state; call it once, after start-up.
func FindLostData(ctx context.Context, js jetstream.JetStream) ([]LostData, error) {
	var out []LostData
	names := js.StreamNames(ctx)
	var errs []error
	var eventsLast uint64
	for name := range names.Name() {
		s, err := js.Stream(ctx, name)
		if err != nil {
			errs = append(errs, fmt.Errorf("reading stream %s: %w", name, err))
			continue
		}
		info := s.CachedInfo()
		if name == topology.EventStream {
			eventsLast = info.State.LastSeq
		}
		// The fast state leaves out what recovery lost; the detailed one has
		// it, but also lists every deleted sequence, which for a big bucket
		// may not fit in a reply: skip those.
		if info.State.NumDeleted > maxDeletedDetails {
			continue
		}
		if info, err = s.Info(ctx, jetstream.WithDeletedDetails(true)); err != nil {
			errs = append(errs, fmt.Errorf("reading the state of stream %s: %w", name, err))
			continue
		}
		if lost := info.State.Lost; lost != nil && (len(lost.Msgs) > 0 || lost.Bytes > 0) {
			out = append(out, LostData{Stream: name, Messages: len(lost.Msgs), Sequences: SequenceRanges(lost.Msgs),
				Bytes: lost.Bytes, How: "JetStream found it damaged when it recovered the stream at start"})
		}
	}
	if err := names.Err(); err != nil {
		errs = append(errs, fmt.Errorf("listing streams: %w", err))
	}
	newest, err := newestRecordEvent(ctx, js)
	if err != nil {
		errs = append(errs, err)
	} else if newest > eventsLast {
		out = append(out, LostData{Stream: topology.EventStream, Messages: int(newest - eventsLast),
			Sequences: seqRange(eventsLast+1, newest),
			How:       fmt.Sprintf("the stream ends at sequence %d, but the newest twin record refers to event %d", eventsLast, newest)})
	}
	if len(errs) > 0 {
		return out, fmt.Errorf("checking the streams for lost data: %w", errors.Join(errs...))
	}
	return out, nil
}

// newestRecordEvent returns the event sequence the most recently written
// twin record refers to (0 if there is none). Records are written after
// their events are stored, so no event up to it may be missing.
func newestRecordEvent(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	// The stream behind a KV bucket is named by nats.go's convention.
	s, err := js.Stream(ctx, "KV_"+topology.TwinBucket)
	if err != nil {
		return 0, fmt.Errorf("reading the stream of bucket %s: %w", topology.TwinBucket, err)
	}
	last := s.CachedInfo().State.LastSeq
	if last == 0 {
		return 0, nil
	}
	msg, err := s.GetMsg(ctx, last)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading the newest twin record: %w", err)
	}
	var rec Record
	if len(msg.Data) == 0 || json.Unmarshal(msg.Data, &rec) != nil {
		return 0, nil // a delete marker, or not a record: nothing to compare
	}
	return rec.LastEventSeq, nil
}

// seqRange renders first..last as "first-last", or "first" if they are equal.
func seqRange(first, last uint64) string {
	if first == last {
		return strconv.FormatUint(first, 10)
	}
	return strconv.FormatUint(first, 10) + "-" + strconv.FormatUint(last, 10)
}

// SequenceRanges renders ascending sequences compactly: "3-7,9,12-13".
func SequenceRanges(seqs []uint64) string {
	var b strings.Builder
	for i := 0; i < len(seqs); {
		j := i
		for j+1 < len(seqs) && seqs[j+1] == seqs[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(seqs[i], 10))
		if j > i {
			b.WriteByte('-')
			b.WriteString(strconv.FormatUint(seqs[j], 10))
		}
		i = j + 1
	}
	return b.String()
}
