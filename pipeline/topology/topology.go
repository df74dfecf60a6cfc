// Package topology names every JetStream stream, subject, consumer and KV
// bucket twinhub uses, and provisions them idempotently. Nothing else in
// twinhub spells a subject or a stream name.
//
// Subjects:
//
//	twinhub.cmd.<partition>.<device>   commands for the twin processor (stream TWINHUB_COMMANDS, work queue)
//	twinhub.events.<device>            public change events, one subject per device (stream TWINHUB_EVENTS)
//	twinhub.registry.<device>          core NATS notices that a device's identity changed (no stream)
//	twinhub.processors.<instance>      core NATS presence of each instance's processor (no stream)
//
// <device> is the device ID encoded by Token so that any legal device ID is a
// single subject token and a legal KV key. <partition> is a number in
// [0, Partitions) computed by Partition; one durable consumer per partition
// keeps each device's commands in order while partitions run in parallel.
//
// KV buckets:
//
//	twinhub_twins   twin records, key = Token(device ID)
//	twinhub_hub     state every instance must agree on: the shared access policies (key PoliciesKey)
//	                and the X.509 CA certificates (keys CertificateKey(name))
//
// Every stream and bucket is kept at Config.Replicas replicas (see Ensure),
// and buckets never allow direct gets: at R3 a direct get may be answered by
// a follower that has not applied the latest write yet, and twinhub reads
// its own writes.
package topology

