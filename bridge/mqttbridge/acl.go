package mqttbridge

import (
	"log/slog"
	"strings"
	"unicode/utf8"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/twinhub/twinhub/pipeline/twin"
)

// Isolation model of the embedded broker
//
// No device receives anything another device published. Decide holds the
// rules; they make it so by three facts, each checked by the broker for
// every connection on every listener (hooks belong to the broker, not to a
// listener, so a listener added later has them too):
//
//  1. A device reads only topics under its own devices/{id}/ and Azure's
//     three subscription filters. Reading is checked twice: at SUBSCRIBE,
//     and again for every message the broker routes or replays from its
//     retained store to the device. A routed $iothub/… topic is no filter
//     and is refused at delivery: the hub never routes one (it writes
//     Azure responses and notifications to the one connection they are for).
//  2. Under devices/{id}/, only device {id} and the hub publish: a device
//     publishes only under its own prefix (and never on the hub → device
//     topics there), and its Will is held to the same rule.
//  3. What a device publishes under $iothub/ is delivered to nobody: twin
//     requests are the hub's to answer, method responses have no reader.
//
// Retain: IoT Hub keeps no retained messages, and neither does twinhub for
// devices. A device's publish or Will that asks for retain is stripped of
// it rather than refused: refusing would close the connection of an MQTT
// 3.1.1 device (it has no negative PUBACK), or refuse its CONNECT (mochi's
// answer to a retained Will when the broker announces no retain), and the
// device loses nothing IoT Hub would have given it. So the broker's
// retained store holds only mochi's own $SYS topics, which no device may
// read.

// Access is what a device asks to do with a topic.
type Access int

// Accesses.
const (
	// Publish is a PUBLISH packet's topic.
	Publish Access = iota + 1
	// Will is the topic of the Will the broker publishes for the device
	// when its connection ends without a DISCONNECT.
	Will
	// Read is a SUBSCRIBE filter, or the topic of a message about to be
	// delivered to the device (the broker checks both with the same call).
	Read
)

func (a Access) String() string {
	switch a {
	case Publish:
		return "publish"
	case Will:
		return "will"
	case Read:
		return "read"
	}
	return "unknown"
}

// Verdict is the ACL's decision on one access.
type Verdict int

// Verdicts.
const (
	// Deny refuses the access: SUBACK 0x80 for a subscription; a QoS 0
	// publish is dropped, a QoS 1 one closes an MQTT 3.1.1 connection (a
	// negative PUBACK for MQTT 5); a Will is removed; a delivery is skipped.
	Deny Verdict = iota
	// Allow lets the broker route it as usual. For a publish that means to
	// the subscribers of a topic under the device's own devices/{id}/,
	// which only the device itself and the hub can read.
	Allow
	// Consume accepts a publish, and no subscriber gets it: the hub reads
	// it (a twin request) or nobody does (a method response; twinhub
	// invokes no direct methods).
	Consume
)

func (v Verdict) String() string {
	switch v {
	case Deny:
		return "deny"
	case Allow:
		return "allow"
	case Consume:
		return "consume"
	}
	return "unknown"
}

// Azure's fixed topics a device may use. Their names are shared by all
// devices, so none of them is ever routed between clients.
const (
	// Device → hub publishes.
	azureTwinGet     = "$iothub/twin/GET/"
	azureTwinPatch   = "$iothub/twin/PATCH/properties/reported/"
	azureMethodReply = "$iothub/methods/res/"
)

// azureReadFilters are the only filters a device may subscribe to under
// $iothub/, exactly as the Azure device SDKs spell them.
var azureReadFilters = map[string]bool{
	"$iothub/twin/res/#":                      true,
	"$iothub/twin/PATCH/properties/desired/#": true,
	"$iothub/methods/POST/#":                  true,
}

// hubSpaces are the hub → device topic spaces under devices/{id}/: a device
// reads them, only the hub publishes on them. Each covers the name itself
// and everything below it (a device's filter ending in /# matches both).
var hubSpaces = []string{"twin/res", "twin/PATCH/properties/desired", "messages/devicebound"}

// Decide is the topic ACL for device connections: what device deviceID
// may do with topic (a topic name, or a topic filter for Read). It is the
// one place that says which traffic may cross between connections; see
// the isolation model above. A module connects as "{deviceId}/{moduleId}"
// and owns devices/{deviceId}/modules/{moduleId}/, which its device may not
// use. A device ID that is not valid (IoT Hub's rules, which exclude
// / + # and NUL) may do nothing, and neither may a
// topic that is empty, not valid UTF-8 or holds NUL. (mochi checks an MQTT 5
// publish by topic alias before it resolves the alias, with an empty topic:
// such publishes are refused; IoT Hub's devices speak MQTT 3.1.1.)
func Decide(deviceID string, access Access, topic string) Verdict {
	own, ok := ownPrefix(deviceID)
	if !ok || topic == "" || !utf8.ValidString(topic) || strings.ContainsRune(topic, 0) {
		return Deny
	}
	module := strings.Contains(deviceID, "/")
	switch access {
	case Read:
		if rest, ok := strings.CutPrefix(topic, own); ok && rest != "" {
			if !module && strings.HasPrefix(rest, modulesSpace) {
				return Deny // a module's topics are its own, not its device's
			}
			return Allow // matches nothing outside the device's own prefix
		}
		if azureReadFilters[topic] {
			return Allow
		}
		return Deny
	case Publish, Will:
		if rest, ok := strings.CutPrefix(topic, own); ok {
			if rest == "" || strings.ContainsAny(rest, "+#") || inHubSpace(rest) || (!module && strings.HasPrefix(rest, modulesSpace)) {
				return Deny
			}
			return Allow
		}
		if access == Will {
			// A Will is published by the broker without passing the
			// twin hook, so under $iothub/ it would be routed to every
			// Azure device: none there.
			return Deny
		}
		if strings.ContainsAny(topic, "+#") {
			return Deny
		}
		for _, p := range []string{azureTwinGet, azureTwinPatch, azureMethodReply} {
			if strings.HasPrefix(topic, p) {
				return Consume
			}
		}
		return Deny
	}
	return Deny
}

