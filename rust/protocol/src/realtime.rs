//! The realtime socket (`GET /api/v1/realtime`): every message, client to server and back.
//!
//! One JSON object per WebSocket text frame, `{"type": "...", "cid": ..., ...fields}`. `cid` is
//! the client's optional correlation id; the server copies it onto the reply (or the error) to that
//! message and leaves it out of pushed events. New message types are new enum variants, so later
//! features (matchmaking, chat, presence, signaling) and a binary encoding of the same enums add
//! to this file without changing what is here.

use serde::{Deserialize, Serialize};

use crate::error::ApiErrorBody;

/// Path of the socket.
pub const REALTIME_PATH: &str = "/api/v1/realtime";

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
    /// Public rooms of the game, optionally only those with `label`; answered by `room_list`.
    ListRooms {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: String,
    /// Unix milliseconds.
    pub joined_at: i64,
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
}
