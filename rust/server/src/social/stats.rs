//! Player statistics: `/api/v1/stats/{user_id}`. Named integer values per player; an update
//! also advances the achievements tied to a stat and submits to the leaderboards it feeds.

use std::collections::BTreeMap;

use aethex_protocol::social::{Stat, StatsResponse, UpdateStatsRequest};
use aethex_protocol::ErrorEnvelope;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use sqlx::Row;
use utoipa::OpenApi;

use super::{achievements, ensure_user_in_project, validate_id};
use crate::app::AppState;
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::http::ApiJson;

/// Most stats one update may touch.
const MAX_STATS_PER_UPDATE: usize = 50;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/stats/{user_id}", get(get_stats).post(update_stats))
}

#[derive(OpenApi)]
#[openapi(
    paths(get_stats, update_stats),
    components(schemas(Stat, StatsResponse, UpdateStatsRequest))
)]
pub struct StatsApi;

async fn target(state: &AppState, caller: &Caller, path_user: &str) -> ApiResult<String> {
    let user_id = caller.target_user(path_user)?;
    match caller {
        Caller::Server(project) => ensure_user_in_project(state, &project.id, &user_id).await?,
        Caller::Player(p) => state
            .social
            .presence
            .touch(&p.user_id, state.clock.now_ms()),
    }
    Ok(user_id)
}

