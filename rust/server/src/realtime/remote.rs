//! Rooms across nodes: a room lives on its home node (where it was created); a player on another
//! node joins it through the cluster and takes part through a proxy member.
//!
//! - Joining: a `join_room` for a room this node does not have is asked of the cluster; only the
//!   home node answers. It seats a proxy `ConnHandle` for the player's socket, so the room code
//!   sees an ordinary member.
//! - Home -> member: the proxies' queues of one member node are drained by one task per node,
//!   which sends their frames together, each frame once with the connection ids it is for
//!   (`SocketBatch`); that node queues it on the real sockets, serialized once per encoding.
//! - Member -> home: the member's node forwards the socket's frames for the room (state updates,
//!   packets, leave, room chat) to the home node, which runs them against the proxy; room chat goes
//!   through the chat service there, one message of a socket at a time.
//! - The lobby: `list_rooms` merges every node's public rooms; a room chat's history on a node
//!   without the room asks the cluster whether the reader is a member (`LobbyAsk`).
//! - The member's socket closing, or its node leaving the cluster, leaves its seat away for the
//!   resume grace period (`super::failover`). When the home node leaves, its rooms are adopted
//!   by another node (`super::failover`); remote members of a room no node adopts get
//!   `room_left`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use aethex_protocol::realtime::{Cid, RoomInfo, RoomSummary, ServerFrame, ServerMessage};
use aethex_protocol::signaling::PeerSignal;
use aethex_protocol::{ApiErrorBody, ErrorCode};
use futures::stream::{BoxStream, SelectAll};
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::conn::{encode, Body, ConnHandle, Frame, OutFrame, Outgoing, StatePayload};
use super::failover;
use super::presence::Presence;
use super::rooms::MAX_LISTED;
use crate::app::AppState;
use crate::chat::channel::Channel;
use crate::cluster::Cluster;
use crate::error::ApiError;

/// A socket on another node, as the home node knows it: `(node id, connection id there)`.
pub type Origin = (String, u64);

/// A proxy member and the rooms it is in here.
type Proxy = (Arc<ConnHandle>, HashSet<String>);

/// A proxy handed to its node's link: the member and the proxy's outbound queue.
type Attach = (Member, mpsc::Receiver<Outgoing>);

/// A socket of this node in a room elsewhere: `(project id, user id, connection id, room id)`.
type JoinedElsewhere = (String, String, u64, String);

#[derive(Default)]
pub struct RemoteMembers {
    /// Home side: proxies of members whose sockets are on other nodes.
    proxies: Mutex<HashMap<Origin, Proxy>>,
    /// Member side: rooms this node's sockets are in on other nodes, by home node, so they
    /// learn when that node leaves.
    joined: Mutex<HashMap<String, HashSet<JoinedElsewhere>>>,
    /// Home side: per member node, the task carrying its proxies' frames there (`carry`).
    links: Mutex<HashMap<String, mpsc::UnboundedSender<Attach>>>,
    /// Home side: room chat of members elsewhere waiting for the chat service, per socket; the
    /// front one is being sent.
    chats: Mutex<HashMap<Origin, VecDeque<RoomChat>>>,
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
    /// `signal` to another member of the room.
    Signal {
        room_id: String,
        to: String,
        signal: PeerSignal,
    },
    /// `voice_frame` (`super::voice`).
    Voice {
        room_id: String,
        data: Vec<u8>,
        targets: Option<Vec<String>>,
    },
    /// `voice_key` (`super::voice`).
    VoiceKey {
        room_id: String,
        data: Vec<u8>,
        targets: Option<Vec<String>>,
    },
    /// `send_message` on the room's channel.
    Chat {
        room_id: String,
        body: String,
        metadata: Option<serde_json::Value>,
    },
}

/// A room chat message of a member elsewhere, waiting for the chat service.
#[derive(Debug, Clone)]
struct RoomChat {
    member: Member,
    cid: Option<Cid>,
    room_id: String,
    body: String,
    metadata: Option<serde_json::Value>,
}

