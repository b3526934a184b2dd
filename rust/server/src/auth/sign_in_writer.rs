//! Group commit for the hot sign-in writes (new sessions, device registrations).
//!
//! On SQLite every write goes through one connection, and each statement is a round trip through
//! sqlx's worker thread, so one transaction per sign-in capped device sign-ins at ~1,000-3,000/s
//! on 2 cores. Here a writer task takes every sign-in waiting at that moment (up to
//! `MAX_BATCH`) and writes them with one multi-row INSERT per table in one transaction. Callers
//! are answered only after COMMIT, so an acknowledged sign-in is exactly as durable as before.
//! When a statement of a batch fails, the batch is rolled back and each job is written again in
//! its own transaction, so one bad job (a taken username, a device registered concurrently) fails
//! alone. The queue and writer tasks are `group_commit`'s.

use sqlx::{Any, AnyPool, Transaction};

use super::{sessions, users};
use crate::db::{is_unique_violation, new_id, Db};
use crate::error::{ApiError, ApiResult};
use crate::group_commit::{values, GroupCommit};
use crate::projects::hash_secret;

/// Most sign-ins written by one transaction.
const MAX_BATCH: usize = 64;
/// Sign-ins waiting for a writer before callers wait to enqueue.
const QUEUE: usize = 4096;

/// A session opened by a sign-in: the caller returns both to the player.
pub struct OpenedSession {
    pub session_id: String,
    pub refresh_token: String,
}

struct SessionRow {
    id: String,
    project_id: String,
    user_id: String,
    refresh_hash: String,
    created_at: i64,
    expires_at: i64,
}

/// A new anonymous account and the device identity leading to it.
struct DeviceUserRow {
    project_id: String,
    username: String,
    device_id: String,
}

struct Job {
    registration: Option<DeviceUserRow>,
    session: SessionRow,
}

enum Outcome {
    Written,
    /// The device identity was created concurrently by another sign-in.
    DeviceTaken,
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

#[derive(Clone)]
pub struct SignInWriter {
    jobs: GroupCommit<Job, Outcome>,
    refresh_ttl_ms: i64,
}

impl SignInWriter {
    /// Starts the writer tasks (see `GroupCommit::start`); they end when the last
    /// `SignInWriter` is dropped.
    pub fn start(db: &Db, refresh_ttl_ms: i64) -> Self {
        let pool = db.write.clone();
        let jobs = GroupCommit::start("sign-in", db.backend, MAX_BATCH, QUEUE, move |batch| {
            write_batch(pool.clone(), batch)
        });
        Self {
            jobs,
            refresh_ttl_ms,
        }
    }

    fn new_session(&self, project_id: &str, user_id: &str, now_ms: i64) -> (SessionRow, String) {
        let refresh_token = sessions::new_refresh_token();
        let row = SessionRow {
            id: new_id(),
            project_id: project_id.to_owned(),
            user_id: user_id.to_owned(),
            refresh_hash: hash_secret(&refresh_token),
            created_at: now_ms,
            expires_at: now_ms + self.refresh_ttl_ms,
        };
        (row, refresh_token)
    }

    async fn submit(&self, job: Job) -> ApiResult<Outcome> {
        self.jobs.submit(job).await
    }