import (
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// Names of the JetStream resources.
const (
	CommandStream = "TWINHUB_COMMANDS"
	EventStream   = "TWINHUB_EVENTS"
	TwinBucket    = "twinhub_twins"
	// HubBucket holds the hub's shared state, the same for every instance.
	HubBucket = "twinhub_hub"
	// PoliciesKey is the key of the shared access policies in HubBucket.
	PoliciesKey = "policies"
	// CertificateKeys matches the keys of the X.509 CA certificates in HubBucket.
	CertificateKeys = certificatePrefix + ">"

	certificatePrefix = "certificates."
	commandPrefix     = "twinhub.cmd."
	eventPrefix       = "twinhub.events."
	registryPrefix    = "twinhub.registry."
	processorPrefix   = "twinhub.processors."

	// PartitionGroup is the pinned priority group of every partition
	// consumer: JetStream delivers a partition's commands only to the pull
	// that holds the group's pin, so one instance at a time processes it.
	PartitionGroup = "twinhub"

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

	// HistoryPriorityGroup is the priority group every history sink pulls
	// HistoryConsumer through. The consumer is pinned: the server delivers
	// to one sink at a time (the writer) and the others wait as standbys.
	HistoryPriorityGroup = "history"

	// HistoryPinnedTTL is how long the writer keeps the pin without pulling:
	// after a writer dies, a standby gets the events this long after the
	// dead writer's last pull. It must exceed the sink's pull expiry.
	HistoryPinnedTTL = 3 * time.Second

	// EventSubjects matches every change event; outside consumers subscribe to it.
	EventSubjects = eventPrefix + "*"

	// RegistrySubjects matches every registry notice (see RegistrySubject).
	RegistrySubjects = registryPrefix + "*"

	// ProcessorSubjects matches every processor's presence (see ProcessorSubject).
	ProcessorSubjects = processorPrefix + "*"

	// partitionsMetadataKey records the partition count in the command
	// stream's metadata so that instances configured differently refuse to start.
	partitionsMetadataKey = "twinhub.partitions"
)

// Errors of Ensure.
var (
	// ErrPartitionMismatch means the command stream was created with another
	// partition count than this instance is configured with.
	ErrPartitionMismatch = errors.New("partition count differs from the existing command stream")
	// ErrReplicaDecrease means an existing stream or bucket has more replicas
	// than configured and Config.AllowReplicaDecrease is off.
	ErrReplicaDecrease = errors.New("refusing to lower the replicas of existing streams")
	// ErrReplicasUnsupported means the NATS server is not a cluster and
	// cannot keep more than one replica.
	ErrReplicasUnsupported = errors.New("the NATS server is not clustered and cannot keep more than one replica")
	// ErrNotReady means JetStream did not become available (no meta
	// leader, not enough servers for the replicas) before the context ended.
	ErrNotReady = errors.New("NATS JetStream did not become available")
)

// Config sizes the topology. The zero value is usable.
type Config struct {
	// Partitions is the number of command partitions (default 16). It is
	// fixed when the command stream is first created.
	Partitions int
	// Replicas is the JetStream replication factor of every stream and
	// bucket (default 1; 3 or 5 need a NATS cluster of at least as many servers).
	Replicas int
	// AllowReplicaDecrease lets Ensure lower the replicas of existing
	// streams to Replicas. Off, a lower Replicas is refused with
	// ErrReplicaDecrease: losing fault tolerance is never silent.
	AllowReplicaDecrease bool
	// Logger receives Ensure's messages: replicas changed, waiting for the
	// cluster (default slog.Default()).
	Logger *slog.Logger
	// EventMaxAge bounds how long change events are kept in JetStream
	// (default 7 days; 0 after defaults means forever is not allowed, use a large value).
	EventMaxAge time.Duration
	// AckWait is how long the processor may hold a command before JetStream
	// redelivers it (default 4 s). It bounds how long a partition stalls
	// after a crash: the command its owner held comes back after AckWait.
	AckWait time.Duration
	// InFlight is how many commands of one partition its owner may hold at
	// once (default 256): the partition consumer's MaxAckPending. The owner
	// applies each device's commands one at a time, in the order they were
	// stored, and the commands of different devices side by side.
	InFlight int
	// PinnedTTL is how long a partition stays pinned to an instance that
	// stopped pulling (default 4 s). Owners pull every PinnedTTL/2, so a live
	// owner keeps its pins; a dead one loses them PinnedTTL after its last
	// pull. Failover after a crash takes about max(PinnedTTL, AckWait).
	PinnedTTL time.Duration
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
		c.AckWait = 4 * time.Second
	}
	if c.PinnedTTL == 0 {
		c.PinnedTTL = 4 * time.Second
	}
	if c.InFlight == 0 {
		c.InFlight = 256
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = 2 * time.Minute
	}
	if c.MaxMsgSize == 0 {
		c.MaxMsgSize = 1 << 20
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
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
	if c.InFlight < 1 || c.InFlight > 10_000 {
		errs = append(errs, fmt.Errorf("commands in flight per partition must be between 1 and 10000, got %d", c.InFlight))
	}
	if c.PinnedTTL < 2*time.Second {
		errs = append(errs, fmt.Errorf("pinned TTL must be at least 2s, got %s", c.PinnedTTL))
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

// ProcessorSubject is the core NATS subject on which the processor of
// instance id announces that it runs (and, with a last message, that it
// stops); processors count each other with it to share the partitions.
func ProcessorSubject(id string) string { return processorPrefix + Token(id) }

// PullExpiry is how long a partition pull waits: half the pinned TTL, so
// an idle owner renews its pins well before they expire.
func (c Config) PullExpiry() time.Duration {
	c.defaults()
	return c.PinnedTTL / 2
}

// Key is the KV key of deviceID's twin record.
func Key(deviceID string) string { return Token(deviceID) }

// KeySubject is the subject that stores deviceID's twin record in the KV
// bucket: a publish to it that expects the subject's last sequence is a
// compare-and-swap of the record, as KeyValue.Update does.
func KeySubject(deviceID string) string { return "$KV." + TwinBucket + "." + Key(deviceID) }

// CertificateKey is the HubBucket key of the X.509 CA certificate name
// (letters, digits, '-', '_' and '.').
func CertificateKey(name string) string { return certificatePrefix + name }

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
// the streams, consumers and buckets), its commands and events, the twin
// and hub buckets, registry notices, acknowledgements and flow control of its
// consumers, and replies on its private inbox prefix, to which the processor
// also publishes command results.
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
			ProcessorSubjects,
			"$KV." + TwinBucket + ".>",
			"$KV." + HubBucket + ".>",
			InternalInboxPrefix + ".>",
		},
		SubscribeAllow: []string{InternalInboxPrefix + ".>", RegistrySubjects, ProcessorSubjects},
	}
}
