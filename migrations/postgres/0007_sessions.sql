-- One row per login: what a token's `sid` names. Logging out, or ending a
-- session from another device, deletes its row, and a token whose session
-- is gone is refused.
CREATE TABLE sessions (
    id         TEXT   PRIMARY KEY,
    user_id    TEXT   NOT NULL,
    device     TEXT   NOT NULL,
    address    TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id, created_at);
