package mqttbridge

import (
	"strings"
	"testing"
)

func TestDecide(t *testing.T) {
	type row struct {
		topic string
		want  Verdict
	}
	const id = "A.1"
	cases := map[Access][]row{
		Read: {
			// The device's own response, desired and method topics.
			{"devices/A.1/twin/res/#", Allow},
			{"devices/A.1/twin/PATCH/properties/desired/#", Allow},
			{"devices/A.1/#", Allow},
			{"devices/A.1/+/res", Allow},
			{"devices/A.1/messages/devicebound/#", Allow},
			{"$iothub/twin/res/#", Allow},
			{"$iothub/twin/PATCH/properties/desired/#", Allow},
			{"$iothub/methods/POST/#", Allow},
			// Deliveries: the hub's native responses, yes; a routed $iothub topic never.
			{"devices/A.1/twin/res/200/?$rid=1", Allow},
			{"$iothub/twin/res/200/?$rid=1", Deny},
			{"$iothub/twin/PATCH/properties/desired/?$version=998", Deny},
			{"$iothub/methods/POST/factoryReset/?$rid=666", Deny},
			// Filters that can match other devices' topics.
			{"#", Deny},
			{"+/+/twin/res/#", Deny},
			{"devices/#", Deny},
			{"devices/+/twin/res/#", Deny},
			{"devices/+/#", Deny},
			{"devices/B/#", Deny},
			{"devices/A.1B/#", Deny},
			{"devices/A.1", Deny},
			{"devices/A.1/", Deny},
			{"$iothub/#", Deny},
			{"$iothub/+/res/#", Deny},
			{"$iothub/twin/#", Deny},
			{"$iothub/twin/res/+", Deny},
			{"$iothub/methods/#", Deny},
			{"$share/g/devices/A.1/#", Deny},
			{"$share/g/$iothub/twin/res/#", Deny},
			{"$SYS/#", Deny},
			{"devices/A.1/\x00", Deny},
			{"devices/A.1/\xff", Deny},
			{"", Deny},
		},
		Publish: {
			{"devices/A.1/twin/GET/?$rid=1", Allow},
			{"devices/A.1/twin/PATCH/properties/reported/?$rid=1", Allow},
			{"devices/A.1/twin/DELETE/?$rid=1", Allow}, // the hub answers 400
			{"devices/A.1/messages/events/", Allow},
			{"devices/A.1/messages/events/a=b&c=d", Allow},
			{"devices/A.1/twin/resume", Allow},
			{"$iothub/twin/GET/?$rid=1", Consume},
			{"$iothub/twin/PATCH/properties/reported/?$rid=1", Consume},
			{"$iothub/methods/res/200/?$rid=1", Consume},
			// Hub → device topics, the device's own included.
			{"devices/A.1/twin/res/200/?$rid=1", Deny},
			{"devices/A.1/twin/res", Deny},
			{"devices/A.1/twin/PATCH/properties/desired/?$version=9", Deny},
			{"devices/A.1/twin/PATCH/properties/desired", Deny},
			{"devices/A.1/messages/devicebound/x", Deny},
			{"$iothub/twin/res/200/?$rid=1", Deny},
			{"$iothub/twin/PATCH/properties/desired/?$version=998", Deny},
			{"$iothub/methods/POST/factoryReset/?$rid=666", Deny},
			// Other devices and other spaces.
			{"devices/B/twin/GET/?$rid=1", Deny},
			{"devices/B/twin/PATCH/properties/desired/?$version=999", Deny},
			{"devices/A.1B/twin/GET/?$rid=1", Deny},
			{"devices/A.1", Deny},
			{"devices/A.1/", Deny},
			{"devices/A.1/+", Deny},
			{"$iothub/twin/GET/#", Deny},
			{"$iothub/other", Deny},
			{"$SYS/broker/x", Deny},
			{"telemetry", Deny},
			{"devices/A.1/x\x00", Deny},
		},
		Will: {
			{"devices/A.1/messages/events/", Allow},
			{"devices/A.1/twin/GET/?$rid=1", Allow}, // reaches no one but the device and the hub
			{"devices/B/twin/PATCH/properties/desired/?$version=999", Deny},
			{"devices/B/twin/res/200/?$rid=1", Deny},
			{"devices/A.1/twin/PATCH/properties/desired/?$version=9", Deny},
			{"$iothub/twin/PATCH/properties/desired/?$version=998", Deny},
			{"$iothub/twin/GET/?$rid=1", Deny},
			{"$iothub/methods/res/200/?$rid=1", Deny},
			{"$iothub/methods/POST/m/?$rid=1", Deny},
		},
	}
	for access, rows := range cases {
		for _, c := range rows {
			if got := Decide(id, access, c.topic); got != c.want {
				t.Errorf("Decide(%q, %s, %q) = %s, want %s", id, access, c.topic, got, c.want)
			}
		}
	}
	// A device ID that is not one may do nothing, not even with the
	// topics that would be its own.
	for _, bad := range []string{"", "+", "#", "a/b/c", "a/", "/b", "a/+", "a\x00", strings.Repeat("x", 129)} {
		for _, c := range []struct {
			a     Access
			topic string
		}{{Read, "devices/" + bad + "/#"}, {Read, "devices/" + bad + "/twin/res/#"}, {Publish, "devices/" + bad + "/twin/GET/?$rid=1"},
			{Publish, "$iothub/twin/GET/?$rid=1"}, {Read, "$iothub/twin/res/#"}, {Will, "devices/" + bad + "/messages/events/"}} {
			if got := Decide(bad, c.a, c.topic); got != Deny {
				t.Errorf("invalid device ID %q: Decide(%s, %q) = %s, want deny", bad, c.a, c.topic, got)
			}
		}
	}
}

