CREATE TABLE projects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    client_key TEXT NOT NULL UNIQUE,
    server_key_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

-- Token signing keys live in the database so every node of a cluster signs and verifies alike.
CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    private_pkcs8 BYTEA NOT NULL,
    public_raw BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
