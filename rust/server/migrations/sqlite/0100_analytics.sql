-- Analytics (issue 11). Times are unix milliseconds; `day` is a UTC day number (ms / 86400000).

-- A player's consent: events are accepted only while `granted` = 1. A revocation keeps the row
-- (granted = 0) so the time of the last answer stays on record.
CREATE TABLE analytics_consent (
    user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    project_id TEXT NOT NULL REFERENCES projects(id),
    granted BIGINT NOT NULL,
    under_13 BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);

CREATE TABLE analytics_settings (
    project_id TEXT PRIMARY KEY REFERENCES projects(id),
    coppa BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);

-- Raw events. The primary key makes ingestion idempotent (INSERT … ON CONFLICT DO NOTHING);
-- the (project, day, name) index serves every query over a range of days. `user_id` and
-- `session_id` are NULL for COPPA players. No foreign key: ingestion is the hot path, and the
-- privacy delete removes a player's events explicitly.
CREATE TABLE analytics_events (
    project_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    day BIGINT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    user_id TEXT,
    session_id TEXT,
    seq BIGINT NOT NULL,
    properties TEXT NOT NULL,
    value DOUBLE PRECISION,
    client_time BIGINT NOT NULL,
    -- client_time corrected by the batch's clock skew (server receive time - client send time)
    event_time BIGINT NOT NULL,
    server_time BIGINT NOT NULL,
    PRIMARY KEY (project_id, event_id)
);
CREATE INDEX analytics_events_day ON analytics_events(project_id, day, name);
CREATE INDEX analytics_events_user ON analytics_events(user_id, day);

-- Rollups maintained in the ingesting transaction from the newly stored events only.
-- One row per identified player active on a day: DAU/WAU/MAU read only this.
CREATE TABLE analytics_daily_players (
    project_id TEXT NOT NULL,
    day BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    events BIGINT NOT NULL,
    PRIMARY KEY (project_id, day, user_id)
);
CREATE INDEX analytics_daily_players_user ON analytics_daily_players(user_id);

-- Events per day, kind and name.
CREATE TABLE analytics_daily_counts (
    project_id TEXT NOT NULL,
    day BIGINT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    events BIGINT NOT NULL,
    PRIMARY KEY (project_id, day, kind, name)
);

-- The latest value of each user property (set_user_property), JSON text.
CREATE TABLE analytics_user_properties (
    user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    event_time BIGINT NOT NULL,
    PRIMARY KEY (user_id, name)
);
