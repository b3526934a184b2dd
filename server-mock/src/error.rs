//! The error envelope of the mock's own answers (injected faults, the admin API): the server's
//! `{"error":{code,message,details}}`, so a client cannot tell an injected error from a real one.

use aethex_protocol::{ApiErrorBody, ErrorCode, ErrorEnvelope};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub type MockResult<T> = Result<T, MockError>;

#[derive(Debug, Clone)]
pub struct MockError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub details: Option<serde_json::Value>,
    /// Seconds, sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

impl MockError {
    /// An error with the status the real server uses for `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::Internal, cause.to_string())
    }
}

impl IntoResponse for MockError {
    fn into_response(self) -> Response {
        let body = ErrorEnvelope {
            error: ApiErrorBody {
                code: self.code,
                message: self.message,
                details: self.details,
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
