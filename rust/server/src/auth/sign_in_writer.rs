//! Group commit for the hot session writes: new sessions, device registrations and refresh-token
//! rotations.
//!
//! On SQLite every write goes through one connection, and each statement is a round trip through
//! sqlx's worker thread, so one transaction per sign-in capped device sign-ins at ~1,000-3,000/s
//! on 2 cores (and one per refresh ~2,000/s). Here a writer task takes every job waiting at that
//! moment (up to `MAX_BATCH`) and writes them with one multi-row statement per table in one
//! transaction. Callers are answered only after COMMIT, so an acknowledged sign-in or refresh is
//! exactly as durable as before. When a statement of a batch fails, the batch is rolled back and
//! each job is written again in its own transaction, so one bad job (a taken username, a device
//! registered concurrently) fails alone. The queue and writer tasks are `group_commit`'s.
//!
//! A rotation spends its token with `UPDATE ... WHERE used_at IS NULL RETURNING`: on PostgreSQL
//! a concurrent batch spending the same token waits for the row lock and then finds it spent, so
//! of any number of refreshes presenting one token exactly one wins, in or across batches. The
//! others are reuse: their session is revoked in the same transaction.

use std::collections::HashSet;

use sqlx::{Any, AnyConnection, Connection, Row, Transaction};

use super::{sessions, users};
use crate::db::{is_unique_violation, new_id, Backend, Db};
use crate::error::{ApiError, ApiResult};
use crate::group_commit::{connection_survives, values, GroupCommit, WriterConnection};
use crate::projects::hash_secret;

/// Most jobs written by one transaction.
const MAX_BATCH: usize = 64;
/// Jobs waiting for a writer before callers wait to enqueue.
const QUEUE: usize = 4096;

/// A session opened by a sign-in: the caller returns both to the player.
pub struct OpenedSession {
    pub session_id: String,
    pub refresh_token: String,
}

/// What a refresh-token rotation did.
pub enum Rotation {
    /// The presented token is spent; this is the next one.
    Rotated { refresh_token: String },
    /// The presented token was spent by another refresh first: reuse. Its session is revoked.
    Reused,
}

struct SessionRow {
    id: String,
    project_id: String,
    user_id: String,
}

/// A refresh token to store.
struct TokenRow {
    hash: String,
    session_id: String,
    created_at: i64,
    expires_at: i64,
}

/// A new anonymous account and the device identity leading to it.
struct DeviceUserRow {
    project_id: String,
    username: String,
    device_id: String,
}

enum Job {
    /// A new session with its first refresh token, for a new device account or an existing one.
    SignIn {
        registration: Option<DeviceUserRow>,
        session: SessionRow,
        token: TokenRow,
    },
    /// Spend `spent_hash` and store `next` in its place, unless it was spent already.
    Rotate { spent_hash: String, next: TokenRow },
}

impl Job {
    fn token(&self) -> &TokenRow {
        match self {
            Job::SignIn { token, .. } => token,
            Job::Rotate { next, .. } => next,
        }
    }
}

enum Outcome {
    Written,
    /// The device identity was created concurrently by another sign-in.
    DeviceTaken,
    /// The token to rotate was already spent; its session is now revoked.
    Reused,
}

type Pending = crate::group_commit::Pending<Job, Outcome>;

/// Which statement of a transaction failed, to tell the one job of a retry what went wrong.
enum Failure {
    Users(sqlx::Error),
    Identities(sqlx::Error),
    Other(sqlx::Error),
    /// COMMIT failed: the batch may or may not be written, so it is not retried.
    Commit(sqlx::Error),
}

impl Failure {
    fn error(&self) -> &sqlx::Error {
        match self {
            Failure::Users(e) | Failure::Identities(e) | Failure::Other(e) | Failure::Commit(e) => {
                e
            }
        }
    }
}

#[derive(Clone)]
pub struct SignInWriter {
    jobs: GroupCommit<Job, Outcome>,
    refresh_ttl_ms: i64,
}

