package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"time"

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
func migrate(ctx context.Context, db *sql.DB) (err error) {
	all, err := migrations()
	if err != nil {
		return err
	}
	tx, err := db.BeginTx(ctx, nil)
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
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	return nil
}
