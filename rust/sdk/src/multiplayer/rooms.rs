//! The client's view of its joined rooms: members, host, the last event `seq` seen (what
//! `resume` asks from and what replayed events are de-duplicated against) and which room is
//! current. Read by callers (no I/O), written by the socket task.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use aethex_protocol::realtime::{Member, RoomInfo};

use super::lock;
use crate::codec::{from_json, plain_from_json};
use crate::Value;

struct Joined {
    info: RoomInfo,
    /// Highest event `seq` delivered; events at or below it are replays already seen.
    last_seq: u64,
    /// Order of joining: the highest is the current room.
    joined: u64,
}

/// Membership changes found when a resumed room's snapshot differs from the local view (events
/// the server's replay buffer no longer held).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Diff {
    pub left: Vec<String>,
    pub joined: Vec<Member>,
    pub host: Option<String>,
}

#[derive(Default)]
pub(crate) struct Rooms {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    rooms: HashMap<String, Joined>,
    joins: u64,
}

impl Rooms {
    pub fn current(&self) -> Option<String> {
        let inner = lock(&self.inner);
        inner
            .rooms
            .iter()
            .max_by_key(|(_, r)| r.joined)
            .map(|(id, _)| id.clone())
    }

    pub fn joined(&self) -> Vec<String> {
        let inner = lock(&self.inner);
        let mut ids: Vec<_> = inner.rooms.iter().map(|(id, r)| (r.joined, id)).collect();
        ids.sort();
        ids.into_iter().map(|(_, id)| id.clone()).collect()
    }

    pub fn info(&self, room_id: &str) -> Option<RoomInfo> {
        lock(&self.inner).rooms.get(room_id).map(|r| r.info.clone())
    }

    pub fn room_value(&self, room_id: &str) -> Option<Value> {
        self.info(room_id).map(|info| room_value(&info))
    }

    pub fn insert(&self, info: RoomInfo) {
        let mut inner = lock(&self.inner);
        inner.joins += 1;
        let joined = inner.joins;
        inner.rooms.insert(
            info.room_id.clone(),
            Joined {
                last_seq: info.seq,
                info,
                joined,
            },
        );
    }

    pub fn remove(&self, room_id: &str) -> bool {
        lock(&self.inner).rooms.remove(room_id).is_some()
    }

    /// Forgets every room (sign-out); returns their ids.
    pub fn clear(&self) -> Vec<String> {
        let ids = self.joined();
        lock(&self.inner).rooms.clear();
        ids
    }

    /// Whether the event `seq` of `room_id` is new (and records it). Events of rooms not joined
    /// are never new.
    pub fn accept(&self, room_id: &str, seq: u64) -> bool {
        let mut inner = lock(&self.inner);
        match inner.rooms.get_mut(room_id) {
            Some(room) if seq > room.last_seq => {
                room.last_seq = seq;
                true
            }
            _ => false,
        }
    }

    /// `accept`, then applies `change` to the room's members/host.
    pub fn apply(&self, room_id: &str, seq: u64, change: impl FnOnce(&mut RoomInfo)) -> bool {
        let mut inner = lock(&self.inner);
        match inner.rooms.get_mut(room_id) {
            Some(room) if seq > room.last_seq => {
                room.last_seq = seq;
                change(&mut room.info);
                true
            }
            _ => false,
        }
    }

    /// What `resume` sends: each room and the last seq seen.
    pub fn resume_map(&self) -> BTreeMap<String, u64> {
        lock(&self.inner)
            .rooms
            .iter()
            .map(|(id, r)| (id.clone(), r.last_seq))
            .collect()
    }

    /// Takes the snapshot `resumed` gave for a room (after its replay), returning what changed
    /// that no replayed event told.
    pub fn resumed(&self, info: RoomInfo) -> Diff {
        let mut inner = lock(&self.inner);
        let Some(room) = inner.rooms.get_mut(&info.room_id) else {
            return Diff::default();
        };
        let diff = Diff {
            left: room
                .info
                .members
                .iter()
                .filter(|m| !info.members.iter().any(|n| n.user_id == m.user_id))
                .map(|m| m.user_id.clone())
                .collect(),
            joined: info
                .members
                .iter()
                .filter(|n| !room.info.members.iter().any(|m| m.user_id == n.user_id))
                .cloned()
                .collect(),
            host: (room.info.host != info.host).then(|| info.host.clone()),
        };
        room.last_seq = room.last_seq.max(info.seq);
        room.info = info;
        diff
    }
}

/// A room as the signals and results show it (free-form `metadata` decoded with the codec).
pub(crate) fn room_value(info: &RoomInfo) -> Value {
    wire_value(&serde_json::to_value(info).expect("rooms serialize"))
}