// matches reports whether an MQTT filter matches a topic name (MQTT 3.1.1
// section 4.7, with $-topics unmatched by a leading wildcard).
func matches(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	f, tp := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, level := range f {
		if level == "#" {
			return true
		}
		if i >= len(tp) {
			return false
		}
		if level != "+" && level != tp[i] {
			return false
		}
	}
	return len(f) == len(tp)
}

func TestMatches(t *testing.T) {
	for _, c := range []struct {
		f, t string
		want bool
	}{
		{"devices/A/#", "devices/A", true}, {"devices/A/#", "devices/A/x/y", true}, {"devices/+/x", "devices/B/x", true},
		{"#", "$iothub/x", false}, {"$iothub/twin/res/#", "$iothub/twin/res/200/?$rid=1", true}, {"a/+", "a/b/c", false},
	} {
		if got := matches(c.f, c.t); got != c.want {
			t.Errorf("matches(%q, %q) = %v", c.f, c.t, got)
		}
	}
}

// FuzzDecide states the isolation invariant: whatever device a publishes
// (or leaves as its Will) and the broker routes, no filter another device
// b may subscribe to matches it, and the broker's delivery check refuses
// it to b. What is consumed is under $ (never routed; see Isolation).
func FuzzDecide(f *testing.F) {
	for _, s := range [][3]string{
		{"A", "B", "devices/A/twin/GET/?$rid=1"},
		{"A", "B", "devices/B/#"},
		{"A", "B", "$iothub/methods/POST/factoryReset/?$rid=666"},
		{"A", "B", "$iothub/twin/res/#"},
		{"A", "A", "devices/A/messages/events/"},
		{"+", "B", "devices/+/twin/res/#"},
		{"A", "B", "devices/A/twin/PATCH/properties/desired/?$version=1"},
	} {
		f.Add(s[0], s[1], s[2], s[2])
	}
	f.Fuzz(func(t *testing.T, a, b, topic, filter string) {
		for _, acc := range []Access{Publish, Will, Read} {
			switch v := Decide(a, acc, topic); v {
			case Allow:
				if acc != Read && (!strings.HasPrefix(topic, "devices/"+a+"/") || strings.ContainsAny(topic, "+#\x00")) {
					t.Fatalf("%s %q by %q allowed outside its own prefix", acc, topic, a)
				}
				if acc == Read && !strings.HasPrefix(topic, "devices/"+a+"/") && !azureReadFilters[topic] {
					t.Fatalf("read %q by %q allowed", topic, a)
				}
			case Consume:
				if acc != Publish || !strings.HasPrefix(topic, "$iothub/") {
					t.Fatalf("%s %q by %q consumed", acc, topic, a)
				}
			}
		}
		if Decide(a, Will, topic) == Allow && Decide(a, Publish, topic) != Allow {
			t.Fatalf("Will %q allowed but not the publish", topic)
		}
		if a == b {
			return
		}
		for _, acc := range []Access{Publish, Will} {
			if Decide(a, acc, topic) != Allow {
				continue
			}
			if Decide(b, Read, topic) != Deny {
				t.Fatalf("%q's %s on %q would be delivered to %q", a, acc, topic, b)
			}
			if Decide(b, Read, filter) == Allow && matches(filter, topic) {
				t.Fatalf("%q's %s on %q matches %q's filter %q", a, acc, topic, b, filter)
			}
		}
	})
}

