//! Rooms across nodes: a room lives on its home node (where it was created); a player on another
//! node joins it through the cluster and takes part through a proxy member.
//!
//! - Joining: a `join_room` for a room this node does not have is asked of the cluster; only the
//!   home node answers. It seats a proxy `ConnHandle` for the player's socket, so the room code
//!   sees an ordinary member.
//! - Home -> member: the proxy's queue is drained by a task that hands each frame to the member's
//!   node, which queues it on the real socket.
//! - Member -> home: the member's node forwards the socket's frames for the room (state updates,
//!   packets, leave) to the home node, which runs them against the proxy.
//! - The member's socket closing, or its node leaving the cluster, leaves its seat away for the
//!   resume grace period (`super::failover`). When the home node leaves, its rooms are adopted
//!   by another node (`super::failover`); remote members of a room no node adopts get
//!   `room_left`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use aethex_protocol::realtime::{Cid, RoomInfo, ServerFrame, ServerMessage};
use aethex_protocol::{ApiErrorBody, ErrorCode};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::conn::{encode, Body, ConnHandle, OutFrame, Outgoing, StatePayload};
use super::failover;
use super::presence::Presence;
use crate::app::AppState;
use crate::cluster::Cluster;
use crate::error::ApiError;

/// A socket on another node, as the home node knows it: `(node id, connection id there)`.
pub type Origin = (String, u64);

/// A proxy member and the rooms it is in here.
type Proxy = (Arc<ConnHandle>, HashSet<String>);

/// A socket of this node in a room elsewhere: `(project id, user id, connection id, room id)`.
type JoinedElsewhere = (String, String, u64, String);

#[derive(Default)]
pub struct RemoteMembers {
    /// Home side: proxies of members whose sockets are on other nodes.
    proxies: Mutex<HashMap<Origin, Proxy>>,
    /// Member side: rooms this node's sockets are in on other nodes, by home node, so they
    /// learn when that node leaves.
    joined: Mutex<HashMap<String, HashSet<JoinedElsewhere>>>,
}

/// Who asks, from which node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    pub node: String,
    pub conn_id: u64,
    pub project_id: String,
    pub user_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub member: Member,
    pub room_id: Option<String>,
    pub join_code: Option<String>,
    /// Set for a `resume` of the member's seat: the last `seq` its client saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_after: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum JoinReply {
    Joined {
        room: RoomInfo,
    },
    Refused {
        error: ApiErrorBody,
    },
    /// The seat is the member's again; the replay and a `resumed` marker follow as frames.
    Resuming,
}

/// A member's frame for the room's home node.
#[derive(Debug, Serialize, Deserialize)]
pub struct RoomOp {
    pub member: Member,
    pub cid: Option<Cid>,
    pub op: Op,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Relay {
        room_id: String,
        state: serde_json::Value,
        targets: Option<Vec<String>>,
        echo: bool,
    },
    Packet {
        room_id: String,
        data: Vec<u8>,
        targets: Option<Vec<String>>,
        channel: u32,
        reliable: bool,
    },
    Leave {
        room_id: String,
    },
}

impl Op {
    fn room_id(&self) -> &str {
        match self {
            Op::Relay { room_id, .. } | Op::Packet { room_id, .. } | Op::Leave { room_id } => {
                room_id
            }
        }
    }
}

/// A frame for one socket on the receiving node.
#[derive(Debug, Serialize, Deserialize)]
pub struct SocketFrame {
    pub conn_id: u64,
    pub project_id: String,
    pub user_id: String,
    pub frame: ServerFrame,
}

pub fn member_of(conn: &ConnHandle, cluster: &Cluster) -> Member {
    Member {
        node: cluster.node_id().to_owned(),
        conn_id: conn.id,
        project_id: conn.project_id.clone(),
        user_id: conn.user_id.clone(),
    }
}

/// Asks the cluster to seat `conn` in a room held by another node: `None` when no node has it.
pub async fn join(
    state: &AppState,
    conn: &ConnHandle,
    room_id: Option<&str>,
    join_code: Option<&str>,
) -> Result<Option<(RoomInfo, String)>, ApiError> {
    let Some(cluster) = &state.cluster else {
        return Ok(None);
    };
    let request = JoinRequest {
        member: member_of(conn, cluster),
        room_id: room_id.map(str::to_owned),
        join_code: join_code.map(str::to_owned),
        resume_after: None,
    };
    match cluster.request_join(&request).await {
        None => Ok(None),
        Some((JoinReply::Joined { room }, home)) => {
            state
                .realtime
                .remote
                .note_joined(&home, conn, &room.room_id);
            Ok(Some((room, home)))
        }
        Some((JoinReply::Refused { error }, _)) => Err(ApiError {
            code: error.code,
            message: error.message,
            details: error.details,
            retry_after: None,
        }),
        Some((JoinReply::Resuming, _)) => Ok(None),
    }
}

