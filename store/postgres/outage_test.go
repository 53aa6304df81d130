package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/levee-mail/levee/mail"
	"github.com/levee-mail/levee/store"
	"github.com/levee-mail/levee/store/postgres/pgtest"
)

// viaProxy returns a URL to the database at dbURL that goes through a proxy.
func viaProxy(t *testing.T, dbURL string) (*pgtest.Proxy, string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	p := pgtest.NewProxy(t, u.Host)
	u.Host = p.Addr()
	return p, u.String()
}

// closedPort returns an address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestOpenUnreachable(t *testing.T) {
	addr := closedPort(t)
	start := time.Now()
	s, err := Open(t.Context(), Config{URL: "postgres://levee:s3cret@" + addr + "/levee?sslmode=disable"})
	if err == nil {
		s.Close()
		t.Fatal("Open of a closed port succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Open took %v to fail on a closed port", d)
	}
	msg := err.Error()
	t.Logf("Open: %v", err)
	if !strings.HasPrefix(msg, "postgres: open postgres://levee@"+addr+"/levee:") || !strings.Contains(msg, "connection refused") {
		t.Errorf("err = %q, want it to name the database and say the connection was refused", msg)
	}
	if strings.Contains(msg, "s3cret") {
		t.Errorf("err shows the password: %q", msg)
	}
}

// A host that accepts connections but never answers fails Open within the
// connect timeout, even when the caller's context has no deadline.
func TestOpenBlackHole(t *testing.T) {
	p := pgtest.NewProxy(t, "127.0.0.1:1")
	p.Stall()
	start := time.Now()
	s, err := Open(context.Background(), Config{URL: "postgres://levee@" + p.Addr() + "/levee?sslmode=disable", ConnectTimeout: 300 * time.Millisecond})
	if err == nil {
		s.Close()
		t.Fatal("Open of a black hole succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Open took %v to fail, want about the connect timeout (300ms)", d)
	}
	t.Logf("Open: %v", err)
	if !strings.Contains(err.Error(), "timeout") {
		t.Errorf("err = %v, want it to say it timed out", err)
	}
}

// The database host goes away under an open store and comes back: calls
// fail at once (the worker then holds its batch and retries), and the store
// recovers without being reopened.
func testServerGoneAndBack(t *testing.T, db string) {
	p, u := viaProxy(t, pgtest.NewSchema(t, db))
	s := openURL(t, u)
	deliverOK(t, s, testMessage(t, 1, "bob@example.com"))

	p.Cut()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if _, err := s.Deliver(ctx, []*mail.Message{testMessage(t, 2, "bob@example.com")}); err == nil {
		t.Error("Deliver succeeded with the server gone")
	} else {
		t.Logf("Deliver: %v", err)
	}
	if err := s.Ping(ctx); err == nil {
		t.Error("Ping succeeded with the server gone")
	} else {
		t.Logf("Ping: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Deliver and Ping took %v to fail with the server gone", d)
	}

	p.Restore()
	m := testMessage(t, 3, "bob@example.com")
	var err error
	// Connections the cut killed may still sit in the pool: each fails
	// one call and is dropped, as the worker's retries would find.
	for range DefaultMaxConns + 1 {
		if _, err = s.Deliver(ctx, []*mail.Message{m}); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("Deliver after the server came back: %v", err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping after the server came back: %v", err)
	}
	if _, err := s.Raw(ctx, m.ID); err != nil {
		t.Errorf("Raw after the server came back: %v", err)
	}
}

// A network black hole under an open store: calls end with their context's
// deadline (plus the grace for the cancel request), never hang.
func testServerStalls(t *testing.T, db string) {
	p, u := viaProxy(t, pgtest.NewSchema(t, db))
	s := openURL(t, u)
	deliverOK(t, s, testMessage(t, 1, "bob@example.com"))

	p.Stall()
	for name, call := range map[string]func(context.Context) error{
		"Deliver": func(ctx context.Context) error {
			_, err := s.Deliver(ctx, []*mail.Message{testMessage(t, 2, "bob@example.com")})
			return err
		},
		"Ping": s.Ping,
	} {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		start := time.Now()
		err := call(ctx)
		cancel()
		t.Logf("%s: %v", name, err)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: err = %v, want context.DeadlineExceeded", name, err)
		}
		if d := time.Since(start); d > 300*time.Millisecond+cancelGrace+2*time.Second {
			t.Errorf("%s took %v with a 300ms deadline", name, d)
		}
	}
	p.Cut() // end the stalled connections before Close waits for them
}

// TestOutOfResourcesIsUnavailable: SQLSTATE class 53 (insufficient
// resources) is the server's trouble, not the call's: it is marked
// store.ErrUnavailable, so that the worker holds its batch instead of
// spending the messages' delivery attempts. Other server errors are not.
func TestOutOfResourcesIsUnavailable(t *testing.T) {
	for _, tc := range []struct {
		code string
		want bool
	}{
		{"53100", true}, // disk_full
		{"53200", true}, // out_of_memory
		{"53300", true}, // too_many_connections
		{"53400", true}, // configuration_limit_exceeded
		{"53000", true}, // insufficient_resources
		{"23505", false},
		{"22P02", false},
		{"54000", false}, // program_limit_exceeded: this statement's fault
	} {
		pe := &pgconn.PgError{Severity: "ERROR", Code: tc.code, Message: "could not extend file"}
		for _, err := range []error{pe, fmt.Errorf("commit: %w", pe)} {
			got := wrap(t.Context(), "deliver", err)
			if errors.Is(got, store.ErrUnavailable) != tc.want {
				t.Errorf("wrap(%v) = %v; errors.Is(store.ErrUnavailable) = %v, want %v", err, got, !tc.want, tc.want)
			}
			var back *pgconn.PgError
			if !errors.As(got, &back) || back.Code != tc.code {
				t.Errorf("wrap(%v) = %v: the server's error is lost", err, got)
			}
		}
	}
}

// A server whose disk is full answers Deliver with SQLSTATE 53100 (here
// raised by a trigger, as PostgreSQL raises it when it cannot extend a
// file) while Ping and reads go on: Deliver's error is
// store.ErrUnavailable, and once the server has room the same store
// delivers.
func testDiskFullIsUnavailable(t *testing.T, db string) {
	s, _ := openTest(t, db)
	ctx := t.Context()
	if _, err := s.pool.Exec(ctx, `CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS
		$$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full'; END $$`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, `CREATE TRIGGER disk_full BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION disk_full()`); err != nil {
		t.Fatal(err)
	}
	m := testMessage(t, 1, "bob@example.com")
	_, err := s.Deliver(ctx, []*mail.Message{m})
	var pe *pgconn.PgError
	if !errors.Is(err, store.ErrUnavailable) || !errors.As(err, &pe) || pe.Code != "53100" {
		t.Fatalf("Deliver on a full disk: %v; want store.ErrUnavailable with SQLSTATE 53100", err)
	}
	t.Logf("Deliver: %v", err)
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
	if _, err := s.pool.Exec(ctx, `DROP TRIGGER disk_full ON messages`); err != nil {
		t.Fatal(err)
	}
	if res := deliverOK(t, s, m); res[0].Duplicate {
		t.Error("the message refused on the full disk was kept")
	}
}
