//! `Auth`: sign-in, linking, recovery and profile calls. Each returns a [`RequestId`] at once.

use std::sync::Arc;

use aethex_protocol::auth::{
    AuthResponse, CaptchaChallenge, CaptchaSolution, DeviceAuthRequest, ForgotPasswordRequest,
    LinkDeviceRequest, LinkEmailRequest, LoginRequest, RegisterRequest, ResetPasswordRequest, User,
    VerifyEmailRequest,
};
use aethex_protocol::ErrorCode;
use reqwest::Method;

use crate::client::Shared;
use crate::codec::to_json;
use crate::http::Request;
use crate::storage::write_atomic;
use crate::{RequestId, SdkError, Value};

#[derive(Clone)]
pub struct Auth {
    shared: Arc<Shared>,
}

fn empty() -> Value {
    Value::Dictionary(Vec::new())
}

impl Auth {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    pub fn register(&self, email: String, password: String, username: String) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let body = RegisterRequest {
                email,
                password,
                username,
                captcha: None,
            };
            // Not retried: a lost answer to a successful registration would turn into "taken".
            sign_in(
                &shared,
                Request::new(Method::POST, "/api/v1/auth/register")
                    .json(&body)
                    .no_retry(),
            )
            .await
        })
    }

    pub fn login_email(&self, email: String, password: String) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let mut body = LoginRequest {
                email,
                password,
                captcha: None,
            };
            let login =
                |body: &LoginRequest| Request::new(Method::POST, "/api/v1/auth/login").json(body);
            match sign_in(&shared, login(&body)).await {
                // The account is under attack: the server lets the owner in with a solved
                // proof of work, so pay it and try once more.
                Err(e) if e.code == ErrorCode::CaptchaRequired => {
                    body.captcha = Some(solve_captcha(&shared).await?);
                    sign_in(&shared, login(&body)).await
                }
                other => other,
            }
        })
    }

    pub fn login_device(&self, device_id: Option<String>) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let device_id = match device_id {
                Some(id) => id,
                None => default_device_id(&shared)?,
            };
            let body = DeviceAuthRequest {
                device_id,
                username: None,
            };
            sign_in(
                &shared,
                Request::new(Method::POST, "/api/v1/auth/device").json(&body),
            )
            .await
        })
    }

    pub fn login_oauth(&self, provider: String) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let code = crate::oauth::authorize(&shared, &provider).await?;
            // The code is single use: never resend it.
            sign_in(
                &shared,
                Request::new(Method::POST, format!("/api/v1/auth/oauth/{provider}"))
                    .json(&code)
                    .no_retry(),
            )
            .await
        })
    }

    pub fn link_device(&self, device_id: Option<String>) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let device_id = match device_id {
                Some(id) => id,
                None => default_device_id(&shared)?,
            };
            let body = LinkDeviceRequest { device_id };
            user_call(&shared, move || {
                Request::new(Method::POST, "/api/v1/auth/link/device").json(&body)
            })
            .await
        })
    }

    pub fn link_email(&self, email: String, password: String) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let body = LinkEmailRequest { email, password };
            user_call(&shared, move || {
                Request::new(Method::POST, "/api/v1/auth/link/email")
                    .json(&body)
                    .no_retry()
            })
            .await
        })
    }

    pub fn link_oauth(&self, provider: String) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            if !shared.is_logged_in() {
                return Err(SdkError::new(ErrorCode::Unauthorized, "not signed in"));
            }
            let code = crate::oauth::authorize(&shared, &provider).await?;
            user_call(&shared, move || {
                Request::new(Method::POST, format!("/api/v1/auth/link/oauth/{provider}"))
                    .json(&code)
                    .no_retry()
            })
            .await
        })
    }

    pub fn request_password_reset(&self, email: String) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let body = ForgotPasswordRequest { email };
            shared
                .api
                .send(&Request::new(Method::POST, "/api/v1/auth/password/forgot").json(&body))
                .await?;
            Ok(empty())
        })
    }

    pub fn reset_password(&self, token: String, new_password: String) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let body = ResetPasswordRequest {
                token,
                new_password,
            };
            shared
                .api
                .send(&Request::new(Method::POST, "/api/v1/auth/password/reset").json(&body))
                .await?;
            Ok(empty())
        })
    }

    pub fn verify_email(&self, token: String) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let body = VerifyEmailRequest { token };
            let reply = shared
                .api
                .send(&Request::new(Method::POST, "/api/v1/auth/email/verify").json(&body))
                .await?;
            if let Ok(user) = reply.json::<User>() {
                let value = shared.set_user(&user);
                if shared.is_logged_in() {
                    shared.emit("auth", "profile_updated", vec![value]);
                }
            }
            Ok(empty())
        })
    }

    pub fn fetch_profile(&self) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let reply = shared
                .authed(|| Request::new(Method::GET, "/api/v1/auth/profile"))
                .await?;
            let user = shared.set_user(&reply.json::<User>()?);
            Ok(Value::dict([("user", user)]))
        })
    }

    /// `changes`: Dictionary with any of `username`, `avatar_url`, `preferences`.
    pub fn update_profile(&self, changes: Value) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            if !matches!(changes, Value::Dictionary(_)) {
                return Err(SdkError::new(
                    ErrorCode::InvalidRequest,
                    "update_profile takes a Dictionary",
                ));
            }
            let body = to_json(&changes);
            let reply = shared
                .authed(move || Request::new(Method::PUT, "/api/v1/auth/profile").json(&body))
                .await?;
            let user = shared.set_user(&reply.json::<User>()?);
            shared.emit("auth", "profile_updated", vec![user.clone()]);
            Ok(Value::dict([("user", user)]))
        })
    }

    /// Signs in again with the stored refresh token, without a login. When the server cannot be
    /// reached, resumes offline as the stored user (`offline: true` in the result): saves queue
    /// on disk and the session is refreshed by the first request that gets through.
    pub fn resume_session(&self) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            let Some(refresh) = shared.stored_refresh_token().await else {
                return Err(SdkError::new(
                    ErrorCode::Unauthorized,
                    "no stored session to resume",
                ));
            };
            match shared.refresh_with(refresh.clone(), true).await {
                Ok(resumed) => {
                    shared.start_replay();
                    Ok(resumed)
                }
                Err(e) if matches!(e.code, ErrorCode::Network | ErrorCode::Timeout) => {
                    // Offline at start: keep playing (and saving) as the stored user.
                    let user = shared.resume_offline(refresh).ok_or(e)?;
                    shared.emit("auth", "logged_in", vec![user.clone()]);
                    Ok(Value::dict([
                        ("user", user),
                        ("offline", Value::Bool(true)),
                    ]))
                }
                Err(e) => Err(e),
            }
        })
    }

    pub fn logout(&self) -> RequestId {
        self.shared.spawn_call(move |shared| async move {
            if shared.is_logged_in() {
                // Best effort: the local session ends even when the server is unreachable.
                let revoked = shared
                    .authed(|| Request::new(Method::POST, "/api/v1/auth/logout").no_retry())
                    .await;
                if let Err(e) = revoked {
                    tracing::debug!(error = %e, "logout not confirmed by the server");
                }
            }
            shared.clear_session().await;
            shared.emit("auth", "logged_out", Vec::new());
            Ok(empty())
        })
    }

    /// The signed-in user from memory: Dictionary `id`, `username`, `email`, `avatar_url`, ...
    pub fn current_user(&self) -> Option<Value> {
        self.shared.current_user()
    }

    pub fn is_logged_in(&self) -> bool {
        self.shared.is_logged_in()
    }
}

