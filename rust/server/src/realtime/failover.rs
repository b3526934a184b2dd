//! Rooms that outlive a node of a cluster: away seats and `resume` across nodes, and failover.
//!
//! - Away across nodes: a member's socket on another node that drops sends `member_away` to the
//!   home node, which keeps the proxy's seat away for the resume grace period, as for a local
//!   socket. A node that leaves the cluster leaves its members' seats in other nodes' rooms away
//!   likewise (its clients reconnect elsewhere).
//! - `resume` of a room homed elsewhere is asked of the cluster like a join; the home node gives
//!   the seat to a proxy of the new socket and queues the replay on it, then a `resumed` marker:
//!   the member's node answers the client when the marker arrives, so the replay is ahead of it.
//! - Failover: every node replicates its rooms' metadata and seats (not the state stream) to the
//!   others when membership changes (`room_replica`, `room_closed`); a node keeps the replicas of
//!   the other nodes' rooms. When a node is gone (`bye`, or silent past `node_timeout_ms`), the
//!   live node with the lowest id adopts its rooms: same id, members, host and join code, seats of
//!   sockets on live nodes present, the others away for the grace period from adoption. The other
//!   nodes route their members' frames for those rooms to it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use aethex_protocol::realtime::{Member, ResumedRoom, RoomProperties, ServerFrame, ServerMessage};
use aethex_protocol::{ApiErrorBody, ErrorCode};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Notify};

use super::conn::{encode, ConnHandle};
use super::presence::Presence;
use super::remote::{self, JoinReply, JoinRequest, Origin, RemoteMembers};
use crate::app::{AppInner, AppState};
use crate::cluster::Cluster;

/// An adopted room's `seq` starts this far above the replicated one: the old home may have sent
/// state updates after its last replica, and a seq a member already saw must not be reused (a
/// resume from it would skip the adopter's events). 2^32 events between two membership changes
/// of one room is beyond any game; the numbers stay far below 2^53 (JSON-safe).
pub const ADOPTED_SEQ_GAP: u64 = 1 << 32;
/// How long a resume forwarded to the home node waits for its replay to arrive.
const RESUME_TIMEOUT: Duration = Duration::from_secs(5);
/// Between two asks while a room's home is silent but not yet taken for gone.
const RESUME_RETRY: Duration = Duration::from_millis(250);

/// A room as its home node replicates it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replica {
    pub room_id: String,
    pub project_id: String,
    pub join_code: Option<String>,
    pub properties: RoomProperties,
    pub max_players: u32,
    pub created_at: i64,
    pub reserved: Option<Vec<String>>,
    pub seq: u64,
    pub next_peer_id: u32,
    /// Oldest first: the first is the host.
    pub members: Vec<SeatReplica>,
}

/// One seat: the member and where its socket is (`node`, its connection id there).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeatReplica {
    pub member: Member,
    pub node: String,
    pub conn_id: u64,
    pub away: bool,
    pub joined_seq: u64,
}

/// Rooms of this node to replicate next, and the replicator's wake-up.
type Dirty = Arc<(Mutex<HashSet<String>>, Notify)>;

#[derive(Default)]
pub struct Failover {
    /// Other nodes' rooms: room id -> (home node, replica).
    replicas: Mutex<HashMap<String, (String, Replica)>>,
    /// Rooms that moved to another node than the one this node's sockets joined them on:
    /// room id -> current home.
    routes: Mutex<HashMap<String, String>>,
    dirty: Dirty,
    /// Resumes forwarded to another node, waiting for their `resumed` marker:
    /// `(connection id, room id)` -> the waiting socket.
    waiting: Mutex<HashMap<(u64, String), oneshot::Sender<ResumedRoom>>>,
}

impl Failover {
    /// The node now holding a room this node's sockets joined elsewhere, when it moved.
    pub fn route(&self, room_id: &str) -> Option<String> {
        lock(&self.routes).get(room_id).cloned()
    }

