// Package mqttbridge is twinhub's MQTT edge: it turns device twin traffic on
// MQTT topics into pipeline commands, answers them, and forwards desired
// property changes to devices. It works inside the embedded mochi broker
// (Hook) and against any external broker through a paho client (Bridge).
//
// Topic scheme (Azure IoT Hub's grammar, with the device ID in the topic):
//
//	device → hub  devices/{id}/twin/GET/?$rid={rid}
//	device → hub  devices/{id}/twin/PATCH/properties/reported/?$rid={rid}     body: the patch
//	hub → device  devices/{id}/twin/res/{status}/?$rid={rid}[&$version={v}]
//	hub → device  devices/{id}/twin/PATCH/properties/desired/?$version={v}    body: the patch plus "$version"
//
// Devices connected with Azure IoT Hub's username format use Azure's topics
// instead, keyed by the identity of their connection:
//
//	$iothub/twin/GET/?$rid={rid}, $iothub/twin/PATCH/properties/reported/?$rid={rid},
//	$iothub/twin/res/{status}/?$rid={rid}[&$version={v}], $iothub/twin/PATCH/properties/desired/?$version={v}
//
// The hub echoes {rid} in the response topic, so it must be safe there (see
// SafeRID). A request whose $rid is missing or unsafe is answered with 400
// on the response topic with an empty $rid ("…/res/400/?$rid="): the
// device learns what is wrong, and no topic ever carries NUL, control
// characters, invalid UTF-8 or wildcards.
package mqttbridge

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Operation is what a device asks for.
type Operation int

// Device operations.
const (
	OpGet Operation = iota + 1
	OpPatchReported
)

// Topic filters.
const (
	// RequestFilter matches every device → hub twin topic (and the hub's).
	RequestFilter = "devices/+/twin/#"
	topicPrefix   = "devices/"
	azurePrefix   = "$iothub/twin/"
)

// RequestFilters match the two device → hub requests and nothing the hub
// publishes. The bridge subscribes to these, not to RequestFilter: a shared
// subscription that also matched the hub's own responses would deal them
// out round-robin with the requests, so one bridge could get every request.
var RequestFilters = []string{"devices/+/twin/GET/#", "devices/+/twin/PATCH/properties/reported/#"}

// ErrNotTwinTopic means the topic is not part of the twin scheme at all.
var ErrNotTwinTopic = errors.New("not a twin topic")

// ErrHubTopic means a client published on a topic only the hub may publish on.
var ErrHubTopic = errors.New("topic is reserved for the hub")

// Request is a parsed device → hub twin request.
type Request struct {
	DeviceID string
	Op       Operation
	RID      string
	// Azure is set for $iothub/ topics: answers go to the requesting
	// connection only, on Azure's response topic.
	Azure bool
}

// ResponseTopic is the hub → device topic answering r.
func (r Request) ResponseTopic(status int, version int64) string {
	if r.Azure {
		return withVersion(azurePrefix+"res/"+strconv.Itoa(status)+"/?$rid="+r.RID, version)
	}
	return ResponseTopic(r.DeviceID, r.RID, status, version)
}

func withVersion(topic string, version int64) string {
	if version > 0 {
		topic += "&$version=" + strconv.FormatInt(version, 10)
	}
	return topic
}

// TopicError is a twin topic that cannot be served. DeviceID and RID are
// set when they could be read, so that the device can be answered.
type TopicError struct {
	DeviceID, RID string
	Msg           string
}

func (e *TopicError) Error() string { return "malformed twin topic: " + e.Msg }

// ParseTopic parses a device → hub topic. It returns ErrNotTwinTopic for
// topics outside devices/{id}/twin/, ErrHubTopic for hub → device topics,
// and a *TopicError for malformed twin topics.
func ParseTopic(topic string) (Request, error) {
	rest, ok := strings.CutPrefix(topic, topicPrefix)
	if !ok {
		return Request{}, ErrNotTwinTopic
	}
	id, rest, ok := strings.Cut(rest, "/")
	if !ok || !strings.HasPrefix(rest, "twin/") {
		return Request{}, ErrNotTwinTopic
	}
	return parseOperation(id, strings.TrimPrefix(rest, "twin/"), false)
}

// ParseAzureTopic parses an Azure device topic ($iothub/twin/…) published
// by the connection of deviceID.
func ParseAzureTopic(topic, deviceID string) (Request, error) {
	rest, ok := strings.CutPrefix(topic, azurePrefix)
	if !ok {
		return Request{}, ErrNotTwinTopic
	}
	return parseOperation(deviceID, rest, true)
}

