//! Rooms: membership, host migration and the state relay.
//!
//! All in memory, per node: nothing here touches the database, so a relayed update costs one
//! lock, one serialization and one queue push per member. Locks are `std` mutexes never held
//! across an await; the registry lock is never taken while a room's is held.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use aethex_protocol::realtime::{
    Member, RoomInfo, RoomProperties, RoomSummary, ServerMessage, StateEntry,
};
use aethex_protocol::ErrorCode;
use rand::Rng;

use super::conn::{encode, ConnHandle};
use crate::config::RealtimeConfig;
use crate::error::ApiError;

/// Most rooms one listing returns.
const MAX_LISTED: usize = 100;
/// Join codes avoid look-alike characters (0/O, 1/I) so players can read them out.
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const CODE_LEN: usize = 6;

#[derive(Default)]
pub struct Rooms {
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    rooms: HashMap<String, Arc<Room>>,
    /// `(project id, join code)` -> room id.
    codes: HashMap<(String, String), String>,
    /// `(project id, user id)` -> rooms the player is in, for `max_rooms_per_user`.
    memberships: HashMap<(String, String), u32>,
}

pub struct Room {
    id: String,
    project_id: String,
    join_code: Option<String>,
    properties: RoomProperties,
    max_players: u32,
    created_at: i64,
    /// A match's room: only these players may join (by id), and it is not listed.
    reserved: Option<Vec<String>>,
    state: Mutex<RoomState>,
}

struct RoomState {
    /// Oldest first; the first one is the host.
    members: Vec<Slot>,
    seq: u64,
    /// The next member's `peer_id`; 1 is kept for whoever hosts.
    next_peer_id: u32,
    /// Set when the last member left: a late join must not revive it.
    closed: bool,
    /// Updates waiting for the next tick, per recipient connection.
    pending: HashMap<u64, (Arc<ConnHandle>, Vec<StateEntry>)>,
}

struct Slot {
    member: Member,
    conn: Arc<ConnHandle>,
}

impl Room {
    fn info(&self, state: &RoomState) -> RoomInfo {
        RoomInfo {
            room_id: self.id.clone(),
            join_code: self.join_code.clone(),
            host: state.members[0].member.user_id.clone(),
            members: state.members.iter().map(|s| s.member.clone()).collect(),
            properties: self.properties.clone(),
            seq: state.seq,
        }
    }

