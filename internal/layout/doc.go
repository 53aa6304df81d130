// Package layout owns the import rules between Levee's packages and the test
// that enforces them. It has no production code: the rules live in
// rules_test.go as one allow-list table (for each package, the Levee packages
// it may import), which is the place to read the layout and the place to
// change it.
//
// The table follows the data flow of design.md: cmd -> {ingest, worker, web,
// loadtest} -> {queue, store} -> the shared mail types. The test fails when
//
//   - a package imports a Levee package its rule does not allow;
//   - a Levee package exists that no rule covers, so a new package is placed
//     deliberately rather than by accident;
//   - production code imports a test helper (queue/queuetest, store/storetest,
//     store/postgres/pgtest), which only _test.go files may import;
//   - a test file below the binary imports cmd/... or app: tests of a stage
//     exercise that stage, not the whole application.
//
// It reads imports from `go list -e`, so it still checks a tree that does not
// build; a rule may name a package that does not exist yet.
package layout
