-- Cloud saves. Every write, restore and delete of a slot adds one row: its version. The row with
-- the highest version is the slot's current state (a `delete` row = the slot is deleted). A row
-- commits only after its blob is stored, so every visible version has its bytes.
CREATE TABLE save_versions (
    user_id TEXT NOT NULL REFERENCES users(id),
    slot TEXT NOT NULL,
    version BIGINT NOT NULL,
    kind TEXT NOT NULL,
    size BIGINT NOT NULL,
    checksum TEXT NOT NULL,
    metadata TEXT NOT NULL,
    blob_key TEXT,
    restored_from BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, slot, version)
);

-- Bytes of every kept version per player. Writers update this row first, so it is also the
-- per-player write lock that serializes concurrent writes (Postgres row lock).
CREATE TABLE save_usage (
    user_id TEXT PRIMARY KEY REFERENCES users(id),
    used_bytes BIGINT NOT NULL
);
