//! `GET` / `PUT /api/v1/auth/profile`: the signed-in player's own account.

use aethex_protocol::auth::{UpdateProfileRequest, User};
use axum::extract::State;
use axum::Json;

use super::rate_limit::IpLimited;
use super::users;
use crate::app::AppState;
use crate::caller::Player;
use crate::error::{ApiError, ApiResult};
use crate::http::ApiJson;

/// Largest serialized `preferences` object.
pub const MAX_PREFERENCES_BYTES: usize = 64 * 1024;
const MAX_AVATAR_URL_LEN: usize = 2048;

#[utoipa::path(
    get,
    path = "/api/v1/auth/profile",
    tag = "auth",
    security(("client_key" = [], "bearer" = [])),
    responses(
        (status = 200, description = "The caller's account", body = User),
        (status = 401, description = "Not signed in", body = aethex_protocol::ErrorEnvelope),
    )
)]
pub async fn get_profile(
    _limit: IpLimited,
    State(state): State<AppState>,
    player: Player,
) -> ApiResult<Json<User>> {
    let mut conn = state.db.read.acquire().await?;
    Ok(Json(users::load(&mut conn, &player.user_id).await?))
}

fn validate_avatar_url(url: &str) -> ApiResult<()> {
    if url.is_empty() {
        return Ok(());
    }
    let parsed = url::Url::parse(url)
        .map_err(|_| ApiError::invalid("avatar_url must be an absolute http(s) URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || url.len() > MAX_AVATAR_URL_LEN {
        return Err(ApiError::invalid(format!(
            "avatar_url must be an http(s) URL of at most {MAX_AVATAR_URL_LEN} characters"
        )));
    }
    Ok(())
}

#[utoipa::path(
    put,
    path = "/api/v1/auth/profile",
    tag = "auth",
    security(("client_key" = [], "bearer" = [])),
    request_body = UpdateProfileRequest,
    responses(
        (status = 200, description = "The updated account. Absent fields stay; `avatar_url: \"\"` clears it; `preferences` replaces the whole object", body = User),
        (status = 400, description = "Invalid username, avatar URL, or preferences not a JSON object", body = aethex_protocol::ErrorEnvelope),
        (status = 409, description = "Username taken", body = aethex_protocol::ErrorEnvelope),
        (status = 413, description = "Preferences larger than 64 KiB", body = aethex_protocol::ErrorEnvelope),
    )
)]
pub async fn update_profile(
    _limit: IpLimited,
    State(state): State<AppState>,
    player: Player,
    ApiJson(req): ApiJson<UpdateProfileRequest>,
) -> ApiResult<Json<User>> {
    let username = req.username.as_deref().map(users::normalize_username);
    if let Some(name) = &username {
        users::validate_username(name)?;
    }
    if let Some(url) = &req.avatar_url {
        validate_avatar_url(url)?;
    }
    let preferences = match &req.preferences {
        Some(value) if !value.is_object() => {
            return Err(ApiError::invalid("preferences must be a JSON object"))
        }
        Some(value) => {
            let text = value.to_string();
            if text.len() > MAX_PREFERENCES_BYTES {
                return Err(ApiError::new(
                    aethex_protocol::ErrorCode::PayloadTooLarge,
                    format!("preferences must be at most {MAX_PREFERENCES_BYTES} bytes"),
                ));
            }
            Some(text)
        }
        None => None,
    };
    let now = state.clock.now_ms();
    let mut tx = state.db.write.begin().await?;
    // COALESCE keeps what the request leaves out; NULLIF turns "" into "no avatar".
    sqlx::query(
        "UPDATE users SET username = COALESCE($1, username), username_lower = COALESCE($2, username_lower), username_skeleton = COALESCE($3, username_skeleton), avatar_url = CASE WHEN $4 IS NULL THEN avatar_url ELSE NULLIF($4, '') END, preferences = COALESCE($5, preferences), updated_at = $6 WHERE id = $7",
    )
    .bind(username.as_deref())
    .bind(username.as_deref().map(str::to_lowercase))
    .bind(username.as_deref().map(users::username_skeleton))
    .bind(req.avatar_url.as_deref())
    .bind(preferences)
    .bind(now)
    .bind(&player.user_id)
    .execute(&mut *tx)
    .await
    .map_err(|e| users::user_conflict(e, username.as_deref().unwrap_or_default()))?;
    let user = users::load(&mut tx, &player.user_id).await?;
    tx.commit().await?;
    Ok(Json(user))
}
