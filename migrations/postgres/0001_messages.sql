-- Every stored chat message; (room, seq) is its place in its conversation.
CREATE TABLE messages (
    room          TEXT   NOT NULL,
    seq           BIGINT NOT NULL,
    id            BYTEA  NOT NULL,
    sender        TEXT   NOT NULL,
    client_msg_id TEXT,
    body          TEXT   NOT NULL,
    ts_ms         BIGINT NOT NULL,
    PRIMARY KEY (room, seq)
);

-- Idempotent send: one message per (room, sender, client_msg_id).
CREATE UNIQUE INDEX messages_idempotency
    ON messages (room, sender, client_msg_id)
    WHERE client_msg_id IS NOT NULL;
