package mqttbridge

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
	"github.com/twinhub/twinhub/pipeline/twin"
)

// Notifier forwards desired-property changes from the change events to the
// devices: each event that touched desired becomes one publish on the
// device's desired topic, with the patch as applied plus "$version" (a
// replacement sends the whole new desired document). Like IoT Hub it does not
// queue notifications for disconnected devices; a device reads its twin
// after it connects and ignores notifications with a $version not above it.
//
// With an external broker, every instance's notifier shares one durable
// consumer, so each change is sent once through the shared broker. With
// embedded brokers, each instance serves the devices connected to it, so
// each instance reads every event (an ordered consumer from the newest
// event on) and sends it through its own broker.
type Notifier struct {
	js     jetstream.JetStream
	svc    *Service
	shared bool
}

// NewNotifier builds a notifier that publishes through svc's publisher;
// shared says the broker is shared by all instances (an external one).
func NewNotifier(js jetstream.JetStream, svc *Service, shared bool) *Notifier {
	return &Notifier{js: js, svc: svc, shared: shared}
}

// Run forwards notifications until ctx ends.
func (n *Notifier) Run(ctx context.Context) error {
	var cons jetstream.Consumer
	var err error
	if n.shared {
		cons, err = n.js.Consumer(ctx, topology.EventStream, topology.NotifierConsumer)
	} else {
		cons, err = n.js.OrderedConsumer(ctx, topology.EventStream, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{topology.EventSubjects},
			DeliverPolicy:  jetstream.DeliverNewPolicy,
		})
	}
	if err != nil {
		return fmt.Errorf("opening the desired-notification consumer: %w", err)
	}
	cc, err := cons.Consume(n.handle, jetstream.PullMaxMessages(256))
	if err != nil {
		return fmt.Errorf("consuming change events: %w", err)
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	return nil
}

func (n *Notifier) handle(msg jetstream.Msg) {
	if h := msg.Headers().Get(pipeline.SectionsHeader); h != "" && !strings.Contains(h, "desired") {
		n.settle(msg.Ack) // no desired change: nothing to decode
		return
	}
	log := n.svc.log
	var ev pipeline.Event
	if err := json.Unmarshal(msg.Data(), &ev); err != nil {
		log.Warn("skipping an undecodable change event", "subject", msg.Subject(), "err", err)
		n.settle(msg.Term)
		return
	}
	desired := ev.Patch.Desired()
	if desired == nil || (ev.Op != pipeline.OpUpdateTwin && ev.Op != pipeline.OpReplaceTwin) {
		n.settle(msg.Ack)
		return
	}
	patch, err := twin.ParseObject(desired)
	if err != nil {
		log.Warn("skipping a change event with an unreadable desired patch", "device", ev.DeviceID, "err", err)
		n.settle(msg.Term)
		return
	}
	body := twin.DesiredNotification(patch, ev.DesiredVersion)
	if err := n.svc.pub.PublishToDevice(DesiredTopic(ev.DeviceID, ev.DesiredVersion), body, 1); err != nil {
		n.svc.metrics.notifications.WithLabelValues("error").Inc()
		log.Warn("forwarding a desired change failed; will retry", "device", ev.DeviceID, "err", err, slog.Int64("version", ev.DesiredVersion))
		n.settle(msg.Nak)
		return
	}
	// Devices on Azure's topics all subscribe to the same desired topic, so
	// theirs goes to the device's own connection only.
	if err := n.svc.pub.PublishToClient(ev.DeviceID, AzureDesiredTopic(ev.DesiredVersion), body); err != nil {
		log.Warn("forwarding a desired change to an Azure device failed", "device", ev.DeviceID, "err", err)
	}
	n.svc.metrics.notifications.WithLabelValues("sent").Inc()
	n.settle(msg.Ack)
}

// settle acknowledges (or naks, or terms) a change event on the shared
// durable consumer. The ordered consumer of the embedded case takes no
// acknowledgements, so it is sent none: one publish less per change event.
func (n *Notifier) settle(ack func() error) {
	if n.shared {
		_ = ack()
	}
}
