//! The SQL side of saves: version rows, per-player usage, and the transaction that makes new
//! versions visible (precondition, quota, insert, retention) atomically.
//!
//! New versions are group-committed: `VersionWriter` writes every change waiting at that moment
//! in one transaction of a fixed number of statements (lock the players' usage rows, read the
//! slots' current versions, then one INSERT, one DELETE for retention, one usage UPDATE), deciding
//! each change's precondition and quota in order in between, as if they had committed one after
//! the other. Each caller is answered after COMMIT.

use std::borrow::Cow;
use std::collections::HashMap;

use aethex_protocol::saves::{SaveConflictDetails, SaveSlotInfo, SaveVersionInfo};
use aethex_protocol::ErrorCode;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, AnyPool, Connection, Row, Transaction};

use crate::db::{is_unique_violation, Backend, Db};
use crate::error::{ApiError, ApiResult};
use crate::group_commit::{connection_survives, tuples, values, GroupCommit, WriterConnection};

/// Most changes written by one transaction.
const MAX_BATCH: usize = 64;
/// Changes waiting for a writer before callers wait to enqueue.
const QUEUE: usize = 4096;

const COLUMNS: &str =
    "slot, version, kind, size, checksum, metadata, blob_key, restored_from, created_at";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Write,
    Restore,
    Delete,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Write => "write",
            Kind::Restore => "restore",
            Kind::Delete => "delete",
        }
    }
}

/// One stored version of a slot.
#[derive(Debug, Clone)]
pub struct VersionRow {
    pub slot: String,
    pub version: i64,
    pub kind: String,
    pub size: i64,
    pub checksum: String,
    /// JSON object text.
    pub metadata: String,
    /// `None` for deletions.
    pub blob_key: Option<String>,
    pub restored_from: Option<i64>,
    pub created_at: i64,
}

impl VersionRow {
    fn from_row(row: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            slot: row.try_get("slot")?,
            version: row.try_get("version")?,
            kind: row.try_get("kind")?,
            size: row.try_get("size")?,
            checksum: row.try_get("checksum")?,
            metadata: row.try_get("metadata")?,
            blob_key: row.try_get("blob_key")?,
            restored_from: row.try_get("restored_from")?,
            created_at: row.try_get("created_at")?,
        })
    }

    pub fn is_delete(&self) -> bool {
        self.kind == Kind::Delete.as_str()
    }

    fn metadata_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.metadata).unwrap_or_else(|_| serde_json::json!({}))
    }

    pub fn slot_info(&self) -> SaveSlotInfo {
        SaveSlotInfo {
            slot: self.slot.clone(),
            version: self.version,
            size: self.size,
            updated_at: self.created_at,
            checksum: self.checksum.clone(),
            metadata: self.metadata_value(),
        }
    }

    pub fn version_info(&self) -> SaveVersionInfo {
        SaveVersionInfo {
            slot: self.slot.clone(),
            version: self.version,
            size: self.size,
            created_at: self.created_at,
            checksum: self.checksum.clone(),
            metadata: self.metadata_value(),
            kind: self.kind.clone(),
            restored_from: self.restored_from,
        }
    }
}

/// What must hold about the slot's current version for a change to apply.
#[derive(Debug, Clone, Copy)]
pub enum Precondition {
    /// Writes: the current version must be this one; `0` = the slot is absent or deleted.
    Base(i64),
    /// Deletes: the slot must exist (404 otherwise) and, when given, be at this version.
    Exists(Option<i64>),
    /// Restores without a base version.
    None,
}

impl Precondition {
    /// Checks against the current version; mismatches are 409 `save_conflict` (404 for a
    /// delete of a missing slot).
    pub fn check(self, latest: Option<&VersionRow>) -> ApiResult<()> {
        let current = latest.map_or(0, |r| r.version);
        let deleted = latest.is_none_or(VersionRow::is_delete);
        match self {
            Precondition::Base(base) if base == current || (base == 0 && deleted) => Ok(()),
            Precondition::Base(_) => Err(conflict(latest)),
            Precondition::Exists(_) if deleted => Err(ApiError::not_found("no such save slot")),
            Precondition::Exists(Some(expected)) if expected != current => Err(conflict(latest)),
            Precondition::Exists(_) | Precondition::None => Ok(()),
        }
    }
}

