//! Voice over the relay: members' encrypted Opus frames and their key-agreement messages,
//! forwarded to the other members of the sender's room without being read. The server holds no
//! voice key; what it can and cannot learn is in docs/sdk.md ("Voice", threat model).
//!
//! Frames go out at once and unsequenced (a late frame is dropped by the receiver's jitter
//! buffer anyway); key messages are room events, so a member who resumes after a drop still
//! gets the keys it missed. Members on other nodes are reached the way relay packets reach them
//! (`super::remote`).

use aethex_protocol::realtime::ServerMessage;

use super::conn::ConnHandle;
use crate::app::AppState;
use crate::error::ApiError;

/// Relays one `voice_frame` of `conn` as `voice_received`.
pub fn relay_frame(
    state: &AppState,
    conn: &ConnHandle,
    room_id: String,
    data: Vec<u8>,
    targets: Option<Vec<String>>,
) -> Result<(), ApiError> {
    let message = ServerMessage::VoiceReceived {
        room_id: room_id.clone(),
        from: conn.user_id.clone(),
        data,
    };
    state
        .realtime
        .rooms
        .relay_unsequenced(conn, &room_id, targets.as_deref(), message)
}

/// Relays one `voice_key` of `conn` as `voice_key_received`.
pub fn relay_key(
    state: &AppState,
    conn: &ConnHandle,
    room_id: String,
    data: Vec<u8>,
    targets: Option<Vec<String>>,
) -> Result<(), ApiError> {
    state.realtime.rooms.relay_sequenced(
        conn,
        &room_id,
        targets.as_deref(),
        |room_id, from, seq| ServerMessage::VoiceKeyReceived {
            room_id,
            seq,
            from,
            data,
        },
    )
}
