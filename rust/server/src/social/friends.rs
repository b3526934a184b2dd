//! Friends: `/api/v1/friends/*`: requests, blocks, presence and player search.
//!
//! Presence is in memory only. A player with a realtime socket shows what the socket says
//! (`crate::realtime::presence`, over every node of a cluster); without one, every social request
//! and `POST /friends/heartbeat` stamp `last_seen`, so staying online costs no database write.
//! Those HTTP stamps are per node and start empty after a restart. Friend requests, accepts,
//! declines, removals and blocks push `friends_updated` to both players' sockets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

use aethex_protocol::realtime::{PresenceStatus, ServerMessage};
use aethex_protocol::social::{
    Friend, FriendList, FriendState, FriendStatus, HeartbeatRequest, PlayerSearchPage,
    PlayerSummary, Presence,
};
use aethex_protocol::ErrorEnvelope;
use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use sqlx::{AnyConnection, Row};
use utoipa::{IntoParams, OpenApi};

use super::ApiQuery;
use super::{ensure_user_in_project, page_limit, prefix_pattern};
use crate::app::AppState;
use crate::caller::Player;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};
use crate::http::ApiJson;

/// A player seen within this window counts as online.
const ONLINE_WINDOW_MS: i64 = 60_000;
/// Entries idle this long are dropped from the presence map.
const PRESENCE_RETENTION_MS: i64 = 24 * 3600 * 1000;
/// Prune the presence map once per this many stamps.
const PRUNE_EVERY: u64 = 10_000;

#[derive(Default)]
pub struct PresenceMap {
    seen: RwLock<HashMap<String, Seen>>,
    stamps: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    at: i64,
    in_match: bool,
    /// What the realtime socket says while the player has one (or a seat) on some node.
    live: Option<Presence>,
    /// When the socket last said offline: HTTP stamps from before it do not count.
    live_ended_at: i64,
}

impl PresenceMap {
    /// Records activity; keeps the in-match flag of the last heartbeat.
    pub fn touch(&self, user_id: &str, now_ms: i64) {
        self.stamp(user_id, now_ms, None);
    }

    fn stamp(&self, user_id: &str, now_ms: i64, in_match: Option<bool>) {
        let mut seen = self.seen.write().expect("lock");
        let entry = seen.entry(user_id.to_owned()).or_insert(Seen {
            at: now_ms,
            in_match: false,
            live: None,
            live_ended_at: i64::MIN,
        });
        entry.at = entry.at.max(now_ms);
        if let Some(flag) = in_match {
            entry.in_match = flag;
        }
        if self.stamps.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            seen.retain(|_, s| s.live.is_some() || now_ms - s.at < PRESENCE_RETENTION_MS);
        }
    }

    /// The realtime socket's status of the player over every node; it outranks HTTP stamps.
    pub fn set_live(&self, user_id: &str, status: PresenceStatus, now_ms: i64) {
        let mut seen = self.seen.write().expect("lock");
        let entry = seen.entry(user_id.to_owned()).or_insert(Seen {
            at: now_ms,
            in_match: false,
            live: None,
            live_ended_at: i64::MIN,
        });
        entry.at = entry.at.max(now_ms);
        entry.live = match status {
            PresenceStatus::Online => Some(Presence::Online),
            PresenceStatus::InMatch => Some(Presence::InMatch),
            PresenceStatus::Offline => {
                entry.live_ended_at = now_ms;
                None
            }
        };
    }

    pub fn presence(&self, user_id: &str, now_ms: i64) -> (Presence, Option<i64>) {
        match self.seen.read().expect("lock").get(user_id) {
            Some(Seen {
                live: Some(live), ..
            }) => (*live, Some(now_ms)),
            Some(s) if now_ms - s.at < ONLINE_WINDOW_MS && s.at > s.live_ended_at => (
                if s.in_match {
                    Presence::InMatch
                } else {
                    Presence::Online
                },
                Some(s.at),
            ),
            Some(s) => (Presence::Offline, Some(s.at)),
            None => (Presence::Offline, None),
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/friends", get(list_friends))
        .route("/api/v1/friends/heartbeat", post(heartbeat))
        .route("/api/v1/friends/search", get(search_players))
        .route("/api/v1/friends/{user_id}", delete(remove_friend))
        .route("/api/v1/friends/{user_id}/{action}", post(friend_action))
}

#[derive(OpenApi)]
#[openapi(
    paths(list_friends, heartbeat, search_players, remove_friend, friend_action),
    components(schemas(
        Friend,
        FriendList,
        FriendState,
        FriendStatus,
        HeartbeatRequest,
        PlayerSearchPage,
        PlayerSummary,
        Presence
    ))
)]
pub struct FriendsApi;