/// Frames of the home node's proxies for sockets on the receiving node: each frame once, with
/// the connections it is for, in the order each connection must get them.
#[derive(Debug, Serialize, Deserialize)]
pub struct SocketBatch {
    /// The connections `frames` name, each once.
    pub members: Vec<BatchMember>,
    pub frames: Vec<BatchedFrame>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BatchMember {
    pub conn_id: u64,
    pub project_id: String,
    pub user_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BatchedFrame {
    pub frame: ServerFrame,
    /// Connection ids (of `members`).
    pub to: Vec<u64>,
}

/// What a node asks every other node about their rooms (`<prefix>.rooms.lobby`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "snake_case")]
pub enum LobbyAsk {
    /// Public rooms for the lobby listing; every node answers with its own ([`ListedRooms`]).
    List {
        project_id: String,
        label: Option<String>,
        /// `(created_at, room id)` of the last room already listed.
        after: Option<(i64, String)>,
        limit: usize,
    },
    /// Whether a player holds a seat in a room; only the room's node answers (a `bool`).
    Member {
        project_id: String,
        room_id: String,
        user_id: String,
    },
}

/// One node's answer to [`LobbyAsk::List`]: its rooms with their `created_at`, in order.
pub type ListedRooms = Vec<(i64, RoomSummary)>;

impl Op {
    fn room_id(&self) -> &str {
        match self {
            Op::Relay { room_id, .. }
            | Op::Packet { room_id, .. }
            | Op::Leave { room_id }
            | Op::Signal { room_id, .. }
            | Op::Voice { room_id, .. }
            | Op::VoiceKey { room_id, .. }
            | Op::Chat { room_id, .. } => room_id,
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
        let proxy = lock(&realtime.remote.proxies)
            .get(&origin)
            .map(|(p, _)| p.clone());
        let result = match (op.op, proxy) {
            // Chat checks membership itself, in the chat service's order.
            (
                Op::Chat {
                    room_id,
                    body,
                    metadata,
                },
                _,
            ) => {
                let chat = RoomChat {
                    member: op.member,
                    cid: op.cid,
                    room_id,
                    body,
                    metadata,
                };
                return Self::queue_chat(state, chat);
            }
            // No seat here (it left or was dropped): nothing to act for.
            (_, None) => return,
            (
                Op::Relay {
                    room_id,
                    state: value,
                    targets,
                    echo,
                },
                Some(proxy),
            ) => realtime.rooms.relay(
                &proxy,
                &room_id,
                StatePayload::Value(value),
                targets.as_deref(),
                echo,
            ),
            (
                Op::Packet {
                    room_id,
                    data,
                    targets,
                    channel,
                    reliable,
                },
                Some(proxy),
            ) => realtime.rooms.relay_packet(
                &proxy,
                &room_id,
                data,
                targets.as_deref(),
                channel,
                reliable,
            ),
            (
                Op::Voice {
                    room_id,
                    data,
                    targets,
                },
                Some(proxy),
            ) => super::voice::relay_frame(state, &proxy, room_id, data, targets),
            (
                Op::VoiceKey {
                    room_id,
                    data,
                    targets,
                },
                Some(proxy),
            ) => super::voice::relay_key(state, &proxy, room_id, data, targets),
            (Op::Leave { room_id }, Some(proxy)) => {
                realtime.rooms.leave(&proxy, &room_id);
                realtime.remote.forget_room(&origin, &proxy, &room_id);
                Presence::refresh(state, &op.member.project_id, &op.member.user_id);
                Ok(())
            }
            (
                Op::Signal {
                    room_id,
                    to,
                    signal,
                },
                Some(proxy),
            ) => realtime.rooms.signal(&proxy, &room_id, &to, signal),
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
        lock(&state.realtime.remote.links).remove(node);
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

    /// The proxy of a member's socket, created on first use; what the room queues on it goes to
    /// the member's node through that node's link.
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
        let (tx, rx) = mpsc::channel(state.config.realtime.outbound_queue.max(1));
        let id = state.realtime.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let proxy = Arc::new(ConnHandle::new(
            id,
            member.project_id.clone(),
            member.user_id.clone(),
            tx,
        ));
        proxies.insert(origin, (proxy.clone(), HashSet::new()));
        drop(proxies);
        self.link(cluster, &member.node, member.clone(), rx);
        proxy
    }
}

impl RemoteMembers {
    /// Hands a proxy's queue to the task carrying frames to its member's node, started with the
    /// node's first proxy; it ends when the node leaves and its proxies are gone.
    fn link(
        &self,
        cluster: &Arc<Cluster>,
        node: &str,
        member: Member,
        rx: mpsc::Receiver<Outgoing>,
    ) {
        let mut links = lock(&self.links);
        let link = links.entry(node.to_owned()).or_insert_with(|| {
            let (tx, attach) = mpsc::unbounded_channel();
            tokio::spawn(carry(cluster.clone(), node.to_owned(), attach));
            tx
        });
        // The task lives as long as its sender is in `links`.
        let _ = link.send((member, rx));
    }

    /// On a member's node: one frame for one of its sockets.
    pub fn deliver_frame(state: &AppState, frame: SocketFrame) {
        let batch = SocketBatch {
            frames: vec![BatchedFrame {
                frame: frame.frame,
                to: vec![frame.conn_id],
            }],
            members: vec![BatchMember {
                conn_id: frame.conn_id,
                project_id: frame.project_id,
                user_id: frame.user_id,
            }],
        };
        Self::deliver_batch(state, batch);
    }

    /// On a member's node: frames from a room elsewhere, each serialized once per encoding
    /// however many of this node's sockets it is for.
    pub fn deliver_batch(state: &AppState, batch: SocketBatch) {
        let members: HashMap<u64, BatchMember> =
            batch.members.into_iter().map(|m| (m.conn_id, m)).collect();
        let users = &state.realtime.users;
        let failover = &state.realtime.failover;
        for BatchedFrame { frame, mut to } in batch.frames {
            // A resume's `resumed` marker rides behind its replay; the waiting resume answers it.
            to.retain(|conn| !failover.marker_arrived(*conn, &frame));
            let frame = encode(frame.cid, frame.message);
            for member in to.iter().filter_map(|id| members.get(id)) {
                users.send_to_conn(
                    &member.project_id,
                    &member.user_id,
                    member.conn_id,
                    frame.clone(),
                );
            }
        }
    }

    /// On the home node: room chat of a member elsewhere. A socket's messages go through the
    /// chat service one at a time, in the order sent, as on the socket's own node.
    fn queue_chat(state: &AppState, chat: RoomChat) {
        let origin = (chat.member.node.clone(), chat.member.conn_id);
        let mut chats = lock(&state.realtime.remote.chats);
        let queue = chats.entry(origin.clone()).or_default();
        queue.push_back(chat);
        if queue.len() > 1 {
            // The socket's sender task is running and takes it after the others.
            return;
        }
        drop(chats);
        let state = state.clone();
        tokio::spawn(async move {
            loop {
                let next = lock(&state.realtime.remote.chats)
                    .get(&origin)
                    .and_then(|queue| queue.front().cloned());
                let Some(chat) = next else { return };
                send_chat(&state, chat).await;
                let mut chats = lock(&state.realtime.remote.chats);
                let Some(queue) = chats.get_mut(&origin) else {
                    return;
                };
                queue.pop_front();
                if queue.is_empty() {
                    chats.remove(&origin);
                    return;
                }
            }
        });
    }

    /// On any node: what another node asks about this node's rooms, and the answer (`None`: not
    /// this node's to answer).
    pub fn serve_lobby(state: &AppState, ask: LobbyAsk) -> Option<serde_json::Value> {
        let rooms = &state.realtime.rooms;
        match ask {
            LobbyAsk::List {
                project_id,
                label,
                after,
                limit,
            } => {
                let after = after.as_ref().map(|(at, id)| (*at, id.as_str()));
                // A page and one more, to tell whether another page follows.
                let limit = limit.min(MAX_LISTED + 1);
                let listed: ListedRooms =
                    rooms.list_after(&project_id, label.as_deref(), after, limit);
                serde_json::to_value(listed).ok()
            }
            LobbyAsk::Member {
                project_id,
                room_id,
                user_id,
            } => rooms
                .holds(&project_id, &room_id)
                .then(|| rooms.has_member(&project_id, &room_id, &user_id).into()),
        }
    }
}

/// Runs a member's room chat through the chat service and answers its node.
async fn send_chat(state: &AppState, chat: RoomChat) {
    let Some(cluster) = &state.cluster else {
        return;
    };
    let channel = Channel::Room(chat.room_id).name();
    let sent = crate::chat::send(
        state,
        &chat.member.project_id,
        &chat.member.user_id,
        &channel,
        chat.body,
        chat.metadata,
    )
    .await;
    let message = match sent {
        Ok((message, seq)) => ServerMessage::MessageSent { message, seq },
        Err(e) => ServerMessage::Error {
            error: ApiErrorBody {
                code: e.code,
                message: e.message,
                details: e.details,
            },
        },
    };
    cluster.socket_frame(
        &chat.member.node,
        SocketFrame {
            conn_id: chat.member.conn_id,
            project_id: chat.member.project_id,
            user_id: chat.member.user_id,
            frame: ServerFrame {
                cid: chat.cid,
                message,
            },
        },
    );
}

/// A proxy's queue, its entries tagged with the member.
type ProxyQueue = BoxStream<'static, (Arc<Member>, Outgoing)>;

/// Most payload bytes (counted as the frames' JSON) one batch carries; NATS refuses messages
/// over its `max_payload` (1 MiB by default).
const BATCH_BYTES: usize = 256 * 1024;

/// The link to one member node: takes what the room queued on that node's proxies, as it comes,
/// and sends it as one [`SocketBatch`] per wake-up. A room queues a frame on all its members
/// under its lock, so by the time this task runs, every proxy of the node has it.
async fn carry(cluster: Arc<Cluster>, node: String, mut attach: mpsc::UnboundedReceiver<Attach>) {
    let mut queues: SelectAll<ProxyQueue> = SelectAll::new();
    let mut attaching = true;
    loop {
        let first = tokio::select! {
            attached = attach.recv(), if attaching => {
                match attached {
                    Some((member, rx)) => {
                        let member = Arc::new(member);
                        let queue = futures::stream::unfold(rx, |mut rx| async move {
                            rx.recv().await.map(|out| (out, rx))
                        })
                        .map(move |out| (member.clone(), out));
                        queues.push(queue.boxed());
                    }
                    None => attaching = false,
                }
                continue;
            }
            Some(entry) = queues.next(), if !queues.is_empty() => entry,
            else => return,
        };
        let mut batch = Batcher::default();
        batch.add(first);
        while batch.bytes < BATCH_BYTES {
            match queues.next().now_or_never() {
                Some(Some(entry)) => batch.add(entry),
                _ => break,
            }
        }
        cluster.socket_batch(&node, batch.finish());
    }
}

/// Builds a [`SocketBatch`]: a frame queued on several proxies is carried once.
#[derive(Default)]
struct Batcher {
    members: HashMap<u64, Arc<Member>>,
    frames: Vec<(Frame, Vec<u64>)>,
    /// Frame (by address; `frames` holds it, so the address is not reused) -> its entry.
    entries: HashMap<usize, usize>,
    /// Connection -> the last entry it is in: it may only join a later one, so each connection
    /// keeps its order.
    last: HashMap<u64, usize>,
    bytes: usize,
}

impl Batcher {
    fn add(&mut self, (member, out): (Arc<Member>, Outgoing)) {
        let frames = match out {
            Outgoing::One(frame) => vec![frame],
            Outgoing::Many(frames) => frames,
        };
        let conn = member.conn_id;
        self.members.entry(conn).or_insert(member);
        for frame in frames {
            let floor = self.last.get(&conn).copied().unwrap_or(0);
            let at = match self.entries.get(&(Arc::as_ptr(&frame) as usize)) {
                Some(&at) if at >= floor => at,
                _ => {
                    self.bytes += frame.json().len();
                    self.entries
                        .insert(Arc::as_ptr(&frame) as usize, self.frames.len());
                    self.frames.push((frame, Vec::new()));
                    self.frames.len() - 1
                }
            };
            self.frames[at].1.push(conn);
            self.last.insert(conn, at);
        }
    }

    fn finish(self) -> SocketBatch {
        SocketBatch {
            members: self
                .members
                .into_values()
                .map(|m| BatchMember {
                    conn_id: m.conn_id,
                    project_id: m.project_id.clone(),
                    user_id: m.user_id.clone(),
                })
                .collect(),
            frames: self
                .frames
                .into_iter()
                .filter_map(|(frame, to)| {
                    Some(BatchedFrame {
                        frame: portable(&frame)?,
                        to,
                    })
                })
                .collect(),
        }
    }
}

/// `list_rooms` and `GET /api/v1/rooms`: a page of the public rooms of every node, merged in
/// one node's order (oldest first, then by id), and the cursor of the next page when more
/// follow. The cursor is the last room's `(created_at, room id)`, not a position, so it stays
/// valid whichever rooms open or close meanwhile and whichever node holds them. Nodes that do
/// not answer within the cluster's lobby timeout are left out.
pub async fn list_rooms(
    state: &AppState,
    project_id: &str,
    label: Option<&str>,
    cursor: Option<&str>,
    limit: Option<u32>,
) -> Result<(Vec<RoomSummary>, Option<String>), ApiError> {
    let limit = crate::social::page_limit(limit, MAX_LISTED as u32, MAX_LISTED as u32)?;
    let after = cursor.map(parse_list_cursor).transpose()?;
    let after_ref = after.as_ref().map(|(at, id)| (*at, id.as_str()));
    // One more than the page: whether a next page exists.
    let mut rooms = state
        .realtime
        .rooms
        .list_after(project_id, label, after_ref, limit + 1);
    if let Some(cluster) = &state.cluster {
        let ask = LobbyAsk::List {
            project_id: project_id.to_owned(),
            label: label.map(str::to_owned),
            after: after.clone(),
            limit: limit + 1,
        };
        let expected = state.realtime.presence.nodes().len();
        for listed in cluster.gather::<ListedRooms>(&ask, expected).await {
            rooms.extend(listed);
        }
        rooms.sort_by(|a, b| (a.0, &a.1.room_id).cmp(&(b.0, &b.1.room_id)));
    }
    let next_cursor = (rooms.len() > limit).then(|| {
        let (at, room) = &rooms[limit - 1];
        format!("{at}.{}", room.room_id)
    });
    rooms.truncate(limit);
    Ok((
        rooms.into_iter().map(|(_, room)| room).collect(),
        next_cursor,
    ))
}

/// A `next_cursor` of [`list_rooms`]: `<created_at>.<room id>`.
fn parse_list_cursor(cursor: &str) -> Result<(i64, String), ApiError> {
    cursor
        .split_once('.')
        .and_then(|(at, id)| {
            let valid_id = !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
            // Exactly what the documented pattern allows (no `+`, at most 18 digits).
            let digits = at.strip_prefix('-').unwrap_or(at);
            let valid_at =
                (1..=18).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
            Some((at.parse().ok()?, id.to_owned())).filter(|_| valid_id && valid_at)
        })
        .ok_or_else(|| ApiError::invalid("cursor is not a next_cursor of this listing"))
}

/// Whether `user_id` holds a seat in a room that lives on another node (false when no node has
/// the room, or none answered in time).
pub async fn is_member_elsewhere(
    state: &AppState,
    project_id: &str,
    room_id: &str,
    user_id: &str,
) -> bool {
    let Some(cluster) = &state.cluster else {
        return false;
    };
    let ask = LobbyAsk::Member {
        project_id: project_id.to_owned(),
        room_id: room_id.to_owned(),
        user_id: user_id.to_owned(),
    };
    cluster.ask_one::<bool>(&ask).await.unwrap_or(false)
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
