package mqttbridge

import (
	"context"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Hook serves twin requests inside the embedded mochi broker. Its OnPublish
// runs before mochi writes the PUBACK, so a device's QoS 1 publish is
// acknowledged only after JetStream stored the request; if storing fails the
// publish is not acknowledged and the device sends it again. Twin requests
// are not routed to other subscribers.
type Hook struct {
	mqtt.HookBase
	svc *Service
	// storeTimeout bounds how long a publish waits for JetStream.
	storeTimeout time.Duration
}

var _ mqtt.Hook = (*Hook)(nil)

// NewHook returns the hook; register it with the broker's AddHook.
func NewHook(svc *Service) *Hook { return &Hook{svc: svc, storeTimeout: 10 * time.Second} }

// ID names the hook.
func (h *Hook) ID() string { return "twinhub-twin" }

// Provides reports the hook points the hook implements.
func (h *Hook) Provides(b byte) bool {
	return b == mqtt.OnPublish
}

// OnPublish hands twin requests to the service.
func (h *Hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil // the hub's own publishes
	}
	if pk.FixedHeader.Qos == 2 {
		// IoT Hub closes the connection of a device that publishes with QoS 2.
		cl.Stop(packets.ErrQosNotSupported)
		return pk, packets.ErrRejectPacket
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.storeTimeout)
	defer cancel()
	switch h.svc.HandlePublish(ctx, cl.ID, pk.TopicName, pk.Payload) {
	case Accepted, Refused:
		return pk, packets.CodeSuccessIgnore
	case Failed:
		return pk, packets.ErrRejectPacket
	default:
		return pk, nil
	}
}

// AzureClient reports whether a connection uses Azure IoT Hub's username
// format ({host}/{deviceId}/?api-version=…), and so Azure's topics.
func AzureClient(cl *mqtt.Client) bool {
	return strings.Contains(string(cl.Properties.Username), "/")
}
