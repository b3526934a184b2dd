//! Account linking: the signed-in player adds a sign-in method to their account, e.g. upgrading
//! an anonymous device account to email or OAuth so it survives a lost device. An identity that
//! already belongs to another account is a 409 `conflict` (accounts are never merged silently).

use aethex_protocol::auth::{LinkDeviceRequest, LinkEmailRequest, OAuthCodeRequest, User};
use axum::extract::{Path, State};
use axum::Json;
use sqlx::{AnyConnection, Row};

use super::oauth::Provider;
use super::passwords::Passwords;
use super::rate_limit::IpLimited;
use super::{device, email, recovery, users};
use crate::app::AppState;
use crate::caller::Player;
use crate::error::{ApiError, ApiResult};
use crate::http::ApiJson;

/// Adds (provider, subject) to `user_id`; linking what the account already has is a no-op.
async fn link_identity(
    conn: &mut AnyConnection,
    player: &Player,
    provider: &str,
    subject: &str,
    now_ms: i64,
) -> ApiResult<()> {
    match users::find_by_identity(conn, &player.project.id, provider, subject).await? {
        Some(owner) if owner == player.user_id => Ok(()),
        Some(_) => Err(ApiError::conflict(format!(
            "this {provider} identity belongs to another account"
        ))),
        None => {
            users::add_identity(
                conn,
                &player.project.id,
                provider,
                subject,
                &player.user_id,
                now_ms,
            )
            .await
        }
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/link/device",
    tag = "auth",
    security(("client_key" = [], "bearer" = [])),
    request_body = LinkDeviceRequest,
    responses(
        (status = 200, description = "The device now signs in to this account", body = User),
        (status = 409, description = "The device id belongs to another account", body = aethex_protocol::ErrorEnvelope),
    )
)]
pub async fn link_device(
    _limit: IpLimited,
    State(state): State<AppState>,
    player: Player,
    ApiJson(req): ApiJson<LinkDeviceRequest>,
) -> ApiResult<Json<User>> {
    device::validate_device_id(&req.device_id)?;
    let now = state.clock.now_ms();
    let mut tx = state.db.write.begin().await?;
    link_identity(&mut tx, &player, device::PROVIDER, &req.device_id, now).await?;
    let user = users::load(&mut tx, &player.user_id).await?;
    tx.commit().await?;
    Ok(Json(user))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/link/email",
    tag = "auth",
    security(("client_key" = [], "bearer" = [])),
    request_body = LinkEmailRequest,
    responses(
        (status = 200, description = "Email + password now sign in to this account; a verification mail is sent", body = User),
        (status = 400, description = "Invalid email or password", body = aethex_protocol::ErrorEnvelope),
        (status = 409, description = "The email belongs to another account, or this account already has one", body = aethex_protocol::ErrorEnvelope),
    )
)]
pub async fn link_email(
    _limit: IpLimited,
    State(state): State<AppState>,
    player: Player,
    ApiJson(req): ApiJson<LinkEmailRequest>,
) -> ApiResult<Json<User>> {
    let address = req.email.trim();
    users::validate_email(address)?;
    Passwords::validate(&req.password, state.config.auth.min_password_len)?;
    let hash = state.auth.passwords.hash(&req.password).await?;
    let email_lower = users::normalize_email(address);
    let now = state.clock.now_ms();
    let mut tx = state.db.write.begin().await?;
    // Locked: two links racing on one account would otherwise both see no email and both add
    // an email identity.
    let current = sqlx::query(&format!(
        "SELECT username, email_lower FROM users WHERE id = $1{}",
        state.db.lock_rows()
    ))
    .bind(&player.user_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found("no such user"))?;
    if current
        .try_get::<Option<String>, _>("email_lower")?
        .is_some()
    {
        return Err(ApiError::conflict(
            "this account already has an email address",
        ));
    }
    link_identity(&mut tx, &player, email::PROVIDER, &email_lower, now).await?;
    sqlx::query(
        "UPDATE users SET email = $1, email_lower = $2, email_verified = 0, password_hash = $3, updated_at = $4 WHERE id = $5",
    )
    .bind(address)
    .bind(&email_lower)
    .bind(&hash)
    .bind(now)
    .bind(&player.user_id)
    .execute(&mut *tx)
    .await
    .map_err(|e| users::user_conflict(e, ""))?;
    let username: String = current.try_get("username")?;
    let verification = recovery::queue_verification(
        &mut tx,
        &state,
        &player.project.id,
        &player.user_id,
        &username,
        address,
        now,
    )
    .await?;
    let user = users::load(&mut tx, &player.user_id).await?;
    tx.commit().await?;
    state.auth.mailer.deliver(verification, &state.clock);
    Ok(Json(user))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/link/oauth/{provider}",
    tag = "auth",
    security(("client_key" = [], "bearer" = [])),
    request_body = OAuthCodeRequest,
    params(
        ("provider" = String, Path, description = "google, github or discord"),
    ),
    responses(
        (status = 200, description = "The provider account now signs in to this account", body = User),
        (status = 401, description = "The provider rejected the code or verifier", body = aethex_protocol::ErrorEnvelope),
        (status = 404, description = "Unknown or unconfigured provider", body = aethex_protocol::ErrorEnvelope),
        (status = 409, description = "The provider account belongs to another account", body = aethex_protocol::ErrorEnvelope),
    )
)]
pub async fn link_oauth(
    _limit: IpLimited,
    State(state): State<AppState>,
    player: Player,
    Path(provider): Path<String>,
    ApiJson(req): ApiJson<OAuthCodeRequest>,
) -> ApiResult<Json<User>> {
    let provider = Provider::resolve(&state, &provider)?;
    let who = provider.exchange(&state.auth.http, &req).await?;
    let now = state.clock.now_ms();
    let mut tx = state.db.write.begin().await?;
    link_identity(&mut tx, &player, provider.name, &who.subject, now).await?;
    let user = users::load(&mut tx, &player.user_id).await?;
    tx.commit().await?;
    Ok(Json(user))
}
