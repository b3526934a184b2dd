//! `Saves`: cloud saves that never lose progress.
//!
//! Every `save` is encoded, written to the local cache and appended to the on-disk queue before
//! any upload (see `storage`). The queue is flushed in order by one flusher at a time: by the save
//! call itself, by `sync_now`, after sign-in/resume (replaying what a crash left behind), and by
//! the auto-sync loop. Uploads carry `base_version` (the slot's last known server version), so
//! retrying a write is safe: a retry whose first attempt landed gets 409 `save_conflict` whose
//! current checksum is ours, which counts as success.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use aethex_protocol::saves::{
    RestoreSaveRequest, SaveConflictDetails, SaveHistory, SaveList, SaveSlotInfo,
};
use aethex_protocol::ErrorCode;
use reqwest::Method;
use sha2::{Digest, Sha256};

use crate::client::Shared;
use crate::codec::{self, plain_from_json, to_json};
use crate::http::{Body, Request};
use crate::storage::{valid_slot, SlotHeader, UserStore};
use crate::{ConflictStrategy, RequestId, SdkError, Value};

const STATUS_NAMES: [&str; 5] = ["idle", "syncing", "offline", "error", "disabled"];
const IDLE: u8 = 0;
const SYNCING: u8 = 1;
const OFFLINE: u8 = 2;
const ERROR: u8 = 3;
const DISABLED: u8 = 4;

/// Sync state shared with the background tasks.
pub(crate) struct SyncState {
    status: AtomicU8,
    auto: AtomicBool,
    wake: tokio::sync::Notify,
    /// One flusher at a time keeps uploads in queue order.
    flush_lock: tokio::sync::Mutex<()>,
    /// Manual conflicts waiting for `resolve_conflict`: slot -> the server's current version.
    conflicts: Mutex<HashMap<String, i64>>,
}

impl SyncState {
    pub fn new() -> Self {
        Self {
            status: AtomicU8::new(DISABLED),
            auto: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
            flush_lock: tokio::sync::Mutex::new(()),
            conflicts: Mutex::new(HashMap::new()),
        }
    }
}

