package ingest

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test stops what it started; a leaked session, accept loop or
// publish goroutine fails the package.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
