//! `/api/v1/chat/*`: history, mutes and the project's chat settings. Sending is on the realtime
//! socket (`send_message`).

use aethex_protocol::realtime::{
    ChatHistoryPage, ChatMessage, ChatMute, ChatMuteList, ChatSettings,
};
use aethex_protocol::ErrorEnvelope;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};

use super::store;
use crate::app::AppState;
use crate::caller::{Caller, Player};
use crate::error::{ApiError, ApiResult};
use crate::http::ApiJson;
use crate::social::{ensure_user_in_project, require_server, ApiQuery};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/chat/mutes", get(list_mutes))
        .route("/api/v1/chat/mutes/{user_id}", put(mute).delete(unmute))
        .route("/api/v1/chat/settings", get(get_settings).put(put_settings))
        .route("/api/v1/chat/{channel}/messages", get(history))
}

#[derive(OpenApi)]
#[openapi(
    paths(history, list_mutes, mute, unmute, get_settings, put_settings),
    components(schemas(ChatHistoryPage, ChatMessage, ChatMute, ChatMuteList, ChatSettings)),
    tags((name = "chat", description = "Chat history, mutes and settings (sending is on the realtime socket: docs/api/realtime.md)"))
)]
pub struct ChatApi;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// `next_cursor` of the previous page (opaque).
    cursor: Option<String>,
    /// Default 50, at most `chat.max_page` (100).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

#[utoipa::path(
    get,
    path = "/api/v1/chat/{channel}/messages",
    tag = "chat",
    security(("client_key" = [], "bearer" = [])),
    params(
        ("channel" = String, Path, description = "`room:<room id>`, `dm:<user id>` or `group:<group id>`", pattern = "^(room|dm|group):[A-Za-z0-9_-]{1,64}$"),
        HistoryQuery,
    ),
    responses(
        (status = 200, description = "Newest first, without messages of blocked or muted players", body = ChatHistoryPage),
        (status = 400, description = "Malformed channel or limit", body = ErrorEnvelope),
        (status = 403, description = "Not a member of the room or group, or a direct message with yourself", body = ErrorEnvelope),
        (status = 404, description = "`dm:` names no player of the game, or the cursor no message of the channel", body = ErrorEnvelope),
    )
)]
pub async fn history(
    State(state): State<AppState>,
    player: Player,
    Path(channel): Path<String>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> ApiResult<Json<ChatHistoryPage>> {
    Ok(Json(
        super::history(
            &state,
            &player.project.id,
            &player.user_id,
            &channel,
            query.cursor.as_deref(),
            query.limit,
        )
        .await?,
    ))
}

#[utoipa::path(
    get,
    path = "/api/v1/chat/mutes",
    tag = "chat",
    security(("client_key" = [], "bearer" = [])),
    responses((status = 200, description = "Players the caller muted, most recent first", body = ChatMuteList))
)]
pub async fn list_mutes(
    State(state): State<AppState>,
    player: Player,
) -> ApiResult<Json<ChatMuteList>> {
    Ok(Json(ChatMuteList {
        mutes: store::mutes(&state.db, &player.project.id, &player.user_id).await?,
    }))
}

#[utoipa::path(
    put,
    path = "/api/v1/chat/mutes/{user_id}",
    tag = "chat",
    security(("client_key" = [], "bearer" = [])),
    params(("user_id" = String, Path, description = "The player to mute")),
    responses(
        (status = 200, description = "Muted (muting again keeps the first mute)", body = ChatMute),
        (status = 403, description = "Muting yourself", body = ErrorEnvelope),
        (status = 404, description = "No such player", body = ErrorEnvelope),
        (status = 409, description = "The caller muted `chat.max_mutes` players already", body = ErrorEnvelope),
    )
)]
pub async fn mute(
    State(state): State<AppState>,
    player: Player,
    Path(other): Path<String>,
) -> ApiResult<Json<ChatMute>> {
    if other == player.user_id {
        return Err(ApiError::forbidden("you cannot mute yourself"));
    }
    ensure_user_in_project(&state, &player.project.id, &other).await?;
    Ok(Json(
        store::mute(
            &state.db,
            &player.project.id,
            &player.user_id,
            &other,
            state.config.chat.max_mutes,
            state.clock.now_ms(),
        )
        .await?,
    ))
}

#[utoipa::path(
    delete,
    path = "/api/v1/chat/mutes/{user_id}",
    tag = "chat",
    security(("client_key" = [], "bearer" = [])),
    params(("user_id" = String, Path, description = "The player to unmute")),
    responses((status = 204, description = "Not muted (any more)"))
)]
pub async fn unmute(
    State(state): State<AppState>,
    player: Player,
    Path(other): Path<String>,
) -> ApiResult<StatusCode> {
    store::unmute(&state.db, &player.project.id, &player.user_id, &other).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/api/v1/chat/settings",
    tag = "chat",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    responses(
        (status = 200, description = "The game's chat settings", body = ChatSettings),
        (status = 403, description = "Needs the server key", body = ErrorEnvelope),
    )
)]
pub async fn get_settings(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<ChatSettings>> {
    require_server(&caller)?;
    Ok(Json(
        store::settings(&state.db, &caller.project().id).await?,
    ))
}

#[utoipa::path(
    put,
    path = "/api/v1/chat/settings",
    tag = "chat",
    security(("client_key" = [], "bearer" = []), ("server_key" = [])),
    request_body = ChatSettings,
    responses(
        (status = 200, description = "Stored; applies to the next message", body = ChatSettings),
        (status = 403, description = "Needs the server key", body = ErrorEnvelope),
    )
)]
pub async fn put_settings(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(settings): ApiJson<ChatSettings>,
) -> ApiResult<Json<ChatSettings>> {
    require_server(&caller)?;
    store::put_settings(
        &state.db,
        &caller.project().id,
        settings,
        state.clock.now_ms(),
    )
    .await?;
    Ok(Json(settings))
}