#[derive(Clone)]
pub struct Saves {
    shared: Arc<Shared>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn io_err(e: std::io::Error) -> SdkError {
    SdkError::new(ErrorCode::Internal, format!("local save cache: {e}"))
}

fn check_slot(slot: &str) -> Result<(), SdkError> {
    if valid_slot(slot) {
        Ok(())
    } else {
        Err(SdkError::new(
            ErrorCode::InvalidRequest,
            "slot must be 1 to 64 characters of A-Z a-z 0-9 _ . -, start with a letter, digit or _, \
             and not be `history`",
        ))
    }
}

fn store_of(shared: &Shared) -> Result<UserStore, SdkError> {
    shared
        .user_store()
        .ok_or_else(|| SdkError::new(ErrorCode::Unauthorized, "not signed in"))
}

fn metadata_json(metadata: Option<&Value>) -> serde_json::Value {
    match metadata {
        None | Some(Value::Nil) => serde_json::json!({}),
        Some(m) => to_json(m),
    }
}

fn info_value(info: &SaveSlotInfo, queued: bool) -> Value {
    Value::dict([
        ("slot", Value::String(info.slot.clone())),
        ("version", Value::Int(info.version)),
        ("size", Value::Int(info.size)),
        ("updated_at", Value::Int(info.updated_at)),
        ("checksum", Value::String(info.checksum.clone())),
        ("metadata", plain_from_json(&info.metadata)),
        ("queued", Value::Bool(queued)),
    ])
}

fn queued_value(slot: &str, metadata: &serde_json::Value, size: usize, at: i64) -> Value {
    Value::dict([
        ("slot", Value::String(slot.to_owned())),
        ("version", Value::Nil),
        ("size", Value::Int(size as i64)),
        ("updated_at", Value::Int(at)),
        ("checksum", Value::Nil),
        ("metadata", plain_from_json(metadata)),
        ("queued", Value::Bool(true)),
    ])
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The checksums the server may compute for our data: it hashes `serde_json::to_vec` of the
/// `data` it parsed, whose key order depends on its serde_json build (sorted or preserved).
fn candidate_checksums(data: &[u8]) -> [String; 2] {
    let reparsed = serde_json::from_slice::<serde_json::Value>(data)
        .ok()
        .and_then(|v| serde_json::to_vec(&v).ok())
        .unwrap_or_default();
    [hex_sha256(data), hex_sha256(&reparsed)]
}

impl Saves {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Encodes and stores locally first, then uploads. With auto-sync on, a save that cannot
    /// reach the server completes with `queued: true` and is uploaded later.
    pub fn save(&self, slot: String, data: Value, metadata: Option<Value>) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            check_slot(&slot)?;
            let store = store_of(&shared)?;
            let encoded = codec::encode(&data);
            let metadata = metadata_json(metadata.as_ref());
            let written_at = now_ms();
            let seq = store
                .record_local_write(&slot, metadata.clone(), written_at, &encoded)
                .map_err(io_err)?;
            let report = flush(&shared).await;
            match report.done.get(&seq) {
                Some(outcome) => outcome.clone(),
                // Another flusher (auto-sync, replay) uploaded it before this one ran.
                None if !store.pending().map_err(io_err)?.contains(&seq) => {
                    let (header, _) = store
                        .read_slot(&slot)
                        .map_err(io_err)?
                        .ok_or_else(|| io_err(std::io::ErrorKind::NotFound.into()))?;
                    Ok(Value::dict([
                        ("slot", Value::String(slot.clone())),
                        ("version", Value::Int(header.server_version)),
                        ("size", Value::Int(encoded.len() as i64)),
                        ("updated_at", Value::Int(header.server_updated_at)),
                        ("checksum", Value::String(header.checksum)),
                        ("metadata", plain_from_json(&header.metadata)),
                        ("queued", Value::Bool(false)),
                    ]))
                }
                None => match report.stopped {
                    Some(e) if !shared.sync.auto.load(Ordering::Relaxed) => {
                        shared.emit(
                            "saves",
                            "save_failed",
                            vec![Value::String(slot.clone()), e.to_value()],
                        );
                        Err(e)
                    }
                    _ => Ok(queued_value(&slot, &metadata, encoded.len(), written_at)),
                },
            }
        })
    }

    /// The slot's data. Local writes not yet uploaded win (they are the newest progress);
    /// otherwise the server's copy, or the cache when offline (`from_cache: true`).
    pub fn load(&self, slot: String) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            check_slot(&slot)?;
            let store = store_of(&shared)?;
            let cached = store.read_slot(&slot).map_err(io_err)?;
            if let Some((header, data)) = cached.as_ref().filter(|(h, _)| h.dirty) {
                return loaded(&shared, &slot, header, data, true);
            }
            let etag = cached
                .as_ref()
                .filter(|(h, _)| h.server_version > 0)
                .map(|(h, _)| format!("\"{}\"", h.server_version));
            let path = format!("/api/v1/saves/me/{slot}");
            let reply = shared
                .authed(|| {
                    let mut r = Request::new(Method::GET, path.clone());
                    if let Some(tag) = &etag {
                        r.headers.push(("If-None-Match", tag.clone()));
                    }
                    r
                })
                .await;
            match reply {
                Ok(reply) if reply.status == 304 => {
                    let (header, data) = cached.expect("304 only with a cached copy");
                    loaded(&shared, &slot, &header, &data, true)
                }
                Ok(reply) => {
                    let (header, data) = cache_server_copy(&store, &slot, &reply.body)?;
                    loaded(&shared, &slot, &header, &data, false)
                }
                Err(e) if e.code == ErrorCode::NotFound => {
                    store.remove_slot(&slot).map_err(io_err)?;
                    Err(e)
                }
                Err(e) if matches!(e.code, ErrorCode::Network | ErrorCode::Timeout) => match cached
                {
                    Some((header, data)) => loaded(&shared, &slot, &header, &data, true),
                    None => Err(e),
                },
                Err(e) => Err(e),
            }
        })
    }

    pub fn list(&self) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let list: SaveList = shared
                .authed(|| Request::new(Method::GET, "/api/v1/saves/me"))
                .await?
                .json()?;
            let saves = list
                .slots
                .iter()
                .map(|s| {
                    Value::dict([
                        ("name", Value::String(s.slot.clone())),
                        ("version", Value::Int(s.version)),
                        ("size", Value::Int(s.size)),
                        ("timestamp", Value::Int(s.updated_at)),
                        ("checksum", Value::String(s.checksum.clone())),
                        ("metadata", plain_from_json(&s.metadata)),
                    ])
                })
                .collect();
            Ok(Value::dict([
                ("saves", Value::Array(saves)),
                ("used_bytes", Value::Int(list.used_bytes)),
                ("quota_bytes", Value::Int(list.quota_bytes)),
            ]))
        })
    }

    /// Deletes the slot on the server (its history stays restorable) and locally, including
    /// queued uploads of it.
    pub fn delete(&self, slot: String) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            check_slot(&slot)?;
            let store = store_of(&shared)?;
            let _one_flusher = shared.sync.flush_lock.lock().await;
            let path = format!("/api/v1/saves/me/{slot}");
            shared
                .authed(|| Request::new(Method::DELETE, path.clone()))
                .await?;
            for seq in store.pending().map_err(io_err)? {
                if store.read_pending(seq).is_ok_and(|(h, _)| h.slot == slot) {
                    store.remove_pending(seq).map_err(io_err)?;
                }
            }
            store.remove_slot(&slot).map_err(io_err)?;
            shared.sync.conflicts.lock().expect("lock").remove(&slot);
            Ok(Value::Dictionary(Vec::new()))
        })
    }

    pub fn history(&self, slot: Option<String>) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let path = match &slot {
                Some(slot) => {
                    check_slot(slot)?;
                    format!("/api/v1/saves/me/history?slot={slot}")
                }
                None => "/api/v1/saves/me/history".to_owned(),
            };
            let history: SaveHistory = shared
                .authed(|| Request::new(Method::GET, path.clone()))
                .await?
                .json()?;
            let versions = history
                .versions
                .iter()
                .map(|v| {
                    Value::dict([
                        ("slot", Value::String(v.slot.clone())),
                        ("version", Value::Int(v.version)),
                        ("size", Value::Int(v.size)),
                        ("created_at", Value::Int(v.created_at)),
                        ("checksum", Value::String(v.checksum.clone())),
                        ("metadata", plain_from_json(&v.metadata)),
                        ("kind", Value::String(v.kind.clone())),
                    ])
                })
                .collect();
            Ok(Value::dict([("versions", Value::Array(versions))]))
        })
    }

    /// Makes an older version current again (as a new version) and refreshes the cache.
    pub fn restore(&self, slot: String, version: i64) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            check_slot(&slot)?;
            let store = store_of(&shared)?;
            let _one_flusher = shared.sync.flush_lock.lock().await;
            let info = restore_version(&shared, &slot, version, None).await?;
            refresh_cache(&shared, &store, &slot).await;
            Ok(info_value(&info, false))
        })
    }

    /// Answers a `manual` conflict: `data` is written on top of the server's current version.
    pub fn resolve_conflict(&self, slot: String, data: Value) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            check_slot(&slot)?;
            let store = store_of(&shared)?;
            let Some(current) = shared
                .sync
                .conflicts
                .lock()
                .expect("lock")
                .get(&slot)
                .copied()
            else {
                return Err(SdkError::new(
                    ErrorCode::NotFound,
                    format!("no conflict is waiting on slot `{slot}`"),
                ));
            };
            let encoded = codec::encode(&data);
            let seq = {
                let _one_flusher = shared.sync.flush_lock.lock().await;
                // The answer replaces every queued write of the slot.
                for seq in store.pending().map_err(io_err)? {
                    if store.read_pending(seq).is_ok_and(|(h, _)| h.slot == slot) {
                        store.remove_pending(seq).map_err(io_err)?;
                    }
                }
                let metadata = store
                    .read_slot(&slot)
                    .ok()
                    .flatten()
                    .map_or(serde_json::json!({}), |(h, _)| h.metadata);
                let seq = store
                    .record_local_write(&slot, metadata, now_ms(), &encoded)
                    .map_err(io_err)?;
                set_server_version(&store, &slot, current)?;
                shared.sync.conflicts.lock().expect("lock").remove(&slot);
                seq
            };
            let report = flush(&shared).await;
            let outcome = match report.done.get(&seq) {
                Some(outcome) => outcome.clone(),
                None => Err(report.stopped.unwrap_or_else(|| {
                    SdkError::new(ErrorCode::Network, "the resolution is queued")
                })),
            };
            if let Ok(info) = &outcome {
                let mut details = info.clone();
                if let Value::Dictionary(pairs) = &mut details {
                    pairs.push((
                        Value::String("strategy".into()),
                        Value::String("manual".into()),
                    ));
                }
                shared.emit(
                    "saves",
                    "conflict_resolved",
                    vec![Value::String(slot.clone()), details],
                );
            }
            outcome
        })
    }

    /// Uploads the queue now (also with auto-sync off). Result: `{"uploaded": n, "pending": m}`.
    pub fn sync_now(&self) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let store = store_of(&shared)?;
            let report = flush(&shared).await;
            let pending = store.pending().map_err(io_err)?.len();
            if let Some(e) = report.stopped {
                return Err(e);
            }
            let uploaded = report.done.values().filter(|o| o.is_ok()).count();
            Ok(Value::dict([
                ("uploaded", Value::Int(uploaded as i64)),
                ("pending", Value::Int(pending as i64)),
            ]))
        })
    }

    /// Sync call, no I/O: flips the flag and wakes the background loop.
    pub fn enable_auto_sync(&self, enabled: bool) {
        self.shared.sync.auto.store(enabled, Ordering::SeqCst);
        if enabled {
            let current = self.shared.sync.status.load(Ordering::SeqCst);
            if current == DISABLED {
                set_status(&self.shared, IDLE);
            }
            self.shared.sync.wake.notify_one();
        } else if self.shared.sync.status.load(Ordering::SeqCst) != SYNCING {
            set_status(&self.shared, DISABLED);
        }
    }

    /// `"idle" | "syncing" | "offline" | "error" | "disabled"`
    pub fn sync_status(&self) -> String {
        STATUS_NAMES[usize::from(self.shared.sync.status.load(Ordering::SeqCst))].to_owned()
    }
}