    /// A room's replica from its home node.
    pub fn replica_received(state: &AppState, node: &str, replica: Replica) {
        if state.realtime.rooms.contains(&replica.room_id) {
            return;
        }
        let failover = &state.realtime.failover;
        let room_id = replica.room_id.clone();
        if let Some(cluster) = &state.cluster {
            // A seat of this node's socket that closed is still present there when the drop was
            // told to a home node that died before hearing it: told again to the new home.
            let here = cluster.node_id();
            let users = &state.realtime.users;
            for seat in replica.members.iter().filter(|s| s.node == here && !s.away) {
                let user_id = &seat.member.user_id;
                if !users.has_conn(&replica.project_id, user_id, seat.conn_id) {
                    let member = remote::Member {
                        node: here.to_owned(),
                        conn_id: seat.conn_id,
                        project_id: replica.project_id.clone(),
                        user_id: user_id.clone(),
                    };
                    cluster.member_away(node, member, &room_id);
                }
            }
        }
        let previous = lock(&failover.replicas).insert(room_id.clone(), (node.to_owned(), replica));
        // Another node adopted the room, maybe before this one noticed its home is gone (or
        // another adopter than expected): this node's sockets in it follow it now.
        if let Some((home, _)) = previous.filter(|(home, _)| home != node) {
            lock(&failover.routes).insert(room_id.clone(), node.to_owned());
            let moved = HashSet::from([room_id]);
            state.realtime.remote.rehome(&home, node, &moved);
        }
    }

    pub fn room_closed(state: &AppState, node: &str, room_id: &str) {
        let failover = &state.realtime.failover;
        let mut replicas = lock(&failover.replicas);
        if replicas.get(room_id).is_some_and(|(home, _)| home == node) {
            replicas.remove(room_id);
            lock(&failover.routes).remove(room_id);
        }
    }

    /// A `resumed` marker for a resume this node forwarded: handed to the waiting socket rather
    /// than sent. False for any other frame.
    pub fn marker_arrived(&self, conn_id: u64, frame: &ServerFrame) -> bool {
        let ServerMessage::Resumed { rooms, .. } = &frame.message else {
            return false;
        };
        let [resumed] = rooms.as_slice() else {
            return false;
        };
        let key = (conn_id, resumed.room.room_id.clone());
        match lock(&self.waiting).remove(&key) {
            Some(waiter) => {
                let _ = waiter.send(resumed.clone());
                true
            }
            None => false,
        }
    }
}

/// Starts replicating this node's rooms to the others. Ends with the cluster.
pub fn start(state: &AppState, cluster: &Arc<Cluster>) {
    let dirty = state.realtime.failover.dirty.clone();
    state.realtime.rooms.watch(Box::new(move |room_id| {
        lock(&dirty.0).insert(room_id.to_owned());
        dirty.1.notify_one();
    }));
    let weak: Weak<AppInner> = Arc::downgrade(&state.0);
    let dirty = state.realtime.failover.dirty.clone();
    let cluster = cluster.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = dirty.1.notified() => {}
                _ = cluster.stopped() => return,
            }
            let Some(inner) = weak.upgrade() else { return };
            let state = AppState(inner);
            let rooms = std::mem::take(&mut *lock(&dirty.0));
            let origins = state.realtime.remote.origins();
            let node = cluster.node_id().to_owned();
            for room_id in rooms {
                let origin = |conn: &ConnHandle| {
                    origins
                        .get(&conn.id)
                        .cloned()
                        .unwrap_or_else(|| (node.clone(), conn.id))
                };
                match state.realtime.rooms.replica(&room_id, origin) {
                    Some(replica) => cluster.room_replica(replica),
                    None => cluster.room_closed(&room_id),
                }
            }
        }
    });
}

/// Replicates every room of this node again (a node joined the cluster).
pub fn replicate_all(state: &AppState) {
    let dirty = &state.realtime.failover.dirty;
    lock(&dirty.0).extend(state.realtime.rooms.ids());
    dirty.1.notify_one();
}

/// `node` left the cluster (after its presence was dropped): its rooms move to the live node
/// with the lowest id, this node's sockets in them follow, and its members' seats in this node's
/// rooms go away.
pub fn node_gone(state: &AppState, cluster: &Arc<Cluster>, node: &str) {
    let failover = &state.realtime.failover;
    let adopter = state
        .realtime
        .presence
        .nodes()
        .into_iter()
        .chain([cluster.node_id().to_owned()])
        .filter(|n| n != node)
        .min()
        .unwrap_or_else(|| cluster.node_id().to_owned());
    let adopting = adopter == cluster.node_id();
    let orphans: Vec<Replica> = {
        let mut replicas = lock(&failover.replicas);
        let ids: Vec<String> = replicas
            .iter()
            .filter(|(_, (home, _))| home == node)
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| {
                if adopting {
                    replicas.remove(&id).map(|(_, r)| r)
                } else {
                    // Kept under the adopter until its own replicas replace them.
                    let entry = replicas.get_mut(&id)?;
                    entry.0.clone_from(&adopter);
                    Some(entry.1.clone())
                }
            })
            .collect()
    };
    let moved: HashSet<String> = orphans.iter().map(|r| r.room_id.clone()).collect();
    {
        let mut routes = lock(&failover.routes);
        for room in &moved {
            routes.insert(room.clone(), adopter.clone());
        }
    }
    state.realtime.remote.rehome(node, &adopter, &moved);
    RemoteMembers::drop_node(state, node);
    if adopting {
        for replica in orphans {
            adopt(state, cluster, replica);
        }
    }
}