// TestDecideModule: a module ("{deviceId}/{moduleId}") owns
// devices/{deviceId}/modules/{moduleId}/ and uses Azure's $iothub topics;
// neither its device nor another module may use its topics, and it may not
// use its device's.
func TestDecideModule(t *testing.T) {
	for _, c := range []struct {
		id     string
		access Access
		topic  string
		want   Verdict
	}{
		{"d/m", Read, "devices/d/modules/m/messages/devicebound/#", Allow},
		{"d/m", Publish, "devices/d/modules/m/messages/events/", Allow},
		{"d/m", Publish, "$iothub/twin/GET/?$rid=1", Consume},
		{"d/m", Publish, "$iothub/twin/PATCH/properties/reported/?$rid=2", Consume},
		{"d/m", Read, "$iothub/twin/res/#", Allow},
		{"d/m", Read, "devices/d/#", Deny},
		{"d/m", Read, "devices/d/modules/m2/#", Deny},
		{"d/m", Publish, "devices/d/messages/events/", Deny},
		{"d/m", Publish, "devices/d/modules/m/messages/devicebound/x", Deny},
		{"d/m", Will, "devices/d/modules/m/messages/events/", Allow},
		{"d/m", Will, "devices/d/messages/events/", Deny},
		{"d/m2", Read, "devices/d/modules/m/messages/devicebound/x", Deny},
		// The device: its own topics, not its modules'.
		{"d", Read, "devices/d/messages/devicebound/#", Allow},
		{"d", Read, "devices/d/modules/m/messages/devicebound/x", Deny},
		{"d", Publish, "devices/d/modules/m/messages/events/", Deny},
		{"d", Will, "devices/d/modules/m/messages/events/", Deny},
	} {
		if got := Decide(c.id, c.access, c.topic); got != c.want {
			t.Errorf("Decide(%q, %s, %q) = %s, want %s", c.id, c.access, c.topic, got, c.want)
		}
	}
}

// TestDeviceFromUsername: IoT Hub's user names for devices and modules.
func TestDeviceFromUsername(t *testing.T) {
	for user, want := range map[string]string{
		"d1":                             "d1",
		"hub/d1/?api-version=2021-04-12": "d1",
		"hub/d1/?api-version=2021-04-12&DeviceClientType=azure-iot-device": "d1",
		"hub/d1/m1/?api-version=2021-04-12":                                "d1/m1",
		"hub/d1/m1/?api-version=2021-04-12&DeviceClientType=x%2F1":         "d1/m1",
		"hub/d1/": "d1",
		"hub/d1":  "d1",
	} {
		if got := DeviceFromUsername(user); got != want {
			t.Errorf("DeviceFromUsername(%q) = %q, want %q", user, got, want)
		}
	}
}
