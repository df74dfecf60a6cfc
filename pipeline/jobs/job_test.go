package jobs

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestNewJob: a valid request becomes a queued job with its defaults; every
// invalid one is ErrInvalid with a message naming the problem.
func TestNewJob(t *testing.T) {
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	j, err := NewJob("j1", []byte(`{"jobId":"j1","type":"scheduleUpdateTwin","queryCondition":"tags.a = 1",
		"updateTwin":{"etag":"*","tags":{"b":2}}}`), now)
	if err != nil {
		t.Fatal(err)
	}
	if j.Status != StatusQueued || j.StartTime != "2026-12-05T10:00:00.0000000Z" || j.MaxExecutionTimeInSeconds != 3600 || j.Terminal() {
		t.Errorf("job: %+v", j)
	}
	for _, c := range []struct{ name, id, body, want string }{
		{"id", "a/b", `{}`, "job ID"},
		{"empty id", "", `{}`, "job ID"},
		{"path and body", "j1", `{"jobId":"j2","type":"scheduleUpdateTwin"}`, "differs"},
		{"method job", "j1", `{"type":"scheduleDeviceMethod"}`, "direct methods"},
		{"type", "j1", `{"type":"import"}`, "not supported"},
		{"no condition", "j1", `{"type":"scheduleUpdateTwin","updateTwin":{"tags":{"a":1}}}`, "queryCondition is required"},
		{"condition", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"a =","updateTwin":{"tags":{"a":1}}}`, "queryCondition"},
		{"injection", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"a = 1 GROUP BY a","updateTwin":{"tags":{"a":1}}}`, "queryCondition"},
		{"no patch", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"a = 1"}`, "updateTwin is required"},
		{"empty patch", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"a = 1","updateTwin":{}}`, "changes nothing"},
		{"reported", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"a = 1","updateTwin":{"properties":{"reported":{"a":1}}}}`, "reported"},
		{"bad key", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"a = 1","updateTwin":{"tags":{"a b":1}}}`, "updateTwin"},
		{"start", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"a = 1","updateTwin":{"tags":{"a":1}},"startTime":"tomorrow"}`, "startTime"},
		{"max", "j1", `{"type":"scheduleUpdateTwin","queryCondition":"a = 1","updateTwin":{"tags":{"a":1}},"maxExecutionTimeInSeconds":-5}`, "positive"},
		{"not JSON", "j1", `{"type"`, "JSON"},
	} {
		_, err := NewJob(c.id, []byte(c.body), now)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrInvalid naming %q", c.name, err, c.want)
		}
	}
}

// TestCommandID: the same job and device give the same ID on every runner,
// a valid NATS subject token; other pairs give other IDs.
func TestCommandID(t *testing.T) {
	a := CommandID("j", "d.1")
	if a != CommandID("j", "d.1") || a == CommandID("j", "d.2") || a == CommandID("j2", "d.1") || CommandID("j\x00d", "") == CommandID("j", "d") {
		t.Error("command IDs are not one per job and device")
	}
	if strings.ContainsAny(a, ". *>") {
		t.Errorf("command ID %q is not a subject token", a)
	}
}
