//! Rooms: membership, host migration, the state and packet relay, and resume after a drop.
//!
//! All in memory, per node: nothing here touches the database, so a relayed update costs one
//! lock, one frame (serialized lazily, once per encoding) and one queue push per member. Locks
//! are `std` mutexes never held across an await; the registry lock is never taken while a room's
//! is held.
//!
//! Every room event goes through [`Room::publish`]: it takes the room's next `seq`, reaches the
//! event's audience and records it in the room's bounded replay buffer, from which a member
//! whose socket dropped gets what it missed when it resumes within the grace period.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use aethex_protocol::realtime::{
    ChatMessage, Member, ResumedRoom, RoomInfo, RoomProperties, RoomSummary, ServerMessage,
};
use aethex_protocol::signaling::PeerSignal;
use aethex_protocol::ErrorCode;
use rand::Rng;

use super::conn::{encode, Body, ConnHandle, Frame, RelayedState, StatePayload, StateUpdate};
use super::failover::{Replica, SeatReplica};
use crate::config::RealtimeConfig;
use crate::error::ApiError;

/// Most rooms one listing returns.
pub const MAX_LISTED: usize = 100;
/// Join codes avoid look-alike characters (0/O, 1/I) so players can read them out.
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const CODE_LEN: usize = 6;

/// Told the id of a room whose membership changed (or that closed).
type ChangeHook = Box<dyn Fn(&str) + Send + Sync>;

#[derive(Default)]
pub struct Rooms {
    registry: Mutex<Registry>,
    /// Set in a cluster: the failover replicates the rooms it is told about.
    on_change: OnceLock<ChangeHook>,
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
    pending: HashMap<u64, (Arc<ConnHandle>, Vec<RelayedState>)>,
    replay: Replay,
}

struct Slot {
    member: Member,
    conn: Arc<ConnHandle>,
    /// The socket dropped: the seat waits for a `resume` and receives nothing meanwhile.
    away: bool,
    /// The `seq` of the member's own `player_joined`: earlier events were not theirs.
    joined_seq: u64,
}

/// Who a room event is for (among the members at the time).
#[derive(Debug, Clone)]
pub enum Audience {
    All,
    AllBut(String),
    /// These user ids.
    Only(Vec<String>),
}

impl Audience {
    fn includes(&self, user_id: &str) -> bool {
        match self {
            Audience::All => true,
            Audience::AllBut(except) => except != user_id,
            Audience::Only(users) => users.iter().any(|u| u == user_id),
        }
    }

    /// The audience of a relayed message: `targets` (or everyone), the sender only with `echo`.
    fn relay(sender: &str, targets: Option<&[String]>, echo: bool, state: &RoomState) -> Self {
        match targets {
            Some(targets) => Audience::Only(
                state
                    .members
                    .iter()
                    .map(|s| &s.member.user_id)
                    .filter(|u| (echo || *u != sender) && targets.contains(u))
                    .cloned()
                    .collect(),
            ),
            None if echo => Audience::All,
            None => Audience::AllBut(sender.to_owned()),
        }
    }
}

/// The room's last published events, for members who resume.
struct Replay {
    events: VecDeque<Recorded>,
    capacity: usize,
    /// The highest `seq` pushed out to make room (0: none yet).
    evicted_through: u64,
}

struct Recorded {
    seq: u64,
    audience: Audience,
    /// The very frame the members got (a ticked room's update: its one entry).
    frame: Frame,
}

impl Replay {
    fn new(capacity: usize) -> Self {
        Self {
            events: VecDeque::new(),
            capacity,
            evicted_through: 0,
        }
    }

    fn record(&mut self, seq: u64, audience: Audience, frame: Frame) {
        if self.capacity == 0 {
            self.evicted_through = seq;
            return;
        }
        if self.events.len() == self.capacity {
            if let Some(old) = self.events.pop_front() {
                self.evicted_through = old.seq;
            }
        }
        self.events.push_back(Recorded {
            seq,
            audience,
            frame,
        });
    }

