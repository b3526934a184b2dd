//! The realtime socket (`GET /api/v1/realtime`) and its rooms.
//!
//! - `socket`: upgrade (encoding negotiation), authentication, the per-socket loop, its limits
//!   and heartbeats, and the away seats of a socket that ended.
//! - `conn`: a socket's outbound queue as the rest of the service sees it, and the frames,
//!   serialized lazily once per encoding (JSON, MessagePack).
//! - `rooms`: rooms, membership, host migration, the state and packet relay, replay and resume.
//! - `users`: the live sockets of each player, for pushes addressed to a player.
//! - `presence`: each player's status from their sockets and seats, pushed to their friends.
//! - `remote`: members of a room whose sockets are on another node of a cluster.
//! - `failover`: away seats and resume across nodes, and rooms adopted when their node is gone.
//! - `signaling`: the ICE settings (STUN/TURN with short-lived TURN credentials) for WebRTC
//!   peer-to-peer connections; the signals themselves are relayed by `rooms` (`Rooms::signal`).
//! - `matchmaking`: tickets, the matcher, mode rules (`/api/v1/matchmaking/modes`).
//!
//! Everything here is in memory. A room lives on the node it was created on; players on other
//! nodes of a cluster (`crate::cluster`) join it through `remote`, and another node adopts it
//! when its node is gone (`failover`); presence and pushes to a player reach every node.

pub mod conn;
pub mod failover;
pub mod matchmaking;
pub mod presence;
pub mod remote;
pub mod rooms;
pub mod signaling;
pub mod socket;
pub mod users;
pub mod voice;

use std::sync::atomic::AtomicU64;

use aethex_protocol::realtime::{RoomListResponse, REALTIME_PATH};
use aethex_protocol::signaling::ICE_PATH;
use aethex_protocol::ErrorEnvelope;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::OpenApi;

use crate::app::AppState;
use crate::caller::Caller;
use crate::error::ApiResult;
use crate::social::ApiQuery;

#[derive(Default)]
pub struct RealtimeService {
    pub rooms: rooms::Rooms,
    pub users: users::Users,
    pub presence: presence::Presence,
    /// Members of this node's rooms whose sockets are on other nodes.
    pub remote: remote::RemoteMembers,
    /// Replicas of other nodes' rooms, and where rooms moved.
    pub failover: failover::Failover,
    pub matchmaking: matchmaking::Matchmaking,
    next_conn_id: AtomicU64,
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route(REALTIME_PATH, get(socket::upgrade))
        .route("/api/v1/rooms", get(list_rooms))
        .route(ICE_PATH, get(signaling::ice_config))
        .merge(matchmaking::router())
}

#[derive(OpenApi)]
#[openapi(
    paths(list_rooms, signaling::ice_config),
    components(schemas(
        RoomListResponse,
        aethex_protocol::realtime::RoomSummary,
        aethex_protocol::signaling::IceConfig,
        aethex_protocol::signaling::IceServer
    )),
    tags((name = "realtime", description = "Rooms of the realtime socket (the socket itself: docs/api/realtime.md)"))
)]
pub struct RealtimeApi;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListRoomsQuery {
    /// Only rooms carrying this label.
    pub label: Option<String>,
    /// A `next_cursor` of the previous page.
    #[param(pattern = r"^-?[0-9]{1,18}\.[A-Za-z0-9_-]{1,64}$")]
    pub cursor: Option<String>,
    /// Rooms per page, 1 to 100 (default 100).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/v1/rooms",
    tag = "realtime",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    params(ListRoomsQuery),
    responses(
        (status = 200, description = "A page of the game's public rooms, oldest first", body = RoomListResponse),
        (status = 400, description = "Bad cursor or limit", body = ErrorEnvelope),
        (status = 401, description = "No or unknown key, invalid or expired token", body = ErrorEnvelope),
    )
)]
pub async fn list_rooms(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListRoomsQuery>,
) -> ApiResult<Json<RoomListResponse>> {
    let (rooms, next_cursor) = remote::list_rooms(
        &state,
        &caller.project().id,
        query.label.as_deref(),
        query.cursor.as_deref(),
        query.limit,
    )
    .await?;
    Ok(Json(RoomListResponse { rooms, next_cursor }))
}
