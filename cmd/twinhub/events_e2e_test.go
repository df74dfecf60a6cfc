package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestEventsFeed drives GET /events on the real hub: a change made through
// the API arrives on an authenticated feed filtered to its device, a feed
// resumed from an event's id gets what followed, a wrong key gets 401 with
// IoT Hub's error body, and an open feed does not hold up shutdown.
func TestEventsFeed(t *testing.T) {
	p := startTwinhub(t, "")
	for _, id := range []string{"feed-1", "other"} {
		if r := p.call(t, "PUT", "/devices/"+id, `{"deviceId":"`+id+`"}`); r.Status != 200 {
			t.Fatalf("creating %s: %d %s", id, r.Status, r.Body)
		}
	}

	r := p.call(t, "GET", "/events", "", "Authorization", strings.Replace(p.ownerToken(t), "sig=", "sig=A", 1))
	if r.Status != 401 || !strings.Contains(string(r.Body), "ErrorCode:IotHubUnauthorizedAccess;") {
		t.Fatalf("a wrong signature got %d %s, want 401 IotHubUnauthorizedAccess", r.Status, r.Body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	openFeed := func(query string) *bufio.Reader {
		req, _ := http.NewRequestWithContext(ctx, "GET", p.HTTP+"/events?"+query, nil)
		req.Header.Set("Authorization", p.ownerToken(t))
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET /events?%s: %v %v", query, err, resp)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return bufio.NewReader(resp.Body)
	}
	// nextChange returns the next change event's id and device.
	nextChange := func(rd *bufio.Reader) (id, device string) {
		t.Helper()
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatalf("reading the feed: %v", err)
			}
			switch {
			case strings.HasPrefix(line, "id: "):
				id = strings.TrimSpace(line[4:])
			case strings.HasPrefix(line, "data: "):
				var ev struct{ DeviceID string }
				if err := json.Unmarshal([]byte(line[6:]), &ev); err != nil {
					t.Fatalf("feed data is not a change event: %v: %s", err, line)
				}
				return id, ev.DeviceID
			}
		}
	}

	feed := openFeed("deviceId=feed-1&sections=desired")
	p.call(t, "PATCH", "/twins/other", `{"properties":{"desired":{"x":1}}}`)
	p.call(t, "PATCH", "/twins/feed-1", `{"tags":{"t":1}}`)
	if r := p.call(t, "PATCH", "/twins/feed-1", `{"properties":{"desired":{"x":2}}}`); r.Status != 200 {
		t.Fatalf("patching feed-1: %d %s", r.Status, r.Body)
	}
	first, dev := nextChange(feed)
	if dev != "feed-1" {
		t.Fatalf("the filtered feed sent an event of %q first, want feed-1's desired change", dev)
	}
	p.call(t, "PATCH", "/twins/feed-1", `{"properties":{"desired":{"x":3}}}`)
	second, _ := nextChange(feed)

	resumed := openFeed("deviceId=feed-1&sections=desired&from=" + first)
	if id, _ := nextChange(resumed); id != first {
		t.Fatalf("a feed from %s started at %s", first, id)
	}
	if id, _ := nextChange(resumed); id != second {
		t.Fatalf("a feed from %s sent %s next, want %s", first, id, second)
	}

	// Shutdown ends open feeds with an event that says where to resume.
	p.stop()
	for {
		line, err := feed.ReadString('\n')
		if err != nil {
			t.Fatalf("the feed ended without a shutdown event: %v", err)
		}
		if line == "event: shutdown\n" {
			break
		}
	}
}
