//! One socket's outbound side, as rooms see it: a bounded queue of ready-to-send frames.

use std::sync::atomic::{AtomicU16, Ordering};

use aethex_protocol::realtime::{close_code, Cid, ServerFrame, ServerMessage};
use axum::extract::ws::Utf8Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub struct ConnHandle {
    /// Unique per socket in this process.
    pub id: u64,
    pub project_id: String,
    pub user_id: String,
    tx: mpsc::Sender<Utf8Bytes>,
    /// Cancelled to make the socket's task close with `close_code`.
    kill: CancellationToken,
    close_code: AtomicU16,
}

impl ConnHandle {
    pub fn new(id: u64, project_id: String, user_id: String, tx: mpsc::Sender<Utf8Bytes>) -> Self {
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
    pub fn push(&self, frame: Utf8Bytes) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(frame) {
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

/// The one place a server frame becomes text; the result is shared by every recipient.
pub fn encode(cid: Option<Cid>, message: ServerMessage) -> Utf8Bytes {
    serde_json::to_string(&ServerFrame { cid, message })
        .unwrap_or_else(|e| {
            // Only a non-string map key could fail, and no message has one.
            tracing::error!(error = %e, "serializing a realtime frame");
            r#"{"type":"error","error":{"code":"internal","message":"internal server error"}}"#
                .to_owned()
        })
        .into()
}