    /// `user_id`'s events after `after`, and whether none of them had been evicted.
    fn since(&self, after: u64, user_id: &str) -> (Vec<Frame>, bool) {
        let frames = self
            .events
            .iter()
            .filter(|e| e.seq > after && e.audience.includes(user_id))
            .map(|e| e.frame.clone())
            .collect();
        (frames, self.evicted_through <= after)
    }
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

    /// Every room event goes through here (membership, state, packets, chat): takes the next
    /// `seq`, builds the event with it, queues it to the audience's connected members (in a
    /// ticked room a `state_update` waits for the tick; anything else flushes the waiting
    /// updates first so each member sees `seq` in order) and, when `replayable`, records it for
    /// members who resume. Returns the event's `seq`.
    fn publish<B: Into<Body>>(
        &self,
        state: &mut RoomState,
        audience: Audience,
        replayable: bool,
        build: impl FnOnce(u64) -> B,
    ) -> u64 {
        state.seq += 1;
        let seq = state.seq;
        let frame = encode(None, build(seq));
        let receives = |slot: &Slot| !slot.away && audience.includes(&slot.member.user_id);
        match frame.body() {
            Body::StateUpdate(StateUpdate { updates, .. })
                if self.properties.tick_rate.is_some() =>
            {
                let batch: Vec<Arc<ConnHandle>> = state
                    .members
                    .iter()
                    .filter(|s| receives(s))
                    .map(|s| s.conn.clone())
                    .collect();
                for conn in batch {
                    state
                        .pending
                        .entry(conn.id)
                        .or_insert_with(|| (conn.clone(), Vec::new()))
                        .1
                        .extend(updates.iter().cloned());
                }
            }
            _ => {
                if !state.pending.is_empty() {
                    self.flush(state);
                }
                for slot in state.members.iter().filter(|s| receives(s)) {
                    slot.conn.push(frame.clone());
                }
            }
        }
        if replayable {
            state.replay.record(seq, audience, frame);
        }
        seq
    }

    /// Sends a ticked room's waiting updates: one `state_update` per member.
    fn flush(&self, state: &mut RoomState) {
        for (_, (conn, updates)) in state.pending.drain() {
            conn.push(encode(
                None,
                StateUpdate {
                    room_id: self.id.clone(),
                    updates,
                },
            ));
        }
    }