/// Converts a wire JSON value for the game: free-form fields (`state`, `metadata`, a matched
/// player's `properties`) with the saves codec, the rest as plain values.
pub(crate) fn wire_value(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Object(map) => Value::Dictionary(
            map.iter()
                .map(|(key, item)| {
                    let value = match key.as_str() {
                        "state" | "metadata" => tagged(item),
                        "players" => players(item),
                        _ => wire_value(item),
                    };
                    (Value::String(key.clone()), value)
                })
                .collect(),
        ),
        serde_json::Value::Array(items) => Value::Array(items.iter().map(wire_value).collect()),
        other => plain_from_json(other),
    }
}

/// Codec-encoded data; plain JSON from a client that does not use the codec stays plain.
pub(crate) fn tagged(json: &serde_json::Value) -> Value {
    from_json(json).unwrap_or_else(|_| plain_from_json(json))
}

/// `match_found` players: `properties` is the ticket's free-form data.
fn players(json: &serde_json::Value) -> Value {
    let serde_json::Value::Array(items) = json else {
        return wire_value(json);
    };
    Value::Array(
        items
            .iter()
            .map(|item| match item {
                serde_json::Value::Object(map) => Value::Dictionary(
                    map.iter()
                        .map(|(key, v)| {
                            let value = if key == "properties" {
                                tagged(v)
                            } else {
                                wire_value(v)
                            };
                            (Value::String(key.clone()), value)
                        })
                        .collect(),
                ),
                other => wire_value(other),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aethex_protocol::realtime::RoomProperties;

    fn member(user: &str, peer_id: u32) -> Member {
        Member {
            user_id: user.into(),
            peer_id,
            joined_at: 0,
        }
    }

    fn room(id: &str, seq: u64, members: Vec<Member>) -> RoomInfo {
        RoomInfo {
            room_id: id.into(),
            join_code: None,
            host: members[0].user_id.clone(),
            members,
            properties: RoomProperties::default(),
            seq,
        }
    }

    #[test]
    fn the_current_room_is_the_one_joined_last_still_joined() {
        let rooms = Rooms::default();
        assert_eq!(rooms.current(), None);
        rooms.insert(room("a", 1, vec![member("u", 2)]));
        rooms.insert(room("b", 1, vec![member("u", 2)]));
        assert_eq!(rooms.current().as_deref(), Some("b"));
        assert_eq!(rooms.joined(), vec!["a".to_owned(), "b".to_owned()]);
        rooms.remove("b");
        assert_eq!(rooms.current().as_deref(), Some("a"));
    }

    #[test]
    fn events_are_new_once_and_in_order() {
        let rooms = Rooms::default();
        rooms.insert(room("a", 3, vec![member("u", 2)]));
        assert!(
            !rooms.accept("a", 3),
            "the join snapshot already covers seq 3"
        );
        assert!(rooms.accept("a", 4));
        assert!(!rooms.accept("a", 4), "a replay of 4 is a duplicate");
        assert!(rooms.accept("a", 6), "targeted sends leave gaps");
        assert!(!rooms.accept("a", 5));
        assert!(!rooms.accept("other", 9), "not joined");
        assert_eq!(rooms.resume_map().get("a"), Some(&6));
    }

    #[test]
    fn a_resumed_snapshot_reports_what_the_replay_missed() {
        let rooms = Rooms::default();
        rooms.insert(room("a", 3, vec![member("u", 2), member("v", 3)]));
        let mut after = room("a", 9, vec![member("v", 3), member("w", 4)]);
        after.host = "v".into();
        let diff = rooms.resumed(after);
        assert_eq!(diff.left, vec!["u".to_owned()]);
        assert_eq!(diff.joined, vec![member("w", 4)]);
        assert_eq!(diff.host.as_deref(), Some("v"));
        assert!(!rooms.accept("a", 9));
        assert!(rooms.accept("a", 10));
    }

    #[test]
    fn free_form_fields_keep_godot_types() {
        let state = crate::codec::to_json(&Value::Vector2([1.0, 2.0]));
        let json = serde_json::json!({"from": "u", "seq": 2, "state": state, "n": 1});
        let value = wire_value(&json);
        assert_eq!(value.get("state"), Some(&Value::Vector2([1.0, 2.0])));
        assert_eq!(value.get("n"), Some(&Value::Int(1)));
        let plain = wire_value(&serde_json::json!({"state": {"$t": "nonsense"}}));
        assert!(matches!(plain.get("state"), Some(Value::Dictionary(_))));
    }
}
