package sqlite

import (
	"context"
	"database/sql"
	"fmt"
)

// statement is where a prepared statement goes, and its SQL.
type statement struct {
	stmt **sql.Stmt
	sql  string
}

// prepareAll prepares each statement on db. On a pool, database/sql
// prepares a statement on a connection the first time it runs there and
// keeps it for that connection's life: SQLite compiles each query once a
// connection, not once a call.
func prepareAll(ctx context.Context, db *sql.DB, all []statement) error {
	for _, p := range all {
		var err error
		if *p.stmt, err = db.PrepareContext(ctx, p.sql); err != nil {
			return fmt.Errorf("sqlite: prepare: %w", err)
		}
	}
	return nil
}

func closeAll(all []statement) {
	for _, p := range all {
		if *p.stmt != nil {
			_ = (*p.stmt).Close()
		}
	}
}
