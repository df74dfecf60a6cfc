package pipeline

import (
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// headerUnmarshaler turns a JetStream message into a Watermill message. It
// never fails: watermill-nats' default unmarshaler rejects repeated headers
// and its subscriber then dereferences a nil message, so a single crafted
// message could crash the process. Repeated headers keep their first value.
type headerUnmarshaler struct{}

func (headerUnmarshaler) Unmarshal(msg jetstream.Msg) (*message.Message, error) {
	m := message.NewMessage(msg.Headers().Get(nats.MsgIdHdr), msg.Data())
	for k, v := range msg.Headers() {
		if len(v) > 0 {
			m.Metadata.Set(k, v[0])
		}
	}
	return m, nil
}
