package store

import (
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

// Migration is one numbered schema change that a backend embeds as a file
// named NNNN_name.sql.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// ReadMigrations lists the NNNN_name.sql files in dir of fsys in version
// order. The numbers must run 1, 2, 3, ... so that a missing or doubled file
// is a build problem caught by the tests, not a surprise on a user's
// database. Every backend reads its embedded migrations through it.
func ReadMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range entries { // ReadDir sorts by name
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || len(num) != 4 || !strings.HasSuffix(e.Name(), ".sql") {
			return nil, fmt.Errorf("store: migration %s: name must be NNNN_name.sql", e.Name())
		}
		if v != len(out)+1 {
			return nil, fmt.Errorf("store: migration %s: want version %d", e.Name(), len(out)+1)
		}
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: e.Name(), SQL: string(b)})
	}
	return out, nil
}
