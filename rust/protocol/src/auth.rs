//! Accounts, sessions and profiles: `/api/v1/auth/*`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A player account as the API shows it to its owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    pub id: String,
    pub username: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: bool,
    #[serde(default)]
    pub avatar_url: Option<String>,
    /// Free-form JSON object the game stores per player.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub preferences: Value,
    /// Ways this account can sign in: `device`, `email`, `google`, `github`, `discord`.
    #[serde(default)]
    pub linked: Vec<String>,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// Answer of register, login, refresh, device and OAuth sign-in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuthResponse {
    pub user: User,
    /// JWT (EdDSA, `kid` header) valid for `expires_in` seconds.
    pub access_token: String,
    /// Opaque, single use: every refresh returns a new one.
    pub refresh_token: String,
    pub expires_in: u64,
}

/// A solved proof-of-work challenge from `GET /api/v1/auth/captcha`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CaptchaSolution {
    pub challenge: String,
    pub nonce: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CaptchaChallenge {
    /// Opaque, signed by the server.
    pub challenge: String,
    /// Leading zero bits required in SHA-256(challenge || nonce).
    pub difficulty: u32,
    /// Unix milliseconds.
    pub expires_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterRequest {
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 254,
            pattern = r"^(?=[^@]{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
        )
    )]
    pub email: String,
    #[cfg_attr(feature = "openapi", schema(min_length = 8, max_length = 1024))]
    pub password: String,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 3, max_length = 32, pattern = r"^[\w.-]{3,32}$")
    )]
    pub username: String,
    #[serde(default)]
    pub captcha: Option<CaptchaSolution>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
    /// Required only while the account is under attack (the server answers `captcha_required`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captcha: Option<CaptchaSolution>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// Anonymous sign-in: the same `device_id` always reaches the same account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceAuthRequest {
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 8, max_length = 128, pattern = r"^[!-~]{8,128}$")
    )]
    pub device_id: String,
    /// Username for a new account; a generated one is used when absent.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 3, max_length = 32, pattern = r"^[\w.-]{3,32}$")
    )]
    pub username: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateProfileRequest {
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 3, max_length = 32, pattern = r"^[\w.-]{3,32}$")
    )]
    pub username: Option<String>,
    /// An http(s) URL, or `""` to clear the avatar.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 2048,
            pattern = r"^(|https?://([A-Za-z0-9-]+\.)*[A-Za-z][A-Za-z0-9-]*(:[0-9]{1,4})?([/?#][!-~]*)?)$"
        )
    )]
    pub avatar_url: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub preferences: Option<Value>,
}

/// Step 1 of OAuth sign-in: the server builds the provider's authorize URL (it holds the client id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OAuthStartRequest {
    /// Where the provider sends the browser back, e.g. the SDK's loopback listener.
    pub redirect_uri: String,
    /// PKCE S256 challenge of a verifier only the client knows.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 43,
            max_length = 128,
            pattern = r"^[A-Za-z0-9._~-]{43,128}$"
        )
    )]
    pub code_challenge: String,
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 512))]
    pub state: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OAuthStartResponse {
    pub authorize_url: String,
}

/// Step 2 of OAuth sign-in (and of linking): exchange the code with the PKCE verifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OAuthCodeRequest {
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 2048))]
    pub code: String,
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 43,
            max_length = 128,
            pattern = r"^[A-Za-z0-9._~-]{43,128}$"
        )
    )]
    pub code_verifier: String,
    pub redirect_uri: String,
}

/// Adds a device id as a sign-in method of the signed-in account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LinkDeviceRequest {
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 8, max_length = 128, pattern = r"^[!-~]{8,128}$")
    )]
    pub device_id: String,
}

/// Adds email + password sign-in to the signed-in account (e.g. upgrading an anonymous one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LinkEmailRequest {
    #[cfg_attr(
        feature = "openapi",
        schema(
            max_length = 254,
            pattern = r"^(?=[^@]{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
        )
    )]
    pub email: String,
    #[cfg_attr(feature = "openapi", schema(min_length = 8, max_length = 1024))]
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerifyEmailRequest {
    pub token: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ForgotPasswordRequest {
    pub email: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResetPasswordRequest {
    pub token: String,
    #[cfg_attr(feature = "openapi", schema(min_length = 8, max_length = 1024))]
    pub new_password: String,
}

/// Claims of an access token. `sid` names the refresh-token family (the session).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// User id.
    pub sub: String,
    /// Project id.
    pub pid: String,
    /// Session (refresh family) id: logout and reuse detection revoke it.
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
}
