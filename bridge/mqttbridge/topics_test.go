package mqttbridge

import (
	"errors"
	"strings"
	"testing"
)

func TestParseTopic(t *testing.T) {
	cases := []struct {
		topic string
		want  Request
		err   error // sentinel, or nil for success; *TopicError checked by errMsg
		errIn string
	}{
		{topic: "devices/d1/twin/GET/?$rid=7", want: Request{DeviceID: "d1", Op: OpGet, RID: "7"}},
		{topic: "devices/d.1/twin/PATCH/properties/reported/?$rid=a-b", want: Request{DeviceID: "d.1", Op: OpPatchReported, RID: "a-b"}},
		{topic: "devices/d1/twin/GET/?$rid=1&foo=bar", want: Request{DeviceID: "d1", Op: OpGet, RID: "1"}},
		{topic: "devices/d1/messages/events/", err: ErrNotTwinTopic},
		{topic: "other/d1/twin/GET/?$rid=1", err: ErrNotTwinTopic},
		{topic: "devices/d1", err: ErrNotTwinTopic},
		{topic: "", err: ErrNotTwinTopic},
		{topic: "devices/d1/twin/res/200/?$rid=1", err: ErrHubTopic},
		{topic: "devices/d1/twin/PATCH/properties/desired/?$version=3", err: ErrHubTopic},
		{topic: "devices/d1/twin/GET/", errIn: "missing $rid"},
		{topic: "devices/d1/twin/GET/?$rid=", errIn: "missing $rid"},
		{topic: "devices/d1/twin/GET?$rid=1", errIn: "unknown twin operation"},
		{topic: "devices/d1/twin/PATCH/properties/reported?$rid=1", errIn: "unknown twin operation"},
		{topic: "devices//twin/GET/?$rid=1", errIn: "empty device ID"},
		{topic: "devices/d1/twin/GET/?$rid=%zz", errIn: "query"},
		{topic: "devices/d1/twin/GET/?$rid=%00", errIn: "not safe"},
		{topic: "devices/d1/twin/GET/?$rid=%FF", errIn: "not safe"},
		{topic: "devices/d1/twin/GET/?$rid=%0A", errIn: "not safe"},
		{topic: "devices/d1/twin/GET/?$rid=a%2Fb", errIn: "not safe"},
		{topic: "devices/d1/twin/GET/?$rid=a%23", errIn: "not safe"},
		{topic: "devices/d1/twin/GET/?$rid=a%2B", errIn: "not safe"},
		{topic: "devices/d1/twin/GET/?$rid=1%26$version=999", errIn: "not safe"},
		{topic: "devices/d1/twin/GET/?$rid=%C3%A9", errIn: "not safe"},
		{topic: "devices/d1/twin/GET/?$rid=" + strings.Repeat("7", 129), errIn: "not safe"},
		{topic: "devices/d1/twin/GET/?$rid=" + strings.Repeat("7", 128), want: Request{DeviceID: "d1", Op: OpGet, RID: strings.Repeat("7", 128)}},
		{topic: "devices/d1/twin/GET/?$rid=6f1c-9a:b_c.d~e", want: Request{DeviceID: "d1", Op: OpGet, RID: "6f1c-9a:b_c.d~e"}},
	}
	for _, c := range cases {
		got, err := ParseTopic(c.topic)
		switch {
		case c.err != nil:
			if !errors.Is(err, c.err) {
				t.Errorf("%q: err %v, want %v", c.topic, err, c.err)
			}
		case c.errIn != "":
			var te *TopicError
			if !errors.As(err, &te) || !strings.Contains(te.Error(), c.errIn) {
				t.Errorf("%q: err %v, want a topic error mentioning %q", c.topic, err, c.errIn)
			}
		default:
			if err != nil || got != c.want {
				t.Errorf("%q: got %+v, %v; want %+v", c.topic, got, err, c.want)
			}
		}
	}
}

func TestResponseTopics(t *testing.T) {
	if got := ResponseTopic("d1", "r", 204, 5); got != "devices/d1/twin/res/204/?$rid=r&$version=5" {
		t.Errorf("ResponseTopic = %q", got)
	}
	if got := ResponseTopic("d1", "r", 200, 0); got != "devices/d1/twin/res/200/?$rid=r" {
		t.Errorf("ResponseTopic = %q", got)
	}
	if got := DesiredTopic("d1", 3); got != "devices/d1/twin/PATCH/properties/desired/?$version=3" {
		t.Errorf("DesiredTopic = %q", got)
	}
}

// FuzzParseTopic: parsing any topic never panics, and a successfully parsed
// request names a non-empty device ID and $rid whose response topic is a
// well-formed hub topic that ParseTopic itself refuses as a request.
func FuzzParseTopic(f *testing.F) {
	for _, s := range []string{"devices/d1/twin/GET/?$rid=7", "devices/d/twin/PATCH/properties/reported/?$rid=1", "devices//twin/", "devices/x/twin/res/1/?", "$iothub/twin/GET/?$rid=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		req, err := ParseTopic(topic)
		var terr *TopicError
		if errors.As(err, &terr) && ValidTopicName(topic) {
			// The error answer's topic is as valid as the request's: an
			// unsafe $rid is not echoed.
			if rt := ResponseTopic(terr.DeviceID, terr.RID, 400, 0); terr.DeviceID != "" && !ValidTopicName(rt) {
				t.Fatalf("%q is answered on the malformed topic %q", topic, rt)
			}
		}
		if err != nil {
			return
		}
		if !SafeRID(req.RID) || (ValidTopicName(topic) && !ValidTopicName(ResponseTopic(req.DeviceID, req.RID, 200, 1))) {
			t.Fatalf("%q parsed to the unsafe $rid %q", topic, req.RID)
		}
		if req.DeviceID == "" || req.RID == "" || (req.Op != OpGet && req.Op != OpPatchReported) {
			t.Fatalf("%q parsed to %+v", topic, req)
		}
		if strings.Contains(req.DeviceID, "/") {
			t.Fatalf("device ID %q contains a slash", req.DeviceID)
		}
		if _, err := ParseTopic(ResponseTopic(req.DeviceID, "r", 200, 1)); !errors.Is(err, ErrHubTopic) {
			t.Fatalf("response topic of %q not recognised as a hub topic: %v", topic, err)
		}
	})
}
