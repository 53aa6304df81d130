package postgres

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/levee-mail/levee/store"
	"github.com/levee-mail/levee/store/postgres/pgtest"
	"github.com/levee-mail/levee/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestStore runs every test that needs a server against one database, each
// in a schema of its own (search_path in the URL, as a deployment sharing a
// database would run): creating a database writes a copy of template0 to
// the WAL, which takes a second or more on a busy machine, a schema a few
// milliseconds.
//
// The two conformance runs, which take most of the time waiting on commits
// in schemas of their own, run side by side once the other tests are done;
// the others run one at a time, as some watch the whole database
// (pg_stat_activity) or time their calls.
func TestStore(t *testing.T) {
	db := pgtest.NewDatabase(t)
	for _, tc := range []struct {
		name     string
		fn       func(t *testing.T, db string)
		parallel bool
	}{
		{"Conformance", testConformance, true},
		{"ConformanceSimpleProtocol", testConformanceSimpleProtocol, true},
		{"Deliver/DuplicatesAcrossProcesses", testDuplicatesAcrossProcesses, false},
		{"Deliver/StoredAtFollowsDeliveryOrder", testStoredAtFollowsDeliveryOrder, false},
		{"Deliver/StoredAtAboveFloor", testStoredAtAboveFloor, false},
		{"Deliver/CleanedText", testCleanedText, false},
		{"Deliver/IDsThatCannotBeStored", testIDsThatCannotBeStored, false},
		{"Deliver/HugeMessageIDHeader", testHugeMessageIDHeader, false},
		{"Deliver/TimesOutOfRange", testTimesOutOfRange, false},
		{"Deliver/CancelWhileWaitingStoresNothing", testCancelWhileWaitingStoresNothing, false},
		{"Deliver/CommitIsDurable", testDeliverCommitIsDurable, false},
		{"Deliver/ReaderDoesNotWaitBehindWrites", testReaderDoesNotWaitBehindWrites, false},
		{"Messages/ListingUsesIndex", testListingUsesIndex, false},
		{"FindByMessageID/Prefix", testFindByMessageIDPrefix, false},
		{"CloseThenUse", testCloseThenUse, false},
		{"Migrate/ReopenKeepsDataAndSchema", testReopenKeepsDataAndSchema, false},
		{"Migrate/ConcurrentOpenOnEmptySchema", testConcurrentOpenOnEmptySchema, false},
		{"Migrate/OpenRefusesNewerSchema", testOpenRefusesNewerSchema, false},
		{"Migrate/OpenWithoutSchema", testOpenWithoutSchema, false},
		{"Migrate/LargeColumnsUseLZ4", testLargeColumnsUseLZ4, false},
		{"Outage/ServerGoneAndBack", testServerGoneAndBack, false},
		{"Outage/ServerStalls", testServerStalls, false},
		{"Outage/DiskFull", testDiskFullIsUnavailable, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.parallel {
				t.Parallel()
			}
			tc.fn(t, db)
		})
	}
}

// openURL opens a store on url and closes it when t ends.
func openURL(t testing.TB, url string) *Store {
	t.Helper()
	s, err := Open(t.Context(), Config{URL: url})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// openTest opens a store on a new schema in db; it returns the schema's URL.
func openTest(t testing.TB, db string) (*Store, string) {
	t.Helper()
	url := pgtest.NewSchema(t, db)
	return openURL(t, url), url
}

func testConformance(t *testing.T, db string) {
	storetest.Run(t, func(t *testing.T) store.Store { return openURL(t, pgtest.NewSchema(t, db)) })
}

// PgBouncer in transaction mode (before 1.21) cannot keep prepared
// statements; such deployments set default_query_exec_mode=simple_protocol
// in the URL, where pgx interpolates arguments itself. Deliver's array
// arguments and pipelined transaction must work that way too.
func testConformanceSimpleProtocol(t *testing.T, db string) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openURL(t, pgtest.NewSchema(t, db)+"&default_query_exec_mode=simple_protocol")
	})
}
