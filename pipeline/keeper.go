package pipeline

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/pipeline/topology"
)

// keepCommandBlock keeps one message in the command stream's newest file
// block until ctx ends. The stream is a work queue: below saturation every
// command is removed as soon as it is applied, the newest block empties many
// times a second, and JetStream's file store then deletes that block's file
// and creates the next one (with a tombstone) each time: 7% of the hub's CPU
// at 2,000 updates per second, measured here, and a latency tail. A message
// on a subject no partition consumer reads keeps the block from emptying. A
// new one is published every second, so one lands in each new block, and the
// older ones are purged.
func (p *Processor) keepCommandBlock(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if _, err := p.js.Publish(ctx, topology.CommandKeepSubject, nil); err == nil {
			err = p.commands.Purge(ctx, jetstream.WithPurgeSubject(topology.CommandKeepSubject), jetstream.WithPurgeKeep(1))
			if err != nil && ctx.Err() == nil {
				p.log.Debug("purging the command stream's older keep messages", "err", err)
			}
		} else if ctx.Err() == nil {
			p.log.Debug("publishing the command stream's keep message", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
