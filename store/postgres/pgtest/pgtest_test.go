package pgtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/levee-mail/levee/internal/redact"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func queryString(t *testing.T, dbURL, sql string, args ...any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect %s: %v", redact.URL(dbURL), err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func exec(t *testing.T, dbURL, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect %s: %v", redact.URL(dbURL), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestNewDatabaseIsFreshAndDropped(t *testing.T) {
	var name string
	t.Run("inner", func(t *testing.T) {
		u := NewDatabase(t)
		name = queryString(t, u, `SELECT current_database()`)
		if !strings.HasPrefix(name, "levee_test_") {
			t.Errorf("database %q, want a levee_test_ name", name)
		}
		if n := queryString(t, u, `SELECT count(*)::text FROM pg_tables WHERE schemaname = 'public'`); n != "0" {
			t.Errorf("new database has %s tables, want none", n)
		}
		if enc := queryString(t, u, `SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()`); enc != "UTF8" {
			t.Errorf("encoding %s, want UTF8", enc)
		}
		// A connection left open does not stop the drop.
		ctx := context.Background()
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(ctx) })
		if other := NewDatabase(t); other == u {
			t.Error("two calls returned the same database")
		}
	})
	if n := queryString(t, ServerURL(), `SELECT count(*)::text FROM pg_database WHERE datname = $1`, name); n != "0" {
		t.Errorf("database %s still exists after its test ended", name)
	}
}

func TestNewSchemaIsFreshAndDropped(t *testing.T) {
	db := NewDatabase(t)
	var schema string
	t.Run("inner", func(t *testing.T) {
		u := NewSchema(t, db)
		schema = queryString(t, u, `SELECT current_schema()`)
		if !strings.HasPrefix(schema, "levee_") {
			t.Fatalf("current_schema() = %q through the schema URL, want a levee_ schema", schema)
		}
		if path := queryString(t, u, `SHOW search_path`); path != schema {
			t.Errorf("search_path = %q, want only %q", path, schema)
		}
		// Tables created through the URL land in the schema, and the drop
		// takes them along.
		exec(t, u, `CREATE TABLE t (x int)`)
		if in := queryString(t, db, `SELECT schemaname::text FROM pg_tables WHERE tablename = 't'`); in != schema {
			t.Errorf("table created in %q, want %q", in, schema)
		}
	})
	if n := queryString(t, db, `SELECT count(*)::text FROM pg_namespace WHERE nspname = $1`, schema); n != "0" {
		t.Errorf("schema %s still exists after its test ended", schema)
	}
}

// recorder stands in for the testing.TB of a test whose server is missing.
type recorder struct {
	testing.TB
	skipped, failed string
}

type stopped struct{}

func (r *recorder) Helper() {}
func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	panic(stopped{})
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	panic(stopped{})
}

func run(t *testing.T, fn func(testing.TB)) *recorder {
	r := &recorder{TB: t}
	func() {
		defer func() {
			if v := recover(); v != nil && v != (stopped{}) {
				panic(v)
			}
		}()
		fn(r)
	}()
	return r
}

func TestUnreachableServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	server := (&url.URL{Scheme: "postgres", User: url.UserPassword("postgres", "s3cret"), Host: addr, Path: "/postgres"}).String()
	t.Setenv(EnvURL, server)

	t.Setenv(EnvRequired, "")
	r := run(t, func(tb testing.TB) { NewDatabase(tb) })
	if r.failed != "" || !strings.Contains(r.skipped, addr) || !strings.Contains(r.skipped, EnvURL) {
		t.Errorf("not required: skipped %q, failed %q; want a skip naming the server and %s", r.skipped, r.failed, EnvURL)
	}
	if strings.Contains(r.skipped, "s3cret") {
		t.Errorf("skip message shows the password: %q", r.skipped)
	}

	t.Setenv(EnvRequired, "1")
	start := time.Now()
	r = run(t, func(tb testing.TB) { NewDatabase(tb) })
	if r.skipped != "" || !strings.Contains(r.failed, addr) || !strings.Contains(r.failed, EnvRequired) {
		t.Errorf("required: skipped %q, failed %q; want a failure naming the server and %s", r.skipped, r.failed, EnvRequired)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("second attempt took %v; an unreachable server should be remembered", d)
	}
}
