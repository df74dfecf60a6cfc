// Package httpapi is twinhub's back-end REST API, in Azure IoT Hub's paths
// and shapes: the device registry (/devices), twins (/twins) and the health
// and metrics endpoints. Changes become pipeline commands; reads come from
// the twin records, which every acknowledged change has already reached.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/twinhub/twinhub/bridge/sas"
	"github.com/twinhub/twinhub/pipeline"
)

// Config configures the API.
type Config struct {
	// MaxBody bounds a request body (default 256 KiB); larger ones get 413.
	MaxBody int64
	// MaxList caps GET /devices (default 1000, IoT Hub's cap).
	MaxList int
	// Policies authenticates requests (Authorization: SharedAccessSignature …).
	// Nil turns authentication off, which only tests and --insecure do.
	Policies *sas.Policies
	// HubNames are the host names a token's sr may name (default
	// sas.HubNames(): localhost); see sas.CheckScope.
	HubNames []string
	// ReadTimeout bounds reading a whole request, body included (default
	// 30 s), so that clients that send slowly cannot hold connections.
	ReadTimeout time.Duration
	// History serves GET /twins/{id}/history and GET /twins/{id}?asOf=;
	// nil (history off) answers them with 503.
	History History
	// Querier answers POST /devices/query; nil answers it with 503.
	Querier Querier
	// Events serves the change feed, GET /events, from the event stream;
	// nil answers it with 503.
	Events jetstream.JetStream
	// Jobs keeps twin-update jobs (/jobs/v2/…); nil answers them with 503.
	Jobs Jobs
	// Feed bounds the change feeds.
	Feed   FeedConfig
	Logger *slog.Logger
}

// routeRights says which permissions each route needs; a token's policy
// needs any one of them. Routes not listed need ServiceConnect. A route's
// resource, which the token's sr must cover, is routeResource's.
var routeRights = map[string][]sas.Permission{
	"healthz":       nil,
	"readyz":        nil,
	"livez":         nil,
	"ui":            nil, // the explorer's files; it signs its own API calls
	"device_get":    {sas.RegistryRead},
	"device_list":   {sas.RegistryRead},
	"device_put":    {sas.RegistryWrite},
	"device_delete": {sas.RegistryWrite},
	"twin_get":      {sas.ServiceConnect, sas.RegistryRead},
	"twin_history":  {sas.ServiceConnect, sas.RegistryRead},
	"twin_patch":    {sas.ServiceConnect},
	"twin_replace":  {sas.ServiceConnect},
	"query":         {sas.RegistryRead, sas.ServiceConnect},
	"events":        {sas.ServiceConnect, sas.RegistryRead},
	"rollout":       {sas.ServiceConnect, sas.RegistryRead},
	"job_put":       {sas.ServiceConnect},
	"job_cancel":    {sas.ServiceConnect},
	"job_get":       {sas.ServiceConnect, sas.RegistryRead},
	"job_query":     {sas.ServiceConnect, sas.RegistryRead},
	"module_get":    {sas.RegistryRead},
	"module_list":   {sas.RegistryRead},
	"module_put":    {sas.RegistryWrite},
	"module_delete": {sas.RegistryWrite},
	// X.509 CA certificates (certificates.go)
	"certificate_get":    {sas.RegistryRead},
	"certificate_list":   {sas.RegistryRead},
	"certificate_put":    {sas.RegistryWrite},
	"certificate_delete": {sas.RegistryWrite},
	"certificate_verify": {sas.RegistryWrite},
}

