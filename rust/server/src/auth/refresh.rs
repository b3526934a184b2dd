//! `POST /api/v1/auth/refresh` (rotation with reuse detection) and `POST /api/v1/auth/logout`.

use super::rate_limit::IpLimited;
use super::sessions;
use super::sign_in_writer::Rotation;
use crate::app::AppState;
use crate::caller::{ClientProject, Player};
use crate::error::{ApiError, ApiResult};
use crate::http::ApiJson;
use crate::projects::hash_secret;
use aethex_protocol::auth::{AuthResponse, RefreshRequest};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

#[utoipa::path(
    post,
    path = "/api/v1/auth/refresh",
    tag = "auth",
    security(("client_key" = [])),
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New access token and the next refresh token (the presented one is spent)", body = AuthResponse),
        (status = 401, description = "Unknown, expired, revoked or reused refresh token (reuse revokes the whole session)", body = aethex_protocol::ErrorEnvelope),
        (status = 429, description = "Rate limited", body = aethex_protocol::ErrorEnvelope),
    )
)]
pub async fn refresh(
    _limit: IpLimited,
    State(state): State<AppState>,
    ClientProject(project): ClientProject,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<Json<AuthResponse>> {
    let now = state.clock.now_ms();
    let token_hash = hash_secret(&req.refresh_token);
    // Checked on a reader connection; only the rotation itself goes through the writer, batched
    // with other refreshes and sign-ins, and it is the rotation that decides a race.
    let presented = state
        .auth
        .identity_lookup
        .presented_token(&token_hash)
        .await?;
    let Some(presented) = presented else {
        return Err(ApiError::unauthorized("unknown refresh token"));
    };
    if presented.project_id != project.id {
        return Err(ApiError::unauthorized(
            "refresh token belongs to another project than the client key",
        ));
    }
    if presented.session_revoked {
        return Err(ApiError::unauthorized("session has been signed out"));
    }
    let session_id = presented.session_id;
    if presented.used {
        let mut conn = state.db.write.acquire().await?;
        sessions::revoke(&mut conn, &session_id, now).await?;
        return Err(reused(&state, &session_id, now));
    }
    if presented.expires_at <= now {
        return Err(ApiError::unauthorized(
            "refresh token expired; sign in again",
        ));
    }
    let writer = &state.auth.sign_in_writer;
    match writer.rotate(&token_hash, &session_id, now).await? {
        Rotation::Rotated { refresh_token } => Ok(Json(sessions::auth_response(
            &state,
            &project.id,
            presented.user,
            session_id,
            refresh_token,
            now,
        )?)),
        // Spent by a concurrent refresh: the writer revoked the session.
        Rotation::Reused => Err(reused(&state, &session_id, now)),
    }
}

/// A spent token presented again means it leaked: the whole family ends (the database row is
/// revoked by the caller), the newest token and every access token of it included.
fn reused(state: &AppState, session_id: &str, now: i64) -> ApiError {
    state.auth.remember_revoked_session(session_id, now);
    tracing::warn!(session = %session_id, "refresh token reuse; session revoked");
    ApiError::unauthorized("refresh token was already used; the session has been revoked")
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/logout",
    tag = "auth",
    security(("client_key" = [], "bearer" = [])),
    responses(
        (status = 204, description = "The caller's session is revoked: its refresh token and access tokens stop working"),
        (status = 401, description = "Not signed in", body = aethex_protocol::ErrorEnvelope),
    )
)]
pub async fn logout(
    _limit: IpLimited,
    State(state): State<AppState>,
    player: Player,
) -> ApiResult<StatusCode> {
    let now = state.clock.now_ms();
    let mut conn = state.db.write.acquire().await?;
    sessions::revoke(&mut conn, &player.session_id, now).await?;
    state.auth.remember_revoked_session(&player.session_id, now);
    Ok(StatusCode::NO_CONTENT)
}
