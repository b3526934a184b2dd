//! Group commit: a writer task takes every job waiting at that moment (up to a batch size) and
//! hands them to one write function, which commits them in one transaction and answers each
//! job's caller after COMMIT. Used by the hot write paths (sign-ins, save versions), where one
//! transaction per request is bounded by round trips on SQLite's single writer connection and by
//! the commit flush on PostgreSQL.
//!
//! On PostgreSQL each writer task keeps its pool connection from batch to batch: sqlx 0.8 pings a
//! connection (a round trip the backend must answer) every time it goes back to the pool, so
//! acquiring one per batch cost two extra round trips per transaction. A connection that sat idle
//! for `IDLE_CHECK` is pinged before its next batch (the database may have restarted meanwhile;
//! a batch that fails mid-way cannot always be retried), and a write that hits anything but a
//! database error hands it back, so a broken one is dropped and the next batch takes a fresh one.
//! On SQLite the one writer connection is shared with every other write, so it goes back after
//! each batch.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Any, Connection};
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::db::{Backend, Db};
use crate::error::{ApiError, ApiResult};

/// The writer connection a write function gets, and gives back when it may be used again.
pub type WriterConnection = PoolConnection<Any>;

/// A kept connection idle for longer than this is pinged before its next batch. Under load the
/// batches follow each other closely and skip the ping.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// A job waiting for its batch, and where its answer goes.
pub struct Pending<J, O> {
    pub job: J,
    pub done: oneshot::Sender<ApiResult<O>>,
}

pub struct GroupCommit<J, O> {
    jobs: mpsc::Sender<Pending<J, O>>,
    name: &'static str,
}

impl<J, O> Clone for GroupCommit<J, O> {
    fn clone(&self) -> Self {
        Self {
            jobs: self.jobs.clone(),
            name: self.name,
        }
    }
}

impl<J: Send + 'static, O: Send + 'static> GroupCommit<J, O> {
    /// Starts the writer tasks: one on SQLite (a single writer connection), a few on PostgreSQL
    /// so batches commit in parallel. Each takes up to `max_batch` waiting jobs and runs
    /// `write` on them with a connection of `db.write`; `write` must answer every job, and gives
    /// the connection back unless something other than a database error happened on it. Callers
    /// wait to enqueue once `queue` jobs wait. The tasks end when the last clone is dropped.
    pub fn start<F, Fut>(
        name: &'static str,
        db: &Db,
        max_batch: usize,
        queue: usize,
        write: F,
    ) -> Self
    where
        F: Fn(WriterConnection, Vec<Pending<J, O>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<WriterConnection>> + Send,
    {
        let (jobs, receiver) = mpsc::channel::<Pending<J, O>>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let write = Arc::new(write);
        let writers = match db.backend {
            Backend::Sqlite => 1,
            Backend::Postgres => 4,
        };
        let keep_connection = db.keeps_connections();
        for _ in 0..writers {
            let (receiver, write, pool) = (receiver.clone(), write.clone(), db.write.clone());
            tokio::spawn(async move {
                let mut kept: Option<(WriterConnection, Instant)> = None;
                loop {
                    let mut batch = Vec::with_capacity(max_batch);
                    let received = receiver.lock().await.recv_many(&mut batch, max_batch).await;
                    if received == 0 {
                        return;
                    }
                    let alive = match kept.take() {
                        Some((mut conn, used)) => {
                            let idle = used.elapsed() > IDLE_CHECK;
                            (!idle || conn.ping().await.is_ok()).then_some(conn)
                        }
                        None => None,
                    };
                    let conn = match alive {
                        Some(conn) => conn,
                        None => match pool.acquire().await {
                            Ok(conn) => conn,
                            Err(e) => {
                                let error = ApiError::from(e);
                                for pending in batch {
                                    let _ = pending.done.send(Err(error.clone()));
                                }
                                continue;
                            }
                        },
                    };
                    let returned = write(conn, batch).await;
                    if keep_connection {
                        kept = returned.map(|conn| (conn, Instant::now()));
                    }
                }
            });
        }
        Self { jobs, name }
    }

    /// Queues `job` and waits for its batch to be written.
    pub async fn submit(&self, job: J) -> ApiResult<O> {
        let stopped = || ApiError::internal(format!("{} writer stopped", self.name));
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Pending { job, done })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// Whether a connection that returned `e` can take the next batch: after a database error (a
/// constraint, a serialization failure) the transaction is rolled back and the session is fine,
/// unless the error is about the session itself (SQLSTATE class 08, connection exception, or 57,
/// operator intervention: a terminated backend, a shutdown).
pub fn connection_survives(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => !db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57")),
        _ => false,
    }
}

/// `($1, $2, ...), ($k+1, ...), ...`: `rows` tuples of `per_row` numbered placeholders, each
/// tuple laid out by `tuple` from its placeholders.
pub fn values(rows: usize, per_row: usize, tuple: impl Fn(&[String]) -> String) -> String {
    tuples(rows, per_row, ", ", tuple)
}

/// `values` joined by `separator` (` OR ` for a list of conditions).
pub fn tuples(
    rows: usize,
    per_row: usize,
    separator: &str,
    tuple: impl Fn(&[String]) -> String,
) -> String {
    (0..rows)
        .map(|row| {
            let params: Vec<String> = (1..=per_row)
                .map(|k| format!("${}", row * per_row + k))
                .collect();
            tuple(&params)
        })
        .collect::<Vec<_>>()
        .join(separator)
}
