//! HTTP handlers of the save endpoints.

use aethex_protocol::saves::{
    RestoreSaveRequest, SaveData, SaveHistory, SaveList, SaveSlotInfo, WriteSaveRequest,
};
use aethex_protocol::{ErrorCode, ErrorEnvelope};
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::store::{self, Change, Kind, NewVersion, Precondition, VersionRow};
use super::{MAX_METADATA_BYTES, MAX_SLOT_NAME_LEN};
use crate::app::AppState;
use crate::caller::Caller;
use crate::db::new_id;
use crate::error::{ApiError, ApiResult};
use crate::http::ApiJson;
use crate::projects::hex;

/// Blobs above this size are compressed/encrypted on the blocking pool so a big save never
/// stalls the async workers serving other requests.
const INLINE_CODEC_BYTES: usize = 64 * 1024;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only this slot's versions; every slot's when absent.
    #[param(
        min_length = 1,
        max_length = 64,
        pattern = r"^(?!history$)[A-Za-z0-9_][A-Za-z0-9_.-]*$"
    )]
    pub slot: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// A kept older version (see history); the current version when absent.
    #[param(minimum = 1)]
    pub version: Option<i64>,
}

fn path<T>(extracted: Result<Path<T>, PathRejection>) -> ApiResult<T> {
    extracted
        .map(|Path(v)| v)
        .map_err(|e| ApiError::invalid(e.body_text()))
}

fn query<T>(extracted: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    extracted
        .map(|Query(v)| v)
        .map_err(|e| ApiError::invalid(e.body_text()))
}

/// The target player: a player reaches only themselves; a server key any player of its project.
async fn resolve_user(state: &AppState, caller: &Caller, path_user_id: &str) -> ApiResult<String> {
    let user_id = caller.target_user(path_user_id)?;
    if let Caller::Server(project) = caller {
        if !store::user_in_project(&state.db.read, &user_id, &project.id).await? {
            return Err(ApiError::not_found("no such user in this project"));
        }
    }
    Ok(user_id)
}

/// 1 to 64 of `A-Z a-z 0-9 _ . -`, starting with a letter, digit or `_` (so never `.`/`..`,
/// which URLs collapse); `history` is taken by the history endpoint.
pub fn validate_slot(slot: &str) -> ApiResult<()> {
    let valid = !slot.is_empty()
        && slot.len() <= MAX_SLOT_NAME_LEN
        && slot
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && slot
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && slot != "history";
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "slot must be 1 to {MAX_SLOT_NAME_LEN} characters of A-Z a-z 0-9 _ . -, start with a \
             letter, digit or _, and not be `history`"
        )))
    }
}

fn metadata_text(metadata: Option<serde_json::Value>) -> ApiResult<String> {
    let metadata = match metadata {
        None | Some(serde_json::Value::Null) => return Ok("{}".to_owned()),
        Some(m @ serde_json::Value::Object(_)) => m,
        Some(_) => return Err(ApiError::invalid("metadata must be a JSON object")),
    };
    let text = metadata.to_string();
    if text.len() > MAX_METADATA_BYTES {
        return Err(ApiError::invalid(format!(
            "metadata is {} bytes; at most {MAX_METADATA_BYTES} are allowed",
            text.len()
        )));
    }
    Ok(text)
}

fn base_version(base: Option<i64>) -> ApiResult<Precondition> {
    match base.unwrap_or(0) {
        b if b < 0 => Err(ApiError::invalid("base_version must be 0 or positive")),
        b => Ok(Precondition::Base(b)),
    }
}

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header value")
}

/// Whether `If-None-Match` names this version (or `*`).
fn if_none_match(headers: &HeaderMap, version: i64) -> bool {
    let wanted = format!("\"{version}\"");
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/"))
        .any(|tag| tag == "*" || tag == wanted)
}

/// `If-Match: "<version>"` on delete; `*` or absent = any current version.
fn if_match(headers: &HeaderMap) -> ApiResult<Option<i64>> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::invalid("If-Match is not valid text"))?
        .trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| ApiError::invalid("If-Match must be a version ETag like \"3\""))
}

async fn run_codec<T: Send + 'static>(
    len: usize,
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    if len <= INLINE_CODEC_BYTES {
        work()
    } else {
        tokio::task::spawn_blocking(work).await?
    }
}

