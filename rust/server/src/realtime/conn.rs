//! One socket's outbound side, as rooms see it: a bounded queue of ready-to-send frames, and the
//! frames themselves, encoded lazily once per encoding however many sockets they go to.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, OnceLock};

use aethex_protocol::realtime::{close_code, Cid, ServerFrame, ServerMessage};
use aethex_protocol::{ApiErrorBody, ErrorCode};
use axum::extract::ws::{Message, Utf8Bytes};
use bytes::Bytes;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
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

/// What a frame says: a protocol message, or relayed state kept as the sender sent it.
pub enum Body {
    Message(ServerFrame),
    /// `state_update`, the relay's hot path: a JSON sender's state is never parsed into a tree.
    StateUpdate(StateUpdate),
}

impl From<ServerMessage> for Body {
    fn from(message: ServerMessage) -> Self {
        Body::Message(ServerFrame { cid: None, message })
    }
}

impl From<StateUpdate> for Body {
    fn from(update: StateUpdate) -> Self {
        Body::StateUpdate(update)
    }
}

/// [`ServerMessage::StateUpdate`] on the wire, with the states as received.
pub struct StateUpdate {
    pub room_id: String,
    pub updates: Vec<RelayedState>,
}

/// [`aethex_protocol::realtime::StateEntry`] on the wire.
#[derive(Clone, Serialize)]
pub struct RelayedState {
    pub from: String,
    pub seq: u64,
    pub state: StatePayload,
}

/// A relayed `state`: the JSON text of a JSON sender (validated, not parsed into a tree), or the
/// value a MessagePack sender sent.
#[derive(Clone)]
pub enum StatePayload {
    Json(Box<RawValue>),
    Value(serde_json::Value),
}

// JSON parsers refuse deep documents (serde_json at 128 levels, counting the frame around the
// state), so the relay must not forward a state a receiver could not read.

/// Whether arrays and objects in JSON text (already validated) nest at most `limit` deep:
/// counts brackets outside strings.
pub fn json_text_nests_within(text: &str, limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// The same for a parsed value.
pub fn value_nests_within(value: &serde_json::Value, limit: usize) -> bool {
    let children: Box<dyn Iterator<Item = &serde_json::Value>> = match value {
        serde_json::Value::Array(items) => Box::new(items.iter()),
        serde_json::Value::Object(map) => Box::new(map.values()),
        _ => return true,
    };
    limit > 0
        && children
            .into_iter()
            .all(|child| value_nests_within(child, limit - 1))
}

impl Serialize for StatePayload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            // serde_json copies raw text through; other formats need the tree (once per frame).
            StatePayload::Json(raw) if serializer.is_human_readable() => raw.serialize(serializer),
            StatePayload::Json(raw) => serde_json::from_str::<serde_json::Value>(raw.get())
                .map_err(serde::ser::Error::custom)?
                .serialize(serializer),
            StatePayload::Value(value) => value.serialize(serializer),
        }
    }
}

impl Serialize for StateUpdate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The same map the protocol's internally tagged `ServerFrame` makes.
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("type", "state_update")?;
        map.serialize_entry("room_id", &self.room_id)?;
        map.serialize_entry("updates", &self.updates)?;
        map.end()
    }
}

impl Serialize for Body {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Body::Message(frame) => frame.serialize(serializer),
            Body::StateUpdate(update) => update.serialize(serializer),
        }
    }
}

/// A server frame on its way to one or more sockets. The message is serialized the first time a
/// socket of each encoding needs it and the bytes are shared by every other recipient.
pub struct OutFrame {
    body: Body,
    json: OnceLock<Utf8Bytes>,
    msgpack: OnceLock<Bytes>,
}

pub type Frame = Arc<OutFrame>;

impl OutFrame {
    pub fn body(&self) -> &Body {
        &self.body
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
            serde_json::to_string(&self.body)
                .unwrap_or_else(|e| {
                    serialization_failed(e);
                    serde_json::to_string(&internal_error()).unwrap_or_default()
                })
                .into()
        })
    }

    pub fn msgpack(&self) -> &Bytes {
        self.msgpack.get_or_init(|| {
            rmp_serde::to_vec_named(&self.body)
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
pub fn encode(cid: Option<Cid>, message: impl Into<Body>) -> Frame {
    let body = match (message.into(), cid) {
        (Body::Message(frame), cid @ Some(_)) => Body::Message(ServerFrame { cid, ..frame }),
        (body, _) => body,
    };
    Arc::new(OutFrame {
        body,
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
