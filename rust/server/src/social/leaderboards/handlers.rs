//! HTTP handlers of `/api/v1/leaderboards/*`.

use aethex_protocol::social::{
    LeaderboardDefinition, LeaderboardEntry, LeaderboardList, LeaderboardPage, SubmitScoreRequest,
    SubmitScoreResponse,
};
use aethex_protocol::ErrorEnvelope;
use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use super::board::RankKey;
use super::PeriodSel;
use crate::app::AppState;
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::http::ApiJson;
use crate::social::{friends, page_limit, require_server, write_target, ApiQuery};

#[derive(OpenApi)]
#[openapi(
    paths(list_boards, create_board, put_board, read_board, submit, player_rank),
    components(schemas(
        LeaderboardDefinition,
        LeaderboardList,
        LeaderboardPage,
        LeaderboardEntry,
        SubmitScoreRequest,
        SubmitScoreResponse,
        aethex_protocol::social::SortOrder,
        aethex_protocol::social::ScoreOperator,
    ))
)]
pub struct LeaderboardsApi;

#[utoipa::path(
    get,
    path = "/api/v1/leaderboards",
    tag = "leaderboards",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    responses((status = 200, description = "The project's board definitions", body = LeaderboardList))
)]
pub async fn list_boards(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<LeaderboardList>> {
    Ok(Json(LeaderboardList {
        leaderboards: state.social.leaderboards.list(&caller.project().id),
    }))
}

#[utoipa::path(
    post,
    path = "/api/v1/leaderboards",
    tag = "leaderboards",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    request_body = LeaderboardDefinition,
    responses(
        (status = 200, description = "Created or replaced", body = LeaderboardDefinition),
        (status = 400, description = "Invalid definition", body = ErrorEnvelope),
        (status = 409, description = "min_score is above max_score", body = ErrorEnvelope),
        (status = 403, description = "Needs the server key", body = ErrorEnvelope),
    )
)]
pub async fn create_board(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(def): ApiJson<LeaderboardDefinition>,
) -> ApiResult<Json<LeaderboardDefinition>> {
    require_server(&caller)?;
    let now = state.clock.now_ms();
    Ok(Json(
        state
            .social
            .leaderboards
            .define(&caller.project().id, def, now)
            .await?,
    ))
}

#[utoipa::path(
    put,
    path = "/api/v1/leaderboards/{id}",
    tag = "leaderboards",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    params(("id" = String, Path, description = "Board id", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.-]+$")),
    request_body = LeaderboardDefinition,
    responses(
        (status = 200, description = "Created or replaced", body = LeaderboardDefinition),
        (status = 400, description = "Invalid definition", body = ErrorEnvelope),
        (status = 409, description = "min_score is above max_score", body = ErrorEnvelope),
        (status = 403, description = "Needs the server key", body = ErrorEnvelope),
    )
)]
pub async fn put_board(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(mut def): ApiJson<LeaderboardDefinition>,
) -> ApiResult<Json<LeaderboardDefinition>> {
    require_server(&caller)?;
    def.id = id;
    let now = state.clock.now_ms();
    Ok(Json(
        state
            .social
            .leaderboards
            .define(&caller.project().id, def, now)
            .await?,
    ))
}

