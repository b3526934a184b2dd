//! The one error model of the API: an HTTP status, a stable snake_case code and a message.

use serde::{Deserialize, Serialize};

/// Stable machine-readable error codes. Clients branch on these, never on messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    TokenExpired,
    InvalidCredentials,
    Forbidden,
    NotFound,
    Conflict,
    SaveConflict,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    CaptchaRequired,
    Internal,
    Unavailable,
    /// Client-side only: the request never reached the server (DNS, refused, dropped socket).
    Network,
    /// Client-side only: the request timed out.
    Timeout,
    /// The path exists but not with this HTTP method (the `Allow` header lists those it has).
    MethodNotAllowed,
    /// A `Content-Encoding` or `Content-Type` of the request body the server does not accept.
    UnsupportedMediaType,
    /// Analytics from a player who has not consented (or revoked consent).
    ConsentRequired,
}

impl ErrorCode {
    /// The HTTP status the server answers with for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest | ErrorCode::CaptchaRequired => 400,
            ErrorCode::Unauthorized | ErrorCode::TokenExpired | ErrorCode::InvalidCredentials => {
                401
            }
            ErrorCode::Forbidden | ErrorCode::ConsentRequired => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict | ErrorCode::SaveConflict => 409,
            ErrorCode::PayloadTooLarge | ErrorCode::QuotaExceeded => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
            ErrorCode::Network | ErrorCode::Timeout => 0,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::UnsupportedMediaType => 415,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::SaveConflict => "save_conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::CaptchaRequired => "captcha_required",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Network => "network",
            ErrorCode::Timeout => "timeout",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::ConsentRequired => "consent_required",
        }
    }

    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited
                | ErrorCode::Internal
                | ErrorCode::Unavailable
                | ErrorCode::Network
                | ErrorCode::Timeout
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"error": {...}}`: the body of every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorEnvelope {
    pub error: ApiErrorBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// Code-specific data, e.g. the current version's metadata on `save_conflict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub details: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_stable_names() {
        for code in [
            ErrorCode::InvalidRequest,
            ErrorCode::TokenExpired,
            ErrorCode::SaveConflict,
            ErrorCode::PayloadTooLarge,
            ErrorCode::RateLimited,
            ErrorCode::MethodNotAllowed,
            ErrorCode::UnsupportedMediaType,
            ErrorCode::ConsentRequired,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            let back: ErrorCode = serde_json::from_str(&json).unwrap();
            assert_eq!(back, code);
        }
    }

    #[test]
    fn envelope_round_trips_with_details() {
        let env = ErrorEnvelope {
            error: ApiErrorBody {
                code: ErrorCode::SaveConflict,
                message: "slot changed".into(),
                details: Some(serde_json::json!({"current": {"version": 3}})),
            },
        };
        let text = serde_json::to_string(&env).unwrap();
        assert!(text.contains("\"code\":\"save_conflict\""));
        assert_eq!(serde_json::from_str::<ErrorEnvelope>(&text).unwrap(), env);
    }
}
