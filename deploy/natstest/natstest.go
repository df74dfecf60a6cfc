// Package natstest runs real nats-server instances with JetStream for
// tests: a cluster of n servers joined by routes, or one standalone server,
// on random loopback ports with their stores in t.TempDir(). Nodes run
// inside the test process (NewCluster, StartCluster) or, where a test needs
// a real crash, as nats-server processes built from the version go.mod pins
// (NewProcessCluster), which Kill ends with SIGKILL. Nodes can be started
// again on the same ports and store, so failover tests can take a node away
// and bring it back.
//
// It is for tests only; `twinhub run` embeds its server through
// deploy/embedded.
package natstest

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Cluster is a set of nats-servers. Its methods fail the test on errors;
// they are safe for concurrent use.
type Cluster struct {
	t     testing.TB
	bin   string // nats-server executable of process nodes
	mu    sync.Mutex
	nodes []*node
	admin *nats.Conn // process clusters: the connection StreamLeader asks
}

type node struct {
	opts *server.Options // kept to start the node again on the same ports and store
	srv  *server.Server  // in-process node; nil while it is down
	proc *process        // process node (NewProcessCluster); nil while it is down
	conf string          // process node: its configuration file
}

func (n *node) running() bool { return n.srv != nil || n.proc != nil }

// Option changes a node's server options before it starts (i is the node's
// index), e.g. to add users or set SyncAlways.
type Option func(i int, o *server.Options)

// NewCluster prepares a cluster of n nodes (3 or 5 for JetStream's Raft
// groups) without starting any: ports are reserved and stores allocated, so
// URLs are known before the first node runs. Start the nodes with Start or
// StartAll; the test's cleanup shuts down whatever still runs.
func NewCluster(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	ports := freePorts(t, 2*n)
	var routes []string
	for i := range n {
		routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(ports[n+i]))
	}
	c := &Cluster{t: t}
	for i := range n {
		o := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       ports[i],
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoSigs:     true,
			NoLog:      true,
			MaxPayload: 2 << 20,
			Cluster: server.ClusterOpts{
				Name: "natstest",
				Host: "127.0.0.1",
				Port: ports[n+i],
			},
			// Every node lists every route, itself included (harmless, and
			// what nats-server's own cluster tests do).
			Routes: server.RoutesFromStr(strings.Join(routes, ",")),
		}
		for _, opt := range opts {
			opt(i, o)
		}
		c.nodes = append(c.nodes, &node{opts: o})
	}
	t.Cleanup(c.Shutdown)
	return c
}

// StartCluster starts a cluster of n nodes and waits until every node
// reports JetStream healthy (meta leader elected, node current).
func StartCluster(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	c := NewCluster(t, n, opts...)
	c.StartAll()
	c.WaitHealthy(30 * time.Second)
	return c
}

// StartStandalone starts one server with JetStream and no cluster: it
// refuses replicated streams, as a single `nats-server -js` does.
func StartStandalone(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	port := freePorts(t, 1)[0]
	o := &server.Options{ServerName: "standalone", Host: "127.0.0.1", Port: port, JetStream: true,
		StoreDir: t.TempDir(), NoSigs: true, NoLog: true, MaxPayload: 2 << 20}
	for _, opt := range opts {
		opt(0, o)
	}
	c := &Cluster{t: t, nodes: []*node{{opts: o}}}
	t.Cleanup(c.Shutdown)
	c.StartAll()
	c.WaitHealthy(30 * time.Second)
	return c
}

