package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// openAPIFile is twinhub's OpenAPI description, relative to this package.
const openAPIFile = "../../deploy/openapi/twinhub.yaml"

// loadOpenAPI loads and validates the description, with no servers, so that
// its routes match requests to any address.
func loadOpenAPI(t *testing.T) (*openapi3.T, routers.Router) {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromFile(openAPIFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("%s is not valid: %v", openAPIFile, err)
	}
	doc.Servers = nil
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return doc, router
}

// The media types the hub answers with besides JSON; their bodies are
// checked as strings.
func init() {
	for _, ct := range []string{"text/event-stream", "text/html", "text/css", "text/javascript", "application/openmetrics-text"} {
		openapi3filter.RegisterBodyDecoder(ct, openapi3filter.PlainBodyDecoder)
	}
}

var routesRe = regexp.MustCompile(`msg="HTTP routes" routes="([^"]*)"`)

// hubRoutes returns the route patterns the hub logged on start
// ("GET /devices/{id}", …).
func hubRoutes(t *testing.T, p *proc) []string {
	t.Helper()
	m := routesRe.FindStringSubmatch(p.logs.String())
	if m == nil {
		t.Fatalf("the hub did not log its HTTP routes (msg=\"HTTP routes\" at debug)")
	}
	return strings.Split(m[1], ",")
}

// requestCheck says what the description must say of a request.
type requestCheck int

const (
	requestConforms  requestCheck = iota // the request is one the description allows
	requestRefused                       // the description must refuse it (the test sends it on purpose)
	requestUnchecked                     // a bad request the description need not catch (the hub does)
)

// contractCase is one request to the hub and the status it must get.
type contractCase struct {
	name    string
	method  string
	path    string
	body    string
	header  []string // name, value pairs; Authorization "" sends none
	status  int      // 0: any status the description allows
	request requestCheck
}

