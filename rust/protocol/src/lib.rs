//! Wire types shared by the AeThex Cloud server, the client SDK and the mock server.
//!
//! Everything here is plain serde data: no I/O, no framework types, so every side of the wire
//! agrees on one definition.

pub mod analytics;
pub mod auth;
pub mod captcha;
pub mod error;
pub mod int;
pub mod matchmaking;
pub mod realtime;
pub mod saves;
pub mod signaling;
pub mod social;

pub use error::{ApiErrorBody, ErrorCode, ErrorEnvelope};

/// Header carrying a game's public client key on every player request.
pub const CLIENT_KEY_HEADER: &str = "x-aethex-key";
/// `Authorization` scheme for a game's trusted servers.
pub const SERVER_KEY_SCHEME: &str = "ServerKey";
/// Path prefix of every versioned endpoint.
pub const API_PREFIX: &str = "/api/v1";
