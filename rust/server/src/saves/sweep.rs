//! Reclaims orphaned save blobs. A write stores its blob before the row referencing it commits
//! (see the `saves` module docs), so a process that dies in between, or a commit that failed
//! ambiguously, leaves a blob no row references. The sweep deletes those once they are older than
//! `ORPHAN_GRACE`: a write still in flight (blob stored, row not committed yet) is younger, so it
//! never loses its blob. It runs at start and every `SWEEP_INTERVAL`, through `object_store` only
//! (list, read rows, delete), so the local folder and S3-compatible stores are swept alike.

use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::Row;

use crate::blobs::Blobs;
use crate::db::Db;

/// Far longer than any write takes between storing its blob and committing its row.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(3600);
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(3600);

/// What the periodic sweep works on. The task holds it weakly between sweeps, so it ends (and
/// releases the pools) when the server is dropped.
#[derive(Debug)]
pub struct Sweeper {
    db: Db,
    blobs: Blobs,
}

/// Sweeps now and every `SWEEP_INTERVAL` while the returned handle is alive.
pub fn start(db: Db, blobs: Blobs) -> Arc<Sweeper> {
    let sweeper = Arc::new(Sweeper { db, blobs });
    tokio::spawn(run(Arc::downgrade(&sweeper)));
    sweeper
}

async fn run(sweeper: Weak<Sweeper>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tick.tick().await;
        let Some(sweeper) = sweeper.upgrade() else {
            break;
        };
        match sweep_orphans(&sweeper.db, &sweeper.blobs, ORPHAN_GRACE).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "swept orphaned save blobs"),
            Err(e) => tracing::warn!(error = %e, "sweeping orphaned save blobs failed"),
        }
    }
}

/// Deletes save blobs (`saves/<user>/<id>`) that no version row references and that were last
/// written more than `grace` ago; returns how many. One SQL query per player with old blobs.
pub async fn sweep_orphans(db: &Db, blobs: &Blobs, grace: Duration) -> anyhow::Result<usize> {
    let cutoff = chrono::Utc::now() - grace;
    let mut deleted = 0;
    for folder in blobs.list_folders("saves").await? {
        let old: Vec<String> = blobs
            .list(&folder)
            .await?
            .into_iter()
            .filter(|(_, modified)| *modified < cutoff)
            .map(|(key, _)| key)
            .collect();
        if old.is_empty() {
            continue;
        }
        // Listed before reading rows: a row committed since is seen, and none can reference an
        // old blob it did not already reference.
        let user_id = folder.rsplit('/').next().unwrap_or_default();
        let referenced: HashSet<String> = sqlx::query(
            "SELECT blob_key FROM save_versions WHERE user_id = $1 AND blob_key IS NOT NULL",
        )
        .bind(user_id)
        .fetch_all(&db.read)
        .await?
        .iter()
        .map(|row| row.try_get("blob_key"))
        .collect::<Result<_, _>>()?;
        for key in old.into_iter().filter(|k| !referenced.contains(k)) {
            blobs.delete(&key).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}