/// The exact `data` bytes of a version, checked against its SHA-256: a damaged or missing blob is
/// a logged 500, never wrong data. `None` when retention pruned the version since its row was
/// read (its blob is gone together with its row).
async fn load_data(state: &AppState, user_id: &str, row: &VersionRow) -> ApiResult<Option<Bytes>> {
    let key = row
        .blob_key
        .clone()
        .ok_or_else(|| ApiError::not_found("this version is a deletion and holds no data"))?;
    let blob = match state.blobs.get(&key).await {
        Ok(blob) => blob,
        Err(object_store::Error::NotFound { .. })
            if store::version(&state.db.read, user_id, &row.slot, row.version)
                .await?
                .is_none() =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let codec = state.saves.codec.clone();
    let size = usize::try_from(row.size).map_err(ApiError::internal)?;
    let expected = row.checksum.clone();
    let plain = run_codec(size, move || {
        let plain = codec.open(&key, &blob, size)?;
        let actual = hex(&Sha256::digest(&plain));
        anyhow::ensure!(
            actual == expected,
            "blob {key} checksum {actual} does not match the recorded {expected}"
        );
        Ok(plain)
    })
    .await
    .map_err(|e| {
        metrics::counter!("aethex_save_corrupt_blobs_total").increment(1);
        ApiError::internal(format!("save blob unreadable: {e:#}"))
    })?;
    Ok(Some(Bytes::from(plain)))
}

/// Stores `plain` as the slot's next version: blob first, then the row (see the module doc).
#[allow(clippy::too_many_arguments)]
async fn store_version(
    state: &AppState,
    user_id: &str,
    slot: &str,
    precondition: Precondition,
    plain: Vec<u8>,
    metadata: String,
    kind: Kind,
    restored_from: Option<i64>,
) -> ApiResult<VersionRow> {
    let size = plain.len() as i64;
    if size > state.saves.max_slot_bytes {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "save data is {size} bytes; a slot holds at most {}",
                state.saves.max_slot_bytes
            ),
        ));
    }
    // Reject a stale base before spending a big blob on it; the transaction checks again. Small
    // saves skip this read: a conflict wastes less on them than the read costs every write.
    if plain.len() > INLINE_CODEC_BYTES {
        precondition.check(store::latest(&state.db.read, user_id, slot).await?.as_ref())?;
    }

    let blob_key = format!("saves/{user_id}/{}", new_id());
    let codec = state.saves.codec.clone();
    let key = blob_key.clone();
    let (checksum, blob) = run_codec(plain.len(), move || {
        let checksum = hex(&Sha256::digest(&plain));
        Ok((checksum, codec.seal(&key, &plain)?))
    })
    .await
    .map_err(ApiError::internal)?;
    state.blobs.put(&blob_key, Bytes::from(blob)).await?;

    let new = NewVersion {
        kind,
        size,
        checksum,
        metadata,
        blob_key: Some(blob_key.clone()),
        restored_from,
    };
    let committed = state
        .saves
        .writer
        .commit(Change {
            user_id: user_id.to_owned(),
            slot: slot.to_owned(),
            precondition,
            new,
            now_ms: state.clock.now_ms(),
        })
        .await;
    match committed {
        Ok(committed) => {
            delete_blobs(state, &committed.pruned_blobs).await;
            Ok(committed.row)
        }
        Err(e) => {
            // Only a definite refusal frees the blob: after a database error the commit may
            // still have landed (e.g. a connection lost during COMMIT), and deleting the blob
            // then would leave a visible version without data. An unused blob is harmless.
            if e.code != ErrorCode::Internal {
                delete_blobs(state, &[blob_key]).await;
            }
            Err(e)
        }
    }
}

/// Best effort: a blob left behind is unreferenced and harmless.
async fn delete_blobs(state: &AppState, keys: &[String]) {
    for key in keys {
        if let Err(e) = state.blobs.delete(key).await {
            tracing::warn!(error = %e, blob = %key, "could not delete an unreferenced save blob");
        }
    }
}

fn info_response(row: &VersionRow) -> Response {
    let mut response = Json(row.slot_info()).into_response();
    response
        .headers_mut()
        .insert(header::ETAG, etag(row.version));
    response
}

