package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/twinhub/twinhub/pipeline/topology"
)

// ErrTimeout means a command was stored but its result did not arrive in
// time; the command may still be applied later.
var ErrTimeout = errors.New("timed out waiting for the twin processor; the command is queued and may still be applied")

// Client submits commands to the pipeline and waits for their results. It is
// what the protocol edges (MQTT, HTTP) use; it is safe for concurrent use.
type Client struct {
	js         jetstream.JetStream
	partitions int
	timeout    time.Duration
	inbox      string
	sub        *nats.Subscription

	mu      sync.Mutex
	waiters map[string]chan Result
	// callbacks are the waiters of SubmitThen: no goroutine waits for them.
	callbacks map[string]*callback
}

// callback is a SubmitThen waiter; timer ends its wait.
type callback struct {
	done  func(Result, error)
	timer *time.Timer
}

// NewClient subscribes to a private reply inbox on nc. timeout bounds Do and
// Pending.Wait when their context has no earlier deadline.
func NewClient(nc *nats.Conn, partitions int, timeout time.Duration) (*Client, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("opening JetStream: %w", err)
	}
	c := &Client{js: js, partitions: partitions, timeout: timeout, waiters: make(map[string]chan Result),
		callbacks: make(map[string]*callback), inbox: nc.NewInbox()}
	c.sub, err = nc.Subscribe(c.inbox+".*", c.deliver)
	if err != nil {
		return nil, fmt.Errorf("subscribing to the reply inbox: %w", err)
	}
	if err := c.sub.SetPendingLimits(-1, 256<<20); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Client) deliver(m *nats.Msg) {
	var res Result
	if err := json.Unmarshal(m.Data, &res); err != nil {
		return
	}
	id := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
	c.mu.Lock()
	ch := c.waiters[id]
	delete(c.waiters, id)
	cb := c.callbacks[id]
	delete(c.callbacks, id)
	c.mu.Unlock()
	if ch != nil {
		ch <- res // buffered, never blocks
	}
	if cb != nil {
		cb.timer.Stop()
		cb.done(res, nil)
	}
}

// Pending is a command stored in JetStream whose result has not arrived yet.
type Pending struct {
	c  *Client
	id string
	ch chan Result
}

// Submit stores cmd in JetStream (assigning an ID if it has none) and returns
// once JetStream has acknowledged it: from then on the command will be
// applied even if this process dies.
func (c *Client) Submit(ctx context.Context, cmd Command) (*Pending, error) {
	if cmd.ID == "" {
		cmd.ID = nuid.Next()
	}
	p := &Pending{c: c, id: cmd.ID, ch: make(chan Result, 1)}
	c.mu.Lock()
	c.waiters[cmd.ID] = p.ch
	c.mu.Unlock()
	msg := cmd.Msg(topology.CommandSubject(cmd.DeviceID, c.partitions), c.inbox+"."+cmd.ID)
	if err := c.store(ctx, msg, cmd.ID); err != nil {
		p.forget()
		return nil, fmt.Errorf("storing %s command for %s: %w", cmd.Kind, cmd.DeviceID, err)
	}
	return p, nil
}

// SubmitThen stores cmd in JetStream like Submit and, if that succeeds,
// calls done exactly once: with the command's result, or with ErrTimeout
// when the result has not arrived within the client's timeout. No goroutine
// waits meanwhile, so outstanding commands cost a map entry and a timer
// each. done runs on the goroutine that delivers every result of the client
// (or on a timer's), so it must be quick and must not block. When SubmitThen
// returns an error, done is not called.
func (c *Client) SubmitThen(ctx context.Context, cmd Command, done func(Result, error)) error {
	if cmd.ID == "" {
		cmd.ID = nuid.Next()
	}
	id := cmd.ID
	cb := &callback{done: done}
	c.mu.Lock()
	// Fires at most once; the entry's owner (deliver or this timer) is
	// whoever removes it from the map.
	cb.timer = time.AfterFunc(c.timeout, func() {
		if c.takeCallback(id) != nil {
			done(Result{}, ErrTimeout)
		}
	})
	c.callbacks[id] = cb
	c.mu.Unlock()
	msg := cmd.Msg(topology.CommandSubject(cmd.DeviceID, c.partitions), c.inbox+"."+id)
	if err := c.store(ctx, msg, id); err != nil {
		if c.takeCallback(id) == nil {
			return nil // the timer fired already and told done
		}
		cb.timer.Stop()
		return fmt.Errorf("storing %s command for %s: %w", cmd.Kind, cmd.DeviceID, err)
	}
	return nil
}

// Publish retries: each attempt waits at most attemptTimeout for JetStream's
// acknowledgement; between attempts the wait grows from retryWaitMin to
// retryWaitMax.
const (
	attemptTimeout = 2 * time.Second
	retryWaitMin   = 100 * time.Millisecond
	retryWaitMax   = time.Second
)

// store publishes a command to the command stream and returns once
// JetStream has acknowledged it. While the stream cannot answer (its leader
// died and the replicas elect another, which takes NATS 4–9 s, or the
// client reconnects to another server) it retries with the same
// Nats-Msg-Id, so a command that was stored after all is stored once: the
// retry comes back as a duplicate, which is success. It gives up when ctx
// ends or half the client's timeout has passed, so the caller still has
// time to wait for the result.
func (c *Client) store(ctx context.Context, msg *nats.Msg, id string) error {
	ctx, cancel := context.WithTimeout(ctx, c.timeout/2)
	defer cancel()
	wait := retryWaitMin
	for {
		actx, acancel := context.WithTimeout(ctx, attemptTimeout)
		_, err := c.js.PublishMsg(actx, msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(topology.CommandStream))
		acancel()
		if err == nil {
			return nil
		}
		if !retryablePublish(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, retryWaitMax)
	}
}

// retryablePublish reports whether a publish that failed with err may
// succeed when retried with the same Nats-Msg-Id: the stream had no leader
// (no responders), the outcome is unknown (no answer in time), the cluster
// is temporarily unavailable, or a retry met its original still in flight.
func retryablePublish(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return true
	case errors.As(err, &apiErr):
		return apiErr.Code == 503 || apiErr.ErrorCode == jsErrCodeDuplicateMessageInProcess
	}
	return false
}

// jsErrCodeDuplicateMessageInProcess is JetStream's answer to a publish
// whose Nats-Msg-Id is still being proposed (nats-server's
// JSStreamDuplicateMessageConflict, 409): retry shortly.
const jsErrCodeDuplicateMessageInProcess jetstream.ErrorCode = 10158

func (c *Client) takeCallback(id string) *callback {
	c.mu.Lock()
	defer c.mu.Unlock()
	cb := c.callbacks[id]
	delete(c.callbacks, id)
	return cb
}

// ID returns the command's ID.
func (p *Pending) ID() string { return p.id }

// Wait returns the command's result.
func (p *Pending) Wait(ctx context.Context) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, p.c.timeout)
	defer cancel()
	select {
	case res := <-p.ch:
		return res, nil
	case <-ctx.Done():
		p.forget()
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return Result{}, ErrTimeout
		}
		return Result{}, ctx.Err()
	}
}

func (p *Pending) forget() {
	p.c.mu.Lock()
	delete(p.c.waiters, p.id)
	p.c.mu.Unlock()
}

// Do submits cmd and waits for its result.
func (c *Client) Do(ctx context.Context, cmd Command) (Result, error) {
	p, err := c.Submit(ctx, cmd)
	if err != nil {
		return Result{}, err
	}
	return p.Wait(ctx)
}

// Close stops receiving results.
func (c *Client) Close() error {
	return c.sub.Unsubscribe()
}
