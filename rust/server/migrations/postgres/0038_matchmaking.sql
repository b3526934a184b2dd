-- Matchmaking mode rules (PUT /api/v1/matchmaking/modes/{mode}); unconfigured modes use the
-- server's [matchmaking] defaults. Tickets are in memory on the node holding the player's socket.
CREATE TABLE mm_modes (
    project_id TEXT NOT NULL REFERENCES projects(id),
    mode TEXT NOT NULL,
    min_players BIGINT NOT NULL,
    max_players BIGINT NOT NULL,
    timeout_secs BIGINT NOT NULL,
    widen_per_sec DOUBLE PRECISION NOT NULL,
    max_widen DOUBLE PRECISION NOT NULL,
    tick_rate BIGINT,
    metadata TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, mode)
);
