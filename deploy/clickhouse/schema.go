// Package clickhouse holds twinhub's ClickHouse deployment: the schema
// migrations of the twin history (migrations/*.sql, embedded), the analytics
// queries the README documents (analytics/*.sql, embedded), connection
// options from a URL, and a helper that runs a local clickhouse-server for
// tests and `twinhub run --clickhouse-local`.
//
// The schema is kept to what ClickHouse 18.16 (Debian's package) supports, so
// that current releases run it unchanged.
package clickhouse

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

//go:embed analytics/*.sql
var analyticsFS embed.FS

// DefaultDatabase is the database twinhub uses when the URL names none.
const DefaultDatabase = "twinhub"

// MigrationsTable records the applied schema versions.
const MigrationsTable = "schema_migrations"

// ErrSchemaTooNew means the database was migrated by a newer twinhub.
var ErrSchemaTooNew = errors.New("history schema is newer than this twinhub")

// Migration is one numbered schema step.
type Migration struct {
	Version int
	Name    string
	// Statements are run in order; each is idempotent (IF NOT EXISTS), so a
	// migration interrupted half-way is simply run again.
	Statements []string
}

var migrationName = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)

// Migrations returns the embedded migrations in version order. A malformed
// file name or a gap in the numbering is a build mistake and panics.
func Migrations() []Migration {
	files, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		panic("BUG: " + err.Error())
	}
	sort.Strings(files)
	var out []Migration
	for i, f := range files {
		m := migrationName.FindStringSubmatch(path.Base(f))
		if m == nil {
			panic("BUG: migration file name " + f + " is not NNNN_name.sql")
		}
		v, _ := strconv.Atoi(m[1])
		if v != i+1 {
			panic(fmt.Sprintf("BUG: migration %s: expected version %d", f, i+1))
		}
		b, _ := migrationFS.ReadFile(f)
		out = append(out, Migration{Version: v, Name: m[2], Statements: SplitStatements(string(b))})
	}
	return out
}

// LatestVersion is the schema version this twinhub migrates to.
func LatestVersion() int { return len(Migrations()) }

// AnalyticsQuery is one of the documented fleet analytics queries.
type AnalyticsQuery struct {
	// Name is the file name without ".sql", e.g. "01_avg_temperature_per_plant_hour".
	Name string
	// Title is the first comment line of the file.
	Title string
	SQL   string
}

// Analytics returns the documented analytics queries in file order.
func Analytics() []AnalyticsQuery {
	files, _ := fs.Glob(analyticsFS, "analytics/*.sql")
	sort.Strings(files)
	var out []AnalyticsQuery
	for _, f := range files {
		b, _ := analyticsFS.ReadFile(f)
		text := strings.TrimSpace(string(b))
		title, _, _ := strings.Cut(text, "\n")
		out = append(out, AnalyticsQuery{
			Name:  strings.TrimSuffix(path.Base(f), ".sql"),
			Title: strings.TrimSpace(strings.TrimPrefix(title, "--")),
			SQL:   text,
		})
	}
	return out
}

// SplitStatements splits SQL text at semicolons outside quotes and drops
// "--" comments and empty statements.
func SplitStatements(sql string) []string {
	var out []string
	var cur strings.Builder
	var quote byte
	for i := 0; i < len(sql); i++ {
		c := sql[i]
		switch {
		case quote != 0:
			cur.WriteByte(c)
			if c == '\\' && i+1 < len(sql) {
				i++
				cur.WriteByte(sql[i])
			} else if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"' || c == '`':
			quote = c
			cur.WriteByte(c)
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			for i < len(sql) && sql[i] != '\n' {
				i++
			}
			cur.WriteByte('\n')
		case c == ';':
			if s := strings.TrimSpace(cur.String()); s != "" {
				out = append(out, s)
			}
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		out = append(out, s)
	}
	return out
}

// ParseURL turns a ClickHouse URL into connection options for the native
// protocol: clickhouse://[user[:password]@]host[:port][/database][?dial_timeout=5s&...]
// (tcp:// is accepted too). The database defaults to DefaultDatabase and the
// port to 9000. HTTP URLs are refused: twinhub speaks the native protocol,
// which every ClickHouse release since 18.16 serves on port 9000.
func ParseURL(raw string) (*ch.Options, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("ClickHouse URL %q: %w", raw, err)
	}
	switch u.Scheme {
	case "clickhouse", "tcp":
	case "http", "https":
		return nil, fmt.Errorf("ClickHouse URL %q: twinhub uses the native protocol; use clickhouse://%s:9000/%s", raw, u.Hostname(), DefaultDatabase)
	default:
		return nil, fmt.Errorf("ClickHouse URL %q: want clickhouse://host:9000/database", raw)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("ClickHouse URL %q: no host", raw)
	}
	if u.Port() == "" {
		u.Host += ":9000"
	}
	if strings.Trim(u.Path, "/") == "" {
		u.Path = "/" + DefaultDatabase
	}
	u.Scheme = "clickhouse"
	opts, err := ch.ParseDSN(u.String())
	if err != nil {
		return nil, fmt.Errorf("ClickHouse URL %q: %w", raw, err)
	}
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.ReadTimeout == 0 {
		opts.ReadTimeout = 60 * time.Second
	}
	opts.ClientInfo.Products = append(opts.ClientInfo.Products, struct{ Name, Version string }{"twinhub", "1"})
	return opts, nil
}