func (c *Config) defaults() {
	if c.MaxBody == 0 {
		c.MaxBody = 256 << 10
	}
	if c.MaxList == 0 {
		c.MaxList = 1000
	}
	if c.HubNames == nil {
		c.HubNames = sas.HubNames()
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Feed.defaults()
}

// Commands submits pipeline commands; *pipeline.Client implements it.
type Commands interface {
	Do(ctx context.Context, cmd pipeline.Command) (pipeline.Result, error)
}

// Records reads twin records; *pipeline.Store implements it.
type Records interface {
	Get(ctx context.Context, deviceID string) (*pipeline.Record, error)
	List(ctx context.Context, limit int) ([]*pipeline.Record, error)
	Modules(ctx context.Context, deviceID string) ([]*pipeline.Record, error)
}

var (
	_ Commands = (*pipeline.Client)(nil)
	_ Records  = (*pipeline.Store)(nil)
)

// API serves the REST endpoints.
type API struct {
	cfg      Config
	commands Commands
	records  Records
	log      *slog.Logger
	mux      *http.ServeMux
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	authFail *prometheus.CounterVec
	feeds    *feeds
	// routes lists the registered patterns in order, for Routes.
	routes []string
}

// New builds the API. ready reports whether twinhub is ready for /healthz;
// metrics serves /metrics.
func New(cfg Config, commands Commands, records Records, ready func() bool, metrics http.Handler, reg prometheus.Registerer) *API {
	cfg.defaults()
	a := &API{cfg: cfg, commands: commands, records: records, log: cfg.Logger.With("component", "http"), mux: http.NewServeMux()}
	f := promauto.With(reg)
	a.requests = f.NewCounterVec(prometheus.CounterOpts{
		Namespace: "twinhub", Subsystem: "http", Name: "requests_total",
		Help: "Back-end API requests by route and status code.",
	}, []string{"route", "code"})
	a.duration = f.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "twinhub", Subsystem: "http", Name: "request_duration_seconds",
		Help:                        "Back-end API request latency by route.",
		Buckets:                     prometheus.ExponentialBuckets(0.0002, 2, 16),
		NativeHistogramBucketFactor: 1.1,
	}, []string{"route"})
	a.authFail = f.NewCounterVec(prometheus.CounterOpts{
		Namespace: "twinhub", Subsystem: "http", Name: "auth_failures_total",
		Help: "Back-end API requests refused by authentication or authorization, by reason.",
	}, []string{"reason"})
	for _, r := range []string{"missing", "malformed", "expired", "signature", "audience", "resource", "forbidden"} {
		a.authFail.WithLabelValues(r)
	}

	a.handle("GET /healthz", "healthz", func(w http.ResponseWriter, r *http.Request) {
		if !ready() {
			writeError(w, pipeline.CodeServiceUnavailable, "starting")
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok\n")
	})
	if metrics != nil {
		a.mux.Handle("GET /metrics", metrics)
		a.routes = append(a.routes, "GET /metrics")
	}
	a.handle("PUT /devices/{id}", "device_put", a.putDevice)
	a.handle("GET /devices/{id}", "device_get", a.getDevice)
	a.handle("DELETE /devices/{id}", "device_delete", a.deleteDevice)
	a.handle("GET /devices", "device_list", a.listDevices)
	a.handle("GET /devices/{$}", "device_list", a.listDevices)
	a.handle("GET /twins/{id}", "twin_get", a.getTwin)
	a.handle("GET /twins/{id}/history", "twin_history", a.twinHistory)
	a.handle("PATCH /twins/{id}", "twin_patch", a.changeTwin(pipeline.KindPatchTwin))
	a.handle("PUT /twins/{id}", "twin_replace", a.changeTwin(pipeline.KindReplaceTwin))
	a.handle("PUT /devices/{id}/modules/{mid}", "module_put", a.putModule)
	a.handle("GET /devices/{id}/modules/{mid}", "module_get", a.getDevice)
	a.handle("DELETE /devices/{id}/modules/{mid}", "module_delete", a.deleteDevice)
	a.handle("GET /devices/{id}/modules", "module_list", a.listModules)
	a.handle("GET /twins/{id}/modules/{mid}", "twin_get", a.getTwin)
	a.handle("PATCH /twins/{id}/modules/{mid}", "twin_patch", a.changeTwin(pipeline.KindPatchTwin))
	a.handle("PUT /twins/{id}/modules/{mid}", "twin_replace", a.changeTwin(pipeline.KindReplaceTwin))
	a.handle("POST /devices/query", "query", a.query)
	a.feeds = newFeeds(reg)
	a.handle("GET /events", "events", a.events)
	a.handle("GET /rollout", "rollout", a.rollout)
	a.handle("PUT /jobs/v2/{jobId}", "job_put", a.putJob)
	a.handle("GET /jobs/v2/{jobId}", "job_get", a.getJob)
	a.handle("POST /jobs/v2/{jobId}/cancel", "job_cancel", a.cancelJob)
	a.handle("GET /jobs/v2/query", "job_query", a.queryJobs)
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, pipeline.CodeNotFound, fmt.Sprintf("no API at %s %s", r.Method, r.URL.Path))
	})
	return a
}

