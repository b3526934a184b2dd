//! The realtime socket as the game sees it: rooms and state relay ([`Multiplayer`]), matchmaking
//! ([`Matchmaking`]), chat ([`Chat`]) and Godot's high-level multiplayer over the relay
//! ([`MultiplayerPeer`]). Wire protocol: `docs/api/realtime.md`.
//!
//! # API overview (for the binding)
//! - `client.multiplayer()`: [`Multiplayer`]. `create_room`, `join_room`, `leave_room`,
//!   `list_rooms`, `send_state`, `send_state_to`, `send_packet`, `ping`, `connect` return a
//!   [`RequestId`] at once; the outcome arrives as `Event::Completed`. `connection_state`,
//!   `current_room`, `joined_rooms`, `room` read local state without I/O. `create_peer` builds
//!   a [`MultiplayerPeer`] for one joined room over the relay, `create_peer_with` over P2P links
//!   ([`PeerTransport`], module [`p2p`]).
//! - `client.multiplayer().matchmaking()`: [`Matchmaking`]. `join_queue`, `leave_queue`,
//!   `queue_status`.
//! - `client.multiplayer().voice()`: [`Voice`], voice chat (its own signals: see [`voice`]).
//! - `client.chat()`: [`Chat`]. `send`, `history`.
//!
//! # Signals (`Event::Signal { service, name, args }`)
//! Service `"multiplayer"`:
//! - `connection_state_changed(state: String)`: `"connecting"`, `"connected"`,
//!   `"reconnecting"`, `"disconnected"` (see [`ConnectionState`]).
//! - `room_joined(room: Dictionary)`: after `create_room`/`join_room`; the room as in the call's
//!   result (`room_id`, `join_code` (private rooms), `host`, `members` [`{user_id, peer_id,
//!   joined_at}`], `properties`, `seq`).
//! - `room_left(room_id: String)`: after `leave_room`, and for a room whose seat was lost while
//!   the socket was down (grace period over).
//! - `player_joined(room_id: String, member: Dictionary {user_id, peer_id, joined_at})`
//! - `player_left(room_id: String, user_id: String)`
//! - `host_changed(room_id: String, host_user_id: String)`
//! - `player_state_received(player_id: String, state: Variant)`: a member's `send_state`; the
//!   state is decoded with the saves codec, so Godot types arrive intact.
//! - `packet_received(room_id: String, from_user_id: String, data: PackedByteArray, channel: int,
//!   reliable: bool)`: a `send_packet` of another member, only for rooms without a
//!   [`MultiplayerPeer`] (a peer takes its room's packets).
//! - `peer_connection_changed(player_id: String, state: String, path: String, rtt_ms: float)`:
//!   the P2P link to a member of a P2P peer's room: `state` `"connecting"` (path: the attempt,
//!   `"direct"` or `"turn"`) or `"connected"` (path `"direct"`, `"turn"` or `"relay"`);
//!   `rtt_ms` -1 until measured and on the relay. Sent again when the RTT moves by 10% or more.
//! - `error(error: Dictionary {code, message, status})`: the server refused a message nothing
//!   waits on (a `send_state`/`send_packet` that already completed, or a frame over the rate).
//!
//! Service `"multiplayer.matchmaking"`: `match_found(match_info: Dictionary {ticket_id, room_id,
//! mode, region, players [{user_id, properties}]})`, `matchmaking_timeout(ticket_id: String)`,
//! `queue_joined(ticket: Dictionary)` (another player queued you in their party; the ticket as in
//! `join_queue`'s result), `queue_left(ticket_ids: PackedStringArray)` (another player of your
//! ticket left the queue: the ticket is gone).
//!
//! Service `"social.chat"`: `message_received(message: Dictionary {message_id, channel, from,
//! body, metadata, sent_at})`.
//!
//! Service `"social.friends"`: `presence_changed(user_id: String, status: String, at: int)`
//! (`"online"`, `"in_match"`, `"offline"`), `friends_updated(status: Dictionary)` pushed with an
//! empty Dictionary: re-read the friend list.
//!
//! # Behaviour
//! - **One socket per client**, opened by the first realtime call after sign-in, authenticated
//!   with the client key and the access token headers, owned by the client's runtime (it stops
//!   with `Client::shutdown`, no task survives). Signing out closes it; the next call after a new
//!   sign-in opens a new one.
//! - **Token expiry**: the socket never reconnects because its token expired. When the session
//!   is refreshed (by any HTTP call, or by the socket itself shortly before expiry) the new
//!   token is sent as `refresh_session` on the live socket.
//! - **Drops**: the socket reconnects with jittered, capped exponential backoff
//!   ([`RealtimeConfig`]), then sends `resume` with each joined room's last seen `seq`. Replayed
//!   events are de-duplicated by `seq` (each missed event is delivered once, in order); rooms the
//!   server reports lost are announced with `room_left`. Calls waiting for an answer when the
//!   socket dropped fail with `network` (they are not resent: a `create_room` or `send_message`
//!   may have been applied). Calls made while the socket is down wait for it and fail with
//!   `timeout` after `ClientConfig::request_timeout`; a call made during a backoff delay cuts
//!   it short with one immediate attempt (at most one per delay), so it goes through as soon as
//!   the server is back.
//! - **Current room**: calls that take no room id (`send_state`, `leave_room(None)`,
//!   `create_peer(None)`) use the room joined last among those still joined. `not_found` when
//!   none is.
//! - **Free-form data** (`state`, room and chat `metadata`, ticket `properties`) is encoded with
//!   the saves codec ([`crate::codec`]), so Vector2/3, Color, Quaternion, Transform and packed
//!   arrays survive; plain JSON sent by other clients decodes as plain values.

