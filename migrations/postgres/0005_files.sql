-- Attachments of a chat: a JSON array of the files' public metadata, as
-- delivered (NULL for none).
ALTER TABLE messages ADD COLUMN attachments TEXT;

-- Uploaded files (their bytes are in the object store under `id`, the
-- thumbnail under `id.thumb`). `uploader` is NULL for an anonymous upload
-- (auth off); `public` is set when a user makes it their avatar.
CREATE TABLE files (
    id           TEXT    PRIMARY KEY,
    uploader     TEXT,
    name         TEXT    NOT NULL,
    size         BIGINT  NOT NULL,
    content_type TEXT    NOT NULL,
    sha256       TEXT    NOT NULL,
    width        INTEGER,
    height       INTEGER,
    thumbnail    BOOLEAN NOT NULL DEFAULT FALSE,
    public       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   BIGINT  NOT NULL
);

-- The rooms a file was posted in: whoever may read one of them may read it.
CREATE TABLE file_rooms (
    file_id TEXT NOT NULL,
    room    TEXT NOT NULL,
    PRIMARY KEY (file_id, room)
);
