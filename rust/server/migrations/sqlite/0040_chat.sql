-- Chat (issue #8): messages of every channel, per-player mutes, per-project chat settings.

-- `channel_key` is canonical: `room:<room id>`, `group:<group id>`, and `dm:<a>:<b>` with the two
-- user ids sorted, so both sides of a conversation read one history. History pages walk
-- (sent_at, id) downwards; the id (UUID v7) breaks ties within a millisecond.
CREATE TABLE chat_messages (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    channel_key TEXT NOT NULL,
    sender_id TEXT NOT NULL REFERENCES users(id),
    body TEXT NOT NULL,
    metadata TEXT,
    sent_at BIGINT NOT NULL
);
CREATE INDEX chat_messages_channel ON chat_messages(project_id, channel_key, sent_at, id);

-- `user_id` does not see messages of `muted_id` (live or in history).
CREATE TABLE chat_mutes (
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id),
    muted_id TEXT NOT NULL REFERENCES users(id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, user_id, muted_id)
);
CREATE INDEX chat_mutes_muted ON chat_mutes(project_id, muted_id);

-- A project without a row uses the defaults (profanity filter on).
CREATE TABLE chat_settings (
    project_id TEXT PRIMARY KEY REFERENCES projects(id),
    profanity_filter BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
