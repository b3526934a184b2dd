//! Chat (issue #8): messages on the realtime socket, stored in SQL, with history over the socket
//! and HTTP.
//!
//! - `channel`: `room:<id>`, `dm:<user id>`, `group:<id>`; their storage keys and who may use them.
//! - `store`: messages, history pages, mutes and settings in SQL.
//! - `filter`: the profanity filter.
//! - `http`: `/api/v1/chat/*`.
//!
//! A message is checked (access, limits, blocks), filtered, stored, then delivered live: on a
//! room channel through the room (it takes the room's next `seq`), otherwise to the recipients'
//! sockets on this node. Blocked players (either way) and players who muted the sender never
//! get it, live or in history. A direct message to a player who blocked the sender is refused
//! with 403 `forbidden` (as a friend request is), one to a player the sender blocked with 409
//! `conflict`: a silent drop would leave the sender talking into the void.

pub mod channel;
pub mod filter;
pub mod http;
pub mod store;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use aethex_protocol::realtime::{ChatHistoryPage, ChatMessage, ServerMessage};
use aethex_protocol::ErrorCode;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::app::AppState;
use crate::config::ChatConfig;
use crate::error::{ApiError, ApiResult};
use crate::realtime::conn::encode;
use channel::Channel;
use store::NewMessage;

pub use http::{router, ChatApi};

/// History page size when the client names none.
const DEFAULT_PAGE: u32 = 50;
/// How often idle rate-limit buckets are dropped so the key map does not grow forever.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

pub struct ChatService {
    /// Sends per `(project id, user id)`, over all of a player's sockets.
    limiter: Arc<DefaultKeyedRateLimiter<(String, String)>>,
}

impl ChatService {
    /// Needs a Tokio runtime: it starts the task pruning idle buckets (it ends with the service).
    pub fn new(config: &ChatConfig) -> Self {
        let rate = NonZeroU32::new(config.messages_per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.message_burst).unwrap_or(NonZeroU32::MIN);
        let limiter = Arc::new(RateLimiter::keyed(
            Quota::per_minute(rate).allow_burst(burst),
        ));
        let weak = Arc::downgrade(&limiter);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_INTERVAL);
            loop {
                tick.tick().await;
                let Some(limiter) = weak.upgrade() else { break };
                limiter.retain_recent();
            }
        });
        Self { limiter }
    }

    /// 429 `rate_limited` with `Retry-After` and `details.retry_after_ms` when the player sends
    /// too fast.
    fn check_rate(&self, project_id: &str, user_id: &str) -> ApiResult<()> {
        self.limiter
            .check_key(&(project_id.to_owned(), user_id.to_owned()))
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let mut error =
                    ApiError::rate_limited(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
                        .with_details(serde_json::json!({
                            "retry_after_ms": wait.as_millis().max(1) as u64
                        }));
                error.message = "sending messages too fast; retry later".into();
                error
            })
    }
}

/// Refuses bodies and metadata the chat does not carry.
fn validate(
    config: &ChatConfig,
    body: &str,
    metadata: Option<&serde_json::Value>,
) -> ApiResult<()> {
    if body.contains('\0') {
        return Err(ApiError::invalid("body must not contain NUL characters"));
    }
    if body.trim().is_empty() {
        return Err(ApiError::invalid("body must not be empty"));
    }
    if body.chars().count() > config.max_body_chars {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("body is limited to {} characters", config.max_body_chars),
        ));
    }
    if let Some(value) = metadata {
        if value.to_string().len() > config.max_metadata_bytes {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "metadata is limited to {} bytes of JSON",
                    config.max_metadata_bytes
                ),
            ));
        }
    }
    Ok(())
}

/// `send_message`: stores the message and delivers it. Returns it as the sender names the
/// channel, with the room `seq` it took on a room channel.
pub async fn send(
    state: &AppState,
    project_id: &str,
    sender: &str,
    channel_name: &str,
    body: String,
    metadata: Option<serde_json::Value>,
) -> ApiResult<(ChatMessage, Option<u64>)> {
    let channel = Channel::parse(channel_name)?;
    validate(&state.config.chat, &body, metadata.as_ref())?;
    state.chat.check_rate(project_id, sender)?;
    channel.authorize(state, project_id, sender).await?;
    if let Channel::Direct(recipient) = &channel {
        match store::blocks_between(&state.db, project_id, sender, recipient).await? {
            (_, true) => {
                return Err(ApiError::forbidden(
                    "this player does not accept messages from you",
                ))
            }
            (true, false) => {
                return Err(ApiError::conflict(
                    "you blocked this player; unblock them first",
                ))
            }
            (false, false) => {}
        }
    }
    let body = if store::settings(&state.db, project_id)
        .await?
        .profanity_filter
    {
        filter::censor(&body)
    } else {
        body
    };
    let message = ChatMessage {
        message_id: crate::db::new_id(),
        channel: channel.name(),
        from: sender.to_owned(),
        body,
        metadata,
        sent_at: state.clock.now_ms(),
    };
    store::insert(
        &state.db,
        &NewMessage {
            id: &message.message_id,
            project_id,
            channel_key: &channel.key(sender),
            sender_id: sender,
            body: &message.body,
            metadata: message.metadata.as_ref(),
            sent_at: message.sent_at,
        },
    )
    .await?;
    let mut skip = store::shielded_from(&state.db, project_id, sender).await?;
    skip.insert(sender.to_owned());
    let seq = deliver(state, project_id, &channel, &message, &skip).await?;
    Ok((message, seq))
}

/// Live delivery to the channel's online members but those in `skip`; serialized once.
async fn deliver(
    state: &AppState,
    project_id: &str,
    channel: &Channel,
    message: &ChatMessage,
    skip: &std::collections::HashSet<String>,
) -> ApiResult<Option<u64>> {
    let push = |recipients: &[String], message: ChatMessage| {
        let frame = encode(None, ServerMessage::MessageReceived { message, seq: None });
        for user in recipients.iter().filter(|u| !skip.contains(*u)) {
            state.realtime.users.send(project_id, user, &frame);
        }
    };
    match channel {
        // A sender who left the room between the check and now still has the message stored;
        // it just reaches no one live.
        Channel::Room(room_id) => {
            Ok(state
                .realtime
                .rooms
                .broadcast_chat(project_id, room_id, message.clone(), skip))
        }
        Channel::Direct(recipient) => {
            let received = ChatMessage {
                channel: Channel::Direct(message.from.clone()).name(),
                ..message.clone()
            };
            push(std::slice::from_ref(recipient), received);
            Ok(None)
        }
        Channel::Group(group_id) => {
            let members = store::group_members(&state.db, group_id).await?;
            push(&members, message.clone());
            Ok(None)
        }
    }
}

/// `chat_history` / `GET /api/v1/chat/{channel}/messages`: a page as `reader` may see it.
pub async fn history(
    state: &AppState,
    project_id: &str,
    reader: &str,
    channel_name: &str,
    cursor: Option<&str>,
    limit: Option<u32>,
) -> ApiResult<ChatHistoryPage> {
    let channel = Channel::parse(channel_name)?;
    let limit = crate::social::page_limit(
        limit,
        DEFAULT_PAGE.min(state.config.chat.max_page),
        state.config.chat.max_page,
    )?;
    channel.authorize_reader(state, project_id, reader).await?;
    let name = channel.name();
    let (messages, next_cursor) = store::page(
        &state.db,
        project_id,
        &channel.key(reader),
        &name,
        reader,
        cursor,
        limit,
    )
    .await?;
    Ok(ChatHistoryPage {
        channel: name,
        messages,
        next_cursor,
    })
}
