CREATE TABLE users (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    username TEXT NOT NULL,
    username_lower TEXT NOT NULL,
    email TEXT,
    email_lower TEXT,
    email_verified BIGINT NOT NULL DEFAULT 0,
    password_hash TEXT,
    avatar_url TEXT,
    preferences TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX users_project_username ON users(project_id, username_lower);
CREATE UNIQUE INDEX users_project_email ON users(project_id, email_lower);

-- Every way to sign in to an account: ('device', device id), ('email', lowercased address),
-- ('google' | 'github' | 'discord', provider user id).
CREATE TABLE identities (
    project_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, provider, subject)
);
CREATE INDEX identities_user ON identities(user_id);

-- A session is one refresh-token family: rotation keeps it, reuse or logout revokes it.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id),
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);
