//! Event storage. Ingestion is group-committed: `EventWriter` writes the batches of every
//! request waiting at that moment in one transaction:
//!
//! 1. read (and on PostgreSQL lock) the senders' consent rows, so a revocation commits either
//!    before the whole ingestion (which is then refused) or after it;
//! 2. one `INSERT … ON CONFLICT DO NOTHING RETURNING event_id` per chunk of events: the primary
//!    key (project, event id) makes a re-sent event a no-op, and RETURNING tells which were new;
//! 3. the rollups (players per day, events per day and name, latest user properties), upserted
//!    from the new events only, so a duplicate never counts twice.
//!
//! Rows are written in key order so two PostgreSQL transactions touching the same keys wait for
//! each other instead of deadlocking.

use std::collections::{BTreeMap, HashMap, HashSet};

use aethex_protocol::analytics::EventKind;
use sqlx::{Any, AnyConnection, Connection, Row, Transaction};

use crate::db::{Backend, Db};
use crate::error::{ApiError, ApiResult};
use crate::group_commit::{connection_survives, values, GroupCommit, Pending, WriterConnection};

/// Most requests written by one transaction.
const MAX_BATCH: usize = 32;
/// Requests waiting for a writer before callers wait to enqueue.
const QUEUE: usize = 4096;
/// Rows per INSERT statement: 13 parameters each stays far below SQLite's 32766.
const ROWS_PER_STATEMENT: usize = 1000;
pub const DAY_MS: i64 = 86_400_000;

/// One validated event, its times already corrected.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub event_id: String,
    pub kind: EventKind,
    pub name: String,
    pub session_id: String,
    pub seq: i64,
    /// JSON object text.
    pub properties: String,
    pub value: Option<f64>,
    pub client_time: i64,
    pub event_time: i64,
    pub server_time: i64,
}

/// One request's events.
#[derive(Debug)]
pub struct Ingest {
    pub project_id: String,
    pub user_id: String,
    pub events: Vec<EventRow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    pub accepted: i64,
    pub duplicates: i64,
}

#[derive(Clone)]
pub struct EventWriter {
    jobs: GroupCommit<Ingest, Ingested>,
}

impl std::fmt::Debug for EventWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventWriter")
    }
}

impl EventWriter {
    /// Starts the writer tasks; they end when the last `EventWriter` is dropped.
    pub fn start(db: &Db) -> Self {
        let backend = db.backend;
        let jobs = GroupCommit::start("analytics", db, MAX_BATCH, QUEUE, move |conn, batch| {
            write_batch(conn, backend, batch)
        });
        Self { jobs }
    }

    /// Stores the events not stored before; 403 `consent_required` when the player has not
    /// consented. Answered after COMMIT.
    pub async fn ingest(&self, ingest: Ingest) -> ApiResult<Ingested> {
        self.jobs.submit(ingest).await
    }
}

enum Failure {
    /// A statement failed: nothing was written.
    Statement(sqlx::Error),
    /// COMMIT failed: the batch may or may not be written.
    Commit(sqlx::Error),
}

type Job = Pending<Ingest, Ingested>;

async fn write_batch(
    mut conn: WriterConnection,
    backend: Backend,
    batch: Vec<Job>,
) -> Option<WriterConnection> {
    let jobs: Vec<&Ingest> = batch.iter().map(|p| &p.job).collect();
    match write(&mut conn, backend, &jobs).await {
        Ok(results) => {
            for (pending, result) in batch.into_iter().zip(results) {
                let _ = pending.done.send(result);
            }
            Some(conn)
        }
        Err(Failure::Commit(e)) => {
            let message = e.to_string();
            for pending in batch {
                let _ = pending.done.send(Err(ApiError::internal(&message)));
            }
            connection_survives(&e).then_some(conn)
        }
        // A statement failed for one request (say its player was deleted meanwhile, failing a
        // user property's foreign key): write each alone so only that one fails.
        Err(Failure::Statement(e)) if batch.len() == 1 => {
            let survives = connection_survives(&e);
            let pending = batch.into_iter().next().expect("one job");
            let _ = pending.done.send(Err(e.into()));
            survives.then_some(conn)
        }
        Err(Failure::Statement(e)) => {
            let mut survives = connection_survives(&e);
            for pending in batch {
                let result = match write(&mut conn, backend, &[&pending.job]).await {
                    Ok(mut results) => results.pop().expect("one result per job"),
                    Err(Failure::Statement(e) | Failure::Commit(e)) => {
                        survives &= connection_survives(&e);
                        Err(e.into())
                    }
                };
                let _ = pending.done.send(result);
            }
            survives.then_some(conn)
        }
    }
}

