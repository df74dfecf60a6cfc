package mqttbridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/twinhub/twinhub/pipeline"
)

// Publisher sends hub → device messages through the broker in use.
type Publisher interface {
	// PublishToDevice publishes payload on topic with the given QoS, to
	// whoever subscribed.
	PublishToDevice(topic string, payload []byte, qos byte) error
	// PublishToClient sends payload on topic to one connection (QoS 0),
	// subscribed or not; it does nothing when the client is not connected.
	// Azure devices share topic names, so their traffic goes this way.
	PublishToClient(clientID, topic string, payload []byte) error
}

// ServiceConfig configures the device request handling.
type ServiceConfig struct {
	// MaxPayload bounds a request body (default 64 KiB); larger ones get 413.
	MaxPayload int
	// MaxInFlight bounds requests stored but not yet answered, over all
	// devices (default 20,000); beyond it devices get 429. It is a safety net
	// for the hub's memory; MaxInFlightPerDevice is what keeps one device
	// from starving the others.
	MaxInFlight int64
	// MaxInFlightPerDevice bounds one device's requests stored but not yet
	// answered (default 16); beyond it that device gets 429
	// (ThrottlingException) on its response topic, and other devices are
	// not affected.
	MaxInFlightPerDevice int
	Logger               *slog.Logger
}

func (c *ServiceConfig) defaults() {
	if c.MaxPayload == 0 {
		c.MaxPayload = 64 << 10
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 20000
	}
	if c.MaxInFlightPerDevice == 0 {
		c.MaxInFlightPerDevice = 16
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports configuration problems; zero values take defaults.
func (c ServiceConfig) Validate() error {
	var errs []error
	if c.MaxPayload < 0 {
		errs = append(errs, fmt.Errorf("mqtt service: the payload limit must not be negative (got %d)", c.MaxPayload))
	}
	if c.MaxInFlight < 0 {
		errs = append(errs, fmt.Errorf("mqtt service: the in-flight limit must not be negative (got %d)", c.MaxInFlight))
	}
	if c.MaxInFlightPerDevice < 0 {
		errs = append(errs, fmt.Errorf("mqtt service: the per-device in-flight limit must not be negative (got %d)", c.MaxInFlightPerDevice))
	}
	return errors.Join(errs...)
}

// Service turns device publishes into pipeline commands and answers them.
type Service struct {
	cfg      ServiceConfig
	client   *pipeline.Client
	pub      Publisher
	log      *slog.Logger
	metrics  *metrics
	inFlight atomic.Int64
	// perDevice counts each device's requests in flight.
	perDevice *deviceLimiter
	// answers queues the answers to send (see respondAll); bounded.
	answers chan func()
	// ctx is cancelled by Close; results arriving later are not answered.
	ctx    context.Context
	cancel context.CancelFunc
}

// responders is the number of goroutines sending answers.
const responders = 4

// NewService builds the service. pub is set later with SetPublisher when
// the broker is created after the service (the embedded hook case).
func NewService(cfg ServiceConfig, client *pipeline.Client, reg prometheus.Registerer) *Service {
	cfg.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{cfg: cfg, client: client, log: cfg.Logger.With("component", "mqtt"), metrics: newMetrics(reg),
		perDevice: newDeviceLimiter(cfg.MaxInFlightPerDevice), answers: make(chan func(), 4096), ctx: ctx, cancel: cancel}
	for range responders {
		go s.respondAll() // exits when Close cancels ctx
	}
	promauto.With(reg).NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "twinhub", Subsystem: "mqtt", Name: "requests_in_flight",
		Help: "Device twin requests stored but not yet answered.",
	}, func() float64 { return float64(s.inFlight.Load()) })
	return s
}

// SetPublisher sets where responses go. Call it before traffic flows.
func (s *Service) SetPublisher(p Publisher) { s.pub = p }

// Close stops answering: results that arrive later are not answered.
func (s *Service) Close() { s.cancel() }

// Outcome of HandlePublish for the broker.
type Outcome int

