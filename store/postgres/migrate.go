package postgres

import (
	"context"
	"embed"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/levee-mail/levee/store"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrations are the embedded schema changes, in version order.
func migrations() ([]store.Migration, error) {
	return store.ReadMigrations(migrationFiles, "migrations")
}

// migrateLockClass is the first key of the advisory lock that serialises
// migrations; the second is the schema's name hashed, so that stores in
// different schemas of one database do not wait for each other.
const migrateLockClass = 0x4c455645 // "LEVE"

// migrate applies the migrations the schema lacks, all in one transaction
// under a transaction-scoped advisory lock: several processes starting at
// once (two `levee worker`s) queue on the lock, and the later ones find the
// work done. PostgreSQL's DDL is transactional, so a failed migration leaves
// the schema as it was, and the lock goes with the transaction even if the
// connection dies.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	all, err := migrations()
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		var schema *string
		if err := tx.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
			return fmt.Errorf("postgres: migrate: %w", err)
		}
		if schema == nil {
			var path string
			_ = tx.QueryRow(ctx, `SHOW search_path`).Scan(&path)
			return fmt.Errorf("postgres: migrate: no schema to create tables in: search_path %q names no existing schema", path)
		}
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, int32(migrateLockClass), *schema); err != nil {
			return fmt.Errorf("postgres: migrate: lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer     NOT NULL PRIMARY KEY,
			name       text        NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
			return fmt.Errorf("postgres: migrate: %w", err)
		}
		var current int
		if err := tx.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
			return fmt.Errorf("postgres: migrate: %w", err)
		}
		if current > len(all) {
			return fmt.Errorf("postgres: migrate: database schema version %d is newer than this binary knows (%d)", current, len(all))
		}
		for _, m := range all[current:] {
			// No arguments: pgx sends it with the simple protocol, which
			// takes a file of several statements.
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return fmt.Errorf("postgres: migrate: %s: %w", m.Name, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
				return fmt.Errorf("postgres: migrate: %s: %w", m.Name, err)
			}
		}
		return nil
	})
}
