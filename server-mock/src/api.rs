//! The mocked API (same paths, bodies, statuses and error codes as the real server) and the
//! front middleware that applies scripted faults and records the request log.

use std::sync::Arc;

use aethex_protocol::auth::{
    DeviceAuthRequest, ForgotPasswordRequest, LinkDeviceRequest, LinkEmailRequest, LoginRequest,
    RefreshRequest, RegisterRequest, ResetPasswordRequest, UpdateProfileRequest,
    VerifyEmailRequest,
};
use aethex_protocol::saves::{RestoreSaveRequest, SaveSlotInfo, WriteSaveRequest};
use aethex_protocol::{ErrorCode, CLIENT_KEY_HEADER};
use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::header::{
    AUTHORIZATION, CONTENT_LENGTH, ETAG, IF_MATCH, IF_NONE_MATCH, TRANSFER_ENCODING,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tower_http::compression::CompressionLayer;
use tower_http::decompression::RequestDecompressionLayer;

use crate::error::{MockError, MockResult};
use crate::faults::{DropWhen, FaultAction};
use crate::log::LogEntry;
use crate::net::{ConnControl, CutBody};
use crate::{lock, Inner};

/// Request bodies may be this big (decompressed); bigger saves are the store's 413 to give.
const BODY_LIMIT: usize = 64 * 1024 * 1024;

pub(crate) fn router(inner: Arc<Inner>) -> Router {
    let api = Router::new()
        .route("/api/v1/auth/device", post(device_login))
        .route("/api/v1/auth/register", post(register))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route("/api/v1/auth/logout", post(logout))
        .route("/api/v1/auth/profile", get(profile).put(update_profile))
        .route("/api/v1/auth/link/device", post(link_device))
        .route("/api/v1/auth/link/email", post(link_email))
        .route("/api/v1/auth/email/verify", post(verify_email))
        .route("/api/v1/auth/password/forgot", post(forgot_password))
        .route("/api/v1/auth/password/reset", post(reset_password))
        .route("/api/v1/saves/{user_id}", get(list_saves).post(write_save))
        .route("/api/v1/saves/{user_id}/history", get(history))
        .route(
            "/api/v1/saves/{user_id}/{slot}",
            get(load_save).delete(delete_save),
        )
        .route("/api/v1/saves/{user_id}/{slot}/restore", post(restore))
        .route_layer(middleware::from_fn_with_state(
            inner.clone(),
            require_client_key,
        ));
    Router::new()
        .merge(api)
        .route("/healthz", get(|| async { "ok" }))
        .merge(crate::admin::router())
        .fallback(|| async { MockError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(RequestDecompressionLayer::new())
        .layer(CompressionLayer::new())
        .layer(middleware::from_fn_with_state(inner.clone(), front))
        .with_state(inner)
}

/// A request's log entry, written when the request ends however it ends: answered, dropped by
/// a fault, or abandoned because the client hung up first (then `client_gone`).
struct PendingLog {
    inner: Arc<Inner>,
    entry: Option<LogEntry>,
}

impl PendingLog {
    fn entry(&mut self) -> &mut LogEntry {
        self.entry.as_mut().expect("entry is taken only on finish")
    }

    /// `status` = what the client received; `None` when the mock closed the socket instead.
    fn finish(mut self, status: Option<u16>) {
        if let Some(mut entry) = self.entry.take() {
            entry.status = status;
            lock(&self.inner.log).push(entry);
        }
    }
}

impl Drop for PendingLog {
    fn drop(&mut self) {
        if let Some(mut entry) = self.entry.take() {
            entry.client_gone = true;
            lock(&self.inner.log).push(entry);
        }
    }
}

/// Applies the scripted faults to API requests and logs them. Outermost layer, so the log shows
/// the request as sent (e.g. its `Content-Encoding`) and a drop happens before any byte is
/// written.
async fn front(State(inner): State<Arc<Inner>>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/__mock/") {
        return next.run(req).await;
    }
    let entry = LogEntry::begin(
        req.method().as_str(),
        req.uri().path(),
        req.uri().query(),
        req.headers(),
        inner.started,
    );
    let mut log = PendingLog {
        inner: inner.clone(),
        entry: Some(entry),
    };
    let plan = lock(&inner.faults).take(req.method(), req.uri().path());
    log.entry().faults = plan.fired;
    if !plan.delay.is_zero() {
        tokio::time::sleep(plan.delay).await;
    }
    let control = req.extensions().get::<ConnControl>().cloned();
    let response = match (plan.terminal, control) {
        (None | Some(FaultAction::Delay { .. }), _) => {
            log.entry().handled = true;
            next.run(req).await
        }
        (
            Some(FaultAction::Fail {
                status,
                code,
                retry_after_secs,
            }),
            _,
        ) => MockError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: format!("injected fault: {status} {code}"),
            details: None,
            retry_after: retry_after_secs,
        }
        .into_response(),
        (Some(FaultAction::RateLimit { retry_after_secs }), _) => MockError {
            retry_after: Some(retry_after_secs),
            ..MockError::new(ErrorCode::RateLimited, "too many requests, retry later")
        }
        .into_response(),
        (Some(FaultAction::Drop { when }), Some(control)) => {
            return drop_connection(log, when, control, req, next).await;
        }
        (Some(FaultAction::Drop { .. }), None) => {
            MockError::new(ErrorCode::Internal, "cannot drop: no connection control")
                .into_response()
        }
    };
    log.finish(Some(response.status().as_u16()));
    response
}

async fn drop_connection(
    mut log: PendingLog,
    when: DropWhen,
    control: ConnControl,
    req: Request,
    next: Next,
) -> Response {
    match when {
        DropWhen::BeforeHandling => {
            log.finish(None);
            control.kill().await
        }
        DropWhen::MidBody => {
            let mut body = req.into_body();
            // One chunk, then hang up: the client is still uploading the rest.
            let _ = std::future::poll_fn(|cx| {
                http_body::Body::poll_frame(std::pin::Pin::new(&mut body), cx)
            })
            .await;
            log.finish(None);
            control.kill().await
        }
        DropWhen::AfterHandling => {
            log.entry().handled = true;
            let response = next.run(req).await;
            drop(response);
            log.finish(None);
            control.kill().await
        }
        DropWhen::MidResponse => {
            log.entry().handled = true;
            let (mut parts, body) = next.run(req).await.into_parts();
            let full = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let half = full.slice(..full.len() / 2);
            parts.headers.remove(TRANSFER_ENCODING);
            // At least one promised byte, so even an empty answer is cut short.
            parts
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(full.len().max(1)));
            log.finish(Some(parts.status.as_u16()));
            Response::from_parts(parts, Body::new(CutBody::new(half)))
        }
    }
}