/// Hands one of `conn`'s frames for a room on `home` (or the node that adopted it) to that node.
pub fn forward(state: &AppState, home: &str, conn: &ConnHandle, cid: Option<Cid>, op: Op) {
    let routed = state.realtime.failover.route(op.room_id());
    let home = routed.as_deref().unwrap_or(home);
    if let Op::Leave { room_id } = &op {
        if let Some(rooms) = lock(&state.realtime.remote.joined).get_mut(home) {
            rooms.remove(&joined_key(conn, room_id));
        }
    }
    if let Some(cluster) = &state.cluster {
        let member = member_of(conn, cluster);
        cluster.room_op(home, RoomOp { member, cid, op });
    }
}

impl RemoteMembers {
    /// On the home node: seats the asking member if this node has the room. `None` (no answer)
    /// when it does not, so the node that has it answers.
    pub fn serve_join(
        state: &AppState,
        cluster: &Arc<Cluster>,
        request: JoinRequest,
    ) -> Option<JoinReply> {
        if let Some(last_seq) = request.resume_after {
            return failover::serve_resume(state, cluster, &request, last_seq);
        }
        let realtime = &state.realtime;
        let origin = (request.member.node.clone(), request.member.conn_id);
        let proxy = realtime.remote.proxy(state, cluster, &request.member);
        let joined = realtime.rooms.join(
            &state.config.realtime,
            &proxy,
            request.room_id.as_deref(),
            request.join_code.as_deref(),
            state.clock.now_ms(),
        );
        let mut proxies = lock(&realtime.remote.proxies);
        let reply = match joined {
            Ok(room) => {
                if let Some((_, rooms)) = proxies.get_mut(&origin) {
                    rooms.insert(room.room_id.clone());
                }
                Some(JoinReply::Joined { room })
            }
            Err(e) if e.code == ErrorCode::NotFound => None,
            Err(e) => Some(JoinReply::Refused {
                error: ApiErrorBody {
                    code: e.code,
                    message: e.message,
                    details: e.details,
                },
            }),
        };
        if proxies
            .get(&origin)
            .is_some_and(|(_, rooms)| rooms.is_empty())
        {
            proxies.remove(&origin);
        }
        drop(proxies);
        Presence::refresh(state, &request.member.project_id, &request.member.user_id);
        reply
    }

    /// On the home node: a member's frame from its node.
    pub fn serve_op(state: &AppState, cluster: &Cluster, op: RoomOp) {
        let realtime = &state.realtime;
        let origin = (op.member.node.clone(), op.member.conn_id);
        let Some(proxy) = lock(&realtime.remote.proxies)
            .get(&origin)
            .map(|(p, _)| p.clone())
        else {
            return;
        };
        let result = match op.op {
            Op::Relay {
                room_id,
                state: value,
                targets,
                echo,
            } => realtime.rooms.relay(
                &proxy,
                &room_id,
                StatePayload::Value(value),
                targets.as_deref(),
                echo,
            ),
            Op::Packet {
                room_id,
                data,
                targets,
                channel,
                reliable,
            } => realtime.rooms.relay_packet(
                &proxy,
                &room_id,
                data,
                targets.as_deref(),
                channel,
                reliable,
            ),
            Op::Leave { room_id } => {
                realtime.rooms.leave(&proxy, &room_id);
                let mut proxies = lock(&realtime.remote.proxies);
                if let Some((_, rooms)) = proxies.get_mut(&origin) {
                    rooms.remove(&room_id);
                    if rooms.is_empty() {
                        proxies.remove(&origin);
                    }
                }
                drop(proxies);
                Presence::refresh(state, &op.member.project_id, &op.member.user_id);
                Ok(())
            }
        };
        if let Err(e) = result {
            cluster.socket_frame(
                &op.member.node,
                SocketFrame {
                    conn_id: op.member.conn_id,
                    project_id: op.member.project_id,
                    user_id: op.member.user_id,
                    frame: ServerFrame {
                        cid: op.cid,
                        message: ServerMessage::Error {
                            error: ApiErrorBody {
                                code: e.code,
                                message: e.message,
                                details: e.details,
                            },
                        },
                    },
                },
            );
        }
    }

    /// A node left the cluster: its members' seats in this node's rooms go away for the grace
    /// period (its clients reconnect to another node), and this node's sockets in its rooms that
    /// no node adopts are told they are out (`room_left`).
    pub fn drop_node(state: &AppState, node: &str) {
        let orphaned = lock(&state.realtime.remote.joined)
            .remove(node)
            .unwrap_or_default();
        for (project_id, user_id, conn_id, room_id) in orphaned {
            let frame = encode(None, ServerMessage::RoomLeft { room_id });
            state
                .realtime
                .users
                .send_to_conn(&project_id, &user_id, conn_id, frame);
        }
        let gone: Vec<(Origin, Proxy)> = {
            let mut proxies = lock(&state.realtime.remote.proxies);
            let keys: Vec<Origin> = proxies.keys().filter(|k| k.0 == node).cloned().collect();
            keys.into_iter()
                .filter_map(|k| proxies.remove(&k).map(|p| (k, p)))
                .collect()
        };
        let deadline = failover::grace_deadline(state);
        for (origin, (proxy, rooms)) in gone {
            let away = rooms
                .into_iter()
                .filter(|room| state.realtime.rooms.set_away(&proxy, room))
                .collect();
            failover::leave_after_grace(state, proxy, origin, away, deadline);
        }
    }

