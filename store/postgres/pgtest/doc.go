// Package pgtest gives tests a PostgreSQL database of their own on the
// server named by LEVEE_TEST_POSTGRES_URL (default DefaultURL): a fresh,
// uniquely named database or schema per test, dropped when the test ends.
//
// When the server cannot be reached, tests skip with a message saying how to
// point them at one — unless LEVEE_TEST_POSTGRES_REQUIRED=1 (CI sets it),
// where an unreachable server fails them: a CI run must not pass by skipping
// every PostgreSQL test.
package pgtest