// Outcomes.
const (
	// NotTwin: not a twin topic; the broker routes it as usual.
	NotTwin Outcome = iota
	// Accepted: the request is stored (or was answered with an error);
	// acknowledge the publish and do not route it.
	Accepted
	// Refused: a client published on a hub topic; acknowledge and drop it.
	Refused
	// Failed: the request could not be stored; do not acknowledge it, so a
	// QoS 1 publisher sends it again.
	Failed
)

// HandlePublish handles one publish from a device. It returns once the
// request is durable in JetStream (or answered at the edge); the answer is
// published to the device asynchronously.
//
// clientID is the publishing connection's (authenticated) client ID, which
// is the device ID for Azure topics; empty when unknown (external brokers).
func (s *Service) HandlePublish(ctx context.Context, clientID, topic string, payload []byte) Outcome {
	start := time.Now()
	var req Request
	var err error
	if strings.HasPrefix(topic, "$iothub/") && clientID != "" {
		req, err = ParseAzureTopic(topic, clientID)
	} else {
		req, err = ParseTopic(topic)
	}
	var terr *TopicError
	switch {
	case errors.Is(err, ErrNotTwinTopic):
		return NotTwin
	case errors.Is(err, ErrHubTopic):
		s.metrics.requests.WithLabelValues("unknown", "refused").Inc()
		s.log.Warn("a client published on a hub topic; dropped", "topic", topic)
		return Refused
	case errors.As(err, &terr):
		s.metrics.requests.WithLabelValues("unknown", "rejected").Inc()
		s.answerError(Request{DeviceID: terr.DeviceID, RID: terr.RID, Azure: strings.HasPrefix(topic, "$iothub/")},
			pipeline.CodeArgumentInvalid, terr.Error())
		return Accepted
	}
	op := opName(req.Op)
	if len(payload) > s.cfg.MaxPayload {
		s.metrics.requests.WithLabelValues(op, "rejected").Inc()
		s.answerError(req, pipeline.CodeMessageTooLarge,
			"payload is "+itoa(len(payload))+" bytes; the limit is "+itoa(s.cfg.MaxPayload))
		return Accepted
	}
	if s.inFlight.Load() >= s.cfg.MaxInFlight {
		s.metrics.requests.WithLabelValues(op, "throttled").Inc()
		s.answerError(req, pipeline.CodeThrottling, "too many twin requests in flight; retry later")
		return Accepted
	}
	if !s.perDevice.acquire(req.DeviceID) {
		s.metrics.requests.WithLabelValues(op, "throttled").Inc()
		s.answerError(req, pipeline.CodeThrottling,
			"this device has "+itoa(s.cfg.MaxInFlightPerDevice)+" twin requests in flight, the limit; wait for their responses and retry")
		return Accepted
	}
	s.inFlight.Add(1)
	release := func() {
		s.inFlight.Add(-1)
		s.perDevice.release(req.DeviceID)
	}
	cmd := pipeline.Command{DeviceID: req.DeviceID, Kind: pipeline.KindDeviceGet}
	if req.Op == OpPatchReported {
		cmd.Kind, cmd.Body = pipeline.KindPatchReported, payload
	}
	// No goroutine waits per request: the client calls back with the
	// result, and the callback, which must not block (it runs on the
	// goroutine that delivers every result), hands the answer to the
	// responders. When their queue is full the answer is dropped.
	err = s.client.SubmitThen(ctx, cmd, func(res pipeline.Result, err error) {
		select {
		case s.answers <- func() {
			defer release()
			s.finish(req, op, start, res, err)
		}:
		default:
			release()
			s.metrics.requests.WithLabelValues(op, "error").Inc()
			s.metrics.responseFailures.Inc()
		}
	})
	if err != nil {
		release()
		s.metrics.requests.WithLabelValues(op, "error").Inc()
		s.log.Error("storing a device request failed; the publish is not acknowledged", "device", req.DeviceID, "err", err)
		s.answerError(req, pipeline.CodeServiceUnavailable, "the hub could not store the request; retry")
		return Failed
	}
	return Accepted
}

