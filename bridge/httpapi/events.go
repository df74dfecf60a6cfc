package httpapi

// GET /events: the change stream as Server-Sent Events, for consumers that
// cannot reach NATS (a browser, a serverless function, a tool behind an
// HTTP proxy).
//
// Each change event is one SSE event:
//
//	id: <stream sequence>
//	event: change
//	data: <the change event's JSON, as on twinhub.events.<device>>
//
// Resuming: a client that reconnects with Last-Event-ID (browsers do it by
// themselves) or ?from=<sequence> gets every event from there on that the
// stream still holds, none twice. Each feed is an ordered JetStream consumer
// of its own, so feeds share nothing and a client can start anywhere.
//
// Backpressure: a feed holds at most FeedConfig.Buffer events for its
// client, and pulls more from JetStream only as the client takes them, so a
// client replaying a long backlog is paced, not dropped. A client that takes
// nothing for FeedConfig.MaxStall while the feed is full is cut off: it gets
// "event: cutoff" with the sequence to resume from, and the feed ends. A
// write that has not finished within FeedConfig.WriteTimeout disconnects the
// client. Nothing else waits for a feed: its JetStream consumer is its own.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// FeedConfig bounds the change feeds of GET /events.
type FeedConfig struct {
	// Buffer is how many events a feed holds for a client that reads more
	// slowly than they arrive (default 1024); past it the client is cut off.
	Buffer int
	// WriteTimeout is how long one write to a client may take (default
	// 10 s); a client that does not read for longer is disconnected.
	WriteTimeout time.Duration
	// MaxStall is how long a full feed waits for its client to take an
	// event before cutting it off (default 5 s).
	MaxStall time.Duration
	// Heartbeat is how often an idle feed sends an SSE comment (default
	// 15 s), so that proxies keep the connection and dead clients are found.
	Heartbeat time.Duration
	// MaxFeeds bounds the feeds open at once (default 1000); more get 503.
	MaxFeeds int
}

func (c *FeedConfig) defaults() {
	if c.Buffer <= 0 {
		c.Buffer = 1024
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.MaxStall <= 0 {
		c.MaxStall = 5 * time.Second
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 15 * time.Second
	}
	if c.MaxFeeds <= 0 {
		c.MaxFeeds = 1000
	}
}

// feedSections are the values ?sections= accepts.
var feedSections = []string{"tags", "desired", "reported"}

// Reasons a feed ends, in the cutoff metric and the final event.
const (
	cutSlow         = "slow"
	cutWriteTimeout = "write_timeout"
)

// feeds tracks the open change feeds.
type feeds struct {
	mu     sync.Mutex
	open   int
	closed bool
	stop   map[*feedStop]struct{} // each open feed's shutdown signal

	openGauge prometheus.Gauge
	sent      prometheus.Counter
	cutoffs   *prometheus.CounterVec
}

type feedStop struct{ ch chan struct{} }

func newFeeds(reg prometheus.Registerer) *feeds {
	f := promauto.With(reg)
	fs := &feeds{stop: map[*feedStop]struct{}{}}
	fs.openGauge = f.NewGauge(prometheus.GaugeOpts{
		Namespace: "twinhub", Subsystem: "http", Name: "feeds_open",
		Help: "Change feeds (GET /events) open now.",
	})
	fs.sent = f.NewCounter(prometheus.CounterOpts{
		Namespace: "twinhub", Subsystem: "http", Name: "feed_events_sent_total",
		Help: "Change events written to change feeds (GET /events).",
	})
	fs.cutoffs = f.NewCounterVec(prometheus.CounterOpts{
		Namespace: "twinhub", Subsystem: "http", Name: "feed_cutoffs_total",
		Help: "Change feeds ended because their client fell behind (slow) or stopped reading (write_timeout).",
	}, []string{"reason"})
	for _, r := range []string{cutSlow, cutWriteTimeout} {
		fs.cutoffs.WithLabelValues(r)
	}
	return fs
}

// add registers a feed; it fails when max feeds are open or the server is
// shutting down.
func (fs *feeds) add(max int) (*feedStop, bool) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.closed || fs.open >= max {
		return nil, false
	}
	fs.open++
	fs.openGauge.Inc()
	s := &feedStop{ch: make(chan struct{})}
	fs.stop[s] = struct{}{}
	return s, true
}

func (fs *feeds) remove(s *feedStop) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.open--
	fs.openGauge.Dec()
	delete(fs.stop, s)
}

// closeAll ends every open feed and refuses new ones: http.Server.Shutdown
// waits for connections to go idle, which a feed never does by itself.
func (fs *feeds) closeAll() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.closed {
		return
	}
	fs.closed = true
	for s := range fs.stop {
		close(s.ch)
	}
}

