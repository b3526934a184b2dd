//! `AeThexCloud.social.chat`: chat channels on the SDK's realtime socket, through the same
//! request/result/signal machinery as the other services.

use std::rc::Rc;

use godot::builtin::{GString, Signal, VarDictionary, Variant};
use godot::classes::RefCounted;
use godot::obj::{Base, Gd};
use godot::register::{godot_api, GodotClass};

use crate::hub::{call_with, optional, page_limit, Hub};

/// Chat channels. Reach it as `AeThexCloud.social.chat`.
///
/// Channels are named `room:<room id>` (members of the room), `dm:<user id>` (direct messages)
/// and `group:<group id>` (members of the group). Messages are `{message_id, channel, from,
/// body, metadata, sent_at}`; `body` is what the server's profanity filter left, and messages of
/// players you blocked never arrive.
/// ```gdscript
/// AeThexCloud.social.chat.message_received.connect(_on_message)
/// await AeThexCloud.social.chat.send("room:" + room_id, "gg")
/// for message in await AeThexCloud.social.chat.history("room:" + room_id):
///     print(message.from, ": ", message.body)
/// ```
#[derive(GodotClass)]
#[class(no_init, base = RefCounted)]
pub struct AeThexChat {
    hub: Rc<Hub>,
    base: Base<RefCounted>,
}

#[godot_api]
impl AeThexChat {
    /// A message from someone else on one of your channels.
    #[signal]
    fn message_received(message: VarDictionary);

    /// Posts `body` to `channel`. Result: `{message}`, the stored message as the others see it
    /// (after the profanity filter).
    #[func]
    fn send(&self, channel: GString, body: GString) -> Signal {
        self.hub
            .call(|c| c.chat().send(channel.to_string(), body.to_string(), None))
    }

    /// As [method send], with `metadata` (any value, Godot types kept) delivered with the
    /// message (e.g. an item link, a team tag).
    #[func]
    fn send_with_metadata(&self, channel: GString, body: GString, metadata: Variant) -> Signal {
        call_with(&self.hub, &metadata, "metadata", |c, metadata| {
            c.chat()
                .send(channel.to_string(), body.to_string(), Some(metadata))
        })
    }

    /// A page of `channel`'s messages, newest first: `limit` of them (0: the server's default),
    /// older than `cursor` (a previous page's `next_cursor`). Result: `{messages, channel,
    /// next_cursor}`; iterating it visits the messages.
    #[func]
    fn history(
        &self,
        channel: GString,
        #[opt(default = "")] cursor: GString,
        #[opt(default = 0)] limit: i64,
    ) -> Signal {
        let limit = match page_limit(&self.hub, limit) {
            Ok(limit) => limit,
            Err(refused) => return refused,
        };
        let cursor = optional(&cursor);
        self.hub
            .call(|c| c.chat().history(channel.to_string(), cursor, limit))
    }
}

impl AeThexChat {
    pub fn create(hub: &Rc<Hub>) -> Gd<Self> {
        let chat = Gd::from_init_fn(|base| Self {
            hub: hub.clone(),
            base,
        });
        hub.add_service("social.chat", chat.clone().upcast());
        chat
    }
}