// EnableProfiling serves Go's profiles (net/http/pprof) under /debug/pprof/,
// without authentication: for operators on a loopback listener.
func (a *API) EnableProfiling() {
	a.mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	a.mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	a.mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	a.mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	a.mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	a.routes = append(a.routes, "GET /debug/pprof/", "GET /debug/pprof/cmdline", "GET /debug/pprof/profile",
		"GET /debug/pprof/symbol", "GET /debug/pprof/trace")
}

// Routes returns the patterns of every route registered so far
// ("METHOD /path", as given to http.ServeMux), in registration order, for
// the OpenAPI description's test and the start-up log.
func (a *API) Routes() []string { return slices.Clone(a.routes) }

// Handle registers an extra route (used to add the query endpoint).
func (a *API) Handle(pattern, route string, h http.HandlerFunc) { a.handle(pattern, route, h) }

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

func (a *API) handle(pattern, route string, h http.HandlerFunc) {
	a.routes = append(a.routes, pattern)
	a.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		r.Body = http.MaxBytesReader(sw, r.Body, a.cfg.MaxBody)
		if a.authorize(sw, r, route) {
			h(sw, r)
		}
		a.requests.WithLabelValues(route, strconv.Itoa(sw.status)).Inc()
		a.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

// authorize checks the request's SAS token against the route's rights and
// answers 401 when it fails. Nothing of the token is logged.
func (a *API) authorize(w http.ResponseWriter, r *http.Request, route string) bool {
	rights, listed := routeRights[route]
	if a.cfg.Policies == nil || (listed && rights == nil) {
		return true
	}
	if !listed {
		rights = []sas.Permission{sas.ServiceConnect}
	}
	fail := func(reason, msg string) bool {
		a.authFail.WithLabelValues(reason).Inc()
		a.log.Warn("refused an API request", "route", route, "remote", r.RemoteAddr, "reason", reason)
		writeError(w, pipeline.CodeUnauthorized, msg)
		return false
	}
	header := r.Header.Get("Authorization")
	if header == "" {
		return fail("missing", "the Authorization header is missing; send a SharedAccessSignature token (`twinhub sas-token` prints one)")
	}
	policy, err := a.cfg.Policies.Authenticate(header, time.Now())
	switch {
	case errors.Is(err, sas.ErrExpired):
		return fail("expired", "the SharedAccessSignature token has expired")
	case errors.Is(err, sas.ErrMalformed):
		return fail("malformed", err.Error())
	case err != nil:
		return fail("signature", "the SharedAccessSignature token is not signed by a key of its policy (skn)")
	}
	tok, err := sas.Parse(header)
	if err != nil {
		panic("BUG: an authenticated token does not parse: " + err.Error())
	}
	switch err := tok.Covers(a.cfg.HubNames, routeResource(r)); {
	case errors.Is(err, sas.ErrAudience):
		return fail("audience", fmt.Sprintf("the token's resource (sr) does not name this hub; use one of its host names %v", a.cfg.HubNames))
	case errors.Is(err, sas.ErrMalformed):
		return fail("malformed", err.Error())
	case err != nil:
		return fail("resource", "the token's resource (sr) does not cover "+r.URL.Path+"; use a token for the hub (sr={host})")
	}
	for _, need := range rights {
		if policy.Has(need) {
			return true
		}
	}
	return fail("forbidden", fmt.Sprintf("policy %q lacks the %v permission this API needs", policy.Name, rights))
}

// routeResource is the IoT Hub resource of a request, below the host: every
// route about one device (/devices/{id}, /twins/{id} and what is under them,
// and /events?deviceId={id}) is that device's, ["devices", id], and one
// about a module is the module's, ["devices", id, "modules", mid]; the
// others (the registry list, queries, other feeds) are the whole hub's, nil.
func routeResource(r *http.Request) []string {
	if id := r.PathValue("id"); id != "" {
		if strings.Contains(id, "/") {
			// An encoded slash in a path ID names no device (the handler
			// answers 400) and is one segment no token's sr covers.
			return []string{"devices", id}
		}
		if mid := r.PathValue("mid"); mid != "" {
			return sas.DeviceScope(pipeline.ModuleEntity(id, mid))
		}
		return sas.DeviceScope(id)
	}
	if r.URL.Path == "/events" {
		if id := r.URL.Query().Get("deviceId"); id != "" {
			return sas.DeviceScope(id)
		}
	}
	return nil
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// do runs a command and writes its result; it reports whether the command
// succeeded.
func (a *API) do(w http.ResponseWriter, r *http.Request, cmd pipeline.Command) bool {
	cmd.ID = nuid.Next()
	res, err := a.commands.Do(r.Context(), cmd)
	switch {
	case errors.Is(err, pipeline.ErrTimeout):
		writeError(w, pipeline.CodeGatewayTimeout, err.Error())
		return false
	case err != nil:
		a.log.Error("submitting a command failed", "kind", cmd.Kind, "device", cmd.DeviceID, "err", err)
		writeError(w, pipeline.CodeServiceUnavailable, "the hub could not store the request; retry")
		return false
	case !res.OK():
		writeFailure(w, res.Status, res.Code, res.Message)
		return false
	}
	if res.Status == http.StatusNoContent || len(res.Body) == 0 {
		w.WriteHeader(res.Status)
		return true
	}
	writeJSON(w, res.Status, res.Body)
	return true
}

func (a *API) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	b, err := io.ReadAll(r.Body)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeError(w, pipeline.CodeMessageTooLarge, fmt.Sprintf("request body exceeds %d bytes", tooBig.Limit))
		return nil, false
	case errors.Is(err, os.ErrDeadlineExceeded):
		writeError(w, pipeline.CodeRequestTimeout, fmt.Sprintf("the request body did not arrive within %s; send it at once", a.cfg.ReadTimeout))
		return nil, false
	case err != nil:
		writeError(w, pipeline.CodeArgumentInvalid, "reading the request body: "+err.Error())
		return nil, false
	}
	return b, true
}

