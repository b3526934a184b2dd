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
CREATE INDEX sessions_revoked ON sessions(revoked_at);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);

-- Single-use mailed secrets (email verification, password reset), stored as SHA-256 only.
-- `email` is the address a verification was sent to: it only verifies while still current.
CREATE TABLE auth_tokens (
    token_hash TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users(id),
    email TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX auth_tokens_user ON auth_tokens(user_id);

-- Every mail the server sends, also when SMTP is configured: the operator's record and, without
-- SMTP, the only delivery. `sent_at` is set once the SMTP server accepted it.
CREATE TABLE mail_outbox (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    to_addr TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    sent_at BIGINT,
    error TEXT
);

-- Server-wide secrets shared by every node (e.g. the captcha HMAC key).
CREATE TABLE auth_secrets (
    name TEXT PRIMARY KEY,
    secret BYTEA NOT NULL
);

-- Solved captcha challenges, remembered until they expire so each one works once.
CREATE TABLE captcha_used (
    challenge_hash TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX captcha_used_expiry ON captcha_used(expires_at);