fn set_status(shared: &Shared, status: u8) {
    let previous = shared.sync.status.swap(status, Ordering::SeqCst);
    if previous != status {
        shared.emit(
            "saves",
            "sync_status_changed",
            vec![Value::String(STATUS_NAMES[usize::from(status)].to_owned())],
        );
    }
}

fn loaded(
    shared: &Shared,
    slot: &str,
    header: &SlotHeader,
    data: &[u8],
    from_cache: bool,
) -> Result<Value, SdkError> {
    let value =
        codec::decode(data).map_err(|e| SdkError::new(ErrorCode::Internal, e.to_string()))?;
    shared.emit(
        "saves",
        "load_completed",
        vec![Value::String(slot.to_owned()), value.clone()],
    );
    Ok(Value::dict([
        ("slot", Value::String(slot.to_owned())),
        ("data", value),
        (
            "version",
            if header.server_version > 0 {
                Value::Int(header.server_version)
            } else {
                Value::Nil
            },
        ),
        (
            "updated_at",
            Value::Int(if header.dirty {
                header.local_written_at
            } else {
                header.server_updated_at
            }),
        ),
        ("metadata", plain_from_json(&header.metadata)),
        ("from_cache", Value::Bool(from_cache)),
    ]))
}

/// Parses a `SaveData` answer and stores it as the clean local copy (unless local writes are
/// waiting, which stay authoritative).
fn cache_server_copy(
    store: &UserStore,
    slot: &str,
    body: &[u8],
) -> Result<(SlotHeader, Vec<u8>), SdkError> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(flatten)]
        info: SaveSlotInfo,
        data: serde_json::Value,
    }
    let answer: Answer = serde_json::from_slice(body)
        .map_err(|e| SdkError::new(ErrorCode::Internal, format!("bad save answer: {e}")))?;
    let data = serde_json::to_vec(&answer.data).expect("JSON serializes");
    let header = SlotHeader {
        slot: slot.to_owned(),
        server_version: answer.info.version,
        server_updated_at: answer.info.updated_at,
        checksum: answer.info.checksum,
        metadata: answer.info.metadata,
        local_written_at: 0,
        local_seq: 0,
        dirty: false,
    };
    let waiting = store
        .read_slot(slot)
        .map_err(io_err)?
        .is_some_and(|(h, _)| h.dirty);
    if !waiting {
        store.write_slot(&header, &data).map_err(io_err)?;
    }
    Ok((header, data))
}