    /// Serializes `message` once and queues it to every member but `except`.
    fn broadcast(&self, state: &RoomState, message: ServerMessage, except: Option<u64>) {
        let frame = encode(None, message);
        for slot in &state.members {
            if Some(slot.conn.id) != except {
                slot.conn.push(frame.clone());
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a room lock leaves plain data behind, still consistent enough to
    // serve the other members; never take the whole relay down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Rooms {
    /// Creates a room with `conn` as its only member and host.
    pub fn create(
        &self,
        config: &RealtimeConfig,
        conn: &Arc<ConnHandle>,
        properties: RoomProperties,
        now_ms: i64,
    ) -> Result<RoomInfo, ApiError> {
        let max_players = match properties.max_players {
            Some(0) => return Err(ApiError::invalid("max_players must be at least 1")),
            Some(n) => n.min(config.max_players),
            None => config.max_players,
        };
        if properties.tick_rate == Some(0) || properties.tick_rate > Some(config.max_tick_rate) {
            return Err(ApiError::invalid(format!(
                "tick_rate must be between 1 and {}",
                config.max_tick_rate
            )));
        }
        if properties.labels.len() > 16 || properties.labels.iter().any(|l| l.len() > 64) {
            return Err(ApiError::invalid(
                "at most 16 labels of at most 64 bytes each",
            ));
        }
        let mut registry = lock(&self.registry);
        registry.take_seat(config, conn)?;
        let join_code = properties
            .private
            .then(|| registry.fresh_code(&conn.project_id));
        let properties = RoomProperties {
            max_players: Some(max_players),
            ..properties
        };
        let room = Arc::new(Room {
            id: crate::db::new_id(),
            project_id: conn.project_id.clone(),
            join_code: join_code.clone(),
            max_players,
            created_at: now_ms,
            reserved: None,
            state: Mutex::new(RoomState {
                members: vec![Slot {
                    member: Member {
                        user_id: conn.user_id.clone(),
                        peer_id: 2,
                        joined_at: now_ms,
                    },
                    conn: conn.clone(),
                }],
                seq: 1,
                next_peer_id: 3,
                closed: false,
                pending: HashMap::new(),
            }),
            properties,
        });
        if let Some(code) = join_code {
            registry
                .codes
                .insert((room.project_id.clone(), code), room.id.clone());
        }
        registry.rooms.insert(room.id.clone(), room.clone());
        drop(registry);
        if let Some(rate) = room.properties.tick_rate {
            tokio::spawn(tick(Arc::downgrade(&room), rate));
        }
        let info = room.info(&lock(&room.state));
        Ok(info)
    }

    /// Joins by id (public rooms only) or by join code (any room of the project).
    pub fn join(
        &self,
        config: &RealtimeConfig,
        conn: &Arc<ConnHandle>,
        room_id: Option<&str>,
        join_code: Option<&str>,
        now_ms: i64,
    ) -> Result<RoomInfo, ApiError> {
        let mut registry = lock(&self.registry);
        let room = match (room_id, join_code) {
            (_, Some(code)) => registry
                .codes
                .get(&(conn.project_id.clone(), code.trim().to_ascii_uppercase()))
                .and_then(|id| registry.rooms.get(id)),
            (Some(id), None) => registry
                .rooms
                .get(id)
                .filter(|r| r.project_id == conn.project_id && r.join_code.is_none())
                .filter(|r| {
                    r.reserved
                        .as_ref()
                        .is_none_or(|p| p.contains(&conn.user_id))
                }),
            (None, None) => return Err(ApiError::invalid("give room_id or join_code")),
        }
        .cloned()
        .ok_or_else(|| ApiError::not_found("no such room (private rooms need their join code)"))?;
        registry.take_seat(config, conn)?;
        drop(registry);
        let joined = (|| {
            let mut state = lock(&room.state);
            if state.closed {
                return Err(ApiError::not_found("the room has closed"));
            }
            if state
                .members
                .iter()
                .any(|s| s.member.user_id == conn.user_id)
            {
                return Err(ApiError::conflict("already in this room"));
            }
            if state.members.len() >= room.max_players as usize {
                return Err(ApiError::conflict("the room is full"));
            }
            state.seq += 1;
            let member = Member {
                user_id: conn.user_id.clone(),
                peer_id: state.next_peer_id,
                joined_at: now_ms,
            };
            state.next_peer_id += 1;
            room.broadcast(
                &state,
                ServerMessage::PlayerJoined {
                    room_id: room.id.clone(),
                    seq: state.seq,
                    member: member.clone(),
                },
                None,
            );
            state.members.push(Slot {
                member,
                conn: conn.clone(),
            });
            Ok(room.info(&state))
        })();
        if joined.is_err() {
            lock(&self.registry).release_seat(conn);
        }
        joined
    }

    /// Removes `conn` from the room; false when it was not a member.
    pub fn leave(&self, conn: &ConnHandle, room_id: &str) -> bool {
        let Some(room) = lock(&self.registry).rooms.get(room_id).cloned() else {
            return false;
        };
        let mut state = lock(&room.state);
        let Some(pos) = state.members.iter().position(|s| s.conn.id == conn.id) else {
            return false;
        };
        state.members.remove(pos);
        state.pending.remove(&conn.id);
        state.seq += 1;
        room.broadcast(
            &state,
            ServerMessage::PlayerLeft {
                room_id: room.id.clone(),
                seq: state.seq,
                user_id: conn.user_id.clone(),
            },
            None,
        );
        if pos == 0 && !state.members.is_empty() {
            state.seq += 1;
            let host = state.members[0].member.user_id.clone();
            room.broadcast(
                &state,
                ServerMessage::HostChanged {
                    room_id: room.id.clone(),
                    seq: state.seq,
                    host,
                },
                None,
            );
        }
        let empty = state.members.is_empty();
        state.closed = empty;
        drop(state);
        let mut registry = lock(&self.registry);
        registry.release_seat(conn);
        if empty {
            registry.rooms.remove(&room.id);
            if let Some(code) = &room.join_code {
                registry
                    .codes
                    .remove(&(room.project_id.clone(), code.clone()));
            }
        }
        true
    }

    /// Relays one update to the room's other members (or `targets`, or also back with `echo`).
    pub fn relay(
        &self,
        conn: &ConnHandle,
        room_id: &str,
        state_value: serde_json::Value,
        targets: Option<&[String]>,
        echo: bool,
    ) -> Result<(), ApiError> {
        let not_member = || ApiError::forbidden("you are not a member of this room");
        let room = lock(&self.registry)
            .rooms
            .get(room_id)
            .cloned()
            .ok_or_else(not_member)?;
        let mut state = lock(&room.state);
        if !state.members.iter().any(|s| s.conn.id == conn.id) {
            return Err(not_member());
        }
        state.seq += 1;
        let entry = StateEntry {
            from: conn.user_id.clone(),
            seq: state.seq,
            state: state_value,
        };
        let recipients = state.members.iter().filter(|s| {
            (echo || s.conn.id != conn.id) && targets.is_none_or(|t| t.contains(&s.member.user_id))
        });
        if room.properties.tick_rate.is_some() {
            let batch: Vec<Arc<ConnHandle>> = recipients.map(|s| s.conn.clone()).collect();
            for member in batch {
                state
                    .pending
                    .entry(member.id)
                    .or_insert_with(|| (member.clone(), Vec::new()))
                    .1
                    .push(entry.clone());
            }
        } else {
            let frame = encode(
                None,
                ServerMessage::StateUpdate {
                    room_id: room.id.clone(),
                    updates: vec![entry],
                },
            );
            for slot in recipients {
                slot.conn.push(frame.clone());
            }
        }
        Ok(())
    }

    /// The room of a formed match: empty, with a seat for each of `players` (only they can join
    /// it, by id; it is not listed). The first to join hosts it. Returns its id.
    pub fn create_reserved(
        &self,
        project_id: &str,
        players: &[String],
        properties: RoomProperties,
        now_ms: i64,
    ) -> String {
        let room = Arc::new(Room {
            id: crate::db::new_id(),
            project_id: project_id.to_owned(),
            join_code: None,
            max_players: players.len() as u32,
            created_at: now_ms,
            reserved: Some(players.to_vec()),
            state: Mutex::new(RoomState {
                members: Vec::new(),
                seq: 0,
                next_peer_id: 2,
                closed: false,
                pending: HashMap::new(),
            }),
            properties,
        });
        lock(&self.registry)
            .rooms
            .insert(room.id.clone(), room.clone());
        if let Some(rate) = room.properties.tick_rate {
            tokio::spawn(tick(Arc::downgrade(&room), rate));
        }
        room.id.clone()
    }

    /// Closes a match's room nobody has joined (the matchmaker's claim deadline passed); true
    /// when it did.
    pub fn close_if_unclaimed(&self, room_id: &str) -> bool {
        let mut registry = lock(&self.registry);
        let Some(room) = registry.rooms.get(room_id).cloned() else {
            return false;
        };
        let mut state = lock(&room.state);
        if !state.members.is_empty() || state.closed {
            return false;
        }
        state.closed = true;
        registry.rooms.remove(room_id);
        true
    }

    /// Public rooms of a project, oldest first, optionally only those carrying `label`.
    pub fn list(&self, project_id: &str, label: Option<&str>) -> Vec<RoomSummary> {
        let mut rooms: Vec<Arc<Room>> = lock(&self.registry)
            .rooms
            .values()
            .filter(|r| r.project_id == project_id && r.join_code.is_none() && r.reserved.is_none())
            .filter(|r| label.is_none_or(|l| r.properties.labels.iter().any(|x| x == l)))
            .cloned()
            .collect();
        rooms.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        rooms
            .iter()
            .filter_map(|room| {
                let state = lock(&room.state);
                let host = state.members.first()?.member.user_id.clone();
                Some(RoomSummary {
                    room_id: room.id.clone(),
                    host,
                    players: state.members.len() as u32,
                    max_players: room.max_players,
                    labels: room.properties.labels.clone(),
                    metadata: room.properties.metadata.clone(),
                })
            })
            .take(MAX_LISTED)
            .collect()
    }
}

impl Registry {
    fn take_seat(&mut self, config: &RealtimeConfig, conn: &ConnHandle) -> Result<(), ApiError> {
        let seats = self
            .memberships
            .entry((conn.project_id.clone(), conn.user_id.clone()))
            .or_default();
        if *seats >= config.max_rooms_per_user {
            return Err(ApiError::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "a player may be in at most {} rooms at once",
                    config.max_rooms_per_user
                ),
            ));
        }
        *seats += 1;
        Ok(())
    }

    fn release_seat(&mut self, conn: &ConnHandle) {
        let key = (conn.project_id.clone(), conn.user_id.clone());
        if let Some(seats) = self.memberships.get_mut(&key) {
            *seats = seats.saturating_sub(1);
            if *seats == 0 {
                self.memberships.remove(&key);
            }
        }
    }

    fn fresh_code(&self, project_id: &str) -> String {
        let mut rng = rand::thread_rng();
        loop {
            let code: String = (0..CODE_LEN)
                .map(|_| CODE_ALPHABET[rng.gen_range(0..CODE_ALPHABET.len())] as char)
                .collect();
            if !self
                .codes
                .contains_key(&(project_id.to_owned(), code.clone()))
            {
                return code;
            }
        }
    }
}

/// Flushes a ticked room's pending updates: one `state_update` per member per tick. Ends with
/// the room.
async fn tick(room: Weak<Room>, rate: u32) {
    let mut interval = tokio::time::interval(Duration::from_secs(1) / rate);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(room) = room.upgrade() else { return };
        let pending = {
            let mut state = lock(&room.state);
            if state.closed {
                return;
            }
            std::mem::take(&mut state.pending)
        };
        for (_, (conn, updates)) in pending {
            conn.push(encode(
                None,
                ServerMessage::StateUpdate {
                    room_id: room.id.clone(),
                    updates,
                },
            ));
        }
    }
}