/// Accepted friends of `user_id`.
pub async fn friend_ids(db: &Db, project_id: &str, user_id: &str) -> ApiResult<Vec<String>> {
    let rows = sqlx::query(
        "SELECT other_id FROM friend_edges WHERE project_id = $1 AND user_id = $2 AND state = 'friend'",
    )
    .bind(project_id)
    .bind(user_id)
    .fetch_all(&db.read)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| r.try_get("other_id"))
        .collect::<Result<_, _>>()?)
}

fn state_name(s: FriendState) -> &'static str {
    match s {
        FriendState::Friend => "friend",
        FriendState::Sent => "sent",
        FriendState::Received => "received",
        FriendState::Blocked => "blocked",
    }
}

fn parse_state(s: &str) -> Option<FriendState> {
    match s {
        "friend" => Some(FriendState::Friend),
        "sent" => Some(FriendState::Sent),
        "received" => Some(FriendState::Received),
        "blocked" => Some(FriendState::Blocked),
        _ => None,
    }
}

async fn edge(
    conn: &mut AnyConnection,
    project_id: &str,
    from: &str,
    to: &str,
) -> ApiResult<Option<FriendState>> {
    let row = sqlx::query(
        "SELECT state FROM friend_edges WHERE project_id = $1 AND user_id = $2 AND other_id = $3",
    )
    .bind(project_id)
    .bind(from)
    .bind(to)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row
        .map(|r| r.try_get::<String, _>("state"))
        .transpose()?
        .and_then(|s| parse_state(&s)))
}

