-- The whole schema at once (MySQL 8 / MariaDB 10.5+, InnoDB). Names (rooms,
-- client ids, user and file ids) are ASCII by validation; texts people
-- write are utf8mb4. One statement per `;`-terminated block.

-- Every stored message; (room, seq) is its place in its conversation.
CREATE TABLE messages (
    room          VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    seq           BIGINT       NOT NULL,
    id            BINARY(16)   NOT NULL,
    sender        VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    client_msg_id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NULL,
    body          MEDIUMTEXT   CHARACTER SET utf8mb4 NOT NULL,
    ts_ms         BIGINT       NOT NULL,
    kind          VARCHAR(32)  NOT NULL DEFAULT 'chat',
    attachments   MEDIUMTEXT   CHARACTER SET utf8mb4 NULL,
    PRIMARY KEY (room, seq),
    -- Idempotent send (several NULL client_msg_ids are allowed).
    UNIQUE KEY messages_idempotency (room, sender, client_msg_id),
    KEY messages_by_time (ts_ms)
) ENGINE=InnoDB;

-- One counter per room, shared by every node (raised in the transaction
-- that stores the messages: the row lock orders the nodes).
CREATE TABLE room_seqs (
    room     VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY,
    last_seq BIGINT NOT NULL
) ENGINE=InnoDB;

CREATE TABLE users (
    id             VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY,
    username       VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL UNIQUE,
    display_name   VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL,
    password_hash  VARCHAR(255) NOT NULL,
    token_gen      BIGINT       NOT NULL DEFAULT 0,
    avatar_file_id VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NULL,
    created_at     BIGINT       NOT NULL
) ENGINE=InnoDB;

CREATE TABLE conversations (
    id         VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY,
    kind       VARCHAR(16)  NOT NULL,
    name       VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL,
    owner      VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NULL,
    dm_key     VARCHAR(160) CHARACTER SET ascii COLLATE ascii_bin NULL UNIQUE,
    created_at BIGINT       NOT NULL
) ENGINE=InnoDB;

CREATE TABLE members (
    conversation VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id      VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    PRIMARY KEY (conversation, user_id),
    KEY members_by_user (user_id, conversation)
) ENGINE=InnoDB;

CREATE TABLE files (
    id           VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY,
    uploader     VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NULL,
    name         VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL,
    size         BIGINT       NOT NULL,
    content_type VARCHAR(255) NOT NULL,
    sha256       CHAR(64)     NOT NULL,
    width        INT          NULL,
    height       INT          NULL,
    thumbnail    BOOLEAN      NOT NULL DEFAULT FALSE,
    public       BOOLEAN      NOT NULL DEFAULT FALSE,
    created_at   BIGINT       NOT NULL
) ENGINE=InnoDB;

CREATE TABLE file_rooms (
    file_id VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    room    VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    PRIMARY KEY (file_id, room)
) ENGINE=InnoDB;
