//! Cloud saves: `/api/v1/saves/{user_id}/*`.
//!
//! A slot is a named save of one player. Every write, restore and delete adds a version; the
//! newest is the slot's current state and older ones stay in history (up to
//! `saves.history_versions` per slot) so they can be read and restored. Deleting a slot adds a
//! `delete` version: the slot disappears from the list and reads, its history stays restorable.
//!
//! Crash safety: the bytes go to the blob store first under a fresh key, then one SQL
//! transaction checks the base version, the quota and commits the version row (group-committed
//! with the other writes arriving together, see `store`). A version is visible only once its row
//! commits, and its row only commits after its blob is stored; a crash in between leaves an
//! unreferenced blob, never a version without data; `sweep` reclaims those.

mod codec;
mod handlers;
pub mod store;
pub mod sweep;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use utoipa::OpenApi;

pub use codec::BlobCodec;

use crate::app::AppState;
use crate::blobs::Blobs;
use crate::config::Config;
use crate::db::Db;

/// Metadata is for slot pickers (level, play time, thumbnail id): kept small because every list
/// answer carries it.
pub const MAX_METADATA_BYTES: usize = 4 * 1024;
pub const MAX_SLOT_NAME_LEN: usize = 64;

#[derive(Clone, Debug)]
pub struct SavesService {
    codec: BlobCodec,
    limits: store::Limits,
    writer: store::VersionWriter,
    max_slot_bytes: i64,
    /// Keeps the orphan sweep running.
    _sweeper: std::sync::Arc<sweep::Sweeper>,
}

impl SavesService {
    pub async fn new(config: &Config, db: &Db, blobs: &Blobs) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.saves.max_slot_bytes > 0,
            "saves.max_slot_bytes must be positive"
        );
        anyhow::ensure!(
            config.saves.history_versions >= 1,
            "saves.history_versions must be at least 1"
        );
        let limits = store::Limits {
            history_versions: config.saves.history_versions,
            user_quota_bytes: config.saves.user_quota_bytes,
        };
        Ok(Self {
            codec: BlobCodec::from_config(config)?,
            limits,
            writer: store::VersionWriter::start(db, limits),
            max_slot_bytes: config.saves.max_slot_bytes,
            _sweeper: sweep::start(db.clone(), blobs.clone()),
        })
    }
}

/// Largest accepted write body: the slot limit, room for JSON escaping and whitespace the
/// client may send beyond the compact form we measure, plus metadata. Bigger bodies are a typed
/// 413 `payload_too_large` before they are buffered.
pub(crate) fn write_body_limit(config: &Config) -> usize {
    let slot = usize::try_from(config.saves.max_slot_bytes).unwrap_or(usize::MAX);
    slot.saturating_mul(2)
        .saturating_add(MAX_METADATA_BYTES * 2 + 64 * 1024)
}

pub fn router(config: &Config) -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/saves/{user_id}",
            get(handlers::list_saves).merge(
                post(handlers::write_save).layer(DefaultBodyLimit::max(write_body_limit(config))),
            ),
        )
        .route("/api/v1/saves/{user_id}/history", get(handlers::history))
        .route(
            "/api/v1/saves/{user_id}/{save_id}",
            get(handlers::read_save).delete(handlers::delete_save),
        )
        .route(
            "/api/v1/saves/{user_id}/{save_id}/restore",
            post(handlers::restore_save),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(
        handlers::list_saves,
        handlers::write_save,
        handlers::read_save,
        handlers::delete_save,
        handlers::history,
        handlers::restore_save,
    ),
    components(schemas(
        aethex_protocol::saves::SaveSlotInfo,
        aethex_protocol::saves::WriteSaveRequest,
        aethex_protocol::saves::SaveData,
        aethex_protocol::saves::SaveList,
        aethex_protocol::saves::SaveVersionInfo,
        aethex_protocol::saves::SaveHistory,
        aethex_protocol::saves::RestoreSaveRequest,
        aethex_protocol::saves::SaveConflictDetails,
    )),
    tags((name = "saves", description = "Versioned cloud save slots with history and restore"))
)]
pub struct SavesApi;