// TestOpenAPIMatchesTheHub starts the real hub, with history and profiles,
// and checks deploy/openapi/twinhub.yaml against it: every route the hub
// registers is described, and each request below (successes and errors)
// conforms to the description, as does the hub's answer, status included.
func TestOpenAPIMatchesTheHub(t *testing.T) {
	_, router := loadOpenAPI(t)
	ch := startClickHouse(t)
	p := startTwinhub(t, "", "--clickhouse-url", ch.URL(""), "--pprof", "--log-level", "debug")

	// Every registered route is described.
	routes := hubRoutes(t, p)
	param := regexp.MustCompile(`\{[^}$]*\}`)
	var parameterless []string
	for _, pattern := range routes {
		method, path, ok := strings.Cut(pattern, " ")
		if !ok {
			t.Fatalf("route %q has no method", pattern)
		}
		path = strings.TrimSuffix(path, "{$}")
		req := httptest.NewRequest(method, param.ReplaceAllString(path, "x"), nil)
		if _, _, err := router.FindRoute(req); err != nil {
			t.Errorf("route %s is not in %s: %v", pattern, openAPIFile, err)
		}
		if method == "GET" && !param.MatchString(path) && path != "/events" && path != "/$iothub/websocket" {
			parameterless = append(parameterless, path)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	owner := p.ownerToken(t)
	caBody := `{"properties":{"certificate":` + strconv.Quote(selfSignedCA(t)) + `}}`
	var cases []contractCase
	// Each GET route without path parameters, as registered (so a route
	// added later is exercised too), for its answer: a route with required
	// query parameters gets 400.
	for _, path := range parameterless {
		switch path {
		case "/debug/pprof/profile", "/debug/pprof/trace":
			path += "?seconds=1"
		}
		cases = append(cases, contractCase{name: "GET " + path, method: "GET", path: path, request: requestUnchecked})
	}
	cases = append(cases, []contractCase{
		{name: "create", method: "PUT", path: "/devices/oa-1", body: `{"deviceId":"oa-1"}`, status: 200},
		{name: "create with keys", method: "PUT", path: "/devices/oa-2",
			body:   `{"deviceId":"oa-2","authentication":{"symmetricKey":{"primaryKey":"cHJpbWFyeWtleXByaW1hcnlrZXlwcmltYXJ5a2V5MTI=","secondaryKey":"c2Vjb25kYXJ5a2V5c2Vjb25kYXJ5a2V5c2Vjb25kYXk="}}}`,
			status: 200},
		{name: "create again", method: "PUT", path: "/devices/oa-1", body: `{"deviceId":"oa-1"}`, status: 409},
		{name: "update with *", method: "PUT", path: "/devices/oa-1", body: `{"deviceId":"oa-1","status":"enabled","statusReason":"checked"}`,
			header: []string{"If-Match", `"*"`}, status: 200},
		{name: "update with the empty etag", method: "PUT", path: "/devices/oa-1", body: `{"deviceId":"oa-1"}`,
			header: []string{"If-Match", `""`}, status: 412},
		{name: "read device", method: "GET", path: "/devices/oa-1", status: 200},
		{name: "read a device ID IoT Hub refuses", method: "GET", path: "/devices/bad%20id", status: 400},
		{name: "create module", method: "PUT", path: "/devices/oa-1/modules/m1", body: `{"moduleId":"m1"}`, status: 200},
		{name: "create module again", method: "PUT", path: "/devices/oa-1/modules/m1", body: `{}`, status: 409},
		{name: "create module of a missing device", method: "PUT", path: "/devices/oa-none/modules/m1", body: `{}`, status: 404},
		{name: "read module", method: "GET", path: "/devices/oa-1/modules/m1", status: 200},
		{name: "read missing module", method: "GET", path: "/devices/oa-1/modules/none", status: 404},
		{name: "list modules", method: "GET", path: "/devices/oa-1/modules", status: 200},
		{name: "patch module twin", method: "PATCH", path: "/twins/oa-1/modules/m1", body: `{"properties":{"desired":{"rate":2}}}`, status: 200},
		{name: "replace module twin", method: "PUT", path: "/twins/oa-1/modules/m1", body: `{"tags":{"role":"edge"}}`, status: 200},
		{name: "read module twin", method: "GET", path: "/twins/oa-1/modules/m1", status: 200},
		{name: "delete module", method: "DELETE", path: "/devices/oa-1/modules/m1", status: 204},
		{name: "read missing device", method: "GET", path: "/devices/oa-none", status: 404},
		{name: "list top 1", method: "GET", path: "/devices?top=1", status: 200},
		{name: "list top 0", method: "GET", path: "/devices?top=0", status: 400, request: requestRefused},
		{name: "patch twin", method: "PATCH", path: "/twins/oa-1",
			body: `{"tags":{"site":"north"},"properties":{"desired":{"fw":"1.0","cfg":{"rate":5}}}}`, status: 200},
		{name: "patch with a stale etag", method: "PATCH", path: "/twins/oa-1", body: `{"tags":{"site":"south"}}`,
			header: []string{"If-Match", `"AAAAAAAAAAE="`}, status: 412},
		{name: "patch reported", method: "PATCH", path: "/twins/oa-1", body: `{"properties":{"reported":{"x":1}}}`, status: 400},
		{name: "patch not JSON", method: "PATCH", path: "/twins/oa-1", body: `{"tags":`, status: 400, request: requestRefused},
		{name: "patch missing twin", method: "PATCH", path: "/twins/oa-none", body: `{"tags":{"a":1}}`, status: 404},
		{name: "desired set to null", method: "PATCH", path: "/twins/oa-1", body: `{"properties":{"desired":null}}`, status: 200},
		{name: "replace twin", method: "PUT", path: "/twins/oa-1", body: `{"tags":{"site":"east"},"properties":{"desired":{"fw":"2.0"}}}`,
			header: []string{"If-Match", `"*"`}, status: 200},
		{name: "replace with null inside", method: "PUT", path: "/twins/oa-1", body: `{"tags":{"site":null}}`, status: 400},
		{name: "read twin", method: "GET", path: "/twins/oa-1", status: 200},
		{name: "read twin as of now", method: "GET", path: "/twins/oa-1?asOf={now}", status: 200},
		{name: "read twin as of a bad time", method: "GET", path: "/twins/oa-1?asOf=yesterday", status: 400, request: requestUnchecked},
		{name: "read missing twin", method: "GET", path: "/twins/oa-none", status: 404},
		{name: "read twin without a token", method: "GET", path: "/twins/oa-1", header: []string{"Authorization", ""},
			status: 401, request: requestRefused},
		{name: "read twin with a forged token", method: "GET", path: "/twins/oa-1",
			header: []string{"Authorization", strings.Replace(owner, "sig=", "sig=x", 1)}, status: 401},
		{name: "history", method: "GET", path: "/twins/oa-1/history?limit=2", status: 200},
		{name: "history with a bad limit", method: "GET", path: "/twins/oa-1/history?limit=0", status: 400, request: requestRefused},
		{name: "query", method: "POST", path: "/devices/query", body: `{"query":"SELECT * FROM devices"}`,
			header: []string{"x-ms-max-item-count", "1"}, status: 200},
		{name: "query raw rows", method: "POST", path: "/devices/query", body: `{"query":"SELECT deviceId, tags.site FROM devices"}`, status: 200},
		{name: "query that does not parse", method: "POST", path: "/devices/query", body: `{"query":"SELEKT"}`, status: 400},
		{name: "query without a query", method: "POST", path: "/devices/query", body: `{}`, status: 400, request: requestRefused},
		{name: "rollout", method: "GET", path: "/rollout?path=fw&points=3", status: 200},
		{name: "rollout without a path", method: "GET", path: "/rollout", status: 400, request: requestRefused},
		{name: "feed", method: "GET", path: "/events?deviceId=oa-1&from=1&sections=tags,desired", status: 200},
		{name: "feed with a bad Last-Event-ID", method: "GET", path: "/events", header: []string{"Last-Event-ID", "abc"},
			status: 400, request: requestRefused},
		{name: "feed with both filters", method: "GET", path: "/events?deviceId=a&deviceIdPrefix=b", status: 400, request: requestUnchecked},
		{name: "schedule a job", method: "PUT", path: "/jobs/v2/oa-job",
			body:   `{"jobId":"oa-job","type":"scheduleUpdateTwin","queryCondition":"deviceId = 'oa-1'","updateTwin":{"properties":{"desired":{"job":1}}}}`,
			status: 200},
		{name: "schedule it again", method: "PUT", path: "/jobs/v2/oa-job",
			body:   `{"type":"scheduleUpdateTwin","queryCondition":"deviceId = 'oa-1'","updateTwin":{"properties":{"desired":{"job":1}}}}`,
			status: 409},
		{name: "schedule a method job", method: "PUT", path: "/jobs/v2/oa-job2",
			body: `{"type":"scheduleDeviceMethod","queryCondition":"deviceId = 'oa-1'","updateTwin":{}}`, status: 400},
		{name: "read job", method: "GET", path: "/jobs/v2/oa-job", status: 200},
		{name: "read missing job", method: "GET", path: "/jobs/v2/none", status: 404},
		{name: "cancel job", method: "POST", path: "/jobs/v2/oa-job/cancel"},
		{name: "register a CA", method: "PUT", path: "/certificates/oa-ca", body: caBody, status: 200},
		{name: "register it again", method: "PUT", path: "/certificates/oa-ca", body: caBody, status: 409},
		{name: "register garbage", method: "PUT", path: "/certificates/oa-bad", body: `{"properties":{"certificate":"nope"}}`, status: 400},
		{name: "read CA", method: "GET", path: "/certificates/oa-ca", status: 200},
		{name: "verification code", method: "POST", path: "/certificates/oa-ca/generateVerificationCode", status: 200},
		{name: "verify with garbage", method: "POST", path: "/certificates/oa-ca/verify", body: `{"certificate":"nope"}`, status: 400},
		{name: "remove CA", method: "DELETE", path: "/certificates/oa-ca", status: 200},
		{name: "read removed CA", method: "GET", path: "/certificates/oa-ca", status: 404},
		{name: "delete with a wrong etag", method: "DELETE", path: "/devices/oa-2", header: []string{"If-Match", `"nope"`}, status: 412},
		{name: "delete", method: "DELETE", path: "/devices/oa-2", status: 204},
		{name: "delete again", method: "DELETE", path: "/devices/oa-2", status: 404},
	}...)

	opts := &openapi3filter.Options{
		IncludeResponseStatus: true,
		MultiError:            true,
		AuthenticationFunc: func(_ context.Context, in *openapi3filter.AuthenticationInput) error {
			if !strings.HasPrefix(in.RequestValidationInput.Request.Header.Get("Authorization"), "SharedAccessSignature ") {
				return errors.New("no SharedAccessSignature token")
			}
			return nil
		},
	}
	seen := map[string]bool{}
	for _, c := range cases {
		req, resp := contractExchange(t, p, owner, c)
		route, params, err := router.FindRoute(req)
		if err != nil {
			t.Errorf("%s: %s %s is not in the description: %v", c.name, c.method, c.path, err)
			continue
		}
		seen[route.Method+" "+route.Path+" "+strconv.Itoa(resp.Status)] = true
		in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
		reqErr := openapi3filter.ValidateRequest(context.Background(), in)
		switch {
		case c.request == requestConforms && reqErr != nil:
			t.Errorf("%s: the description refuses the request: %v", c.name, reqErr)
		case c.request == requestRefused && reqErr == nil:
			t.Errorf("%s: the description allows a request the hub refuses with %d", c.name, resp.Status)
		}
		if c.status != 0 && resp.Status != c.status {
			t.Errorf("%s: %s %s got %d, want %d: %s", c.name, c.method, c.path, resp.Status, c.status, resp.Body)
		}
		err = openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
			RequestValidationInput: in, Status: resp.Status, Header: resp.Header,
			Body: io.NopCloser(bytes.NewReader(resp.Body)), Options: opts,
		})
		if err != nil {
			t.Errorf("%s: the hub's %d answer to %s %s does not conform: %v\n%s", c.name, resp.Status, c.method, c.path, err, resp.Body)
		}
	}
	// The cases reach the statuses a client must handle.
	for _, want := range []string{"GET /twins/{id} 200", "PATCH /twins/{id} 412", "PUT /devices/{id} 409",
		"DELETE /devices/{id} 204", "GET /twins/{id} 401", "GET /devices/{id} 404", "PATCH /twins/{id} 400", "GET /events 200"} {
		if !seen[want] {
			t.Errorf("no case got %s", want)
		}
	}
}

