//! `GET /api/v1/realtime`: authenticates before the upgrade, then runs one task per socket that
//! reads client frames, enforces the limits and writes the queued outbound frames.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aethex_protocol::realtime::{close_code, Cid, ClientFrame, ClientMessage, ServerMessage};
use aethex_protocol::{ApiErrorBody, ErrorCode, CLIENT_KEY_HEADER, SERVER_KEY_SCHEME};
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::response::Response;
use futures::SinkExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::conn::{encode, ConnHandle};
use crate::app::AppState;
use crate::caller::{project_by_client_key, verify_player, Player};
use crate::error::ApiError;
use crate::projects::Project;

/// Frames above `max_frame_bytes` times this end the connection instead of being refused.
const HARD_CAP_FACTOR: usize = 4;
/// How long a closing socket may take to accept its close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Read buffer of each socket. Tungstenite's default (128 KiB, zero-filled so all of it is
/// resident) made an idle socket cost ~130 KiB; client frames are small (state updates are tens
/// of bytes, the limit is `max_frame_bytes`), and a bigger frame grows the buffer as needed.
pub const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Most queued frames written with one flush.
const SEND_BATCH: usize = 64;

#[derive(Debug, Deserialize)]
pub struct AuthQuery {
    /// Access token, for clients that cannot set headers (browsers).
    token: Option<String>,
    /// Client key, likewise.
    key: Option<String>,
}

pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AuthQuery>, QueryRejection>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let header = |name: &str| -> Result<Option<String>, ApiError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map(str::to_owned)
                    .map_err(|_| ApiError::unauthorized(format!("header {name} is not valid text")))
            })
            .transpose()
    };
    let key = header(CLIENT_KEY_HEADER)?
        .or(query.key)
        .ok_or_else(|| ApiError::unauthorized("missing X-AeThex-Key header or ?key="))?;
    let token = match header(AUTHORIZATION.as_str())? {
        Some(value) => match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                token.trim().to_owned()
            }
            Some((scheme, _)) if scheme.eq_ignore_ascii_case(SERVER_KEY_SCHEME) => {
                return Err(ApiError::forbidden(
                    "the realtime socket is for players; a server key cannot join rooms",
                ))
            }
            _ => {
                return Err(ApiError::unauthorized(
                    "the realtime socket takes Authorization: Bearer <access token>",
                ))
            }
        },
        None => query.token.ok_or_else(|| {
            ApiError::unauthorized("missing Authorization: Bearer <access token> or ?token=")
        })?,
    };
    let project = project_by_client_key(&state, &key).await?;
    let (player, expires_at) = verify_player(&state, project, &token).await?;
    let ws =
        ws.map_err(|e| ApiError::invalid(format!("this endpoint needs a WebSocket upgrade: {e}")))?;
    let hard_cap = state
        .config
        .realtime
        .max_frame_bytes
        .saturating_mul(HARD_CAP_FACTOR);
    Ok(ws
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(hard_cap)
        .max_frame_size(hard_cap)
        .on_upgrade(move |socket| async move {
            let id = state.realtime.next_conn_id.fetch_add(1, Ordering::Relaxed);
            let session = Session::new(state, id, player, expires_at);
            session.run(socket).await;
        }))
}

struct Session {
    state: AppState,
    conn: Arc<ConnHandle>,
    project: Arc<Project>,
    outbound: mpsc::Receiver<Utf8Bytes>,
    /// Session of the current access token: signing it out silences the socket.
    session_id: String,
    /// Unix seconds the current access token expires at.
    expires_at: i64,
    rooms: HashSet<String>,
    limiter: DefaultDirectRateLimiter,
    violations: u32,
    window_start: Instant,
}

impl Session {
    fn new(state: AppState, id: u64, player: Player, expires_at: i64) -> Self {
        let limits = &state.config.realtime;
        let (tx, outbound) = mpsc::channel(limits.outbound_queue.max(1));
        let rate = NonZeroU32::new(limits.messages_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limits.message_burst).unwrap_or(rate);
        Self {
            conn: Arc::new(ConnHandle::new(
                id,
                player.project.id.clone(),
                player.user_id,
                tx,
            )),
            project: player.project,
            outbound,
            session_id: player.session_id,
            expires_at,
            rooms: HashSet::new(),
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            violations: 0,
            window_start: Instant::now(),
            state,
        }
    }

