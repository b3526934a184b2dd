-- Sessions are only looked up by revocation time among revoked ones (`revoked_at > $1`, which
-- implies NOT NULL, so both planners use this index); live sessions need no entry, which spares
-- every sign-in an index insert.
DROP INDEX sessions_revoked;
CREATE INDEX sessions_revoked ON sessions(revoked_at) WHERE revoked_at IS NOT NULL;
