package topology

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// kvStream is the stream behind a KV bucket (nats.go's naming).
func kvStream(bucket string) string { return "KV_" + bucket }

// Streams lists every stream twinhub provisions, the streams behind its KV
// buckets included, in provisioning order.
func Streams() []string {
	return []string{CommandStream, EventStream, kvStream(TwinBucket), kvStream(HubBucket)}
}

// streamConfigs is the wanted configuration of every stream in Streams' order.
func streamConfigs(cfg Config) []jetstream.StreamConfig {
	return []jetstream.StreamConfig{
		{
			Name:        CommandStream,
			Description: "twinhub commands waiting for the twin processor",
			Subjects:    []string{commandPrefix + ">"},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
			Duplicates:  cfg.DuplicateWindow,
			MaxMsgSize:  cfg.MaxMsgSize,
			Metadata:    map[string]string{partitionsMetadataKey: strconv.Itoa(cfg.Partitions)},
		},
		{
			Name:        EventStream,
			Description: "twinhub change events: one per accepted twin change, subject per device",
			Subjects:    []string{EventSubjects},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
			Duplicates:  cfg.DuplicateWindow,
			MaxAge:      cfg.EventMaxAge,
			MaxMsgSize:  cfg.MaxMsgSize,
		},
		bucketConfig(TwinBucket, "twinhub twin records: the materialized twin state", cfg.Replicas),
		bucketConfig(HubBucket, "twinhub hub state shared by every instance: shared access policies", cfg.Replicas),
	}
}

// bucketConfig is the stream of a KV bucket with one value per key, as
// nats.go's CreateKeyValue makes it, except that direct gets are off:
// with them any replica answers a Get, and at R3 a follower that has not
// yet applied the latest write returned an older revision in 11–14 % of
// reads under write load. Without them the stream leader answers, which
// gives read-your-writes. nats.go's CreateOrUpdateKeyValue would turn
// direct gets back on, so buckets are provisioned as streams and only bound
// with KeyValue.
func bucketConfig(bucket, description string, replicas int) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:              kvStream(bucket),
		Description:       description,
		Subjects:          []string{"$KV." + bucket + ".>"},
		MaxMsgsPerSubject: 1, // history 1
		MaxBytes:          -1,
		MaxMsgSize:        -1,
		MaxMsgs:           -1,
		MaxConsumers:      -1,
		Storage:           jetstream.FileStorage,
		Replicas:          replicas,
		AllowRollup:       true,
		DenyDelete:        true,
		Duplicates:        2 * time.Minute,
		Discard:           jetstream.DiscardNew,
		AllowDirect:       false,
	}
}

// checkExisting compares the streams that exist (by name) with the
// configuration and reports every conflict: another partition count, or
// fewer replicas than the stream has while decreases are not allowed.
func checkExisting(existing map[string]jetstream.StreamConfig, cfg Config) error {
	var errs []error
	if sc, ok := existing[CommandStream]; ok {
		parts := strconv.Itoa(cfg.Partitions)
		if got := sc.Metadata[partitionsMetadataKey]; got != "" && got != parts {
			errs = append(errs, fmt.Errorf("%w: stream %s has %s partitions, this instance is configured with %s; "+
				"start with --partitions %s", ErrPartitionMismatch, CommandStream, got, parts, got))
		}
	}
	var lower []string
	have := 0
	for _, name := range Streams() {
		sc, ok := existing[name]
		if ok && max(sc.Replicas, 1) > cfg.Replicas {
			lower = append(lower, fmt.Sprintf("%s has %d", name, sc.Replicas))
			have = max(have, sc.Replicas)
		}
	}
	if len(lower) > 0 && !cfg.AllowReplicaDecrease {
		errs = append(errs, fmt.Errorf("%w: %s replicas, this instance is configured with --replicas %d; "+
			"start with --replicas %d to keep them, or add --allow-replica-decrease to lower them to %d "+
			"(an acknowledged change then survives fewer server losses)",
			ErrReplicaDecrease, strings.Join(lower, ", "), cfg.Replicas, have, cfg.Replicas))
	}
	return errors.Join(errs...)
}

