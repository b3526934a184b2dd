//! The realtime socket (`GET /api/v1/realtime`): every message, client to server and back.
//!
//! One JSON object per WebSocket text frame, `{"type": "...", "cid": ..., ...fields}`. `cid` is
//! the client's optional correlation id; the server copies it onto the reply (or the error) to that
//! message and leaves it out of pushed events. New message types are new enum variants, so later
//! features (matchmaking, chat, presence, signaling) and a binary encoding of the same enums add
//! to this file without changing what is here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ApiErrorBody;
use crate::signaling::PeerSignal;

/// Path of the socket.
pub const REALTIME_PATH: &str = "/api/v1/realtime";

/// `Sec-WebSocket-Protocol` of JSON text frames (the default).
pub const JSON_SUBPROTOCOL: &str = "aethex.json";
/// `Sec-WebSocket-Protocol` of MessagePack binary frames (`?encoding=msgpack` likewise): the
/// same messages, as maps with the same field names.
pub const MSGPACK_SUBPROTOCOL: &str = "aethex.msgpack";

/// Close codes the server ends a socket with (RFC 6455 4000-4999 are the application's own).
pub mod close_code {
    /// The client kept breaking the limits (rate, frame size, malformed frames).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame above the hard size cap; the connection cannot continue.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The socket's outbound queue filled up: the client reads too slowly.
    pub const SLOW_CONSUMER: u16 = 4008;
}

/// A client correlation id: any string or unsigned integer the client picks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Cid {
    Number(u64),
    Text(String),
}

/// A frame the client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<Cid>,
    #[serde(flatten)]
    pub message: ClientMessage,
}

/// What a client may ask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Answered by `pong`.
    Ping,
    /// Replaces the socket's access token (same player); answered by `session_refreshed`.
    RefreshSession { access_token: String },
    /// Creates a room and joins it as host; answered by `room_joined`.
    CreateRoom {
        #[serde(default)]
        properties: RoomProperties,
    },
    /// Public rooms of the game, optionally only those with `label`, oldest first, `limit` (1 to
    /// 100, default 100) at a time; answered by `room_list`. `cursor` is a `next_cursor` of the
    /// previous page.
    ListRooms {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Joins by `room_id` (public rooms) or `join_code` (any room); answered by `room_joined`.
    JoinRoom {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        join_code: Option<String>,
    },
    /// Answered by `room_left`.
    LeaveRoom { room_id: String },
    /// Relayed as `state_update` to the room's other members, or only to `targets` (user ids).
    /// `echo` also sends it back to the sender. Not answered unless it fails.
    PlayerStateUpdate {
        room_id: String,
        state: serde_json::Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        targets: Option<Vec<String>>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        echo: bool,
    },
    /// Opaque bytes for Godot's high-level multiplayer (`AeThexMultiplayerPeer`): relayed as
    /// `packet_received` like a state update (same seq, replay and ordering), to `targets` or
    /// everyone else. `channel` and `reliable` are carried for the receiving peer.
    RelayPacket {
        room_id: String,
        #[serde(with = "bytes_field")]
        data: Vec<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        targets: Option<Vec<String>>,
        #[serde(default)]
        channel: u32,
        #[serde(default = "default_true")]
        reliable: bool,
    },
    /// Voice over the relay: one end-to-end encrypted Opus frame, relayed at once as
    /// `voice_received` to the room's other members (or only `targets`). Opaque to the server:
    /// it takes no room `seq` and is never replayed (late audio is worthless). Counted against
    /// the socket's own voice rate, not the message rate. Not answered unless refused.
    VoiceFrame {
        room_id: String,
        #[serde(with = "bytes_field")]
        data: Vec<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        targets: Option<Vec<String>>,
    },
    /// Voice key agreement between members (signed public keys, wrapped sender keys): opaque
    /// bytes relayed as `voice_key_received` to `targets` or every other member, in room order
    /// (takes a `seq`, replayed after `resume`). Not answered unless refused.
    VoiceKey {
        room_id: String,
        #[serde(with = "bytes_field")]
        data: Vec<u8>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        targets: Option<Vec<String>>,
    },
    /// First message on a new socket after a drop: takes back the player's seats in these rooms
    /// (room id -> the last `seq` the client saw) if the grace period has not run out. The
    /// missed events of each room are sent again, in order, then `resumed`.
    Resume { rooms: BTreeMap<String, u64> },
    /// Answered by `queue_joined`; later `match_found` or `matchmaking_timeout`.
    JoinQueue(QueueRequest),
    /// Leaves one ticket, or every ticket of the player when `ticket_id` is unset; answered by
    /// `queue_left`.
    LeaveQueue {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ticket_id: Option<String>,
    },
    /// Answered by `ticket_status`.
    QueueStatus { ticket_id: String },
    /// Posts to a chat channel (`room:<room id>`, `dm:<user id>`, `group:<group id>`);
    /// answered by `message_sent` with the stored message.
    SendMessage {
        channel: String,
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<serde_json::Value>,
    },
    /// A page of a channel's history, newest first; answered by `chat_history`.
    ChatHistory {
        channel: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// WebRTC signaling for a peer-to-peer connection: relayed as `signal` to the member `to`
    /// of the same room only. Not answered unless it fails.
    Signal {
        room_id: String,
        to: String,
        signal: PeerSignal,
    },
}

fn default_true() -> bool {
    true
}

/// `join_queue`: what the player looks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueRequest {
    pub mode: String,
    pub region: String,
    /// Acceptable opponents' skill, `[low, high]`; widened while the ticket waits.
    pub skill_range: [f64; 2],
    /// Other players (user ids) queued with this one and kept together in the match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub party: Vec<String>,
    /// Free-form data handed to the other players in `match_found`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<serde_json::Value>,
}