async fn write(
    conn: &mut AnyConnection,
    backend: Backend,
    jobs: &[&Ingest],
) -> Result<Vec<ApiResult<Ingested>>, Failure> {
    let mut tx = conn.begin().await.map_err(Failure::Statement)?;
    match write_in(&mut tx, backend, jobs).await {
        Ok(results) => {
            tx.commit().await.map_err(Failure::Commit)?;
            let accepted: i64 = results.iter().flatten().map(|r| r.accepted).sum();
            metrics::counter!("aethex_analytics_events_total").increment(accepted as u64);
            Ok(results)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(Failure::Statement(e))
        }
    }
}

/// What the consent rows allow for one player.
#[derive(Clone, Copy)]
struct Permission {
    /// COPPA: store without identifiers, drop user properties.
    anonymous: bool,
}

async fn permissions(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    jobs: &[&Ingest],
) -> sqlx::Result<HashMap<String, Permission>> {
    let users: Vec<&str> = jobs
        .iter()
        .map(|j| j.user_id.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let placeholders = values(users.len(), 1, |p| p[0].clone());
    // Locks the consent rows (in key order) against a concurrent revocation; only the consent
    // table, as PostgreSQL cannot lock the nullable side of the outer join.
    let lock = match backend {
        Backend::Sqlite => "",
        Backend::Postgres => " ORDER BY c.user_id FOR NO KEY UPDATE OF c",
    };
    let sql = format!(
        "SELECT c.user_id, c.project_id, c.granted, c.under_13, COALESCE(s.coppa, 0) AS coppa \
         FROM analytics_consent c LEFT JOIN analytics_settings s ON s.project_id = c.project_id \
         WHERE c.user_id IN ({placeholders}){lock}"
    );
    let mut query = sqlx::query(&sql);
    for user in &users {
        query = query.bind(*user);
    }
    let mut allowed = HashMap::new();
    for row in query.fetch_all(&mut **tx).await? {
        if row.try_get::<i64, _>("granted")? == 0 {
            continue;
        }
        let user: String = row.try_get("user_id")?;
        let project: String = row.try_get("project_id")?;
        let anonymous =
            row.try_get::<i64, _>("under_13")? != 0 || row.try_get::<i64, _>("coppa")? != 0;
        allowed.insert(format!("{project}/{user}"), Permission { anonymous });
    }
    Ok(allowed)
}

/// A row ready for `analytics_events`, tagged with the request it came from.
struct Stored<'a> {
    job: usize,
    project_id: &'a str,
    user_id: Option<&'a str>,
    event: &'a EventRow,
}

async fn write_in(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    jobs: &[&Ingest],
) -> sqlx::Result<Vec<ApiResult<Ingested>>> {
    let allowed = permissions(tx, backend, jobs).await?;
    let mut results: Vec<ApiResult<Ingested>> = Vec::with_capacity(jobs.len());
    // Keyed by (project, event id): an event sent twice in the batch (a client retrying while
    // its first request still waits) is stored once, for the request that came first.
    let mut rows: BTreeMap<(&str, &str), Stored> = BTreeMap::new();
    let mut sent = vec![0i64; jobs.len()];
    let mut accepted = vec![0i64; jobs.len()];
    for (index, job) in jobs.iter().enumerate() {
        let Some(permission) = allowed.get(&format!("{}/{}", job.project_id, job.user_id)) else {
            results.push(Err(super::ingest::consent_required()));
            continue;
        };
        results.push(Ok(Ingested {
            accepted: 0,
            duplicates: 0,
        }));
        sent[index] = job.events.len() as i64;
        for event in &job.events {
            if permission.anonymous && event.kind == EventKind::UserProperty {
                // COPPA: user properties are not stored at all; accepted all the same, so the
                // SDK drops them from its queue.
                accepted[index] += 1;
                continue;
            }
            rows.entry((job.project_id.as_str(), event.event_id.as_str()))
                .or_insert(Stored {
                    job: index,
                    project_id: &job.project_id,
                    user_id: (!permission.anonymous).then_some(job.user_id.as_str()),
                    event,
                });
        }
    }
    let stored: Vec<Stored> = rows.into_values().collect();
    let new = insert_events(tx, &stored).await?;
    let new_rows: Vec<&Stored> = stored
        .iter()
        .filter(|s| {
            new.get(s.project_id)
                .is_some_and(|ids| ids.contains(s.event.event_id.as_str()))
        })
        .collect();
    for row in &new_rows {
        accepted[row.job] += 1;
    }
    update_rollups(tx, &new_rows).await?;
    for (index, result) in results.iter_mut().enumerate() {
        if let Ok(ingested) = result {
            ingested.accepted = accepted[index];
            ingested.duplicates = sent[index] - accepted[index];
        }
    }
    Ok(results)
}

