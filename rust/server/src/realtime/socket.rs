//! `GET /api/v1/realtime`: authenticates before the upgrade, then runs one task per socket that
//! reads client frames, enforces the limits, writes the queued outbound frames and pings the
//! client. A socket that ends leaves its seats "away" for the grace period (`resume`).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aethex_protocol::realtime::{
    close_code, Cid, ClientFrame, ClientMessage, ServerMessage, JSON_SUBPROTOCOL,
    MSGPACK_SUBPROTOCOL,
};
use aethex_protocol::{ApiErrorBody, ErrorCode, CLIENT_KEY_HEADER, SERVER_KEY_SCHEME};
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::response::Response;
use futures::SinkExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::conn::{
    encode, json_text_nests_within, value_nests_within, ConnHandle, Encoding, Outgoing,
    StatePayload,
};
use super::failover::{self, Resumed};
use super::presence::Presence;
use super::remote::{self, Op};
use super::voice;
use crate::app::AppState;
use crate::caller::{project_by_client_key, verify_player, Player};
use crate::chat::channel::Channel;
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
/// Most queue entries written with one flush.
const SEND_BATCH: usize = 64;
/// Deepest nesting of arrays and objects in a relayed `state`.
const MAX_STATE_DEPTH: usize = 64;
/// How often an away seat's grace period is checked against the server clock.
const GRACE_POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Deserialize)]
pub struct AuthQuery {
    /// Access token, for clients that cannot set headers (browsers).
    token: Option<String>,
    /// Client key, likewise.
    key: Option<String>,
    /// `json` or `msgpack`, for clients that cannot set `Sec-WebSocket-Protocol`.
    encoding: Option<String>,
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
    let ws = ws
        .map_err(|e| ApiError::invalid(format!("this endpoint needs a WebSocket upgrade: {e}")))?
        .protocols([JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL]);
    // The negotiated subprotocol wins: the client reads the answer's header.
    let encoding = match ws.selected_protocol() {
        Some(p) if p == MSGPACK_SUBPROTOCOL => Encoding::MessagePack,
        Some(_) => Encoding::Json,
        None => match query.encoding.as_deref() {
            None | Some("json") => Encoding::Json,
            Some("msgpack") => Encoding::MessagePack,
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "unknown encoding {other:?}: json or msgpack"
                )))
            }
        },
    };
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
            let session = Session::new(state, id, player, expires_at, encoding);
            session.run(socket).await;
        }))
}

struct Session {
    state: AppState,
    conn: Arc<ConnHandle>,
    project: Arc<Project>,
    outbound: mpsc::Receiver<Outgoing>,
    encoding: Encoding,
    /// Session of the current access token: signing it out silences the socket.
    session_id: String,
    /// Unix seconds the current access token expires at.
    expires_at: i64,
    rooms: HashSet<String>,
    /// Rooms on other nodes of the cluster -> their home node.
    remote_rooms: HashMap<String, String>,
    limiter: DefaultDirectRateLimiter,
    /// `voice_frame`s only.
    voice_limiter: DefaultDirectRateLimiter,
    violations: u32,
    window_start: Instant,
}

