-- Registered users. `username` is stored lower-cased (unique case-
-- insensitively); `token_gen` is raised by a password change, which makes
-- every token issued before it invalid.
CREATE TABLE users (
    id             TEXT    PRIMARY KEY,
    username       TEXT    NOT NULL UNIQUE,
    display_name   TEXT    NOT NULL,
    password_hash  TEXT    NOT NULL,
    token_gen      BIGINT NOT NULL DEFAULT 0,
    avatar_file_id TEXT,
    created_at     BIGINT NOT NULL
);

-- Private conversations: groups (with an owner) and direct messages (one
-- per pair of users: `dm_key` is the pair's ids in order).
CREATE TABLE conversations (
    id         TEXT    PRIMARY KEY,
    kind       TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    owner      TEXT,
    dm_key     TEXT    UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE members (
    conversation TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    PRIMARY KEY (conversation, user_id)
);

CREATE INDEX members_by_user ON members (user_id, conversation);