// Start starts node i (again, after Kill) on its ports and store. It returns
// once the node accepts connections; JetStream may still be electing.
func (c *Cluster) Start(i int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[i]
	if n.running() {
		c.t.Fatalf("natstest: node %d is already running", i)
	}
	if n.conf != "" {
		n.proc = c.startProcess(i, n)
		return
	}
	o := *n.opts // NewServer keeps and changes its options
	srv, err := server.NewServer(&o)
	if err != nil {
		c.t.Fatalf("natstest: creating node %d: %v", i, err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		c.t.Fatalf("natstest: node %d did not accept connections within 10s", i)
	}
	n.srv = srv
}

// StartAll starts every node that is not running.
func (c *Cluster) StartAll() {
	c.t.Helper()
	for i := range c.nodes {
		if !c.Running(i) {
			c.Start(i)
		}
	}
}

// Kill stops node i and waits until it is gone. A process node gets
// SIGKILL, a crash. An in-process node is shut down in order and hands its
// leaderships over when it can, which makes failover faster than after a
// crash.
func (c *Cluster) Kill(i int) {
	c.mu.Lock()
	srv, proc := c.nodes[i].srv, c.nodes[i].proc
	c.nodes[i].srv, c.nodes[i].proc = nil, nil
	c.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
	if proc != nil {
		proc.kill()
	}
}

// Shutdown stops every node.
func (c *Cluster) Shutdown() {
	c.mu.Lock()
	if c.admin != nil {
		c.admin.Close()
		c.admin = nil
	}
	c.mu.Unlock()
	for i := range c.nodes {
		c.Kill(i)
	}
}

// Running reports whether node i runs.
func (c *Cluster) Running(i int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].running()
}

// Server is node i's server, nil while it is down or when it is a process.
func (c *Cluster) Server(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i].srv
}

// URL is node i's client URL (known before the node starts).
func (c *Cluster) URL(i int) string {
	return "nats://127.0.0.1:" + strconv.Itoa(c.nodes[i].opts.Port)
}

// URLs lists every node's client URL, comma-separated, as nats.Connect and
// `twinhub run --nats-url` take them.
func (c *Cluster) URLs() string {
	urls := make([]string, len(c.nodes))
	for i := range c.nodes {
		urls[i] = c.URL(i)
	}
	return strings.Join(urls, ",")
}

// Connect opens a client connection to the whole cluster, closed at the end
// of the test.
func (c *Cluster) Connect() *nats.Conn {
	c.t.Helper()
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		c.t.Fatalf("natstest: connecting to %s: %v", c.URLs(), err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}

// WaitHealthy polls every running node until JetStream reports it healthy:
// a meta leader is known and the node is current. ReadyForConnections
// alone says nothing about JetStream in a cluster.
func (c *Cluster) WaitHealthy(timeout time.Duration) {
	c.t.Helper()
	c.waitFor(timeout, "every running node to report JetStream healthy", func() bool {
		for i := range c.nodes {
			c.mu.Lock()
			srv, proc := c.nodes[i].srv, c.nodes[i].proc
			c.mu.Unlock()
			if srv != nil && srv.Healthz(&server.HealthzOptions{JSMetaOnly: true}).StatusCode != 200 {
				return false
			}
			if proc != nil && !proc.healthy() {
				return false
			}
		}
		return true
	})
}

// StreamLeader returns the index of the running node that leads stream (in
// the global account, the one clients without accounts use), or -1 when no
// running node does, e.g. during an election.
func (c *Cluster) StreamLeader(stream string) int {
	if c.nodes[0].conf != "" {
		return c.processStreamLeader(stream)
	}
	for i := range c.nodes {
		srv := c.Server(i)
		if srv == nil {
			continue
		}
		if !srv.JetStreamIsClustered() || srv.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return i // a standalone server leads all its streams
		}
	}
	return -1
}

// WaitStreamLeader polls until some running node leads stream and returns its index.
func (c *Cluster) WaitStreamLeader(stream string, timeout time.Duration) int {
	c.t.Helper()
	leader := -1
	c.waitFor(timeout, "a leader of stream "+stream, func() bool {
		leader = c.StreamLeader(stream)
		return leader >= 0
	})
	return leader
}

func (c *Cluster) waitFor(timeout time.Duration, what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("natstest: timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// freePorts reserves n distinct loopback ports. Every node needs the full
// route list before any starts, so the ports are picked by listening on
// port 0 and closing; another process could take one in between, which
// makes a node fail to start rather than join the wrong cluster.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	ports := make([]int, n)
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("natstest: reserving a port: %v", err)
		}
		lns = append(lns, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	return ports
}
