// Command eventconsumer reads twinhub's change events on a durable
// JetStream consumer and processes each one at least once, in stream order,
// even across restarts: a copyable starting point for a streaming consumer.
//
// It connects as the read-only "events" user, with the variables that
// `twinhub nats-credentials` prints:
//
//	export $(twinhub nats-credentials)
//	go run ./deploy/examples/eventconsumer -durable my-app
//
// The consumer (named by -durable) lives in the hub's NATS, on stream
// TWINHUB_EVENTS. JetStream remembers what it acknowledged, so a restarted
// program resumes after the last event it acknowledged. An event is
// acknowledged only after process returned, and the acknowledgement is
// confirmed by the server (DoubleAck) before the next event is taken: an
// event whose processing was cut short (a crash, a kill) is delivered again
// once -ack-wait has passed, so processing must be idempotent. Events are
// keyed for that by (deviceId, generationId, version).
//
// process here prints one line per event to stdout; replace it with yours.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The names of twinhub's event stream and subjects, and the schema version
// this program understands (README, "Change events").
const (
	eventStream   = "TWINHUB_EVENTS"
	eventSubjects = "twinhub.events.*"
	schemaHeader  = "Twinhub-Event-Schema"
	schemaVersion = "1"
)

// Event is the part of a change event this program uses; the JSON Schema
// deploy/events/twin-change-event.schema.json describes all of it. Unknown
// fields are ignored, so events that gain fields keep decoding.
type Event struct {
	SchemaVersion int             `json:"schemaVersion"`
	DeviceID      string          `json:"deviceId"`
	GenerationID  string          `json:"generationId"`
	Op            string          `json:"op"`
	Source        string          `json:"source"`
	Version       int64           `json:"version"`
	Time          string          `json:"time"`
	Patch         json.RawMessage `json:"patch"`
}

func main() {
	durable := flag.String("durable", "eventconsumer", "name of the durable consumer; each application uses its own")
	filter := flag.String("filter", eventSubjects, "subject filter: twinhub.events.<device> for one device (README, Change events)")
	ackWait := flag.Duration("ack-wait", 30*time.Second, "how long an event may take to process before it is delivered again")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *durable, *filter, *ackWait, log); err != nil {
		log.Error("eventconsumer stopped", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, durable, filter string, ackWait time.Duration, log *slog.Logger) error {
	url := os.Getenv("NATS_URL")
	if url == "" {
		return errors.New("NATS_URL is not set; run `export $(twinhub nats-credentials)` first")
	}
	opts := []nats.Option{nats.Name("eventconsumer " + durable)}
	if user := os.Getenv("NATS_USER"); user != "" {
		opts = append(opts, nats.UserInfo(user, os.Getenv("NATS_PASSWORD")))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return fmt.Errorf("connecting to NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	// Creating the consumer is idempotent: a restart finds the same one,
	// with what it acknowledged, and starts after that.
	cons, err := js.CreateOrUpdateConsumer(ctx, eventStream, jetstream.ConsumerConfig{
		Durable:       durable,
		FilterSubject: filter,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxAckPending: 1, // one event at a time, so they are processed in stream order
	})
	if err != nil {
		return fmt.Errorf("creating durable consumer %s on %s: %w", durable, eventStream, err)
	}
	msgs, err := cons.Messages()
	if err != nil {
		return err
	}
	// Stopping the iterator ends msgs.Next below.
	go func() {
		<-ctx.Done()
		msgs.Stop()
	}()
	log.Info("consuming change events", "durable", durable, "filter", filter)
	for {
		msg, err := msgs.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading events: %w", err)
		}
		if err := handle(ctx, msg); err != nil {
			// Not acknowledged: JetStream delivers it again after ackWait.
			// A program that cannot go on without it stops here.
			return err
		}
	}
}

// handle processes one event and acknowledges it.
func handle(ctx context.Context, msg jetstream.Msg) error {
	md, err := msg.Metadata()
	if err != nil {
		return err
	}
	if v := msg.Headers().Get(schemaHeader); v != schemaVersion {
		return fmt.Errorf("event %d has schema version %q; this program reads version %s: update it", md.Sequence.Stream, v, schemaVersion)
	}
	var ev Event
	if err := json.Unmarshal(msg.Data(), &ev); err != nil {
		return fmt.Errorf("event %d: %w", md.Sequence.Stream, err)
	}
	if err := process(md.Sequence.Stream, ev); err != nil {
		_ = msg.Nak() // deliver it again now
		return fmt.Errorf("processing event %d: %w", md.Sequence.Stream, err)
	}
	ackCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := msg.DoubleAck(ackCtx); err != nil {
		return fmt.Errorf("acknowledging event %d: %w", md.Sequence.Stream, err)
	}
	return nil
}

// process is the application's work. It must be idempotent: after a crash
// between process and the acknowledgement, the event comes again.
func process(seq uint64, ev Event) error {
	var sections []string
	var p struct {
		Tags       json.RawMessage `json:"tags"`
		Properties struct {
			Desired  json.RawMessage `json:"desired"`
			Reported json.RawMessage `json:"reported"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(ev.Patch, &p); err != nil {
		return err
	}
	for _, s := range []struct {
		name string
		raw  json.RawMessage
	}{{"tags", p.Tags}, {"desired", p.Properties.Desired}, {"reported", p.Properties.Reported}} {
		if s.raw != nil {
			sections = append(sections, s.name)
		}
	}
	_, err := fmt.Printf("seq=%d device=%s generation=%s version=%d op=%s source=%s sections=%s\n",
		seq, ev.DeviceID, ev.GenerationID, ev.Version, ev.Op, ev.Source, strings.Join(sections, ","))
	return err
}
