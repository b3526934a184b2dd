//! Group commit: a writer task takes every job waiting at that moment (up to a batch size) and
//! hands them to one write function, which commits them in one transaction and answers each
//! job's caller after COMMIT. Used by the hot write paths (sign-ins, save versions), where one
//! transaction per request is bounded by round trips on SQLite's single writer connection and by
//! the commit flush on PostgreSQL.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use crate::db::Backend;
use crate::error::{ApiError, ApiResult};

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
    /// `write` on them, which must answer every job. Callers wait to enqueue once `queue` jobs
    /// wait. The tasks end when the last clone is dropped.
    pub fn start<F, Fut>(
        name: &'static str,
        backend: Backend,
        max_batch: usize,
        queue: usize,
        write: F,
    ) -> Self
    where
        F: Fn(Vec<Pending<J, O>>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let (jobs, receiver) = mpsc::channel(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let write = Arc::new(write);
        let writers = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => 4,
        };
        for _ in 0..writers {
            let (receiver, write) = (receiver.clone(), write.clone());
            tokio::spawn(async move {
                loop {
                    let mut batch = Vec::with_capacity(max_batch);
                    let received = receiver.lock().await.recv_many(&mut batch, max_batch).await;
                    if received == 0 {
                        return;
                    }
                    write(batch).await;
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