// feedRequest is a parsed GET /events.
type feedRequest struct {
	deviceID, prefix string
	sections         []string // nil: all
	from             uint64   // first stream sequence; 0: events after now
}

// parseFeedRequest reads the query and Last-Event-ID; it writes a 400 and
// returns false when they are invalid.
func parseFeedRequest(w http.ResponseWriter, r *http.Request) (feedRequest, bool) {
	q := r.URL.Query()
	f := feedRequest{deviceID: q.Get("deviceId"), prefix: q.Get("deviceIdPrefix")}
	bad := func(format string, args ...any) (feedRequest, bool) {
		writeError(w, pipeline.CodeArgumentInvalid, fmt.Sprintf(format, args...))
		return feedRequest{}, false
	}
	if f.deviceID != "" && f.prefix != "" {
		return bad("deviceId and deviceIdPrefix exclude each other; send one")
	}
	if v := q.Get("sections"); v != "" {
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			if !slices.Contains(feedSections, s) {
				return bad("sections lists %q; use a comma-separated list of %v", s, feedSections)
			}
			f.sections = append(f.sections, s)
		}
	}
	if v := q.Get("from"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n == 0 {
			return bad("from must be a stream sequence (a positive integer, the id of an event), got %q", v)
		}
		f.from = n
	}
	// Last-Event-ID is what a client already has: resume after it. It wins
	// over ?from=, which a reconnecting EventSource sends again unchanged.
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return bad("Last-Event-ID must be the id of an event of this feed (a stream sequence), got %q", v)
		}
		f.from = n + 1
	}
	return f, true
}

// matches reports whether an event on subject with the sections header
// passes the feed's filters. Token keeps a device ID's prefixes, so the
// subject of every device whose ID starts with prefix starts with the
// subject of prefix.
func (f feedRequest) matches(subject, sections string) bool {
	if f.prefix != "" && !strings.HasPrefix(subject, topology.EventSubject(f.prefix)) {
		return false
	}
	if f.sections == nil {
		return true
	}
	for _, s := range strings.Split(sections, ",") {
		if slices.Contains(f.sections, s) {
			return true
		}
	}
	return false
}

// feedEnd is the data of the event that ends a feed.
type feedEnd struct {
	Reason  string `json:"reason"`
	Message string `json:"message"`
	// ResumeFrom is the sequence to reconnect with (?from=): nothing before
	// it is owed to the client.
	ResumeFrom uint64 `json:"resumeFrom"`
}

// events serves GET /events.
func (a *API) events(w http.ResponseWriter, r *http.Request) {
	js := a.cfg.Events
	if js == nil {
		writeError(w, pipeline.CodeServiceUnavailable, "the change feed is not served by this instance")
		return
	}
	req, ok := parseFeedRequest(w, r)
	if !ok {
		return
	}
	stop, ok := a.feeds.add(a.cfg.Feed.MaxFeeds)
	if !ok {
		writeError(w, pipeline.CodeServiceUnavailable,
			fmt.Sprintf("%d change feeds are open, the most this hub serves, or it is shutting down; retry later", a.cfg.Feed.MaxFeeds))
		return
	}
	defer a.feeds.remove(stop)

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	openCtx, cancelOpen := context.WithTimeout(ctx, 10*time.Second)
	defer cancelOpen()
	if req.from == 0 {
		// Events after now: start after the stream's last sequence, so the
		// client can tell where it started and resume from there.
		stream, err := js.Stream(openCtx, topology.EventStream)
		if err != nil {
			a.feedOpenFailed(w, err)
			return
		}
		req.from = stream.CachedInfo().State.LastSeq + 1
	}
	filter := topology.EventSubjects
	if req.deviceID != "" {
		filter = topology.EventSubject(req.deviceID)
	}
	cons, err := js.OrderedConsumer(openCtx, topology.EventStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    req.from,
	})
	if err != nil {
		a.feedOpenFailed(w, err)
		return
	}

	// The consumer's callback waits at most MaxStall for room (it holds up
	// only this feed's consumer); an event that still does not fit cuts the
	// client off, and the writer below tells it where to resume.
	queue := make(chan jetstream.Msg, a.cfg.Feed.Buffer)
	overflow := make(chan struct{})
	var once sync.Once
	stall := time.NewTimer(0)
	<-stall.C
	cc, err := cons.Consume(func(msg jetstream.Msg) {
		// Callbacks run one at a time and only this one closes overflow:
		// after a cutoff nothing more is queued, so the feed has no gap.
		select {
		case <-overflow:
			return
		default:
		}
		select {
		case queue <- msg:
			return
		default:
		}
		stall.Reset(a.cfg.Feed.MaxStall)
		defer stall.Stop()
		select {
		case queue <- msg:
		case <-ctx.Done():
		case <-stall.C:
			once.Do(func() {
				a.feeds.cutoffs.WithLabelValues(cutSlow).Inc()
				close(overflow)
			})
		}
	}, jetstream.PullMaxMessages(min(a.cfg.Feed.Buffer, 256)))
	if err != nil {
		a.feedOpenFailed(w, err)
		return
	}
	defer cc.Stop()

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	fw := &feedWriter{w: w, rc: rc, timeout: a.cfg.Feed.WriteTimeout, next: req.from}
	// The opening comment says where the feed starts.
	if !fw.write(fmt.Appendf(nil, ": twinhub change feed from sequence %d\n\n", req.from)) {
		a.feedWriteFailed(fw)
		return
	}
	heartbeat := time.NewTicker(a.cfg.Feed.Heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case msg := <-queue:
			if !a.sendEvent(fw, req, msg) {
				return
			}
		case <-heartbeat.C:
			if !fw.write([]byte(": ping\n\n")) {
				a.feedWriteFailed(fw)
				return
			}
		case <-overflow:
			cc.Stop()
			// Send what the feed holds, then say where to resume.
			for len(queue) > 0 {
				if !a.sendEvent(fw, req, <-queue) {
					return
				}
			}
			fw.end("cutoff", feedEnd{Reason: cutSlow, ResumeFrom: fw.next,
				Message: fmt.Sprintf("the client took no event for %s and was cut off; reconnect with from=%d (or Last-Event-ID) to resume",
					a.cfg.Feed.MaxStall, fw.next)})
			a.log.Info("cut off a slow change-feed client", "remote", r.RemoteAddr, "resume_from", fw.next)
			return
		case <-stop.ch:
			fw.end("shutdown", feedEnd{Reason: "shutdown", ResumeFrom: fw.next,
				Message: fmt.Sprintf("this hub instance is shutting down; reconnect with from=%d (or Last-Event-ID) to resume", fw.next)})
			return
		case <-ctx.Done():
			return
		}
	}
}

