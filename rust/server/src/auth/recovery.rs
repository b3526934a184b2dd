//! Mailed single-use tokens: `POST /api/v1/auth/email/verify`, `POST /api/v1/auth/password/forgot`
//! and `POST /api/v1/auth/password/reset`. Tokens are random, stored only as SHA-256, expire, and
//! are spent by the first successful use.

use aethex_protocol::auth::{
    ForgotPasswordRequest, ResetPasswordRequest, User, VerifyEmailRequest,
};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use sqlx::{AnyConnection, Row};

use super::mail::{Mail, QueuedMail};
use super::passwords::Passwords;
use super::rate_limit::IpLimited;
use super::{sessions, users};
use crate::app::AppState;
use crate::caller::ClientProject;
use crate::error::{ApiError, ApiResult};
use crate::http::ApiJson;
use crate::projects::hash_secret;

pub const VERIFY_EMAIL: &str = "verify_email";
pub const RESET_PASSWORD: &str = "reset_password";

/// Stores a new token of `kind` for `user_id` and returns it (the only time it exists in clear).
pub async fn issue_token(
    conn: &mut AnyConnection,
    state: &AppState,
    kind: &str,
    project_id: &str,
    user_id: &str,
    email: &str,
    now_ms: i64,
) -> ApiResult<String> {
    let ttl_secs = match kind {
        VERIFY_EMAIL => state.config.auth.verify_token_ttl_secs,
        _ => state.config.auth.reset_token_ttl_secs,
    };
    let token = sessions::new_refresh_token().replacen("rt_", "mt_", 1);
    sqlx::query(
        "INSERT INTO auth_tokens (token_hash, kind, project_id, user_id, email, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(hash_secret(&token))
    .bind(kind)
    .bind(project_id)
    .bind(user_id)
    .bind(users::normalize_email(email))
    .bind(now_ms)
    .bind(now_ms + ttl_secs as i64 * 1000)
    .execute(&mut *conn)
    .await?;
    Ok(token)
}

/// Spends a token of `kind` in `project_id`; returns (user id, email it was sent to).
async fn spend_token(
    conn: &mut AnyConnection,
    kind: &str,
    project_id: &str,
    token: &str,
    now_ms: i64,
) -> ApiResult<(String, String)> {
    // Not found rather than invalid: any string is a well-formed token; this one is unknown.
    let invalid = || ApiError::not_found("token is invalid, expired or already used");
    let token_hash = hash_secret(token);
    let row = sqlx::query(
        "SELECT user_id, email, expires_at FROM auth_tokens WHERE token_hash = $1 AND kind = $2 AND project_id = $3 AND used_at IS NULL",
    )
    .bind(&token_hash)
    .bind(kind)
    .bind(project_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(invalid)?;
    if row.try_get::<i64, _>("expires_at")? <= now_ms {
        return Err(invalid());
    }
    let spent = sqlx::query(
        "UPDATE auth_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
    )
    .bind(now_ms)
    .bind(&token_hash)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if spent == 0 {
        return Err(invalid());
    }
    Ok((row.try_get("user_id")?, row.try_get("email")?))
}

/// Issues a verification token for `email` and queues the mail carrying it (in the caller's
/// transaction); `Mailer::deliver` it after commit.
pub async fn queue_verification(
    conn: &mut AnyConnection,
    state: &AppState,
    project_id: &str,
    user_id: &str,
    username: &str,
    email: &str,
    now_ms: i64,
) -> ApiResult<QueuedMail> {
    let token = issue_token(
        conn,
        state,
        VERIFY_EMAIL,
        project_id,
        user_id,
        email,
        now_ms,
    )
    .await?;
    let hours = state.config.auth.verify_token_ttl_secs / 3600;
    let body = format!(
        "Hello {username},\r\n\r\nconfirm this email address in your game with the code below.\r\n\r\nverification token: {token}\r\n\r\n(The game sends it to POST {}/api/v1/auth/email/verify. It expires in {hours} hours.)\r\n",
        state.config.public_url()
    );
    let mail = Mail {
        project_id: project_id.to_owned(),
        to: email.to_owned(),
        subject: "Confirm your email address".to_owned(),
        body,
    };
    state.auth.mailer.enqueue(conn, mail, now_ms).await
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/email/verify",
    tag = "auth",
    security(("client_key" = [])),
    request_body = VerifyEmailRequest,
    responses(
        (status = 200, description = "Email verified; the updated account", body = User),
        (status = 404, description = "Token invalid, expired or used", body = aethex_protocol::ErrorEnvelope),
        (status = 409, description = "The account's email changed since the token was sent", body = aethex_protocol::ErrorEnvelope),
    )
)]
pub async fn verify_email(
    _limit: IpLimited,
    State(state): State<AppState>,
    ClientProject(project): ClientProject,
    ApiJson(req): ApiJson<VerifyEmailRequest>,
) -> ApiResult<Json<User>> {
    let now = state.clock.now_ms();
    let mut tx = state.db.write.begin().await?;
    let (user_id, email) = spend_token(&mut tx, VERIFY_EMAIL, &project.id, &req.token, now).await?;
    let updated = sqlx::query(
        "UPDATE users SET email_verified = 1, updated_at = $1 WHERE id = $2 AND email_lower = $3",
    )
    .bind(now)
    .bind(&user_id)
    .bind(&email)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 0 {
        return Err(ApiError::conflict(
            "the account's email address changed since this token was sent",
        ));
    }
    let user = users::load(&mut tx, &user_id).await?;
    tx.commit().await?;
    Ok(Json(user))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/password/forgot",
    tag = "auth",
    security(("client_key" = [])),
    request_body = ForgotPasswordRequest,
    responses(
        (status = 202, description = "Accepted. A reset mail is sent if an account has this email; the answer is the same either way"),
        (status = 429, description = "Rate limited (per IP and per account)", body = aethex_protocol::ErrorEnvelope),
    )
)]
pub async fn forgot_password(
    _limit: IpLimited,
    State(state): State<AppState>,
    ClientProject(project): ClientProject,
    ApiJson(req): ApiJson<ForgotPasswordRequest>,
) -> ApiResult<StatusCode> {
    let email_lower = users::normalize_email(&req.email);
    state
        .auth
        .rate_limits
        .check_account(&project.id, &email_lower)?;
    // The work happens after the answer, so its duration does not tell whether the account exists.
    tokio::spawn(async move {
        if let Err(e) = send_reset_mail(&state, &project.id, &email_lower).await {
            tracing::warn!(error = %e, "password reset mail failed");
        }
    });
    Ok(StatusCode::ACCEPTED)
}

