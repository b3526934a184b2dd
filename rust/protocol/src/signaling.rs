//! WebRTC signaling between members of a room, carried by the realtime socket, and the ICE
//! settings (`GET /api/v1/realtime/ice`) a client needs to open peer-to-peer connections.

use serde::{Deserialize, Serialize};

/// Path of the ICE settings endpoint.
pub const ICE_PATH: &str = "/api/v1/realtime/ice";

/// One WebRTC signaling message, relayed as is from one member of a room to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PeerSignal {
    /// A session description offering a connection.
    Offer { sdp: String },
    /// The session description answering an `offer`.
    Answer { sdp: String },
    /// A trickled ICE candidate (`candidate:...` of RFC 8839).
    Candidate {
        candidate: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mline_index: Option<u16>,
    },
    /// The sender gave up on a direct connection to the receiver: both use the socket relay.
    Fallback,
}

/// One STUN or TURN server, as `RTCIceServer` of the WebRTC API names its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN only: `expiry:user_id` (coturn's shared-secret REST scheme).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN only: base64 of HMAC-SHA1(shared secret, username).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `GET /api/v1/realtime/ice`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IceConfig {
    /// STUN servers first, then TURN servers; empty when the deployment configures none
    /// (peers then reach each other over host candidates only).
    pub ice_servers: Vec<IceServer>,
    /// Unix seconds the TURN credentials stop working; absent without TURN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}
