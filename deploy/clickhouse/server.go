package clickhouse

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
)

// ErrNoServer means no clickhouse-server program is installed.
var ErrNoServer = errors.New("clickhouse-server is not installed (Debian: apt-get install -y clickhouse-server clickhouse-client, or `make deps`)")

// FindServer returns the command that runs a ClickHouse server: Debian's
// /usr/sbin/clickhouse-server, a clickhouse-server on PATH, or the
// single-binary `clickhouse server`. It fails with ErrNoServer.
func FindServer() (name string, args []string, err error) {
	for _, p := range []string{"/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil, nil
		}
	}
	if p, err := exec.LookPath("clickhouse-server"); err == nil {
		return p, nil, nil
	}
	if p, err := exec.LookPath("clickhouse"); err == nil {
		return p, []string{"server"}, nil
	}
	return "", nil, ErrNoServer
}

// ServerConfig configures a local clickhouse-server.
type ServerConfig struct {
	// Dir holds the server's data, logs and generated configuration. Required.
	Dir string
	// Addr is the native-protocol listen address (default 127.0.0.1:0, a
	// free port). Only loopback hosts make sense for a private server.
	Addr string
	// StartTimeout bounds the wait for the server to accept queries (default 60 s).
	StartTimeout time.Duration
	Logger       *slog.Logger
}

// Validate reports configuration problems.
func (c ServerConfig) Validate() error {
	var errs []error
	if c.Dir == "" {
		errs = append(errs, errors.New("clickhouse server: a data directory is required"))
	}
	if c.Addr != "" {
		if _, _, err := net.SplitHostPort(c.Addr); err != nil {
			errs = append(errs, fmt.Errorf("clickhouse server: address %q: %w", c.Addr, err))
		}
	}
	return errors.Join(errs...)
}

// Server is a clickhouse-server child process with its own configuration,
// data directory and port. It is stopped by Stop; if this process dies
// first, the kernel sends the server SIGTERM (Linux).
type Server struct {
	cfg  ServerConfig
	name string
	args []string
	host string
	port int

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartServer writes a configuration into cfg.Dir and starts the server,
// then waits until it answers a query. With a free port (Addr port 0), a
// port taken between choosing and binding is retried with another.
func StartServer(ctx context.Context, cfg ServerConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.StartTimeout == 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	name, args, err := FindServer()
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg.Dir = dir
	host, portStr, _ := net.SplitHostPort(cfg.Addr)
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("clickhouse server: port %q: %w", portStr, err)
	}
	s := &Server{cfg: cfg, name: name, args: args, host: host, port: port}
	for attempt := 0; ; attempt++ {
		if port == 0 {
			if s.port, err = freePort(host); err != nil {
				return nil, err
			}
		}
		err = s.Start(ctx)
		if err == nil || port != 0 || attempt == 2 || !strings.Contains(err.Error(), "Address already in use") {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Addr is the server's native-protocol address, host:port.
func (s *Server) Addr() string { return net.JoinHostPort(s.host, strconv.Itoa(s.port)) }

// URL is a twinhub ClickHouse URL for database db ("" for DefaultDatabase).
func (s *Server) URL(db string) string {
	if db == "" {
		db = DefaultDatabase
	}
	return "clickhouse://" + s.Addr() + "/" + db
}

// Start (re)starts a stopped server on the same directory and port and
// waits until it answers. A previous server on the same directory that is
// still shutting down (its data lock held) is waited for.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("clickhouse server: already running")
	}
	conf, err := s.writeConfig()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(s.cfg.StartTimeout)
	for {
		err := s.startOnce(ctx, conf, deadline)
		if err == nil {
			s.cfg.Logger.Debug("clickhouse-server started", "component", "clickhouse", "addr", s.Addr(), "dir", s.cfg.Dir)
			return nil
		}
		// An earlier server on this directory (e.g. of a process that was
		// killed) may still hold the lock while it shuts down.
		if strings.Contains(err.Error(), "Cannot lock file") && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		return err
	}
}

func (s *Server) startOnce(ctx context.Context, conf string, deadline time.Time) error {
	logPath := filepath.Join(s.cfg.Dir, "log", "stdout.log")
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("clickhouse server: %w", err)
	}
	cmd := exec.Command(s.name, append(s.args, "--config-file="+conf)...)
	cmd.Dir = s.cfg.Dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("starting %s: %w", s.name, err)
	}
	exited := make(chan struct{})
	// Reaps the server; exits when the server does.
	go func() {
		cmd.Wait()
		out.Close()
		close(exited)
	}()
	opts := &ch.Options{Addr: []string{s.Addr()}, DialTimeout: time.Second, ReadTimeout: 5 * time.Second}
	conn, err := ch.Open(opts)
	if err != nil {
		cmd.Process.Kill()
		<-exited
		return err
	}
	defer conn.Close()
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := conn.Ping(pctx)
		cancel()
		if err == nil {
			s.cmd, s.exited = cmd, exited
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("clickhouse-server exited during start: %s", s.tail())
		case <-ctx.Done():
			cmd.Process.Kill()
			<-exited
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("clickhouse-server did not answer on %s within %s: %s", s.Addr(), s.cfg.StartTimeout, s.tail())
		}
	}
}