// Ensure creates or updates the streams, the KV buckets and the consumers.
// It is safe to call from every instance at every start.
//
// Existing streams are reconciled with cfg: more replicas are applied (the
// servers copy the data in the background), fewer are refused with
// ErrReplicaDecrease unless cfg.AllowReplicaDecrease, and replicas a
// standalone server cannot keep fail with ErrReplicasUnsupported. Nothing is
// changed when a conflict is found. Durable consumers have no replica count
// of their own and follow their stream's.
//
// A cluster that is still electing its leaders or waiting for servers to
// join is waited for, with a log line every few seconds, until ctx ends
// (then ErrNotReady).
func Ensure(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	w := &waiter{conn: js.Conn(), log: cfg.Logger.With("component", "topology")}
	want := streamConfigs(cfg)
	existing := map[string]jetstream.StreamConfig{}
	for _, sc := range want {
		err := w.retry(ctx, "looking up stream "+sc.Name, func(ctx context.Context) error {
			s, err := js.Stream(ctx, sc.Name)
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			existing[sc.Name] = s.CachedInfo().Config
			return nil
		})
		if err != nil {
			return err
		}
	}
	if err := checkExisting(existing, cfg); err != nil {
		return err
	}
	for _, sc := range want {
		if old, ok := existing[sc.Name]; ok && max(old.Replicas, 1) != sc.Replicas {
			w.log.Info("changing the replicas of a stream; the servers copy its data in the background",
				"stream", sc.Name, "from", max(old.Replicas, 1), "to", sc.Replicas)
		}
		err := w.retry(ctx, "provisioning stream "+sc.Name, func(ctx context.Context) error {
			_, err := js.CreateOrUpdateStream(ctx, sc)
			return err
		})
		if isAPIError(err, codeReplicasNotSupported) {
			return fmt.Errorf("provisioning stream %s with %d replicas: %w; start with --replicas 1, "+
				"or point --nats-url at a NATS cluster of at least %d JetStream servers", sc.Name, sc.Replicas,
				ErrReplicasUnsupported, sc.Replicas)
		}
		if err != nil {
			return err
		}
	}
	for _, c := range consumerConfigs(cfg) {
		err := w.retry(ctx, "provisioning consumer "+c.Durable, func(ctx context.Context) error {
			_, err := js.CreateOrUpdateConsumer(ctx, c.stream, c.ConsumerConfig)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// consumer is a durable consumer and its stream.
type consumer struct {
	stream string
	jetstream.ConsumerConfig
}

// consumerConfigs is every durable consumer. Replicas stays 0 so that a
// consumer follows its stream's replica count, also when it changes.
func consumerConfigs(cfg Config) []consumer {
	cs := []consumer{
		{EventStream, jetstream.ConsumerConfig{
			Durable:       NotifierConsumer,
			Description:   "forwards desired-property changes to devices",
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       30 * time.Second,
			DeliverPolicy: jetstream.DeliverNewPolicy,
			MaxAckPending: 1000,
			// A notification that cannot be sent after a few tries is dropped:
			// devices read their twin when they reconnect.
			MaxDeliver: 5,
		}},
		{EventStream, jetstream.ConsumerConfig{
			Durable:     HistoryConsumer,
			Description: "writes change events to ClickHouse (twin history)",
			// One ack per batch covers every event before it. The sink orders
			// events itself and skips those ClickHouse already has, so
			// redeliveries and their order do not matter.
			AckPolicy:     jetstream.AckAllPolicy,
			AckWait:       time.Minute,
			DeliverPolicy: jetstream.DeliverAllPolicy,
			MaxAckPending: HistoryMaxAckPending,
			// Never give up on an event: the sink retries until ClickHouse is back.
			MaxDeliver: -1,
			// Every instance runs a sink; one at a time gets the events. The
			// pin is not a fence (acks are not checked against it): the
			// sink's inserts are fenced in ClickHouse.
			PriorityPolicy: jetstream.PriorityPolicyPinned,
			PriorityGroups: []string{HistoryPriorityGroup},
			PinnedTTL:      HistoryPinnedTTL,
		}},
	}
	for p := 0; p < cfg.Partitions; p++ {
		cs = append(cs, consumer{CommandStream, jetstream.ConsumerConfig{
			Durable:       ConsumerName(p),
			Description:   "twin processor, partition " + strconv.Itoa(p),
			FilterSubject: PartitionSubjects(p),
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       cfg.AckWait,
			DeliverPolicy: jetstream.DeliverAllPolicy,
			// The owner holds up to InFlight commands and applies each
			// device's in the order they were stored (see pipeline's
			// ownership.go). Existing consumers are updated to it at start.
			MaxAckPending: cfg.InFlight,
			MaxDeliver:    -1,
			// One instance at a time pulls the partition: the one holding
			// the pin, until it unpins or stops pulling for PinnedTTL.
			// Existing consumers are updated to it at start.
			PriorityPolicy: jetstream.PriorityPolicyPinned,
			PriorityGroups: []string{PartitionGroup},
			PinnedTTL:      cfg.PinnedTTL,
		}})
	}
	return cs
}