// sendEvent writes msg if it passes the filters; false means the client is
// gone.
func (a *API) sendEvent(fw *feedWriter, req feedRequest, msg jetstream.Msg) bool {
	meta, err := msg.Metadata()
	if err != nil {
		panic("BUG: a JetStream consumer delivered a message without metadata: " + err.Error())
	}
	seq := meta.Sequence.Stream
	fw.next = seq + 1
	if !req.matches(msg.Subject(), msg.Headers().Get(pipeline.SectionsHeader)) {
		return true
	}
	b := fmt.Appendf(make([]byte, 0, len(msg.Data())+48), "id: %d\nevent: change\n", seq)
	// Events are compact JSON; split lines anyway, as SSE requires.
	for line := range strings.SplitSeq(string(msg.Data()), "\n") {
		b = append(b, "data: "...)
		b = append(b, line...)
		b = append(b, '\n')
	}
	b = append(b, '\n')
	if !fw.write(b) {
		a.feedWriteFailed(fw)
		return false
	}
	a.feeds.sent.Inc()
	return true
}

// feedWriteFailed counts a write that missed its deadline as a cut-off
// client; other failures are clients that left.
func (a *API) feedWriteFailed(fw *feedWriter) {
	if errors.Is(fw.err, os.ErrDeadlineExceeded) {
		a.feeds.cutoffs.WithLabelValues(cutWriteTimeout).Inc()
		a.log.Info("disconnected a change-feed client that stopped reading", "resume_from", fw.next)
	}
}

// feedOpenFailed answers a feed that could not start reading the stream.
func (a *API) feedOpenFailed(w http.ResponseWriter, err error) {
	if errors.Is(err, context.Canceled) {
		return // the client left
	}
	a.log.Warn("opening a change feed failed", "err", err)
	writeError(w, pipeline.CodeServiceUnavailable,
		"reading the change stream failed; retry (check that NATS JetStream is up): "+err.Error())
}

// feedWriter writes SSE frames with a deadline each.
type feedWriter struct {
	w       io.Writer
	rc      *http.ResponseController
	timeout time.Duration
	next    uint64 // the sequence after the last event handled
	err     error  // the first failed write's error
}

func (fw *feedWriter) write(b []byte) bool {
	if fw.err != nil {
		return false
	}
	_ = fw.rc.SetWriteDeadline(time.Now().Add(fw.timeout))
	if _, fw.err = fw.w.Write(b); fw.err == nil {
		fw.err = fw.rc.Flush()
	}
	return fw.err == nil
}

func (fw *feedWriter) end(event string, e feedEnd) {
	b, _ := json.Marshal(e)
	fw.write(fmt.Appendf(nil, "event: %s\ndata: %s\n\n", event, b))
}

// Unwrap lets http.ResponseController reach the connection (deadlines,
// flushing) through the metrics wrapper.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
