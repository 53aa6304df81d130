package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/levee-mail/levee/store"
)

// Store is store.Store on a PostgreSQL database. It is safe for concurrent
// use, and several processes may share one database.
type Store struct {
	// pool is the writers' (Deliver, the schema) and read is the readers'
	// (the mailbox API): a reader never waits for a connection behind a
	// write batch.
	pool   *pgxpool.Pool
	read   *pgxpool.Pool
	target string // the database, without credentials, for errors

	// floor is the latest stored_at (µs since the epoch) this Store has
	// seen committed. Deliver assigns stored_at above it, so that calls made
	// one after another get increasing times even if the server's clock
	// steps back. Calls running at once, here or in other processes, may
	// interleave or tie; the listing order (stored_at, id) is total anyway.
	floor atomic.Int64
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at cfg.URL and brings its schema up to
// date. It fails, within cfg.ConnectTimeout or ctx, if the server cannot be
// reached.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pc, err := cfg.poolConfig()
	if err != nil {
		return nil, err
	}
	s := &Store{target: target(pc)}
	// NewWithConfig does not connect; migrate is the first use.
	if s.pool, err = pgxpool.NewWithConfig(ctx, pc); err != nil {
		return nil, fmt.Errorf("postgres: open %s: %w", s.target, err)
	}
	if err := migrate(ctx, s.pool); err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("postgres: open %s: %w", s.target, err)
	}
	var latest pgtype.Timestamptz
	if err := s.pool.QueryRow(ctx, `SELECT MAX(latest_at) FROM mailboxes`).Scan(&latest); err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("postgres: open %s: read latest stored_at: %w", s.target, err)
	}
	if latest.Valid {
		s.floor.Store(latest.Time.UnixMicro())
	}
	rc := pc.Copy()
	rc.MaxConns = cfg.ReadMaxConns
	if s.read, err = pgxpool.NewWithConfig(ctx, rc); err != nil {
		s.pool.Close()
		return nil, fmt.Errorf("postgres: open %s: %w", s.target, err)
	}
	return s, nil
}

// Ping checks that the server answers on a pooled connection.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return wrap(ctx, "ping", err)
	}
	return nil
}

// Close closes the pools, waiting for connections in use to be released.
// It may be called more than once.
func (s *Store) Close() error {
	s.pool.Close()
	s.read.Close()
	return nil
}

// raiseFloor records a committed stored_at.
func (s *Store) raiseFloor(us int64) {
	for {
		cur := s.floor.Load()
		if us <= cur || s.floor.CompareAndSwap(cur, us) {
			return
		}
	}
}

// wrap adds the operation and, when the context ended, its error: pgx may
// report an interrupted call as an I/O error on the connection, and callers
// (the worker's retry logic) ask errors.Is(err, context.Canceled). A server
// out of a resource is marked store.ErrUnavailable: it still answers Ping,
// so without the mark the worker would blame the messages.
func wrap(ctx context.Context, op string, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("postgres: %s: %w (%w)", op, cerr, err)
	}
	if outOfResources(err) {
		return fmt.Errorf("postgres: %s: %w: %w", op, store.ErrUnavailable, err)
	}
	return fmt.Errorf("postgres: %s: %w", op, err)
}

// outOfResources tells SQLSTATE class 53, insufficient resources (53100
// disk_full, 53200 out_of_memory, 53300 too_many_connections, 53400
// configuration_limit_exceeded), from the other failures: none of them is
// the statement's fault, and each passes once the server has room again.
func outOfResources(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && strings.HasPrefix(pe.Code, "53")
}
