package clickhouse

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/pipeline/topology"
)

// become makes this sink the writer when it receives events, which the
// server sends to the pinned sink only: it adds its row to the writer fence,
// so that no insert of an earlier writer can land after the next step, then
// reads the watermarks. An error means ctx ended or msg came from a pin that
// has moved on since.
func (s *Sink) become(ctx context.Context, msg jetstream.Msg) error {
	pin := ""
	if h := msg.Headers(); h != nil {
		pin = h.Get("Nats-Pin-Id")
	}
	if pin != "" {
		info, err := s.cons.Info(ctx)
		if err == nil && len(info.PriorityGroups) > 0 && info.PriorityGroups[0].PinnedClientID != pin {
			return errors.New("the pin moved on")
		}
	}
	if err := s.wait(ctx); err != nil && !errors.Is(err, ErrReplaced) {
		return err
	}
	if err := s.retry(ctx, "becoming the history writer", func(ctx context.Context) error {
		return s.conn.Exec(ctx, acquireWriter(s.writerID))
	}); err != nil {
		return err
	}
	s.needResolve = true
	if err := s.retry(ctx, "reading the history watermark", s.resolveNext); err != nil {
		return err
	}
	s.writing, s.pinID = true, pin
	s.writer.Store(true)
	s.m.writerChanges.Inc()
	s.log.Info("this instance is now the history writer", "writer", s.writerID, "committed_seq", s.Committed())
	return nil
}

// stepDown makes this sink a standby after it learnt that another one is
// the writer. What it holds is dropped: the events stay in JetStream, and
// the writer reads them from there. A write in flight finishes, or the
// fence refuses it.
func (s *Sink) stepDown(reason string) {
	if s.writing {
		s.log.Info("this instance stopped being the history writer", "writer", s.writerID, "reason", reason,
			"committed_seq", s.Committed())
	}
	s.writing, s.pinID = false, ""
	s.writer.Store(false)
	s.cur = batch{}
	s.next = 0 // becoming the writer again reads the watermark first
	s.ack = nil
	s.needResolve = true
}

// handOver releases the pin at shutdown, so that a standby takes over at
// once instead of after topology.HistoryPinnedTTL.
func (s *Sink) handOver(ctx context.Context) {
	info, err := s.cons.Info(ctx)
	if err == nil && len(info.PriorityGroups) > 0 && info.PriorityGroups[0].PinnedClientID == s.pinID && s.pinID != "" {
		err = s.stream.UnpinConsumer(ctx, s.consumer, topology.HistoryPriorityGroup)
	}
	if err != nil {
		s.log.Debug("releasing the history pin failed; a standby takes over when it expires", "err", err)
	}
	s.stepDown("shutting down")
}

// handoff passes the current batch to a writer goroutine, after the
// previous write finished, and starts a new batch.
func (s *Sink) handoff(ctx context.Context, reason string) error {
	if len(s.cur.rows) == 0 {
		s.ackCommitted()
		return nil
	}
	if err := s.wait(ctx); err != nil {
		return err
	}
	b := s.cur
	b.reason = reason
	// Every delivered message noted so far is at or below the batch's last event.
	b.ack, b.ackSeq, s.ack = s.ack, s.ackSeq, nil
	s.cur = batch{rows: make([]eventRow, 0, min(len(b.rows), s.cfg.BatchEvents))}
	done := make(chan error, 1)
	s.inflight = done
	// Exits when ClickHouse accepted the batch or s.wctx ended.
	go func() { done <- s.write(s.wctx, &b) }()
	return nil
}