/// Re-reads the slot from the server into the cache; on failure drops the stale copy but keeps
/// the version, so the next write still carries the right `base_version`.
async fn refresh_cache(shared: &Arc<Shared>, store: &UserStore, slot: &str) {
    let path = format!("/api/v1/saves/me/{slot}");
    let fetched = shared
        .authed(|| Request::new(Method::GET, path.clone()))
        .await;
    let ok = match fetched {
        Ok(reply) => cache_server_copy(store, slot, &reply.body).is_ok(),
        Err(_) => false,
    };
    if !ok {
        tracing::debug!(slot, "could not refresh the cached copy");
    }
}

fn set_server_version(store: &UserStore, slot: &str, version: i64) -> Result<(), SdkError> {
    if let Some((mut header, data)) = store.read_slot(slot).map_err(io_err)? {
        header.server_version = version;
        store.write_slot(&header, &data).map_err(io_err)?;
    }
    Ok(())
}

async fn restore_version(
    shared: &Arc<Shared>,
    slot: &str,
    version: i64,
    base_version: Option<i64>,
) -> Result<SaveSlotInfo, SdkError> {
    let path = format!("/api/v1/saves/me/{slot}/restore");
    let body = RestoreSaveRequest {
        version,
        base_version,
    };
    // Retried only when guarded by base_version: else a lost answer would restore twice.
    shared
        .authed(|| {
            let r = Request::new(Method::POST, path.clone()).json(&body);
            if base_version.is_some() {
                r
            } else {
                r.no_retry()
            }
        })
        .await?
        .json()
}

