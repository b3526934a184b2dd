//! `POST /api/v1/auth/device`: anonymous sign-in. A device id reaches the same account every
//! time; the first call creates it.

use aethex_protocol::auth::{AuthResponse, DeviceAuthRequest};
use aethex_protocol::ErrorCode;
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
    security(("client_key" = [])),
    request_body = DeviceAuthRequest,
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
    let requested = req.username.as_deref().map(users::normalize_username);
    if let Some(name) = &requested {
        users::validate_username(name)?;
    }
    let now = state.clock.now_ms();
    let writer = &state.auth.sign_in_writer;
    // Reads use reader connections (parallel WAL readers on SQLite); only the rows a sign-in must
    // create go through the writer, batched with other sign-ins.
    let lookup = &state.auth.identity_lookup;
    let existing = lookup.user(&project.id, PROVIDER, &req.device_id);
    let (user, opened) = match existing.await? {
        Some(user) => {
            let opened = writer.open_session(&project.id, &user.id, now).await?;
            (user, opened)
        }
        None => {
            if let Some(name) = &requested {
                // Most conflicts are caught here, so they do not break a writer batch.
                if users::username_taken(&state.db.read, &project.id, name).await? {
                    return Err(ApiError::conflict(format!("username {name:?} is taken")));
                }
            }
            let mut attempts = 0;
            loop {
                let username = match &requested {
                    Some(name) => name.clone(),
                    None => state.auth.username_generator.next_name(),
                };
                attempts += 1;
                match writer
                    .register_device(&project.id, &req.device_id, &username, now)
                    .await
                {
                    Ok(Some((user_id, opened))) => {
                        break (users::new_device_user(user_id, username, now), opened)
                    }
                    Ok(None) => {
                        // Lost a race with a concurrent first sign-in of this device: the
                        // identity's primary key chose the winner's account, which this sign-in
                        // joins.
                        let user = lookup
                            .user(&project.id, PROVIDER, &req.device_id)
                            .await?
                            .ok_or_else(|| {
                                ApiError::internal("device identity vanished after a conflict")
                            })?;
                        let opened = writer.open_session(&project.id, &user.id, now).await?;
                        break (user, opened);
                    }
                    // A generated name that is taken is the server's problem, never the player's.
                    Err(e)
                        if requested.is_none()
                            && e.code == ErrorCode::Conflict
                            && attempts < users::MAX_GENERATED_NAME_ATTEMPTS =>
                    {
                        tracing::debug!(%username, "generated username taken; trying another");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    };
    Ok(Json(sessions::auth_response(
        &state,
        &project.id,
        user,
        opened.session_id,
        opened.refresh_token,
        now,
    )?))
}
