package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// handle adds one delivered event to the batch, in sequence order.
func (s *Sink) handle(ctx context.Context, msg jetstream.Msg) error {
	md, err := msg.Metadata()
	if err != nil {
		s.log.Error("BUG: a delivered change event has no JetStream metadata", "subject", msg.Subject(), "err", err)
		return nil
	}
	seq := md.Sequence.Stream
	if seq < s.next {
		// Committed already, or in a batch: a redelivery.
		if seq <= s.Committed() {
			s.m.duplicates.Inc()
		}
		s.noteAck(msg, seq)
		return nil
	}
	if seq > s.next {
		// Events before this one were delivered to an earlier sink that
		// crashed, or are gone; read them from the stream first.
		if err := s.fill(ctx, seq-1); err != nil {
			return err
		}
		if seq < s.next { // the fill found ClickHouse further on
			s.noteAck(msg, seq)
			return nil
		}
	}
	if err := s.add(ctx, seq, msg.Data()); err != nil {
		return err
	}
	s.noteAck(msg, seq)
	return nil
}

// add appends event seq (== s.next) to the batch and hands a full batch over.
func (s *Sink) add(ctx context.Context, seq uint64, data []byte) error {
	if seq != s.next {
		panic(fmt.Sprintf("BUG: history sink adds seq %d, expected %d", seq, s.next))
	}
	s.next = seq + 1
	row, err := decodeEvent(seq, data)
	if err != nil {
		// Not a change event twinhub can have written: nothing to store.
		s.log.Error("skipping an undecodable change event", "seq", seq, "err", err)
		s.m.undecodable.Inc()
		return nil
	}
	if len(s.cur.rows) == 0 {
		s.cur.start = time.Now()
	}
	s.cur.rows = append(s.cur.rows, row)
	s.cur.leaves += len(row.leaves)
	if len(s.cur.rows) >= s.cfg.BatchEvents || s.cur.leaves >= s.cfg.BatchLeaves {
		return s.handoff(ctx, "size")
	}
	return nil
}

// fill adds the events from s.next up to upto, read from the stream with an
// ordered consumer. It first commits what the sink holds and reads the
// watermarks again, so that rows another writer added are not written twice.
func (s *Sink) fill(ctx context.Context, upto uint64) error {
	if err := s.handoff(ctx, "gap"); err != nil {
		return err
	}
	if err := s.wait(ctx); err != nil {
		return err
	}
	s.needResolve = true
	if err := s.retry(ctx, "reading the history watermark", s.resolveNext); err != nil {
		return err
	}
	if s.next > upto {
		return nil
	}
	s.log.Info("reading change events from the stream to close a gap", "from_seq", s.next, "to_seq", upto)
	return s.retry(ctx, "reading change events from the stream", func(ctx context.Context) error {
		oc, err := s.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:   s.next,
		})
		if err != nil {
			return err
		}
		for s.next <= upto {
			mb, err := oc.Fetch(int(min(upto-s.next+1, uint64(s.cfg.FetchSize))), jetstream.FetchMaxWait(time.Second))
			if err != nil {
				return err
			}
			got := 0
			for msg := range mb.Messages() {
				md, err := msg.Metadata()
				if err != nil {
					continue
				}
				seq := md.Sequence.Stream
				if seq < s.next || seq > upto {
					continue
				}
				got++
				if seq > s.next {
					s.missed(seq - s.next)
					s.next = seq
				}
				if err := s.add(ctx, seq, msg.Data()); err != nil {
					return err
				}
			}
			if err := mb.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
				return err
			}
			if got == 0 {
				// The rest of the range was deleted from the stream.
				s.missed(upto - s.next + 1)
				s.next = upto + 1
			}
		}
		return nil
	})
}

func (s *Sink) missed(n uint64) {
	s.m.missing.Add(float64(n))
	s.log.Error("change events were removed from JetStream before they reached ClickHouse (stream max age or a purge); their history is lost",
		"events", n, "first_seq", s.next)
}

func (s *Sink) noteAck(msg jetstream.Msg, seq uint64) {
	if seq >= s.ackSeq {
		s.ack, s.ackSeq = msg, seq
	}
}

// ackCommitted acknowledges the highest delivered event the batches did not
// take if it is committed; with AckAll that acknowledges every event before
// it too.
func (s *Sink) ackCommitted() {
	if s.ack == nil || s.ackSeq > s.Committed() {
		return
	}
	ack(s.ack, s.ackSeq, s.hook, s.log)
	s.ack = nil
}

func ack(msg jetstream.Msg, seq uint64, hook func(string), log *slog.Logger) {
	hook("ack")
	if err := msg.Ack(); err != nil {
		// The events are in ClickHouse; a redelivery is skipped.
		log.Debug("acknowledging change events failed", "seq", seq, "err", err)
	}
}

// batch is a run of consecutive change events above the lowest watermark,
// in sequence order, and the delivered message that acknowledges them.
type batch struct {
	rows   []eventRow
	leaves int
	start  time.Time // when the first event was added
	reason string    // what flushed it (a metric label)
	ack    jetstream.Msg
	ackSeq uint64
}