impl SignInWriter {
    /// Starts the writer tasks (see `GroupCommit::start`); they end when the last
    /// `SignInWriter` is dropped.
    pub fn start(db: &Db, refresh_ttl_ms: i64) -> Self {
        let backend = db.backend;
        let jobs = GroupCommit::start("sign-in", db, MAX_BATCH, QUEUE, move |conn, batch| {
            write_batch(backend, conn, batch)
        });
        Self {
            jobs,
            refresh_ttl_ms,
        }
    }

    /// A new refresh token of `session_id`: its row and the token itself.
    fn new_token(&self, session_id: &str, now_ms: i64) -> (TokenRow, String) {
        let refresh_token = sessions::new_refresh_token();
        let row = TokenRow {
            hash: hash_secret(&refresh_token),
            session_id: session_id.to_owned(),
            created_at: now_ms,
            expires_at: now_ms + self.refresh_ttl_ms,
        };
        (row, refresh_token)
    }

    async fn submit(&self, job: Job) -> ApiResult<Outcome> {
        self.jobs.submit(job).await
    }

    /// A sign-in job for a new session of `user_id`, and what to answer once it is written.
    fn sign_in(
        &self,
        registration: Option<DeviceUserRow>,
        project_id: &str,
        user_id: &str,
        now_ms: i64,
    ) -> (Job, OpenedSession) {
        let session = SessionRow {
            id: new_id(),
            project_id: project_id.to_owned(),
            user_id: user_id.to_owned(),
        };
        let (token, refresh_token) = self.new_token(&session.id, now_ms);
        let opened = OpenedSession {
            session_id: session.id.clone(),
            refresh_token,
        };
        let job = Job::SignIn {
            registration,
            session,
            token,
        };
        (job, opened)
    }

    /// Opens a session (with its first refresh token) for an existing account.
    pub async fn open_session(
        &self,
        project_id: &str,
        user_id: &str,
        now_ms: i64,
    ) -> ApiResult<OpenedSession> {
        let (job, opened) = self.sign_in(None, project_id, user_id, now_ms);
        self.submit(job).await?;
        Ok(opened)
    }

    /// Creates an account reached by `device_id`, signed in. `Ok(None)` when another sign-in
    /// registered the same device first: the caller signs in to that account instead. A taken
    /// username is a 409 `conflict`.
    pub async fn register_device(
        &self,
        project_id: &str,
        device_id: &str,
        username: &str,
        now_ms: i64,
    ) -> ApiResult<Option<(String, OpenedSession)>> {
        let user_id = new_id();
        let registration = DeviceUserRow {
            project_id: project_id.to_owned(),
            username: username.to_owned(),
            device_id: device_id.to_owned(),
        };
        let (job, opened) = self.sign_in(Some(registration), project_id, &user_id, now_ms);
        // `Reused` only answers rotations.
        Ok(match self.submit(job).await? {
            Outcome::Written | Outcome::Reused => Some((user_id, opened)),
            Outcome::DeviceTaken => None,
        })
    }

    /// Spends the refresh token hashed `spent_hash` of `session_id` and issues the next one; if
    /// another refresh spent it first, revokes the session (the token leaked).
    pub async fn rotate(
        &self,
        spent_hash: &str,
        session_id: &str,
        now_ms: i64,
    ) -> ApiResult<Rotation> {
        let (next, refresh_token) = self.new_token(session_id, now_ms);
        let job = Job::Rotate {
            spent_hash: spent_hash.to_owned(),
            next,
        };
        // `DeviceTaken` only answers registrations.
        Ok(match self.submit(job).await? {
            Outcome::Reused => Rotation::Reused,
            Outcome::Written | Outcome::DeviceTaken => Rotation::Rotated { refresh_token },
        })
    }
}

