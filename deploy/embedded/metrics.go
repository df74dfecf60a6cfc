package embedded

import "github.com/prometheus/client_golang/prometheus"

// brokerCollector exports the embedded broker's statistics at scrape time.
type brokerCollector struct{ b *Broker }

// NewBrokerCollector returns a Prometheus collector over the broker's counters.
func NewBrokerCollector(b *Broker) prometheus.Collector { return brokerCollector{b} }

func desc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("twinhub_mqtt_broker_"+name, help, nil, nil)
}

var (
	clientsConnected = desc("clients_connected", "MQTT clients connected to the embedded broker.")
	messagesReceived = desc("messages_received_total", "PUBLISH packets received by the embedded broker.")
	messagesSent     = desc("messages_sent_total", "PUBLISH packets sent by the embedded broker.")
	messagesDropped  = desc("messages_dropped_total", "Messages the embedded broker dropped because a client's queue was full.")
	inflightDropped  = desc("inflight_dropped_total", "QoS>0 messages the embedded broker dropped because a client's inflight window was full.")
	bytesReceived    = desc("received_bytes_total", "Bytes received by the embedded broker.")
	bytesSent        = desc("sent_bytes_total", "Bytes sent by the embedded broker.")
)

func (c brokerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{clientsConnected, messagesReceived, messagesSent, messagesDropped, inflightDropped, bytesReceived, bytesSent} {
		ch <- d
	}
}

func (c brokerCollector) Collect(ch chan<- prometheus.Metric) {
	i := c.b.Server.Info.Clone()
	ch <- prometheus.MustNewConstMetric(clientsConnected, prometheus.GaugeValue, float64(i.ClientsConnected))
	ch <- prometheus.MustNewConstMetric(messagesReceived, prometheus.CounterValue, float64(i.MessagesReceived))
	ch <- prometheus.MustNewConstMetric(messagesSent, prometheus.CounterValue, float64(i.MessagesSent))
	ch <- prometheus.MustNewConstMetric(messagesDropped, prometheus.CounterValue, float64(i.MessagesDropped))
	ch <- prometheus.MustNewConstMetric(inflightDropped, prometheus.CounterValue, float64(i.InflightDropped))
	ch <- prometheus.MustNewConstMetric(bytesReceived, prometheus.CounterValue, float64(i.BytesReceived))
	ch <- prometheus.MustNewConstMetric(bytesSent, prometheus.CounterValue, float64(i.BytesSent))
}