// finish answers a request with its result, or with 504 when waiting for it failed.
func (s *Service) finish(req Request, op string, start time.Time, res pipeline.Result, err error) {
	if err != nil {
		s.metrics.requests.WithLabelValues(op, "error").Inc()
		s.answerError(req, pipeline.CodeGatewayTimeout, err.Error())
		return
	}
	s.answer(req, res)
	result := "ok"
	if !res.OK() {
		result = "rejected"
	}
	s.metrics.requests.WithLabelValues(op, result).Inc()
	s.metrics.duration.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

// respondAll runs the answers handed over by result callbacks until Close.
// The embedded broker's publishes never wait, so a few responders keep up;
// an external broker's may, and then only the responders wait, not the
// delivery of results to everyone else.
func (s *Service) respondAll() {
	for {
		select {
		case answer := <-s.answers:
			answer()
		case <-s.ctx.Done():
			return
		}
	}
}

func (s *Service) answer(req Request, res pipeline.Result) {
	if !res.OK() {
		s.answerFailed(req, res.Status, res.Code, res.Message)
		return
	}
	var version int64
	if req.Op == OpPatchReported {
		version = res.Version
	}
	s.respond(req, req.ResponseTopic(res.Status, version), res.Body)
}

// answerError answers a request the edge refuses with an IoT Hub error.
func (s *Service) answerError(req Request, code pipeline.ErrorCode, msg string) {
	s.answerFailed(req, code.Status, code.Name, msg)
}

// answerFailed answers a request that failed with status and the IoT Hub
// error code name (a failed command's result).
func (s *Service) answerFailed(req Request, status int, name, msg string) {
	if req.DeviceID == "" || strings.ContainsAny(req.DeviceID, "+#") {
		return // nowhere to answer
	}
	body := ErrorBody(pipeline.NumericCode(name, status), msg, req.RID, time.Now())
	s.respond(req, req.ResponseTopic(status, 0), body)
}

// respond sends a response: Azure requests to the requesting connection,
// native ones on the device's response topic.
func (s *Service) respond(req Request, topic string, payload []byte) {
	if s.pub == nil {
		return
	}
	if !ValidTopicName(topic) {
		// Parsing keeps unsafe $rids and device IDs out of topics; this is
		// the last line that no malformed topic is published.
		s.metrics.responseFailures.Inc()
		s.log.Error("BUG: refused to publish a response on a malformed topic", "topic", safeForLog(topic))
		return
	}
	var err error
	if req.Azure {
		err = s.pub.PublishToClient(req.DeviceID, topic, payload)
	} else {
		err = s.pub.PublishToDevice(topic, payload, 0)
	}
	if err != nil {
		s.metrics.responseFailures.Inc()
		s.log.Warn("publishing to a device failed", "topic", topic, "err", err)
	}
}

func opName(op Operation) string {
	if op == OpPatchReported {
		return "patch_reported"
	}
	return "get"
}

func itoa(n int) string { return strconv.Itoa(n) }

type metrics struct {
	requests         *prometheus.CounterVec
	duration         *prometheus.HistogramVec
	responseFailures prometheus.Counter
	notifications    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	m := &metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "twinhub", Subsystem: "mqtt", Name: "requests_total",
			Help: "Device twin requests over MQTT by operation and result (ok, rejected, throttled, refused, error).",
		}, []string{"operation", "result"}),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "twinhub", Subsystem: "mqtt", Name: "request_duration_seconds",
			Help:                        "Time from a device's request to the hub's response.",
			Buckets:                     prometheus.ExponentialBuckets(0.0002, 2, 16),
			NativeHistogramBucketFactor: 1.1,
		}, []string{"operation"}),
		responseFailures: f.NewCounter(prometheus.CounterOpts{
			Namespace: "twinhub", Subsystem: "mqtt", Name: "publish_failures_total",
			Help: "Hub → device publishes that the broker refused.",
		}),
		notifications: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "twinhub", Subsystem: "mqtt", Name: "desired_notifications_total",
			Help: "Desired-property change notifications sent to devices, by result.",
		}, []string{"result"}),
	}
	for _, op := range []string{"get", "patch_reported"} {
		for _, r := range []string{"ok", "rejected", "throttled", "error"} {
			m.requests.WithLabelValues(op, r)
		}
	}
	return m
}
