//! Chat channels: parsing what a client names, the canonical key history is stored under, and
//! who may read and post.

use sqlx::Row;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::social::ensure_user_in_project;

/// Longest id after the `kind:` prefix (room, group and user ids are UUIDs).
const MAX_ID_LEN: usize = 64;

/// A channel as the caller names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// `room:<room id>`: members of the realtime room.
    Room(String),
    /// `dm:<user id>`: the caller and that player.
    Direct(String),
    /// `group:<group id>`: members of the social group.
    Group(String),
}

impl Channel {
    pub fn parse(name: &str) -> ApiResult<Self> {
        let invalid = || {
            ApiError::invalid(format!(
                "channel must be room:<room id>, dm:<user id> or group:<group id> (ids of 1 to \
                 {MAX_ID_LEN} letters, digits, '-' or '_')"
            ))
        };
        let (kind, id) = name.split_once(':').ok_or_else(invalid)?;
        if id.is_empty()
            || id.len() > MAX_ID_LEN
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        {
            return Err(invalid());
        }
        let id = id.to_owned();
        match kind {
            "room" => Ok(Channel::Room(id)),
            "dm" => Ok(Channel::Direct(id)),
            "group" => Ok(Channel::Group(id)),
            _ => Err(invalid()),
        }
    }

    /// The name as `viewer` sees it: a direct message is on `dm:<the other player>`.
    pub fn name(&self) -> String {
        match self {
            Channel::Room(id) => format!("room:{id}"),
            Channel::Direct(id) => format!("dm:{id}"),
            Channel::Group(id) => format!("group:{id}"),
        }
    }

    /// The key both sides of a channel share in storage: a direct message between `a` and `b`
    /// is `dm:<lower id>:<higher id>` whoever sends it.
    pub fn key(&self, caller: &str) -> String {
        match self {
            Channel::Direct(other) => {
                let (a, b) = if caller <= other.as_str() {
                    (caller, other.as_str())
                } else {
                    (other.as_str(), caller)
                };
                format!("dm:{a}:{b}")
            }
            _ => self.name(),
        }
    }

    /// [`Channel::authorize`] for reading history, which any node serves: a room on another
    /// node of the cluster is asked of it.
    pub async fn authorize_reader(
        &self,
        state: &AppState,
        project_id: &str,
        user_id: &str,
    ) -> ApiResult<()> {
        if let Channel::Room(room_id) = self {
            if !state.realtime.rooms.holds(project_id, room_id)
                && crate::realtime::remote::is_member_elsewhere(state, project_id, room_id, user_id)
                    .await
            {
                return Ok(());
            }
        }
        self.authorize(state, project_id, user_id).await
    }

    /// Checks that `user_id` may read and post here: a member of the room or group; for a
    /// direct message, another player of the project.
    pub async fn authorize(
        &self,
        state: &AppState,
        project_id: &str,
        user_id: &str,
    ) -> ApiResult<()> {
        match self {
            Channel::Room(room_id) => {
                if !state
                    .realtime
                    .rooms
                    .has_member(project_id, room_id, user_id)
                {
                    return Err(ApiError::forbidden("you are not a member of this room"));
                }
            }
            Channel::Group(group_id) => {
                // Missing group and non-member answer alike: the channel name reveals nothing.
                let row = sqlx::query(
                    "SELECT m.role FROM group_members m JOIN social_groups g ON g.id = m.group_id \
                     WHERE g.id = $1 AND g.project_id = $2 AND m.user_id = $3",
                )
                .bind(group_id)
                .bind(project_id)
                .bind(user_id)
                .fetch_optional(&state.db.read)
                .await?;
                let role: Option<String> = row.map(|r| r.try_get("role")).transpose()?;
                if !matches!(role.as_deref(), Some("member" | "admin" | "owner")) {
                    return Err(ApiError::forbidden("you are not a member of this group"));
                }
            }
            Channel::Direct(other) => {
                if other == user_id {
                    return Err(ApiError::forbidden("you cannot message yourself"));
                }
                ensure_user_in_project(state, project_id, other).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_dm_keys_are_symmetric() {
        assert_eq!(
            Channel::parse("room:r-1").unwrap(),
            Channel::Room("r-1".into())
        );
        assert_eq!(
            Channel::parse("group:g_2").unwrap(),
            Channel::Group("g_2".into())
        );
        let to_b = Channel::parse("dm:b").unwrap();
        let to_a = Channel::parse("dm:a").unwrap();
        assert_eq!(to_b.key("a"), "dm:a:b");
        assert_eq!(to_a.key("b"), "dm:a:b");
        assert_eq!(to_b.name(), "dm:b");
        for bad in [
            "", "room", "room:", "lobby:x", "dm:a:b", "room:a b", "dm:\0",
        ] {
            assert!(Channel::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Channel::parse(&format!("room:{}", "x".repeat(65))).is_err());
    }
}
