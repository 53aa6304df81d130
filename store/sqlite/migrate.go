package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"time"

	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/levee-mail/levee/store"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrations are the embedded schema changes, in version order.
func migrations() ([]store.Migration, error) {
	return store.ReadMigrations(migrationFiles, "migrations")
}

// migrate applies the migrations the database lacks, all in one IMMEDIATE
// transaction: two processes opening a new file at once serialise on the
// write lock, and the second finds the work done. SQLite's DDL is
// transactional, so a failure leaves the schema as it was.
//
// Foreign keys are off while the migrations run, as SQLite's procedure for
// rebuilding a table asks (0003 drops messages and puts a new table in its
// place; with them on, the drop would delete from the tables that
// reference it). PRAGMA foreign_keys is a no-op inside a transaction, so
// it is set on the connection around it, and foreign_key_check must find
// nothing amiss before a migration commits.
func migrate(ctx context.Context, db *sql.DB, all []store.Migration) (err error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	defer conn.Close()
	if _, err = conn.ExecContext(ctx, `PRAGMA foreign_keys = OFF`); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	defer func() {
		// The connection goes back to the pool, where every statement
		// expects foreign keys on.
		if _, ferr := conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA foreign_keys = ON`); ferr != nil && err == nil {
			err = fmt.Errorf("sqlite: migrate: %w", ferr)
		}
	}()
	tx, err := beginMigration(ctx, conn)
	if err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if _, err = tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER NOT NULL PRIMARY KEY,
		name       TEXT    NOT NULL,
		applied_at INTEGER NOT NULL
	) STRICT`); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	var current int
	if err = tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	if current > len(all) {
		return fmt.Errorf("sqlite: migrate: database schema version %d is newer than this binary knows (%d)", current, len(all))
	}
	for _, m := range all[current:] {
		if _, err = tx.ExecContext(ctx, m.SQL); err != nil {
			return fmt.Errorf("sqlite: migrate: %s: %w", m.Name, err)
		}
		if _, err = tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
			m.Version, m.Name, time.Now().UnixMicro()); err != nil {
			return fmt.Errorf("sqlite: migrate: %s: %w", m.Name, err)
		}
	}
	if current < len(all) {
		// Only after a change: the check reads every referencing row.
		if err = foreignKeyCheck(ctx, tx); err != nil {
			return err
		}
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	return nil
}

// beginMigration begins the migrations' IMMEDIATE transaction. Another
// process opening the same file at the same time (the worker and web roles
// of a split deployment on one SQLite file) holds the write lock for as long
// as its migrations take: minutes for 0003 on a large file, far past
// busy_timeout. So a BEGIN that finds the lock taken is tried again until
// ctx ends (SIGTERM during startup), instead of failing the start with
// "database is locked".
func beginMigration(ctx context.Context, conn *sql.Conn) (*sql.Tx, error) {
	for {
		tx, err := conn.BeginTx(ctx, nil)
		if err == nil || !isBusy(err) {
			return tx, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for another process's migration: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// isBusy tells SQLITE_BUSY: another connection holds the lock.
func isBusy(err error) bool {
	var se *msqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

// foreignKeyCheck fails if any row references a row that is not there.
func foreignKeyCheck(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `PRAGMA foreign_key_check`)
	if err != nil {
		return fmt.Errorf("sqlite: migrate: foreign_key_check: %w", err)
	}
	defer rows.Close()
	if rows.Next() {
		var table, parent string
		var rowid sql.NullInt64
		var fk int
		if err := rows.Scan(&table, &rowid, &parent, &fk); err != nil {
			return fmt.Errorf("sqlite: migrate: foreign_key_check: %w", err)
		}
		return fmt.Errorf("sqlite: migrate: a row of %s references a missing row of %s", table, parent)
	}
	return rows.Err()
}