    async fn run(mut self, mut socket: WebSocket) {
        loop {
            tokio::select! {
                _ = self.conn.killed() => break,
                frame = self.outbound.recv() => {
                    // The sender lives in `self.conn`, so the queue never closes here.
                    let Some(frame) = frame else { break };
                    // A reader too slow to take this frame must not keep its seats; other
                    // closes give the frame (likely the error explaining them) time to go out.
                    let interrupted = async {
                        self.conn.killed().await;
                        if self.conn.close_code() != close_code::SLOW_CONSUMER {
                            tokio::time::sleep(CLOSE_TIMEOUT).await;
                        }
                    };
                    tokio::select! {
                        biased;
                        sent = send_queued(&mut socket, frame, &mut self.outbound) => {
                            if sent.is_err() { break }
                        }
                        _ = interrupted => break,
                    }
                }
                incoming = socket.recv() => match incoming {
                    Some(Ok(message)) => self.on_message(message).await,
                    Some(Err(e)) => {
                        // Tungstenite refuses frames over the hard cap with a capacity error.
                        if matches!(
                            std::error::Error::source(&e)
                                .and_then(|s| s.downcast_ref::<tungstenite::Error>()),
                            Some(tungstenite::Error::Capacity(_))
                        ) {
                            self.conn.close(close_code::MESSAGE_TOO_BIG);
                        }
                        break;
                    }
                    None => break,
                },
            }
        }
        for room in std::mem::take(&mut self.rooms) {
            self.state.realtime.rooms.leave(&self.conn, &room);
        }
        let code = self.conn.close_code();
        if code != 0 {
            // A slow consumer may never take the close frame; the socket is dropped anyway.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.close(&mut socket, code)).await;
        }
    }

