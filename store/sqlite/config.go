package sqlite

import (
	"errors"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Config configures the SQLite store. The YAML keys are under store.sqlite.
type Config struct {
	// Path is the database file; its directory is created if missing. The
	// WAL and shared-memory files (-wal, -shm) live next to it, so it must
	// be on a local file system. ":memory:" is not supported: the read pool
	// and the writer must share one database.
	Path string
	// BusyTimeout is how long a connection waits for a lock another process
	// holds (a second levee process on the same file, a checkpoint) before
	// failing with SQLITE_BUSY.
	BusyTimeout time.Duration
	// MaxOpenConns bounds the read pool. Writes always use one connection:
	// SQLite has one writer at a time.
	MaxOpenConns int
}

// Defaults for the fields WithDefaults fills in.
const (
	DefaultBusyTimeout  = 5 * time.Second
	DefaultMaxOpenConns = 4
)

// WithDefaults returns c with zero fields set to their defaults. Path has no
// default: where data lives is decided by the caller (levee's data dir).
func (c Config) WithDefaults() Config {
	if c.BusyTimeout == 0 {
		c.BusyTimeout = DefaultBusyTimeout
	}
	if c.MaxOpenConns == 0 {
		c.MaxOpenConns = DefaultMaxOpenConns
	}
	return c
}

// Validate reports the first invalid field, naming its config key.
func (c Config) Validate() error {
	switch {
	case c.Path == "":
		return errors.New("store.sqlite.path: must not be empty")
	case c.Path == ":memory:":
		return errors.New("store.sqlite.path: in-memory databases are not supported (the read pool and the writer must share one file)")
	case strings.HasPrefix(c.Path, "file:") || strings.Contains(c.Path, "?"):
		return errors.New("store.sqlite.path: must be a plain file path, not a URI or a path with '?'")
	case c.BusyTimeout < 0:
		return errors.New("store.sqlite.busy_timeout: must be >= 0")
	case c.BusyTimeout > 0 && c.BusyTimeout < time.Millisecond:
		return errors.New("store.sqlite.busy_timeout: must be at least 1ms (SQLite counts milliseconds)")
	case c.MaxOpenConns <= 0:
		return errors.New("store.sqlite.max_open_conns: must be > 0")
	}
	return nil
}

// dsn builds the connection string for one pool. The pragmas are DSN
// parameters, not Exec calls, because the driver applies them to every
// connection it opens, including ones database/sql opens later.
func (c Config) dsn(write bool) string {
	q := url.Values{}
	q.Set("_busy_timeout", strconv.FormatInt(c.BusyTimeout.Milliseconds(), 10))
	q.Set("_foreign_keys", "on")
	if write {
		// WAL lets readers read the last commit while the writer writes;
		// the mode is stored in the file, so the writer sets it once for all.
		q.Set("_journal_mode", "WAL")
		// FULL in WAL mode fsyncs the WAL at every commit. The worker acks
		// a message to JetStream only after Deliver's commit returns, and
		// JetStream then forgets it: a commit that a crash or power loss
		// could roll back (NORMAL's trade) would lose acknowledged mail.
		q.Set("_synchronous", "FULL")
		// IMMEDIATE takes the write lock at BEGIN, where the busy timeout
		// applies; a DEFERRED transaction that upgrades to a writer later
		// can fail with SQLITE_BUSY at once, without waiting.
		q.Set("_txlock", "immediate")
		// Keep a WAL that once grew for a large batch from staying large.
		q.Add("_pragma", "journal_size_limit(67108864)")
	} else {
		q.Set("_query_only", "on")
	}
	return c.Path + "?" + q.Encode()
}