func (a *API) putDevice(w http.ResponseWriter, r *http.Request) {
	body, ok := a.readBody(w, r)
	if !ok {
		return
	}
	id, ok := entity(w, r)
	if !ok {
		return
	}
	cmd := pipeline.Command{Kind: pipeline.KindCreateDevice, DeviceID: id, Body: body}
	m, present, ok := ifMatch(w, r)
	if !ok {
		return
	}
	if present {
		cmd.Kind, cmd.IfMatch = pipeline.KindUpdateDevice, m
	}
	a.do(w, r, cmd)
}

func (a *API) deleteDevice(w http.ResponseWriter, r *http.Request) {
	id, ok := entity(w, r)
	if !ok {
		return
	}
	m, _, ok := ifMatch(w, r)
	if !ok {
		return
	}
	if a.do(w, r, pipeline.Command{Kind: pipeline.KindDeleteDevice, DeviceID: id, IfMatch: m}) && !pipeline.IsModule(id) {
		a.deleteModules(r.Context(), id)
	}
}

// ifMatch returns the request's If-Match precondition and whether the
// header was sent. An If-Match that lists no entity tag, or only the empty
// one ("" or W/""), matches nothing (RFC 9110 §13.1.1): the request gets 412
// PreconditionFailed here, and ok is false.
func ifMatch(w http.ResponseWriter, r *http.Request) (value string, present, ok bool) {
	values, present := r.Header["If-Match"]
	if !present {
		return "", false, true
	}
	if matchesNothing(values) {
		writeError(w, pipeline.CodePreconditionFailed,
			`If-Match names no etag ("" matches nothing); send the etag of the twin or device, or "*" for any`)
		return "", true, false
	}
	return r.Header.Get("If-Match"), true, true
}

