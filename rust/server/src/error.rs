//! `ApiError`: every handler's error type. It renders as `{"error":{"code","message","details"}}`
//! with the status its code implies, so no handler builds error JSON by hand.

use aethex_protocol::{ApiErrorBody, ErrorCode, ErrorEnvelope};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<serde_json::Value>,
    /// Seconds, sent as `Retry-After` (rate limits).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after: Some(retry_after_secs.max(1)),
            ..Self::new(ErrorCode::RateLimited, "too many requests, retry later")
        }
    }

    /// Logs the cause and answers a generic 500: internals never leak to players.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "internal server error")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            // Every pooled connection stayed busy for `database.acquire_timeout_ms`: overload,
            // not a fault; the client backs off and retries.
            sqlx::Error::PoolTimedOut => {
                tracing::warn!("no free database connection within the acquire timeout");
                ApiError {
                    retry_after: Some(1),
                    ..ApiError::new(ErrorCode::Unavailable, "the server is busy; retry shortly")
                }
            }
            // Collisions with concurrent requests that a handler did not map itself are still
            // the documented typed errors, never a 500: a duplicate is a 409, an aborted
            // transaction a 503 the client retries.
            e if crate::db::is_unique_violation(&e) => {
                ApiError::conflict("a concurrent request changed the same data; retry")
            }
            e if crate::db::is_concurrency_abort(&e) => {
                tracing::warn!(error = %e, "transaction aborted by a concurrent one");
                ApiError {
                    retry_after: Some(1),
                    ..ApiError::new(
                        ErrorCode::Unavailable,
                        "the request collided with a concurrent one; retry",
                    )
                }
            }
            e => ApiError::internal(format!("database: {e}")),
        }
    }
}

impl From<object_store::Error> for ApiError {
    fn from(e: object_store::Error) -> Self {
        ApiError::internal(format!("blob store: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorEnvelope {
            error: ApiErrorBody {
                code: self.code,
                message: self.message,
                details: self.details,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
