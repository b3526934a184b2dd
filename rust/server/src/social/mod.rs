//! Social features: leaderboards, achievements, player statistics, friends and groups.
//!
//! Leaderboard rankings live in memory (one rank index per board period, rebuilt from SQL at
//! start, written through to SQL on every change); everything else is plain SQL. With several
//! nodes (`crate::cluster`) the rank indexes follow every node's writes and presence comes from
//! the realtime sockets of all nodes.

pub mod achievements;
pub mod friends;
pub mod groups;
pub mod leaderboards;
pub mod stats;

use std::sync::Arc;

use axum::Router;
use sqlx::Row;
use utoipa::OpenApi;

use crate::app::AppState;
use crate::caller::Caller;
use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};

pub struct SocialService {
    pub leaderboards: leaderboards::Leaderboards,
    pub presence: friends::PresenceMap,
}

impl SocialService {
    pub async fn new(
        db: &Db,
        clock: &dyn Clock,
        cluster: Option<Arc<Cluster>>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            leaderboards: leaderboards::Leaderboards::load(db, clock.now_ms(), cluster).await?,
            presence: friends::PresenceMap::default(),
        })
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(leaderboards::router())
        .merge(achievements::router())
        .merge(stats::router())
        .merge(friends::router())
        .merge(groups::router())
}

#[derive(OpenApi)]
#[openapi(
    tags(
        (name = "leaderboards", description = "Ranked scores per board and period"),
        (name = "achievements", description = "Unlocks and progress"),
        (name = "stats", description = "Named per-player counters"),
        (name = "friends", description = "Friend graph, blocks, presence and player search"),
        (name = "groups", description = "Clans and teams")
    )
)]
pub struct SocialApi;

impl SocialApi {
    /// The whole social part of the OpenAPI document.
    pub fn openapi() -> utoipa::openapi::OpenApi {
        let mut doc = <Self as OpenApi>::openapi();
        doc.merge(leaderboards::LeaderboardsApi::openapi());
        doc.merge(achievements::AchievementsApi::openapi());
        doc.merge(stats::StatsApi::openapi());
        doc.merge(friends::FriendsApi::openapi());
        doc.merge(groups::GroupsApi::openapi());
        doc
    }
}

/// `axum::extract::Query` whose rejection is a typed 400 `invalid_request` like every other
/// error (axum's own answers plain text).
pub struct ApiQuery<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::invalid(e.body_text()))
    }
}

/// Ids of boards, achievements and stats: 1 to 64 of `[A-Za-z0-9_.-]`.
pub fn validate_id(kind: &str, id: &str) -> ApiResult<()> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(ApiError::invalid(format!(
            "{kind} id must be 1 to 64 letters, digits, '_', '-' or '.'"
        )));
    }
    Ok(())
}

pub fn require_server(caller: &Caller) -> ApiResult<()> {
    match caller {
        Caller::Server(_) => Ok(()),
        Caller::Player(_) => Err(ApiError::forbidden("this needs the game's server key")),
    }
}

/// Who a write is for: a player writes only for themselves (naming anyone else is 403); a server
/// key must name a user of its own project (404 otherwise).
pub async fn write_target(
    state: &AppState,
    caller: &Caller,
    named: Option<&str>,
) -> ApiResult<String> {
    match caller {
        Caller::Player(p) => match named {
            None | Some("me") => Ok(p.user_id.clone()),
            Some(id) if id == p.user_id => Ok(p.user_id.clone()),
            Some(_) => Err(ApiError::forbidden("players may only write their own data")),
        },
        Caller::Server(project) => {
            // Not found rather than invalid: without `user_id` a server key names no player.
            let id = named.ok_or_else(|| {
                ApiError::not_found("a server key must name the player in `user_id`")
            })?;
            ensure_user_in_project(state, &project.id, id).await?;
            Ok(id.to_owned())
        }
    }
}

pub async fn ensure_user_in_project(
    state: &AppState,
    project_id: &str,
    user_id: &str,
) -> ApiResult<()> {
    let found = sqlx::query("SELECT 1 AS one FROM users WHERE id = $1 AND project_id = $2")
        .bind(user_id)
        .bind(project_id)
        .fetch_optional(&state.db.read)
        .await?;
    match found {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found("no such player")),
    }
}

/// Usernames of the given users (missing ids are left out).
pub async fn usernames(
    db: &Db,
    user_ids: &[&str],
) -> ApiResult<std::collections::HashMap<String, String>> {
    let mut out = std::collections::HashMap::with_capacity(user_ids.len());
    if user_ids.is_empty() {
        return Ok(out);
    }
    let sql = format!(
        "SELECT id, username FROM users WHERE id IN ({})",
        placeholders(1, user_ids.len())
    );
    let mut query = sqlx::query(&sql);
    for id in user_ids {
        query = query.bind(*id);
    }
    for row in query.fetch_all(&db.read).await? {
        out.insert(row.try_get("id")?, row.try_get("username")?);
    }
    Ok(out)
}

/// A `LIKE ... ESCAPE '\'` pattern matching strings that start with `prefix` literally.
pub fn prefix_pattern(prefix: &str) -> String {
    let escaped = prefix
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("{escaped}%")
}

/// `$first, $first+1, ...`, `count` of them.
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Page size from a query parameter: default `default`, at most `max`, at least 1.
pub fn page_limit(limit: Option<u32>, default: u32, max: u32) -> ApiResult<usize> {
    match limit {
        None => Ok(default as usize),
        Some(0) => Err(ApiError::invalid("limit must be at least 1")),
        Some(n) if n > max => Err(ApiError::invalid(format!("limit must be at most {max}"))),
        Some(n) => Ok(n as usize),
    }
}
