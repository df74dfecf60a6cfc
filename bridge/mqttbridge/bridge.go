package mqttbridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// BridgeConfig configures the bridge to an external broker.
type BridgeConfig struct {
	// BrokerURL is the broker, e.g. tcp://127.0.0.1:1883.
	BrokerURL string
	// ClientID is this bridge's MQTT client ID; keep it stable across
	// restarts so the broker keeps the session and redelivers unacknowledged
	// requests (default "twinhub-bridge").
	ClientID string
	// Group is the shared-subscription group bridges split device traffic in (default "twinhub").
	Group              string
	Username, Password string
	// PublishTimeout bounds a hub → device publish (default 10 s).
	PublishTimeout time.Duration
}

func (c *BridgeConfig) defaults() {
	if c.ClientID == "" {
		c.ClientID = "twinhub-bridge"
	}
	if c.Group == "" {
		c.Group = "twinhub"
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 10 * time.Second
	}
}

// Validate reports configuration problems.
func (c BridgeConfig) Validate() error {
	if c.BrokerURL == "" {
		return errors.New("mqtt bridge: a broker URL is required")
	}
	return nil
}

// Bridge serves twin requests arriving through an external broker. It
// subscribes to every device's request topics through a shared subscription
// (several bridges share the load), in a persistent session, and
// acknowledges a QoS 1 request to the broker only after JetStream stored it.
// A broker may still drop messages queued for a bridge that falls behind
// (mosquitto: max_queued_messages, default 1000): size those limits for the
// fleet's peak rate.
type Bridge struct {
	cfg BridgeConfig
	svc *Service
	c   paho.Client
}

// NewBridge builds a bridge; it becomes the service's publisher.
func NewBridge(cfg BridgeConfig, svc *Service) (*Bridge, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &Bridge{cfg: cfg, svc: svc}
	svc.SetPublisher(b)
	return b, nil
}

// Run connects, serves until ctx ends, then disconnects.
func (b *Bridge) Run(ctx context.Context) error {
	filters := map[string]byte{}
	for _, f := range RequestFilters {
		filters["$share/"+b.cfg.Group+"/"+f] = 1
	}
	opts := paho.NewClientOptions().AddBroker(b.cfg.BrokerURL).SetClientID(b.cfg.ClientID).
		SetUsername(b.cfg.Username).SetPassword(b.cfg.Password).
		SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).SetMaxReconnectInterval(5 * time.Second).
		SetAutoAckDisabled(true).SetKeepAlive(15 * time.Second).
		SetDefaultPublishHandler(b.onRequest)
	opts.SetOnConnectHandler(func(c paho.Client) {
		// Subscribe on every connect: a broker that lost our session (a
		// restart without persistence) would otherwise send us nothing.
		if t := c.SubscribeMultiple(filters, b.onRequest); t.WaitTimeout(10*time.Second) && t.Error() != nil {
			b.svc.log.Error("subscribing to device requests failed", "group", b.cfg.Group, "err", t.Error())
		}
		b.svc.log.Info("bridge connected to the MQTT broker", "broker", b.cfg.BrokerURL, "group", b.cfg.Group)
	})
	opts.SetConnectionLostHandler(func(_ paho.Client, err error) {
		b.svc.log.Warn("bridge lost the MQTT broker; reconnecting", "broker", b.cfg.BrokerURL, "err", err)
	})
	b.c = paho.NewClient(opts)
	if t := b.c.Connect(); t.WaitTimeout(30*time.Second) && t.Error() != nil {
		return fmt.Errorf("connecting to MQTT broker %s: %w", b.cfg.BrokerURL, t.Error())
	}
	<-ctx.Done()
	b.c.Disconnect(1000)
	return nil
}

// Connected reports whether the bridge is connected to the broker.
func (b *Bridge) Connected() bool { return b.c != nil && b.c.IsConnectionOpen() }

func (b *Bridge) onRequest(_ paho.Client, m paho.Message) {
	// The request filters do not match hub → device topics; should a broker
	// hand one over anyway, it is no request and no misbehaving client sent
	// it: drop it quietly. Keeping devices off hub topics is the external
	// broker's ACL's job.
	if _, err := ParseTopic(m.Topic()); errors.Is(err, ErrHubTopic) {
		m.Ack()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if b.svc.HandlePublish(ctx, "", m.Topic(), m.Payload()) == Failed {
		return // not acknowledged: the broker sends it again after we reconnect
	}
	m.Ack()
}

// PublishToClient implements Publisher; an external broker offers no way to
// address one connection, so Azure's topics are not served through it.
func (b *Bridge) PublishToClient(clientID, topic string, payload []byte) error { return nil }

// PublishToDevice implements Publisher.
func (b *Bridge) PublishToDevice(topic string, payload []byte, qos byte) error {
	t := b.c.Publish(topic, qos, false, payload)
	if !t.WaitTimeout(b.cfg.PublishTimeout) {
		return fmt.Errorf("publishing to %s: no acknowledgement within %s", topic, b.cfg.PublishTimeout)
	}
	return t.Error()
}