async fn set_edge(
    conn: &mut AnyConnection,
    project_id: &str,
    from: &str,
    to: &str,
    state: FriendState,
    now_ms: i64,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO friend_edges (project_id, user_id, other_id, state, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (project_id, user_id, other_id) DO UPDATE SET state = excluded.state, created_at = excluded.created_at",
    )
    .bind(project_id)
    .bind(from)
    .bind(to)
    .bind(state_name(state))
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn delete_edge(
    conn: &mut AnyConnection,
    project_id: &str,
    from: &str,
    to: &str,
) -> ApiResult<()> {
    sqlx::query(
        "DELETE FROM friend_edges WHERE project_id = $1 AND user_id = $2 AND other_id = $3",
    )
    .bind(project_id)
    .bind(from)
    .bind(to)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this relationship: `friend`, `sent`, `received` or `blocked` (default: all).
    #[param(pattern = "^(friend|sent|received|blocked)$")]
    state: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/friends",
    tag = "friends",
    security(("client_key" = [], "bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "The caller's relationships with presence", body = FriendList),
        (status = 400, description = "Unknown state filter", body = ErrorEnvelope),
    )
)]
pub async fn list_friends(
    State(state): State<AppState>,
    player: Player,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<FriendList>> {
    let now = state.clock.now_ms();
    state.social.presence.touch(&player.user_id, now);
    let filter =
        match q.state.as_deref() {
            None => None,
            Some(s) => Some(parse_state(s).ok_or_else(|| {
                ApiError::invalid("state must be friend, sent, received or blocked")
            })?),
        };
    let rows = sqlx::query(
        "SELECT f.other_id, f.state, f.created_at, u.username FROM friend_edges f JOIN users u ON u.id = f.other_id \
         WHERE f.project_id = $1 AND f.user_id = $2 ORDER BY u.username_lower",
    )
    .bind(&player.project.id)
    .bind(&player.user_id)
    .fetch_all(&state.db.read)
    .await?;
    let mut friends = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(edge_state) = parse_state(&row.try_get::<String, _>("state")?) else {
            continue;
        };
        if filter.is_some_and(|f| f != edge_state) {
            continue;
        }
        let user_id: String = row.try_get("other_id")?;
        // Only friends see each other's presence.
        let (presence, last_seen) = if edge_state == FriendState::Friend {
            state.social.presence.presence(&user_id, now)
        } else {
            (Presence::Offline, None)
        };
        friends.push(Friend {
            username: row.try_get("username")?,
            user_id,
            state: edge_state,
            presence,
            last_seen,
            since: row.try_get("created_at")?,
        });
    }
    Ok(Json(FriendList { friends }))
}

#[utoipa::path(
    post,
    path = "/api/v1/friends/heartbeat",
    tag = "friends",
    security(("client_key" = [], "bearer" = [])),
    request_body = HeartbeatRequest,
    responses((status = 204, description = "Presence stamped"))
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    player: Player,
    ApiJson(req): ApiJson<HeartbeatRequest>,
) -> axum::http::StatusCode {
    state
        .social
        .presence
        .stamp(&player.user_id, state.clock.now_ms(), Some(req.in_match));
    axum::http::StatusCode::NO_CONTENT
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// Username prefix (case-insensitive), 1 to 32 characters; surrounding spaces are ignored, so
    /// it needs one that is not a space. No character may be NUL (docs/api.md, "Text rules").
    #[param(
        min_length = 1,
        max_length = 32,
        pattern = r"^[^\x00]*[^\s\x00][^\x00]*$"
    )]
    q: String,
    /// Default 20, at most 100.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/friends/search",
    tag = "friends",
    security(("client_key" = [], "bearer" = [])),
    params(SearchQuery),
    responses(
        (status = 200, description = "Players whose username starts with `q`, blocks hidden both ways", body = PlayerSearchPage),
        (status = 400, description = "Empty or too long prefix, bad limit", body = ErrorEnvelope),
    )
)]
pub async fn search_players(
    State(state): State<AppState>,
    player: Player,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> ApiResult<Json<PlayerSearchPage>> {
    state
        .social
        .presence
        .touch(&player.user_id, state.clock.now_ms());
    let prefix = q.q.trim().to_lowercase();
    if prefix.is_empty() || prefix.chars().count() > 32 {
        return Err(ApiError::invalid("q must be 1 to 32 characters"));
    }
    let limit = page_limit(q.limit, 20, 100)?;
    let pattern = prefix_pattern(&prefix);
    let rows = sqlx::query(
        "SELECT u.id, u.username, u.username_lower FROM users u \
         WHERE u.project_id = $1 AND u.username_lower LIKE $2 ESCAPE '\\' AND u.username_lower > $3 AND u.id <> $4 \
         AND NOT EXISTS (SELECT 1 FROM friend_edges f WHERE f.project_id = $1 AND f.state = 'blocked' \
           AND ((f.user_id = u.id AND f.other_id = $4) OR (f.user_id = $4 AND f.other_id = u.id))) \
         ORDER BY u.username_lower LIMIT $5",
    )
    .bind(&player.project.id)
    .bind(pattern)
    .bind(q.cursor.unwrap_or_default())
    .bind(&player.user_id)
    .bind(limit as i64 + 1)
    .fetch_all(&state.db.read)
    .await?;
    let more = rows.len() > limit;
    let mut players = Vec::with_capacity(limit);
    let mut last = None;
    for row in rows.into_iter().take(limit) {
        last = Some(row.try_get::<String, _>("username_lower")?);
        players.push(PlayerSummary {
            user_id: row.try_get("id")?,
            username: row.try_get("username")?,
        });
    }
    Ok(Json(PlayerSearchPage {
        players,
        next_cursor: if more { last } else { None },
    }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/friends/{user_id}",
    tag = "friends",
    security(("client_key" = [], "bearer" = [])),
    params(("user_id" = String, Path, description = "The friend to remove")),
    responses(
        (status = 200, description = "Friendship removed on both sides", body = FriendStatus),
        (status = 404, description = "Not friends", body = ErrorEnvelope),
    )
)]
pub async fn remove_friend(
    State(state): State<AppState>,
    player: Player,
    Path(other): Path<String>,
) -> ApiResult<Json<FriendStatus>> {
    friend_action(State(state), player, Path((other, "remove".to_owned()))).await
}

#[utoipa::path(
    post,
    path = "/api/v1/friends/{user_id}/{action}",
    tag = "friends",
    security(("client_key" = [], "bearer" = [])),
    params(
        ("user_id" = String, Path, description = "The other player"),
        ("action" = String, Path, description = "`request`, `accept`, `decline`, `cancel`, `remove`, `block` or `unblock`", pattern = "^(request|accept|decline|cancel|remove|block|unblock)$"),
    ),
    responses(
        (status = 200, description = "The relationship afterwards", body = FriendStatus),
        (status = 400, description = "Unknown action", body = ErrorEnvelope),
        (status = 403, description = "That player blocked you, or acting on yourself", body = ErrorEnvelope),
        (status = 404, description = "No such player, or nothing to accept/decline/cancel/remove/unblock", body = ErrorEnvelope),
        (status = 409, description = "You blocked that player (unblock first)", body = ErrorEnvelope),
    )
)]
pub async fn friend_action(
    State(state): State<AppState>,
    player: Player,
    Path((other, action)): Path<(String, String)>,
) -> ApiResult<Json<FriendStatus>> {
    let now = state.clock.now_ms();
    state.social.presence.touch(&player.user_id, now);
    let project = &player.project.id;
    let me = &player.user_id;
    if other == *me {
        // Forbidden rather than invalid: the request is well formed, this caller may not make it.
        return Err(ApiError::forbidden("you cannot befriend or block yourself"));
    }
    ensure_user_in_project(&state, project, &other).await?;
    let mut tx = state.db.write.begin().await?;
    // Both edges of a pair change together: lock the two players' rows (in id order, so two
    // players acting on each other at once queue instead of deadlocking) before reading them.
    // Otherwise two players asking each other at once both see no request and both end "sent".
    sqlx::query(&format!(
        "SELECT id FROM users WHERE id IN ($1, $2) ORDER BY id{}",
        state.db.lock_rows()
    ))
    .bind(me)
    .bind(&other)
    .fetch_all(&mut *tx)
    .await?;
    let mine = edge(&mut tx, project, me, &other).await?;
    let theirs = edge(&mut tx, project, &other, me).await?;
    let result = match action.as_str() {
        "request" => {
            if theirs == Some(FriendState::Blocked) {
                return Err(ApiError::forbidden(
                    "this player does not accept friend requests from you",
                ));
            }
            match mine {
                Some(FriendState::Blocked) => {
                    return Err(ApiError::conflict(
                        "you blocked this player; unblock them first",
                    ))
                }
                Some(FriendState::Friend) | Some(FriendState::Sent) => mine,
                // They already asked: asking back accepts.
                Some(FriendState::Received) => {
                    set_edge(&mut tx, project, me, &other, FriendState::Friend, now).await?;
                    set_edge(&mut tx, project, &other, me, FriendState::Friend, now).await?;
                    Some(FriendState::Friend)
                }
                None => {
                    set_edge(&mut tx, project, me, &other, FriendState::Sent, now).await?;
                    set_edge(&mut tx, project, &other, me, FriendState::Received, now).await?;
                    Some(FriendState::Sent)
                }
            }
        }
        "accept" => {
            if mine != Some(FriendState::Received) {
                return Err(ApiError::not_found(
                    "no pending friend request from this player",
                ));
            }
            set_edge(&mut tx, project, me, &other, FriendState::Friend, now).await?;
            set_edge(&mut tx, project, &other, me, FriendState::Friend, now).await?;
            Some(FriendState::Friend)
        }
        "decline" | "cancel" | "remove" => {
            let expected = match action.as_str() {
                "decline" => FriendState::Received,
                "cancel" => FriendState::Sent,
                _ => FriendState::Friend,
            };
            if mine != Some(expected) {
                return Err(ApiError::not_found(match expected {
                    FriendState::Received => "no pending friend request from this player",
                    FriendState::Sent => "no pending friend request to this player",
                    _ => "you are not friends with this player",
                }));
            }
            delete_edge(&mut tx, project, me, &other).await?;
            delete_edge(&mut tx, project, &other, me).await?;
            None
        }
        "block" => {
            // Blocking ends any friendship or request; their own block of us stays.
            if theirs.is_some() && theirs != Some(FriendState::Blocked) {
                delete_edge(&mut tx, project, &other, me).await?;
            }
            set_edge(&mut tx, project, me, &other, FriendState::Blocked, now).await?;
            Some(FriendState::Blocked)
        }
        "unblock" => {
            if mine != Some(FriendState::Blocked) {
                return Err(ApiError::not_found("you have not blocked this player"));
            }
            delete_edge(&mut tx, project, me, &other).await?;
            None
        }
        other => {
            return Err(ApiError::invalid(format!(
                "unknown friend action {other:?}: use request, accept, decline, cancel, remove, block or unblock"
            )))
        }
    };
    tx.commit().await?;
    if result != mine {
        // Both players' lists may have changed (a block also ends the other's edge).
        let frame = crate::realtime::conn::encode(None, ServerMessage::FriendsUpdated);
        let users = &state.realtime.users;
        users.send(project, me, &frame);
        users.send(project, &other, &frame);
    }
    Ok(Json(FriendStatus {
        user_id: other,
        state: result,
    }))
}
