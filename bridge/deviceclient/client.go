package deviceclient

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nuid"

	"github.com/twinhub/twinhub/bridge/mqttbridge"
)

// Client is the device side of the native topic scheme, over paho: it
// is what `twinhub device-sim`, the tests and the benchmarks use to act as a
// device.
type Client struct {
	id      string
	c       paho.Client
	desired chan DesiredPatch

	mu      sync.Mutex
	waiters map[string]chan response
}

// DesiredPatch is a desired-properties notification as a device receives it.
type DesiredPatch struct {
	Version int64
	Body    []byte // the patch with "$version"
}

type response struct {
	status  int
	version int64
	body    []byte
	err     error // ErrConnectionLost: no response will come
}

// ErrConnectionLost means the device's connection to the broker dropped
// while a request waited for its response. The response will not come (a
// clean session forgets it); the request may or may not have been applied,
// so a device reads its twin after it reconnects.
var ErrConnectionLost = errors.New("the connection to the hub dropped before the response came; the request may or may not have been applied (GET the twin after reconnecting)")

// Error is an error response from the hub.
type Error struct {
	Status    int
	ErrorCode int    `json:"errorCode"`
	Message   string `json:"message"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("hub answered %d (errorCode %d): %s", e.Status, e.ErrorCode, e.Message)
}

// Options tunes Dial.
type Options struct {
	// ClientID defaults to the device ID.
	ClientID string
	// QoS of requests (default 1).
	QoS      byte
	Username string
	Password string
	// TLS configures the connection to an ssl://, tls:// or mqtts:// broker
	// URL (nil: the system's roots).
	TLS *tls.Config
}

// Dial connects a device to the broker at brokerURL (tcp://host:port)
// and subscribes to its responses and desired notifications.
func Dial(ctx context.Context, brokerURL, deviceID string, o Options) (*Client, error) {
	if o.ClientID == "" {
		o.ClientID = deviceID
	}
	if o.QoS == 0 {
		o.QoS = 1
	}
	d := &Client{id: deviceID, desired: make(chan DesiredPatch, 256), waiters: make(map[string]chan response)}
	opts := paho.NewClientOptions().AddBroker(brokerURL).SetClientID(o.ClientID).
		SetUsername(o.Username).SetPassword(o.Password).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(false).
		SetOrderMatters(false).SetKeepAlive(30 * time.Second).SetTLSConfig(o.TLS).
		SetConnectionLostHandler(func(paho.Client, error) { d.failWaiters() })
	// subscribed reports the first connect's subscriptions to Dial.
	subscribed := make(chan error, 1)
	opts.SetOnConnectHandler(func(c paho.Client) {
		// Subscribe on every (re)connect: a clean session forgets subscriptions.
		// paho calls this in its own goroutine, so waiting here is fine.
		t := c.SubscribeMultiple(map[string]byte{mqttbridge.ResponseFilter(deviceID): 0}, d.onResponse)
		t.Wait()
		err := t.Error()
		if err == nil {
			t = c.Subscribe(mqttbridge.DesiredFilter(deviceID), 1, d.onDesired)
			t.Wait()
			err = t.Error()
		}
		select {
		case subscribed <- err:
		default: // a reconnect: nobody waits
		}
	})
	d.c = paho.NewClient(opts)
	if err := waitToken(ctx, d.c.Connect()); err != nil {
		return nil, fmt.Errorf("connecting device %s to %s: %w", deviceID, brokerURL, err)
	}
	select {
	case err := <-subscribed:
		if err != nil {
			d.c.Disconnect(0)
			return nil, fmt.Errorf("subscribing device %s: %w", deviceID, err)
		}
	case <-ctx.Done():
		d.c.Disconnect(0)
		return nil, ctx.Err()
	}
	return d, nil
}

func waitToken(ctx context.Context, t paho.Token) error {
	select {
	case <-t.Done():
		return t.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *Client) onResponse(_ paho.Client, m paho.Message) {
	// devices/{id}/twin/res/{status}/?$rid=…&$version=…
	rest := strings.TrimPrefix(m.Topic(), "devices/"+d.id+"/twin/res/")
	statusStr, query, _ := strings.Cut(rest, "/?")
	status, _ := strconv.Atoi(statusStr)
	q, _ := url.ParseQuery(query)
	version, _ := strconv.ParseInt(q.Get("$version"), 10, 64)
	d.mu.Lock()
	ch := d.waiters[q.Get("$rid")]
	delete(d.waiters, q.Get("$rid"))
	d.mu.Unlock()
	if ch != nil {
		ch <- response{status: status, version: version, body: m.Payload()}
	}
}

// failWaiters ends every request waiting for a response with
// ErrConnectionLost.
func (d *Client) failWaiters() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for rid, ch := range d.waiters {
		delete(d.waiters, rid)
		ch <- response{err: ErrConnectionLost} // buffered, and removed from the map before any other send
	}
}

// Connected reports whether the device is connected to the broker now
// (false while its client reconnects).
func (d *Client) Connected() bool { return d.c.IsConnectionOpen() }

func (d *Client) onDesired(_ paho.Client, m paho.Message) {
	_, query, _ := strings.Cut(m.Topic(), "?")
	q, _ := url.ParseQuery(query)
	v, _ := strconv.ParseInt(q.Get("$version"), 10, 64)
	select {
	case d.desired <- DesiredPatch{Version: v, Body: m.Payload()}:
	default: // nobody is reading; drop like a device that is busy
	}
}

// Desired delivers desired-property notifications.
func (d *Client) Desired() <-chan DesiredPatch { return d.desired }

// Request publishes payload on topic (which must carry $rid=rid) and waits for
// the response. It is the raw form behind GetTwin and Report.
func (d *Client) Request(ctx context.Context, topic, rid string, payload []byte, qos byte) (status int, version int64, body []byte, err error) {
	ch := make(chan response, 1)
	d.mu.Lock()
	d.waiters[rid] = ch
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.waiters, rid)
		d.mu.Unlock()
	}()
	// The response may come without the broker's PUBACK: a hub that could
	// not store the request answers 503 and leaves the publish
	// unacknowledged, so only a failed publish ends the wait early.
	tok := d.c.Publish(topic, qos, false, payload)
	published := tok.Done()
	for {
		select {
		case <-published:
			if err := tok.Error(); err != nil {
				return 0, 0, nil, fmt.Errorf("publishing %s: %w", topic, err)
			}
			published = nil
			continue
		case r := <-ch:
			return r.result(topic)
		case <-ctx.Done():
			return 0, 0, nil, fmt.Errorf("waiting for the hub's response to %s: %w", topic, ctx.Err())
		}
	}
}

// result turns a response into Request's results.
func (r response) result(topic string) (status int, version int64, body []byte, err error) {
	switch {
	case r.err != nil:
		return 0, 0, nil, fmt.Errorf("waiting for the hub's response to %s: %w", topic, r.err)
	case r.status >= 300:
		e := &Error{Status: r.status}
		_ = json.Unmarshal(r.body, e)
		return r.status, r.version, r.body, e
	}
	return r.status, r.version, r.body, nil
}

// GetTwin reads the device's twin: {"desired":{…},"reported":{…}}.
func (d *Client) GetTwin(ctx context.Context) ([]byte, error) {
	rid := nuid.Next()
	_, _, body, err := d.Request(ctx, "devices/"+d.id+"/twin/GET/?$rid="+rid, rid, []byte(" "), 1)
	return body, err
}

// Report sends a reported-properties patch and returns the new reported $version.
func (d *Client) Report(ctx context.Context, patch []byte) (int64, error) {
	rid := nuid.Next()
	_, v, _, err := d.Request(ctx, "devices/"+d.id+"/twin/PATCH/properties/reported/?$rid="+rid, rid, patch, 1)
	if err == nil && v == 0 {
		return 0, errors.New("the hub's 204 response carried no $version")
	}
	return v, err
}

// Close disconnects.
func (d *Client) Close() { d.c.Disconnect(250) }