mod chat;
mod matchmaking;
pub mod p2p;
pub mod peer;
mod rooms;
mod socket;
pub mod voice;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aethex_protocol::realtime::{ClientMessage, RoomProperties};
use aethex_protocol::ErrorCode;

use crate::client::Shared;
use crate::codec::to_json;
use crate::{RequestId, SdkError, Value};

pub use chat::Chat;
pub use matchmaking::Matchmaking;
pub use p2p::{LinkPath, LinkStatus, P2pConfig, PeerTransport};
pub use peer::{ConnectionStatus, MultiplayerPeer, PeerEvent, TransferMode};

pub(crate) use socket::Realtime;
pub use voice::Voice;

/// Service names the signals are emitted on.
pub(crate) const MULTIPLAYER: &str = "multiplayer";
pub(crate) const MATCHMAKING: &str = "multiplayer.matchmaking";
pub(crate) const CHAT: &str = "social.chat";
pub(crate) const FRIENDS: &str = "social.friends";

/// How frames are encoded on the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RealtimeEncoding {
    /// One JSON object per text frame.
    #[default]
    Json,
    /// The same messages as MessagePack binary frames (`?encoding=msgpack`); needs a server that
    /// serves it.
    MessagePack,
}

/// Socket tuning, part of [`crate::ClientConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealtimeConfig {
    pub encoding: RealtimeEncoding,
    /// Delay before the first reconnect attempt; doubles per failed attempt, with jitter.
    pub reconnect_base_delay: Duration,
    /// Upper bound of one reconnect delay.
    pub reconnect_max_delay: Duration,
    /// A WebSocket ping is sent after this long without traffic; a socket silent for three
    /// times this long is treated as dropped.
    pub keepalive: Duration,
    /// Calls that may wait for the socket at once; more fail with `rate_limited` at once.
    pub queue_capacity: usize,
    /// Peer-to-peer links of peers made with the P2P transport.
    pub p2p: P2pConfig,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            encoding: RealtimeEncoding::Json,
            reconnect_base_delay: Duration::from_millis(250),
            reconnect_max_delay: Duration::from_secs(10),
            keepalive: Duration::from_secs(15),
            queue_capacity: 4096,
            p2p: P2pConfig::default(),
        }
    }
}