/// What one flush did: outcomes by queue sequence, and the error that stopped it (the entries
/// after it stay queued).
pub(crate) struct FlushReport {
    pub done: HashMap<u64, Result<Value, SdkError>>,
    pub stopped: Option<SdkError>,
}

enum Upload {
    /// Waits for `resolve_conflict`; later writes of the slot wait too.
    Blocked(SdkError),
    /// Will never succeed (bad request, too large): dropped from the queue, kept in the cache.
    Rejected(SdkError),
    /// Try again later (offline, 5xx, signed out).
    Later(SdkError),
}

/// Uploads queued writes in order until the queue is empty or the server is unreachable.
pub(crate) async fn flush(shared: &Arc<Shared>) -> FlushReport {
    let mut report = FlushReport {
        done: HashMap::new(),
        stopped: None,
    };
    let _one_flusher = shared.sync.flush_lock.lock().await;
    let Some(store) = shared.user_store() else {
        return report;
    };
    let queue = match store.pending() {
        Ok(q) => q,
        Err(e) => {
            report.stopped = Some(io_err(e));
            return report;
        }
    };
    if queue.is_empty() {
        return report;
    }
    set_status(shared, SYNCING);
    let mut blocked: HashSet<String> = HashSet::new();
    let mut final_status = IDLE;
    for seq in queue {
        let (entry, data) = match store.read_pending(seq) {
            Ok(x) => x,
            Err(e) => {
                // A torn entry cannot come from our atomic writes; the slot copy still has
                // the data and is re-queued while dirty.
                tracing::warn!(error = %e, seq, "dropping unreadable queue entry");
                let _ = store.remove_pending(seq);
                continue;
            }
        };
        let waiting = shared
            .sync
            .conflicts
            .lock()
            .expect("lock")
            .contains_key(&entry.slot);
        if waiting || blocked.contains(&entry.slot) {
            // A manual conflict waits for resolve_conflict: no upload, no repeated 409s.
            continue;
        }
        let slot = entry.slot.clone();
        match upload(shared, &store, seq, &entry, &data).await {
            Ok(info) => {
                let _ = store.remove_pending(seq);
                let value = info_value(&info, false);
                shared.emit(
                    "saves",
                    "save_completed",
                    vec![Value::String(slot), value.clone()],
                );
                report.done.insert(seq, Ok(value));
            }
            Err(Upload::Blocked(e)) => {
                blocked.insert(slot);
                report.done.insert(seq, Err(e));
            }
            Err(Upload::Rejected(e)) => {
                let _ = store.remove_pending(seq);
                shared.emit(
                    "saves",
                    "save_failed",
                    vec![Value::String(slot), e.to_value()],
                );
                report.done.insert(seq, Err(e));
            }
            Err(Upload::Later(e)) => {
                final_status = if matches!(e.code, ErrorCode::Network | ErrorCode::Timeout) {
                    OFFLINE
                } else {
                    ERROR
                };
                report.stopped = Some(e);
                break;
            }
        }
    }
    if final_status == IDLE && !shared.sync.auto.load(Ordering::SeqCst) {
        final_status = DISABLED;
    }
    set_status(shared, final_status);
    report
}