    /// Removes the member at `pos` and announces it (and the new host when it was the host).
    fn remove_member(&self, state: &mut RoomState, pos: usize) {
        let slot = state.members.remove(pos);
        state.pending.remove(&slot.conn.id);
        let room_id = self.id.clone();
        self.publish(state, Audience::All, true, |seq| {
            ServerMessage::PlayerLeft {
                room_id,
                seq,
                user_id: slot.member.user_id,
            }
        });
        if pos == 0 && !state.members.is_empty() {
            let host = state.members[0].member.user_id.clone();
            let room_id = self.id.clone();
            self.publish(state, Audience::All, true, |seq| {
                ServerMessage::HostChanged { room_id, seq, host }
            });
        }
        state.closed = state.members.is_empty();
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
                    away: false,
                    joined_seq: 1,
                }],
                seq: 1,
                next_peer_id: 3,
                closed: false,
                pending: HashMap::new(),
                replay: Replay::new(config.replay_buffer),
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
        self.changed(&room.id);
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
                return Err(ApiError::conflict(
                    "already in this room (after a drop, take the seat back with resume)",
                ));
            }
            if state.members.len() >= room.max_players as usize {
                return Err(ApiError::conflict("the room is full"));
            }
            let member = Member {
                user_id: conn.user_id.clone(),
                peer_id: state.next_peer_id,
                joined_at: now_ms,
            };
            state.next_peer_id += 1;
            let (room_id, joiner) = (room.id.clone(), member.clone());
            let joined_seq = room.publish(&mut state, Audience::All, true, |seq| {
                ServerMessage::PlayerJoined {
                    room_id,
                    seq,
                    member: joiner,
                }
            });
            state.members.push(Slot {
                member,
                conn: conn.clone(),
                away: false,
                joined_seq,
            });
            Ok(room.info(&state))
        })();
        match &joined {
            Ok(_) => self.changed(&room.id),
            Err(_) => lock(&self.registry).release_seat(conn),
        }
        joined
    }

    /// Removes `conn` from the room at once; false when it was not a member.
    pub fn leave(&self, conn: &ConnHandle, room_id: &str) -> bool {
        let Some(room) = lock(&self.registry).rooms.get(room_id).cloned() else {
            return false;
        };
        let mut state = lock(&room.state);
        let Some(pos) = state.members.iter().position(|s| s.conn.id == conn.id) else {
            return false;
        };
        room.remove_member(&mut state, pos);
        let empty = state.closed;
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
        drop(registry);
        self.changed(&room.id);
        true
    }

    /// `conn` dropped: its seat in the room waits for a `resume` and the others see nothing yet.
    /// False when `conn` does not hold a seat there (any more).
    pub fn set_away(&self, conn: &ConnHandle, room_id: &str) -> bool {
        let Some(room) = lock(&self.registry).rooms.get(room_id).cloned() else {
            return false;
        };
        let mut state = lock(&room.state);
        let Some(slot) = state.members.iter_mut().find(|s| s.conn.id == conn.id) else {
            return false;
        };
        slot.away = true;
        // Its waiting updates are in the replay buffer.
        state.pending.remove(&conn.id);
        drop(state);
        self.changed(&room.id);
        true
    }

    /// Gives the player's seat in the room to `conn` (a new socket): queues the events the player
    /// was sent after `last_seq` (and after joining) again, in order, then the room as it is now.
    /// `None` when the player holds no seat there (grace over, room closed, never a member).
    /// A still-open older socket of the player loses the seat (its connection is presumed dead).
    pub fn resume(
        &self,
        conn: &Arc<ConnHandle>,
        room_id: &str,
        last_seq: u64,
    ) -> Option<ResumedRoom> {
        let room = lock(&self.registry)
            .rooms
            .get(room_id)
            .filter(|r| r.project_id == conn.project_id)
            .cloned()?;
        let mut state = lock(&room.state);
        let state = &mut *state;
        let slot = state
            .members
            .iter_mut()
            .find(|s| s.member.user_id == conn.user_id)?;
        let (frames, complete) = state
            .replay
            .since(last_seq.max(slot.joined_seq), &conn.user_id);
        state.pending.remove(&slot.conn.id);
        slot.conn = conn.clone();
        slot.away = false;
        // Queued under the room lock: nothing published later can overtake the replay.
        conn.push_many(frames);
        let resumed = ResumedRoom {
            room: room.info(state),
            complete,
        };
        self.changed(&room.id);
        Some(resumed)
    }

    /// Relays one update to the room's other members (or `targets`, or also back with `echo`).
    pub fn relay(
        &self,
        conn: &ConnHandle,
        room_id: &str,
        state_value: StatePayload,
        targets: Option<&[String]>,
        echo: bool,
    ) -> Result<(), ApiError> {
        self.with_member(conn, room_id, |room, state| {
            let audience = Audience::relay(&conn.user_id, targets, echo, state);
            let (room_id, from) = (room.id.clone(), conn.user_id.clone());
            room.publish(state, audience, true, |seq| StateUpdate {
                room_id,
                updates: vec![RelayedState {
                    from,
                    seq,
                    state: state_value,
                }],
            });
        })
    }

    /// Relays one `relay_packet` at once (never batched: Godot's own tick paces them) to
    /// `targets` or every other member; only reliable packets are kept for replay.
    pub fn relay_packet(
        &self,
        conn: &ConnHandle,
        room_id: &str,
        data: Vec<u8>,
        targets: Option<&[String]>,
        channel: u32,
        reliable: bool,
    ) -> Result<(), ApiError> {
        self.with_member(conn, room_id, |room, state| {
            let audience = Audience::relay(&conn.user_id, targets, false, state);
            let (room_id, from) = (room.id.clone(), conn.user_id.clone());
            room.publish(state, audience, reliable, |seq| {
                ServerMessage::PacketReceived {
                    room_id,
                    seq,
                    from,
                    data,
                    channel,
                    reliable,
                }
            });
        })
    }

    /// Hands a WebRTC signal from `conn` to the member `to` of the same room, at once and to
    /// that member only. It is not a room event (no `seq`, not replayed): a member who was away
    /// renegotiates after resuming, so a signal to an away seat is dropped.
    pub fn signal(
        &self,
        conn: &ConnHandle,
        room_id: &str,
        to: &str,
        signal: PeerSignal,
    ) -> Result<(), ApiError> {
        if to == conn.user_id {
            return Err(ApiError::invalid(
                "a signal goes to another member, not to yourself",
            ));
        }
        self.with_member(conn, room_id, |room, state| {
            let target = state
                .members
                .iter()
                .find(|s| s.member.user_id == to)
                .ok_or_else(|| ApiError::not_found(format!("{to} is not a member of this room")))?;
            if !target.away {
                target.conn.push(encode(
                    None,
                    ServerMessage::Signal {
                        room_id: room.id.clone(),
                        from: conn.user_id.clone(),
                        signal,
                    },
                ));
            }
            Ok(())
        })?
    }

    /// Sends `message` at once to `targets` or every other connected member, outside the room's
    /// event order: no `seq`, nothing recorded for replay. For voice frames, worthless by the
    /// time a member resumes.
    pub fn relay_unsequenced(
        &self,
        conn: &ConnHandle,
        room_id: &str,
        targets: Option<&[String]>,
        message: ServerMessage,
    ) -> Result<(), ApiError> {
        self.with_member(conn, room_id, |_, state| {
            let audience = Audience::relay(&conn.user_id, targets, false, state);
            let frame = encode(None, message);
            for slot in state
                .members
                .iter()
                .filter(|s| !s.away && audience.includes(&s.member.user_id))
            {
                slot.conn.push(frame.clone());
            }
        })
    }

    /// Publishes `build(room id, sender, seq)` to `targets` or every other member as a room
    /// event: in order with the membership changes, and replayed after `resume`.
    pub fn relay_sequenced(
        &self,
        conn: &ConnHandle,
        room_id: &str,
        targets: Option<&[String]>,
        build: impl FnOnce(String, String, u64) -> ServerMessage,
    ) -> Result<(), ApiError> {
        self.with_member(conn, room_id, |room, state| {
            let audience = Audience::relay(&conn.user_id, targets, false, state);
            let (room_id, from) = (room.id.clone(), conn.user_id.clone());
            room.publish(state, audience, true, |seq| build(room_id, from, seq));
        })
    }

    /// Runs `f` on the room, locked, when `conn` holds a seat in it.
    fn with_member<R>(
        &self,
        conn: &ConnHandle,
        room_id: &str,
        f: impl FnOnce(&Room, &mut RoomState) -> R,
    ) -> Result<R, ApiError> {
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
        Ok(f(&room, &mut state))
    }

    /// Rooms the player holds a seat in on this node (what makes them `in_match`).
    pub fn seats(&self, project_id: &str, user_id: &str) -> u32 {
        lock(&self.registry)
            .memberships
            .get(&(project_id.to_owned(), user_id.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Whether the room is on this node.
    pub fn contains(&self, room_id: &str) -> bool {
        lock(&self.registry).rooms.contains_key(room_id)
    }

    /// Ids of every room on this node.
    pub fn ids(&self) -> Vec<String> {
        lock(&self.registry).rooms.keys().cloned().collect()
    }

    /// Whether `user_id` (from any of their sockets) is a member of the project's room.
    pub fn has_member(&self, project_id: &str, room_id: &str, user_id: &str) -> bool {
        let Some(room) = lock(&self.registry).rooms.get(room_id).cloned() else {
            return false;
        };
        room.project_id == project_id
            && lock(&room.state)
                .members
                .iter()
                .any(|s| s.member.user_id == user_id)
    }

    /// Chat on a room channel: published like any room event (next `seq`, replayed to members
    /// who resume) as `message_received` to every member but the sender and those in `skip`.
    /// None when `message.from` is not a member (any more).
    pub fn broadcast_chat(
        &self,
        project_id: &str,
        room_id: &str,
        message: ChatMessage,
        skip: &HashSet<String>,
    ) -> Option<u64> {
        let room = lock(&self.registry).rooms.get(room_id).cloned()?;
        let mut state = lock(&room.state);
        if room.project_id != project_id
            || !state
                .members
                .iter()
                .any(|s| s.member.user_id == message.from)
        {
            return None;
        }
        let audience = Audience::Only(
            state
                .members
                .iter()
                .map(|s| &s.member.user_id)
                .filter(|u| **u != message.from && !skip.contains(*u))
                .cloned()
                .collect(),
        );
        Some(room.publish(&mut state, audience, true, |seq| {
            ServerMessage::MessageReceived {
                message,
                seq: Some(seq),
            }
        }))
    }

    /// The room of a formed match: empty, with a seat for each of `players` (only they can join
    /// it, by id; it is not listed). The first to join hosts it. Returns its id.
    pub fn create_reserved(
        &self,
        config: &RealtimeConfig,
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
                replay: Replay::new(config.replay_buffer),
            }),
            properties,
        });
        lock(&self.registry)
            .rooms
            .insert(room.id.clone(), room.clone());
        if let Some(rate) = room.properties.tick_rate {
            tokio::spawn(tick(Arc::downgrade(&room), rate));
        }
        self.changed(&room.id);
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
        drop((state, registry));
        self.changed(room_id);
        true
    }

    /// Public rooms of a project, optionally only those carrying `label`, oldest first then by
    /// id, after `after` (a room's `(created_at, room id)`: a key total across nodes, since room
    /// ids are unique), at most `limit`. Each comes with its `created_at`, so the listings of
    /// several nodes merge into the same order.
    pub fn list_after(
        &self,
        project_id: &str,
        label: Option<&str>,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> Vec<(i64, RoomSummary)> {
        let mut rooms: Vec<Arc<Room>> = lock(&self.registry)
            .rooms
            .values()
            .filter(|r| r.project_id == project_id && r.join_code.is_none() && r.reserved.is_none())
            .filter(|r| label.is_none_or(|l| r.properties.labels.iter().any(|x| x == l)))
            .filter(|r| after.is_none_or(|key| (r.created_at, r.id.as_str()) > key))
            .cloned()
            .collect();
        rooms.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        rooms
            .iter()
            .filter_map(|room| {
                let state = lock(&room.state);
                let host = state.members.first()?.member.user_id.clone();
                let summary = RoomSummary {
                    room_id: room.id.clone(),
                    host,
                    players: state.members.len() as u32,
                    max_players: room.max_players,
                    labels: room.properties.labels.clone(),
                    metadata: room.properties.metadata.clone(),
                };
                Some((room.created_at, summary))
            })
            .take(limit)
            .collect()
    }

    /// Whether the project's room lives on this node.
    pub fn holds(&self, project_id: &str, room_id: &str) -> bool {
        lock(&self.registry)
            .rooms
            .get(room_id)
            .is_some_and(|r| r.project_id == project_id)
    }
}

