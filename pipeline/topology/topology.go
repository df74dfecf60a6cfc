// Package topology names every JetStream stream, subject, consumer and KV
// bucket twinhub uses, and provisions them idempotently. Nothing else in
// twinhub spells a subject or a stream name.
//
// Subjects:
//
//	twinhub.cmd.<partition>.<device>   commands for the twin processor (stream TWINHUB_COMMANDS, work queue)
//	twinhub.events.<device>            public change events, one subject per device (stream TWINHUB_EVENTS)
//	twinhub.registry.<device>          core NATS notices that a device's identity changed (no stream)
//
// <device> is the device ID encoded by Token so that any legal device ID is a
// single subject token and a legal KV key. <partition> is a number in
// [0, Partitions) computed by Partition; one durable consumer per partition
// keeps each device's commands in order while partitions run in parallel.
package topology

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Names of the JetStream resources.
const (
	CommandStream = "TWINHUB_COMMANDS"
	EventStream   = "TWINHUB_EVENTS"
	TwinBucket    = "twinhub_twins"

	commandPrefix  = "twinhub.cmd."
	eventPrefix    = "twinhub.events."
	registryPrefix = "twinhub.registry."

	// NotifierConsumer is the durable consumer of change events that forwards
	// desired-property changes to devices over MQTT.
	NotifierConsumer = "twin-desired-notifier"

	// HistoryConsumer is the durable consumer of change events that the
	// ClickHouse history sink reads; it acknowledges a batch (AckAll) only
	// after ClickHouse accepted it.
	HistoryConsumer = "twin-history-clickhouse"

	// HistoryMaxAckPending bounds the change events the history sink may
	// hold unacknowledged; it is above the sink's largest batch.
	HistoryMaxAckPending = 50_000

	// EventSubjects matches every change event; outside consumers subscribe to it.
	EventSubjects = eventPrefix + "*"

	// RegistrySubjects matches every registry notice (see RegistrySubject).
	RegistrySubjects = registryPrefix + "*"

	// partitionsMetadataKey records the partition count in the command
	// stream's metadata so that instances configured differently refuse to start.
	partitionsMetadataKey = "twinhub.partitions"
)

// ErrPartitionMismatch means the command stream was created with another
// partition count than this instance is configured with.
var ErrPartitionMismatch = errors.New("partition count differs from the existing command stream")

// Config sizes the topology. The zero value is usable.
type Config struct {
	// Partitions is the number of command partitions (default 16). It is
	// fixed when the command stream is first created.
	Partitions int
	// Replicas is the JetStream replication factor (default 1).
	Replicas int
	// EventMaxAge bounds how long change events are kept in JetStream
	// (default 7 days; 0 after defaults means forever is not allowed, use a large value).
	EventMaxAge time.Duration
	// AckWait is how long the processor may hold a command before JetStream
	// redelivers it (default 10 s). It bounds how long a partition stalls after a crash.
	AckWait time.Duration
	// DuplicateWindow is the Nats-Msg-Id dedupe window of both streams (default 2 min).
	DuplicateWindow time.Duration
	// MaxMsgSize bounds a command or event (default 1 MiB).
	MaxMsgSize int32
}

func (c *Config) defaults() {
	if c.Partitions == 0 {
		c.Partitions = 16
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.EventMaxAge == 0 {
		c.EventMaxAge = 7 * 24 * time.Hour
	}
	if c.AckWait == 0 {
		c.AckWait = 10 * time.Second
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = 2 * time.Minute
	}
	if c.MaxMsgSize == 0 {
		c.MaxMsgSize = 1 << 20
	}
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	c.defaults()
	return c
}

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	c.defaults()
	var errs []error
	if c.Partitions < 1 || c.Partitions > 1024 {
		errs = append(errs, fmt.Errorf("partitions must be between 1 and 1024, got %d", c.Partitions))
	}
	if c.Replicas != 1 && c.Replicas != 3 && c.Replicas != 5 {
		errs = append(errs, fmt.Errorf("replicas must be 1, 3 or 5, got %d", c.Replicas))
	}
	if c.AckWait < time.Second {
		errs = append(errs, fmt.Errorf("ack wait must be at least 1s, got %s", c.AckWait))
	}
	return errors.Join(errs...)
}

// Token encodes a device ID as one NATS subject token that is also a legal
// JetStream KV key: ASCII letters, digits, '-' and '_' stay as they are, every
// other byte becomes '=' followed by two upper-case hex digits. The encoding
// is reversible (see DeviceID) and documented for outside consumers.
func Token(deviceID string) string {
	var b strings.Builder
	b.Grow(len(deviceID))
	for i := 0; i < len(deviceID); i++ {
		c := deviceID[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			b.WriteByte(c)
		default:
			const hex = "0123456789ABCDEF"
			b.WriteByte('=')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xF])
		}
	}
	return b.String()
}