/// Recreates a room of a node that is gone, here.
fn adopt(state: &AppState, cluster: &Arc<Cluster>, replica: Replica) {
    let mut live: HashSet<String> = state.realtime.presence.nodes().into_iter().collect();
    live.insert(cluster.node_id().to_owned());
    let room_id = replica.room_id.clone();
    let remote = &state.realtime.remote;
    // Every seat gets a proxy of its socket's connection: sockets on live nodes (this one too)
    // keep taking part through it; the others' seats wait away for a resume.
    let mut seats: HashMap<Origin, (Arc<ConnHandle>, bool)> = HashMap::new();
    for seat in &replica.members {
        let member = remote::Member {
            node: seat.node.clone(),
            conn_id: seat.conn_id,
            project_id: replica.project_id.clone(),
            user_id: seat.member.user_id.clone(),
        };
        let origin = (seat.node.clone(), seat.conn_id);
        let proxy = remote.proxy(state, cluster, &member);
        remote.note_room(&origin, &room_id);
        // A socket of this node counts only while it is open (its drop may have been told to
        // the dead node).
        let gone_here = seat.node == cluster.node_id()
            && !state.realtime.users.has_conn(
                &replica.project_id,
                &seat.member.user_id,
                seat.conn_id,
            );
        let away = seat.away || !live.contains(&seat.node) || gone_here;
        seats.insert(origin, (proxy, away));
    }
    let users: Vec<String> = replica
        .members
        .iter()
        .map(|s| s.member.user_id.clone())
        .collect();
    let (project_id, seq) = (replica.project_id.clone(), replica.seq + ADOPTED_SEQ_GAP);
    let adopted = state
        .realtime
        .rooms
        .adopt(&state.config.realtime, replica, seq, |seat| {
            seats[&(seat.node.clone(), seat.conn_id)].clone()
        });
    if !adopted {
        return;
    }
    tracing::info!(room = %room_id, "adopted a room of a node that is gone");
    let deadline = grace_deadline(state);
    for (origin, (proxy, away)) in seats {
        if away {
            leave_after_grace(state, proxy, origin, vec![room_id.clone()], deadline);
        }
    }
    for user_id in users {
        Presence::refresh(state, &project_id, &user_id);
    }
}

/// On the home node: a member's socket on another node dropped; its seat waits for a resume.
pub fn member_away(state: &AppState, member: &remote::Member, room_id: &str) {
    let origin = (member.node.clone(), member.conn_id);
    let Some(proxy) = state.realtime.remote.proxy_of(&origin) else {
        return;
    };
    if state.realtime.rooms.set_away(&proxy, room_id) {
        let deadline = grace_deadline(state);
        leave_after_grace(state, proxy, origin, vec![room_id.to_owned()], deadline);
    }
}

/// On the member's node: `conn` dropped while in `room_id` on `home`; its seat there goes away
/// for the grace period.
pub fn socket_gone(state: &AppState, home_given: &str, conn: &ConnHandle, room_id: &str) {
    let Some(cluster) = &state.cluster else {
        return;
    };
    let home = state.realtime.failover.route(room_id);
    let home = home.as_deref().unwrap_or(home_given);
    state.realtime.remote.forget_joined(home, conn, room_id);
    cluster.member_away(home, remote::member_of(conn, cluster), room_id);
}

/// When seats going away now are given up (server clock).
pub fn grace_deadline(state: &AppState) -> i64 {
    let grace_ms = state.config.realtime.resume_grace_secs.saturating_mul(1000);
    state
        .clock
        .now_ms()
        .saturating_add(i64::try_from(grace_ms).unwrap_or(i64::MAX))
}

