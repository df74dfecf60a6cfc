package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twinhub/twinhub/bridge/deviceclient"
)

func nested(depth int, leaf string) string {
	return strings.Repeat(`{"k":`, depth) + leaf + strings.Repeat("}", depth)
}

// TestBadInputHTTP sends the back-end API malformed and rule-breaking
// requests: each gets IoT Hub's error status and body, and the twin does
// not change.
func TestBadInputHTTP(t *testing.T) {
	p := startTwinhub(t, "")
	if r := p.call(t, "PUT", "/devices/bad", ""); r.Status != 200 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	p.call(t, "PATCH", "/twins/bad", `{"tags":{"keep":"me"}}`)
	before := p.call(t, "GET", "/twins/bad", "").Body

	manyKeys := func(n int) string {
		var b strings.Builder
		b.WriteString(`{"tags":{`)
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `"key%04d":"%s"`, i, strings.Repeat("x", 90))
		}
		b.WriteString("}}")
		return b.String()
	}
	cases := []struct {
		name, method, path, body, ifMatch string
		status                            int
		code, mention                     string
	}{
		{"malformed JSON", "PATCH", "/twins/bad", `{"tags":{"a":`, "", 400, "ArgumentInvalid", "json"},
		{"duplicate keys", "PATCH", "/twins/bad", `{"tags":{"a":1,"a":2}}`, "", 400, "ArgumentInvalid", "duplicate"},
		{"array holding null", "PATCH", "/twins/bad", `{"tags":{"a":[1,null]}}`, "", 400, "ArgumentInvalid", "tags.a"},
		{"depth 11 in tags", "PATCH", "/twins/bad", `{"tags":` + nested(12, `1`) + `}`, "", 400, "ArgumentInvalid", "depth"},
		{"depth 11 in desired", "PATCH", "/twins/bad", `{"properties":{"desired":` + nested(12, `"x"`) + `}}`, "", 400, "ArgumentInvalid", "depth"},
		{"oversized tags", "PATCH", "/twins/bad", manyKeys(100), "", 400, "ArgumentInvalid", "size"},
		{"string over 4 KB", "PATCH", "/twins/bad", `{"tags":{"s":"` + strings.Repeat("y", 4097) + `"}}`, "", 400, "ArgumentInvalid", "tags.s"},
		{"key with dot", "PATCH", "/twins/bad", `{"tags":{"a.b":1}}`, "", 400, "ArgumentInvalid", "key"},
		{"key with dollar", "PATCH", "/twins/bad", `{"properties":{"desired":{"$x":1}}}`, "", 400, "ArgumentInvalid", "key"},
		{"key with space", "PATCH", "/twins/bad", `{"tags":{"a b":1}}`, "", 400, "ArgumentInvalid", "key"},
		{"integer beyond 2^52", "PATCH", "/twins/bad", `{"tags":{"n":4503599627370496}}`, "", 400, "ArgumentInvalid", "tags.n"},
		{"reported from the back end", "PATCH", "/twins/bad", `{"properties":{"reported":{"a":1}}}`, "", 400, "ArgumentInvalid", "reported"},
		{"tags not an object", "PATCH", "/twins/bad", `{"tags":[1]}`, "", 400, "ArgumentInvalid", "tags"},
		{"reported null from the back end", "PATCH", "/twins/bad", `{"properties":{"reported":null}}`, "", 400, "ArgumentInvalid", "reported"},
		{"properties null", "PATCH", "/twins/bad", `{"properties":null}`, "", 400, "ArgumentInvalid", "properties cannot be null"},
		{"null in a replacement", "PUT", "/twins/bad", `{"tags":{"a":null}}`, "", 400, "ArgumentInvalid", "tags.a"},
		{"wrong etag", "PATCH", "/twins/bad", `{"tags":{"a":1}}`, `"AAAAAAAAAAA="`, 412, "PreconditionFailed", "etag"},
		{"replace with wrong etag", "PUT", "/twins/bad", `{"tags":{}}`, `"nope"`, 412, "PreconditionFailed", "etag"},
		{"unknown device", "PATCH", "/twins/nobody", `{"tags":{"a":1}}`, "", 404, "DeviceNotFound", "nobody"},
		{"unknown device GET", "GET", "/twins/nobody", "", "", 404, "DeviceNotFound", "nobody"},
		{"body over 256 KiB", "PATCH", "/twins/bad", `{"tags":{"a":"` + strings.Repeat("z", 300<<10) + `"}}`, "", 413, "MessageTooLarge", "exceeds"},
		{"invalid device ID", "PUT", "/devices/bad%23id", "", "", 400, "ArgumentInvalid", "device ID"},
		{"device exists", "PUT", "/devices/bad", "", "", 409, "DeviceAlreadyExists", "already exists"},
		{"bad status", "PUT", "/devices/other", `{"status":"sleepy"}`, "", 400, "ArgumentInvalid", "status"},
		{"unknown route", "GET", "/nothing/here", "", "", 404, "NotFound", "no API"},
		// An If-Match that names only the empty etag matches nothing (RFC 9110).
		{"empty etag on patch", "PATCH", "/twins/bad", `{"tags":{"a":1}}`, `""`, 412, "PreconditionFailed", "etag"},
		{"weak empty etag on replace", "PUT", "/twins/bad", `{"tags":{}}`, `W/""`, 412, "PreconditionFailed", "etag"},
		{"empty etag on device update", "PUT", "/devices/bad", `{"status":"disabled"}`, `""`, 412, "PreconditionFailed", "etag"},
		{"empty etag on delete", "DELETE", "/devices/bad", "", `""`, 412, "PreconditionFailed", "etag"},
		{"empty etag on a new device", "PUT", "/devices/other", "", `""`, 412, "PreconditionFailed", "etag"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var hdr []string
			if c.ifMatch != "" {
				hdr = []string{"If-Match", c.ifMatch}
			}
			r := p.call(t, c.method, c.path, c.body, hdr...)
			if r.Status != c.status {
				t.Fatalf("status %d, want %d: %s", r.Status, c.status, r.Body)
			}
			if got := r.Header.Get("iothub-errorcode"); got != c.code {
				t.Errorf("iothub-errorcode %q, want %q", got, c.code)
			}
			var e struct{ Message, ExceptionMessage string }
			if err := json.Unmarshal(r.Body, &e); err != nil || !strings.HasPrefix(e.Message, "ErrorCode:"+c.code+";") {
				t.Errorf("error body %s is not IoT Hub's ErrorCode:%s;… form", r.Body, c.code)
			}
			if !strings.Contains(strings.ToLower(e.Message), strings.ToLower(c.mention)) {
				t.Errorf("message %q does not mention %q", e.Message, c.mention)
			}
		})
	}
	if after := p.call(t, "GET", "/twins/bad", "").Body; !bytes.Equal(before, after) {
		t.Errorf("rejected requests changed the twin:\nbefore %s\nafter  %s", before, after)
	}
	if r := p.call(t, "GET", "/devices/other", ""); r.Status != 404 {
		t.Errorf("a rejected create made the device: %d", r.Status)
	}
}