// DeviceID decodes a token made by Token.
func DeviceID(token string) (string, error) {
	if !strings.Contains(token, "=") {
		return token, nil
	}
	var b strings.Builder
	for i := 0; i < len(token); i++ {
		if token[i] != '=' {
			b.WriteByte(token[i])
			continue
		}
		if i+2 >= len(token) {
			return "", fmt.Errorf("token %q: truncated escape", token)
		}
		v, err := strconv.ParseUint(token[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("token %q: bad escape: %w", token, err)
		}
		b.WriteByte(byte(v))
		i += 2
	}
	return b.String(), nil
}

// Partition returns the command partition of a device: FNV-1a of the device
// ID modulo the partition count.
func Partition(deviceID string, partitions int) int {
	h := fnv.New32a()
	h.Write([]byte(deviceID))
	return int(h.Sum32() % uint32(partitions))
}

// CommandSubject is the subject a command for deviceID is published to.
func CommandSubject(deviceID string, partitions int) string {
	return commandPrefix + strconv.Itoa(Partition(deviceID, partitions)) + "." + Token(deviceID)
}

// PartitionSubjects is the filter of partition p's consumer.
func PartitionSubjects(p int) string {
	return commandPrefix + strconv.Itoa(p) + ".*"
}

// ConsumerName is the durable consumer of command partition p.
func ConsumerName(p int) string {
	return fmt.Sprintf("twin-apply-p%03d", p)
}

// EventSubject is the subject of deviceID's change events.
func EventSubject(deviceID string) string {
	return eventPrefix + Token(deviceID)
}

// RegistrySubject is the core NATS subject (no stream keeps it) on which
// the processor announces that deviceID's identity changed: its status or
// keys were updated, or it was deleted. A notice carries no keys; every
// instance's MQTT edge re-checks the device's open sessions against the
// record when one arrives.
func RegistrySubject(deviceID string) string {
	return registryPrefix + Token(deviceID)
}

// Key is the KV key of deviceID's twin record.
func Key(deviceID string) string { return Token(deviceID) }

// KeySubject is the subject that stores deviceID's twin record in the KV
// bucket: a publish to it that expects the subject's last sequence is a
// compare-and-swap of the record, as KeyValue.Update does.
func KeySubject(deviceID string) string { return "$KV." + TwinBucket + "." + Key(deviceID) }

// Ensure creates or updates the streams, the KV bucket and the partition
// consumers. It is safe to call from every instance at every start.
func Ensure(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	parts := strconv.Itoa(cfg.Partitions)
	if s, err := js.Stream(ctx, CommandStream); err == nil {
		if got := s.CachedInfo().Config.Metadata[partitionsMetadataKey]; got != "" && got != parts {
			return fmt.Errorf("%w: stream %s has %s partitions, this instance is configured with %s; "+
				"start with --partitions %s", ErrPartitionMismatch, CommandStream, got, parts, got)
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("looking up stream %s: %w", CommandStream, err)
	}
	cmd, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        CommandStream,
		Description: "twinhub commands waiting for the twin processor",
		Subjects:    []string{commandPrefix + ">"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.DuplicateWindow,
		MaxMsgSize:  cfg.MaxMsgSize,
		Metadata:    map[string]string{partitionsMetadataKey: parts},
	})
	if err != nil {
		return fmt.Errorf("provisioning stream %s: %w", CommandStream, err)
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        EventStream,
		Description: "twinhub change events: one per accepted twin change, subject per device",
		Subjects:    []string{EventSubjects},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.DuplicateWindow,
		MaxAge:      cfg.EventMaxAge,
		MaxMsgSize:  cfg.MaxMsgSize,
	}); err != nil {
		return fmt.Errorf("provisioning stream %s: %w", EventStream, err)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, EventStream, jetstream.ConsumerConfig{
		Durable:       NotifierConsumer,
		Description:   "forwards desired-property changes to devices",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		DeliverPolicy: jetstream.DeliverNewPolicy,
		MaxAckPending: 1000,
		// A notification that cannot be sent after a few tries is dropped:
		// devices read their twin when they reconnect.
		MaxDeliver: 5,
	}); err != nil {
		return fmt.Errorf("provisioning consumer %s: %w", NotifierConsumer, err)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, EventStream, jetstream.ConsumerConfig{
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
	}); err != nil {
		return fmt.Errorf("provisioning consumer %s: %w", HistoryConsumer, err)
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      TwinBucket,
		Description: "twinhub twin records: the materialized twin state",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	}); err != nil {
		return fmt.Errorf("provisioning KV bucket %s: %w", TwinBucket, err)
	}
	for p := 0; p < cfg.Partitions; p++ {
		if _, err := cmd.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable:       ConsumerName(p),
			Description:   "twin processor, partition " + strconv.Itoa(p),
			FilterSubject: PartitionSubjects(p),
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       cfg.AckWait,
			DeliverPolicy: jetstream.DeliverAllPolicy,
			// One command in flight per partition: a device's commands are
			// applied strictly in the order they were stored, redeliveries included.
			MaxAckPending: 1,
			MaxDeliver:    -1,
		}); err != nil {
			return fmt.Errorf("provisioning consumer %s: %w", ConsumerName(p), err)
		}
	}
	return nil
}

