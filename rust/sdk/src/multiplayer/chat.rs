//! `Chat`: channels on the realtime socket (`room:<room id>`, `dm:<user id>`,
//! `group:<group id>`). Messages from others arrive as `message_received` on service
//! `social.chat`.

use std::sync::Arc;

use aethex_protocol::realtime::ClientMessage;

use super::{free_form, Realtime};
use crate::{RequestId, Value};

#[derive(Clone)]
pub struct Chat {
    realtime: Arc<Realtime>,
}

impl Chat {
    pub(crate) fn new(realtime: Arc<Realtime>) -> Self {
        Self { realtime }
    }

    /// Posts `body` (and optional `metadata`, any value) to `channel`. Completes with
    /// `{message: {message_id, channel, from, body, metadata, sent_at}}`: the stored message,
    /// `body` as the profanity filter left it.
    pub fn send(&self, channel: String, body: String, metadata: Option<Value>) -> RequestId {
        self.realtime.call(ClientMessage::SendMessage {
            channel,
            body,
            metadata: metadata.filter(|m| *m != Value::Nil).map(|m| free_form(&m)),
        })
    }

    /// A page of `channel`'s history, newest first. Completes with `{messages: [...], channel,
    /// next_cursor}`; pass `next_cursor` back for older messages (absent on the last page).
    pub fn history(
        &self,
        channel: String,
        cursor: Option<String>,
        limit: Option<u32>,
    ) -> RequestId {
        self.realtime.call(ClientMessage::ChatHistory {
            channel,
            cursor,
            limit,
        })
    }
}