/// Writes a batch on `conn`; gives it back unless it failed other than with a database error.
async fn write_batch(
    backend: Backend,
    mut conn: WriterConnection,
    mut batch: Vec<Pending>,
) -> Option<WriterConnection> {
    let mut survives = true;
    let whole = {
        let jobs: Vec<&Job> = batch.iter().map(|p| &p.job).collect();
        match one_statement(backend, &jobs) {
            Some(statement) => Some(statement.write(&mut conn).await),
            None if jobs.len() > 1 => Some(write(&mut conn, &jobs).await),
            None => None,
        }
    };
    if let Some(written) = whole {
        match written {
            Ok(outcomes) => {
                for (pending, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = pending.done.send(Ok(outcome));
                }
                return Some(conn);
            }
            Err(Failure::Commit(e)) => {
                let message = e.to_string();
                for pending in batch.drain(..) {
                    let _ = pending.done.send(Err(ApiError::internal(&message)));
                }
                return connection_survives(&e).then_some(conn);
            }
            // Some job broke the batch: find which by writing each alone.
            Err(failure) => survives = connection_survives(failure.error()),
        }
    }
    for pending in batch.drain(..) {
        let written = write(&mut conn, &[&pending.job]).await;
        if let Err(failure) = &written {
            survives &= connection_survives(failure.error());
        }
        let outcome = match written {
            Ok(mut outcomes) => Ok(outcomes.pop().unwrap_or(Outcome::Written)),
            Err(Failure::Identities(e)) if is_unique_violation(&e) => Ok(Outcome::DeviceTaken),
            Err(Failure::Users(e)) => {
                let username = match &pending.job {
                    Job::SignIn {
                        registration: Some(r),
                        ..
                    } => r.username.as_str(),
                    _ => "",
                };
                Err(users::user_conflict(e, username))
            }
            Err(Failure::Identities(e) | Failure::Other(e) | Failure::Commit(e)) => Err(e.into()),
        };
        let _ = pending.done.send(outcome);
    }
    survives.then_some(conn)
}

/// Writes `jobs` in one transaction; returns each one's outcome.
async fn write(conn: &mut AnyConnection, jobs: &[&Job]) -> Result<Vec<Outcome>, Failure> {
    let mut tx = conn.begin().await.map_err(Failure::Other)?;
    match write_rows(&mut tx, jobs).await {
        Ok(outcomes) => {
            tx.commit().await.map_err(Failure::Commit)?;
            Ok(outcomes)
        }
        Err(failure) => {
            let _ = tx.rollback().await;
            Err(failure)
        }
    }
}

/// A whole batch as one statement, on PostgreSQL, for the two batches the hot paths make: only
/// sign-ins, or only rotations of distinct tokens. A single statement commits by itself, so the
/// batch is one round trip instead of BEGIN, two to four statements and COMMIT; its rows travel
/// as JSON arrays, so the statement's text (and its prepared statement and plan) is the same
/// whatever the batch size. Data-modifying `WITH` parts run in one snapshot and the foreign keys
/// are checked at the end of the statement, so sessions and tokens can go in together.
enum OneStatement {
    SignIns {
        jobs: usize,
        users: String,
        sessions: String,
        tokens: String,
    },
    Rotations {
        now: i64,
        rotations: String,
        /// The spent hash of each job, in order.
        spent: Vec<String>,
    },
}

#[derive(serde::Serialize)]
struct UserJson<'a> {
    user_id: &'a str,
    project_id: &'a str,
    username: &'a str,
    username_lower: String,
    username_skeleton: String,
    device_id: &'a str,
    created_at: i64,
}

#[derive(serde::Serialize)]
struct SessionJson<'a> {
    id: &'a str,
    project_id: &'a str,
    user_id: &'a str,
    created_at: i64,
}

#[derive(serde::Serialize)]
struct TokenJson<'a> {
    /// The token this one replaces (rotations).
    #[serde(skip_serializing_if = "Option::is_none")]
    spent: Option<&'a str>,
    token_hash: &'a str,
    session_id: &'a str,
    created_at: i64,
    expires_at: i64,
}

