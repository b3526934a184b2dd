//! Chat in SQL: messages and their history pages, mutes, per-project settings, and who must not
//! see a sender's messages.

use std::collections::HashSet;

use aethex_protocol::realtime::{ChatMessage, ChatMute, ChatSettings};
use sqlx::Row;

use crate::db::{get_flag, Db};
use crate::error::{ApiError, ApiResult};

/// A message as stored, before it is named for a reader.
pub struct NewMessage<'a> {
    pub id: &'a str,
    pub project_id: &'a str,
    pub channel_key: &'a str,
    pub sender_id: &'a str,
    pub body: &'a str,
    pub metadata: Option<&'a serde_json::Value>,
    pub sent_at: i64,
}

pub async fn insert(db: &Db, m: &NewMessage<'_>) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO chat_messages (id, project_id, channel_key, sender_id, body, metadata, sent_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(m.id)
    .bind(m.project_id)
    .bind(m.channel_key)
    .bind(m.sender_id)
    .bind(m.body)
    .bind(m.metadata.map(|v| v.to_string()))
    .bind(m.sent_at)
    .execute(&db.write)
    .await?;
    Ok(())
}

/// Up to `limit` messages of the channel older than `cursor`, newest first, leaving out those
/// `reader` must not see (blocks either way, mutes); plus the cursor of the next page.
pub async fn page(
    db: &Db,
    project_id: &str,
    channel_key: &str,
    channel_name: &str,
    reader: &str,
    cursor: Option<&str>,
    limit: usize,
) -> ApiResult<(Vec<ChatMessage>, Option<String>)> {
    // The cursor is the id of the last message of the previous page: a position, not an offset,
    // so messages inserted meanwhile neither repeat nor hide older ones. Every string is a
    // well-formed cursor; one naming no message of this channel is 404.
    let (cursor_sent_at, cursor_id) = match cursor {
        None => (i64::MAX, ""),
        Some(id) => {
            let row = sqlx::query(
                "SELECT sent_at FROM chat_messages WHERE id = $1 AND project_id = $2 AND channel_key = $3",
            )
            .bind(id)
            .bind(project_id)
            .bind(channel_key)
            .fetch_optional(&db.read)
            .await?
            .ok_or_else(|| ApiError::not_found("the cursor names no message of this channel"))?;
            (row.try_get::<i64, _>("sent_at")?, id)
        }
    };
    let rows = sqlx::query(
        "SELECT m.id, m.sender_id, m.body, m.metadata, m.sent_at FROM chat_messages m \
         WHERE m.project_id = $1 AND m.channel_key = $2 \
         AND (m.sent_at < $3 OR (m.sent_at = $3 AND m.id < $4)) \
         AND NOT EXISTS (SELECT 1 FROM friend_edges f WHERE f.project_id = $1 AND f.state = 'blocked' \
           AND ((f.user_id = $5 AND f.other_id = m.sender_id) OR (f.user_id = m.sender_id AND f.other_id = $5))) \
         AND NOT EXISTS (SELECT 1 FROM chat_mutes u WHERE u.project_id = $1 AND u.user_id = $5 AND u.muted_id = m.sender_id) \
         ORDER BY m.sent_at DESC, m.id DESC LIMIT $6",
    )
    .bind(project_id)
    .bind(channel_key)
    .bind(cursor_sent_at)
    .bind(cursor_id)
    .bind(reader)
    .bind(limit as i64 + 1)
    .fetch_all(&db.read)
    .await?;
    let more = rows.len() > limit;
    let mut messages = Vec::with_capacity(rows.len().min(limit));
    for row in rows.into_iter().take(limit) {
        let metadata: Option<String> = row.try_get("metadata")?;
        messages.push(ChatMessage {
            message_id: row.try_get("id")?,
            channel: channel_name.to_owned(),
            from: row.try_get("sender_id")?,
            body: row.try_get("body")?,
            metadata: metadata
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .map_err(ApiError::internal)?,
            sent_at: row.try_get("sent_at")?,
        });
    }
    let next = if more {
        messages.last().map(|m| m.message_id.clone())
    } else {
        None
    };
    Ok((messages, next))
}

/// Players who must not get `sender`'s messages: blocked by or blocking the sender, or muting
/// them. One query per message, whatever the channel.
pub async fn shielded_from(db: &Db, project_id: &str, sender: &str) -> ApiResult<HashSet<String>> {
    let rows = sqlx::query(
        "SELECT user_id AS uid FROM friend_edges WHERE project_id = $1 AND other_id = $2 AND state = 'blocked' \
         UNION SELECT other_id AS uid FROM friend_edges WHERE project_id = $1 AND user_id = $2 AND state = 'blocked' \
         UNION SELECT user_id AS uid FROM chat_mutes WHERE project_id = $1 AND muted_id = $2",
    )
    .bind(project_id)
    .bind(sender)
    .fetch_all(&db.read)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| r.try_get("uid"))
        .collect::<Result<_, _>>()?)
}

