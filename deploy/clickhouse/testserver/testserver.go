// Package testserver shares one real clickhouse-server among the tests of a
// package: TestMain calls Main, tests call Server or Database. The server
// runs on a free loopback port with its data in a temporary directory. When
// clickhouse-server is not installed the tests skip with a clear message,
// except under CI (CI=true), where they fail: `make test` installs it.
package testserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"

	chdeploy "github.com/twinhub/twinhub/deploy/clickhouse"
)

var (
	shared  *chdeploy.Server
	missing string // why there is no server
	dbSeq   atomic.Int64
)

// Main starts the shared server, runs the tests and stops the server. Use
// it as `func TestMain(m *testing.M) { os.Exit(testserver.Main(m)) }`.
func Main(m *testing.M) int {
	dir, err := os.MkdirTemp("", "twinhub-clickhouse-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	srv, err := chdeploy.StartServer(ctx, chdeploy.ServerConfig{Dir: dir})
	cancel()
	switch {
	case errors.Is(err, chdeploy.ErrNoServer) && os.Getenv("CI") != "true":
		missing = err.Error()
	case err != nil:
		fmt.Fprintf(os.Stderr, "starting the test clickhouse-server: %v\n", err)
		return 1
	default:
		shared = srv
		defer srv.Stop()
	}
	return m.Run()
}

// Server returns the shared server, or skips the test when none is installed.
func Server(t testing.TB) *chdeploy.Server {
	t.Helper()
	if shared == nil {
		if missing == "" {
			t.Fatal("testserver.Main was not called from TestMain")
		}
		t.Skipf("no ClickHouse for this test: %s", missing)
	}
	return shared
}

var unsafe = regexp.MustCompile(`[^a-zA-Z0-9_]+`)

// Database returns the URL of a fresh database (not yet created) on the
// shared server, named after the test, so tests never see each other's rows.
func Database(t testing.TB) string {
	t.Helper()
	srv := Server(t)
	name := strings.ToLower(unsafe.ReplaceAllString(t.Name(), "_"))
	if len(name) > 40 {
		name = name[:40]
	}
	db := fmt.Sprintf("t%d_%s", dbSeq.Add(1), name)
	t.Cleanup(func() {
		opts, err := chdeploy.ParseURL(srv.URL("default"))
		if err != nil {
			return
		}
		conn, err := ch.Open(opts)
		if err != nil {
			return
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn.Exec(ctx, "DROP DATABASE IF EXISTS "+db)
	})
	return srv.URL(db)
}
