-- Social: leaderboards, achievements, player statistics, friends, groups.

CREATE TABLE lb_boards (
    project_id TEXT NOT NULL REFERENCES projects(id),
    id TEXT NOT NULL,
    sort_order TEXT NOT NULL,
    operator TEXT NOT NULL,
    reset TEXT NOT NULL,
    min_score BIGINT,
    max_score BIGINT,
    server_authoritative BIGINT NOT NULL DEFAULT 0,
    stat TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, id)
);

-- One row per player and period; `period` is the period's start (unix ms, 0 = never resets).
-- Ties rank by `reached_at` (when the current score was reached), then `seq` (per-board order of
-- writes), so ranks are total and identical after a restart.
CREATE TABLE lb_entries (
    project_id TEXT NOT NULL,
    board_id TEXT NOT NULL,
    period BIGINT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id),
    score BIGINT NOT NULL,
    num_scores BIGINT NOT NULL,
    metadata TEXT NOT NULL,
    reached_at BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (project_id, board_id, period, user_id)
);

CREATE TABLE ach_definitions (
    project_id TEXT NOT NULL REFERENCES projects(id),
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    icon_url TEXT,
    hidden BIGINT NOT NULL DEFAULT 0,
    goal BIGINT NOT NULL,
    stat TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, id)
);

CREATE TABLE ach_progress (
    project_id TEXT NOT NULL,
    achievement_id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id),
    progress BIGINT NOT NULL,
    unlocked_at BIGINT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, achievement_id, user_id)
);
CREATE INDEX ach_progress_user ON ach_progress(project_id, user_id);

CREATE TABLE player_stats (
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    value BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, user_id, name)
);

-- Directed edges: (a, b, 'friend') exists both ways; a request is (sender, receiver, 'sent') plus
-- (receiver, sender, 'received'); a block is (blocker, blocked, 'blocked') alone.
CREATE TABLE friend_edges (
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id),
    other_id TEXT NOT NULL REFERENCES users(id),
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, user_id, other_id)
);
CREATE INDEX friend_edges_other ON friend_edges(project_id, other_id);

CREATE TABLE social_groups (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    name TEXT NOT NULL,
    name_lower TEXT NOT NULL,
    description TEXT NOT NULL,
    open BIGINT NOT NULL,
    max_members BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX social_groups_name ON social_groups(project_id, name_lower);

CREATE TABLE group_members (
    group_id TEXT NOT NULL REFERENCES social_groups(id),
    user_id TEXT NOT NULL REFERENCES users(id),
    role TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members(user_id);
