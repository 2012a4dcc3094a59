-- One row per login: what a token's `sid` names. Logging out, or ending a
-- session from another device, deletes its row, and a token whose session
-- is gone is refused.
CREATE TABLE sessions (
    id         VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin PRIMARY KEY,
    user_id    VARCHAR(64)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    device     VARCHAR(255) CHARACTER SET utf8mb4 NOT NULL,
    address    VARCHAR(64)  CHARACTER SET ascii NOT NULL,
    created_at BIGINT       NOT NULL,
    expires_at BIGINT       NOT NULL,
    INDEX sessions_by_user (user_id, created_at)
) ENGINE=InnoDB;