impl<'a> TokenJson<'a> {
    fn new(token: &'a TokenRow, spent: Option<&'a str>) -> Self {
        Self {
            spent,
            token_hash: &token.hash,
            session_id: &token.session_id,
            created_at: token.created_at,
            expires_at: token.expires_at,
        }
    }
}

fn json<T: serde::Serialize>(rows: &[T]) -> String {
    serde_json::to_string(rows).expect("rows of strings and integers serialize")
}

/// The batch as one statement, when it is one of the two kinds that fit (see `OneStatement`).
fn one_statement(backend: Backend, jobs: &[&Job]) -> Option<OneStatement> {
    if backend != Backend::Postgres {
        return None;
    }
    if jobs.iter().all(|job| matches!(job, Job::SignIn { .. })) {
        let (mut users, mut sessions, mut tokens) = (Vec::new(), Vec::new(), Vec::new());
        for job in jobs {
            let Job::SignIn {
                registration,
                session,
                token,
            } = job
            else {
                continue;
            };
            if let Some(user) = registration {
                users.push(UserJson {
                    user_id: &session.user_id,
                    project_id: &user.project_id,
                    username: &user.username,
                    username_lower: user.username.to_lowercase(),
                    username_skeleton: users::username_skeleton(&user.username),
                    device_id: &user.device_id,
                    created_at: token.created_at,
                });
            }
            sessions.push(SessionJson {
                id: &session.id,
                project_id: &session.project_id,
                user_id: &session.user_id,
                created_at: token.created_at,
            });
            tokens.push(TokenJson::new(token, None));
        }
        return Some(OneStatement::SignIns {
            jobs: jobs.len(),
            users: json(&users),
            sessions: json(&sessions),
            tokens: json(&tokens),
        });
    }
    let mut spent = Vec::with_capacity(jobs.len());
    let mut rotations = Vec::with_capacity(jobs.len());
    for job in jobs {
        let Job::Rotate { spent_hash, next } = job else {
            return None;
        };
        // Two rotations of one token in a batch: the first wins, which needs the transaction.
        if spent.contains(spent_hash) {
            return None;
        }
        spent.push(spent_hash.clone());
        rotations.push(TokenJson::new(next, Some(spent_hash)));
    }
    Some(OneStatement::Rotations {
        now: rotations
            .iter()
            .map(|r| r.created_at)
            .max()
            .unwrap_or_default(),
        rotations: json(&rotations),
        spent,
    })
}

const SIGN_INS_SQL: &str = "\
WITH new_users AS (
  INSERT INTO users (id, project_id, username, username_lower, username_skeleton, preferences, created_at, updated_at)
  SELECT user_id, project_id, username, username_lower, username_skeleton, '{}', created_at, created_at
  FROM json_to_recordset($1::json) AS r(user_id text, project_id text, username text, username_lower text, username_skeleton text, device_id text, created_at bigint)
  RETURNING id
), new_identities AS (
  INSERT INTO identities (project_id, provider, subject, user_id, created_at)
  SELECT project_id, $4, device_id, user_id, created_at
  FROM json_to_recordset($1::json) AS r(user_id text, project_id text, device_id text, created_at bigint)
  RETURNING user_id
), new_sessions AS (
  INSERT INTO sessions (id, project_id, user_id, created_at)
  SELECT id, project_id, user_id, created_at
  FROM json_to_recordset($2::json) AS s(id text, project_id text, user_id text, created_at bigint)
  RETURNING id
)
INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at)
SELECT token_hash, session_id, created_at, expires_at
FROM json_to_recordset($3::json) AS t(token_hash text, session_id text, created_at bigint, expires_at bigint)";