async fn require_client_key(State(inner): State<Arc<Inner>>, req: Request, next: Next) -> Response {
    match req.headers().get(CLIENT_KEY_HEADER) {
        None => MockError::unauthorized("missing X-AeThex-Key header (the game's client key)")
            .into_response(),
        Some(key) if key.as_bytes().trim_ascii() != inner.client_key.as_bytes() => {
            MockError::unauthorized("unknown client key").into_response()
        }
        Some(_) => next.run(req).await,
    }
}

/// `axum::Json` whose rejections are the API's 400 `invalid_request` / 413 `payload_too_large`.
pub(crate) struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = MockError;

    async fn from_request(req: Request, state: &S) -> Result<Self, MockError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> MockError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return MockError::new(ErrorCode::PayloadTooLarge, "request body is too large");
    }
    MockError::invalid(rejection.body_text())
}

/// The signed-in player: (user id, session id).
fn player(inner: &Inner, headers: &HeaderMap) -> MockResult<(String, String)> {
    let value = headers
        .get(AUTHORIZATION)
        .ok_or_else(|| MockError::unauthorized("missing Authorization: Bearer <access token>"))?
        .to_str()
        .map_err(|_| MockError::unauthorized("Authorization header is not valid text"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| MockError::unauthorized("malformed Authorization header"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(MockError::new(
            ErrorCode::Forbidden,
            "the mock only serves players (Bearer tokens)",
        ));
    }
    lock(&inner.store).authenticate(token.trim())
}

/// `me` or the caller's own id; any other id is 403, as on the real server.
fn target_user(caller: &str, path_user_id: &str) -> MockResult<String> {
    if path_user_id == "me" || path_user_id == caller {
        Ok(caller.to_owned())
    } else {
        Err(MockError::new(
            ErrorCode::Forbidden,
            "players may only access their own data",
        ))
    }
}

async fn device_login(
    State(inner): State<Arc<Inner>>,
    ApiJson(req): ApiJson<DeviceAuthRequest>,
) -> MockResult<Response> {
    let auth = lock(&inner.store).device_login(&req.device_id, req.username)?;
    Ok(Json(auth).into_response())
}

async fn register(
    State(inner): State<Arc<Inner>>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> MockResult<Response> {
    let auth = lock(&inner.store).register(&req.email, &req.password, req.username)?;
    Ok((StatusCode::CREATED, Json(auth)).into_response())
}

async fn login(
    State(inner): State<Arc<Inner>>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> MockResult<Response> {
    let auth = lock(&inner.store).login(&req.email, &req.password)?;
    Ok(Json(auth).into_response())
}

async fn refresh(
    State(inner): State<Arc<Inner>>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> MockResult<Response> {
    let auth = lock(&inner.store).refresh(&req.refresh_token)?;
    Ok(Json(auth).into_response())
}

async fn logout(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> MockResult<StatusCode> {
    let (_, session_id) = player(&inner, &headers)?;
    lock(&inner.store).logout(&session_id);
    Ok(StatusCode::NO_CONTENT)
}

async fn profile(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> MockResult<Response> {
    let (user_id, _) = player(&inner, &headers)?;
    let user = lock(&inner.store).profile(&user_id)?;
    Ok(Json(user).into_response())
}

async fn update_profile(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<UpdateProfileRequest>,
) -> MockResult<Response> {
    let (user_id, _) = player(&inner, &headers)?;
    let user = lock(&inner.store).update_profile(&user_id, req)?;
    Ok(Json(user).into_response())
}

async fn link_device(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LinkDeviceRequest>,
) -> MockResult<Response> {
    let (user_id, _) = player(&inner, &headers)?;
    let user = lock(&inner.store).link_device(&user_id, &req.device_id)?;
    Ok(Json(user).into_response())
}

async fn link_email(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LinkEmailRequest>,
) -> MockResult<Response> {
    let (user_id, _) = player(&inner, &headers)?;
    let user = lock(&inner.store).link_email(&user_id, &req.email, &req.password)?;
    Ok(Json(user).into_response())
}

async fn verify_email(
    State(inner): State<Arc<Inner>>,
    ApiJson(req): ApiJson<VerifyEmailRequest>,
) -> MockResult<Response> {
    let user = lock(&inner.store).verify_email(&req.token)?;
    Ok(Json(user).into_response())
}

async fn forgot_password(
    State(inner): State<Arc<Inner>>,
    ApiJson(req): ApiJson<ForgotPasswordRequest>,
) -> StatusCode {
    lock(&inner.store).forgot_password(&req.email);
    StatusCode::ACCEPTED
}

async fn reset_password(
    State(inner): State<Arc<Inner>>,
    ApiJson(req): ApiJson<ResetPasswordRequest>,
) -> MockResult<StatusCode> {
    lock(&inner.store).reset_password(&req.token, &req.new_password)?;
    Ok(StatusCode::NO_CONTENT)
}

fn query<T>(extracted: Result<Query<T>, QueryRejection>) -> MockResult<T> {
    extracted
        .map(|Query(value)| value)
        .map_err(|e| MockError::invalid(e.body_text()))
}

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).expect("digits are a valid header value")
}

/// A write's or restore's answer: the new version, also as `ETag`.
fn info_response(info: SaveSlotInfo) -> Response {
    let etag = etag(info.version);
    ([(ETAG, etag)], Json(info)).into_response()
}

async fn list_saves(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(path_user): Path<String>,
) -> MockResult<Response> {
    let (caller, _) = player(&inner, &headers)?;
    let user_id = target_user(&caller, &path_user)?;
    let list = lock(&inner.store).list_saves(&user_id);
    Ok(Json(list).into_response())
}

async fn write_save(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(path_user): Path<String>,
    ApiJson(req): ApiJson<WriteSaveRequest>,
) -> MockResult<Response> {
    let (caller, _) = player(&inner, &headers)?;
    let user_id = target_user(&caller, &path_user)?;
    let info = lock(&inner.store).write_save(
        &user_id,
        &req.slot,
        req.data,
        req.metadata,
        req.base_version,
    )?;
    Ok(info_response(info))
}

fn etag_matches(if_none_match: &str, version: i64) -> bool {
    let version = version.to_string();
    if_none_match.split(',').any(|tag| {
        let tag = tag.trim();
        let tag = tag.strip_prefix("W/").unwrap_or(tag).trim_matches('"');
        tag == "*" || tag == version
    })
}

/// `If-Match: "<version>"` on delete; `*` or absent = whatever is current.
fn if_match(headers: &HeaderMap) -> MockResult<Option<i64>> {
    let Some(value) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| MockError::invalid("If-Match is not valid text"))?
        .trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| MockError::invalid("If-Match must be a version ETag like \"3\""))
}

#[derive(Deserialize)]
struct ReadQuery {
    version: Option<i64>,
}

async fn load_save(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path((path_user, slot)): Path<(String, String)>,
    read: Result<Query<ReadQuery>, QueryRejection>,
) -> MockResult<Response> {
    let (caller, _) = player(&inner, &headers)?;
    let user_id = target_user(&caller, &path_user)?;
    let read = query(read)?;
    let save = lock(&inner.store).load_save(&user_id, &slot, read.version)?;
    let not_modified = headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| etag_matches(v, save.info.version));
    if not_modified {
        return Ok((StatusCode::NOT_MODIFIED, [(ETAG, etag(save.info.version))]).into_response());
    }
    Ok(([(ETAG, etag(save.info.version))], Json(save)).into_response())
}

async fn delete_save(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path((path_user, slot)): Path<(String, String)>,
) -> MockResult<StatusCode> {
    let (caller, _) = player(&inner, &headers)?;
    let user_id = target_user(&caller, &path_user)?;
    let expected = if_match(&headers)?;
    lock(&inner.store).delete_save(&user_id, &slot, expected)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
struct HistoryQuery {
    slot: Option<String>,
}

async fn history(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path(path_user): Path<String>,
    history: Result<Query<HistoryQuery>, QueryRejection>,
) -> MockResult<Response> {
    let (caller, _) = player(&inner, &headers)?;
    let user_id = target_user(&caller, &path_user)?;
    let history = query(history)?;
    let versions = lock(&inner.store).history(&user_id, history.slot.as_deref());
    Ok(Json(versions).into_response())
}

async fn restore(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Path((path_user, slot)): Path<(String, String)>,
    ApiJson(req): ApiJson<RestoreSaveRequest>,
) -> MockResult<Response> {
    let (caller, _) = player(&inner, &headers)?;
    let user_id = target_user(&caller, &path_user)?;
    let info = lock(&inner.store).restore(&user_id, &slot, req.version, req.base_version)?;
    Ok(info_response(info))
}

#[cfg(test)]
mod tests {
    use super::etag_matches;

    #[test]
    fn if_none_match_accepts_quoted_weak_lists_and_star() {
        assert!(etag_matches("\"3\"", 3));
        assert!(etag_matches("W/\"3\"", 3));
        assert!(etag_matches("\"1\", \"3\"", 3));
        assert!(etag_matches("*", 3));
        assert!(!etag_matches("\"2\"", 3));
        assert!(!etag_matches("\"33\"", 3));
    }
}
