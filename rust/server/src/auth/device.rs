//! `POST /api/v1/auth/device`: anonymous sign-in. A device id reaches the same account every
//! time; the first call creates it.

use aethex_protocol::auth::{AuthResponse, DeviceAuthRequest};
use axum::extract::State;
use axum::Json;

use super::rate_limit::IpLimited;
use super::{sessions, users};
use crate::app::AppState;
use crate::caller::ClientProject;
use crate::error::{ApiError, ApiResult};
use crate::http::ApiJson;

pub const PROVIDER: &str = "device";

pub fn validate_device_id(device_id: &str) -> ApiResult<()> {
    if !(8..=128).contains(&device_id.len()) || !device_id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            "device_id must be 8 to 128 printable ASCII characters",
        ));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/device",
    tag = "auth",
    request_body = DeviceAuthRequest,
    params(("X-AeThex-Key" = String, Header, description = "The game's client key")),
    responses(
        (status = 200, description = "Signed in (account created on first use)", body = AuthResponse),
        (status = 400, description = "Invalid device id or username", body = aethex_protocol::ErrorEnvelope),
        (status = 409, description = "Requested username is taken", body = aethex_protocol::ErrorEnvelope),
        (status = 429, description = "Rate limited", body = aethex_protocol::ErrorEnvelope),
    )
)]
pub async fn device_login(
    _limit: IpLimited,
    State(state): State<AppState>,
    ClientProject(project): ClientProject,
    ApiJson(req): ApiJson<DeviceAuthRequest>,
) -> ApiResult<Json<AuthResponse>> {
    validate_device_id(&req.device_id)?;
    if let Some(name) = &req.username {
        users::validate_username(name)?;
    }
    let now = state.clock.now_ms();
    let mut tx = state.db.write.begin().await?;
    let user_id = match users::find_by_identity(&mut tx, &project.id, PROVIDER, &req.device_id)
        .await?
    {
        Some(id) => id,
        None => {
            let username = req
                .username
                .clone()
                .unwrap_or_else(users::generated_username);
            let id = users::insert(&mut tx, &project.id, &username, now).await?;
            users::add_identity(&mut tx, &project.id, PROVIDER, &req.device_id, &id, now).await?;
            id
        }
    };
    let (session_id, refresh) =
        sessions::create(&mut tx, &state, &project.id, &user_id, now).await?;
    let user = users::load(&mut tx, &user_id).await?;
    tx.commit().await?;
    Ok(Json(sessions::auth_response(
        &state,
        &project.id,
        user,
        session_id,
        refresh,
        now,
    )?))
}