/// 409 `save_conflict` carrying the current version, so the client can merge or accept it.
pub fn conflict(latest: Option<&VersionRow>) -> ApiError {
    metrics::counter!("aethex_save_conflicts_total").increment(1);
    let details = SaveConflictDetails {
        current: latest.filter(|r| !r.is_delete()).map(VersionRow::slot_info),
        current_version: latest.map_or(0, |r| r.version),
    };
    ApiError::new(
        ErrorCode::SaveConflict,
        "the slot changed since base_version; nothing was overwritten",
    )
    .with_details(serde_json::to_value(details).unwrap_or_default())
}

/// A version about to be committed; its blob (if any) is already stored.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub kind: Kind,
    pub size: i64,
    pub checksum: String,
    pub metadata: String,
    pub blob_key: Option<String>,
    pub restored_from: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub history_versions: i64,
    pub user_quota_bytes: i64,
}

pub struct Committed {
    pub row: VersionRow,
    /// Blobs of versions pruned by retention, to delete now that the commit is durable.
    pub pruned_blobs: Vec<String>,
}

pub async fn latest(pool: &AnyPool, user_id: &str, slot: &str) -> ApiResult<Option<VersionRow>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM save_versions WHERE user_id = $1 AND slot = $2 \
         ORDER BY version DESC LIMIT 1"
    ))
    .bind(user_id)
    .bind(slot)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(VersionRow::from_row).transpose()?)
}

pub async fn version(
    pool: &AnyPool,
    user_id: &str,
    slot: &str,
    version: i64,
) -> ApiResult<Option<VersionRow>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM save_versions WHERE user_id = $1 AND slot = $2 AND version = $3"
    ))
    .bind(user_id)
    .bind(slot)
    .bind(version)
    .fetch_optional(pool)
    .await?;
    Ok(row.as_ref().map(VersionRow::from_row).transpose()?)
}

/// The current version of every slot that is not deleted, by slot name.
pub async fn current_slots(pool: &AnyPool, user_id: &str) -> ApiResult<Vec<VersionRow>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM save_versions v WHERE v.user_id = $1 AND v.kind <> 'delete' \
         AND v.version = (SELECT MAX(w.version) FROM save_versions w \
                          WHERE w.user_id = v.user_id AND w.slot = v.slot) \
         ORDER BY v.slot"
    ))
    .bind(user_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(VersionRow::from_row)
        .collect::<Result<_, _>>()?)
}

/// Kept versions, newest first (one slot, or every slot).
pub async fn history(
    pool: &AnyPool,
    user_id: &str,
    slot: Option<&str>,
) -> ApiResult<Vec<VersionRow>> {
    let rows = match slot {
        Some(slot) => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM save_versions WHERE user_id = $1 AND slot = $2 \
                 ORDER BY version DESC"
            ))
            .bind(user_id)
            .bind(slot)
            .fetch_all(pool)
            .await?
        }
        None => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM save_versions WHERE user_id = $1 \
                 ORDER BY created_at DESC, slot, version DESC"
            ))
            .bind(user_id)
            .fetch_all(pool)
            .await?
        }
    };
    Ok(rows
        .iter()
        .map(VersionRow::from_row)
        .collect::<Result<_, _>>()?)
}

