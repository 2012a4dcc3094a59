-- One counter per room, shared by every node: a node gives out a room's
-- next numbers by raising its counter in the same transaction that stores
-- the messages, so the row lock orders the nodes and a rolled-back write
-- leaves no hole.
CREATE TABLE room_seqs (
    room     TEXT   PRIMARY KEY,
    last_seq BIGINT NOT NULL
);

INSERT INTO room_seqs (room, last_seq)
    SELECT room, MAX(seq) FROM messages GROUP BY room;