// selfSignedCA returns the PEM of a new self-signed CA certificate.
func selfSignedCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "openapi test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// contractExchange sends c to the hub, signed with owner unless c says
// otherwise, and returns the request (with its body again) and the answer.
// A change feed is read up to its first event, then closed.
func contractExchange(t *testing.T, p *proc, owner string, c contractCase) (*http.Request, httpResp) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	// {now} in a path is the time of the request.
	c.path = strings.ReplaceAll(c.path, "{now}", time.Now().UTC().Format(time.RFC3339Nano))
	req, err := http.NewRequestWithContext(ctx, c.method, p.HTTP+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	if c.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", owner)
	for i := 0; i+1 < len(c.header); i += 2 {
		if c.header[i+1] == "" {
			req.Header.Del(c.header[i])
		} else {
			req.Header.Set(c.header[i], c.header[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	defer resp.Body.Close()
	var body []byte
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		// Up to the end of the first event (a blank line after an id).
		rd := bufio.NewReader(resp.Body)
		var buf bytes.Buffer
		inEvent := false
		for {
			line, err := rd.ReadString('\n')
			buf.WriteString(line)
			if err != nil {
				t.Fatalf("%s: the feed ended before its first event: %v\n%s", c.name, err, buf.String())
			}
			if strings.HasPrefix(line, "id: ") {
				inEvent = true
			}
			if inEvent && line == "\n" {
				break
			}
		}
		body = buf.Bytes()
	} else if body, err = io.ReadAll(resp.Body); err != nil {
		t.Fatalf("%s: reading the answer: %v", c.name, err)
	}
	// A fresh request with the same body, for the validator to read.
	vreq, err := http.NewRequest(c.method, p.HTTP+c.path, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	vreq.Header = req.Header.Clone()
	return vreq, httpResp{Status: resp.StatusCode, Header: resp.Header, Body: body}
}
