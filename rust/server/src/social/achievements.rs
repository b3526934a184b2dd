//! Achievements: `/api/v1/achievements/*`. Progress is monotonic and capped at the goal; the
//! unlock stamp is set by a conditional UPDATE, so exactly one call reports `newly_unlocked`
//! even when several race.

use aethex_protocol::social::{
    AchievementDefinition, AchievementList, AchievementPercentage, AchievementPercentages,
    AchievementUpdate, PlayerAchievement, SetProgressRequest, UnlockRequest,
};
use aethex_protocol::ErrorEnvelope;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use utoipa::{IntoParams, OpenApi};

use super::ApiQuery;
use super::{require_server, validate_id, write_target};
use crate::app::AppState;
use crate::caller::Caller;
use crate::db::get_flag;
use crate::error::{ApiError, ApiResult};
use crate::http::{ApiJson, ApiJsonOrDefault};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/achievements",
            get(list_achievements).post(create_achievement),
        )
        .route("/api/v1/achievements/percentages", get(percentages))
        .route(
            "/api/v1/achievements/{id}",
            axum::routing::put(put_achievement),
        )
        .route("/api/v1/achievements/{id}/unlock", post(unlock))
        .route("/api/v1/achievements/{id}/progress", post(set_progress))
}

#[derive(OpenApi)]
#[openapi(
    paths(
        list_achievements,
        create_achievement,
        put_achievement,
        percentages,
        unlock,
        set_progress
    ),
    components(schemas(
        AchievementDefinition,
        AchievementList,
        AchievementPercentage,
        AchievementPercentages,
        AchievementUpdate,
        PlayerAchievement,
        SetProgressRequest,
        UnlockRequest
    ))
)]
pub struct AchievementsApi;

const DEF_COLUMNS: &str = "id, name, description, icon_url, hidden, goal, stat";

fn def_from_row(row: &AnyRow) -> Result<AchievementDefinition, sqlx::Error> {
    Ok(AchievementDefinition {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        icon_url: row.try_get("icon_url")?,
        hidden: get_flag(row, "hidden")?,
        goal: row.try_get("goal")?,
        stat: row.try_get("stat")?,
    })
}

async fn load_def(
    conn: &mut AnyConnection,
    project_id: &str,
    id: &str,
) -> ApiResult<AchievementDefinition> {
    let sql =
        format!("SELECT {DEF_COLUMNS} FROM ach_definitions WHERE project_id = $1 AND id = $2");
    let row = sqlx::query(&sql)
        .bind(project_id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no achievement {id:?}")))?;
    Ok(def_from_row(&row)?)
}

/// Achievements of the project driven by statistic `stat`.
pub async fn fed_by_stat(
    conn: &mut AnyConnection,
    project_id: &str,
    stat: &str,
) -> ApiResult<Vec<AchievementDefinition>> {
    let sql =
        format!("SELECT {DEF_COLUMNS} FROM ach_definitions WHERE project_id = $1 AND stat = $2");
    let rows = sqlx::query(&sql)
        .bind(project_id)
        .bind(stat)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows
        .iter()
        .map(def_from_row)
        .collect::<Result<_, sqlx::Error>>()?)
}

/// Raises progress to `progress` (capped at the goal; lower values change nothing) and unlocks
/// at the goal. Returns the state and whether this call unlocked it.
pub async fn advance(
    conn: &mut AnyConnection,
    project_id: &str,
    def: &AchievementDefinition,
    user_id: &str,
    progress: i64,
    now_ms: i64,
) -> ApiResult<(PlayerAchievement, bool)> {
    let progress = progress.min(def.goal);
    sqlx::query(
        "INSERT INTO ach_progress (project_id, achievement_id, user_id, progress, updated_at) VALUES ($1, $2, $3, 0, $4) \
         ON CONFLICT (project_id, achievement_id, user_id) DO NOTHING",
    )
    .bind(project_id)
    .bind(&def.id)
    .bind(user_id)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE ach_progress SET progress = $1, updated_at = $2 WHERE project_id = $3 AND achievement_id = $4 AND user_id = $5 AND progress < $1",
    )
    .bind(progress)
    .bind(now_ms)
    .bind(project_id)
    .bind(&def.id)
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    let mut newly = false;
    if progress >= def.goal {
        let done = sqlx::query(
            "UPDATE ach_progress SET unlocked_at = $1 WHERE project_id = $2 AND achievement_id = $3 AND user_id = $4 AND unlocked_at IS NULL",
        )
        .bind(now_ms)
        .bind(project_id)
        .bind(&def.id)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
        newly = done.rows_affected() == 1;
    }
    let row = sqlx::query(
        "SELECT progress, unlocked_at FROM ach_progress WHERE project_id = $1 AND achievement_id = $2 AND user_id = $3",
    )
    .bind(project_id)
    .bind(&def.id)
    .bind(user_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok((
        player_view(def, row.try_get("progress")?, row.try_get("unlocked_at")?),
        newly,
    ))
}

