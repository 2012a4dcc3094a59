-- How far each user has been delivered each conversation: the highest
-- `seq` one of their clients confirmed (FastChat's MSG_ACK from the
-- target), raised only.
CREATE TABLE receipts (
    room          TEXT    NOT NULL,
    user_id       TEXT    NOT NULL,
    delivered_seq INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL,
    PRIMARY KEY (room, user_id)
) WITHOUT ROWID;
