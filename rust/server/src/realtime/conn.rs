//! One socket's outbound side, as rooms see it: a bounded queue of ready-to-send frames, and the
//! frames themselves, encoded lazily once per encoding however many sockets they go to.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, OnceLock};

use aethex_protocol::realtime::{close_code, Cid, ServerFrame, ServerMessage};
use aethex_protocol::{ApiErrorBody, ErrorCode};
use axum::extract::ws::{Message, Utf8Bytes};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How a socket's frames are written, negotiated on the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// JSON text frames (the default).
    Json,
    /// MessagePack binary frames: the same messages as maps with field names.
    MessagePack,
}

/// A server frame on its way to one or more sockets. The message is serialized the first time a
/// socket of each encoding needs it and the bytes are shared by every other recipient.
pub struct OutFrame {
    frame: ServerFrame,
    json: OnceLock<Utf8Bytes>,
    msgpack: OnceLock<Bytes>,
}

pub type Frame = Arc<OutFrame>;

impl OutFrame {
    pub fn message(&self) -> &ServerMessage {
        &self.frame.message
    }

    /// The WebSocket message for a socket speaking `encoding`.
    pub fn to_ws(&self, encoding: Encoding) -> Message {
        match encoding {
            Encoding::Json => Message::Text(self.json().clone()),
            Encoding::MessagePack => Message::Binary(self.msgpack().clone()),
        }
    }

    pub fn json(&self) -> &Utf8Bytes {
        self.json.get_or_init(|| {
            serde_json::to_string(&self.frame)
                .unwrap_or_else(|e| {
                    serialization_failed(e);
                    serde_json::to_string(&internal_error()).unwrap_or_default()
                })
                .into()
        })
    }

    pub fn msgpack(&self) -> &Bytes {
        self.msgpack.get_or_init(|| {
            rmp_serde::to_vec_named(&self.frame)
                .unwrap_or_else(|e| {
                    serialization_failed(e);
                    rmp_serde::to_vec_named(&internal_error()).unwrap_or_default()
                })
                .into()
        })
    }
}

// Only a non-string map key could fail, and no message has one.
fn serialization_failed(error: impl std::fmt::Display) {
    tracing::error!(%error, "serializing a realtime frame");
}

fn internal_error() -> ServerFrame {
    ServerFrame {
        cid: None,
        message: ServerMessage::Error {
            error: ApiErrorBody {
                code: ErrorCode::Internal,
                message: "internal server error".into(),
                details: None,
            },
        },
    }
}

/// The one place a server frame is made; the result is shared by every recipient.
pub fn encode(cid: Option<Cid>, message: ServerMessage) -> Frame {
    Arc::new(OutFrame {
        frame: ServerFrame { cid, message },
        json: OnceLock::new(),
        msgpack: OnceLock::new(),
    })
}

/// What one slot of a socket's outbound queue holds.
pub enum Outgoing {
    One(Frame),
    /// A replay after `resume`: one queue slot however many frames, so a long replay never
    /// looks like a slow reader (its length is bounded by the rooms' replay buffers).
    Many(Vec<Frame>),
}

pub struct ConnHandle {
    /// Unique per socket in this process.
    pub id: u64,
    pub project_id: String,
    pub user_id: String,
    tx: mpsc::Sender<Outgoing>,
    /// Cancelled to make the socket's task close with `close_code`.
    kill: CancellationToken,
    close_code: AtomicU16,
}

impl ConnHandle {
    pub fn new(id: u64, project_id: String, user_id: String, tx: mpsc::Sender<Outgoing>) -> Self {
        Self {
            id,
            project_id,
            user_id,
            tx,
            kill: CancellationToken::new(),
            close_code: AtomicU16::new(0),
        }
    }

    /// Queues a frame without waiting: a client whose queue is full is disconnected rather than
    /// slowing the room down.
    pub fn push(&self, frame: Frame) {
        self.queue(Outgoing::One(frame));
    }

    /// Queues several frames as one slot (see [`Outgoing::Many`]).
    pub fn push_many(&self, frames: Vec<Frame>) {
        if !frames.is_empty() {
            self.queue(Outgoing::Many(frames));
        }
    }

    fn queue(&self, outgoing: Outgoing) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(outgoing) {
            self.close(close_code::SLOW_CONSUMER);
        }
    }

    /// Asks the socket's task to close with `code` (the first code asked for wins).
    pub fn close(&self, code: u16) {
        let _ = self
            .close_code
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
        self.kill.cancel();
    }

    pub fn killed(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.kill.cancelled()
    }

    pub fn close_code(&self) -> u16 {
        self.close_code.load(Ordering::SeqCst)
    }
}
