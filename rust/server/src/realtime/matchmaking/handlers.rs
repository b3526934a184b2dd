//! `/api/v1/matchmaking/modes/*`: mode rules, written with the server key, stored in SQL.

use aethex_protocol::matchmaking::{
    MatchmakingMode, MatchmakingModeConfig, MatchmakingModeList, MAX_MATCH_PLAYERS,
};
use aethex_protocol::ErrorEnvelope;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use sqlx::Row;
use utoipa::OpenApi;

use crate::app::AppState;
use crate::caller::Caller;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::http::ApiJson;
use crate::social::require_server;

/// Largest room `metadata` of a mode, as JSON text.
const MAX_METADATA_BYTES: usize = 4096;
/// Longest ticket timeout (a day).
const MAX_TIMEOUT_SECS: i64 = 86_400;
/// Largest widening rate and cap (keeps ranges finite).
const MAX_WIDEN: f64 = 1e9;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/matchmaking/modes", get(list_modes))
        .route(
            "/api/v1/matchmaking/modes/{mode}",
            get(read_mode).put(put_mode).delete(delete_mode),
        )
}

#[derive(OpenApi)]
#[openapi(
    paths(list_modes, read_mode, put_mode, delete_mode),
    components(schemas(MatchmakingMode, MatchmakingModeConfig, MatchmakingModeList)),
    tags((name = "matchmaking", description = "Rules of each game mode; tickets travel on the realtime socket (docs/api/realtime.md)"))
)]
pub struct MatchmakingApi;