    /// The proxy of a member's socket, created on first use with the task that forwards what
    /// the room queues on it.
    pub fn proxy(
        &self,
        state: &AppState,
        cluster: &Arc<Cluster>,
        member: &Member,
    ) -> Arc<ConnHandle> {
        let origin = (member.node.clone(), member.conn_id);
        let mut proxies = lock(&self.proxies);
        if let Some((proxy, _)) = proxies.get(&origin) {
            return proxy.clone();
        }
        let (tx, mut rx) = mpsc::channel(state.config.realtime.outbound_queue.max(1));
        let id = state.realtime.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let proxy = Arc::new(ConnHandle::new(
            id,
            member.project_id.clone(),
            member.user_id.clone(),
            tx,
        ));
        proxies.insert(origin, (proxy.clone(), HashSet::new()));
        let (cluster, member) = (cluster.clone(), member.clone());
        // Ends when the proxy is dropped (its member left every room here).
        tokio::spawn(async move {
            while let Some(out) = rx.recv().await {
                let frames = match out {
                    Outgoing::One(frame) => vec![frame],
                    Outgoing::Many(frames) => frames,
                };
                for frame in frames.iter().filter_map(|f| portable(f)) {
                    cluster.socket_frame(
                        &member.node,
                        SocketFrame {
                            conn_id: member.conn_id,
                            project_id: member.project_id.clone(),
                            user_id: member.user_id.clone(),
                            frame,
                        },
                    );
                }
            }
        });
        proxy
    }
}

impl RemoteMembers {
    pub fn proxy_of(&self, origin: &Origin) -> Option<Arc<ConnHandle>> {
        lock(&self.proxies).get(origin).map(|(p, _)| p.clone())
    }

    /// Proxies' connection ids -> where their sockets are.
    pub fn origins(&self) -> HashMap<u64, Origin> {
        lock(&self.proxies)
            .iter()
            .map(|(origin, (proxy, _))| (proxy.id, origin.clone()))
            .collect()
    }

    /// The proxy of `origin` holds a seat in `room_id` now.
    pub fn note_room(&self, origin: &Origin, room_id: &str) {
        if let Some((_, rooms)) = lock(&self.proxies).get_mut(origin) {
            rooms.insert(room_id.to_owned());
        }
    }

    /// `proxy` holds no seat in `room_id` any more; a proxy without seats is dropped.
    pub fn forget_room(&self, origin: &Origin, proxy: &ConnHandle, room_id: &str) {
        let mut proxies = lock(&self.proxies);
        if let Some((current, rooms)) = proxies.get_mut(origin) {
            if current.id == proxy.id {
                rooms.remove(room_id);
                if rooms.is_empty() {
                    proxies.remove(origin);
                }
            }
        }
    }

    /// This node's socket `conn` is in `room_id` on `home`.
    pub fn note_joined(&self, home: &str, conn: &ConnHandle, room_id: &str) {
        lock(&self.joined)
            .entry(home.to_owned())
            .or_default()
            .insert(joined_key(conn, room_id));
    }

    /// This node's socket `conn` is out of `room_id` on `home` (it dropped).
    pub fn forget_joined(&self, home: &str, conn: &ConnHandle, room_id: &str) {
        if let Some(rooms) = lock(&self.joined).get_mut(home) {
            rooms.remove(&joined_key(conn, room_id));
        }
    }

    /// This node's sockets in `rooms` of `from` are in them on `to` now (it adopted them).
    pub fn rehome(&self, from: &str, to: &str, rooms: &HashSet<String>) {
        let mut joined = lock(&self.joined);
        let Some(entries) = joined.get_mut(from) else {
            return;
        };
        let moved: Vec<JoinedElsewhere> = entries
            .iter()
            .filter(|entry| rooms.contains(&entry.3))
            .cloned()
            .collect();
        for entry in &moved {
            entries.remove(entry);
        }
        joined.entry(to.to_owned()).or_default().extend(moved);
    }
}

/// A frame as a protocol message, to carry to another node (a relayed state kept as JSON text is
/// parsed there, once per frame).
pub fn portable(frame: &OutFrame) -> Option<ServerFrame> {
    match frame.body() {
        Body::Message(f) => Some(f.clone()),
        Body::StateUpdate(_) => serde_json::from_str(frame.json().as_str()).ok(),
    }
}

fn joined_key(conn: &ConnHandle, room_id: &str) -> JoinedElsewhere {
    (
        conn.project_id.clone(),
        conn.user_id.clone(),
        conn.id,
        room_id.to_owned(),
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
