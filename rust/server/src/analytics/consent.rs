//! Consent (`/api/v1/analytics/consent`, the player) and the project's analytics settings
//! (`/api/v1/analytics/settings`, the server key).

use aethex_protocol::analytics::{AnalyticsSettings, Consent, ConsentRequest};
use aethex_protocol::ErrorEnvelope;
use axum::extract::State;
use axum::Json;
use sqlx::Row;

use crate::app::AppState;
use crate::caller::{Caller, Player};
use crate::error::{ApiError, ApiResult};
use crate::http::{ApiJson, ApiJsonOrDefault};

async fn read_consent(state: &AppState, user_id: &str) -> ApiResult<Consent> {
    let row = sqlx::query(
        "SELECT granted, under_13, updated_at FROM analytics_consent WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(&state.db.read)
    .await?;
    Ok(match row {
        Some(row) => Consent {
            granted: row.try_get::<i64, _>("granted")? != 0,
            under_13: row.try_get::<i64, _>("under_13")? != 0,
            updated_at: Some(row.try_get("updated_at")?),
        },
        None => Consent {
            granted: false,
            under_13: false,
            updated_at: None,
        },
    })
}

/// Whether the player may send events now (the writer checks again under a row lock).
pub async fn has_consent(state: &AppState, user_id: &str) -> ApiResult<bool> {
    Ok(read_consent(state, user_id).await?.granted)
}

#[utoipa::path(
    get,
    path = "/api/v1/analytics/consent",
    tag = "analytics",
    security(("client_key" = [], "bearer" = [])),
    responses((status = 200, description = "The player's consent", body = Consent))
)]
pub async fn get_consent(
    State(state): State<AppState>,
    player: Player,
) -> ApiResult<Json<Consent>> {
    Ok(Json(read_consent(&state, &player.user_id).await?))
}

#[utoipa::path(
    put,
    path = "/api/v1/analytics/consent",
    tag = "analytics",
    security(("client_key" = [], "bearer" = [])),
    request_body(content = Option<ConsentRequest>, description = "May be left out: no body means not under 13"),
    responses((status = 200, description = "Consent granted and its time recorded", body = Consent))
)]
pub async fn grant_consent(
    State(state): State<AppState>,
    player: Player,
    ApiJsonOrDefault(req): ApiJsonOrDefault<ConsentRequest>,
) -> ApiResult<Json<Consent>> {
    write_consent(&state, &player, true, req.under_13).await
}

#[utoipa::path(
    delete,
    path = "/api/v1/analytics/consent",
    tag = "analytics",
    security(("client_key" = [], "bearer" = [])),
    responses((status = 200, description = "Consent revoked: later events are refused", body = Consent))
)]
pub async fn revoke_consent(
    State(state): State<AppState>,
    player: Player,
) -> ApiResult<Json<Consent>> {
    // A revocation keeps the last answer's `under_13`: it still describes the player.
    let under_13 = read_consent(&state, &player.user_id).await?.under_13;
    write_consent(&state, &player, false, under_13).await
}

async fn write_consent(
    state: &AppState,
    player: &Player,
    granted: bool,
    under_13: bool,
) -> ApiResult<Json<Consent>> {
    let now = state.clock.now_ms();
    sqlx::query(
        "INSERT INTO analytics_consent (user_id, project_id, granted, under_13, updated_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO UPDATE SET \
         granted = excluded.granted, under_13 = excluded.under_13, updated_at = excluded.updated_at",
    )
    .bind(&player.user_id)
    .bind(&player.project.id)
    .bind(i64::from(granted))
    .bind(i64::from(under_13))
    .bind(now)
    .execute(&state.db.write)
    .await?;
    Ok(Json(Consent {
        granted,
        under_13,
        updated_at: Some(now),
    }))
}

fn server_project(caller: &Caller) -> ApiResult<&str> {
    match caller {
        Caller::Server(project) => Ok(&project.id),
        Caller::Player(_) => Err(ApiError::forbidden("this needs the game's server key")),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/analytics/settings",
    tag = "analytics",
    security(("server_key" = [])),
    responses(
        (status = 200, description = "The project's analytics settings", body = AnalyticsSettings),
        (status = 403, description = "A player token instead of the server key", body = ErrorEnvelope),
    )
)]
pub async fn get_settings(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<AnalyticsSettings>> {
    let project = server_project(&caller)?;
    let coppa = sqlx::query("SELECT coppa FROM analytics_settings WHERE project_id = $1")
        .bind(project)
        .fetch_optional(&state.db.read)
        .await?
        .map(|row| row.try_get::<i64, _>("coppa"))
        .transpose()?
        .unwrap_or(0);
    Ok(Json(AnalyticsSettings { coppa: coppa != 0 }))
}

#[utoipa::path(
    put,
    path = "/api/v1/analytics/settings",
    tag = "analytics",
    security(("server_key" = [])),
    request_body = AnalyticsSettings,
    responses(
        (status = 200, description = "Settings stored", body = AnalyticsSettings),
        (status = 403, description = "A player token instead of the server key", body = ErrorEnvelope),
    )
)]
pub async fn put_settings(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(settings): ApiJson<AnalyticsSettings>,
) -> ApiResult<Json<AnalyticsSettings>> {
    let project = server_project(&caller)?;
    sqlx::query(
        "INSERT INTO analytics_settings (project_id, coppa, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (project_id) DO UPDATE SET coppa = excluded.coppa, \
         updated_at = excluded.updated_at",
    )
    .bind(project)
    .bind(i64::from(settings.coppa))
    .bind(state.clock.now_ms())
    .execute(&state.db.write)
    .await?;
    Ok(Json(settings))
}
