package pipeline_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/deploy/embedded"
	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// TestSubmitThen: the callback gets the command's result exactly once; with
// no processor running it gets ErrTimeout once the client's timeout passed.
func TestSubmitThen(t *testing.T) {
	h := startHub(t, t.TempDir(), topology.Config{Partitions: 2})
	h.do(t, pipeline.Command{Kind: pipeline.KindCreateDevice, DeviceID: "cb"})
	type outcome struct {
		res pipeline.Result
		err error
	}
	got := make(chan outcome, 2)
	ctx := context.Background()
	if err := h.client.SubmitThen(ctx, pipeline.Command{Kind: pipeline.KindPatchReported, DeviceID: "cb", Body: []byte(`{"a":1}`)},
		func(res pipeline.Result, err error) { got <- outcome{res, err} }); err != nil {
		t.Fatal(err)
	}
	if o := <-got; o.err != nil || o.res.Status != http.StatusNoContent {
		t.Fatalf("result %+v, %v; want 204", o.res, o.err)
	}

	// A hub with the streams but no processor: nothing answers.
	ns, err := embedded.StartNATS(embedded.NATSConfig{Addr: "127.0.0.1:-1", StoreDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	nc, err := ns.Connect("test-timeout")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if err := topology.Ensure(ctx, js, topology.Config{Partitions: 1}); err != nil {
		t.Fatal(err)
	}
	client, err := pipeline.NewClient(nc, 1, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	done := make(chan error, 2)
	if err := client.SubmitThen(ctx, pipeline.Command{Kind: pipeline.KindDeviceGet, DeviceID: "nobody"},
		func(_ pipeline.Result, err error) { calls.Add(1); done <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, pipeline.ErrTimeout) {
		t.Fatalf("without a processor: %v, want ErrTimeout", err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("callback called %d times, want once", n)
	}
}

// TestRegistryNotices: updating or deleting a device announces it on its
// registry subject, without keys; other commands announce nothing.
func TestRegistryNotices(t *testing.T) {
	h := startHub(t, t.TempDir(), topology.Config{Partitions: 2})
	nc, err := h.ns.Connect("test-registry")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	notices := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe(topology.RegistrySubjects, notices)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	id := "reg.dev:1" // needs encoding in a subject
	for _, cmd := range []pipeline.Command{
		{Kind: pipeline.KindCreateDevice, DeviceID: id},
		{Kind: pipeline.KindPatchReported, DeviceID: id, Body: []byte(`{"a":1}`)},
		{Kind: pipeline.KindUpdateDevice, DeviceID: id, Body: []byte(`{"deviceId":"reg.dev:1","status":"disabled"}`)},
		{Kind: pipeline.KindDeleteDevice, DeviceID: id},
	} {
		if res := h.do(t, cmd); !res.OK() {
			t.Fatalf("%s: %+v", cmd.Kind, res)
		}
	}
	for _, want := range []pipeline.Kind{pipeline.KindUpdateDevice, pipeline.KindDeleteDevice} {
		select {
		case m := <-notices:
			if m.Subject != topology.RegistrySubject(id) || string(m.Data) != string(want) {
				t.Errorf("notice on %s: %q, want %s: %q", m.Subject, m.Data, topology.RegistrySubject(id), want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no registry notice for %s", want)
		}
	}
	// A create or a report announcing anything would have come first, or
	// be here by now: a flush's round trip follows every message the server
	// sent before it.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-notices:
		t.Errorf("unexpected notice %s: %q", m.Subject, m.Data)
	default:
	}
}

// TestSubmitRetriesWhileTheStreamCannotAnswer: a command submitted while no
// server answers for the command stream (as during a leader election after
// a node's loss, when nats.go's own retries give up after half a second
// with ErrNoStreamResponse) is retried with its Nats-Msg-Id until the
// stream answers, and is then stored once.
func TestSubmitRetriesWhileTheStreamCannotAnswer(t *testing.T) {
	ns, err := embedded.StartNATS(embedded.NATSConfig{Addr: "127.0.0.1:-1", StoreDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	nc, err := ns.Connect("test-retry")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	client, err := pipeline.NewClient(nc, 1, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The streams appear 1.5 s after the submission: three times as long as
	// nats.go retries by itself.
	provisioned := make(chan error, 1)
	time.AfterFunc(1500*time.Millisecond, func() { provisioned <- topology.Ensure(ctx, js, topology.Config{Partitions: 1}) })
	start := time.Now()
	_, err = client.Submit(ctx, pipeline.Command{ID: "retried-1", Kind: pipeline.KindCreateDevice, DeviceID: "r"})
	if perr := <-provisioned; perr != nil {
		t.Fatal(perr)
	}
	if err != nil {
		t.Fatalf("Submit while the stream could not answer: %v", err)
	}
	t.Logf("stored after %s", time.Since(start).Round(time.Millisecond))
	s, err := js.Stream(ctx, topology.CommandStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := s.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Fatalf("the command stream holds %v messages (%v), want 1", info.State.Msgs, err)
	}
}

// TestRetryablePublish: which publish failures are retried with the same
// Nats-Msg-Id (those where the stream may answer later) and which are not.
func TestRetryablePublish(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{jetstream.ErrNoStreamResponse, true},
		{nats.ErrNoResponders, true},
		{context.DeadlineExceeded, true},
		{nats.ErrTimeout, true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{&jetstream.APIError{Code: 409, ErrorCode: 10158, Description: "duplicate message id is in process"}, true},
		{&jetstream.APIError{Code: 400, ErrorCode: 10060, Description: "expected stream does not match"}, false},
		{jetstream.ErrStreamNotFound, false},
		{nats.ErrMaxPayload, false},
		{context.Canceled, false},
		{errors.New("something else"), false},
	} {
		if got := pipeline.RetryablePublish(tc.err); got != tc.want {
			t.Errorf("retryable(%v) = %t, want %t", tc.err, got, tc.want)
		}
	}
}