// matchesNothing reports whether If-Match field values list no entity tag
// but the empty one.
func matchesNothing(values []string) bool {
	for _, v := range values {
		for _, tag := range strings.Split(v, ",") {
			tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
			if tag != "" && tag != `""` {
				return false
			}
		}
	}
	return true
}

func (a *API) getDevice(w http.ResponseWriter, r *http.Request) {
	rec, ok := a.record(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, rec.IdentityJSON())
}

func (a *API) listDevices(w http.ResponseWriter, r *http.Request) {
	limit := a.cfg.MaxList
	if top := r.URL.Query().Get("top"); top != "" {
		n, err := strconv.Atoi(top)
		if err != nil || n < 1 {
			writeError(w, pipeline.CodeArgumentInvalid, fmt.Sprintf("top must be a positive integer, got %q", top))
			return
		}
		limit = min(n, limit)
	}
	recs, err := a.records.List(r.Context(), limit)
	if err != nil {
		a.log.Error("listing devices failed", "err", err)
		writeError(w, pipeline.CodeServiceUnavailable, "listing devices failed; retry")
		return
	}
	docs := make([]pipeline.DeviceDocument, 0, len(recs))
	for _, rec := range recs {
		docs = append(docs, rec.Document())
	}
	b, _ := json.Marshal(docs)
	writeJSON(w, http.StatusOK, b)
}

func (a *API) getTwin(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Has("asOf") {
		a.twinAsOf(w, r)
		return
	}
	rec, ok := a.record(w, r)
	if !ok {
		return
	}
	b, err := json.Marshal(rec.Twin)
	if err != nil {
		panic("BUG: marshalling a twin: " + err.Error())
	}
	w.Header().Set("ETag", strconv.Quote(rec.Twin.ETag()))
	writeJSON(w, http.StatusOK, b)
}

func (a *API) record(w http.ResponseWriter, r *http.Request) (*pipeline.Record, bool) {
	id, ok := entity(w, r)
	if !ok {
		return nil, false
	}
	rec, err := a.records.Get(r.Context(), id)
	if errors.Is(err, pipeline.ErrNotFound) {
		writeNotFound(w, id)
		return nil, false
	}
	if err != nil {
		a.log.Error("reading a twin record failed", "device", id, "err", err)
		writeError(w, pipeline.CodeServiceUnavailable, "reading the twin failed; retry")
		return nil, false
	}
	return rec, true
}

func (a *API) changeTwin(kind pipeline.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, ok := a.readBody(w, r)
		if !ok {
			return
		}
		id, ok := entity(w, r)
		if !ok {
			return
		}
		m, _, ok := ifMatch(w, r)
		if !ok {
			return
		}
		a.do(w, r, pipeline.Command{Kind: kind, DeviceID: id, Body: body, IfMatch: m})
	}
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(body)
}

// writeError answers with one of IoT Hub's errors (writeFailure's body).
func writeError(w http.ResponseWriter, code pipeline.ErrorCode, msg string) {
	writeFailure(w, code.Status, code.Name, msg)
}

// writeFailure writes IoT Hub's error body: {"Message":"ErrorCode:<Code>;<text>",
// "ExceptionMessage":"Tracking ID:…"} with the iothub-errorcode header.
func writeFailure(w http.ResponseWriter, status int, code, msg string) {
	now := time.Now().UTC()
	b, _ := json.Marshal(struct {
		Message          string
		ExceptionMessage string
	}{
		Message:          "ErrorCode:" + code + ";" + msg,
		ExceptionMessage: "Tracking ID:" + strings.ToLower(nuid.Next()) + "-G:0-TimeStamp:" + now.Format("01/02/2006 15:04:05"),
	})
	w.Header().Set("iothub-errorcode", code)
	writeJSON(w, status, b)
}