/// A matchmaking ticket as its players see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    pub ticket_id: String,
    pub mode: String,
    pub region: String,
    /// The range requested.
    pub skill_range: [f64; 2],
    /// The range currently accepted, after widening.
    pub effective_range: [f64; 2],
    /// The submitter first, then the party.
    pub players: Vec<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds at which the ticket times out.
    pub expires_at: i64,
}

/// One player of a match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchedPlayer {
    pub user_id: String,
    /// The `properties` of the ticket the player was on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<serde_json::Value>,
}

/// A stored chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatMessage {
    pub message_id: String,
    /// As the receiver names it: a direct message from `u` arrives on `dm:u`.
    pub channel: String,
    pub from: String,
    /// After the profanity filter.
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<serde_json::Value>,
    /// Unix milliseconds.
    pub sent_at: i64,
}

/// `GET /api/v1/chat/{channel}/messages`: like the socket's `chat_history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatHistoryPage {
    pub channel: String,
    /// Newest first.
    pub messages: Vec<ChatMessage>,
    /// Fetches the next (older) page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A player the caller muted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatMute {
    pub user_id: String,
    /// Unix milliseconds.
    pub muted_at: i64,
}

/// `GET /api/v1/chat/mutes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatMuteList {
    /// Most recent first.
    pub mutes: Vec<ChatMute>,
}

/// A project's chat settings (`GET`/`PUT /api/v1/chat/settings`, server key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChatSettings {
    /// Censor profanity in message bodies (default true).
    pub profanity_filter: bool,
}

impl Default for ChatSettings {
    fn default() -> Self {
        Self {
            profanity_filter: true,
        }
    }
}

/// What the socket says about a player.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    Online,
    InMatch,
    Offline,
}

/// Raw bytes: base64 text in JSON, a binary blob in MessagePack.
pub mod bytes_field {
    use base64::Engine as _;
    use serde::de::{SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(data))
        } else {
            serializer.serialize_bytes(data)
        }
    }

    /// Takes either form whatever the format claims: frames pass through serde's buffering
    /// (flatten, internal tags), which reports every format as human-readable.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_any(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("base64 text or bytes")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Vec<u8>, E> {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(E::custom)
        }

        fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(byte) = seq.next_element::<u8>()? {
                out.push(byte);
            }
            Ok(out)
        }
    }
}

/// What a room is, set by its creator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoomProperties {
    /// Free-form game data shown in the lobby (map, mode, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// Most members at once; the server's `realtime.max_players` when unset or above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_players: Option<u32>,
    /// Private rooms are not listed and are joined only with their join code.
    #[serde(default)]
    pub private: bool,
    /// Labels `list_rooms` filters on.
    #[serde(default)]
    pub labels: Vec<String>,
    /// State updates per second: updates within one tick reach each member as one
    /// `state_update` frame. Unset relays every update at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick_rate: Option<u32>,
}

