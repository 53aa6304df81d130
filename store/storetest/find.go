package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/levee-mail/levee/store"
)

func testFindByMessageID(t *testing.T, s store.Store) {
	ctx := context.Background()
	a := simple(t, 1, "a@example.com")
	b := simple(t, 2, "b@example.com")
	// Same Message-ID header, different envelope: two stored messages (a
	// resend by a sender with another envelope is not the same message).
	b2 := fromRaw(t, "other@sender.example", []string{"b@example.com"}, string(b.Raw))
	deliver(t, s, a, b, b2)
	deliver(t, s, a) // a duplicate stays one row

	got, err := s.FindByMessageID(ctx, []string{"m1@sender.example", "m2@sender.example", "missing@sender.example"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(got["m1@sender.example"]); n != 1 {
		t.Fatalf("m1: %d summaries, want 1", n)
	}
	if s := got["m1@sender.example"][0]; s.ID != a.ID || s.StoredAt.IsZero() || s.Subject != "message 1" {
		t.Fatalf("m1 summary: %+v", s)
	}
	if n := len(got["m2@sender.example"]); n != 2 {
		t.Fatalf("m2: %d summaries, want 2", n)
	}
	if _, ok := got["missing@sender.example"]; ok {
		t.Fatal("a Message-ID never stored is in the result")
	}
	if empty, err := s.FindByMessageID(ctx, nil); err != nil || len(empty) != 0 {
		t.Fatalf("empty look-up: %v, %v", empty, err)
	}
	tooMany := make([]string, store.MaxLookup+1)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf("x%d@y", i)
	}
	if _, err := s.FindByMessageID(ctx, tooMany); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("%d values: err %v, want ErrInvalid", len(tooMany), err)
	}
	full := make([]string, store.MaxLookup)
	for i := range full {
		full[i] = fmt.Sprintf("m%d@sender.example", i)
	}
	got, err = s.FindByMessageID(ctx, full)
	if err != nil || len(got) != 2 {
		t.Fatalf("look-up of %d values: %d found, %v", len(full), len(got), err)
	}
}