/// Where the socket stands, as `connection_state_changed` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// No socket: not opened yet, or closed by sign-out.
    Disconnected,
    /// Opening the first socket of this session.
    Connecting,
    Connected,
    /// The socket dropped; reconnecting with backoff.
    Reconnecting,
}

impl ConnectionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disconnected => "disconnected",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Reconnecting => "reconnecting",
        }
    }
}

/// Reached as `client.multiplayer()`: rooms, state relay, packets and the socket itself.
#[derive(Clone)]
pub struct Multiplayer {
    realtime: Arc<Realtime>,
    matchmaking: Matchmaking,
    voice: Voice,
}

impl Multiplayer {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let realtime = Realtime::new(shared.clone());
        Self {
            matchmaking: Matchmaking::new(realtime.clone()),
            voice: Voice::new(shared, realtime.clone()),
            realtime,
        }
    }

    pub(crate) fn realtime(&self) -> &Arc<Realtime> {
        &self.realtime
    }

    pub fn matchmaking(&self) -> &Matchmaking {
        &self.matchmaking
    }

    /// Voice chat in the current room ([`voice`]).
    pub fn voice(&self) -> &Voice {
        &self.voice
    }

    /// Opens the socket now rather than on the first call; completes with `{}` once connected.
    pub fn connect(&self) -> RequestId {
        self.realtime.call(ClientMessage::Ping)
    }

    /// Round trip to the server; completes with `{}` on `pong`.
    pub fn ping(&self) -> RequestId {
        self.realtime.call(ClientMessage::Ping)
    }

    /// Where the socket stands (no I/O).
    pub fn connection_state(&self) -> ConnectionState {
        self.realtime.connection_state()
    }

    /// `properties`: Dictionary with any of `metadata` (any value), `max_players` (int),
    /// `private` (bool), `labels` (Array of String), `tick_rate` (int). Completes with the room
    /// Dictionary (see `room_joined`); the caller is host.
    pub fn create_room(&self, properties: Value) -> RequestId {
        match room_properties(&properties) {
            Ok(properties) => self.realtime.call(ClientMessage::CreateRoom { properties }),
            Err(e) => self.realtime.fail(e),
        }
    }

    /// Joins by room id, or by join code when `id_or_code` is six characters (room ids are
    /// UUIDs, join codes six letters and digits). Completes with the room Dictionary.
    pub fn join_room(&self, id_or_code: String) -> RequestId {
        let message = if is_join_code(&id_or_code) {
            ClientMessage::JoinRoom {
                room_id: None,
                join_code: Some(id_or_code),
            }
        } else {
            ClientMessage::JoinRoom {
                room_id: Some(id_or_code),
                join_code: None,
            }
        };
        self.realtime.call(message)
    }

    /// Leaves `room_id`, or the current room when `None`. Completes with `{room_id}`.
    pub fn leave_room(&self, room_id: Option<String>) -> RequestId {
        self.realtime
            .call_in_room(room_id, |room_id| ClientMessage::LeaveRoom { room_id })
    }

    /// Public rooms, optionally only those carrying `label`. Completes with `{rooms: [...]}`,
    /// each `{room_id, host, players, max_players, labels, metadata}`.
    pub fn list_rooms(&self, label: Option<String>) -> RequestId {
        self.realtime.call(ClientMessage::ListRooms {
            label,
            cursor: None,
            limit: None,
        })
    }

    /// Relays `state` to the other members of the current room (or only to `targets`, user
    /// ids). Completes with `{}` once written to the socket; a refusal by the server afterwards
    /// is the `error` signal.
    pub fn send_state(&self, state: Value, targets: Option<Vec<String>>) -> RequestId {
        self.realtime.send_state(None, state, targets, false)
    }

    /// `send_state` to a given room; `echo` also sends it back to the caller.
    pub fn send_state_to(
        &self,
        room_id: String,
        state: Value,
        targets: Option<Vec<String>>,
        echo: bool,
    ) -> RequestId {
        self.realtime
            .send_state(Some(room_id), state, targets, echo)
    }

    /// Relays opaque bytes to the other members of `room_id` (the current room when `None`) or
    /// only to `targets` (user ids); they arrive as `packet_received`. Completes with `{}` once
    /// written.
    pub fn send_packet(
        &self,
        room_id: Option<String>,
        data: Vec<u8>,
        targets: Option<Vec<String>>,
        channel: u32,
        reliable: bool,
    ) -> RequestId {
        self.realtime
            .call_in_room(room_id, move |room_id| ClientMessage::RelayPacket {
                room_id,
                data,
                targets,
                channel,
                reliable,
            })
    }

    /// The room calls without a room id use: the room joined last among those still joined.
    pub fn current_room(&self) -> Option<String> {
        self.realtime.rooms().current()
    }

    /// Ids of the rooms joined, oldest join first.
    pub fn joined_rooms(&self) -> Vec<String> {
        self.realtime.rooms().joined()
    }

    /// The local view of a joined room (same shape as `room_joined`, kept current by the
    /// membership events); `None` when not joined.
    pub fn room(&self, room_id: &str) -> Option<Value> {
        self.realtime.rooms().room_value(room_id)
    }

    /// A Godot `MultiplayerPeer` core for a joined room (the current room when `None`) over the
    /// relay. Takes over the room's packets from then on (no more `packet_received` signals for
    /// it); one peer per room: a new one closes the previous one.
    pub fn create_peer(&self, room_id: Option<String>) -> Result<MultiplayerPeer, SdkError> {
        self.create_peer_with(room_id, PeerTransport::Relay)
    }

    /// `create_peer` with a transport: the relay, or WebRTC links to the members where they
    /// open (see [`p2p`]).
    pub fn create_peer_with(
        &self,
        room_id: Option<String>,
        transport: PeerTransport,
    ) -> Result<MultiplayerPeer, SdkError> {
        MultiplayerPeer::attach(self.realtime.clone(), room_id, transport)
    }
}