/// A frame the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<Cid>,
    #[serde(flatten)]
    pub message: ServerMessage,
}

/// Replies and pushed events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Pong,
    SessionRefreshed {
        /// Unix seconds the new token expires at.
        expires_at: i64,
    },
    RoomList {
        rooms: Vec<RoomSummary>,
        /// Set when more rooms follow: the `cursor` of the next page.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_cursor: Option<String>,
    },
    /// You are in the room (after `create_room` or `join_room`).
    RoomJoined {
        room: RoomInfo,
    },
    /// You are out of the room (after `leave_room`).
    RoomLeft {
        room_id: String,
    },
    PlayerJoined {
        room_id: String,
        seq: u64,
        member: Member,
    },
    PlayerLeft {
        room_id: String,
        seq: u64,
        user_id: String,
    },
    HostChanged {
        room_id: String,
        seq: u64,
        host: String,
    },
    /// One or more relayed `player_state_update`s (several when the room has a tick rate).
    StateUpdate {
        room_id: String,
        updates: Vec<StateEntry>,
    },
    /// A `relay_packet` from another member.
    PacketReceived {
        room_id: String,
        seq: u64,
        from: String,
        #[serde(with = "bytes_field")]
        data: Vec<u8>,
        channel: u32,
        reliable: bool,
    },
    /// A `voice_frame` of another member, as sent (ciphertext).
    VoiceReceived {
        room_id: String,
        from: String,
        #[serde(with = "bytes_field")]
        data: Vec<u8>,
    },
    /// A `voice_key` of another member, as sent.
    VoiceKeyReceived {
        room_id: String,
        seq: u64,
        from: String,
        #[serde(with = "bytes_field")]
        data: Vec<u8>,
    },
    /// After `resume`: the rooms whose seats were kept (their missed events were just re-sent;
    /// `complete` is false when the replay buffer no longer held all of them) and those lost
    /// (grace period over or room closed: as if `room_left`).
    Resumed {
        rooms: Vec<ResumedRoom>,
        lost: Vec<String>,
    },
    QueueJoined {
        ticket: Ticket,
    },
    QueueLeft {
        ticket_ids: Vec<String>,
    },
    TicketStatus {
        ticket: Ticket,
    },
    /// Pushed to every player of a formed match; the room exists and holds their seats.
    MatchFound {
        ticket_id: String,
        room_id: String,
        mode: String,
        region: String,
        players: Vec<MatchedPlayer>,
    },
    /// The ticket waited its mode's whole timeout without a match and is gone.
    MatchmakingTimeout {
        ticket_id: String,
    },
    /// The stored message. `seq` is set on room channels: the room event number the message
    /// took (members got it in `message_received`).
    MessageSent {
        message: ChatMessage,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// A chat message from someone else. `seq` is set on room channels (room event order).
    MessageReceived {
        message: ChatMessage,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
    },
    /// Newest first; `next_cursor` fetches older messages.
    ChatHistory {
        channel: String,
        messages: Vec<ChatMessage>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_cursor: Option<String>,
    },
    /// A friend's status changed (pushed to accepted friends).
    PresenceChanged {
        user_id: String,
        status: PresenceStatus,
        /// Unix milliseconds.
        at: i64,
    },
    /// The player's friend list or pending requests changed; re-read `GET /api/v1/friends`.
    FriendsUpdated,
    /// WebRTC signaling from another member of the room (no `seq`: it is not a room event and
    /// is not replayed; peers renegotiate after a resume).
    Signal {
        room_id: String,
        from: String,
        signal: PeerSignal,
    },
    Error {
        error: ApiErrorBody,
    },
}

/// A room as a member sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub room_id: String,
    /// Present for the room's members only when the room is private.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_code: Option<String>,
    pub host: String,
    /// Oldest member first (the order host migration follows).
    pub members: Vec<Member>,
    pub properties: RoomProperties,
    /// The room's event counter: every membership change and relayed update takes the next one.
    pub seq: u64,
}

/// A room in the lobby listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoomSummary {
    pub room_id: String,
    pub host: String,
    pub players: u32,
    pub max_players: u32,
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<serde_json::Value>,
}