    /// Opens a session (with its first refresh token) for an existing account.
    pub async fn open_session(
        &self,
        project_id: &str,
        user_id: &str,
        now_ms: i64,
    ) -> ApiResult<OpenedSession> {
        let (session, refresh_token) = self.new_session(project_id, user_id, now_ms);
        let session_id = session.id.clone();
        self.submit(Job {
            registration: None,
            session,
        })
        .await?;
        Ok(OpenedSession {
            session_id,
            refresh_token,
        })
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
        let (session, refresh_token) = self.new_session(project_id, &user_id, now_ms);
        let session_id = session.id.clone();
        let job = Job {
            registration: Some(DeviceUserRow {
                project_id: project_id.to_owned(),
                username: username.to_owned(),
                device_id: device_id.to_owned(),
            }),
            session,
        };
        Ok(match self.submit(job).await? {
            Outcome::Written => Some((
                user_id,
                OpenedSession {
                    session_id,
                    refresh_token,
                },
            )),
            Outcome::DeviceTaken => None,
        })
    }
}

async fn write_batch(pool: AnyPool, mut batch: Vec<Pending>) {
    let pool = &pool;
    if batch.len() > 1 {
        let jobs: Vec<&Job> = batch.iter().map(|p| &p.job).collect();
        match write(pool, &jobs).await {
            Ok(()) => {
                for pending in batch.drain(..) {
                    let _ = pending.done.send(Ok(Outcome::Written));
                }
                return;
            }
            Err(Failure::Commit(e)) => {
                let message = e.to_string();
                for pending in batch.drain(..) {
                    let _ = pending.done.send(Err(ApiError::internal(&message)));
                }
                return;
            }
            // Some job broke the batch: find which by writing each alone.
            Err(_) => {}
        }
    }
    for pending in batch.drain(..) {
        let outcome = match write(pool, &[&pending.job]).await {
            Ok(()) => Ok(Outcome::Written),
            Err(Failure::Identities(e)) if is_unique_violation(&e) => Ok(Outcome::DeviceTaken),
            Err(Failure::Users(e)) => {
                let username = pending
                    .job
                    .registration
                    .as_ref()
                    .map_or("", |r| r.username.as_str());
                Err(users::user_conflict(e, username))
            }
            Err(Failure::Identities(e) | Failure::Other(e) | Failure::Commit(e)) => Err(e.into()),
        };
        let _ = pending.done.send(outcome);
    }
}

/// Writes `jobs` in one transaction.
async fn write(pool: &AnyPool, jobs: &[&Job]) -> Result<(), Failure> {
    let mut tx = pool.begin().await.map_err(Failure::Other)?;
    match insert_rows(&mut tx, jobs).await {
        Ok(()) => tx.commit().await.map_err(Failure::Commit),
        Err(failure) => {
            let _ = tx.rollback().await;
            Err(failure)
        }
    }
}

async fn insert_rows(tx: &mut Transaction<'static, Any>, jobs: &[&Job]) -> Result<(), Failure> {
    let registrations: Vec<(&DeviceUserRow, &SessionRow)> = jobs
        .iter()
        .filter_map(|j| j.registration.as_ref().map(|r| (r, &j.session)))
        .collect();
    if !registrations.is_empty() {
        let sql = format!(
            "INSERT INTO users (id, project_id, username, username_lower, username_skeleton, preferences, created_at, updated_at) VALUES {}",
            values(registrations.len(), 6, |p| format!(
                "({}, {}, {}, {}, {}, '{{}}', {}, {})",
                p[0], p[1], p[2], p[3], p[4], p[5], p[5]
            ))
        );
        let mut query = sqlx::query(&sql);
        for (user, session) in &registrations {
            query = query
                .bind(&session.user_id)
                .bind(&user.project_id)
                .bind(&user.username)
                .bind(user.username.to_lowercase())
                .bind(users::username_skeleton(&user.username))
                .bind(session.created_at);
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
        for (user, session) in &registrations {
            query = query
                .bind(&user.project_id)
                .bind(super::device::PROVIDER)
                .bind(&user.device_id)
                .bind(&session.user_id)
                .bind(session.created_at);
        }
        query
            .execute(&mut **tx)
            .await
            .map_err(Failure::Identities)?;
    }

    let sql = format!(
        "INSERT INTO sessions (id, project_id, user_id, created_at) VALUES {}",
        values(jobs.len(), 4, |p| format!(
            "({}, {}, {}, {})",
            p[0], p[1], p[2], p[3]
        ))
    );
    let mut query = sqlx::query(&sql);
    for job in jobs {
        let s = &job.session;
        query = query
            .bind(&s.id)
            .bind(&s.project_id)
            .bind(&s.user_id)
            .bind(s.created_at);
    }
    query.execute(&mut **tx).await.map_err(Failure::Other)?;

    let sql = format!(
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at) VALUES {}",
        values(jobs.len(), 4, |p| format!(
            "({}, {}, {}, {})",
            p[0], p[1], p[2], p[3]
        ))
    );
    let mut query = sqlx::query(&sql);
    for job in jobs {
        let s = &job.session;
        query = query
            .bind(&s.refresh_hash)
            .bind(&s.id)
            .bind(s.created_at)
            .bind(s.expires_at);
    }
    query.execute(&mut **tx).await.map_err(Failure::Other)?;
    Ok(())
}
