//! Email + password accounts: `POST /api/v1/auth/register` and `POST /api/v1/auth/login`.

use aethex_protocol::auth::{AuthResponse, LoginRequest, RegisterRequest};
use aethex_protocol::ErrorCode;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use sqlx::Row;

use super::passwords::Passwords;
use super::rate_limit::{IpLimited, LoginGate};
use super::{captcha, recovery, sessions, users};
use crate::app::AppState;
use crate::caller::ClientProject;
use crate::error::{ApiError, ApiResult};
use crate::http::ApiJson;

pub const PROVIDER: &str = "email";

#[utoipa::path(
    post,
    path = "/api/v1/auth/register",
    tag = "auth",
    security(("client_key" = [])),
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created and signed in; a verification mail is sent", body = AuthResponse),
        (status = 400, description = "Invalid email, password or username; or `captcha_required`", body = aethex_protocol::ErrorEnvelope),
        (status = 409, description = "Email or username taken (`conflict`)", body = aethex_protocol::ErrorEnvelope),
        (status = 429, description = "Rate limited", body = aethex_protocol::ErrorEnvelope),
    )
)]
pub async fn register(
    _limit: IpLimited,
    State(state): State<AppState>,
    ClientProject(project): ClientProject,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<AuthResponse>)> {
    let email = req.email.trim();
    users::validate_email(email)?;
    Passwords::validate(&req.password, state.config.auth.min_password_len)?;
    let username = users::normalize_username(&req.username);
    users::validate_username(&username)?;
    if state.config.auth.captcha_required {
        captcha::require_solution(
            &state,
            &project.id,
            req.captcha.as_ref(),
            "registration requires a solved captcha (GET /api/v1/auth/captcha)",
        )
        .await?;
    }
    let hash = state.auth.passwords.hash(&req.password).await?;
    let now = state.clock.now_ms();
    let email_lower = users::normalize_email(email);
    let mut tx = state.db.write.begin().await?;
    let user_id =
        users::insert_with_password(&mut tx, &project.id, &username, Some((email, &hash)), now)
            .await?;
    users::add_identity(&mut tx, &project.id, PROVIDER, &email_lower, &user_id, now).await?;
    let (session_id, refresh) =
        sessions::create(&mut tx, &state, &project.id, &user_id, now).await?;
    let verification = recovery::queue_verification(
        &mut tx,
        &state,
        &project.id,
        &user_id,
        &username,
        email,
        now,
    )
    .await?;
    let user = users::load(&mut tx, &user_id).await?;
    tx.commit().await?;
    state.auth.mailer.deliver(verification, &state.clock);
    let answer = sessions::auth_response(&state, &project.id, user, session_id, refresh, now)?;
    Ok((StatusCode::CREATED, Json(answer)))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    security(("client_key" = [])),
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = AuthResponse),
        (status = 400, description = "`captcha_required`: the account is under attack; send a solved `captcha`", body = aethex_protocol::ErrorEnvelope),
        (status = 401, description = "`invalid_credentials`: unknown email or wrong password (one answer for both)", body = aethex_protocol::ErrorEnvelope),
        (status = 429, description = "Rate limited (per IP, and per account from this IP)", body = aethex_protocol::ErrorEnvelope),
    )
)]
pub async fn login(
    IpLimited(ip): IpLimited,
    State(state): State<AppState>,
    ClientProject(project): ClientProject,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<AuthResponse>> {
    let email_lower = users::normalize_email(&req.email);
    let gate = state
        .auth
        .rate_limits
        .check_login(&project.id, &email_lower, ip)?;
    if gate == LoginGate::UnderAttack {
        captcha::require_solution(
            &state,
            &project.id,
            req.captcha.as_ref(),
            "this account is receiving many sign-in attempts: solve a captcha (GET /api/v1/auth/captcha) and send it as `captcha`",
        )
        .await?;
    }
    // The whole account comes with the hash, so a successful login reads the user only once.
    let row = sqlx::query(&format!(
        "SELECT {}, password_hash FROM users WHERE project_id = $1 AND email_lower = $2",
        users::USER_COLUMNS
    ))
    .bind(&project.id)
    .bind(&email_lower)
    .fetch_optional(&state.db.read)
    .await?;
    let hash = match &row {
        Some(row) => row.try_get::<Option<String>, _>("password_hash")?,
        None => None,
    };
    // Unknown emails are checked against a dummy hash: same answer, same time.
    let matches = state
        .auth
        .passwords
        .verify(&req.password, hash.as_deref())
        .await?;
    let Some(row) = row.filter(|_| matches) else {
        return Err(ApiError::new(
            ErrorCode::InvalidCredentials,
            "wrong email or password",
        ));
    };
    let user_id: String = row.try_get("id")?;
    let now = state.clock.now_ms();
    let mut tx = state.db.write.begin().await?;
    let (session_id, refresh) =
        sessions::create(&mut tx, &state, &project.id, &user_id, now).await?;
    let linked = users::linked(&mut tx, &user_id).await?;
    tx.commit().await?;
    let user = users::from_row(&row, linked)?;
    Ok(Json(sessions::auth_response(
        &state,
        &project.id,
        user,
        session_id,
        refresh,
        now,
    )?))
}