/// Six letters or digits: what the server hands out as a private room's join code.
fn is_join_code(text: &str) -> bool {
    text.len() == 6 && text.bytes().all(|b| b.is_ascii_alphanumeric())
}

pub(crate) fn invalid(message: impl Into<String>) -> SdkError {
    SdkError::new(ErrorCode::InvalidRequest, message)
}

/// Encodes a free-form value (state, metadata, properties) with the saves codec.
pub(crate) fn free_form(value: &Value) -> serde_json::Value {
    to_json(value)
}

fn room_properties(value: &Value) -> Result<RoomProperties, SdkError> {
    let Value::Dictionary(pairs) = value else {
        if *value == Value::Nil {
            return Ok(RoomProperties::default());
        }
        return Err(invalid("create_room takes a Dictionary of properties"));
    };
    let mut properties = RoomProperties::default();
    for (key, item) in pairs {
        let (Value::String(key) | Value::StringName(key)) = key else {
            return Err(invalid("room property names are strings"));
        };
        match (key.as_str(), item) {
            ("metadata", item) => properties.metadata = Some(free_form(item)),
            ("max_players", Value::Int(n)) => {
                properties.max_players =
                    Some(u32::try_from(*n).map_err(|_| invalid("max_players is out of range"))?)
            }
            ("tick_rate", Value::Int(n)) => {
                properties.tick_rate =
                    Some(u32::try_from(*n).map_err(|_| invalid("tick_rate is out of range"))?)
            }
            ("private", Value::Bool(b)) => properties.private = *b,
            ("labels", Value::Array(items)) => {
                properties.labels = items
                    .iter()
                    .map(|l| match l {
                        Value::String(s) | Value::StringName(s) => Ok(s.clone()),
                        _ => Err(invalid("labels are strings")),
                    })
                    .collect::<Result<_, _>>()?
            }
            ("labels", Value::PackedStringArray(items)) => properties.labels = items.clone(),
            (other, _) => {
                return Err(invalid(format!(
                    "unknown room property `{other}` or wrong type"
                )))
            }
        }
    }
    Ok(properties)
}

/// Shared state behind a lock that is never held across an await.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