pub async fn used_bytes(pool: &AnyPool, user_id: &str) -> ApiResult<i64> {
    let used = sqlx::query("SELECT used_bytes FROM save_usage WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await?
        .map(|r| r.try_get::<i64, _>("used_bytes"))
        .transpose()?;
    Ok(used.unwrap_or(0))
}

pub async fn user_in_project(pool: &AnyPool, user_id: &str, project_id: &str) -> ApiResult<bool> {
    Ok(
        sqlx::query("SELECT 1 AS present FROM users WHERE id = $1 AND project_id = $2")
            .bind(user_id)
            .bind(project_id)
            .fetch_optional(pool)
            .await?
            .is_some(),
    )
}

/// A change waiting to become its slot's next version.
pub struct Change {
    pub user_id: String,
    pub slot: String,
    pub precondition: Precondition,
    pub new: NewVersion,
    pub now_ms: i64,
}

type Pending = crate::group_commit::Pending<Change, Committed>;

/// Commits save versions in batches (see the module doc).
#[derive(Clone)]
pub struct VersionWriter {
    jobs: GroupCommit<Change, Committed>,
}

impl std::fmt::Debug for VersionWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VersionWriter")
    }
}

impl VersionWriter {
    /// Starts the writer tasks; they end when the last `VersionWriter` is dropped.
    pub fn start(db: &Db, limits: Limits) -> Self {
        let (read, backend) = (db.read.clone(), db.backend);
        let jobs = GroupCommit::start("save", db, MAX_BATCH, QUEUE, move |conn, batch| {
            write_batch(conn, read.clone(), backend, limits, batch)
        });
        Self { jobs }
    }

    /// Makes `change.new` the slot's next version if its precondition and the quota allow:
    /// 409 `save_conflict` / 404 / 413 `quota_exceeded` otherwise. Answered after COMMIT.
    pub async fn commit(&self, change: Change) -> ApiResult<Committed> {
        self.jobs.submit(change).await
    }
}

enum Failure {
    /// A statement failed: nothing was written.
    Statement(sqlx::Error),
    /// COMMIT failed: the batch may or may not be written.
    Commit(sqlx::Error),
}

/// Writes a batch on `conn`; gives it back unless it failed other than with a database error.
async fn write_batch(
    mut conn: WriterConnection,
    read_pool: AnyPool,
    backend: Backend,
    limits: Limits,
    batch: Vec<Pending>,
) -> Option<WriterConnection> {
    let mut survives = true;
    if batch.len() > 1 {
        let changes: Vec<&Change> = batch.iter().map(|p| &p.job).collect();
        match write(&mut conn, backend, &changes, limits).await {
            Ok(results) => {
                for (pending, result) in batch.into_iter().zip(results) {
                    let _ = pending.done.send(result);
                }
                return Some(conn);
            }
            Err(Failure::Commit(e)) => {
                let message = e.to_string();
                for pending in batch {
                    let _ = pending.done.send(Err(ApiError::internal(&message)));
                }
                return connection_survives(&e).then_some(conn);
            }
            // A statement failed for one change (say its player was deleted meanwhile): write
            // each alone so only that one fails.
            Err(Failure::Statement(e)) => survives = connection_survives(&e),
        }
    }
    for pending in batch {
        let change = &pending.job;
        let written = write(&mut conn, backend, &[change], limits).await;
        if let Err(Failure::Statement(e) | Failure::Commit(e)) = &written {
            survives &= connection_survives(e);
        }
        let result = match written {
            Ok(mut results) => results.pop().expect("one result per change"),
            // Another writer committed this version first: same answer as a stale base.
            Err(Failure::Statement(e)) if is_unique_violation(&e) => {
                match latest(&read_pool, &change.user_id, &change.slot).await {
                    Ok(current) => Err(conflict(current.as_ref())),
                    Err(e) => Err(e),
                }
            }
            Err(Failure::Statement(e) | Failure::Commit(e)) => Err(e.into()),
        };
        let _ = pending.done.send(result);
    }
    survives.then_some(conn)
}