/// Spends the presented tokens still unspent (the row lock makes a concurrent batch wait and
/// then find them spent), stores the next token of each one spent, revokes the session of each
/// one that was not (reuse), and returns the spent hashes. `= ANY (ARRAY(...))` makes both
/// updates index lookups: with `IN (SELECT ...)` the planner scanned all of `refresh_tokens`,
/// taking `used_at IS NULL` for very selective.
const ROTATIONS_SQL: &str = "\
WITH r AS (
  SELECT * FROM json_to_recordset($2::json) AS r(spent text, token_hash text, session_id text, created_at bigint, expires_at bigint)
), spent AS (
  UPDATE refresh_tokens SET used_at = $1
  WHERE used_at IS NULL AND token_hash = ANY (ARRAY(SELECT spent FROM r))
  RETURNING token_hash
), next AS (
  INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at)
  SELECT r.token_hash, r.session_id, r.created_at, r.expires_at FROM r JOIN spent ON spent.token_hash = r.spent
  RETURNING token_hash
), revoked AS (
  UPDATE sessions SET revoked_at = $1
  WHERE revoked_at IS NULL
    AND id = ANY (ARRAY(SELECT session_id FROM r WHERE spent NOT IN (SELECT token_hash FROM spent)))
  RETURNING id
)
SELECT token_hash FROM spent";

impl OneStatement {
    /// Runs the statement (committed when it returns); a failure other than a database error
    /// may have committed, so it is a `Commit` failure.
    async fn write(&self, conn: &mut AnyConnection) -> Result<Vec<Outcome>, Failure> {
        let failed = |e: sqlx::Error| {
            if connection_survives(&e) {
                Failure::Other(e)
            } else {
                Failure::Commit(e)
            }
        };
        match self {
            OneStatement::SignIns {
                jobs,
                users,
                sessions,
                tokens,
            } => {
                sqlx::query(SIGN_INS_SQL)
                    .bind(users)
                    .bind(sessions)
                    .bind(tokens)
                    .bind(super::device::PROVIDER)
                    .execute(&mut *conn)
                    .await
                    .map_err(failed)?;
                Ok((0..*jobs).map(|_| Outcome::Written).collect())
            }
            OneStatement::Rotations {
                now,
                rotations,
                spent,
            } => {
                let rows = sqlx::query(ROTATIONS_SQL)
                    .bind(*now)
                    .bind(rotations)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(failed)?;
                let mut spent_now = HashSet::with_capacity(rows.len());
                for row in rows {
                    spent_now.insert(row.try_get::<String, _>(0).map_err(Failure::Commit)?);
                }
                Ok(spent
                    .iter()
                    .map(|hash| {
                        if spent_now.contains(hash) {
                            Outcome::Written
                        } else {
                            Outcome::Reused
                        }
                    })
                    .collect())
            }
        }
    }
}

