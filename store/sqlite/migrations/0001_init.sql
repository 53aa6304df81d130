-- Mailbox storage, first version. Times are INTEGER microseconds since the
-- Unix epoch, UTC (NULL for a zero time): exact, sortable, and the same
-- precision PostgreSQL keeps, so both backends return the same instants.

CREATE TABLE messages (
    id               TEXT    NOT NULL PRIMARY KEY,
    envelope_from    TEXT    NOT NULL,
    envelope_to      TEXT    NOT NULL, -- JSON array, as given
    remote_addr      TEXT    NOT NULL,
    helo             TEXT    NOT NULL,
    received_at      INTEGER,
    subject          TEXT    NOT NULL,
    from_header      TEXT    NOT NULL,
    message_id       TEXT    NOT NULL,
    date             INTEGER,
    text_body        TEXT    NOT NULL,
    html_body        TEXT    NOT NULL,
    headers          TEXT    NOT NULL, -- JSON object
    warnings         TEXT    NOT NULL, -- JSON array
    attachment_count INTEGER NOT NULL,
    size             INTEGER NOT NULL,
    raw              BLOB    NOT NULL,
    stored_at        INTEGER NOT NULL
) STRICT;

-- Counters kept by Deliver in the same transaction as the links, so that
-- listing mailboxes does not count every link (folder counts must stay cheap
-- while a backlog drains). Nothing deletes messages, so they stay exact.
CREATE TABLE mailboxes (
    address   TEXT    NOT NULL PRIMARY KEY,
    messages  INTEGER NOT NULL,
    latest_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE TABLE mailbox_messages (
    address    TEXT    NOT NULL REFERENCES mailboxes (address),
    message_id TEXT    NOT NULL REFERENCES messages (id),
    stored_at  INTEGER NOT NULL,
    PRIMARY KEY (address, message_id)
) STRICT, WITHOUT ROWID;

-- Newest-first listing and its cursor (stored_at, message_id) walk this index.
CREATE INDEX mailbox_messages_newest ON mailbox_messages (address, stored_at DESC, message_id DESC);

CREATE TABLE attachments (
    message_id   TEXT    NOT NULL REFERENCES messages (id),
    idx          INTEGER NOT NULL,
    filename     TEXT    NOT NULL,
    content_type TEXT    NOT NULL,
    content_id   TEXT    NOT NULL,
    size         INTEGER NOT NULL,
    content      BLOB    NOT NULL,
    PRIMARY KEY (message_id, idx)
) STRICT; -- a rowid table: WITHOUT ROWID suits small rows, not BLOBs