/// Writes `changes` in one transaction; answers each change's outcome. Refused changes
/// (precondition, quota) write nothing and do not affect the others.
async fn write(
    conn: &mut AnyConnection,
    backend: Backend,
    changes: &[&Change],
    limits: Limits,
) -> Result<Vec<ApiResult<Committed>>, Failure> {
    let mut tx = conn.begin().await.map_err(Failure::Statement)?;
    match write_in(&mut tx, backend, changes, limits).await {
        Ok((results, true)) => {
            tx.commit().await.map_err(Failure::Commit)?;
            for committed in results.iter().flatten() {
                let row = &committed.row;
                metrics::counter!("aethex_save_versions_total", "kind" => row.kind.clone())
                    .increment(1);
                metrics::counter!("aethex_save_bytes_written_total").increment(row.size as u64);
            }
            Ok(results)
        }
        Ok((results, false)) => {
            let _ = tx.rollback().await;
            Ok(results)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(Failure::Statement(e))
        }
    }
}

/// What the batch knows of one slot: its current version and the kept versions retention may
/// prune, updated as the batch's changes are applied in order.
#[derive(Default)]
struct SlotState {
    latest: Option<VersionRow>,
    /// (version, size, blob key) of kept versions that may fall out of retention.
    prunable: Vec<(i64, i64, Option<String>)>,
    /// Versions up to this one are deleted by the batch.
    pruned_up_to: Option<i64>,
}

fn quota_exceeded(limits: Limits, used: i64, pruned_bytes: i64, size: i64) -> ApiError {
    ApiError::new(
        ErrorCode::QuotaExceeded,
        format!(
            "this save needs {size} bytes but only {} of the {}-byte quota are free",
            (limits.user_quota_bytes - used + pruned_bytes).max(0),
            limits.user_quota_bytes
        ),
    )
    .with_details(serde_json::json!({
        "used_bytes": used,
        "quota_bytes": limits.user_quota_bytes,
        "needed_bytes": size,
    }))
}

