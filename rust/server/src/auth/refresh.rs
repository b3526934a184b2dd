//! `POST /api/v1/auth/refresh` (rotation with reuse detection) and `POST /api/v1/auth/logout`.

use aethex_protocol::auth::{AuthResponse, RefreshRequest};
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use sqlx::Row;

use super::rate_limit::IpLimited;
use super::{sessions, users};
use crate::app::AppState;
use crate::caller::{ClientProject, Player};
use crate::error::{ApiError, ApiResult};
use crate::http::ApiJson;
use crate::projects::hash_secret;

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
    let mut tx = state.db.write.begin().await?;
    let row = sqlx::query(
        "SELECT rt.session_id, rt.expires_at, rt.used_at, s.user_id, s.project_id, s.revoked_at FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id WHERE rt.token_hash = $1",
    )
    .bind(&token_hash)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(row) = row else {
        return Err(ApiError::unauthorized("unknown refresh token"));
    };
    let session_id: String = row.try_get("session_id")?;
    let user_id: String = row.try_get("user_id")?;
    let project_id: String = row.try_get("project_id")?;
    if project_id != project.id {
        return Err(ApiError::unauthorized(
            "refresh token belongs to another project than the client key",
        ));
    }
    if row.try_get::<Option<i64>, _>("revoked_at")?.is_some() {
        return Err(ApiError::unauthorized("session has been signed out"));
    }
    // Spend the token; zero rows means it was already spent (possibly by a concurrent refresh).
    let spent = sqlx::query(
        "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
    )
    .bind(now)
    .bind(&token_hash)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if spent == 0 {
        // A spent token presented again means it leaked: end the whole family, the newest
        // token and every access token of it included.
        sessions::revoke(&mut tx, &session_id, now).await?;
        tx.commit().await?;
        state.auth.remember_revoked_session(&session_id, now);
        tracing::warn!(session = %session_id, "refresh token reuse; session revoked");
        return Err(ApiError::unauthorized(
            "refresh token was already used; the session has been revoked",
        ));
    }
    if row.try_get::<i64, _>("expires_at")? <= now {
        return Err(ApiError::unauthorized(
            "refresh token expired; sign in again",
        ));
    }
    let next = sessions::insert_refresh_token(&mut tx, &state, &session_id, now).await?;
    let user = users::load(&mut tx, &user_id).await?;
    tx.commit().await?;
    Ok(Json(sessions::auth_response(
        &state,
        &project.id,
        user,
        session_id,
        next,
        now,
    )?))
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