/// `GET /api/v1/rooms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoomListResponse {
    pub rooms: Vec<RoomSummary>,
    /// Set when more rooms follow: the `cursor` of the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: String,
    /// Stable within the room, from 2 up, never reused: `AeThexMultiplayerPeer` uses it as the
    /// member's Godot peer id (the host is shown as peer 1).
    pub peer_id: u32,
    /// Unix milliseconds.
    pub joined_at: i64,
}

/// A room whose seat `resume` took back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumedRoom {
    pub room: RoomInfo,
    pub complete: bool,
}

/// One relayed update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateEntry {
    pub from: String,
    pub seq: u64,
    pub state: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;
    use serde_json::json;

    #[test]
    fn frames_are_flat_objects_with_type_and_optional_cid() {
        let frame: ClientFrame = serde_json::from_value(
            json!({"type": "join_room", "cid": 5, "join_code": "K7QX2M", "future": 1}),
        )
        .unwrap();
        assert_eq!(frame.cid, Some(Cid::Number(5)));
        assert_eq!(
            frame.message,
            ClientMessage::JoinRoom {
                room_id: None,
                join_code: Some("K7QX2M".into())
            }
        );
        let ping: ClientFrame = serde_json::from_str(r#"{"type":"ping"}"#).unwrap();
        assert_eq!((ping.cid, ping.message), (None, ClientMessage::Ping));
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"nope"}"#).is_err());
        assert!(serde_json::from_str::<ClientFrame>(r#"{"cid":1}"#).is_err());
    }

    #[test]
    fn errors_carry_the_http_codes() {
        let frame = ServerFrame {
            cid: Some(Cid::Text("a".into())),
            message: ServerMessage::Error {
                error: ApiErrorBody {
                    code: ErrorCode::Forbidden,
                    message: "no".into(),
                    details: None,
                },
            },
        };
        assert_eq!(
            serde_json::to_value(&frame).unwrap(),
            json!({"type": "error", "cid": "a", "error": {"code": "forbidden", "message": "no"}})
        );
        let pushed = ServerFrame {
            cid: None,
            message: ServerMessage::HostChanged {
                room_id: "r".into(),
                seq: 3,
                host: "u".into(),
            },
        };
        assert_eq!(
            serde_json::to_value(&pushed).unwrap(),
            json!({"type": "host_changed", "room_id": "r", "seq": 3, "host": "u"})
        );
    }

    #[test]
    fn packets_are_base64_in_json_and_raw_bytes_in_msgpack() {
        let frame = ClientFrame {
            cid: None,
            message: ClientMessage::RelayPacket {
                room_id: "r".into(),
                data: vec![0, 1, 255],
                targets: None,
                channel: 2,
                reliable: false,
            },
        };
        let json = serde_json::to_value(&frame).unwrap();
        assert_eq!(
            json,
            json!({"type": "relay_packet", "room_id": "r", "data": "AAH/", "channel": 2, "reliable": false})
        );
        assert_eq!(serde_json::from_value::<ClientFrame>(json).unwrap(), frame);
        let packed = rmp_serde::to_vec_named(&frame).unwrap();
        assert!(packed.windows(3).any(|w| w == [0, 1, 255]));
        assert_eq!(
            rmp_serde::from_slice::<ClientFrame>(&packed).unwrap(),
            frame
        );
        let reliable_by_default: ClientFrame =
            serde_json::from_value(json!({"type": "relay_packet", "room_id": "r", "data": ""}))
                .unwrap();
        assert!(matches!(
            reliable_by_default.message,
            ClientMessage::RelayPacket {
                reliable: true,
                channel: 0,
                ..
            }
        ));
    }

    #[test]
    fn voice_frames_are_raw_bytes_in_msgpack_and_carry_no_seq() {
        let frame = ClientFrame {
            cid: None,
            message: ClientMessage::VoiceFrame {
                room_id: "r".into(),
                data: vec![7, 0, 255],
                targets: None,
            },
        };
        assert_eq!(
            serde_json::to_value(&frame).unwrap(),
            json!({"type": "voice_frame", "room_id": "r", "data": "BwD/"})
        );
        let packed = rmp_serde::to_vec_named(&frame).unwrap();
        assert!(packed.windows(3).any(|w| w == [7, 0, 255]));
        assert_eq!(
            rmp_serde::from_slice::<ClientFrame>(&packed).unwrap(),
            frame
        );
        let received = ServerFrame {
            cid: None,
            message: ServerMessage::VoiceReceived {
                room_id: "r".into(),
                from: "u".into(),
                data: vec![1],
            },
        };
        assert_eq!(
            serde_json::to_value(&received).unwrap(),
            json!({"type": "voice_received", "room_id": "r", "from": "u", "data": "AQ=="})
        );
        let key: ServerFrame = serde_json::from_value(json!({"type": "voice_key_received",
            "room_id": "r", "seq": 4, "from": "u", "data": "AQ=="}))
        .unwrap();
        assert!(matches!(
            key.message,
            ServerMessage::VoiceKeyReceived { seq: 4, .. }
        ));
    }

    #[test]
    fn chat_frames_carry_the_room_seq_only_on_room_channels() {
        let message = ChatMessage {
            message_id: "m".into(),
            channel: "dm:u".into(),
            from: "u".into(),
            body: "hi".into(),
            metadata: None,
            sent_at: 5,
        };
        let sent = ServerFrame {
            cid: Some(Cid::Number(9)),
            message: ServerMessage::MessageSent {
                message: message.clone(),
                seq: None,
            },
        };
        assert_eq!(
            serde_json::to_value(&sent).unwrap(),
            json!({"type": "message_sent", "cid": 9, "message": {"message_id": "m",
                "channel": "dm:u", "from": "u", "body": "hi", "sent_at": 5}})
        );
        let received: ServerFrame = serde_json::from_value(json!({"type": "message_received",
            "message": {"message_id": "m", "channel": "dm:u", "from": "u", "body": "hi",
            "sent_at": 5}, "seq": 4}))
        .unwrap();
        assert_eq!(
            received.message,
            ServerMessage::MessageReceived {
                message,
                seq: Some(4)
            }
        );
        let history: ClientFrame =
            serde_json::from_value(json!({"type": "chat_history", "channel": "room:r"})).unwrap();
        assert_eq!(
            history.message,
            ClientMessage::ChatHistory {
                channel: "room:r".into(),
                cursor: None,
                limit: None
            }
        );
    }

    #[test]
    fn signals_nest_their_kind_inside_the_frame() {
        let frame: ClientFrame = serde_json::from_value(json!({
            "type": "signal", "room_id": "r", "to": "u2",
            "signal": {"kind": "candidate", "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host",
                "sdp_mid": "0"}
        }))
        .unwrap();
        assert_eq!(
            frame.message,
            ClientMessage::Signal {
                room_id: "r".into(),
                to: "u2".into(),
                signal: PeerSignal::Candidate {
                    candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
                    sdp_mid: Some("0".into()),
                    sdp_mline_index: None,
                },
            }
        );
        let pushed = ServerFrame {
            cid: None,
            message: ServerMessage::Signal {
                room_id: "r".into(),
                from: "u1".into(),
                signal: PeerSignal::Offer { sdp: "v=0".into() },
            },
        };
        let value = serde_json::to_value(&pushed).unwrap();
        assert_eq!(
            value,
            json!({"type": "signal", "room_id": "r", "from": "u1",
                "signal": {"kind": "offer", "sdp": "v=0"}})
        );
        let packed = rmp_serde::to_vec_named(&pushed).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<ServerFrame>(&packed).unwrap(),
            pushed
        );
        assert!(serde_json::from_value::<ClientFrame>(json!({
            "type": "signal", "room_id": "r", "to": "u2", "signal": {"kind": "hello"}
        }))
        .is_err());
    }

    #[test]
    fn join_queue_is_flat_like_the_seed_example() {
        let frame: ClientFrame = serde_json::from_value(json!({
            "type": "join_queue", "cid": 1, "mode": "deathmatch", "region": "us-east",
            "skill_range": [1000, 1500]
        }))
        .unwrap();
        assert_eq!(
            frame.message,
            ClientMessage::JoinQueue(QueueRequest {
                mode: "deathmatch".into(),
                region: "us-east".into(),
                skill_range: [1000.0, 1500.0],
                party: vec![],
                properties: None,
            })
        );
    }
}