async fn sign_in(shared: &Arc<Shared>, request: Request) -> Result<Value, SdkError> {
    let auth: AuthResponse = shared.api.send(&request).await?.json()?;
    let signed_in = shared.establish(auth, true).await;
    // Saves written before a crash or while offline go up now.
    shared.start_replay();
    Ok(signed_in)
}

/// Hardest captcha the SDK solves: each bit doubles the work (2^18, the server's default, takes
/// a fraction of a second).
const MAX_CAPTCHA_DIFFICULTY: u32 = 28;

/// Fetches a challenge and finds its nonce off the async workers.
async fn solve_captcha(shared: &Arc<Shared>) -> Result<CaptchaSolution, SdkError> {
    let challenge: CaptchaChallenge = shared
        .api
        .send(&Request::new(Method::GET, "/api/v1/auth/captcha"))
        .await?
        .json()?;
    if challenge.difficulty > MAX_CAPTCHA_DIFFICULTY {
        return Err(SdkError::new(
            ErrorCode::CaptchaRequired,
            format!("captcha difficulty {} is too high", challenge.difficulty),
        ));
    }
    let CaptchaChallenge {
        challenge,
        difficulty,
        ..
    } = challenge;
    let solver = shared.clone();
    let solution = tokio::task::spawn_blocking(move || {
        aethex_protocol::captcha::solve_while(&challenge, difficulty, || !solver.is_shut_down())
            .map(|nonce| CaptchaSolution { challenge, nonce })
    })
    .await
    .map_err(|e| SdkError::new(ErrorCode::Internal, format!("solving the captcha: {e}")))?;
    solution.ok_or_else(|| SdkError::new(ErrorCode::Unavailable, "the client was shut down"))
}

async fn user_call(shared: &Arc<Shared>, build: impl Fn() -> Request) -> Result<Value, SdkError> {
    let user: User = shared.authed(build).await?.json()?;
    let user = shared.set_user(&user);
    shared.emit("auth", "profile_updated", vec![user.clone()]);
    Ok(Value::dict([("user", user)]))
}

/// The id anonymous sign-in uses when the game passes none: generated once, kept in `data_dir`.
fn default_device_id(shared: &Shared) -> Result<String, SdkError> {
    let path = shared.config.data_dir.join("device_id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if id.len() >= 8 {
            return Ok(id.to_owned());
        }
    }
    let id = format!("aethex-{}", uuid::Uuid::new_v4());
    write_atomic(&path, id.as_bytes(), false).map_err(|e| {
        SdkError::new(
            ErrorCode::Internal,
            format!("could not store the device id: {e}"),
        )
    })?;
    Ok(id)
}