async fn send_reset_mail(state: &AppState, project_id: &str, email_lower: &str) -> ApiResult<()> {
    let now = state.clock.now_ms();
    let mut tx = state.db.write.begin().await?;
    let row = sqlx::query(
        "SELECT id, username, email FROM users WHERE project_id = $1 AND email_lower = $2",
    )
    .bind(project_id)
    .bind(email_lower)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Ok(());
    };
    let user_id: String = row.try_get("id")?;
    let username: String = row.try_get("username")?;
    let email: String = row.try_get("email")?;
    let token = issue_token(
        &mut tx,
        state,
        RESET_PASSWORD,
        project_id,
        &user_id,
        &email,
        now,
    )
    .await?;
    let minutes = state.config.auth.reset_token_ttl_secs / 60;
    let body = format!(
        "Hello {username},\r\n\r\nsomeone (hopefully you) asked to reset the password of your account.\r\n\r\nreset token: {token}\r\n\r\n(The game sends it with your new password to POST {}/api/v1/auth/password/reset. It expires in {minutes} minutes. If you did not ask, ignore this mail.)\r\n",
        state.config.public_url()
    );
    let mail = Mail {
        project_id: project_id.to_owned(),
        to: email,
        subject: "Reset your password".to_owned(),
        body,
    };
    let queued = state.auth.mailer.enqueue(&mut tx, mail, now).await?;
    tx.commit().await?;
    state.auth.mailer.deliver(queued, &state.clock);
    Ok(())
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/password/reset",
    tag = "auth",
    security(("client_key" = [])),
    request_body = ResetPasswordRequest,
    responses(
        (status = 204, description = "Password changed; every session of the account is signed out"),
        (status = 400, description = "The new password is invalid", body = aethex_protocol::ErrorEnvelope),
        (status = 404, description = "Token invalid, expired or used", body = aethex_protocol::ErrorEnvelope),
    )
)]
pub async fn reset_password(
    _limit: IpLimited,
    State(state): State<AppState>,
    ClientProject(project): ClientProject,
    ApiJson(req): ApiJson<ResetPasswordRequest>,
) -> ApiResult<StatusCode> {
    Passwords::validate(&req.new_password, state.config.auth.min_password_len)?;
    let hash = state.auth.passwords.hash(&req.new_password).await?;
    let now = state.clock.now_ms();
    let mut tx = state.db.write.begin().await?;
    let (user_id, email) =
        spend_token(&mut tx, RESET_PASSWORD, &project.id, &req.token, now).await?;
    // Receiving the mail proves the address, so a reset also verifies it.
    sqlx::query(
        "UPDATE users SET password_hash = $1, email_verified = CASE WHEN email_lower = $2 THEN 1 ELSE email_verified END, updated_at = $3 WHERE id = $4",
    )
    .bind(&hash)
    .bind(&email)
    .bind(now)
    .bind(&user_id)
    .execute(&mut *tx)
    .await?;
    let revoked = sessions::revoke_all_of_user(&mut tx, &user_id, now).await?;
    tx.commit().await?;
    for session_id in revoked {
        state.auth.remember_revoked_session(&session_id, now);
    }
    Ok(StatusCode::NO_CONTENT)
}
