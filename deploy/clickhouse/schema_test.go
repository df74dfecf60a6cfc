package clickhouse_test

import (
	"context"
	"errors"
	"os"
	"reflect"
	"testing"

	chdeploy "github.com/twinhub/twinhub/deploy/clickhouse"
	"github.com/twinhub/twinhub/deploy/clickhouse/testserver"
)

func TestMain(m *testing.M) { os.Exit(testserver.Main(m)) }

// TestEnsureSchema applies the migrations to a new database, twice: the
// second run changes nothing, each version is recorded once, and the tables
// have the documented columns. A database from a newer twinhub is refused.
func TestEnsureSchema(t *testing.T) {
	url := testserver.Database(t)
	opts, err := chdeploy.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 2 {
		v, err := chdeploy.EnsureSchema(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		if v != chdeploy.LatestVersion() || v < 1 {
			t.Fatalf("schema version %d, want %d", v, chdeploy.LatestVersion())
		}
	}
	conn, err := chdeploy.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var rows, versions uint64
	if err := conn.QueryRow(ctx, "SELECT count(), uniqExact(version) FROM schema_migrations").Scan(&rows, &versions); err != nil {
		t.Fatal(err)
	}
	if rows != uint64(chdeploy.LatestVersion()) || versions != rows {
		t.Errorf("schema_migrations: %d rows, %d versions; want one row per migration", rows, versions)
	}
	for table, want := range map[string][]string{
		"twin_events": {"device_id", "generation_id", "version", "op", "source", "etag", "desired_version", "reported_version",
			"event_time", "event_time_ns", "ingest_time", "command_id", "status", "patch", "stream_seq"},
		"twin_leaves": {"device_id", "generation_id", "version", "event_time", "event_time_ns", "section", "path", "op",
			"value_json", "value_type", "value_number", "value_string", "value_bool", "stream_seq"},
	} {
		r, err := conn.Query(ctx, "DESCRIBE TABLE "+table)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for r.Next() {
			var name, typ, defaultType, defaultExpr, comment string
			if err := r.Scan(&name, &typ, &defaultType, &defaultExpr, &comment); err != nil {
				t.Fatal(err)
			}
			got = append(got, name)
		}
		r.Close()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s columns %v, want %v", table, got, want)
		}
	}
	// Inserts go through PrepareBatch: an INSERT … VALUES through Exec hangs on 18.16.
	b, err := conn.PrepareBatch(ctx, "INSERT INTO schema_migrations (version, name)")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Append(uint32(999), "future"); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	if _, err := chdeploy.EnsureSchema(ctx, opts); !errors.Is(err, chdeploy.ErrSchemaTooNew) {
		t.Errorf("a database at version 999: %v, want ErrSchemaTooNew", err)
	}
}

// TestSplitStatements: semicolons inside quotes and comments do not split.
func TestSplitStatements(t *testing.T) {
	got := chdeploy.SplitStatements("-- a; comment\nCREATE TABLE a (s String DEFAULT ';');\n\n SELECT 'it''s; \\' ok' ; -- end;\n")
	want := []string{"CREATE TABLE a (s String DEFAULT ';')", "SELECT 'it''s; \\' ok'"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
	for _, m := range chdeploy.Migrations() {
		if len(m.Statements) == 0 {
			t.Errorf("migration %d has no statements", m.Version)
		}
	}
}

// TestParseURL: defaults, and the errors that tell the operator what to write.
func TestParseURL(t *testing.T) {
	opts, err := chdeploy.ParseURL("clickhouse://u:p@db.example:9440/hist?dial_timeout=2s")
	if err != nil || opts.Addr[0] != "db.example:9440" || opts.Auth.Database != "hist" || opts.Auth.Username != "u" || opts.Auth.Password != "p" {
		t.Errorf("full URL: %+v, %v", opts, err)
	}
	opts, err = chdeploy.ParseURL("tcp://127.0.0.1")
	if err != nil || opts.Addr[0] != "127.0.0.1:9000" || opts.Auth.Database != "twinhub" {
		t.Errorf("defaults: %+v, %v", opts, err)
	}
	for _, bad := range []string{"http://127.0.0.1:8123", "127.0.0.1:9000", "clickhouse://", "postgres://x"} {
		if _, err := chdeploy.ParseURL(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