#[utoipa::path(
    get,
    path = "/api/v1/saves/{user_id}",
    tag = "saves",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    params(("user_id" = String, Path, description = "A player id, or `me`")),
    responses(
        (status = 200, description = "Every slot's current version, plus used and quota bytes", body = SaveList),
        (status = 401, description = "Missing or invalid credentials", body = ErrorEnvelope),
        (status = 403, description = "Another player's saves", body = ErrorEnvelope),
        (status = 404, description = "(server key) no such user in the project", body = ErrorEnvelope),
    )
)]
pub async fn list_saves(
    State(state): State<AppState>,
    caller: Caller,
    user_id: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<SaveList>> {
    let user_id = resolve_user(&state, &caller, &path(user_id)?).await?;
    let slots = store::current_slots(&state.db.read, &user_id).await?;
    Ok(Json(SaveList {
        slots: slots.iter().map(VersionRow::slot_info).collect(),
        used_bytes: store::used_bytes(&state.db.read, &user_id).await?,
        quota_bytes: state.saves.limits.user_quota_bytes,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/saves/{user_id}",
    tag = "saves",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    params(("user_id" = String, Path, description = "A player id, or `me`")),
    request_body = WriteSaveRequest,
    responses(
        (status = 200, description = "The new current version (also as `ETag`)", body = SaveSlotInfo),
        (status = 400, description = "Invalid slot name, metadata, base_version or JSON", body = ErrorEnvelope),
        (status = 403, description = "Another player's saves", body = ErrorEnvelope),
        (status = 409, description = "`save_conflict`: base_version is not the current version; `details` is a SaveConflictDetails", body = ErrorEnvelope),
        (status = 413, description = "`payload_too_large` (slot limit) or `quota_exceeded` (player quota)", body = ErrorEnvelope),
    )
)]
pub async fn write_save(
    State(state): State<AppState>,
    caller: Caller,
    user_id: Result<Path<String>, PathRejection>,
    ApiJson(req): ApiJson<WriteSaveRequest>,
) -> ApiResult<Response> {
    let user_id = resolve_user(&state, &caller, &path(user_id)?).await?;
    validate_slot(&req.slot)?;
    let metadata = metadata_text(req.metadata)?;
    let precondition = base_version(req.base_version)?;
    // The checksum covers exactly these bytes, which are what is stored and served back.
    let plain = serde_json::to_vec(&req.data).map_err(ApiError::internal)?;
    let row = store_version(
        &state,
        &user_id,
        &req.slot,
        precondition,
        plain,
        metadata,
        Kind::Write,
        None,
    )
    .await?;
    Ok(info_response(&row))
}

#[utoipa::path(
    get,
    path = "/api/v1/saves/{user_id}/{save_id}",
    tag = "saves",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    params(
        ("user_id" = String, Path, description = "A player id, or `me`"),
        ("save_id" = String, Path, description = "The slot name", min_length = 1, max_length = 64, pattern = r"^(?!history$)[A-Za-z0-9_][A-Za-z0-9_.-]*$"),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "A version ETag the client already has"),
        ReadQuery,
    ),
    responses(
        (status = 200, description = "The slot's data; `ETag: \"<version>\"`", body = SaveData),
        (status = 304, description = "The client's `If-None-Match` is the current version"),
        (status = 403, description = "Another player's saves", body = ErrorEnvelope),
        (status = 404, description = "No such slot (or version), or the slot is deleted", body = ErrorEnvelope),
        (status = 500, description = "The stored data failed its checksum (logged)", body = ErrorEnvelope),
    )
)]
pub async fn read_save(
    State(state): State<AppState>,
    caller: Caller,
    ids: Result<Path<(String, String)>, PathRejection>,
    read: Result<Query<ReadQuery>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (path_user, slot) = path(ids)?;
    let read = query(read)?;
    let user_id = resolve_user(&state, &caller, &path_user).await?;
    validate_slot(&slot)?;
    // A write may prune the version just looked up (history_versions = 1): look again.
    for _ in 0..3 {
        let row = match read.version {
            Some(version) => store::version(&state.db.read, &user_id, &slot, version).await?,
            None => store::latest(&state.db.read, &user_id, &slot).await?,
        }
        .filter(|row| !row.is_delete())
        .ok_or_else(|| ApiError::not_found("no such save slot or version"))?;

        if if_none_match(&headers, row.version) {
            return Ok((
                StatusCode::NOT_MODIFIED,
                [(header::ETAG, etag(row.version))],
            )
                .into_response());
        }
        if let Some(data) = load_data(&state, &user_id, &row).await? {
            return save_data_response(&row, &data);
        }
    }
    Err(ApiError::new(
        ErrorCode::Unavailable,
        "the slot is changing too fast to read; retry",
    ))
}

fn save_data_response(row: &VersionRow, data: &[u8]) -> ApiResult<Response> {
    // SaveData is the info fields plus `data`; splice the stored JSON in as is instead of
    // parsing and re-serializing a possibly large document.
    let info = serde_json::to_vec(&row.slot_info()).map_err(ApiError::internal)?;
    let mut body = Vec::with_capacity(info.len() + data.len() + 16);
    body.extend_from_slice(&info[..info.len() - 1]);
    body.extend_from_slice(b",\"data\":");
    body.extend_from_slice(data);
    body.push(b'}');
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag(row.version)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-cache"),
            ),
        ],
        Body::from(body),
    )
        .into_response())
}

