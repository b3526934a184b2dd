//! The fault layer: the mock's front door. Every request except `/__mock/` goes through it: it
//! is logged, the scripted faults that match it are applied (delay, error answer, dropped
//! connection at some point of the exchange), and what is left is handed to the real server's
//! router. Faults are matched on method and path only (`faults.rs`) and act on the request or on
//! the connection under it (`net.rs`), so they apply to a WebSocket's handshake like to any
//! request (e.g. a refused upgrade); the frames of an accepted socket go through the relay of
//! `realtime.rs`.

use std::sync::Arc;

use aethex_protocol::ErrorCode;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use tower::ServiceExt;

use crate::error::MockError;
use crate::faults::{DropWhen, FaultAction};
use crate::log::LogEntry;
use crate::net::{ConnControl, CutBody};
use crate::{lock, Inner};

/// The whole mock: the admin API, and everything else through the fault layer to the server.
pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .merge(crate::admin::router())
        .fallback(forward)
        .layer(middleware::from_fn_with_state(inner.clone(), front))
        .with_state(inner)
}

/// Hands the request to the current server (a reset swaps it); a WebSocket handshake goes
/// through the realtime relay.
async fn forward(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    if crate::realtime::is_upgrade(req.headers()) {
        return crate::realtime::proxy(inner, req).await;
    }
    let router = inner.backend().router.clone();
    router
        .oneshot(req)
        .await
        .unwrap_or_else(|never| match never {})
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
