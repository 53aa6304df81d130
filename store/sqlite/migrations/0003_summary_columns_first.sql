-- Rewrites messages with the columns a mailbox page and a message view read
-- (times, sizes, headers' summaries) ahead of the large ones (the bodies,
-- then raw). SQLite stores a row as one record: a column after a body that
-- spilled to overflow pages is reached only by reading every one of those
-- pages. Listing a mailbox read each listed message's bodies to reach its
-- size, and a message view read all of raw to reach stored_at; with the
-- reader's page cache emptied by every commit while a backlog drains, those
-- were page reads from the OS on every request.
--
-- Runs with foreign keys off (migrate turns them off around every
-- migration and checks them before committing): dropping the old table must
-- not cascade into the tables that reference messages (id), which then name
-- the new one.
CREATE TABLE messages_new (
    id               TEXT    NOT NULL PRIMARY KEY,
    envelope_from    TEXT    NOT NULL,
    envelope_to      TEXT    NOT NULL, -- JSON array, as given
    remote_addr      TEXT    NOT NULL,
    helo             TEXT    NOT NULL,
    received_at      INTEGER,
    stored_at        INTEGER NOT NULL,
    subject          TEXT    NOT NULL,
    from_header      TEXT    NOT NULL,
    message_id       TEXT    NOT NULL,
    date             INTEGER,
    attachment_count INTEGER NOT NULL,
    size             INTEGER NOT NULL,
    warnings         TEXT    NOT NULL, -- JSON array
    headers          TEXT    NOT NULL, -- JSON object
    text_body        TEXT    NOT NULL,
    html_body        TEXT    NOT NULL,
    raw              BLOB    NOT NULL
) STRICT;

INSERT INTO messages_new (id, envelope_from, envelope_to, remote_addr, helo, received_at, stored_at,
        subject, from_header, message_id, date, attachment_count, size, warnings, headers,
        text_body, html_body, raw)
    SELECT id, envelope_from, envelope_to, remote_addr, helo, received_at, stored_at,
        subject, from_header, message_id, date, attachment_count, size, warnings, headers,
        text_body, html_body, raw
    FROM messages;

DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;

-- Look-up by Message-ID header (audits, de-duplication checks), as 0002.
CREATE INDEX messages_by_message_id ON messages (message_id);