fn player_view(
    def: &AchievementDefinition,
    progress: i64,
    unlocked_at: Option<i64>,
) -> PlayerAchievement {
    PlayerAchievement {
        id: def.id.clone(),
        name: def.name.clone(),
        description: def.description.clone(),
        icon_url: def.icon_url.clone(),
        hidden: def.hidden,
        unlocked: unlocked_at.is_some(),
        progress,
        goal: def.goal,
        unlocked_at,
    }
}

async fn define(
    state: &AppState,
    caller: &Caller,
    def: AchievementDefinition,
) -> ApiResult<Json<AchievementDefinition>> {
    require_server(caller)?;
    validate_id("achievement", &def.id)?;
    if let Some(stat) = &def.stat {
        validate_id("stat", stat)?;
    }
    if def.name.trim().is_empty() || def.name.chars().count() > 128 {
        return Err(ApiError::invalid("name must be 1 to 128 characters"));
    }
    if def.description.chars().count() > 1024 {
        return Err(ApiError::invalid(
            "description must be at most 1024 characters",
        ));
    }
    if def.goal < 1 {
        return Err(ApiError::invalid("goal must be at least 1"));
    }
    sqlx::query(
        "INSERT INTO ach_definitions (project_id, id, name, description, icon_url, hidden, goal, stat, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (project_id, id) DO UPDATE SET name = excluded.name, description = excluded.description, icon_url = excluded.icon_url, \
         hidden = excluded.hidden, goal = excluded.goal, stat = excluded.stat",
    )
    .bind(&caller.project().id)
    .bind(&def.id)
    .bind(&def.name)
    .bind(&def.description)
    .bind(&def.icon_url)
    .bind(def.hidden as i64)
    .bind(def.goal)
    .bind(&def.stat)
    .bind(state.clock.now_ms())
    .execute(&state.db.write)
    .await?;
    Ok(Json(def))
}

#[utoipa::path(
    post,
    path = "/api/v1/achievements",
    tag = "achievements",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    request_body = AchievementDefinition,
    responses(
        (status = 200, description = "Created or replaced", body = AchievementDefinition),
        (status = 400, description = "Invalid definition", body = ErrorEnvelope),
        (status = 403, description = "Needs the server key", body = ErrorEnvelope),
    )
)]
pub async fn create_achievement(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(def): ApiJson<AchievementDefinition>,
) -> ApiResult<Json<AchievementDefinition>> {
    define(&state, &caller, def).await
}

