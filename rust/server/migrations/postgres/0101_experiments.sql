-- A/B tests and remote config (issue 11). `definition` is the ExperimentDefinition as JSON;
-- `running` is also a column so assignments read only running experiments.
CREATE TABLE analytics_experiments (
    project_id TEXT NOT NULL REFERENCES projects(id),
    key TEXT NOT NULL,
    definition TEXT NOT NULL,
    running BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, key)
);

CREATE TABLE analytics_remote_config (
    project_id TEXT NOT NULL REFERENCES projects(id),
    key TEXT NOT NULL,
    -- JSON text
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, key)
);
