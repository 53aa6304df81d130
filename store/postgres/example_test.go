package postgres_test

import (
	"context"
	"fmt"
	"log"

	"github.com/levee-mail/levee/store"
	"github.com/levee-mail/levee/store/postgres"
)

// A process picks PostgreSQL when its store setting is a postgres:// URL.
// Open builds or updates the schema; several processes may do so at once.
func ExampleOpen() {
	setting := "postgres://levee@db.internal:5432/levee?sslmode=verify-full"
	if !postgres.IsURL(setting) {
		log.Fatal("not a PostgreSQL URL")
	}
	ctx := context.Background()
	var s store.Store
	s, err := postgres.Open(ctx, postgres.Config{URL: setting, MaxConns: 20})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	boxes, err := s.Mailboxes(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(boxes), "mailboxes")
}