impl Rooms {
    /// Calls `hook` with the id of each room whose membership changes or that closes, from then
    /// on (once: a cluster's failover sets it when the server starts).
    pub fn watch(&self, hook: ChangeHook) {
        let _ = self.on_change.set(hook);
    }

    fn changed(&self, room_id: &str) {
        if let Some(hook) = self.on_change.get() {
            hook(room_id);
        }
    }

    /// The room's metadata and seats for another node to adopt it (`origin` tells where each
    /// seat's socket is); `None` once it has closed.
    pub fn replica(
        &self,
        room_id: &str,
        origin: impl Fn(&ConnHandle) -> (String, u64),
    ) -> Option<Replica> {
        let room = lock(&self.registry).rooms.get(room_id).cloned()?;
        let state = lock(&room.state);
        if state.closed {
            return None;
        }
        Some(Replica {
            room_id: room.id.clone(),
            project_id: room.project_id.clone(),
            join_code: room.join_code.clone(),
            properties: room.properties.clone(),
            max_players: room.max_players,
            created_at: room.created_at,
            reserved: room.reserved.clone(),
            seq: state.seq,
            next_peer_id: state.next_peer_id,
            members: state
                .members
                .iter()
                .map(|slot| {
                    let (node, conn_id) = origin(&slot.conn);
                    SeatReplica {
                        member: slot.member.clone(),
                        node,
                        conn_id,
                        away: slot.away,
                        joined_seq: slot.joined_seq,
                    }
                })
                .collect(),
        })
    }

