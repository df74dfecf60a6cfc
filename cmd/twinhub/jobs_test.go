package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// createTagged creates n devices "{prefix}{i}" with tags.group set to
// "even" or "odd" by i, and returns the IDs of the even ones.
func createTagged(t *testing.T, p *proc, prefix string, n int) (even []string) {
	t.Helper()
	for i := range n {
		id := fmt.Sprintf("%s%03d", prefix, i)
		if r := p.call(t, "PUT", "/devices/"+id, ""); r.Status != http.StatusOK {
			t.Fatalf("creating %s: %d %s", id, r.Status, r.Body)
		}
		group := "odd"
		if i%2 == 0 {
			group, even = "even", append(even, id)
		}
		if r := p.call(t, "PATCH", "/twins/"+id, `{"tags":{"group":"`+group+`"}}`, "If-Match", `"*"`); r.Status != http.StatusOK {
			t.Fatalf("tagging %s: %d %s", id, r.Status, r.Body)
		}
	}
	return even
}

// waitJob polls GET /jobs/v2/{id} until the job has status want.
func waitJob(t *testing.T, p *proc, jobID, want string, timeout time.Duration) map[string]any {
	t.Helper()
	var job map[string]any
	waitFor(t, timeout, "job "+jobID+" "+want, func() bool {
		r := p.call(t, "GET", "/jobs/v2/"+jobID, "")
		if r.Status != http.StatusOK {
			t.Fatalf("GET /jobs/v2/%s: %d %s", jobID, r.Status, r.Body)
		}
		job = r.json(t)
		if s := job["status"]; s == "failed" && want != "failed" {
			t.Fatalf("job %s failed: %v", jobID, job)
		}
		return job["status"] == want
	})
	return job
}

// checkPatchedOnce checks that each device in patched has desired.fw = fw
// applied exactly once (desired $version 2: created at 1, one patch), and
// the others have no desired fw.
func checkPatchedOnce(t *testing.T, p *proc, prefix string, n int, patched []string, fw string) {
	t.Helper()
	want := map[string]bool{}
	for _, id := range patched {
		want[id] = true
	}
	for i := range n {
		id := fmt.Sprintf("%s%03d", prefix, i)
		tw := p.call(t, "GET", "/twins/"+id, "").json(t)
		v, version := get(tw, "properties.desired.fw"), get(tw, "properties.desired.$version")
		switch {
		case want[id] && (v != fw || version != 2.0):
			t.Errorf("%s: desired fw %v at desired $version %v, want %q at 2 (the job's patch exactly once)", id, v, version, fw)
		case !want[id] && v != nil:
			t.Errorf("%s does not match the job's condition but has desired fw %v", id, v)
		}
	}
}