/// The statements of one batch; the flag says whether any change was accepted (else there is
/// nothing to commit).
async fn write_in(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    changes: &[&Change],
    limits: Limits,
) -> Result<(Vec<ApiResult<Committed>>, bool), sqlx::Error> {
    // Upserting the players' usage rows takes their row locks on PostgreSQL: concurrent batches
    // writing for one player queue here and then read each other's committed versions. Locked in
    // user id order, so two batches never wait for each other in a cycle. SQLite has one writer.
    let mut users: Vec<&str> = changes.iter().map(|c| c.user_id.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    let sql = match backend {
        Backend::Postgres => Cow::Borrowed(PG_LOCK_USAGE_SQL),
        Backend::Sqlite => Cow::Owned(format!(
            "INSERT INTO save_usage (user_id, used_bytes) VALUES {} \
             ON CONFLICT (user_id) DO UPDATE SET used_bytes = save_usage.used_bytes \
             RETURNING user_id, used_bytes",
            values(users.len(), 1, |p| format!("({}, 0)", p[0]))
        )),
    };
    let mut query = sqlx::query(&sql);
    match backend {
        Backend::Postgres => query = query.bind(json(&users)),
        Backend::Sqlite => {
            for user in &users {
                query = query.bind(*user);
            }
        }
    }
    let rows = query.fetch_all(&mut **tx).await?;
    let mut used = HashMap::with_capacity(users.len());
    for row in rows {
        used.insert(
            row.try_get::<String, _>("user_id")?,
            row.try_get::<i64, _>("used_bytes")?,
        );
    }

    // Each slot's current version, and every kept version retention may prune in this batch:
    // versions are numbered 1, 2, ... per slot and retention deletes the oldest, so the kept ones
    // are consecutive and a new version `n` keeps `n - history_versions + 1 ..= n`.
    let mut slots: Vec<(&str, &str)> = changes
        .iter()
        .map(|c| (c.user_id.as_str(), c.slot.as_str()))
        .collect();
    slots.sort_unstable();
    let most_per_slot = slots
        .chunk_by(|a, b| a == b)
        .map(<[_]>::len)
        .max()
        .unwrap_or(1) as i64;
    slots.dedup();
    let n = slots.len();
    let sql = match backend {
        Backend::Postgres => Cow::Borrowed(PG_READ_SLOTS_SQL),
        Backend::Sqlite => Cow::Owned(format!(
            "SELECT v.user_id, {} FROM save_versions v JOIN \
             (SELECT user_id, slot, MAX(version) AS top FROM save_versions WHERE {} \
              GROUP BY user_id, slot) t ON v.user_id = t.user_id AND v.slot = t.slot \
             WHERE v.version = t.top OR v.version <= t.top + ${} - ${}",
            V_COLUMNS,
            tuples(n, 2, " OR ", |p| format!(
                "(user_id = {} AND slot = {})",
                p[0], p[1]
            )),
            2 * n + 1,
            2 * n + 2,
        )),
    };
    let mut query = sqlx::query(&sql);
    match backend {
        Backend::Postgres => {
            let slots: Vec<SlotJson> = slots
                .iter()
                .map(|&(user_id, slot)| SlotJson { user_id, slot })
                .collect();
            query = query.bind(json(&slots));
        }
        Backend::Sqlite => {
            for (user, slot) in &slots {
                query = query.bind(*user).bind(*slot);
            }
        }
    }
    let rows = query
        .bind(most_per_slot)
        .bind(limits.history_versions.max(1))
        .fetch_all(&mut **tx)
        .await?;
    let mut states: HashMap<(String, String), SlotState> = HashMap::with_capacity(n);
    for row in &rows {
        let user: String = row.try_get("user_id")?;
        let version = VersionRow::from_row(row)?;
        let state = states.entry((user, version.slot.clone())).or_default();
        state
            .prunable
            .push((version.version, version.size, version.blob_key.clone()));
        if state
            .latest
            .as_ref()
            .is_none_or(|l| l.version < version.version)
        {
            state.latest = Some(version);
        }
    }

    let mut results = Vec::with_capacity(changes.len());
    let mut inserted: Vec<(&str, VersionRow)> = Vec::new();
    for change in changes {
        let state = states
            .entry((change.user_id.clone(), change.slot.clone()))
            .or_default();
        if let Err(e) = change.precondition.check(state.latest.as_ref()) {
            results.push(Err(e));
            continue;
        }
        let version = state.latest.as_ref().map_or(0, |r| r.version) + 1;
        let floor = version - limits.history_versions.max(1);
        let pruned_bytes: i64 = state
            .prunable
            .iter()
            .filter(|(v, _, _)| *v <= floor)
            .map(|(_, size, _)| size)
            .sum();
        let user_used = used
            .get_mut(&change.user_id)
            .expect("usage row of every user");
        let new = &change.new;
        let new_used = *user_used - pruned_bytes + new.size;
        if new_used > *user_used && new_used > limits.user_quota_bytes {
            results.push(Err(quota_exceeded(
                limits,
                *user_used,
                pruned_bytes,
                new.size,
            )));
            continue;
        }
        *user_used = new_used;
        let mut pruned_blobs = Vec::new();
        let before = state.prunable.len();
        state.prunable.retain_mut(|(v, _, key)| {
            if *v > floor {
                return true;
            }
            pruned_blobs.extend(key.take());
            false
        });
        if state.prunable.len() < before {
            state.pruned_up_to = Some(floor);
        }
        let row = VersionRow {
            slot: change.slot.clone(),
            version,
            kind: new.kind.as_str().to_owned(),
            size: new.size,
            checksum: new.checksum.clone(),
            metadata: new.metadata.clone(),
            blob_key: new.blob_key.clone(),
            restored_from: new.restored_from,
            created_at: change.now_ms,
        };
        state
            .prunable
            .push((version, new.size, new.blob_key.clone()));
        state.latest = Some(row.clone());
        inserted.push((change.user_id.as_str(), row.clone()));
        results.push(Ok(Committed { row, pruned_blobs }));
    }
    if inserted.is_empty() {
        return Ok((results, false));
    }

    if backend == Backend::Postgres {
        write_pg(tx, &inserted, &states, &used).await?;
        return Ok((results, true));
    }
    let sql = format!(
        "INSERT INTO save_versions (user_id, {COLUMNS}) VALUES {}",
        values(inserted.len(), 10, |p| format!("({})", p.join(", ")))
    );
    let mut query = sqlx::query(&sql);
    for (user, row) in &inserted {
        query = query
            .bind(*user)
            .bind(&row.slot)
            .bind(row.version)
            .bind(&row.kind)
            .bind(row.size)
            .bind(&row.checksum)
            .bind(&row.metadata)
            .bind(&row.blob_key)
            .bind(row.restored_from)
            .bind(row.created_at);
    }
    query.execute(&mut **tx).await?;

    let pruned: Vec<(&(String, String), i64)> = states
        .iter()
        .filter_map(|(slot, state)| state.pruned_up_to.map(|v| (slot, v)))
        .collect();
    if !pruned.is_empty() {
        let sql = format!(
            "DELETE FROM save_versions WHERE {}",
            tuples(pruned.len(), 3, " OR ", |p| format!(
                "(user_id = {} AND slot = {} AND version <= {})",
                p[0], p[1], p[2]
            ))
        );
        let mut query = sqlx::query(&sql);
        for ((user, slot), up_to) in &pruned {
            query = query.bind(user).bind(slot).bind(*up_to);
        }
        query.execute(&mut **tx).await?;
    }

    let sql = format!(
        "INSERT INTO save_usage (user_id, used_bytes) VALUES {} \
         ON CONFLICT (user_id) DO UPDATE SET used_bytes = excluded.used_bytes",
        values(used.len(), 2, |p| format!("({}, {})", p[0], p[1]))
    );
    let mut query = sqlx::query(&sql);
    for (user, bytes) in &used {
        query = query.bind(user).bind(*bytes);
    }
    query.execute(&mut **tx).await?;
    Ok((results, true))
}

/// `v.slot, v.version, ...`: `COLUMNS` of the `save_versions v` alias.
const V_COLUMNS: &str = "v.slot, v.version, v.kind, v.size, v.checksum, v.metadata, v.blob_key, \
                         v.restored_from, v.created_at";

// On PostgreSQL a batch's rows travel as one JSON array parameter, so each statement's text (and
// so its prepared statement and plan) is the same whatever the batch size: with a list of
// `VALUES` tuples or `OR` conditions every batch size was another statement, which each
// connection prepared (a Parse round trip) and PostgreSQL planned anew, and up to 64 sizes of
// five statements overflow sqlx's cache of 100 prepared statements per connection.

/// Takes the usage rows' locks in the array's order (user id order; see `write_in`).
const PG_LOCK_USAGE_SQL: &str = "\
INSERT INTO save_usage (user_id, used_bytes)
SELECT user_id, 0 FROM json_array_elements_text($1::json) AS u(user_id)
ON CONFLICT (user_id) DO UPDATE SET used_bytes = save_usage.used_bytes
RETURNING user_id, used_bytes";

const PG_READ_SLOTS_SQL: &str = "\
SELECT v.user_id, v.slot, v.version, v.kind, v.size, v.checksum, v.metadata, v.blob_key, v.restored_from, v.created_at
FROM save_versions v JOIN (
  SELECT s.user_id, s.slot, MAX(s.version) AS top
  FROM save_versions s JOIN json_to_recordset($1::json) AS b(user_id text, slot text)
    ON s.user_id = b.user_id AND s.slot = b.slot
  GROUP BY s.user_id, s.slot
) t ON v.user_id = t.user_id AND v.slot = t.slot
WHERE v.version = t.top OR v.version <= t.top + $2 - $3";

/// The batch's new versions, retention and usage in one statement. Its parts run in one snapshot,
/// so the DELETE cannot see the INSERT's rows: versions the batch itself prunes are not inserted
/// (`write_pg` leaves them out), which leaves the same rows as inserting and then deleting them.
const PG_WRITE_SQL: &str = "\
WITH inserted AS (
  INSERT INTO save_versions (user_id, slot, version, kind, size, checksum, metadata, blob_key, restored_from, created_at)
  SELECT user_id, slot, version, kind, size, checksum, metadata, blob_key, restored_from, created_at
  FROM json_to_recordset($1::json) AS n(user_id text, slot text, version bigint, kind text, size bigint, checksum text, metadata text, blob_key text, restored_from bigint, created_at bigint)
  RETURNING 1
), pruned AS (
  DELETE FROM save_versions v USING json_to_recordset($2::json) AS p(user_id text, slot text, up_to bigint)
  WHERE v.user_id = p.user_id AND v.slot = p.slot AND v.version <= p.up_to
  RETURNING 1
)
INSERT INTO save_usage (user_id, used_bytes)
SELECT user_id, used_bytes FROM json_to_recordset($3::json) AS u(user_id text, used_bytes bigint)
ON CONFLICT (user_id) DO UPDATE SET used_bytes = excluded.used_bytes";

