-- Look-up by Message-ID header (audits, de-duplication checks).
CREATE INDEX messages_by_message_id ON messages (message_id);