    /// Recreates a room of a node that is gone from its replica: same id, members, host and join
    /// code; `seat` gives each member's connection and whether it is away. Its `seq` goes on
    /// from `seq` (above any the old home may have sent after the replica), and its replay
    /// starts empty, so a `resume` from before it is `complete: false`. False when a room of
    /// that id is here already.
    pub fn adopt(
        &self,
        config: &RealtimeConfig,
        replica: Replica,
        seq: u64,
        mut seat: impl FnMut(&SeatReplica) -> (Arc<ConnHandle>, bool),
    ) -> bool {
        let mut registry = lock(&self.registry);
        if registry.rooms.contains_key(&replica.room_id) {
            return false;
        }
        let members: Vec<Slot> = replica
            .members
            .iter()
            .map(|seated| {
                let (conn, away) = seat(seated);
                Slot {
                    member: seated.member.clone(),
                    conn,
                    away,
                    joined_seq: seated.joined_seq,
                }
            })
            .collect();
        for slot in &members {
            // Seats held before: the per-player limit was checked when they were taken.
            *registry
                .memberships
                .entry((replica.project_id.clone(), slot.member.user_id.clone()))
                .or_default() += 1;
        }
        let mut replay = Replay::new(config.replay_buffer);
        replay.evicted_through = seq;
        let room = Arc::new(Room {
            id: replica.room_id,
            project_id: replica.project_id,
            join_code: replica.join_code,
            properties: replica.properties,
            max_players: replica.max_players,
            created_at: replica.created_at,
            reserved: replica.reserved,
            state: Mutex::new(RoomState {
                members,
                seq,
                next_peer_id: replica.next_peer_id,
                closed: false,
                pending: HashMap::new(),
                replay,
            }),
        });
        if let Some(code) = &room.join_code {
            registry
                .codes
                .insert((room.project_id.clone(), code.clone()), room.id.clone());
        }
        registry.rooms.insert(room.id.clone(), room.clone());
        drop(registry);
        if let Some(rate) = room.properties.tick_rate {
            tokio::spawn(tick(Arc::downgrade(&room), rate));
        }
        self.changed(&room.id);
        true
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
        let mut state = lock(&room.state);
        if state.closed {
            return;
        }
        // Under the room lock, so an event published meanwhile cannot overtake these updates.
        room.flush(&mut state);
    }
}
