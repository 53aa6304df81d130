// Package storetest is the conformance suite every store.Store backend runs:
// one set of behaviours, so that SQLite and PostgreSQL cannot drift apart and
// the worker and web API need not care which one they talk to.
//
// A backend's test calls Run with a function that opens a new, empty store
// and arranges its Close with t.Cleanup. Each subtest opens its own store.
//
// Besides store.Store's doc comments, the suite pins down what the interface
// leaves open:
//
//   - Mailbox addresses are case-folded (strings.ToLower) when stored and when
//     looked up; Envelope.To is returned as it was given.
//   - A duplicate (an ID already stored, or repeated within the call) is left
//     as first stored: its bytes, StoredAt and recipients do not change.
//   - Deliver validates the whole batch first: a nil message, an empty ID or a
//     nil Parsed fails the call with store.ErrInvalid and writes nothing.
//   - Messages on an address that never received mail is store.ErrNotFound;
//     a cursor the backend did not issue is store.ErrInvalid. Page sizes
//     follow store.Page.EffectiveLimit; NextCursor is empty exactly when no
//     further message exists (no trailing empty page).
//   - Times keep at least microseconds (PostgreSQL's precision): fixtures use
//     microsecond-aligned times and compare them with time.Time.Equal.
//   - Text a backend cannot store exactly (invalid UTF-8 or NUL bytes in
//     parsed fields: PostgreSQL rejects both in text and jsonb) may come back
//     with invalid sequences replaced by U+FFFD and NUL bytes dropped, but the
//     delivery must succeed: messy mail is stored, never rejected. Raw is
//     always byte-exact.
//   - A cancelled context fails every call with an error wrapping
//     context.Canceled, and a cancelled Deliver stores nothing.
package storetest