// tail returns the end of the server's output and error log, for error messages.
func (s *Server) tail() string {
	var parts []string
	for _, f := range []string{"stdout.log", "clickhouse-server.err.log"} {
		b, err := os.ReadFile(filepath.Join(s.cfg.Dir, "log", f))
		if err != nil || len(b) == 0 {
			continue
		}
		if len(b) > 2000 {
			b = b[len(b)-2000:]
		}
		parts = append(parts, strings.TrimSpace(string(b)))
	}
	if len(parts) == 0 {
		return "(no server output)"
	}
	return strings.Join(parts, "\n")
}

// Stop asks the server to shut down (SIGTERM) and waits up to 30 s, then
// kills it. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.stop(syscall.SIGTERM, 30*time.Second)
}

// Kill stops the server at once (SIGKILL), as a crash would.
func (s *Server) Kill() {
	s.stop(syscall.SIGKILL, 30*time.Second)
}

func (s *Server) stop(sig syscall.Signal, wait time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(sig)
	select {
	case <-s.exited:
	case <-time.After(wait):
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd, s.exited = nil, nil
}

func (s *Server) writeConfig() (string, error) {
	d := s.cfg.Dir
	for _, sub := range []string{"data", "tmp", "user_files", "format_schemas", "log"} {
		if err := os.MkdirAll(filepath.Join(d, sub), 0o750); err != nil {
			return "", fmt.Errorf("clickhouse server: %w", err)
		}
	}
	users := `<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
    <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
`
	// A minimal server: native protocol only, on one loopback address,
	// everything under Dir, logs at warning level, caches small.
	config := fmt.Sprintf(`<?xml version="1.0"?>
<yandex>
  <logger>
    <level>warning</level>
    <log>%[1]s/log/clickhouse-server.log</log>
    <errorlog>%[1]s/log/clickhouse-server.err.log</errorlog>
    <size>10M</size>
    <count>2</count>
  </logger>
  <tcp_port>%[2]d</tcp_port>
  <listen_host>%[3]s</listen_host>
  <path>%[1]s/data/</path>
  <tmp_path>%[1]s/tmp/</tmp_path>
  <user_files_path>%[1]s/user_files/</user_files_path>
  <format_schema_path>%[1]s/format_schemas/</format_schema_path>
  <users_config>%[1]s/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
`, xmlEscape(d), s.port, xmlEscape(s.host))
	if err := os.WriteFile(filepath.Join(d, "users.xml"), []byte(users), 0o640); err != nil {
		return "", err
	}
	conf := filepath.Join(d, "config.xml")
	if err := os.WriteFile(conf, []byte(config), 0o640); err != nil {
		return "", err
	}
	return conf, nil
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// freePort returns a TCP port that was free on host a moment ago.
func freePort(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("clickhouse server: finding a free port on %s: %w", host, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
