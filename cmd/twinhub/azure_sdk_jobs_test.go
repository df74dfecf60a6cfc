package main

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// jobCall runs one job_client.js operation and returns its job.
func (h *azureHub) jobCall(t *testing.T, svc []string, op string, args ...string) map[string]any {
	t.Helper()
	names := map[string]string{"schedule": "scheduled", "get": "job", "cancel": "cancelled"}
	e := oneEvent(t, h.runScript(t, svc, "job_client.js", append([]string{op}, args...)...), names[op])
	job, _ := e["job"].(map[string]any)
	return job
}

// TestAzureSDKJobs: the unmodified azure-iothub JobClient schedules a twin
// update by query (scheduleTwinUpdate), follows it to completion (getJob),
// cancels a job scheduled for later (cancelJob) and lists jobs
// (createQuery); the matching devices, and only they, have the patch.
func TestAzureSDKJobs(t *testing.T) {
	h := startAzureHub(t)
	for i := range 6 {
		id := fmt.Sprintf("jobDev%d", i)
		h.createDevice(t, id)
		if i < 4 {
			if r := h.call(t, "PATCH", "/twins/"+id, `{"tags":{"building":"43"}}`, "If-Match", `"*"`); r.Status != http.StatusOK {
				t.Fatalf("tagging %s: %d %s", id, r.Status, r.Body)
			}
		}
	}
	svc := []string{"SERVICE_CONNECTION_STRING=" + h.serviceCS(t)}
	job := h.jobCall(t, svc, "schedule", "b43", "tags.building = '43'", `{"etag":"*","properties":{"desired":{"floor":3}}}`)
	if job["jobId"] != "b43" || job["type"] != "scheduleUpdateTwin" {
		t.Fatalf("scheduleTwinUpdate returned %v", job)
	}
	waitFor(t, 30*time.Second, "job b43 completed", func() bool {
		job = h.jobCall(t, svc, "get", "b43")
		return job["status"] == "completed"
	})
	if get(job, "deviceJobStatistics.succeededCount") != 4.0 || get(job, "deviceJobStatistics.deviceCount") != 4.0 {
		t.Errorf("getJob after completion: %v", job)
	}
	for i := range 6 {
		tw := h.twin(t, fmt.Sprintf("jobDev%d", i))
		if got, want := get(tw, "properties.desired.floor"), map[bool]any{true: 3.0, false: nil}[i < 4]; got != want {
			t.Errorf("jobDev%d: desired floor %v, want %v", i, got, want)
		}
	}

	later := h.jobCall(t, svc, "schedule", "later", "tags.building = '43'", `{"properties":{"desired":{"floor":4}}}`, "600")
	if later["status"] != "queued" {
		t.Errorf("a job for later: %v", later)
	}
	if c := h.jobCall(t, svc, "cancel", "later"); c["status"] != "cancelled" {
		t.Errorf("cancelJob: %v", c)
	}
	e := oneEvent(t, h.runScript(t, svc, "job_client.js", "query"), "jobs")
	if !sameJSON(t, jobStatuses(e["jobs"]), `{"b43":"completed","later":"cancelled"}`) {
		t.Errorf("createQuery: %v", e["jobs"])
	}
}

func jobStatuses(v any) map[string]any {
	out := map[string]any{}
	list, _ := v.([]any)
	for _, j := range list {
		m, _ := j.(map[string]any)
		id, _ := m["jobId"].(string)
		out[id] = m["status"]
	}
	return out
}
