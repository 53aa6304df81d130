package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/levee-mail/levee/store"
)

// Store is store.Store on one SQLite file. It is safe for concurrent use.
type Store struct {
	write *sql.DB // exactly one connection: SQLite has one writer
	read  *sql.DB // read-only connections, never blocked by the writer (WAL)

	// writeSem serialises Deliver calls in Go, where waiting honours ctx,
	// instead of in SQLite, where it would be SQLITE_BUSY. It also guards
	// lastStored.
	writeSem chan struct{}
	// lastStored is the latest stored_at handed out (µs). Deliver keeps
	// stored_at strictly increasing, so newest-first order is delivery order
	// and a new message never lands behind a reader's cursor.
	lastStored int64

	// waiting are the Deliver calls queued for the writer; whichever
	// takes writeSem commits all of them in one transaction (group
	// commit, see Deliver).
	waitingMu sync.Mutex
	waiting   []*deliverCall
	// commits counts the delivery transactions committed (for tests).
	commits atomic.Int64
	// walPath is the WAL file; walRestarts counts the times the writer
	// started it over (see restartLongWAL).
	walPath     string
	walRestarts atomic.Int64
	walRetryAt  time.Time // guarded by writeSem
	busyTimeout time.Duration

	writes writeStmts
	reads  readStmts
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database at cfg.Path and brings its
// schema up to date.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	all, err := migrations()
	if err != nil {
		return nil, err
	}
	return open(ctx, cfg, all)
}

// open is Open with the schema brought up to the end of schema, a prefix
// of the migrations (tests make a database of an earlier version with one).
func open(ctx context.Context, cfg Config, schema []store.Migration) (*Store, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if dir := filepath.Dir(cfg.Path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("sqlite: open: %w", err)
		}
	}
	s := &Store{writeSem: make(chan struct{}, 1), walPath: cfg.Path + "-wal", busyTimeout: cfg.BusyTimeout}
	ok := false
	defer func() {
		if !ok {
			s.Close()
		}
	}()

	var err error
	if s.write, err = sql.Open("sqlite", cfg.dsn(true)); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", cfg.Path, err)
	}
	s.write.SetMaxOpenConns(1)
	s.write.SetMaxIdleConns(1)
	s.write.SetConnMaxLifetime(0)
	s.write.SetConnMaxIdleTime(0)
	// Migrate before the read pool opens: the writer's connection is what
	// switches a new file to WAL.
	if err := migrate(ctx, s.write, schema); err != nil {
		return nil, err
	}
	if err := s.write.QueryRowContext(ctx, `SELECT COALESCE(MAX(latest_at), 0) FROM mailboxes`).Scan(&s.lastStored); err != nil {
		return nil, fmt.Errorf("sqlite: open: read latest stored_at: %w", err)
	}
	if err := prepareAll(ctx, s.write, s.writes.all()); err != nil {
		return nil, err
	}

	if s.read, err = sql.Open("sqlite", cfg.dsn(false)); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", cfg.Path, err)
	}
	s.read.SetMaxOpenConns(cfg.MaxOpenConns)
	s.read.SetMaxIdleConns(cfg.MaxOpenConns)
	if err := s.read.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", cfg.Path, err)
	}
	if err := prepareAll(ctx, s.read, s.reads.all()); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// Ping checks that the database answers a read. It uses the read pool only,
// so that /readyz never queues behind a large Deliver batch.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.read.QueryRowContext(ctx, `SELECT 1`).Scan(&one); err != nil {
		return fmt.Errorf("sqlite: ping: %w", err)
	}
	return nil
}

// Close closes both pools. The last connection to close checkpoints the WAL
// into the database file.
func (s *Store) Close() error {
	var errs []error
	closeAll(s.writes.all())
	closeAll(s.reads.all())
	if s.read != nil {
		errs = append(errs, s.read.Close())
	}
	if s.write != nil {
		errs = append(errs, s.write.Close())
	}
	return errors.Join(errs...)
}