// TestBadInputMQTT sends device requests that break the rules: each gets an
// error response with Azure's errorCode body, and the twin does not change.
func TestBadInputMQTT(t *testing.T) {
	p := startTwinhub(t, "")
	p.call(t, "PUT", "/devices/mq", "")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dev, err := p.dialDevice(t, ctx, "mq")
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if _, err := dev.Report(ctx, []byte(`{"keep":"me"}`)); err != nil {
		t.Fatal(err)
	}
	before := p.call(t, "GET", "/twins/mq", "").Body

	const patchTopic = "devices/mq/twin/PATCH/properties/reported/?$rid="
	cases := []struct {
		name, topic, rid, payload string
		status, code              int
	}{
		{"malformed JSON", patchTopic + "r1", "r1", `{"a":`, 400, 400004},
		{"not an object", patchTopic + "r2", "r2", `[1,2]`, 400, 400004},
		{"array holding null", patchTopic + "r3", "r3", `{"a":[null]}`, 400, 400004},
		{"echoed $version", patchTopic + "r4", "r4", `{"a":1,"$version":3}`, 400, 400004},
		{"depth 11", patchTopic + "r5", "r5", nested(12, "1"), 400, 400004},
		{"invalid UTF-8", patchTopic + "r6", "r6", "{\"a\":\"\xff\"}", 400, 400004},
		{"oversized payload", patchTopic + "r7", "r7", `{"a":"` + strings.Repeat("b", 70<<10) + `"}`, 413, 413001},
		{"unknown operation", "devices/mq/twin/DELETE/?$rid=r8", "r8", `{}`, 400, 400004},
		{"missing rid", "devices/mq/twin/GET/", "", ``, 400, 400004},
		{"bad query", "devices/mq/twin/GET/?$rid=%zz", "", ``, 400, 400004},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rctx, rcancel := context.WithTimeout(ctx, 20*time.Second)
			defer rcancel()
			status, _, body, err := dev.Request(rctx, c.topic, c.rid, []byte(c.payload), 1)
			var de *deviceclient.Error
			if !errors.As(err, &de) {
				t.Fatalf("want an error response, got status %d err %v body %s", status, err, body)
			}
			if de.Status != c.status || de.ErrorCode != c.code || de.Message == "" {
				t.Fatalf("got %d errorCode %d message %q, want %d/%d", de.Status, de.ErrorCode, de.Message, c.status, c.code)
			}
		})
	}
	// A device that does not exist cannot even connect.
	if ghost, err := deviceclient.Dial(ctx, p.MQTT, "ghost", deviceclient.Options{Username: "ghost", Password: "SharedAccessSignature sr=localhost%2Fdevices%2Fghost&sig=AAAA&se=9999999999"}); err == nil {
		ghost.Close()
		t.Errorf("an unknown device connected")
	}
	if after := p.call(t, "GET", "/twins/mq", "").Body; !bytes.Equal(before, after) {
		t.Errorf("rejected requests changed the twin:\nbefore %s\nafter  %s", before, after)
	}
	if r := p.call(t, "GET", "/twins/ghost", ""); r.Status != 404 {
		t.Errorf("ghost twin exists: %d", r.Status)
	}
}