#[utoipa::path(
    put,
    path = "/api/v1/achievements/{id}",
    tag = "achievements",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    params(("id" = String, Path, description = "Achievement id", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.-]+$")),
    request_body = AchievementDefinition,
    responses(
        (status = 200, description = "Created or replaced", body = AchievementDefinition),
        (status = 400, description = "Invalid definition", body = ErrorEnvelope),
        (status = 403, description = "Needs the server key", body = ErrorEnvelope),
    )
)]
pub async fn put_achievement(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(mut def): ApiJson<AchievementDefinition>,
) -> ApiResult<Json<AchievementDefinition>> {
    def.id = id;
    define(&state, &caller, def).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Server key only: whose achievements.
    user_id: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/achievements",
    tag = "achievements",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "Every achievement with the player's progress; hidden ones only once unlocked", body = AchievementList),
        (status = 403, description = "A player naming someone else", body = ErrorEnvelope),
    )
)]
pub async fn list_achievements(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<AchievementList>> {
    let user_id = write_target(&state, &caller, q.user_id.as_deref()).await?;
    if let Caller::Player(p) = &caller {
        state
            .social
            .presence
            .touch(&p.user_id, state.clock.now_ms());
    }
    let rows = sqlx::query(
        "SELECT d.id, d.name, d.description, d.icon_url, d.hidden, d.goal, d.stat, p.progress, p.unlocked_at \
         FROM ach_definitions d LEFT JOIN ach_progress p \
           ON p.project_id = d.project_id AND p.achievement_id = d.id AND p.user_id = $1 \
         WHERE d.project_id = $2 ORDER BY d.id",
    )
    .bind(&user_id)
    .bind(&caller.project().id)
    .fetch_all(&state.db.read)
    .await?;
    let mut achievements = Vec::with_capacity(rows.len());
    for row in rows {
        let def = def_from_row(&row)?;
        let unlocked_at: Option<i64> = row.try_get("unlocked_at")?;
        if def.hidden && unlocked_at.is_none() {
            continue;
        }
        let progress: Option<i64> = row.try_get("progress")?;
        achievements.push(player_view(&def, progress.unwrap_or(0), unlocked_at));
    }
    Ok(Json(AchievementList { achievements }))
}

#[utoipa::path(
    get,
    path = "/api/v1/achievements/percentages",
    tag = "achievements",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    responses((status = 200, description = "Share of the project's players who unlocked each achievement (hidden ones only for the server key)", body = AchievementPercentages))
)]
pub async fn percentages(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<AchievementPercentages>> {
    let project = &caller.project().id;
    let total_players: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE project_id = $1")
        .bind(project)
        .fetch_one(&state.db.read)
        .await?
        .try_get("n")?;
    let rows = sqlx::query(
        "SELECT d.id, d.hidden, COUNT(p.unlocked_at) AS unlocked FROM ach_definitions d LEFT JOIN ach_progress p \
           ON p.project_id = d.project_id AND p.achievement_id = d.id AND p.unlocked_at IS NOT NULL \
         WHERE d.project_id = $1 GROUP BY d.id, d.hidden ORDER BY d.id",
    )
    .bind(project)
    .fetch_all(&state.db.read)
    .await?;
    let mut achievements = Vec::with_capacity(rows.len());
    for row in rows {
        if get_flag(&row, "hidden")? && matches!(caller, Caller::Player(_)) {
            continue;
        }
        let unlocked_count: i64 = row.try_get("unlocked")?;
        achievements.push(AchievementPercentage {
            id: row.try_get("id")?,
            unlocked_count,
            percent: if total_players == 0 {
                0.0
            } else {
                unlocked_count as f64 * 100.0 / total_players as f64
            },
        });
    }
    Ok(Json(AchievementPercentages {
        total_players,
        achievements,
    }))
}

async fn progress_call(
    state: &AppState,
    caller: &Caller,
    id: &str,
    named_user: Option<&str>,
    progress: Option<i64>,
) -> ApiResult<Json<AchievementUpdate>> {
    let user_id = write_target(state, caller, named_user).await?;
    let now = state.clock.now_ms();
    if let Caller::Player(p) = caller {
        state.social.presence.touch(&p.user_id, now);
    }
    let project = &caller.project().id;
    let mut tx = state.db.write.begin().await?;
    let def = load_def(&mut tx, project, id).await?;
    if def.stat.is_some() && matches!(caller, Caller::Player(_)) {
        return Err(ApiError::forbidden(
            "this achievement follows a statistic; update the statistic instead",
        ));
    }
    let target = progress.unwrap_or(def.goal);
    if target < 0 {
        return Err(ApiError::invalid("progress must not be negative"));
    }
    let (achievement, newly) = advance(&mut tx, project, &def, &user_id, target, now).await?;
    tx.commit().await?;
    Ok(Json(AchievementUpdate {
        newly_unlocked: if newly {
            vec![achievement.id.clone()]
        } else {
            Vec::new()
        },
        achievement,
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/achievements/{id}/unlock",
    tag = "achievements",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    params(("id" = String, Path, description = "Achievement id", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.-]+$")),
    request_body = UnlockRequest,
    responses(
        (status = 200, description = "Unlocked; `newly_unlocked` names it only the first time", body = AchievementUpdate),
        (status = 403, description = "A player naming someone else, or a stat-driven achievement", body = ErrorEnvelope),
        (status = 404, description = "No such achievement or player", body = ErrorEnvelope),
    )
)]
pub async fn unlock(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    // The body is optional: players usually send none.
    ApiJsonOrDefault(req): ApiJsonOrDefault<UnlockRequest>,
) -> ApiResult<Json<AchievementUpdate>> {
    progress_call(&state, &caller, &id, req.user_id.as_deref(), None).await
}

#[utoipa::path(
    post,
    path = "/api/v1/achievements/{id}/progress",
    tag = "achievements",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    params(("id" = String, Path, description = "Achievement id", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.-]+$")),
    request_body = SetProgressRequest,
    responses(
        (status = 200, description = "Progress after the call (lower values are ignored); reaching the goal unlocks", body = AchievementUpdate),
        (status = 400, description = "Negative progress", body = ErrorEnvelope),
        (status = 403, description = "A player naming someone else, or a stat-driven achievement", body = ErrorEnvelope),
        (status = 404, description = "No such achievement or player", body = ErrorEnvelope),
    )
)]
pub async fn set_progress(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetProgressRequest>,
) -> ApiResult<Json<AchievementUpdate>> {
    progress_call(
        &state,
        &caller,
        &id,
        req.user_id.as_deref(),
        Some(req.progress),
    )
    .await
}