#[derive(serde::Serialize)]
struct SlotJson<'a> {
    user_id: &'a str,
    slot: &'a str,
}

#[derive(serde::Serialize)]
struct VersionJson<'a> {
    user_id: &'a str,
    slot: &'a str,
    version: i64,
    kind: &'a str,
    size: i64,
    checksum: &'a str,
    metadata: &'a str,
    blob_key: Option<&'a str>,
    restored_from: Option<i64>,
    created_at: i64,
}

#[derive(serde::Serialize)]
struct PrunedJson<'a> {
    user_id: &'a str,
    slot: &'a str,
    up_to: i64,
}

#[derive(serde::Serialize)]
struct UsageJson<'a> {
    user_id: &'a str,
    used_bytes: i64,
}

fn json<T: serde::Serialize>(rows: &[T]) -> String {
    serde_json::to_string(rows).expect("rows of strings and integers serialize")
}

/// `PG_WRITE_SQL` for the accepted versions `inserted`.
async fn write_pg(
    tx: &mut Transaction<'_, Any>,
    inserted: &[(&str, VersionRow)],
    states: &HashMap<(String, String), SlotState>,
    used: &HashMap<String, i64>,
) -> Result<(), sqlx::Error> {
    let pruned: Vec<PrunedJson> = states
        .iter()
        .filter_map(|((user_id, slot), state)| {
            state.pruned_up_to.map(|up_to| PrunedJson {
                user_id,
                slot,
                up_to,
            })
        })
        .collect();
    let pruned_up_to: HashMap<(&str, &str), i64> = pruned
        .iter()
        .map(|p| ((p.user_id, p.slot), p.up_to))
        .collect();
    let versions: Vec<VersionJson> = inserted
        .iter()
        .filter(|(user_id, row)| {
            pruned_up_to
                .get(&(*user_id, row.slot.as_str()))
                .is_none_or(|up_to| row.version > *up_to)
        })
        .map(|(user_id, row)| VersionJson {
            user_id,
            slot: &row.slot,
            version: row.version,
            kind: &row.kind,
            size: row.size,
            checksum: &row.checksum,
            metadata: &row.metadata,
            blob_key: row.blob_key.as_deref(),
            restored_from: row.restored_from,
            created_at: row.created_at,
        })
        .collect();
    let usage: Vec<UsageJson> = used
        .iter()
        .map(|(user_id, &used_bytes)| UsageJson {
            user_id,
            used_bytes,
        })
        .collect();
    sqlx::query(PG_WRITE_SQL)
        .bind(json(&versions))
        .bind(json(&pruned))
        .bind(json(&usage))
        .execute(&mut **tx)
        .await?;
    Ok(())
}
