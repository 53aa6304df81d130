package store

import (
	"context"
	"errors"
	"time"

	"github.com/levee-mail/levee/mail"
)

// ErrNotFound is returned (wrapped) when a mailbox or message does not exist.
var ErrNotFound = errors.New("store: not found")

// Store is mailbox storage. Implementations are safe for concurrent use.
type Store interface {
	// Deliver commits msgs in one transaction where the backend allows it.
	// Each message is stored once per ID and linked to one mailbox per
	// recipient address (Envelope.To, case-folded); a message whose ID is
	// already stored is left as it is and reported as a duplicate. msgs must
	// have Parsed set. Deliver returns only after the commit is durable.
	Deliver(ctx context.Context, msgs []*mail.Message) ([]DeliveryResult, error)

	// Mailboxes lists every mailbox, ordered by address.
	Mailboxes(ctx context.Context) ([]Mailbox, error)
	// Messages lists a mailbox's messages newest first (by StoredAt, then
	// ID), starting after the cursor in page.
	Messages(ctx context.Context, address string, page Page) (MessagePage, error)
	// Message returns one message with Parsed (attachments without their
	// content) and without Raw. Unknown ids give ErrNotFound.
	Message(ctx context.Context, id string) (*mail.Message, error)
	// Raw returns the stored bytes of a message exactly. Unknown ids give ErrNotFound.
	Raw(ctx context.Context, id string) ([]byte, error)

	Finder

	// Ping checks that the backend answers (for /readyz).
	Ping(ctx context.Context) error
	// Close releases the backend's resources.
	Close() error
}

// DeliveryResult tells, per message in a Deliver call, whether it was new.
type DeliveryResult struct {
	ID        string
	Duplicate bool
}

// Mailbox is one recipient address that has received mail.
type Mailbox struct {
	Address  string    `json:"address"`
	Messages int64     `json:"messages"`
	LatestAt time.Time `json:"latest_at"`
}

// Page asks for up to Limit summaries after Cursor (empty: from the newest).
type Page struct {
	Limit  int
	Cursor string
}

// MessagePage is one page of summaries and the cursor for the next page
// (empty when there is none).
type MessagePage struct {
	Messages   []Summary `json:"messages"`
	NextCursor string    `json:"next_cursor,omitempty"`
}

// Summary is what a mailbox listing shows of a message.
type Summary struct {
	ID          string    `json:"id"`
	From        string    `json:"from"`
	Subject     string    `json:"subject"`
	Date        time.Time `json:"date,omitzero"`
	MessageID   string    `json:"message_id,omitempty"`
	Size        int64     `json:"size"`
	Attachments int       `json:"attachments"`
	ReceivedAt  time.Time `json:"received_at"`
	StoredAt    time.Time `json:"stored_at"`
}

// MaxPageLimit bounds one page so that a reader cannot ask for a whole mailbox at once.
const MaxPageLimit = 200

// MaxLookup bounds the Message-ID values one FindByMessageID call takes.
const MaxLookup = 1000

// Finder looks messages up by their Message-ID header, for audits (the load
// tester checks that every message it sent is stored exactly once).
type Finder interface {
	// FindByMessageID returns, for each given Message-ID (without angle
	// brackets, compared exactly), the summaries of every stored message
	// carrying it. Values with no stored message are absent from the map.
	// More than MaxLookup values give ErrInvalid.
	FindByMessageID(ctx context.Context, messageIDs []string) (map[string][]Summary, error)
}