impl Session {
    fn new(state: AppState, id: u64, player: Player, expires_at: i64, encoding: Encoding) -> Self {
        let limits = &state.config.realtime;
        let (tx, outbound) = mpsc::channel(limits.outbound_queue.max(1));
        let rate = NonZeroU32::new(limits.messages_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limits.message_burst).unwrap_or(rate);
        let voice_rate = NonZeroU32::new(limits.voice_frames_per_second).unwrap_or(NonZeroU32::MIN);
        let voice_burst = NonZeroU32::new(limits.voice_frame_burst).unwrap_or(voice_rate);
        Self {
            conn: Arc::new(ConnHandle::new(
                id,
                player.project.id.clone(),
                player.user_id,
                tx,
            )),
            project: player.project,
            outbound,
            encoding,
            session_id: player.session_id,
            expires_at,
            rooms: HashSet::new(),
            remote_rooms: HashMap::new(),
            limiter: RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)),
            voice_limiter: RateLimiter::direct(
                Quota::per_second(voice_rate).allow_burst(voice_burst),
            ),
            violations: 0,
            window_start: Instant::now(),
            state,
        }
    }

    async fn run(mut self, mut socket: WebSocket) {
        self.state.realtime.users.register(&self.conn);
        self.refresh_presence();
        let heartbeat = Duration::from_secs(self.state.config.realtime.heartbeat_secs.max(1));
        let mut pings =
            tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_inbound = tokio::time::Instant::now();
        // Re-armed from `last_inbound` when it fires, rather than on every frame.
        let dead_check = tokio::time::sleep(heartbeat * 2);
        tokio::pin!(dead_check);
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
                        sent = send_queued(&mut socket, frame, &mut self.outbound, self.encoding) => {
                            if sent.is_err() { break }
                        }
                        _ = interrupted => break,
                    }
                }
                incoming = socket.recv() => match incoming {
                    Some(Ok(message)) => {
                        last_inbound = tokio::time::Instant::now();
                        self.on_message(message).await;
                    }
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
                _ = pings.tick() => {
                    let ping = socket.send(Message::Ping(Default::default()));
                    if !matches!(tokio::time::timeout(heartbeat, ping).await, Ok(Ok(()))) {
                        break;
                    }
                }
                () = &mut dead_check => {
                    let dead_at = last_inbound + heartbeat * 2;
                    if dead_at <= tokio::time::Instant::now() {
                        tracing::debug!(conn = self.conn.id, "realtime socket silent: dead");
                        break;
                    }
                    dead_check.as_mut().reset(dead_at);
                }
            }
        }
        let code = self.conn.close_code();
        self.release_seats(code);
        if self.state.realtime.users.unregister(&self.conn) {
            self.state.realtime.matchmaking.player_offline(
                &self.state,
                &self.conn.project_id,
                &self.conn.user_id,
            );
        }
        // Seats kept for a resume keep the player in_match until the grace period ends.
        self.refresh_presence();
        if code != 0 {
            // A slow consumer may never take the close frame; the socket is dropped anyway.
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, self.close(&mut socket, code)).await;
        }
    }

    /// The socket ended: its seats go away for the grace period, after which the others see
    /// `player_left` (seats in rooms on other nodes too, kept there). A client closed for
    /// breaking the limits leaves at once.
    fn release_seats(&mut self, code: u16) {
        let rooms = std::mem::take(&mut self.rooms);
        let remote_rooms = std::mem::take(&mut self.remote_rooms);
        let realtime = &self.state.realtime;
        let grace_ms = self
            .state
            .config
            .realtime
            .resume_grace_secs
            .saturating_mul(1000);
        let abusive = matches!(
            code,
            close_code::POLICY_VIOLATION | close_code::MESSAGE_TOO_BIG
        );
        if grace_ms == 0 || abusive {
            for room in rooms {
                realtime.rooms.leave(&self.conn, &room);
            }
            for (room_id, home) in remote_rooms {
                remote::forward(&self.state, &home, &self.conn, None, Op::Leave { room_id });
            }
            return;
        }
        for (room_id, home) in remote_rooms {
            failover::socket_gone(&self.state, &home, &self.conn, &room_id);
        }
        let away: Vec<String> = rooms
            .into_iter()
            .filter(|room| realtime.rooms.set_away(&self.conn, room))
            .collect();
        if away.is_empty() {
            return;
        }
        let deadline = failover::grace_deadline(&self.state);
        let (state, conn) = (self.state.clone(), self.conn.clone());
        tokio::spawn(async move {
            sleep_until_ms(&state, deadline).await;
            // Seats resumed meanwhile belong to another socket and are left alone.
            for room in away {
                state.realtime.rooms.leave(&conn, &room);
            }
            Presence::refresh(&state, &conn.project_id, &conn.user_id);
        });
    }

    /// Sends the close frame; when the client broke a limit, first the frames queued before it
    /// (the typed errors that explain the close).
    async fn close(&mut self, socket: &mut WebSocket, code: u16) {
        if code != close_code::SLOW_CONSUMER {
            while let Ok(frame) = self.outbound.try_recv() {
                if send_queued(socket, frame, &mut self.outbound, self.encoding)
                    .await
                    .is_err()
                {
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
        let bytes = match (&message, self.encoding) {
            (Message::Text(text), Encoding::Json) => text.as_bytes(),
            (Message::Binary(bytes), Encoding::MessagePack) => bytes.as_ref(),
            (Message::Binary(_), Encoding::Json) => {
                return self.violation(ApiError::invalid(
                    "this socket speaks JSON text frames (negotiate aethex.msgpack for binary)",
                ))
            }
            (Message::Text(_), Encoding::MessagePack) => {
                return self.violation(ApiError::invalid(
                    "this socket speaks MessagePack: send binary frames",
                ))
            }
            // Pings are answered by the WebSocket layer; a close ends the stream next.
            (Message::Ping(_) | Message::Pong(_) | Message::Close(_), _) => return,
        };
        let limits = &self.state.config.realtime;
        if bytes.len() > limits.max_frame_bytes {
            return self.violation(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("frames are limited to {} bytes", limits.max_frame_bytes),
            ));
        }
        // The relay's hot path first: a JSON state update, its state kept as text.
        let fast = match self.encoding {
            Encoding::Json => JsonStateUpdate::parse(bytes),
            Encoding::MessagePack => None,
        }
        // Rooms on another node take the general path, which forwards them.
        .filter(|update| !self.remote_rooms.contains_key(&update.room_id));
        if let Some(update) = fast {
            if self.limiter.check().is_err() {
                return self.violation(ApiError::rate_limited(1));
            }
            if !json_text_nests_within(update.state.get(), MAX_STATE_DEPTH) {
                return self.violation(too_deep());
            }
            let relayed = self.session_valid().and_then(|()| {
                self.state.realtime.rooms.relay(
                    &self.conn,
                    &update.room_id,
                    StatePayload::Json(update.state),
                    update.targets.as_deref(),
                    update.echo,
                )
            });
            if let Err(e) = relayed {
                self.reply(update.cid, ServerMessage::Error { error: body(e) });
            }
            return;
        }
        let parsed = match self.encoding {
            Encoding::Json => {
                serde_json::from_slice::<ClientFrame>(bytes).map_err(|e| e.to_string())
            }
            Encoding::MessagePack => {
                rmp_serde::from_slice::<ClientFrame>(bytes).map_err(|e| e.to_string())
            }
        };
        let frame = match parsed {
            Ok(frame) => frame,
            Err(e) => return self.violation(ApiError::invalid(format!("malformed frame: {e}"))),
        };
        // Voice frames have a bucket of their own: a player talking (50 frames a second) must
        // not crowd out the game's messages, nor the other way round.
        let limiter = match frame.message {
            ClientMessage::VoiceFrame { .. } => &self.voice_limiter,
            _ => &self.limiter,
        };
        if limiter.check().is_err() {
            return self.violation(ApiError::rate_limited(1));
        }
        if let ClientMessage::PlayerStateUpdate { state, .. } = &frame.message {
            if !value_nests_within(state, MAX_STATE_DEPTH) {
                return self.violation(too_deep());
            }
        }
        let cid = frame.cid;
        if let Err(e) = self.handle(cid.clone(), frame.message).await {
            self.reply(cid, ServerMessage::Error { error: body(e) });
        }
    }

    /// The room of a `room:` chat channel when it is on another node, with its home node.
    fn remote_room_of(&self, channel: &str) -> Option<(String, String)> {
        match Channel::parse(channel) {
            Ok(Channel::Room(room_id)) => {
                let home = self.remote_rooms.get(&room_id)?.clone();
                Some((room_id, home))
            }
            _ => None,
        }
    }

    /// Whether the socket's token still allows anything but `ping` and `refresh_session`.
    fn session_valid(&self) -> Result<(), ApiError> {
        if self.state.clock.now_ms() >= self.expires_at.saturating_mul(1000) {
            return Err(ApiError::new(
                ErrorCode::TokenExpired,
                "the access token expired: send refresh_session with a new one",
            ));
        }
        // An in-memory lookup, like the one every HTTP request makes.
        if self.state.auth.is_session_revoked(&self.session_id) {
            return Err(ApiError::unauthorized(
                "session has been signed out: send refresh_session with a token of a new one",
            ));
        }
        Ok(())
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

    fn refresh_presence(&self) {
        Presence::refresh(&self.state, &self.conn.project_id, &self.conn.user_id);
    }

    fn reply(&self, cid: Option<Cid>, message: ServerMessage) {
        self.conn.push(encode(cid, message));
    }

    async fn handle(&mut self, cid: Option<Cid>, message: ClientMessage) -> Result<(), ApiError> {
        let state = self.state.clone();
        let now_ms = state.clock.now_ms();
        let session = self.session_valid();
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
            _ if session.is_err() => return session,
            ClientMessage::CreateRoom { properties } => {
                let room = state.realtime.rooms.create(
                    &state.config.realtime,
                    &self.conn,
                    properties,
                    now_ms,
                )?;
                self.rooms.insert(room.room_id.clone());
                self.refresh_presence();
                self.reply(cid, ServerMessage::RoomJoined { room });
            }
            ClientMessage::ListRooms {
                label,
                cursor,
                limit,
            } => {
                let (rooms, next_cursor) = remote::list_rooms(
                    &state,
                    &self.conn.project_id,
                    label.as_deref(),
                    cursor.as_deref(),
                    limit,
                )
                .await?;
                self.reply(cid, ServerMessage::RoomList { rooms, next_cursor });
            }
            ClientMessage::JoinRoom { room_id, join_code } => {
                let joined = state.realtime.rooms.join(
                    &state.config.realtime,
                    &self.conn,
                    room_id.as_deref(),
                    join_code.as_deref(),
                    now_ms,
                );
                let room = match joined {
                    // Not here: maybe on another node of the cluster.
                    Err(e) if e.code == ErrorCode::NotFound && state.cluster.is_some() => {
                        let elsewhere = remote::join(
                            &state,
                            &self.conn,
                            room_id.as_deref(),
                            join_code.as_deref(),
                        )
                        .await?;
                        let (room, home) = elsewhere.ok_or(e)?;
                        self.remote_rooms.insert(room.room_id.clone(), home);
                        room
                    }
                    joined => {
                        let room = joined?;
                        self.rooms.insert(room.room_id.clone());
                        self.refresh_presence();
                        room
                    }
                };
                self.reply(cid, ServerMessage::RoomJoined { room });
            }
            // A room on another node: its home node runs the frame (and answers errors).
            ClientMessage::LeaveRoom { room_id } if self.remote_rooms.contains_key(&room_id) => {
                let home = self.remote_rooms.remove(&room_id).unwrap_or_default();
                let op = Op::Leave {
                    room_id: room_id.clone(),
                };
                remote::forward(&state, &home, &self.conn, None, op);
                self.reply(cid, ServerMessage::RoomLeft { room_id });
            }
            ClientMessage::PlayerStateUpdate {
                room_id,
                state: value,
                targets,
                echo,
            } if self.remote_rooms.contains_key(&room_id) => {
                let home = &self.remote_rooms[&room_id];
                let op = Op::Relay {
                    room_id: room_id.clone(),
                    state: value,
                    targets,
                    echo,
                };
                remote::forward(&state, home, &self.conn, cid, op);
            }
            ClientMessage::RelayPacket {
                room_id,
                data,
                targets,
                channel,
                reliable,
            } if self.remote_rooms.contains_key(&room_id) => {
                let home = &self.remote_rooms[&room_id];
                let op = Op::Packet {
                    room_id: room_id.clone(),
                    data,
                    targets,
                    channel,
                    reliable,
                };
                remote::forward(&state, home, &self.conn, cid, op);
            }
            ClientMessage::Signal {
                room_id,
                to,
                signal,
            } if self.remote_rooms.contains_key(&room_id) => {
                let home = &self.remote_rooms[&room_id];
                let op = Op::Signal {
                    room_id: room_id.clone(),
                    to,
                    signal,
                };
                remote::forward(&state, home, &self.conn, cid, op);
            }
            ClientMessage::Signal {
                room_id,
                to,
                signal,
            } => state
                .realtime
                .rooms
                .signal(&self.conn, &room_id, &to, signal)?,
            ClientMessage::VoiceFrame {
                room_id,
                data,
                targets,
            } if self.remote_rooms.contains_key(&room_id) => {
                let home = &self.remote_rooms[&room_id];
                let op = Op::Voice {
                    room_id: room_id.clone(),
                    data,
                    targets,
                };
                remote::forward(&state, home, &self.conn, cid, op);
            }
            ClientMessage::VoiceKey {
                room_id,
                data,
                targets,
            } if self.remote_rooms.contains_key(&room_id) => {
                let home = &self.remote_rooms[&room_id];
                let op = Op::VoiceKey {
                    room_id: room_id.clone(),
                    data,
                    targets,
                };
                remote::forward(&state, home, &self.conn, cid, op);
            }
            ClientMessage::LeaveRoom { room_id } => {
                if !self.rooms.remove(&room_id) || !state.realtime.rooms.leave(&self.conn, &room_id)
                {
                    return Err(ApiError::not_found("you are not in this room"));
                }
                self.refresh_presence();
                self.reply(cid, ServerMessage::RoomLeft { room_id });
            }
            ClientMessage::PlayerStateUpdate {
                room_id,
                state: value,
                targets,
                echo,
            } => state.realtime.rooms.relay(
                &self.conn,
                &room_id,
                StatePayload::Value(value),
                targets.as_deref(),
                echo,
            )?,
            ClientMessage::RelayPacket {
                room_id,
                data,
                targets,
                channel,
                reliable,
            } => state.realtime.rooms.relay_packet(
                &self.conn,
                &room_id,
                data,
                targets.as_deref(),
                channel,
                reliable,
            )?,
            ClientMessage::VoiceFrame {
                room_id,
                data,
                targets,
            } => voice::relay_frame(&state, &self.conn, room_id, data, targets)?,
            ClientMessage::VoiceKey {
                room_id,
                data,
                targets,
            } => voice::relay_key(&state, &self.conn, room_id, data, targets)?,
            ClientMessage::Resume { rooms } => {
                let mut resumed = Vec::new();
                let mut lost = Vec::new();
                let mut elsewhere = Vec::new();
                for (room_id, last_seq) in rooms {
                    match state.realtime.rooms.resume(&self.conn, &room_id, last_seq) {
                        Some(room) => {
                            self.rooms.insert(room_id);
                            resumed.push(room);
                        }
                        None if state.cluster.is_some() => elsewhere.push((room_id, last_seq)),
                        None => lost.push(room_id),
                    }
                }
                // Not here: maybe homed on another node (or adopted by one), all asked at once.
                let answers =
                    futures::future::join_all(elsewhere.iter().map(|(room, seq)| {
                        failover::resume_elsewhere(&state, &self.conn, room, *seq)
                    }))
                    .await;
                for ((room_id, _), answer) in elsewhere.into_iter().zip(answers) {
                    match answer {
                        Resumed::Here(room) => {
                            self.rooms.insert(room_id);
                            resumed.push(room);
                        }
                        Resumed::Elsewhere(room, home) => {
                            self.remote_rooms.insert(room_id, home);
                            resumed.push(room);
                        }
                        Resumed::Lost => lost.push(room_id),
                    }
                }
                self.reply(
                    cid,
                    ServerMessage::Resumed {
                        rooms: resumed,
                        lost,
                    },
                );
            }
            ClientMessage::SendMessage {
                channel,
                body,
                metadata,
            } => {
                // Chat of a room on another node: its home node checks, stores, publishes and
                // answers.
                if let Some((room_id, home)) = self.remote_room_of(&channel) {
                    let op = Op::Chat {
                        room_id,
                        body,
                        metadata,
                    };
                    remote::forward(&state, &home, &self.conn, cid, op);
                    return Ok(());
                }
                let (message, seq) = crate::chat::send(
                    &state,
                    &self.conn.project_id,
                    &self.conn.user_id,
                    &channel,
                    body,
                    metadata,
                )
                .await?;
                self.reply(cid, ServerMessage::MessageSent { message, seq });
            }
            ClientMessage::ChatHistory {
                channel,
                cursor,
                limit,
            } => {
                let page = crate::chat::history(
                    &state,
                    &self.conn.project_id,
                    &self.conn.user_id,
                    &channel,
                    cursor.as_deref(),
                    limit,
                )
                .await?;
                self.reply(
                    cid,
                    ServerMessage::ChatHistory {
                        channel: page.channel,
                        messages: page.messages,
                        next_cursor: page.next_cursor,
                    },
                );
            }
            ClientMessage::JoinQueue(request) => {
                let ticket = state
                    .realtime
                    .matchmaking
                    .join(&state, &self.conn.project_id, &self.conn.user_id, request)
                    .await?;
                self.reply(cid, ServerMessage::QueueJoined { ticket });
            }
            ClientMessage::LeaveQueue { ticket_id } => {
                let ticket_ids = state
                    .realtime
                    .matchmaking
                    .leave(
                        &state,
                        &self.conn.project_id,
                        &self.conn.user_id,
                        ticket_id.as_deref(),
                    )
                    .await?;
                self.reply(cid, ServerMessage::QueueLeft { ticket_ids });
            }
            ClientMessage::QueueStatus { ticket_id } => {
                let ticket = state
                    .realtime
                    .matchmaking
                    .status(
                        &state,
                        &self.conn.project_id,
                        &self.conn.user_id,
                        &ticket_id,
                    )
                    .await?;
                self.reply(cid, ServerMessage::TicketStatus { ticket });
            }
        }
        Ok(())
    }
}

/// Waits until the server clock reaches `deadline_ms` (the server clock decides, so tests can
/// move it instead of waiting).
pub async fn sleep_until_ms(state: &AppState, deadline_ms: i64) {
    loop {
        let left = deadline_ms.saturating_sub(state.clock.now_ms());
        if left <= 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(left as u64).min(GRACE_POLL)).await;
    }
}

