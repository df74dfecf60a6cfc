package pipeline

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/twinhub/twinhub/pipeline/twin"
)

// recentCommands is how many applied command IDs a record remembers, so a
// command redelivered after a crash is answered instead of applied twice.
const recentCommands = 32

// Record is what the hub keeps per device in the twin bucket: the twin, the
// device identity, and the bookkeeping that makes applying commands
// idempotent. A deleted device keeps a tombstone record so that its event
// sequence check still holds when it is created again.
type Record struct {
	Twin     *twin.Twin `json:"twin,omitempty"`
	Identity Identity   `json:"identity"`
	Deleted  bool       `json:"deleted,omitempty"`
	// LastEventSeq is the stream sequence of the device's latest change
	// event; the next event is published only if it is still the latest.
	LastEventSeq uint64 `json:"lastEventSeq"`
	// Recent lists the IDs of the last commands that changed the record.
	Recent []string `json:"recent,omitempty"`
}

// encode renders the record as its JSON form (the same document
// json.Marshal(rec) gives) without encoding/json re-validating the twin,
// which is most of the cost of a record write.
func (r *Record) encode() ([]byte, error) {
	id, err := json.Marshal(r.Identity)
	if err != nil {
		return nil, err
	}
	recent, err := json.Marshal(r.Recent)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, 1024)
	b = append(b, '{')
	if r.Twin != nil {
		tw, err := r.Twin.MarshalJSON()
		if err != nil {
			return nil, err
		}
		b = append(append(append(b, `"twin":`...), tw...), ',')
	}
	b = append(append(b, `"identity":`...), id...)
	if r.Deleted {
		b = append(b, `,"deleted":true`...)
	}
	b = strconv.AppendUint(append(b, `,"lastEventSeq":`...), r.LastEventSeq, 10)
	if len(r.Recent) > 0 {
		b = append(append(b, `,"recent":`...), recent...)
	}
	return append(b, '}'), nil
}

// Identity is the device-registry part of a record.
type Identity struct {
	GenerationID string `json:"generationId"`
	// Etag counts identity changes (the registry's deviceEtag).
	Etag                       int64     `json:"etag"`
	PrimaryKey                 string    `json:"primaryKey,omitempty"`
	SecondaryKey               string    `json:"secondaryKey,omitempty"`
	ConnectionStateUpdatedTime time.Time `json:"connectionStateUpdatedTime"`
	// Authentication is the device's authentication type when it is not
	// SAS (AuthSelfSigned or AuthCertificateAuthority); see AuthType.
	Authentication string `json:"authentication,omitempty"`
	// PrimaryThumbprint and SecondaryThumbprint are a self-signed device's
	// certificate thumbprints (upper-case hex, SHA-1 or SHA-256).
	PrimaryThumbprint   string `json:"primaryThumbprint,omitempty"`
	SecondaryThumbprint string `json:"secondaryThumbprint,omitempty"`
}

// Exists reports whether the record holds a live device.
func (r *Record) Exists() bool { return r != nil && !r.Deleted && r.Twin != nil }

func (r *Record) clone() *Record {
	c := *r
	if r.Twin != nil {
		c.Twin = r.Twin.Clone()
	}
	c.Recent = slices.Clone(r.Recent)
	return &c
}

func (r *Record) applied(commandID string) bool {
	return slices.Contains(r.Recent, commandID)
}

func (r *Record) remember(commandID string) {
	r.Recent = append(r.Recent, commandID)
	if len(r.Recent) > recentCommands {
		r.Recent = slices.Clone(r.Recent[len(r.Recent)-recentCommands:])
	}
}

// DeviceEtag renders the identity etag as IoT Hub does: base64 of the decimal counter.
func (id Identity) DeviceEtag() string {
	return base64.StdEncoding.EncodeToString([]byte(strconv.FormatInt(id.Etag, 10)))
}

// applyEvent computes the record after ev. The processor uses it both to
// apply a new change and to roll a record forward to an event that was
// published before a crash lost the record's update, so both paths give the
// same twin. It does not change prev.
func applyEvent(prev *Record, ev *Event) (*Record, error) {
	at, err := time.Parse(time.RFC3339Nano, ev.Time)
	if err != nil {
		return nil, fmt.Errorf("event time %q: %w", ev.Time, err)
	}
	var next *Record
	switch ev.Op {
	case OpCreateDevice:
		t := newTwin(ev.DeviceID, at)
		if ev.Status != "" {
			t.Status = ev.Status
		}
		next = &Record{Twin: t, Identity: Identity{GenerationID: ev.GenerationID, Etag: 1}}
		if prev != nil {
			next.LastEventSeq = prev.LastEventSeq
			next.Recent = slices.Clone(prev.Recent)
		}
	case OpUpdateTwin, OpReplaceTwin:
		if !prev.Exists() {
			return nil, fmt.Errorf("BUG: %s event for missing device %q", ev.Op, ev.DeviceID)
		}
		next = prev.clone()
		tags, desired, reported, err := ev.Patch.objects()
		if err != nil {
			return nil, err
		}
		switch {
		case ev.Op == OpReplaceTwin:
			if tags == nil {
				tags = map[string]any{}
			}
			if desired == nil {
				desired = map[string]any{}
			}
			next.Twin, err = twin.ReplaceByPatches(prev.Twin, tags, desired, at)
		case ev.Source == SourceDevice:
			next.Twin, err = twin.ApplyReported(prev.Twin, reported, at)
			if err == nil {
				next.Twin.LastActivityTime = at
			}
		default:
			next.Twin, err = twin.ApplyService(prev.Twin, tags, desired, at)
		}
		if err != nil {
			return nil, err
		}
	case OpDeleteDevice:
		if !prev.Exists() {
			return nil, fmt.Errorf("BUG: delete event for missing device %q", ev.DeviceID)
		}
		next = &Record{Deleted: true, Identity: Identity{GenerationID: prev.Identity.GenerationID},
			LastEventSeq: prev.LastEventSeq, Recent: slices.Clone(prev.Recent)}
	default:
		return nil, fmt.Errorf("unknown event op %q", ev.Op)
	}
	next.remember(ev.CommandID)
	return next, nil
}

// fill sets the event's counters from the record it produced.
func (ev *Event) fill(rec *Record, prev *Record) {
	t := rec.Twin
	if rec.Deleted {
		t = prev.Twin
		ev.Version = t.Version + 1
	} else {
		ev.Version = t.Version
	}
	ev.Etag = t.ETag()
	ev.DesiredVersion = t.Desired.Version
	ev.ReportedVersion = t.Reported.Version
}

// objects parses the patch sections; absent ones are nil.
func (p EventPatch) objects() (tags, desired, reported map[string]any, err error) {
	parse := func(raw json.RawMessage, where string) (map[string]any, error) {
		if raw == nil {
			return nil, nil
		}
		m, err := twin.ParseObject(raw)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		return m, nil
	}
	if tags, err = parse(p.Tags, "tags"); err != nil {
		return
	}
	if desired, err = parse(p.Desired(), "properties.desired"); err != nil {
		return
	}
	reported, err = parse(p.Reported(), "properties.reported")
	return
}

// newKey returns a random 256-bit symmetric key, base64 encoded.
func newKey() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// newGenerationID returns a fresh generation ID (IoT Hub uses an 18-digit number).
func newGenerationID(now time.Time) string {
	b := make([]byte, 2)
	rand.Read(b)
	return strconv.FormatInt(now.UnixNano()/100, 10)[:14] + fmt.Sprintf("%04d", (int(b[0])<<8|int(b[1]))%10000)
}
