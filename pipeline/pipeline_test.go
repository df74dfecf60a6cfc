package pipeline_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/twinhub/twinhub/deploy/embedded"
	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// hub is a processor with its client and store over an embedded nats-server.
type hub struct {
	ns     *embedded.NATS
	js     jetstream.JetStream
	client *pipeline.Client
	store  *pipeline.Store
	stop   func()
}

func startHub(t *testing.T, dir string, topo topology.Config) *hub {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ns, err := embedded.StartNATS(embedded.NATSConfig{Addr: "127.0.0.1:-1", StoreDir: dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := ns.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	subConn, err := ns.Connect("test-sub")
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if err := topology.Ensure(ctx, js, topo); err != nil {
		t.Fatal(err)
	}
	store, err := pipeline.OpenStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	client, err := pipeline.NewClient(nc, topo.WithDefaults().Partitions, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	proc, err := pipeline.NewProcessor(ctx, pipeline.ProcessorConfig{Topology: topo, Logger: log}, nc, subConn, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- proc.Run(pctx) }()
	<-proc.Running()
	h := &hub{ns: ns, js: js, client: client, store: store}
	stopped := false
	h.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("processor: %v", err)
		}
		client.Close()
		nc.Close()
		ns.Shutdown()
	}
	t.Cleanup(h.stop)
	return h
}

func (h *hub) do(t *testing.T, cmd pipeline.Command) pipeline.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := h.client.Do(ctx, cmd)
	if err != nil {
		t.Fatalf("%s %s: %v", cmd.Kind, cmd.DeviceID, err)
	}
	return res
}

func TestSeedFlowThroughPipeline(t *testing.T) {
	h := startHub(t, t.TempDir(), topology.Config{Partitions: 4})
	res := h.do(t, pipeline.Command{Kind: pipeline.KindCreateDevice, DeviceID: "myDeviceId"})
	if res.Status != 200 {
		t.Fatalf("create: %+v", res)
	}
	res = h.do(t, pipeline.Command{Kind: pipeline.KindPatchReported, DeviceID: "myDeviceId", Body: json.RawMessage(`{"connectivity":{"type":"cellular"}}`)})
	if res.Status != 204 || res.Version != 2 {
		t.Fatalf("reported patch: %+v", res)
	}
}
