package mqttbridge

import (
	"strings"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// BrokerPublisher publishes hub → device messages through the embedded
// broker. Neither of its methods ever waits for a device: a device that
// does not read its socket fills its own bounded queue, loses what does not
// fit (counted in twinhub_mqtt_broker_messages_dropped_total), and delays
// nobody else.
type BrokerPublisher struct {
	server *mqtt.Server
	out    *outbox
}

var _ Publisher = (*BrokerPublisher)(nil)

// NewBrokerPublisher returns a publisher on server. Each connection's queue
// for PublishToClient holds as many packets as the broker's own per-client
// queue (its MaximumClientWritesPending capability).
func NewBrokerPublisher(server *mqtt.Server) *BrokerPublisher {
	max := int(server.Options.Capabilities.MaximumClientWritesPending)
	return &BrokerPublisher{server: server, out: newOutbox(max, func() { atomic.AddInt64(&server.Info.MessagesDropped, 1) })}
}

// PublishToDevice implements Publisher. mochi queues the message in each
// subscriber's bounded outbound queue and drops it for a subscriber whose
// queue is full.
func (p *BrokerPublisher) PublishToDevice(topic string, payload []byte, qos byte) error {
	return p.server.Publish(topic, payload, false, qos)
}

// PublishToClient implements Publisher. mochi offers no exported way into a
// client's outbound queue without a subscription, so the message goes
// through a queue of the connection's own, bounded like mochi's.
func (p *BrokerPublisher) PublishToClient(clientID, topic string, payload []byte) error {
	cl, ok := p.server.Clients.Get(clientID)
	if !ok || cl.Closed() || (strings.HasPrefix(topic, "$iothub/") && !AzureClient(cl)) {
		return nil
	}
	p.out.send(cl, packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   topic,
		Payload:     payload,
	})
	return nil
}

// outbox writes packets to connections, each through its own bounded queue
// drained by its own goroutine. A queue and its goroutine exist only while
// the queue holds packets, so idle connections cost nothing, and a
// connection that does not read holds one goroutine (blocked in its socket
// write until the connection ends) and at most max packets.
type outbox struct {
	max     int
	dropped func()

	mu sync.Mutex
	// queues holds the connections with packets to write; an entry exists
	// exactly while its drain goroutine runs.
	queues map[*mqtt.Client]*clientQueue
}

type clientQueue struct{ pending []packets.Packet }

func newOutbox(max int, dropped func()) *outbox {
	if max <= 0 {
		max = 256
	}
	return &outbox{max: max, dropped: dropped, queues: make(map[*mqtt.Client]*clientQueue)}
}

// send queues pk for cl without waiting; it drops pk (and counts it) when
// cl's queue is full.
func (o *outbox) send(cl *mqtt.Client, pk packets.Packet) {
	o.mu.Lock()
	q, running := o.queues[cl]
	if !running {
		q = &clientQueue{}
		o.queues[cl] = q
	}
	if len(q.pending) >= o.max {
		o.mu.Unlock()
		o.dropped()
		return
	}
	q.pending = append(q.pending, pk)
	o.mu.Unlock()
	if !running {
		// Exits when the queue is empty, or the connection is gone.
		go o.drain(cl, q)
	}
}

func (o *outbox) drain(cl *mqtt.Client, q *clientQueue) {
	for {
		o.mu.Lock()
		if len(q.pending) == 0 {
			delete(o.queues, cl)
			o.mu.Unlock()
			return
		}
		pk := q.pending[0]
		q.pending[0] = packets.Packet{}
		q.pending = q.pending[1:]
		o.mu.Unlock()
		if err := cl.WritePacket(pk); err != nil && cl.Closed() {
			o.mu.Lock()
			q.pending = nil // nobody to write them to
			delete(o.queues, cl)
			o.mu.Unlock()
			return
		}
	}
}