#[utoipa::path(
    get,
    path = "/api/v1/matchmaking/modes",
    tag = "matchmaking",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    responses((status = 200, description = "The configured modes, by name", body = MatchmakingModeList))
)]
pub async fn list_modes(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<MatchmakingModeList>> {
    let rows = sqlx::query(
        "SELECT mode, min_players, max_players, timeout_secs, widen_per_sec, max_widen, tick_rate, metadata \
         FROM mm_modes WHERE project_id = $1 ORDER BY mode",
    )
    .bind(&caller.project().id)
    .fetch_all(&state.db.read)
    .await?;
    let modes = rows
        .iter()
        .map(|row| {
            Ok(MatchmakingMode {
                mode: row.try_get("mode")?,
                config: mode_from_row(row)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Json(MatchmakingModeList { modes }))
}

#[utoipa::path(
    get,
    path = "/api/v1/matchmaking/modes/{mode}",
    tag = "matchmaking",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    params(("mode" = String, Path, description = "Mode name", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.-]+$")),
    responses(
        (status = 200, description = "The mode's rules", body = MatchmakingMode),
        (status = 404, description = "Not configured: the server's `[matchmaking]` defaults apply", body = ErrorEnvelope),
    )
)]
pub async fn read_mode(
    State(state): State<AppState>,
    caller: Caller,
    Path(mode): Path<String>,
) -> ApiResult<Json<MatchmakingMode>> {
    crate::social::validate_id("mode", &mode)?;
    let config = load_mode(&state.db, &caller.project().id, &mode)
        .await?
        .ok_or_else(|| not_configured(&mode))?;
    Ok(Json(MatchmakingMode { mode, config }))
}

#[utoipa::path(
    put,
    path = "/api/v1/matchmaking/modes/{mode}",
    tag = "matchmaking",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    params(("mode" = String, Path, description = "Mode name", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.-]+$")),
    request_body = MatchmakingModeConfig,
    responses(
        (status = 200, description = "Created or replaced; tickets already queued keep their timeout", body = MatchmakingMode),
        (status = 400, description = "A value out of range", body = ErrorEnvelope),
        (status = 403, description = "Needs the server key", body = ErrorEnvelope),
        (status = 409, description = "min_players above max_players, or tick_rate above the server's realtime.max_tick_rate", body = ErrorEnvelope),
    )
)]
pub async fn put_mode(
    State(state): State<AppState>,
    caller: Caller,
    Path(mode): Path<String>,
    ApiJson(config): ApiJson<MatchmakingModeConfig>,
) -> ApiResult<Json<MatchmakingMode>> {
    require_server(&caller)?;
    crate::social::validate_id("mode", &mode)?;
    validate(&state, &config)?;
    let project_id = &caller.project().id;
    let now = state.clock.now_ms();
    sqlx::query(
        "INSERT INTO mm_modes (project_id, mode, min_players, max_players, timeout_secs, widen_per_sec, max_widen, tick_rate, metadata, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (project_id, mode) DO UPDATE SET min_players = excluded.min_players, max_players = excluded.max_players, \
         timeout_secs = excluded.timeout_secs, widen_per_sec = excluded.widen_per_sec, max_widen = excluded.max_widen, \
         tick_rate = excluded.tick_rate, metadata = excluded.metadata, updated_at = excluded.updated_at",
    )
    .bind(project_id)
    .bind(&mode)
    .bind(config.min_players)
    .bind(config.max_players)
    .bind(config.timeout_secs)
    .bind(config.widen_per_sec)
    .bind(config.max_widen)
    .bind(config.tick_rate)
    .bind(config.metadata.as_ref().map(|m| m.to_string()))
    .bind(now)
    .execute(&state.db.write)
    .await?;
    state
        .realtime
        .matchmaking
        .mode_written(&state, project_id, &mode, Some(config.clone()));
    Ok(Json(MatchmakingMode { mode, config }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/matchmaking/modes/{mode}",
    tag = "matchmaking",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    params(("mode" = String, Path, description = "Mode name", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.-]+$")),
    responses(
        (status = 204, description = "Removed: the mode uses the server's defaults again"),
        (status = 403, description = "Needs the server key", body = ErrorEnvelope),
        (status = 404, description = "The mode was not configured", body = ErrorEnvelope),
    )
)]
pub async fn delete_mode(
    State(state): State<AppState>,
    caller: Caller,
    Path(mode): Path<String>,
) -> ApiResult<StatusCode> {
    require_server(&caller)?;
    crate::social::validate_id("mode", &mode)?;
    let project_id = &caller.project().id;
    let deleted = sqlx::query("DELETE FROM mm_modes WHERE project_id = $1 AND mode = $2")
        .bind(project_id)
        .bind(&mode)
        .execute(&state.db.write)
        .await?
        .rows_affected();
    state
        .realtime
        .matchmaking
        .mode_written(&state, project_id, &mode, None);
    if deleted == 0 {
        return Err(not_configured(&mode));
    }
    Ok(StatusCode::NO_CONTENT)
}

fn not_configured(mode: &str) -> ApiError {
    ApiError::not_found(format!(
        "mode {mode:?} is not configured; the server's [matchmaking] defaults apply"
    ))
}

fn validate(state: &AppState, c: &MatchmakingModeConfig) -> ApiResult<()> {
    let players = 1..=i64::from(MAX_MATCH_PLAYERS);
    if !players.contains(&c.min_players) || !players.contains(&c.max_players) {
        return Err(ApiError::invalid(format!(
            "min_players and max_players must be between 1 and {MAX_MATCH_PLAYERS}"
        )));
    }
    if !(1..=MAX_TIMEOUT_SECS).contains(&c.timeout_secs) {
        return Err(ApiError::invalid(format!(
            "timeout_secs must be between 1 and {MAX_TIMEOUT_SECS}"
        )));
    }
    for (name, value) in [
        ("widen_per_sec", c.widen_per_sec),
        ("max_widen", c.max_widen),
    ] {
        if !(0.0..=MAX_WIDEN).contains(&value) {
            return Err(ApiError::invalid(format!(
                "{name} must be between 0 and {MAX_WIDEN}"
            )));
        }
    }
    if c.tick_rate.is_some_and(|t| !(1..=1000).contains(&t)) {
        return Err(ApiError::invalid("tick_rate must be between 1 and 1000"));
    }
    if let Some(metadata) = &c.metadata {
        if !metadata.is_object() || metadata.to_string().len() > MAX_METADATA_BYTES {
            return Err(ApiError::invalid(format!(
                "metadata must be a JSON object of at most {MAX_METADATA_BYTES} bytes"
            )));
        }
    }
    // Conflicts rather than invalid input: each value is valid, together (or with this server's
    // settings) they contradict.
    if c.min_players > c.max_players {
        return Err(ApiError::conflict("min_players is above max_players"));
    }
    let max_tick = state.config.realtime.max_tick_rate;
    if c.tick_rate.is_some_and(|t| t > i64::from(max_tick)) {
        return Err(ApiError::conflict(format!(
            "tick_rate is above this server's realtime.max_tick_rate ({max_tick})"
        )));
    }
    Ok(())
}

/// The configured rules of a mode, `None` when it has none.
pub async fn load_mode(
    db: &Db,
    project_id: &str,
    mode: &str,
) -> ApiResult<Option<MatchmakingModeConfig>> {
    let row = sqlx::query(
        "SELECT min_players, max_players, timeout_secs, widen_per_sec, max_widen, tick_rate, metadata \
         FROM mm_modes WHERE project_id = $1 AND mode = $2",
    )
    .bind(project_id)
    .bind(mode)
    .fetch_optional(&db.read)
    .await?;
    Ok(row.as_ref().map(mode_from_row).transpose()?)
}

fn mode_from_row(row: &sqlx::any::AnyRow) -> Result<MatchmakingModeConfig, sqlx::Error> {
    let metadata: Option<String> = row.try_get("metadata")?;
    Ok(MatchmakingModeConfig {
        min_players: row.try_get("min_players")?,
        max_players: row.try_get("max_players")?,
        timeout_secs: row.try_get("timeout_secs")?,
        widen_per_sec: row.try_get("widen_per_sec")?,
        max_widen: row.try_get("max_widen")?,
        tick_rate: row.try_get("tick_rate")?,
        // Written by this server as JSON text; a row that is not would be a bug to surface.
        metadata: metadata
            .map(|m| serde_json::from_str(&m))
            .transpose()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
    })
}