/// Who blocked whom between `me` and `other`: `(I blocked them, they blocked me)`.
pub async fn blocks_between(
    db: &Db,
    project_id: &str,
    me: &str,
    other: &str,
) -> ApiResult<(bool, bool)> {
    let rows = sqlx::query(
        "SELECT user_id FROM friend_edges WHERE project_id = $1 AND state = 'blocked' \
         AND ((user_id = $2 AND other_id = $3) OR (user_id = $3 AND other_id = $2))",
    )
    .bind(project_id)
    .bind(me)
    .bind(other)
    .fetch_all(&db.read)
    .await?;
    let blockers: Vec<String> = rows
        .into_iter()
        .map(|r| r.try_get("user_id"))
        .collect::<Result<_, _>>()?;
    Ok((
        blockers.iter().any(|b| b == me),
        blockers.iter().any(|b| b == other),
    ))
}

/// Members (not pending invites or requests) of a group.
pub async fn group_members(db: &Db, group_id: &str) -> ApiResult<Vec<String>> {
    let rows = sqlx::query(
        "SELECT user_id FROM group_members WHERE group_id = $1 AND role IN ('member', 'admin', 'owner')",
    )
    .bind(group_id)
    .fetch_all(&db.read)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| r.try_get("user_id"))
        .collect::<Result<_, _>>()?)
}

pub async fn settings(db: &Db, project_id: &str) -> ApiResult<ChatSettings> {
    let row = sqlx::query("SELECT profanity_filter FROM chat_settings WHERE project_id = $1")
        .bind(project_id)
        .fetch_optional(&db.read)
        .await?;
    Ok(match row {
        Some(row) => ChatSettings {
            profanity_filter: get_flag(&row, "profanity_filter")?,
        },
        None => ChatSettings::default(),
    })
}

pub async fn put_settings(
    db: &Db,
    project_id: &str,
    settings: ChatSettings,
    now_ms: i64,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO chat_settings (project_id, profanity_filter, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (project_id) DO UPDATE SET profanity_filter = excluded.profanity_filter, \
         updated_at = excluded.updated_at",
    )
    .bind(project_id)
    .bind(i64::from(settings.profanity_filter))
    .bind(now_ms)
    .execute(&db.write)
    .await?;
    Ok(())
}

pub async fn mutes(db: &Db, project_id: &str, user_id: &str) -> ApiResult<Vec<ChatMute>> {
    let rows = sqlx::query(
        "SELECT muted_id, created_at FROM chat_mutes WHERE project_id = $1 AND user_id = $2 \
         ORDER BY created_at DESC, muted_id",
    )
    .bind(project_id)
    .bind(user_id)
    .fetch_all(&db.read)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(ChatMute {
                user_id: r.try_get("muted_id")?,
                muted_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

/// Mutes `muted` for `user_id`; muting again keeps the first mute. At most `max` mutes: the
/// muter's user row is locked first so concurrent mutes count one after another on PostgreSQL
/// (SQLite's single writer already serializes them).
pub async fn mute(
    db: &Db,
    project_id: &str,
    user_id: &str,
    muted: &str,
    max: u32,
    now_ms: i64,
) -> ApiResult<ChatMute> {
    let mut tx = db.write.begin().await?;
    sqlx::query(&format!(
        "SELECT id FROM users WHERE id = $1{}",
        db.lock_rows()
    ))
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await?;
    let existing = sqlx::query(
        "SELECT created_at FROM chat_mutes WHERE project_id = $1 AND user_id = $2 AND muted_id = $3",
    )
    .bind(project_id)
    .bind(user_id)
    .bind(muted)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = existing {
        return Ok(ChatMute {
            user_id: muted.to_owned(),
            muted_at: row.try_get("created_at")?,
        });
    }
    let count: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM chat_mutes WHERE project_id = $1 AND user_id = $2")
            .bind(project_id)
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
    if count >= i64::from(max) {
        return Err(ApiError::conflict(format!(
            "you muted the most players allowed ({max}); unmute someone first"
        )));
    }
    sqlx::query(
        "INSERT INTO chat_mutes (project_id, user_id, muted_id, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(project_id)
    .bind(user_id)
    .bind(muted)
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ChatMute {
        user_id: muted.to_owned(),
        muted_at: now_ms,
    })
}

pub async fn unmute(db: &Db, project_id: &str, user_id: &str, muted: &str) -> ApiResult<()> {
    sqlx::query("DELETE FROM chat_mutes WHERE project_id = $1 AND user_id = $2 AND muted_id = $3")
        .bind(project_id)
        .bind(user_id)
        .bind(muted)
        .execute(&db.write)
        .await?;
    Ok(())
}