fn classify(e: SdkError) -> Upload {
    if e.code.is_retryable() || matches!(e.code, ErrorCode::Unauthorized | ErrorCode::TokenExpired)
    {
        Upload::Later(e)
    } else {
        Upload::Rejected(e)
    }
}

async fn write(
    shared: &Arc<Shared>,
    slot: &str,
    data: &[u8],
    metadata: &serde_json::Value,
    base_version: i64,
) -> Result<SaveSlotInfo, SdkError> {
    let mut body = Vec::with_capacity(data.len() + 128);
    body.extend_from_slice(b"{\"slot\":");
    body.extend_from_slice(&serde_json::to_vec(slot).expect("strings serialize"));
    body.extend_from_slice(b",\"metadata\":");
    body.extend_from_slice(&serde_json::to_vec(metadata).expect("JSON serializes"));
    body.extend_from_slice(format!(",\"base_version\":{base_version},\"data\":").as_bytes());
    body.extend_from_slice(data);
    body.push(b'}');
    let compressed = zstd::bulk::compress(&body, 3)
        .map_err(|e| SdkError::new(ErrorCode::Internal, format!("zstd: {e}")))?;
    shared
        .authed(|| {
            let mut r = Request::new(Method::POST, "/api/v1/saves/me");
            r.body = Some(Body::Zstd(compressed.clone()));
            r
        })
        .await?
        .json()
}

fn conflict_details(e: &SdkError) -> Option<SaveConflictDetails> {
    serde_json::from_value(to_json(e.details.as_ref()?)).ok()
}

