-- How far each user has been delivered each conversation: the highest
-- `seq` one of their clients confirmed (FastChat's MSG_ACK from the
-- target), raised only.
CREATE TABLE receipts (
    room          VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id       VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    delivered_seq BIGINT       NOT NULL,
    updated_ms    BIGINT       NOT NULL,
    PRIMARY KEY (room, user_id)
) ENGINE=InnoDB;