// parseOperation parses "GET/?$rid=…" or "PATCH/properties/reported/?$rid=…".
func parseOperation(id, rest string, azure bool) (Request, error) {
	path, query, _ := strings.Cut(rest, "?")
	terr := &TopicError{DeviceID: id}
	params, err := url.ParseQuery(query)
	if err != nil {
		terr.Msg = fmt.Sprintf("query %q: %v", query, err)
		return Request{}, terr
	}
	rid := params.Get("$rid")
	if SafeRID(rid) {
		terr.RID = rid // else the answer goes out with an empty $rid
	}
	req := Request{DeviceID: id, RID: rid, Azure: azure}
	switch path {
	case "GET/":
		req.Op = OpGet
	case "PATCH/properties/reported/":
		req.Op = OpPatchReported
	default:
		if strings.HasPrefix(path, "res/") || strings.HasPrefix(path, "PATCH/properties/desired/") {
			return Request{}, ErrHubTopic
		}
		terr.Msg = fmt.Sprintf("unknown twin operation %q; use twin/GET/?$rid=… or twin/PATCH/properties/reported/?$rid=…", path)
		return Request{}, terr
	}
	if id == "" {
		terr.Msg = "empty device ID"
		return Request{}, terr
	}
	if rid == "" {
		terr.Msg = "missing $rid query parameter"
		return Request{}, terr
	}
	if !SafeRID(rid) {
		terr.Msg = fmt.Sprintf("$rid %s is not safe in a topic; use 1 to %d printable ASCII characters other than + # / ? & = %%",
			strconv.QuoteToASCII(truncate(rid, 64)), MaxRIDLength)
		return Request{}, terr
	}
	return req, nil
}

// MaxRIDLength bounds a request ID ($rid); SDKs send integers or UUIDs.
const MaxRIDLength = 128

// SafeRID reports whether rid may be echoed in a response topic: 1 to
// MaxRIDLength printable ASCII characters (space included) other than the
// wildcards + and #, the level separator /, and ? & = % , which would
// change how the response topic's query reads.
func SafeRID(rid string) bool {
	if rid == "" || len(rid) > MaxRIDLength {
		return false
	}
	for i := 0; i < len(rid); i++ {
		c := rid[i]
		if c < 0x20 || c > 0x7e || strings.IndexByte("+#/?&=%", c) >= 0 {
			return false
		}
	}
	return true
}

// ValidTopicName reports whether topic may be published: non-empty valid
// UTF-8 without NUL or wildcards (MQTT 3.1.1 section 4.7). The service
// checks every topic it publishes with it.
func ValidTopicName(topic string) bool {
	return topic != "" && len(topic) <= 65535 && utf8.ValidString(topic) && !strings.ContainsAny(topic, "\x00+#")
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// ResponseTopic is the hub → device topic answering a request.
func ResponseTopic(deviceID, rid string, status int, version int64) string {
	return withVersion(topicPrefix+deviceID+"/twin/res/"+strconv.Itoa(status)+"/?$rid="+rid, version)
}

// DesiredTopic is the hub → device topic of a desired-properties change.
func DesiredTopic(deviceID string, version int64) string {
	return topicPrefix + deviceID + "/twin/PATCH/properties/desired/?$version=" + strconv.FormatInt(version, 10)
}

// AzureDesiredTopic is Azure's desired-change topic.
func AzureDesiredTopic(version int64) string {
	return azurePrefix + "PATCH/properties/desired/?$version=" + strconv.FormatInt(version, 10)
}

// ResponseFilter matches the responses to deviceID, for devices and tests.
func ResponseFilter(deviceID string) string { return topicPrefix + deviceID + "/twin/res/#" }

// DesiredFilter matches deviceID's desired-change notifications.
func DesiredFilter(deviceID string) string {
	return topicPrefix + deviceID + "/twin/PATCH/properties/desired/#"
}

// ErrorBody is the JSON body of an error response, in the shape the Azure
// device SDKs read: errorCode, message, trackingId, timestampUtc.
func ErrorBody(code int, message, trackingID string, now time.Time) []byte {
	b, _ := json.Marshal(struct {
		ErrorCode    int    `json:"errorCode"`
		TrackingID   string `json:"trackingId"`
		Message      string `json:"message"`
		TimestampUtc string `json:"timestampUtc"`
	}{code, trackingID, message, now.UTC().Format(time.RFC3339Nano)})
	return b
}
