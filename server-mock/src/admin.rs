//! `/__mock/*`: the scripting API over HTTP, for manual play and non-Rust tests.
//! Admin requests need no client key, never hit faults and are not logged.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::MockResult;
use crate::faults::{FaultSpec, FrameFaultSpec, Times};
use crate::layer::ApiJson;
use crate::realtime::{valid_close_code, Disconnect};
use crate::{lock, Inner};

/// How long after answering `POST /__mock/offline` the mock goes offline, so the answer itself
/// reaches the caller before every connection is cut.
pub const OFFLINE_GRACE: Duration = Duration::from_millis(100);

pub(crate) fn router() -> Router<Arc<Inner>> {
    Router::new()
        .route("/__mock/config", get(config))
        .route(
            "/__mock/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/__mock/faults/{id}", axum::routing::delete(remove_fault))
        .route(
            "/__mock/realtime/faults",
            get(list_frame_faults)
                .post(add_frame_fault)
                .delete(clear_frame_faults),
        )
        .route("/__mock/realtime/sockets", get(sockets))
        .route("/__mock/realtime/disconnect", post(disconnect))
        .route("/__mock/expire-tokens", post(expire_tokens))
        .route("/__mock/clock", post(advance_clock))
        .route("/__mock/revoke-sessions", post(revoke_sessions))
        .route("/__mock/conflicting-write", post(conflicting_write))
        .route("/__mock/offline", post(offline))
        .route("/__mock/log", get(log).delete(clear_log))
        .route("/__mock/reset", post(reset))
        .route("/__mock/users", get(users))
        .route("/__mock/outbox", get(outbox))
        .route("/__mock/saves/{user_id}/{slot}/versions", get(versions))
}

async fn config(State(inner): State<Arc<Inner>>) -> Json<Value> {
    let limits = &inner.limits;
    Json(json!({
        "client_key": inner.client_key,
        "server_key": inner.backend().server_key,
        "access_token_ttl_ms": limits.access_token_ttl_secs() * 1000,
        "max_slot_bytes": limits.max_slot_bytes,
        "user_quota_bytes": limits.user_quota_bytes,
        "history_versions": limits.history_versions,
    }))
}

async fn list_faults(State(inner): State<Arc<Inner>>) -> Response {
    Json(json!({ "faults": lock(&inner.faults).list() })).into_response()
}

