package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/pipeline/topology"
)

// ErrNotFound means the device does not exist.
var ErrNotFound = errors.New("device not found")

// Store reads and writes twin records in the JetStream KV bucket. Writes go
// through the Processor only; everyone may read.
type Store struct {
	js jetstream.JetStream
	kv jetstream.KeyValue
}

// OpenStore binds to the twin bucket, which topology.Ensure must have created.
func OpenStore(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	kv, err := js.KeyValue(ctx, topology.TwinBucket)
	if err != nil {
		return nil, fmt.Errorf("opening KV bucket %s: %w", topology.TwinBucket, err)
	}
	return &Store{js: js, kv: kv}, nil
}

// load returns the device's record (nil if never seen) and its revision (0 if none).
func (s *Store) load(ctx context.Context, deviceID string) (*Record, uint64, error) {
	e, err := s.kv.Get(ctx, topology.Key(deviceID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("reading twin record of %s: %w", deviceID, err)
	}
	rec := new(Record)
	if err := json.Unmarshal(e.Value(), rec); err != nil {
		return nil, 0, fmt.Errorf("decoding twin record of %s (revision %d): %w", deviceID, e.Revision(), err)
	}
	return rec, e.Revision(), nil
}

// save writes rec if the key is still at revision rev (0: must not exist).
func (s *Store) save(ctx context.Context, deviceID string, rec *Record, rev uint64) (uint64, error) {
	b, err := encodeRecord(deviceID, rec)
	if err != nil {
		return 0, err
	}
	key := topology.Key(deviceID)
	if rev == 0 {
		return s.kv.Create(ctx, key, b)
	}
	return s.kv.Update(ctx, key, b, rev)
}

// saveAsync is save without waiting for the acknowledgement, which carries
// the new revision: a KV update is a publish to the key's subject that
// expects the subject's last sequence (the key's revision), so the batch
// loop can have many in flight.
func (s *Store) saveAsync(deviceID string, rec *Record, rev uint64) (jetstream.PubAckFuture, error) {
	b, err := encodeRecord(deviceID, rec)
	if err != nil {
		return nil, err
	}
	msg := &nats.Msg{Subject: topology.KeySubject(deviceID), Data: b, Header: nats.Header{}}
	return s.js.PublishMsgAsync(msg, jetstream.WithExpectLastSequencePerSubject(rev))
}

func encodeRecord(deviceID string, rec *Record) ([]byte, error) {
	b, err := rec.encode()
	if err != nil {
		return nil, fmt.Errorf("BUG: encoding twin record of %s: %w", deviceID, err)
	}
	return b, nil
}

// Get returns the live record of a device, or ErrNotFound.
func (s *Store) Get(ctx context.Context, deviceID string) (*Record, error) {
	rec, _, err := s.load(ctx, deviceID)
	if err != nil {
		return nil, err
	}
	if !rec.Exists() {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, deviceID)
	}
	return rec, nil
}

// List returns up to limit live records, in key order.
func (s *Store) List(ctx context.Context, limit int) ([]*Record, error) {
	var out []*Record
	err := s.All(ctx, func(r *Record) bool {
		if len(out) >= limit {
			return false
		}
		out = append(out, r)
		return true
	})
	return out, err
}

// All calls fn for every live device record (modules are not devices)
// until fn returns false.
func (s *Store) All(ctx context.Context, fn func(*Record) bool) error {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil
		}
		return fmt.Errorf("listing twin records: %w", err)
	}
	defer lister.Stop()
	for key := range lister.Keys() {
		id, err := topology.DeviceID(key)
		if err != nil || IsModule(id) {
			continue
		}
		rec, err := s.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if !fn(rec) {
			return nil
		}
	}
	return nil
}

// Modules returns the live module records of a device, in module ID order.
// It lists every key of the bucket, so it costs a walk of the key list.
func (s *Store) Modules(ctx context.Context, deviceID string) ([]*Record, error) {
	lister, err := s.kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing twin records: %w", err)
	}
	defer lister.Stop()
	prefix := topology.Key(ModuleEntity(deviceID, ""))
	var ids []string
	for key := range lister.Keys() {
		if !strings.HasPrefix(key, prefix) {
			continue
		}
		if id, err := topology.DeviceID(key); err == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	var out []*Record
	for _, id := range ids {
		rec, err := s.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, nil
}