#[utoipa::path(
    post,
    path = "/api/v1/leaderboards/{id}/scores",
    tag = "leaderboards",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    params(("id" = String, Path, description = "Board id", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.-]+$")),
    request_body = SubmitScoreRequest,
    responses(
        (status = 200, description = "The caller's entry after the submission", body = SubmitScoreResponse),
        (status = 400, description = "Score out of bounds or invalid metadata", body = ErrorEnvelope),
        (status = 403, description = "Server-authoritative board, or a player naming someone else", body = ErrorEnvelope),
        (status = 404, description = "No such board or player", body = ErrorEnvelope),
    )
)]
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SubmitScoreRequest>,
) -> ApiResult<Json<SubmitScoreResponse>> {
    let boards = &state.social.leaderboards;
    let board = boards.get(&caller.project().id, &id)?;
    if let Caller::Player(p) = &caller {
        state
            .social
            .presence
            .touch(&p.user_id, state.clock.now_ms());
        if board.def().def.server_authoritative {
            return Err(ApiError::forbidden(
                "this leaderboard accepts scores only from the game's server",
            ));
        }
    }
    let user_id = write_target(&state, &caller, req.user_id.as_deref()).await?;
    let now = state.clock.now_ms();
    let applied = boards
        .apply(&board, &user_id, req.score, req.metadata.as_ref(), now)
        .await?;
    Ok(Json(SubmitScoreResponse {
        leaderboard_id: id,
        period: applied.period,
        entry: applied.entry,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// `global` (default), `around_me` or `friends`.
    #[param(pattern = "^(global|around_me|friends)$")]
    range: Option<String>,
    /// Page size (global: default 10, at most 100; friends: default 100, at most 1000) or
    /// entries above and below the player (around_me: default 5, at most 50). Larger values
    /// up to 1000 are cut to the range's maximum.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page (global range).
    #[param(pattern = "^-?[0-9]{1,19}_-?[0-9]{1,19}_-?[0-9]{1,19}$")]
    cursor: Option<String>,
    /// `current` (default), `previous`, or a period start (unix ms) as answered in `period`.
    #[param(pattern = "^(current|previous|-?[0-9]{1,18})$")]
    period: Option<String>,
    /// Server key only: the player `around_me` / `friends` / `me` refer to.
    user_id: Option<String>,
}

fn parse_period(text: Option<&str>) -> ApiResult<PeriodSel> {
    match text {
        None | Some("current") => Ok(PeriodSel::Current),
        Some("previous") => Ok(PeriodSel::Previous),
        Some(other) => other.parse().map(PeriodSel::Start).map_err(|_| {
            ApiError::invalid("period must be current, previous or a period start in unix ms")
        }),
    }
}

/// The player a read is about: the caller, or the `user_id` a server names.
fn viewer(caller: &Caller, named: Option<&str>) -> ApiResult<Option<String>> {
    match caller {
        Caller::Player(p) => match named {
            None | Some("me") => Ok(Some(p.user_id.clone())),
            Some(id) if id == p.user_id => Ok(Some(id.to_owned())),
            Some(_) => Err(ApiError::forbidden(
                "players read ranges around themselves only",
            )),
        },
        Caller::Server(_) => Ok(named.map(str::to_owned)),
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/leaderboards/{id}",
    tag = "leaderboards",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    params(("id" = String, Path, description = "Board id", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.-]+$"), ReadQuery),
    responses(
        (status = 200, description = "A page of ranked entries", body = LeaderboardPage),
        (status = 400, description = "Bad range, limit, cursor or period", body = ErrorEnvelope),
        (status = 404, description = "No such board", body = ErrorEnvelope),
    )
)]
pub async fn read_board(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ReadQuery>,
) -> ApiResult<Json<LeaderboardPage>> {
    let now = state.clock.now_ms();
    let boards = &state.social.leaderboards;
    let board = boards.get(&caller.project().id, &id)?;
    let sel = parse_period(q.period.as_deref())?;
    let viewer = viewer(&caller, q.user_id.as_deref())?;
    if let Caller::Player(p) = &caller {
        state.social.presence.touch(&p.user_id, now);
    }
    if q.limit.is_some_and(|n| n > 1000) {
        return Err(ApiError::invalid("limit must be at most 1000"));
    }
    let range = q.range.as_deref().unwrap_or("global");
    // Friends come from SQL; read them before taking the index lock.
    let friend_ids = if range == "friends" {
        let me = viewer
            .as_deref()
            .ok_or_else(|| ApiError::not_found("the friends range needs a player (user_id)"))?;
        let mut ids = friends::friend_ids(&state.db, &caller.project().id, me).await?;
        ids.push(me.to_owned());
        ids
    } else {
        Vec::new()
    };
    let (period, index) = boards.read_index(&board, sel, now).await?;
    let (ranked, next_cursor, me, total) = {
        let index = index.read().expect("lock");
        let me = viewer.as_deref().and_then(|v| index.ranked(v));
        let total = index.len() as u64;
        match range {
            "global" => {
                // Limits up to 1000 above the range's maximum are cut, not refused: the schema
                // has one bound for three ranges.
                let limit = page_limit(q.limit.map(|n| n.min(100)), 10, 100)?;
                let start = match q.cursor.as_deref() {
                    None => 0,
                    Some(c) => index.position_after(
                        RankKey::from_cursor(c)
                            .ok_or_else(|| ApiError::invalid("malformed cursor"))?,
                    ),
                };
                let page = index.page(start, limit);
                let next = (start + page.len() < index.len())
                    .then(|| page.last().map(|r| r.slot.key.to_cursor()))
                    .flatten();
                (page, next, me, total)
            }
            "around_me" => {
                let n = page_limit(q.limit.map(|n| n.min(50)), 5, 50)?;
                if viewer.is_none() {
                    return Err(ApiError::not_found("around_me needs a player (user_id)"));
                }
                let page = match &me {
                    Some(m) => {
                        let pos = m.rank as usize - 1;
                        let start = pos.saturating_sub(n);
                        index.page(start, pos - start + n + 1)
                    }
                    None => Vec::new(),
                };
                (page, None, me, total)
            }
            "friends" => {
                let limit = page_limit(q.limit.map(|n| n.min(1000)), 100, 1000)?;
                let mut page: Vec<_> = friend_ids.iter().filter_map(|f| index.ranked(f)).collect();
                page.sort_by_key(|r| r.rank);
                page.truncate(limit);
                (page, None, me, total)
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "range must be global, around_me or friends, not {other:?}"
                )))
            }
        }
    };
    let entries = boards.entries(&board, period, ranked).await?;
    let me = match me {
        Some(m) => boards.entries(&board, period, vec![m]).await?.pop(),
        None => None,
    };
    let def = board.def();
    let next_reset_at = if period == def.schedule.period_start(now) {
        def.schedule.next_reset(now)
    } else {
        def.schedule.next_reset(period)
    };
    Ok(Json(LeaderboardPage {
        leaderboard_id: id,
        period,
        next_reset_at,
        total,
        entries,
        next_cursor,
        me,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RankQuery {
    /// `current` (default), `previous`, or a period start (unix ms).
    #[param(pattern = "^(current|previous|-?[0-9]{1,18})$")]
    period: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/leaderboards/{id}/ranks/{user_id}",
    tag = "leaderboards",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    params(
        ("id" = String, Path, description = "Board id", min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.-]+$"),
        ("user_id" = String, Path, description = "A player id, or `me`"),
        RankQuery
    ),
    responses(
        (status = 200, description = "The player's entry with its exact rank", body = LeaderboardEntry),
        (status = 404, description = "No such board, or no score in that period", body = ErrorEnvelope),
    )
)]
pub async fn player_rank(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, user_id)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<RankQuery>,
) -> ApiResult<Json<LeaderboardEntry>> {
    let now = state.clock.now_ms();
    let boards = &state.social.leaderboards;
    let board = boards.get(&caller.project().id, &id)?;
    // Ranks are public within the game: a player may look up anyone's, like on the board itself.
    let user_id = match (&caller, user_id.as_str()) {
        (Caller::Player(p), "me") => p.user_id.clone(),
        (Caller::Server(_), "me") => {
            return Err(ApiError::not_found("a server key must name the player"))
        }
        (_, other) => other.to_owned(),
    };
    let (period, index) = boards
        .read_index(&board, parse_period(q.period.as_deref())?, now)
        .await?;
    let ranked = index
        .read()
        .expect("lock")
        .ranked(&user_id)
        .ok_or_else(|| ApiError::not_found("this player has no score in that period"))?;
    boards
        .entries(&board, period, vec![ranked])
        .await?
        .pop()
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no such player"))
}