    /// Sends the close frame; when the client broke a limit, first the frames queued before it
    /// (the typed errors that explain the close).
    async fn close(&mut self, socket: &mut WebSocket, code: u16) {
        if code != close_code::SLOW_CONSUMER {
            while let Ok(frame) = self.outbound.try_recv() {
                if socket.send(Message::Text(frame)).await.is_err() {
                    return;
                }
            }
        }
        let reason = match code {
            close_code::SLOW_CONSUMER => "outbound queue full: the client reads too slowly",
            close_code::MESSAGE_TOO_BIG => "frame over the size limit",
            _ => "too many refused frames",
        };
        let close = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        if socket.send(close).await.is_err() {
            return;
        }
        // Wait for the client's close and discard what it still sends: dropping a socket with
        // unread input resets the connection, and the client could lose the frames above.
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                return;
            }
        }
    }

    async fn on_message(&mut self, message: Message) {
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                return self.violation(ApiError::invalid(
                    "binary frames are not accepted yet; send JSON text (#8)",
                ))
            }
            // Pings are answered by the WebSocket layer; a close ends the stream next.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => return,
        };
        let limits = &self.state.config.realtime;
        if text.len() > limits.max_frame_bytes {
            return self.violation(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("frames are limited to {} bytes", limits.max_frame_bytes),
            ));
        }
        if self.limiter.check().is_err() {
            return self.violation(ApiError::rate_limited(1));
        }
        let frame: ClientFrame = match serde_json::from_str(text.as_str()) {
            Ok(frame) => frame,
            Err(e) => return self.violation(ApiError::invalid(format!("malformed frame: {e}"))),
        };
        let cid = frame.cid;
        if let Err(e) = self.handle(cid.clone(), frame.message).await {
            self.reply(cid, ServerMessage::Error { error: body(e) });
        }
    }

    /// A refused frame: a typed error, and the socket closes when they keep coming.
    fn violation(&mut self, error: ApiError) {
        let limits = &self.state.config.realtime;
        if self.window_start.elapsed() > Duration::from_secs(limits.violation_window_secs) {
            self.window_start = Instant::now();
            self.violations = 0;
        }
        self.violations += 1;
        if self.violations > limits.max_violations {
            self.conn.close(close_code::POLICY_VIOLATION);
        } else {
            self.reply(None, ServerMessage::Error { error: body(error) });
        }
    }

    fn reply(&self, cid: Option<Cid>, message: ServerMessage) {
        self.conn.push(encode(cid, message));
    }

    async fn handle(&mut self, cid: Option<Cid>, message: ClientMessage) -> Result<(), ApiError> {
        let state = self.state.clone();
        let now_ms = state.clock.now_ms();
        let expired = now_ms >= self.expires_at.saturating_mul(1000);
        match message {
            ClientMessage::Ping => self.reply(cid, ServerMessage::Pong),
            ClientMessage::RefreshSession { access_token } => {
                let (player, expires_at) =
                    verify_player(&state, self.project.clone(), &access_token).await?;
                if player.user_id != self.conn.user_id {
                    return Err(ApiError::forbidden(
                        "the new access token belongs to another player than this socket",
                    ));
                }
                self.expires_at = expires_at;
                self.session_id = player.session_id;
                self.reply(cid, ServerMessage::SessionRefreshed { expires_at });
            }
            _ if expired => {
                return Err(ApiError::new(
                    ErrorCode::TokenExpired,
                    "the access token expired: send refresh_session with a new one",
                ))
            }
            // An in-memory lookup, like the one every HTTP request makes.
            _ if state.auth.is_session_revoked(&self.session_id) => {
                return Err(ApiError::unauthorized(
                    "session has been signed out: send refresh_session with a token of a new one",
                ))
            }
            ClientMessage::CreateRoom { properties } => {
                let room = state.realtime.rooms.create(
                    &state.config.realtime,
                    &self.conn,
                    properties,
                    now_ms,
                )?;
                self.rooms.insert(room.room_id.clone());
                self.reply(cid, ServerMessage::RoomJoined { room });
            }
            ClientMessage::ListRooms { label } => {
                let rooms = state
                    .realtime
                    .rooms
                    .list(&self.conn.project_id, label.as_deref());
                self.reply(cid, ServerMessage::RoomList { rooms });
            }
            ClientMessage::JoinRoom { room_id, join_code } => {
                let room = state.realtime.rooms.join(
                    &state.config.realtime,
                    &self.conn,
                    room_id.as_deref(),
                    join_code.as_deref(),
                    now_ms,
                )?;
                self.rooms.insert(room.room_id.clone());
                self.reply(cid, ServerMessage::RoomJoined { room });
            }
            ClientMessage::LeaveRoom { room_id } => {
                if !self.rooms.remove(&room_id) || !state.realtime.rooms.leave(&self.conn, &room_id)
                {
                    return Err(ApiError::not_found("you are not in this room"));
                }
                self.reply(cid, ServerMessage::RoomLeft { room_id });
            }
            ClientMessage::PlayerStateUpdate {
                room_id,
                state: value,
                targets,
                echo,
            } => {
                state
                    .realtime
                    .rooms
                    .relay(&self.conn, &room_id, value, targets.as_deref(), echo)?
            }
        }
        Ok(())
    }
}

/// Sends `first` and the frames already queued behind it (at most `SEND_BATCH` in all) with one
/// flush: a busy room's burst costs one write to the socket instead of one per frame.
async fn send_queued(
    socket: &mut WebSocket,
    first: Utf8Bytes,
    queue: &mut mpsc::Receiver<Utf8Bytes>,
) -> Result<(), axum::Error> {
    socket.feed(Message::Text(first)).await?;
    for _ in 1..SEND_BATCH {
        match queue.try_recv() {
            Ok(frame) => socket.feed(Message::Text(frame)).await?,
            Err(_) => break,
        }
    }
    socket.flush().await
}

fn body(error: ApiError) -> ApiErrorBody {
    ApiErrorBody {
        code: error.code,
        message: error.message,
        details: error.details,
    }
}