// InternalInboxPrefix is the reply-subject prefix of twinhub's own NATS
// connections (nats.CustomInboxPrefix). It is not the default _INBOX, which
// the events reader may subscribe to, so that no reply to twinhub (a twin
// record read from the KV bucket, a command result with a device's keys)
// can be read by another user.
const InternalInboxPrefix = "_TWINHUB_INBOX"

// Permissions are the subjects a NATS user may publish and subscribe to.
// A deny entry wins over an allow entry.
type Permissions struct {
	PublishAllow, PublishDeny     []string
	SubscribeAllow, SubscribeDeny []string
}

// internalEventConsumers are twinhub's own consumers of the event stream,
// which no outside reader may pull from, acknowledge, change or delete.
var internalEventConsumers = []string{NotifierConsumer, HistoryConsumer}

// EventReaderPermissions is the least privilege for a reader of change
// events: information about the event stream, its own consumers on it
// (durable or ephemeral, pull or ordered) with their messages and acks, a
// single message by sequence, and replies on _INBOX. Everything else is
// denied: the KV bucket (twin records carry device keys), the command
// stream, publishing on twinhub's subjects, other streams, and twinhub's
// own event consumers.
func EventReaderPermissions() Permissions {
	const api = "$JS.API."
	s := EventStream
	p := Permissions{
		PublishAllow: []string{
			api + "INFO",                        // account info (jetstream.AccountInfo, nats CLI)
			api + "STREAM.INFO." + s,            // jetstream.Stream
			api + "STREAM.MSG.GET." + s,         // Stream.GetMsg
			api + "CONSUMER.CREATE." + s,        // ephemeral consumers, older clients
			api + "CONSUMER.CREATE." + s + ".>", // named consumers, with or without a filter subject
			api + "CONSUMER.DURABLE.CREATE." + s + ".*",
			api + "CONSUMER.INFO." + s + ".*",
			api + "CONSUMER.DELETE." + s + ".*",
			api + "CONSUMER.MSG.NEXT." + s + ".*", // pull requests
			"$JS.ACK." + s + ".>",                 // acknowledgements
			"$JS.FC." + s + ".>",                  // flow control of push consumers
		},
		SubscribeAllow: []string{
			"_INBOX.>",    // API replies, pulled messages, push delivery
			EventSubjects, // live events without JetStream
		},
	}
	for _, c := range internalEventConsumers {
		p.PublishDeny = append(p.PublishDeny,
			api+"CONSUMER.CREATE."+s+"."+c,
			api+"CONSUMER.CREATE."+s+"."+c+".>",
			api+"CONSUMER.DURABLE.CREATE."+s+"."+c,
			api+"CONSUMER.DELETE."+s+"."+c,
			api+"CONSUMER.MSG.NEXT."+s+"."+c,
			"$JS.ACK."+s+"."+c+".>",
		)
	}
	return p
}

// HubPermissions is what twinhub's own user needs on an external NATS (on
// the embedded one it may do everything): the JetStream API (it provisions
// the streams, consumers and bucket), its commands and events, the twin
// bucket, registry notices, acknowledgements and flow control of its consumers, and replies on
// its private inbox prefix, to which the processor also publishes command
// results.
func HubPermissions() Permissions {
	return Permissions{
		PublishAllow: []string{
			"$JS.API.>",
			"$JS.ACK." + CommandStream + ".>",
			"$JS.ACK." + EventStream + ".>",
			"$JS.FC.>",
			commandPrefix + ">",
			eventPrefix + "*",
			RegistrySubjects,
			"$KV." + TwinBucket + ".>",
			InternalInboxPrefix + ".>",
		},
		SubscribeAllow: []string{InternalInboxPrefix + ".>", RegistrySubjects},
	}
}