#[utoipa::path(
    delete,
    path = "/api/v1/saves/{user_id}/{save_id}",
    tag = "saves",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    params(
        ("user_id" = String, Path, description = "A player id, or `me`"),
        ("save_id" = String, Path, description = "The slot name", min_length = 1, max_length = 64, pattern = r"^(?!history$)[A-Za-z0-9_][A-Za-z0-9_.-]*$"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "Delete only if the current version is this ETag (`*`: any)", pattern = r#"^(\*|(W/)?"?[0-9]{1,18}"?)$"#),
    ),
    responses(
        (status = 204, description = "Deleted: a `delete` version was added; history stays restorable"),
        (status = 403, description = "Another player's saves", body = ErrorEnvelope),
        (status = 404, description = "No such slot, or already deleted", body = ErrorEnvelope),
        (status = 409, description = "`save_conflict`: If-Match is not the current version", body = ErrorEnvelope),
    )
)]
pub async fn delete_save(
    State(state): State<AppState>,
    caller: Caller,
    ids: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let (path_user, slot) = path(ids)?;
    let user_id = resolve_user(&state, &caller, &path_user).await?;
    validate_slot(&slot)?;
    let new = NewVersion {
        kind: Kind::Delete,
        size: 0,
        checksum: String::new(),
        metadata: "{}".to_owned(),
        blob_key: None,
        restored_from: None,
    };
    let committed = state
        .saves
        .writer
        .commit(Change {
            user_id,
            slot,
            precondition: Precondition::Exists(if_match(&headers)?),
            new,
            now_ms: state.clock.now_ms(),
        })
        .await?;
    delete_blobs(&state, &committed.pruned_blobs).await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/v1/saves/{user_id}/history",
    tag = "saves",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    params(("user_id" = String, Path, description = "A player id, or `me`"), HistoryQuery),
    responses(
        (status = 200, description = "Every kept version, newest first", body = SaveHistory),
        (status = 403, description = "Another player's saves", body = ErrorEnvelope),
    )
)]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    user_id: Result<Path<String>, PathRejection>,
    filter: Result<Query<HistoryQuery>, QueryRejection>,
) -> ApiResult<Json<SaveHistory>> {
    let filter = query(filter)?;
    let user_id = resolve_user(&state, &caller, &path(user_id)?).await?;
    if let Some(slot) = &filter.slot {
        validate_slot(slot)?;
    }
    let rows = store::history(&state.db.read, &user_id, filter.slot.as_deref()).await?;
    Ok(Json(SaveHistory {
        versions: rows.iter().map(VersionRow::version_info).collect(),
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/saves/{user_id}/{save_id}/restore",
    tag = "saves",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    params(
        ("user_id" = String, Path, description = "A player id, or `me`"),
        ("save_id" = String, Path, description = "The slot name", min_length = 1, max_length = 64, pattern = r"^(?!history$)[A-Za-z0-9_][A-Za-z0-9_.-]*$"),
    ),
    request_body = RestoreSaveRequest,
    responses(
        (status = 200, description = "A new current version holding the restored content", body = SaveSlotInfo),
        (status = 400, description = "The version is a deletion, or invalid input", body = ErrorEnvelope),
        (status = 403, description = "Another player's saves", body = ErrorEnvelope),
        (status = 404, description = "No such kept version", body = ErrorEnvelope),
        (status = 409, description = "`save_conflict`: base_version is not the current version", body = ErrorEnvelope),
        (status = 413, description = "`quota_exceeded`", body = ErrorEnvelope),
    )
)]
pub async fn restore_save(
    State(state): State<AppState>,
    caller: Caller,
    ids: Result<Path<(String, String)>, PathRejection>,
    ApiJson(req): ApiJson<RestoreSaveRequest>,
) -> ApiResult<Response> {
    let (path_user, slot) = path(ids)?;
    let user_id = resolve_user(&state, &caller, &path_user).await?;
    validate_slot(&slot)?;
    let precondition = match req.base_version {
        Some(_) => base_version(req.base_version)?,
        None => Precondition::None,
    };
    let source = store::version(&state.db.read, &user_id, &slot, req.version)
        .await?
        .ok_or_else(|| ApiError::not_found("no such kept version of this slot"))?;
    if source.is_delete() {
        return Err(ApiError::invalid(
            "that version is a deletion; restore a version that holds data",
        ));
    }
    let plain = load_data(&state, &user_id, &source)
        .await?
        .ok_or_else(|| ApiError::not_found("no such kept version of this slot"))?
        .to_vec();
    let row = store_version(
        &state,
        &user_id,
        &slot,
        precondition,
        plain,
        source.metadata.clone(),
        Kind::Restore,
        Some(source.version),
    )
    .await?;
    Ok(info_response(&row))
}