async fn read_all(state: &AppState, project_id: &str, user_id: &str) -> ApiResult<Vec<Stat>> {
    let rows = sqlx::query(
        "SELECT name, value, updated_at FROM player_stats WHERE project_id = $1 AND user_id = $2 ORDER BY name",
    )
    .bind(project_id)
    .bind(user_id)
    .fetch_all(&state.db.read)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Stat {
                name: r.try_get("name")?,
                value: r.try_get("value")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect()
}

#[utoipa::path(
    get,
    path = "/api/v1/stats/{user_id}",
    tag = "stats",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    params(("user_id" = String, Path, description = "A player id, or `me`")),
    responses(
        (status = 200, description = "All of the player's stats", body = StatsResponse),
        (status = 403, description = "A player reading someone else's", body = ErrorEnvelope),
    )
)]
pub async fn get_stats(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
) -> ApiResult<Json<StatsResponse>> {
    let user_id = target(&state, &caller, &user).await?;
    Ok(Json(StatsResponse {
        stats: read_all(&state, &caller.project().id, &user_id).await?,
        newly_unlocked: Vec::new(),
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/stats/{user_id}",
    tag = "stats",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    params(("user_id" = String, Path, description = "A player id, or `me`")),
    request_body = UpdateStatsRequest,
    responses(
        (status = 200, description = "The changed stats and the achievements this unlocked", body = StatsResponse),
        (status = 400, description = "Bad names, or a fed leaderboard rejects the value", body = ErrorEnvelope),
        (status = 409, description = "A stat both set and incremented", body = ErrorEnvelope),
        (status = 403, description = "A player writing someone else's stats, or a stat feeding a server-authoritative leaderboard", body = ErrorEnvelope),
    )
)]
pub async fn update_stats(
    State(state): State<AppState>,
    caller: Caller,
    Path(user): Path<String>,
    ApiJson(req): ApiJson<UpdateStatsRequest>,
) -> ApiResult<Json<StatsResponse>> {
    let user_id = target(&state, &caller, &user).await?;
    let project = caller.project().id.clone();
    // An empty update is a no-op answering no stats; the schema bounds each map alone.
    if req.set.len() > MAX_STATS_PER_UPDATE || req.increment.len() > MAX_STATS_PER_UPDATE {
        return Err(ApiError::invalid(format!(
            "set and increment at most {MAX_STATS_PER_UPDATE} stats each per call"
        )));
    }
    for name in req.set.keys().chain(req.increment.keys()) {
        validate_id("stat", name)?;
        if req.set.contains_key(name) && req.increment.contains_key(name) {
            // Conflict rather than invalid: each map is valid, together they contradict.
            return Err(ApiError::conflict(format!(
                "stat {name:?} is both set and incremented"
            )));
        }
    }
    let boards = &state.social.leaderboards;
    let now = state.clock.now_ms();
    let mut tx = state.db.write.begin().await?;
    // name -> (old, new)
    let mut changes: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    // By name across `set` and `increment`, so concurrent updates lock rows in one order and
    // cannot deadlock.
    let ops: BTreeMap<&String, Result<i64, i64>> = req
        .set
        .iter()
        .map(|(n, v)| (n, Ok(*v)))
        .chain(req.increment.iter().map(|(n, v)| (n, Err(*v))))
        .collect();
    for (name, op) in ops {
        // Create the row if missing, then read it locked: a concurrent update of this stat waits
        // here until this transaction commits, then reads the new value (no lost increment).
        sqlx::query(
            "INSERT INTO player_stats (project_id, user_id, name, value, updated_at) VALUES ($1, $2, $3, 0, $4) \
             ON CONFLICT (project_id, user_id, name) DO NOTHING",
        )
        .bind(&project)
        .bind(&user_id)
        .bind(name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let old: i64 = sqlx::query(&format!(
            "SELECT value FROM player_stats WHERE project_id = $1 AND user_id = $2 AND name = $3{}",
            state.db.lock_rows()
        ))
        .bind(&project)
        .bind(&user_id)
        .bind(name)
        .fetch_one(&mut *tx)
        .await?
        .try_get("value")?;
        let new = match op {
            Ok(value) => value,
            Err(delta) => old
                .checked_add(delta)
                .ok_or_else(|| ApiError::conflict(format!("stat {name:?} would overflow")))?,
        };
        // Check every fed board before writing anything, so a rejected value changes nothing.
        for board in boards.fed_by_stat(&project, name) {
            let def = board.def();
            if def.def.server_authoritative && matches!(caller, Caller::Player(_)) {
                return Err(ApiError::forbidden(format!(
                    "stat {name:?} feeds a server-authoritative leaderboard; only the game's server may change it"
                )));
            }
            if let Some(score) = board_submission(&def.def, old, new) {
                def.check_score(score)?;
            }
        }
        sqlx::query(
            "UPDATE player_stats SET value = $1, updated_at = $2 WHERE project_id = $3 AND user_id = $4 AND name = $5",
        )
        .bind(new)
        .bind(now)
        .bind(&project)
        .bind(&user_id)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        changes.insert(name.clone(), (old, new));
    }
    let mut newly_unlocked = Vec::new();
    for (name, (_, new)) in &changes {
        for def in achievements::fed_by_stat(&mut tx, &project, name).await? {
            let (_, newly) =
                achievements::advance(&mut tx, &project, &def, &user_id, *new, now).await?;
            if newly {
                newly_unlocked.push(def.id);
            }
        }
    }
    tx.commit().await?;
    for (name, (old, new)) in &changes {
        for board in boards.fed_by_stat(&project, name) {
            if let Some(score) = board_submission(&board.def().def, *old, *new) {
                boards.apply(&board, &user_id, score, None, now).await?;
            }
        }
    }
    let stats = changes
        .into_iter()
        .map(|(name, (_, value))| Stat {
            name,
            value,
            updated_at: now,
        })
        .collect();
    Ok(Json(StatsResponse {
        stats,
        newly_unlocked,
    }))
}

/// What a stat change submits to a board it feeds: the new value for `best`/`latest`, the
/// change for `increment`/`sum` (a period's sum counts what happened in that period). `None`
/// when there is nothing to add.
fn board_submission(
    def: &aethex_protocol::social::LeaderboardDefinition,
    old: i64,
    new: i64,
) -> Option<i64> {
    use aethex_protocol::social::ScoreOperator;
    match def.operator {
        ScoreOperator::Best | ScoreOperator::Latest => Some(new),
        ScoreOperator::Increment => (new != old).then(|| new.saturating_sub(old)),
        ScoreOperator::Sum => (new > old).then(|| new.saturating_sub(old)),
    }
}
