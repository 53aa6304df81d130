package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/levee-mail/levee/internal/redact"
)

// Environment variables read by this package.
const (
	// EnvURL names the server (any database on it; the user must be allowed
	// to create databases).
	EnvURL = "LEVEE_TEST_POSTGRES_URL"
	// EnvRequired set to 1 turns "server unreachable" from a skip into a failure.
	EnvRequired = "LEVEE_TEST_POSTGRES_REQUIRED"
)

// DefaultURL is the server tests use when EnvURL is not set: a local
// PostgreSQL with trust authentication, as on a developer machine.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// connectTimeout bounds reaching the server: a black-holed address must make
// a test skip (or fail) in seconds, not hang.
const connectTimeout = 5 * time.Second

// ServerURL is the URL of the server tests run against.
func ServerURL() string {
	if u := os.Getenv(EnvURL); u != "" {
		return u
	}
	return DefaultURL
}

// unreachable remembers a failed connection per server URL, so that a run
// against a missing server skips each test at once instead of dialling (and
// perhaps waiting out connectTimeout) for every one.
var unreachable sync.Map // server URL -> error

// NewDatabase creates a database with a unique name (levee_test_<pid>_<random>)
// on the test server and returns a URL to it. The database is dropped, with
// any connections still open to it, when t ends.
func NewDatabase(t testing.TB) string {
	t.Helper()
	server := ServerURL()
	conn := connect(t, server)
	defer closeConn(conn)

	name := fmt.Sprintf("levee_test_%d_%s", os.Getpid(), randomHex(t, 6))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// template0: nobody connects to it, so concurrent creates never fail
	// with "source database is being accessed by other users" (template1's
	// failure mode); UTF8 as every production database should be.
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE template0 ENCODING 'UTF8'"); err != nil {
		t.Fatalf("pgtest: create database %s on %s: %v", name, redact.URL(server), err)
	}
	t.Cleanup(func() { dropDatabase(t, server, name) })

	u, err := url.Parse(server)
	if err != nil {
		t.Fatalf("pgtest: %s: %v", EnvURL, err)
	}
	u.Path = "/" + name
	u.RawPath = ""
	return u.String()
}

// NewSchema creates a schema with a unique name in the database at
// databaseURL (typically one from NewDatabase) and returns a URL to the same
// database whose search_path is that schema alone, so that tables created
// through it land there. The schema and everything in it is dropped when t
// ends. It is cheaper than NewDatabase where many tests need an empty store.
func NewSchema(t testing.TB, databaseURL string) string {
	t.Helper()
	conn := connect(t, databaseURL)
	defer closeConn(conn)

	name := "levee_" + randomHex(t, 6)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create schema %s in %s: %v", name, redact.URL(databaseURL), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, databaseURL)
		if err != nil {
			t.Errorf("pgtest: drop schema %s: %v", name, err)
			return
		}
		defer closeConn(conn)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{name}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("pgtest: drop schema %s: %v", name, err)
		}
	})

	u, err := url.Parse(databaseURL)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	q := u.Query()
	// options is sent in the startup packet: every connection of a pool
	// opened on this URL gets the search_path, including ones opened later.
	q.Set("options", "-csearch_path="+name)
	u.RawQuery = q.Encode()
	return u.String()
}

// connect opens an administrative connection, skipping or failing t if the
// server cannot be reached.
func connect(t testing.TB, target string) *pgx.Conn {
	t.Helper()
	server := ServerURL()
	if err, ok := unreachable.Load(server); ok {
		skipOrFail(t, server, err.(error))
	}
	cfg, err := pgx.ParseConfig(target)
	if err != nil {
		t.Fatalf("pgtest: %s: %v", redact.URL(target), err)
	}
	if cfg.ConnectTimeout == 0 || cfg.ConnectTimeout > connectTimeout {
		cfg.ConnectTimeout = connectTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout+time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		if target == server && isConnectError(err) {
			unreachable.Store(server, err)
		}
		skipOrFail(t, server, err)
	}
	return conn
}

func skipOrFail(t testing.TB, server string, err error) {
	t.Helper()
	msg := fmt.Sprintf("pgtest: PostgreSQL at %s is not reachable: %v", redact.URL(server), err)
	if os.Getenv(EnvRequired) == "1" {
		t.Fatalf("%s (%s=1 makes this a failure)", msg, EnvRequired)
	}
	t.Skipf("%s; set %s to a server where this user may create databases, or %s=1 to fail instead of skipping", msg, EnvURL, EnvRequired)
}

// isConnectError tells a server that is not there from one that answered
// and refused (bad password, unknown database): only the first is worth
// remembering as unreachable.
func isConnectError(err error) bool {
	var pgErr *pgconn.PgError
	return !errors.As(err, &pgErr)
}

func dropDatabase(t testing.TB, server, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, server)
	if err != nil {
		t.Errorf("pgtest: drop database %s: %v", name, err)
		return
	}
	defer closeConn(conn)
	// FORCE (PostgreSQL 13+) ends sessions a test left open, such as a pool
	// whose Close a failed test never reached.
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		t.Errorf("pgtest: drop database %s: %v", name, err)
	}
}

func closeConn(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = c.Close(ctx)
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return hex.EncodeToString(b)
}
