package natstest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const natsServerModule = "github.com/nats-io/nats-server/v2"

// NewProcessCluster prepares a cluster of n nodes that run as nats-server
// processes, built once from the version go.mod pins, without starting any.
// Kill sends SIGKILL, as a crash or `kill -9` would. Each line of extra is
// appended to every node's configuration file: top-level settings such as
// "max_payload: 4MB" or an authorization block.
func NewProcessCluster(t testing.TB, n int, extra ...string) *Cluster {
	t.Helper()
	bin := natsServerBinary(t)
	ports := freePorts(t, 3*n) // client, route and monitoring port of each node
	var routes []string
	for i := range n {
		routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(ports[n+i]))
	}
	dir := t.TempDir()
	c := &Cluster{t: t}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
max_payload: 2MB
jetstream { store_dir: %q }
cluster {
  name: natstest
  listen: 127.0.0.1:%d
  routes: [%s]
}
%s
`, name, ports[i], ports[2*n+i], filepath.Join(dir, name), ports[n+i], strings.Join(routes, ", "), strings.Join(extra, "\n"))
		path := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		c.nodes = append(c.nodes, &node{
			opts: &server.Options{ServerName: name, Port: ports[i], HTTPPort: ports[2*n+i]},
			conf: path,
		})
	}
	c.bin = bin
	t.Cleanup(c.Shutdown)
	return c
}

// process is a running nats-server process.
type process struct {
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	monitor string        // http://127.0.0.1:port
	log     string        // its log file
}

// startProcess starts node i's process and waits until it accepts client connections.
func (c *Cluster) startProcess(i int, n *node) *process {
	c.t.Helper()
	logPath := strings.TrimSuffix(n.conf, ".conf") + ".log"
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	defer logFile.Close()
	p := &process{cmd: exec.Command(c.bin, "-c", n.conf), done: make(chan struct{}), log: logPath,
		monitor: "http://127.0.0.1:" + strconv.Itoa(n.opts.HTTPPort)}
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		c.t.Fatalf("natstest: starting node %d: %v", i, err)
	}
	// Reaps the process; ends when it exits.
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	addr := "127.0.0.1:" + strconv.Itoa(n.opts.Port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return p
		}
		select {
		case <-p.done:
			c.t.Fatalf("natstest: node %d exited at start; see %s", i, logPath)
		default:
		}
		if time.Now().After(deadline) {
			p.kill()
			c.t.Fatalf("natstest: node %d did not accept connections within 10s; see %s", i, logPath)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the process to go.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// healthy reports whether the node's JetStream has a meta leader and is current.
func (p *process) healthy() bool {
	client := http.Client{Timeout: time.Second}
	resp, err := client.Get(p.monitor + "/healthz?js-meta-only=true")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// processStreamLeader asks the cluster which server leads stream.
func (c *Cluster) processStreamLeader(stream string) int {
	c.mu.Lock()
	if c.admin == nil {
		nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
			nats.RetryOnFailedConnect(true))
		if err != nil {
			c.mu.Unlock()
			return -1
		}
		c.admin = nc
	}
	nc := c.admin
	c.mu.Unlock()
	js, err := jetstream.New(nc)
	if err != nil {
		return -1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return -1
	}
	info := s.CachedInfo()
	if info.Cluster == nil {
		return -1
	}
	for i, n := range c.nodes {
		if n.opts.ServerName == info.Cluster.Leader && c.Running(i) {
			return i
		}
	}
	return -1
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// natsServerBinary builds nats-server at the version this module requires,
// once per machine: the binary is kept in the user's cache directory under
// its version.
func natsServerBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", natsServerModule).Output()
		version := strings.TrimSpace(string(out))
		if err != nil || version == "" {
			buildErr = fmt.Errorf("go list -m %s: %v", natsServerModule, err)
			return
		}
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		dir := filepath.Join(cache, "twinhub-natstest")
		builtBin = filepath.Join(dir, "nats-server-"+version)
		if _, err := os.Stat(builtBin); err == nil {
			return
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			buildErr = err
			return
		}
		tmp := fmt.Sprintf("%s.%d", builtBin, os.Getpid())
		out, err = exec.Command("go", "build", "-o", tmp, natsServerModule).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build %s: %v\n%s", natsServerModule, err, out)
			return
		}
		buildErr = os.Rename(tmp, builtBin)
	})
	if buildErr != nil {
		t.Fatalf("natstest: building nats-server: %v", buildErr)
	}
	return builtBin
}
