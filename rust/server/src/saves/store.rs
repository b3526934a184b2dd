//! The SQL side of saves: version rows, per-player usage, and the one transaction that makes a
//! new version visible (precondition, quota, insert, retention) atomically.

use aethex_protocol::saves::{SaveConflictDetails, SaveSlotInfo, SaveVersionInfo};
use aethex_protocol::ErrorCode;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use crate::db::{is_unique_violation, Db};
use crate::error::{ApiError, ApiResult};

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

/// Makes `new` the slot's next version in one transaction: lock the player's usage row, check
/// the precondition against the committed current version, check the quota (counting what
/// retention will prune), insert, prune, update usage. Nothing is visible until the commit.
pub async fn commit_version(
    db: &Db,
    user_id: &str,
    slot: &str,
    precondition: Precondition,
    new: NewVersion,
    limits: Limits,
    now_ms: i64,
) -> ApiResult<Committed> {
    let mut tx = db.write.begin().await?;
    // Upserting the usage row takes its row lock on Postgres: concurrent writers of one player
    // queue here and then read each other's committed versions. SQLite has one writer anyway.
    let used: i64 = sqlx::query(
        "INSERT INTO save_usage (user_id, used_bytes) VALUES ($1, 0) \
         ON CONFLICT (user_id) DO UPDATE SET used_bytes = save_usage.used_bytes \
         RETURNING used_bytes",
    )
    .bind(user_id)
    .fetch_one(&mut *tx)
    .await?
    .try_get("used_bytes")?;

    let existing = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM save_versions WHERE user_id = $1 AND slot = $2 \
         ORDER BY version DESC"
    ))
    .bind(user_id)
    .bind(slot)
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(VersionRow::from_row)
    .collect::<Result<Vec<_>, _>>()?;
    precondition.check(existing.first())?;

    let keep_old = (limits.history_versions.max(1) - 1) as usize;
    let pruned = existing.get(keep_old..).unwrap_or_default();
    let pruned_bytes: i64 = pruned.iter().map(|r| r.size).sum();
    let new_used = used - pruned_bytes + new.size;
    if new_used > used && new_used > limits.user_quota_bytes {
        return Err(ApiError::new(
            ErrorCode::QuotaExceeded,
            format!(
                "this save needs {} bytes but only {} of the {}-byte quota are free",
                new.size,
                (limits.user_quota_bytes - used + pruned_bytes).max(0),
                limits.user_quota_bytes
            ),
        )
        .with_details(serde_json::json!({
            "used_bytes": used,
            "quota_bytes": limits.user_quota_bytes,
            "needed_bytes": new.size,
        })));
    }

    let row = VersionRow {
        slot: slot.to_owned(),
        version: existing.first().map_or(0, |r| r.version) + 1,
        kind: new.kind.as_str().to_owned(),
        size: new.size,
        checksum: new.checksum,
        metadata: new.metadata,
        blob_key: new.blob_key,
        restored_from: new.restored_from,
        created_at: now_ms,
    };
    let inserted = sqlx::query(&format!(
        "INSERT INTO save_versions (user_id, {COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
    ))
    .bind(user_id)
    .bind(&row.slot)
    .bind(row.version)
    .bind(&row.kind)
    .bind(row.size)
    .bind(&row.checksum)
    .bind(&row.metadata)
    .bind(&row.blob_key)
    .bind(row.restored_from)
    .bind(row.created_at)
    .execute(&mut *tx)
    .await;
    if let Err(e) = inserted {
        if is_unique_violation(&e) {
            // Another writer committed this version first: same answer as a stale base.
            drop(tx);
            return Err(conflict(latest(&db.read, user_id, slot).await?.as_ref()));
        }
        return Err(e.into());
    }
    if let Some(newest_pruned) = pruned.first() {
        sqlx::query("DELETE FROM save_versions WHERE user_id = $1 AND slot = $2 AND version <= $3")
            .bind(user_id)
            .bind(slot)
            .bind(newest_pruned.version)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("UPDATE save_usage SET used_bytes = $1 WHERE user_id = $2")
        .bind(new_used)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    metrics::counter!("aethex_save_versions_total", "kind" => row.kind.clone()).increment(1);
    metrics::counter!("aethex_save_bytes_written_total").increment(row.size as u64);
    Ok(Committed {
        row,
        pruned_blobs: pruned.iter().filter_map(|r| r.blob_key.clone()).collect(),
    })
}