const EVENT_COLUMNS: &str = "project_id, event_id, day, kind, name, user_id, session_id, seq, \
                             properties, value, client_time, event_time, server_time";

/// Event ids per project.
type NewEvents = HashMap<String, HashSet<String>>;

/// Inserts `rows`; returns those not stored before.
async fn insert_events(
    tx: &mut Transaction<'_, Any>,
    rows: &[Stored<'_>],
) -> sqlx::Result<NewEvents> {
    let mut new = NewEvents::new();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO analytics_events ({EVENT_COLUMNS}) VALUES {} \
             ON CONFLICT (project_id, event_id) DO NOTHING RETURNING project_id, event_id",
            values(chunk.len(), 13, |p| format!("({})", p.join(", ")))
        );
        let mut query = sqlx::query(&sql);
        for row in chunk {
            let e = row.event;
            // Anonymous rows carry no session either: a session id links a child's events.
            let session = row.user_id.map(|_| e.session_id.as_str());
            query = query
                .bind(row.project_id)
                .bind(e.event_id.as_str())
                .bind(e.event_time.div_euclid(DAY_MS))
                .bind(e.kind.as_str())
                .bind(e.name.as_str())
                .bind(row.user_id)
                .bind(session)
                .bind(e.seq)
                .bind(e.properties.as_str())
                .bind(e.value)
                .bind(e.client_time)
                .bind(e.event_time)
                .bind(e.server_time);
        }
        for returned in query.fetch_all(&mut **tx).await? {
            new.entry(returned.try_get("project_id")?)
                .or_default()
                .insert(returned.try_get("event_id")?);
        }
    }
    Ok(new)
}

async fn update_rollups(tx: &mut Transaction<'_, Any>, rows: &[&Stored<'_>]) -> sqlx::Result<()> {
    let mut players: BTreeMap<(&str, i64, &str), i64> = BTreeMap::new();
    let mut counts: BTreeMap<(&str, i64, &str, &str), i64> = BTreeMap::new();
    let mut properties: BTreeMap<(&str, &str), (&str, i64)> = BTreeMap::new();
    for row in rows {
        let e = row.event;
        let day = e.event_time.div_euclid(DAY_MS);
        *counts
            .entry((row.project_id, day, e.kind.as_str(), e.name.as_str()))
            .or_default() += 1;
        let Some(user) = row.user_id else { continue };
        *players.entry((row.project_id, day, user)).or_default() += 1;
        if e.kind == EventKind::UserProperty {
            let latest = properties
                .entry((user, e.name.as_str()))
                .or_insert((e.properties.as_str(), e.event_time));
            if e.event_time >= latest.1 {
                *latest = (e.properties.as_str(), e.event_time);
            }
        }
    }
    let players: Vec<_> = players.into_iter().collect();
    for chunk in players.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO analytics_daily_players (project_id, day, user_id, events) VALUES {} \
             ON CONFLICT (project_id, day, user_id) \
             DO UPDATE SET events = analytics_daily_players.events + excluded.events",
            values(chunk.len(), 4, |p| format!("({})", p.join(", ")))
        );
        let mut query = sqlx::query(&sql);
        for ((project, day, user), events) in chunk {
            query = query.bind(*project).bind(*day).bind(*user).bind(*events);
        }
        query.execute(&mut **tx).await?;
    }
    let counts: Vec<_> = counts.into_iter().collect();
    for chunk in counts.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO analytics_daily_counts (project_id, day, kind, name, events) VALUES {} \
             ON CONFLICT (project_id, day, kind, name) \
             DO UPDATE SET events = analytics_daily_counts.events + excluded.events",
            values(chunk.len(), 5, |p| format!("({})", p.join(", ")))
        );
        let mut query = sqlx::query(&sql);
        for ((project, day, kind, name), events) in chunk {
            query = query
                .bind(*project)
                .bind(*day)
                .bind(*kind)
                .bind(*name)
                .bind(*events);
        }
        query.execute(&mut **tx).await?;
    }
    let properties: Vec<_> = properties.into_iter().collect();
    for chunk in properties.chunks(ROWS_PER_STATEMENT) {
        // An older event (queued offline) never overwrites a newer value.
        let sql = format!(
            "INSERT INTO analytics_user_properties (user_id, name, value, event_time) VALUES {} \
             ON CONFLICT (user_id, name) DO UPDATE SET value = excluded.value, \
             event_time = excluded.event_time \
             WHERE excluded.event_time >= analytics_user_properties.event_time",
            values(chunk.len(), 4, |p| format!("({})", p.join(", ")))
        );
        let mut query = sqlx::query(&sql);
        for ((user, name), (value, time)) in chunk {
            query = query.bind(*user).bind(*name).bind(*value).bind(*time);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}