// modulesSpace is where the topics of a device's modules start under the
// device's own prefix: devices/{id}/modules/{moduleId}/ belongs to the
// module's connection only.
const modulesSpace = "modules/"

// ownPrefix is the topic prefix a connection owns: devices/{id}/ for a
// device, devices/{id}/modules/{moduleId}/ for a module (client ID
// "{id}/{moduleId}"). ok is false for an ID that breaks IoT Hub's rules.
func ownPrefix(clientID string) (prefix string, ok bool) {
	deviceID, moduleID, isModule := strings.Cut(clientID, "/")
	if twin.ValidateDeviceID(deviceID) != nil {
		return "", false
	}
	if !isModule {
		return topicPrefix + deviceID + "/", true
	}
	if twin.ValidateModuleID(moduleID) != nil {
		return "", false
	}
	return topicPrefix + deviceID + "/" + modulesSpace + moduleID + "/", true
}

func inHubSpace(rest string) bool {
	for _, s := range hubSpaces {
		if rest == s || strings.HasPrefix(rest, s+"/") {
			return true
		}
	}
	return false
}

// Isolation enforces Decide on the embedded broker for every device
// connection, on every listener: topic ACL on publish, subscribe and
// delivery, Wills, and retain. The hub's own (inline) client is exempt.
// Register it on every embedded broker, whether or not devices
// authenticate.
type Isolation struct {
	mqtt.HookBase
	log     *slog.Logger
	denied  *prometheus.CounterVec
	retains prometheus.Counter
}

var _ mqtt.Hook = (*Isolation)(nil)

// NewIsolation returns the hook; register it with the broker's AddHook.
func NewIsolation(log *slog.Logger, reg prometheus.Registerer) *Isolation {
	f := promauto.With(reg)
	h := &Isolation{log: log.With("component", "mqtt-acl"),
		denied: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "twinhub", Subsystem: "mqtt", Name: "acl_denials_total",
			Help: "Device publishes, subscriptions, Wills and deliveries refused by the topic ACL, by access (publish, will, read).",
		}, []string{"access"}),
		retains: f.NewCounter(prometheus.CounterOpts{
			Namespace: "twinhub", Subsystem: "mqtt", Name: "retain_stripped_total",
			Help: "Device publishes and Wills whose retain flag the broker removed (twinhub keeps no retained messages from devices).",
		}),
	}
	for _, a := range []Access{Publish, Will, Read} {
		h.denied.WithLabelValues(a.String())
	}
	return h
}

// ID names the hook.
func (h *Isolation) ID() string { return "twinhub-isolation" }

// Provides reports the hook points the hook implements.
func (h *Isolation) Provides(b byte) bool {
	switch b {
	case mqtt.OnACLCheck, mqtt.OnWill, mqtt.OnPublish:
		return true
	}
	return false
}

// OnACLCheck applies Decide to publishes (write), subscriptions and
// deliveries (read).
func (h *Isolation) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	access := Read
	if write {
		access = Publish
	}
	if Decide(cl.ID, access, topic) != Deny {
		return true
	}
	h.denied.WithLabelValues(access.String()).Inc()
	h.log.Warn("refused a topic outside the device's own", "client", cl.ID, "topic", safeForLog(topic), "access", access.String())
	return false
}

// OnWill removes a Will on a topic the device may not publish, and the
// retain flag of every Will. mochi publishes the Will this returns, and
// has no way to drop it here: a Will with an empty topic name reaches no
// subscriber (no filter matches an empty topic) and is not retained.
func (h *Isolation) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	if cl.Net.Inline {
		return will, nil
	}
	if will.Retain {
		will.Retain = false
		h.retains.Inc()
	}
	if Decide(cl.ID, Will, will.TopicName) == Allow {
		return will, nil
	}
	h.denied.WithLabelValues(Will.String()).Inc()
	h.log.Warn("removed a device's Will on a topic it may not publish", "client", cl.ID, "topic", safeForLog(will.TopicName))
	return mqtt.Will{}, nil
}

// OnPublish strips retain from a device's publish, and marks what it
// publishes under $iothub/ as delivered to nobody (mochi neither routes nor
// retains an ignored packet), also with --auth=false, where the ACL check
// lets everything through. It changes the packet and returns no error, so
// the twin hook still sees twin requests, whatever the order of the hooks.
func (h *Isolation) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	if pk.FixedHeader.Retain {
		pk.FixedHeader.Retain = false
		h.retains.Inc()
	}
	if strings.HasPrefix(pk.TopicName, "$") {
		pk.Ignore = true
	}
	return pk, nil
}

// safeForLog shortens a topic a device chose (slog quotes control
// characters and invalid UTF-8 itself).
func safeForLog(topic string) string {
	if len(topic) > 256 {
		return topic[:256] + "…"
	}
	return topic
}
