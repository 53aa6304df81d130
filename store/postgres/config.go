package postgres

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config configures the PostgreSQL store. The YAML keys are under store.
type Config struct {
	// URL is a postgres:// (or postgresql://) connection URL. Settings
	// libpq knows (sslmode, connect_timeout, options, application_name,
	// ...) go in its query string; the fields below win over the pool_*
	// parameters pgx would read from it.
	URL string
	// MaxConns bounds the writers' pool (Deliver). Worker concurrency
	// beyond it waits for a connection (honouring its context).
	MaxConns int32
	// ReadMaxConns bounds the readers' pool (the mailbox API): a pool of
	// its own, so that a reader never waits for a connection behind the
	// workers' write batches. It connects only when read from.
	ReadMaxConns int32
	// ConnectTimeout bounds opening one connection when the URL sets no
	// connect_timeout, so that a database host that went away fails a call
	// in seconds even when the caller's context has no deadline.
	ConnectTimeout time.Duration
}

// Defaults for the fields WithDefaults fills in.
const (
	DefaultMaxConns       = 10
	DefaultReadMaxConns   = 10
	DefaultConnectTimeout = 5 * time.Second
)

// cancelGrace is how long a call whose context ended waits for the server
// to confirm the cancellation before it gives up on the connection; it
// bounds how late a cancelled call returns when the server does not answer.
const cancelGrace = time.Second

// keyPrefix is where the fields sit in Levee's YAML config.
const keyPrefix = "store."

// WithDefaults returns c with zero fields set to their defaults. URL has no
// default: which database to use is the operator's choice.
func (c Config) WithDefaults() Config {
	if c.MaxConns == 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.ReadMaxConns == 0 {
		c.ReadMaxConns = DefaultReadMaxConns
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = DefaultConnectTimeout
	}
	return c
}

// Validate reports the first invalid field, naming its config key. It parses
// the URL but does not connect.
func (c Config) Validate() error {
	switch {
	case c.URL == "":
		return errors.New(keyPrefix + "url: must not be empty")
	case !IsURL(c.URL):
		return errors.New(keyPrefix + "url: must start with postgres:// or postgresql://")
	case c.MaxConns <= 0:
		return errors.New(keyPrefix + "max_conns: must be > 0")
	case c.ReadMaxConns <= 0:
		return errors.New(keyPrefix + "read_max_conns: must be > 0")
	case c.ConnectTimeout < 0:
		return errors.New(keyPrefix + "connect_timeout: must be >= 0")
	}
	if _, err := c.poolConfig(); err != nil {
		return fmt.Errorf(keyPrefix+"url: %w", err)
	}
	return nil
}

// IsURL tells whether s names a PostgreSQL database (rather than, say, a
// SQLite file path): how `--store` picks its backend.
func IsURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// poolConfig turns c into pgxpool's configuration. Parse errors from pgx
// carry the URL with its password redacted.
func (c Config) poolConfig() (*pgxpool.Config, error) {
	pc, err := pgxpool.ParseConfig(c.URL)
	if err != nil {
		return nil, err
	}
	pc.MaxConns = c.MaxConns
	if pc.ConnConfig.ConnectTimeout == 0 {
		// pgconn applies ConnectTimeout to the whole connection attempt
		// (dial, TLS, authentication), not only to the dial.
		pc.ConnConfig.ConnectTimeout = c.ConnectTimeout
	}
	// On a cancelled context, ask the server to cancel the statement (and
	// close the connection if it does not answer within cancelGrace)
	// instead of only dropping the connection: a statement waiting on a
	// lock would otherwise run on, and commit, after Deliver had returned
	// an error — the worker would then retry a message already stored.
	pc.ConnConfig.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: cancelGrace}
	}
	params := pc.ConnConfig.RuntimeParams
	if _, ok := params["application_name"]; !ok {
		params["application_name"] = "levee" // for pg_stat_activity
	}
	return pc, nil
}

// target describes the database without credentials, for errors and logs.
func target(pc *pgxpool.Config) string {
	cc := pc.ConnConfig
	u := url.URL{Scheme: "postgres", User: url.User(cc.User), Host: net.JoinHostPort(cc.Host, strconv.Itoa(int(cc.Port))), Path: "/" + cc.Database}
	return u.String()
}