async fn add_fault(
    State(inner): State<Arc<Inner>>,
    ApiJson(spec): ApiJson<FaultSpec>,
) -> MockResult<(StatusCode, Json<Value>)> {
    if spec.times == Some(0) {
        return Err(crate::error::MockError::invalid(
            "times must be at least 1; leave it out for a fault that lasts until cleared",
        ));
    }
    let times = spec.times.map_or(Times::Always, Times::Next);
    let id = lock(&inner.faults).add(spec.route, spec.action, times);
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

async fn clear_faults(State(inner): State<Arc<Inner>>) -> StatusCode {
    lock(&inner.faults).clear();
    StatusCode::NO_CONTENT
}

async fn remove_fault(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<u64>,
) -> MockResult<StatusCode> {
    if lock(&inner.faults).remove(id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(crate::error::MockError::not_found(format!(
            "no active fault {id}"
        )))
    }
}

async fn list_frame_faults(State(inner): State<Arc<Inner>>) -> Json<Value> {
    Json(json!({ "faults": lock(&inner.faults).list_frames() }))
}

async fn add_frame_fault(
    State(inner): State<Arc<Inner>>,
    ApiJson(spec): ApiJson<FrameFaultSpec>,
) -> MockResult<(StatusCode, Json<Value>)> {
    if spec.times == Some(0) {
        return Err(crate::error::MockError::invalid(
            "times must be at least 1; leave it out for a fault that lasts until cleared",
        ));
    }
    let times = spec.times.map_or(Times::Always, Times::Next);
    let id = lock(&inner.faults).add_frame(spec.filter, spec.action, times);
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

async fn clear_frame_faults(State(inner): State<Arc<Inner>>) -> StatusCode {
    lock(&inner.faults).clear_frames();
    StatusCode::NO_CONTENT
}

async fn sockets(State(inner): State<Arc<Inner>>) -> Json<Value> {
    Json(json!({ "sockets": inner.sockets.list() }))
}

#[derive(Deserialize)]
struct DisconnectRequest {
    /// Only this player's sockets; all when absent.
    #[serde(default)]
    user_id: Option<String>,
    /// A close frame with this code; without one the TCP connection just closes.
    #[serde(default)]
    close_code: Option<u16>,
    #[serde(default)]
    reason: Option<String>,
}

/// Ends live realtime sockets now; answers how many once they are gone.
async fn disconnect(
    State(inner): State<Arc<Inner>>,
    ApiJson(req): ApiJson<DisconnectRequest>,
) -> MockResult<Json<Value>> {
    let how = match req.close_code {
        Some(code) if !valid_close_code(code) => {
            return Err(crate::error::MockError::invalid(format!(
                "close_code {code} is not one a server may send (1000-1003, 1007-1014, 3000-4999)"
            )))
        }
        Some(code) => {
            let reason = req.reason.unwrap_or_default();
            // A close frame's payload is at most 125 bytes, 2 of them the code.
            if reason.len() > 123 {
                return Err(crate::error::MockError::invalid(
                    "reason is limited to 123 bytes",
                ));
            }
            Disconnect::Close { code, reason }
        }
        None if req.reason.is_some() => {
            return Err(crate::error::MockError::invalid(
                "a reason needs a close_code (without one the connection closes abruptly)",
            ))
        }
        None => Disconnect::Abrupt,
    };
    let disconnected = inner.sockets.disconnect(req.user_id.as_deref(), how).await;
    Ok(Json(json!({ "disconnected": disconnected })))
}

async fn expire_tokens(State(inner): State<Arc<Inner>>) -> MockResult<Json<Value>> {
    let expired = inner.backend().expire_access_tokens().await?;
    Ok(Json(json!({ "expired": expired })))
}

#[derive(Deserialize)]
struct AdvanceClock {
    advance_ms: u64,
}

/// Moves the server's clock forward; answers the clock's new time (unix milliseconds).
async fn advance_clock(
    State(inner): State<Arc<Inner>>,
    ApiJson(req): ApiJson<AdvanceClock>,
) -> MockResult<Json<Value>> {
    let ms = i64::try_from(req.advance_ms)
        .map_err(|_| crate::error::MockError::invalid("advance_ms is too large"))?;
    let clock = inner.backend().clock.clone();
    clock.advance_ms(ms);
    Ok(Json(
        json!({ "now_ms": aethex_server::clock::Clock::now_ms(&*clock) }),
    ))
}

async fn revoke_sessions(State(inner): State<Arc<Inner>>) -> MockResult<Json<Value>> {
    let revoked = inner.backend().revoke_all_sessions().await?;
    Ok(Json(json!({ "revoked": revoked })))
}

#[derive(Deserialize)]
struct ConflictingWrite {
    user_id: String,
    slot: String,
    data: Value,
    #[serde(default)]
    metadata: Option<Value>,
}

async fn conflicting_write(
    State(inner): State<Arc<Inner>>,
    ApiJson(req): ApiJson<ConflictingWrite>,
) -> MockResult<Response> {
    let info = inner
        .conflicting_write(&req.user_id, &req.slot, req.data, req.metadata)
        .await?;
    Ok(Json(info).into_response())
}

#[derive(Deserialize)]
struct Offline {
    /// How long to stay offline; then the mock listens on the same port again.
    seconds: f64,
}

async fn offline(
    State(inner): State<Arc<Inner>>,
    ApiJson(req): ApiJson<Offline>,
) -> MockResult<(StatusCode, Json<Value>)> {
    if !(req.seconds.is_finite() && (0.0..=3600.0).contains(&req.seconds)) {
        return Err(crate::error::MockError::invalid(
            "seconds must be between 0 and 3600",
        ));
    }
    let duration = Duration::from_secs_f64(req.seconds);
    tokio::spawn(async move {
        tokio::time::sleep(OFFLINE_GRACE).await;
        inner.set_offline(true).await;
        tokio::time::sleep(duration).await;
        inner.set_offline(false).await;
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "offline_in_ms": OFFLINE_GRACE.as_millis() as u64,
            "seconds": req.seconds,
        })),
    ))
}

async fn log(State(inner): State<Arc<Inner>>) -> Json<Value> {
    Json(json!({ "requests": lock(&inner.log).entries() }))
}

async fn clear_log(State(inner): State<Arc<Inner>>) -> StatusCode {
    lock(&inner.log).clear();
    StatusCode::NO_CONTENT
}

async fn reset(State(inner): State<Arc<Inner>>) -> MockResult<StatusCode> {
    inner.reset().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn users(State(inner): State<Arc<Inner>>) -> MockResult<Json<Value>> {
    let users = inner.backend().users().await?;
    Ok(Json(json!({ "users": users })))
}

async fn outbox(State(inner): State<Arc<Inner>>) -> MockResult<Json<Value>> {
    let mails = inner.backend().outbox().await?;
    Ok(Json(json!({ "mails": mails })))
}

/// Every kept version, oldest first; empty when the user or slot does not exist.
async fn versions(
    State(inner): State<Arc<Inner>>,
    Path((user_id, slot)): Path<(String, String)>,
) -> Json<Value> {
    let versions = inner
        .backend()
        .versions(&user_id, &slot)
        .await
        .unwrap_or_default();
    Json(json!({ "versions": versions }))
}