/// `player_state_update` as a JSON client sends it, read without building a tree of the state:
/// the relay's hot path (several times faster than the general parse; see docs/server.md).
/// Whatever this does not read takes the general path, which also words the errors.
#[derive(Deserialize)]
pub struct JsonStateUpdate<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    pub cid: Option<Cid>,
    pub room_id: String,
    pub state: Box<RawValue>,
    #[serde(default)]
    pub targets: Option<Vec<String>>,
    #[serde(default)]
    pub echo: bool,
}

impl<'a> JsonStateUpdate<'a> {
    /// `None` for anything but a well-formed `player_state_update`.
    pub fn parse(frame: &'a [u8]) -> Option<Self> {
        serde_json::from_slice::<Self>(frame)
            .ok()
            .filter(|update| update.kind == "player_state_update")
    }
}

fn too_deep() -> ApiError {
    ApiError::invalid(format!(
        "malformed frame: state nests deeper than {MAX_STATE_DEPTH} levels"
    ))
}

fn body(error: ApiError) -> ApiErrorBody {
    ApiErrorBody {
        code: error.code,
        message: error.message,
        details: error.details,
    }
}

/// Sends `first` and the queue entries already waiting behind it (at most `SEND_BATCH` in all)
/// with one flush: a busy room's burst costs one write to the socket instead of one per frame.
async fn send_queued(
    socket: &mut WebSocket,
    first: Outgoing,
    queue: &mut mpsc::Receiver<Outgoing>,
    encoding: Encoding,
) -> Result<(), axum::Error> {
    feed(socket, first, encoding).await?;
    for _ in 1..SEND_BATCH {
        match queue.try_recv() {
            Ok(next) => feed(socket, next, encoding).await?,
            Err(_) => break,
        }
    }
    socket.flush().await
}

/// Buffers the frames of one queue entry for the next flush.
async fn feed(
    socket: &mut WebSocket,
    outgoing: Outgoing,
    encoding: Encoding,
) -> Result<(), axum::Error> {
    match outgoing {
        Outgoing::One(frame) => socket.feed(frame.to_ws(encoding)).await,
        Outgoing::Many(frames) => {
            for frame in frames {
                socket.feed(frame.to_ws(encoding)).await?;
            }
            Ok(())
        }
    }
}