// Open opens a connection pool with opts. It does not dial: the first query
// does, so a server that is down does not fail the caller's start.
func Open(opts *ch.Options) (driver.Conn, error) {
	conn, err := ch.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("opening ClickHouse connection to %v: %w", opts.Addr, err)
	}
	return conn, nil
}

// EnsureSchema creates the database named in opts if it is missing and
// applies the migrations not yet recorded in schema_migrations. It is
// idempotent and returns the schema version in force. It fails with
// ErrSchemaTooNew when the database records a version this twinhub does not
// know.
func EnsureSchema(ctx context.Context, opts *ch.Options) (int, error) {
	db := opts.Auth.Database
	if db == "" {
		db = DefaultDatabase
	}
	admin := *opts
	admin.Auth.Database = "default"
	adminConn, err := ch.Open(&admin)
	if err != nil {
		return 0, err
	}
	err = adminConn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+quoteIdent(db))
	adminConn.Close()
	if err != nil {
		return 0, fmt.Errorf("creating ClickHouse database %s at %v: %w", db, opts.Addr, err)
	}
	conn, err := ch.Open(opts)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return Migrate(ctx, conn)
}

// Migrate applies the pending migrations on conn's database and records
// each in schema_migrations. See EnsureSchema.
func Migrate(ctx context.Context, conn driver.Conn) (int, error) {
	if err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+MigrationsTable+` (
		version UInt32, name String, applied_at DateTime('UTC')
	) ENGINE = MergeTree ORDER BY version`); err != nil {
		return 0, fmt.Errorf("creating %s: %w", MigrationsTable, err)
	}
	current, err := SchemaVersion(ctx, conn)
	if err != nil {
		return 0, err
	}
	all := Migrations()
	if current > len(all) {
		return current, fmt.Errorf("%w: the database is at schema version %d, this twinhub knows up to %d; upgrade twinhub",
			ErrSchemaTooNew, current, len(all))
	}
	for _, m := range all[current:] {
		for i, stmt := range m.Statements {
			if err := conn.Exec(ctx, stmt); err != nil {
				return current, fmt.Errorf("applying migration %04d_%s, statement %d: %w", m.Version, m.Name, i+1, err)
			}
		}
		b, err := conn.PrepareBatch(ctx, "INSERT INTO "+MigrationsTable+" (version, name, applied_at)")
		if err != nil {
			return current, fmt.Errorf("recording migration %04d: %w", m.Version, err)
		}
		err = b.Append(uint32(m.Version), m.Name, time.Now().UTC())
		if err == nil {
			err = b.Send()
		}
		b.Close()
		if err != nil {
			return current, fmt.Errorf("recording migration %04d: %w", m.Version, err)
		}
		current = m.Version
	}
	return current, nil
}

// SchemaVersion returns the highest recorded migration (0 when none).
func SchemaVersion(ctx context.Context, conn driver.Conn) (int, error) {
	var v uint32
	if err := conn.QueryRow(ctx, "SELECT max(version) FROM "+MigrationsTable).Scan(&v); err != nil {
		return 0, fmt.Errorf("reading the schema version: %w", err)
	}
	return int(v), nil
}

func quoteIdent(s string) string {
	return "`" + strings.NewReplacer("\\", "\\\\", "`", "\\`").Replace(s) + "`"
}
