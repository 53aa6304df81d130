-- Mailbox storage, first version; the same data as the SQLite backend's
-- schema. Keys and addresses use the "C" collation: byte order, as in
-- SQLite and in Go's string comparison, so that the listing order and its
-- cursor mean the same on both backends whatever the database's locale.
-- Times are timestamptz (microseconds, like the SQLite integers); NULL is
-- the zero time.

CREATE TABLE messages (
    id               text COLLATE "C" NOT NULL PRIMARY KEY,
    envelope_from    text   NOT NULL,
    envelope_to      jsonb  NOT NULL, -- array, as given
    remote_addr      text   NOT NULL,
    helo             text   NOT NULL,
    received_at      timestamptz,
    subject          text   NOT NULL,
    from_header      text   NOT NULL,
    message_id       text COLLATE "C" NOT NULL,
    date             timestamptz,
    text_body        text   NOT NULL,
    html_body        text   NOT NULL,
    headers          jsonb  NOT NULL, -- object of arrays
    warnings         jsonb  NOT NULL, -- array
    attachment_count integer NOT NULL,
    size             bigint NOT NULL,
    raw              bytea  NOT NULL,
    stored_at        timestamptz NOT NULL
);

-- Look-up by Message-ID header (audits). The header is sender-controlled
-- and unbounded, and a btree entry over ~2.7 kB fails the insert (on every
-- redelivery), so the index holds the first 500 characters (at most 2000
-- bytes) and a look-up compares the whole value after the index scan. Not a
-- hash index: mail without a Message-ID (all '') or a sender reusing one
-- would pile up in one hash bucket, whose chain every insert walks.
CREATE INDEX messages_by_message_id ON messages (substr(message_id, 1, 500));

-- Counters kept by Deliver in the same statement as the links, so that
-- listing mailboxes does not count every link (folder counts must stay cheap
-- while a backlog drains). Nothing deletes messages, so they stay exact.
CREATE TABLE mailboxes (
    address   text COLLATE "C" NOT NULL PRIMARY KEY,
    messages  bigint      NOT NULL,
    latest_at timestamptz NOT NULL
);

-- One index serves both uniqueness and the newest-first listing: a message
-- has one stored_at, so (address, stored_at, message_id) is unique exactly
-- when (address, message_id) is, and the listing and its cursor walk this
-- key backwards.
CREATE TABLE mailbox_messages (
    address    text COLLATE "C" NOT NULL REFERENCES mailboxes (address),
    stored_at  timestamptz      NOT NULL,
    message_id text COLLATE "C" NOT NULL REFERENCES messages (id),
    PRIMARY KEY (address, stored_at, message_id)
);

CREATE TABLE attachments (
    message_id   text COLLATE "C" NOT NULL REFERENCES messages (id),
    idx          integer NOT NULL,
    filename     text    NOT NULL,
    content_type text    NOT NULL,
    content_id   text    NOT NULL,
    size         bigint  NOT NULL,
    content      bytea   NOT NULL,
    PRIMARY KEY (message_id, idx)
);
