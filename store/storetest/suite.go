package storetest

import (
	"testing"

	"github.com/levee-mail/levee/store"
)

// Run runs the conformance suite against the backend that open creates. open
// must return a new, empty store and close it in a t.Cleanup.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Deliver/StoresEverything", testDeliverStoresEverything},
		{"Deliver/EmptyBatch", testDeliverEmptyBatch},
		{"Deliver/DuplicateInOneCall", testDuplicateInOneCall},
		{"Deliver/DuplicateAcrossCalls", testDuplicateAcrossCalls},
		{"Deliver/BatchWithOneDuplicate", testBatchWithOneDuplicate},
		{"Deliver/MultipleRecipients", testMultipleRecipients},
		{"Deliver/InvalidBatch", testInvalidBatch},
		{"Deliver/Concurrent", testConcurrentDeliver},
		{"Deliver/SparseMessage", testSparseMessage},
		{"Deliver/MessyText", testMessyText},
		{"Deliver/LargeRaw", testLargeRaw},
		{"Mailboxes/OrderCountsLatest", testMailboxes},
		{"Messages/Pagination", testPagination},
		{"Messages/PageLimits", testPageLimits},
		{"Messages/ArrivalsWhilePaging", testArrivalsWhilePaging},
		{"Messages/InvalidCursor", testInvalidCursor},
		{"NotFound", testNotFound},
		{"FindByMessageID", testFindByMessageID},
		{"Ping", testPing},
		{"CanceledContext", testCanceledContext},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, open(t))
		})
	}
}
