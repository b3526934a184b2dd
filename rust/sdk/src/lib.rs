//! AeThex Cloud client SDK core: all client logic in plain Rust, no Godot types.
//!
//! # Contract with the Godot binding
//! - [`Client`] owns a tokio runtime on background threads. Every network call returns a
//!   [`RequestId`] at once; nothing here blocks its caller or does I/O on the caller's thread.
//! - Results and pushes arrive as [`Event`]s on a queue the binding drains once per frame on
//!   Godot's main thread ([`Client::poll_events`]).
//! - Data crosses the boundary as [`Value`], a portable mirror of Godot's Variant.

pub mod codec;
pub mod value;

pub use value::Value;

/// Identifies one asynchronous call; its [`Event::Completed`] carries the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// An error as the SDK reports it: the server's stable code (or `network` / `timeout` for
/// failures before an answer) and a message for humans.
#[derive(Debug, Clone, PartialEq)]
pub struct SdkError {
    pub code: aethex_protocol::ErrorCode,
    pub message: String,
    /// HTTP status, 0 when no answer arrived.
    pub status: u16,
    /// Code-specific data from the server (e.g. `current` on `save_conflict`).
    pub details: Option<Value>,
}

/// What the binding receives each frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An asynchronous call finished. `Ok` holds the result data (usually a `Value::Dictionary`).
    Completed {
        request: RequestId,
        outcome: Result<Value, SdkError>,
    },
    /// A signal to emit on a service object, e.g. `service: "auth", name: "logged_in"`.
    Signal {
        service: &'static str,
        name: &'static str,
        args: Vec<Value>,
    },
}