// TestTwinUpdateJob: PUT /jobs/v2/{id} patches exactly the devices its
// query condition selects, once each, and reports its counts; bad job
// requests get 400 and create nothing; a job scheduled for later can be
// cancelled and then patches nothing.
func TestTwinUpdateJob(t *testing.T) {
	p := startTwinhub(t, "")
	const n = 30
	even := createTagged(t, p, "jd", n)

	bad := []struct{ name, body, code string }{
		{"query", `{"type":"scheduleUpdateTwin","queryCondition":"tags.group = ","updateTwin":{"properties":{"desired":{"fw":"x"}}}}`, "ArgumentInvalid"},
		{"patch", `{"type":"scheduleUpdateTwin","queryCondition":"tags.group = 'even'","updateTwin":{"properties":{"desired":{"$fw":"x"}}}}`, "ArgumentInvalid"},
		{"reported", `{"type":"scheduleUpdateTwin","queryCondition":"tags.group = 'even'","updateTwin":{"properties":{"reported":{"fw":"x"}}}}`, "ArgumentInvalid"},
		{"type", `{"type":"scheduleDeviceMethod","queryCondition":"tags.group = 'even'","cloudToDeviceMethod":{"methodName":"reboot"}}`, "ArgumentInvalid"},
		{"no patch", `{"type":"scheduleUpdateTwin","queryCondition":"tags.group = 'even'"}`, "ArgumentInvalid"},
		{"max time", `{"type":"scheduleUpdateTwin","queryCondition":"tags.group = 'even'","updateTwin":{"tags":{"x":1}},"maxExecutionTimeInSeconds":0}`, "ArgumentInvalid"},
		{"not JSON", `{"type":`, "ArgumentInvalid"},
	}
	for _, c := range bad {
		r := p.call(t, "PUT", "/jobs/v2/bad-"+c.name[:2], c.body)
		if r.Status != http.StatusBadRequest || r.Header.Get("iothub-errorcode") != c.code {
			t.Errorf("bad job (%s): %d %s", c.name, r.Status, r.Body)
		}
	}
	if r := p.call(t, "GET", "/jobs/v2/query", ""); r.Status != http.StatusOK || string(r.Body) != "[]" {
		t.Errorf("jobs after bad requests: %d %s, want []", r.Status, r.Body)
	}

	body := `{"jobId":"fw-even","type":"scheduleUpdateTwin","queryCondition":"tags.group = 'even'",` +
		`"updateTwin":{"etag":"*","properties":{"desired":{"fw":"2.0"}}},"maxExecutionTimeInSeconds":300}`
	r := p.call(t, "PUT", "/jobs/v2/fw-even", body)
	if r.Status != http.StatusOK || r.json(t)["status"] != "queued" || r.json(t)["type"] != "scheduleUpdateTwin" {
		t.Fatalf("PUT job: %d %s", r.Status, r.Body)
	}
	if r := p.call(t, "PUT", "/jobs/v2/fw-even", body); r.Status != http.StatusConflict {
		t.Errorf("PUT the same job again: %d %s, want 409", r.Status, r.Body)
	}
	job := waitJob(t, p, "fw-even", "completed", 60*time.Second)
	if get(job, "deviceJobStatistics.deviceCount") != float64(len(even)) || get(job, "deviceJobStatistics.succeededCount") != float64(len(even)) ||
		get(job, "deviceJobStatistics.failedCount") != 0.0 || job["endTime"] == nil {
		t.Errorf("completed job: %v", job)
	}
	checkPatchedOnce(t, p, "jd", n, even, "2.0")

	// A job for later, cancelled before it starts, patches nothing.
	later := time.Now().Add(3 * time.Second).UTC().Format(time.RFC3339Nano)
	r = p.call(t, "PUT", "/jobs/v2/fw-odd", `{"type":"scheduleUpdateTwin","queryCondition":"tags.group = 'odd'",`+
		`"updateTwin":{"properties":{"desired":{"fw":"3.0"}}},"startTime":"`+later+`"}`)
	if r.Status != http.StatusOK {
		t.Fatalf("PUT scheduled job: %d %s", r.Status, r.Body)
	}
	if r := p.call(t, "POST", "/jobs/v2/fw-odd/cancel", ""); r.Status != http.StatusOK || r.json(t)["status"] != "cancelled" {
		t.Fatalf("cancel: %d %s", r.Status, r.Body)
	}
	time.Sleep(5 * time.Second) // past the start time: a cancelled job must not run
	checkPatchedOnce(t, p, "jd", n, even, "2.0")
	if r := p.call(t, "GET", "/jobs/v2/query?jobStatus=cancelled", ""); r.Status != http.StatusOK || !sameJSON(t, jsonIDs(t, r.Body), `["fw-odd"]`) {
		t.Errorf("cancelled jobs: %s", r.Body)
	}
	if r := p.call(t, "GET", "/jobs/v2/nope", ""); r.Status != http.StatusNotFound || r.Header.Get("iothub-errorcode") != "JobNotFound" {
		t.Errorf("unknown job: %d %s", r.Status, r.Body)
	}
}

// jsonIDs lists the jobId of each job in a JSON array.
func jsonIDs(t *testing.T, body []byte) any {
	t.Helper()
	var jobs []map[string]any
	if err := json.Unmarshal(body, &jobs); err != nil {
		t.Fatalf("jobs list %s: %v", body, err)
	}
	ids := []any{}
	for _, j := range jobs {
		ids = append(ids, j["jobId"])
	}
	return ids
}

// TestTwinUpdateJobSurvivesKill: kill -9 of the instance running a job
// (paced by --job-rate so that it is killed mid-job), then a restart on
// the same data: the job completes, and every matching device has the
// patch exactly once.
func TestTwinUpdateJobSurvivesKill(t *testing.T) {
	p := startTwinhub(t, "", "--job-rate", "40")
	const n = 400
	even := createTagged(t, p, "jk", n)
	r := p.call(t, "PUT", "/jobs/v2/fw-kill", `{"type":"scheduleUpdateTwin","queryCondition":"tags.group = 'even'",`+
		`"updateTwin":{"properties":{"desired":{"fw":"9.0"}}},"maxExecutionTimeInSeconds":600}`)
	if r.Status != http.StatusOK {
		t.Fatalf("PUT job: %d %s", r.Status, r.Body)
	}
	// Kill once the first page's progress is written and the second page
	// is under way.
	waitFor(t, 60*time.Second, "the job's first page", func() bool {
		return get(p.call(t, "GET", "/jobs/v2/fw-kill", "").json(t), "deviceJobStatistics.succeededCount") == 100.0
	})
	time.Sleep(time.Second)
	p.kill()

	p = startTwinhub(t, p.dataDir, "--job-rate", "200")
	job := waitJob(t, p, "fw-kill", "completed", 90*time.Second)
	if get(job, "deviceJobStatistics.deviceCount") != float64(len(even)) || get(job, "deviceJobStatistics.succeededCount") != float64(len(even)) {
		t.Errorf("job after the kill: %v", job)
	}
	if !strings.Contains(p.logs.String(), "taking over a job whose runner's lease expired") {
		t.Errorf("the restarted instance did not take the job over")
	}
	checkPatchedOnce(t, p, "jk", n, even, "9.0")
}