/// `$first, $first+1, ...`: `count` placeholders for an `IN (...)` list.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|k| format!("${k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn write_rows(tx: &mut Transaction<'_, Any>, jobs: &[&Job]) -> Result<Vec<Outcome>, Failure> {
    let mut outcomes: Vec<Outcome> = jobs.iter().map(|_| Outcome::Written).collect();
    let mut registrations = Vec::new();
    let mut new_sessions = Vec::new();
    let mut rotations = Vec::new();
    for (index, job) in jobs.iter().enumerate() {
        match job {
            Job::SignIn {
                registration,
                session,
                ..
            } => {
                if let Some(user) = registration {
                    registrations.push((user, session, job.token().created_at));
                }
                new_sessions.push((session, job.token().created_at));
            }
            Job::Rotate { spent_hash, next } => rotations.push((index, spent_hash, next)),
        }
    }

    if !registrations.is_empty() {
        let sql = format!(
            "INSERT INTO users (id, project_id, username, username_lower, username_skeleton, preferences, created_at, updated_at) VALUES {}",
            values(registrations.len(), 6, |p| format!(
                "({}, {}, {}, {}, {}, '{{}}', {}, {})",
                p[0], p[1], p[2], p[3], p[4], p[5], p[5]
            ))
        );
        let mut query = sqlx::query(&sql);
        for (user, session, created_at) in &registrations {
            query = query
                .bind(&session.user_id)
                .bind(&user.project_id)
                .bind(&user.username)
                .bind(user.username.to_lowercase())
                .bind(users::username_skeleton(&user.username))
                .bind(*created_at);
        }
        query.execute(&mut **tx).await.map_err(Failure::Users)?;

        let sql = format!(
            "INSERT INTO identities (project_id, provider, subject, user_id, created_at) VALUES {}",
            values(registrations.len(), 5, |p| format!(
                "({}, {}, {}, {}, {})",
                p[0], p[1], p[2], p[3], p[4]
            ))
        );
        let mut query = sqlx::query(&sql);
        for (user, session, created_at) in &registrations {
            query = query
                .bind(&user.project_id)
                .bind(super::device::PROVIDER)
                .bind(&user.device_id)
                .bind(&session.user_id)
                .bind(*created_at);
        }
        query
            .execute(&mut **tx)
            .await
            .map_err(Failure::Identities)?;
    }

    if !new_sessions.is_empty() {
        let sql = format!(
            "INSERT INTO sessions (id, project_id, user_id, created_at) VALUES {}",
            values(new_sessions.len(), 4, |p| format!(
                "({}, {}, {}, {})",
                p[0], p[1], p[2], p[3]
            ))
        );
        let mut query = sqlx::query(&sql);
        for (session, created_at) in &new_sessions {
            query = query
                .bind(&session.id)
                .bind(&session.project_id)
                .bind(&session.user_id)
                .bind(*created_at);
        }
        query.execute(&mut **tx).await.map_err(Failure::Other)?;
    }

    let mut spent_in_batch = HashSet::new();
    if !rotations.is_empty() {
        let now = rotations
            .iter()
            .map(|(_, _, next)| next.created_at)
            .max()
            .unwrap_or_default();
        let sql = format!(
            "UPDATE refresh_tokens SET used_at = $1 WHERE used_at IS NULL AND token_hash IN ({}) RETURNING token_hash",
            placeholders(2, rotations.len())
        );
        let mut query = sqlx::query(&sql).bind(now);
        for (_, spent_hash, _) in &rotations {
            query = query.bind(spent_hash.as_str());
        }
        let mut unspent = HashSet::new();
        for row in query.fetch_all(&mut **tx).await.map_err(Failure::Other)? {
            unspent.insert(row.try_get::<String, _>(0).map_err(Failure::Other)?);
        }
        // Of several rotations of one token in this batch, the first wins; the rest are reuse.
        let mut reused_sessions = Vec::new();
        for (index, spent_hash, next) in &rotations {
            if unspent.remove(spent_hash.as_str()) {
                spent_in_batch.insert(*index);
            } else {
                outcomes[*index] = Outcome::Reused;
                reused_sessions.push(next.session_id.as_str());
            }
        }
        if !reused_sessions.is_empty() {
            let sql = format!(
                "UPDATE sessions SET revoked_at = $1 WHERE revoked_at IS NULL AND id IN ({})",
                placeholders(2, reused_sessions.len())
            );
            let mut query = sqlx::query(&sql).bind(now);
            for session_id in reused_sessions {
                query = query.bind(session_id);
            }
            query.execute(&mut **tx).await.map_err(Failure::Other)?;
        }
    }

    let tokens: Vec<&TokenRow> = jobs
        .iter()
        .enumerate()
        .filter(|(index, job)| matches!(job, Job::SignIn { .. }) || spent_in_batch.contains(index))
        .map(|(_, job)| job.token())
        .collect();
    if !tokens.is_empty() {
        let sql = format!(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at) VALUES {}",
            values(tokens.len(), 4, |p| format!(
                "({}, {}, {}, {})",
                p[0], p[1], p[2], p[3]
            ))
        );
        let mut query = sqlx::query(&sql);
        for token in tokens {
            query = query
                .bind(&token.hash)
                .bind(&token.session_id)
                .bind(token.created_at)
                .bind(token.expires_at);
        }
        query.execute(&mut **tx).await.map_err(Failure::Other)?;
    }
    Ok(outcomes)
}