/// Uploads one queued write and settles a conflict by the configured strategy.
async fn upload(
    shared: &Arc<Shared>,
    store: &UserStore,
    seq: u64,
    entry: &crate::storage::PendingHeader,
    data: &[u8],
) -> Result<SaveSlotInfo, Upload> {
    let slot = entry.slot.as_str();
    let base = store
        .read_slot(slot)
        .ok()
        .flatten()
        .map_or(0, |(h, _)| h.server_version);
    let ours = candidate_checksums(data);
    let first = write(shared, slot, data, &entry.metadata, base).await;
    let err = match first {
        Ok(info) => return finish(store, seq, slot, info),
        Err(e) if e.code == ErrorCode::SaveConflict => e,
        Err(e) => return Err(classify(e)),
    };
    let Some(details) = conflict_details(&err) else {
        return Err(Upload::Later(err));
    };
    if let Some(current) = &details.current {
        if ours.contains(&current.checksum) {
            // Our own write, landed by an attempt whose answer was lost: no second version.
            return finish(store, seq, slot, current.clone());
        }
    }
    let strategy = shared.config.conflict_strategy;
    let local_wins = match (strategy, &details.current) {
        (_, None) => true,
        (ConflictStrategy::ClientWins, _) => true,
        (ConflictStrategy::ServerWins, _) => false,
        // A tie goes to the local write: it is the latest action the player took on this device.
        (ConflictStrategy::NewestWins, Some(current)) => entry.written_at >= current.updated_at,
        (ConflictStrategy::Manual, Some(_)) => {
            let first_time = shared
                .sync
                .conflicts
                .lock()
                .expect("lock")
                .insert(slot.to_owned(), details.current_version)
                .is_none();
            if first_time {
                let local = codec::decode(data).unwrap_or(Value::Nil);
                let remote = fetch_remote(shared, slot).await.unwrap_or(Value::Nil);
                shared.emit(
                    "saves",
                    "conflict_detected",
                    vec![Value::String(slot.to_owned()), local, remote],
                );
            }
            return Err(Upload::Blocked(err));
        }
    };
    // Both branches first write the local data on top of the server's version, so whichever
    // side loses stays in the server's history.
    let written = write(shared, slot, data, &entry.metadata, details.current_version)
        .await
        .map_err(classify)?;
    let info = if local_wins {
        written.clone()
    } else {
        restore_version(shared, slot, details.current_version, Some(written.version))
            .await
            .map_err(classify)?
    };
    let result = finish(store, seq, slot, info.clone());
    if !local_wins {
        // The cache follows the winner.
        refresh_cache(shared, store, slot).await;
    }
    shared.emit(
        "saves",
        "conflict_resolved",
        vec![
            Value::String(slot.to_owned()),
            Value::dict([
                ("strategy", Value::String(strategy.as_str().to_owned())),
                (
                    "winner",
                    Value::String(if local_wins { "local" } else { "server" }.to_owned()),
                ),
                ("version", Value::Int(info.version)),
                ("local_version", Value::Int(written.version)),
            ]),
        ],
    );
    result
}

async fn fetch_remote(shared: &Arc<Shared>, slot: &str) -> Option<Value> {
    let path = format!("/api/v1/saves/me/{slot}");
    let reply = shared
        .authed(|| Request::new(Method::GET, path.clone()))
        .await
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
    codec::from_json(json.get("data")?).ok()
}

/// Records an upload in the slot's copy: the new server version becomes the next base.
fn finish(
    store: &UserStore,
    seq: u64,
    slot: &str,
    info: SaveSlotInfo,
) -> Result<SaveSlotInfo, Upload> {
    let cached = store
        .read_slot(slot)
        .map_err(|e| Upload::Later(io_err(e)))?;
    if let Some((mut header, data)) = cached {
        header.server_version = info.version;
        header.server_updated_at = info.updated_at;
        if header.local_seq <= seq {
            header.dirty = false;
            header.checksum = info.checksum.clone();
            header.metadata = info.metadata.clone();
        }
        store
            .write_slot(&header, &data)
            .map_err(|e| Upload::Later(io_err(e)))?;
    }
    Ok(info)
}

/// After sign-in or resume: re-queue what a crash left half done, then upload the queue.
pub(crate) async fn replay_after_sign_in(shared: &Arc<Shared>) {
    if let Some(store) = shared.user_store() {
        if let Err(e) = store.requeue_dirty() {
            tracing::warn!(error = %e, "could not scan the local save cache");
        }
        if store.pending().is_ok_and(|q| !q.is_empty()) {
            flush(shared).await;
        }
    }
}

/// Retries the queue every `auto_sync_interval` (and when woken) while auto-sync is on.
pub(crate) async fn auto_sync_loop(shared: Arc<Shared>) {
    let interval = shared.config.auto_sync_interval;
    loop {
        tokio::select! {
            _ = shared.sync.wake.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
        if shared.sync.auto.load(Ordering::SeqCst) && shared.is_logged_in() {
            flush(&shared).await;
        }
    }
}