/// A proxy's away seats are given up at `deadline` unless resumed by then (a resumed seat
/// belongs to another connection and is left alone).
pub fn leave_after_grace(
    state: &AppState,
    proxy: Arc<ConnHandle>,
    origin: Origin,
    rooms: Vec<String>,
    deadline: i64,
) {
    let state = state.clone();
    tokio::spawn(async move {
        super::socket::sleep_until_ms(&state, deadline).await;
        for room in &rooms {
            state.realtime.rooms.leave(&proxy, room);
            state.realtime.remote.forget_room(&origin, &proxy, room);
        }
        Presence::refresh(&state, &proxy.project_id, &proxy.user_id);
    });
}

/// What a `resume` of one room not on this node came to.
pub enum Resumed {
    /// The room came here meanwhile (this node adopted it) and the seat was taken back here.
    Here(ResumedRoom),
    /// On the home node, with its id.
    Elsewhere(ResumedRoom, String),
    Lost,
}

/// On the member's node: takes a seat back in a room this node does not have, from its home
/// node. While the room's home is silent but not yet taken for gone, asks again until the room
/// is adopted (here or elsewhere) or the node timeout has surely passed.
pub async fn resume_elsewhere(
    state: &AppState,
    conn: &Arc<ConnHandle>,
    room_id: &str,
    last_seq: u64,
) -> Resumed {
    let Some(cluster) = &state.cluster else {
        return Resumed::Lost;
    };
    let failover = &state.realtime.failover;
    let give_up = Instant::now() + cluster.node_timeout() + RESUME_TIMEOUT;
    let request = JoinRequest {
        member: remote::member_of(conn, cluster),
        room_id: Some(room_id.to_owned()),
        join_code: None,
        resume_after: Some(last_seq),
    };
    let key = (conn.id, room_id.to_owned());
    loop {
        if let Some(room) = state.realtime.rooms.resume(conn, room_id, last_seq) {
            return Resumed::Here(room);
        }
        let (tx, rx) = oneshot::channel();
        lock(&failover.waiting).insert(key.clone(), tx);
        let answer = cluster.request_join(&request).await;
        let outcome = match answer {
            Some((JoinReply::Resuming, home)) => {
                match tokio::time::timeout(RESUME_TIMEOUT, rx).await {
                    Ok(Ok(room)) => {
                        state.realtime.remote.note_joined(&home, conn, room_id);
                        Some(Resumed::Elsewhere(room, home))
                    }
                    _ => Some(Resumed::Lost),
                }
            }
            Some(_) => Some(Resumed::Lost),
            None => {
                // Adopted here meanwhile: taken back at the top of the loop.
                let known = lock(&failover.replicas).contains_key(room_id)
                    || state.realtime.rooms.contains(room_id);
                (!known || Instant::now() >= give_up).then_some(Resumed::Lost)
            }
        };
        lock(&failover.waiting).remove(&key);
        match outcome {
            Some(outcome) => return outcome,
            None => tokio::time::sleep(RESUME_RETRY).await,
        }
    }
}

/// On the home node: a resume forwarded by the member's node. `None` (no answer) when the room
/// is not here.
pub fn serve_resume(
    state: &AppState,
    cluster: &Arc<Cluster>,
    request: &JoinRequest,
    last_seq: u64,
) -> Option<JoinReply> {
    let room_id = request.room_id.as_deref()?;
    let remote = &state.realtime.remote;
    let origin = (request.member.node.clone(), request.member.conn_id);
    let proxy = remote.proxy(state, cluster, &request.member);
    match state.realtime.rooms.resume(&proxy, room_id, last_seq) {
        Some(resumed) => {
            remote.note_room(&origin, room_id);
            // Behind the replay on the proxy's queue, so the member's node answers after it.
            proxy.push(encode(
                None,
                ServerMessage::Resumed {
                    rooms: vec![resumed],
                    lost: Vec::new(),
                },
            ));
            Some(JoinReply::Resuming)
        }
        None => {
            remote.forget_room(&origin, &proxy, room_id);
            state
                .realtime
                .rooms
                .contains(room_id)
                .then(|| JoinReply::Refused {
                    error: ApiErrorBody {
                        code: ErrorCode::NotFound,
                        message: "no seat to resume in this room".into(),
                        details: None,
                    },
                })
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
