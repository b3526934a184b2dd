//! Several `aethex-server` nodes sharing one PostgreSQL database act as one service over NATS
//! (`--nats-url`; without it a node is alone and needs nothing).
//!
//! Every node publishes to, and listens on, one subject: `<prefix>.events`. One subject keeps each
//! node's events in the order it sent them (NATS orders per publisher and subject). Events:
//! - `alive`, every `heartbeat_ms`: a node not heard from for `node_timeout_ms` is taken as gone
//!   and its players' presence is dropped; `bye` when a node stops cleanly does the same at once.
//! - `presence`: a player's status on the sending node; `snapshot`: all of them, sent when a node
//!   meets another (so a node that starts late, or comes back, learns what the others know).
//! - `push`: a message for a player's sockets (`Users::send`); each node delivers to its own.
//! - `leaderboard_entry`, `leaderboard_defined`: keep the other nodes' in-memory rank indexes and
//!   board definitions in step with SQL.
//!
//! - `room_replica`, `room_closed`: each node's rooms (metadata and seats, on membership changes),
//!   so that when a node is gone another one adopts its rooms (`crate::realtime::failover`).
//!
//! Rooms across nodes (`crate::realtime::remote`) use two more subjects: `<prefix>.rooms.join`, a
//! request every node listens to and only the room's home node answers, and
//! `<prefix>.node.<node id>`, where a node receives a member's frames for its rooms and frames for
//! its own sockets from rooms elsewhere. `<prefix>.rooms.lobby` carries questions about every
//! node's rooms (the lobby listing, a player's seat in a room) that each node answers for its own.
//!
//! Matchmaking across nodes (`crate::realtime::matchmaking::remote`) uses `<prefix>.mm.<node id>`:
//! requests to the node that matches (the matchmaker) and its notices to the others.
//!
//! Plain core NATS, no JetStream: everything carried is live state that each node can rebuild
//! from its peers' snapshots or from SQL, so nothing needs to be stored in NATS. Outbound events
//! pass one bounded queue, so no request or socket ever waits on NATS.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use aethex_protocol::realtime::ServerMessage;
use aethex_protocol::social::LeaderboardDefinition;
use bytes::Bytes;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::app::{AppInner, AppState};
use crate::config::ClusterConfig;
use crate::realtime::conn::encode;
use crate::realtime::failover::{self, Failover, Replica};
use crate::realtime::matchmaking::remote as mm_remote;
use crate::realtime::presence::{NodeStatus, Presence};
use crate::realtime::remote::{
    self, JoinReply, JoinRequest, LobbyAsk, RemoteMembers, RoomOp, SocketBatch, SocketFrame,
};
use crate::social::leaderboards::EntryChange;

/// Events waiting to be published; beyond this they are dropped (and logged) rather than
/// slowing a request down.
const OUTBOUND_QUEUE: usize = 16 * 1024;
/// How long a stopping node waits for its last events (`bye`) to reach NATS.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a join waits for the node holding the room; nodes without it stay silent, so this is
/// also how long a join to a room no node has takes to fail.
const JOIN_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a node waits for the matchmaker's answer before telling the player to retry.
const MM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a question to every node (the lobby listing) waits for their answers; a node that
/// has not answered by then is left out.
const LOBBY_TIMEOUT: Duration = Duration::from_millis(500);

type Subscriptions = (
    mpsc::Receiver<(String, Bytes)>,
    async_nats::Subscriber,
    async_nats::Subscriber,
    async_nats::Subscriber,
);

pub struct Cluster {
    node_id: String,
    prefix: String,
    subject: String,
    client: async_nats::Client,
    /// `(subject, payload)`, published in this order.
    outbound: mpsc::Sender<(String, Bytes)>,
    /// Taken by `start`.
    pending: Mutex<Option<Subscriptions>>,
    /// `<prefix>.rooms.lobby`, taken by `start`.
    lobby: Mutex<Option<async_nats::Subscriber>>,
    heartbeat: Duration,
    node_timeout: Duration,
    stop: CancellationToken,
    publisher: Mutex<Option<JoinHandle<()>>>,
    /// `<prefix>.mm.<node id>`, taken by `start`.
    mm_inbox: Mutex<Option<async_nats::Subscriber>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    node: String,
    #[serde(flatten)]
    event: Event,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Event {
    Alive,
    Bye,
    Presence(NodeStatus),
    Snapshot {
        users: Vec<NodeStatus>,
        /// Set by a node that just met the sender: the others answer with their own.
        want_reply: bool,
    },
    Push {
        project_id: String,
        user_id: String,
        message: ServerMessage,
    },
    LeaderboardEntry(EntryChange),
    LeaderboardDefined {
        project_id: String,
        def: LeaderboardDefinition,
    },
    RoomReplica(Replica),
    RoomClosed {
        room_id: String,
    },
}

/// What one node sends another (`<prefix>.node.<id>`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Direct {
    RoomOp(RoomOp),
    SocketFrame(SocketFrame),
    SocketBatch(SocketBatch),
    /// A member's socket dropped: its seat in a room of the receiving node goes away.
    MemberAway {
        member: remote::Member,
        room_id: String,
    },
}

/// A question on `<prefix>.rooms.lobby`, and who asks (it hears its own question too).
#[derive(Debug, Serialize, Deserialize)]
struct LobbyRequest<A> {
    node: String,
    ask: A,
}

#[derive(Debug, Serialize, Deserialize)]
struct JoinAnswer {
    node: String,
    reply: JoinReply,
}

impl Cluster {
    /// Connects when `config.nats_url` is set; `None` for a single node.
    pub async fn connect(config: &ClusterConfig) -> anyhow::Result<Option<Arc<Self>>> {
        if config.nats_url.is_empty() {
            return Ok(None);
        }
        let node_id = crate::db::new_id();
        let client = async_nats::ConnectOptions::new()
            .name(format!("aethex-server {node_id}"))
            .connect(config.nats_url.as_str())
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach NATS at {}: {e}", config.nats_url))?;
        let prefix = config.subject_prefix.clone();
        let subject = format!("{prefix}.events");
        // Subscribed before anything is published, so no event of a peer is missed.
        let subscribe = |subject: String| {
            let client = client.clone();
            async move {
                client
                    .subscribe(subject.clone())
                    .await
                    .map_err(|e| anyhow::anyhow!("subscribing to {subject}: {e}"))
            }
        };
        let events = subscribe(subject.clone()).await?;
        let direct = subscribe(format!("{prefix}.node.{node_id}")).await?;
        let joins = subscribe(format!("{prefix}.rooms.join")).await?;
        let mm_inbox = subscribe(format!("{prefix}.mm.{node_id}")).await?;
        let lobby = subscribe(format!("{prefix}.rooms.lobby")).await?;
        let (outbound, rx) = mpsc::channel(OUTBOUND_QUEUE);
        tracing::info!(node = %node_id, %subject, "joined the cluster");
        Ok(Some(Arc::new(Self {
            node_id,
            prefix,
            subject,
            client,
            outbound,
            pending: Mutex::new(Some((rx, events, direct, joins))),
            lobby: Mutex::new(Some(lobby)),
            heartbeat: Duration::from_millis(config.heartbeat_ms.max(1)),
            node_timeout: Duration::from_millis(config.node_timeout_ms.max(1)),
            stop: CancellationToken::new(),
            publisher: Mutex::new(None),
            mm_inbox: Mutex::new(Some(mm_inbox)),
        })))
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// How long a silent node is still taken for alive.
    pub fn node_timeout(&self) -> Duration {
        self.node_timeout
    }

    /// Resolves when the node leaves the cluster.
    pub fn stopped(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }

    /// Starts publishing, listening and the heartbeat. The tasks hold the server weakly and end
    /// with `shutdown` (or when the server is dropped).
    pub fn start(self: &Arc<Self>, state: &AppState) {
        let Some((mut rx, subscriber, direct, joins)) = lock(&self.pending).take() else {
            return;
        };
        let weak: Weak<AppInner> = Arc::downgrade(&state.0);

        let this = self.clone();
        let publisher = tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    payload = rx.recv() => match payload {
                        Some((subject, payload)) => this.publish(subject, payload).await,
                        None => break,
                    },
                    _ = this.stop.cancelled() => break,
                }
            }
            // What was queued before the stop still goes out, then the goodbye.
            while let Ok((subject, payload)) = rx.try_recv() {
                this.publish(subject, payload).await;
            }
            if let Some(bye) = this.encode(Event::Bye) {
                this.publish(this.subject.clone(), bye).await;
            }
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, this.client.flush()).await;
        });
        *lock(&self.publisher) = Some(publisher);

        self.listen(
            subscriber,
            &weak,
            |this, state, message| match serde_json::from_slice::<Envelope>(&message.payload) {
                Ok(envelope) => this.dispatch(&state, envelope),
                Err(e) => tracing::warn!(error = %e, "undecodable cluster event"),
            },
        );

        self.listen(
            direct,
            &weak,
            |this, state, message| match serde_json::from_slice::<Direct>(&message.payload) {
                Ok(Direct::RoomOp(op)) => RemoteMembers::serve_op(&state, this, op),
                Ok(Direct::SocketBatch(batch)) => RemoteMembers::deliver_batch(&state, batch),
                Ok(Direct::SocketFrame(f)) => RemoteMembers::deliver_frame(&state, f),
                Ok(Direct::MemberAway { member, room_id }) => {
                    failover::member_away(&state, &member, &room_id);
                }
                Err(e) => tracing::warn!(error = %e, "undecodable message for this node"),
            },
        );

        self.listen(joins, &weak, |this, state, message| {
            let (Some(reply_to), Ok(request)) = (
                message.reply,
                serde_json::from_slice::<JoinRequest>(&message.payload),
            ) else {
                return;
            };
            if request.member.node == this.node_id {
                return;
            }
            if let Some(reply) = RemoteMembers::serve_join(&state, this, request) {
                let answer = JoinAnswer {
                    node: this.node_id.clone(),
                    reply,
                };
                if let Ok(payload) = serde_json::to_vec(&answer) {
                    this.queue(reply_to.to_string(), payload.into());
                }
            }
        });

        if let Some(inbox) = lock(&self.mm_inbox).take() {
            self.listen(inbox, &weak, |this, state, message| {
                let reply = message.reply.map(|r| r.to_string());
                mm_remote::serve(&state, this, reply, &message.payload);
            });
        }
        if let Some(lobby) = lock(&self.lobby).take() {
            self.listen(lobby, &weak, Self::serve_lobby);
        }

        failover::start(state, self);
        let this = self.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(this.heartbeat);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    _ = this.stop.cancelled() => return,
                }
                let Some(inner) = weak.upgrade() else { return };
                let state = AppState(inner);
                this.send(Event::Alive);
                for node in state.realtime.presence.silent_nodes(this.node_timeout) {
                    tracing::warn!(%node, "cluster node went silent; dropping its players");
                    Presence::node_gone(&state, &node);
                    failover::node_gone(&state, &this, &node);
                }
            }
        });
    }

    /// Says goodbye (the others drop this node's players at once) and stops the tasks.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let publisher = lock(&self.publisher).take();
        if let Some(publisher) = publisher {
            let _ = publisher.await;
        }
    }

    pub fn announce_presence(&self, status: NodeStatus) {
        self.send(Event::Presence(status));
    }

    /// Hands a frame for a player to the other nodes, which queue it on their sockets of that
    /// player. Sent to all nodes rather than to those the player is known on, so a socket that
    /// opened a moment ago on another node gets it too.
    pub fn forward_push(&self, project_id: &str, user_id: &str, message: &ServerMessage) {
        self.send(Event::Push {
            project_id: project_id.to_owned(),
            user_id: user_id.to_owned(),
            message: message.clone(),
        });
    }

    pub fn leaderboard_entry(&self, change: EntryChange) {
        self.send(Event::LeaderboardEntry(change));
    }

    pub fn leaderboard_defined(&self, project_id: &str, def: LeaderboardDefinition) {
        self.send(Event::LeaderboardDefined {
            project_id: project_id.to_owned(),
            def,
        });
    }

    /// Asks the node holding a room to seat a member of this node: the answer and the home
    /// node's id, or `None` when no node answered (no node has the room).
    pub async fn request_join(&self, request: &JoinRequest) -> Option<(JoinReply, String)> {
        let payload = serde_json::to_vec(request).ok()?;
        let subject = format!("{}.rooms.join", self.prefix);
        let asked = self.client.request(subject, payload.into());
        let message = tokio::time::timeout(JOIN_TIMEOUT, asked).await.ok()?.ok()?;
        let answer: JoinAnswer = serde_json::from_slice(&message.payload).ok()?;
        Some((answer.reply, answer.node))
    }

    /// A member's frame for a room on `home`.
    pub fn room_op(&self, home: &str, op: RoomOp) {
        self.direct(home, Direct::RoomOp(op));
    }

    /// Frames for several sockets on `node`.
    pub fn socket_batch(&self, node: &str, batch: SocketBatch) {
        if !batch.frames.is_empty() {
            self.direct(node, Direct::SocketBatch(batch));
        }
    }

    /// Asks every other node and gathers their answers until `expected` came or the lobby
    /// timeout passed.
    pub async fn gather<T: DeserializeOwned>(&self, ask: &LobbyAsk, expected: usize) -> Vec<T> {
        let mut answers = Vec::new();
        if expected == 0 {
            return answers;
        }
        let Some(payload) = self.lobby_request(ask) else {
            return answers;
        };
        let inbox = self.client.new_inbox();
        let mut replies = match self.client.subscribe(inbox.clone()).await {
            Ok(replies) => replies,
            Err(e) => {
                tracing::warn!(error = %e, "subscribing to the lobby's answers");
                return answers;
            }
        };
        let subject = format!("{}.rooms.lobby", self.prefix);
        if let Err(e) = self
            .client
            .publish_with_reply(subject, inbox, payload)
            .await
        {
            tracing::warn!(error = %e, "asking the other nodes");
            return answers;
        }
        let deadline = tokio::time::Instant::now() + LOBBY_TIMEOUT;
        while answers.len() < expected {
            match tokio::time::timeout_at(deadline, replies.next()).await {
                Ok(Some(reply)) => match serde_json::from_slice(&reply.payload) {
                    Ok(answer) => answers.push(answer),
                    Err(e) => tracing::warn!(error = %e, "undecodable answer from a node"),
                },
                _ => break,
            }
        }
        let _ = replies.unsubscribe().await;
        answers
    }

    /// Asks the other nodes a question only one of them answers: its answer, or `None` when
    /// none did within `JOIN_TIMEOUT`.
    pub async fn ask_one<T: DeserializeOwned>(&self, ask: &LobbyAsk) -> Option<T> {
        let payload = self.lobby_request(ask)?;
        let subject = format!("{}.rooms.lobby", self.prefix);
        let asked = self.client.request(subject, payload);
        let reply = tokio::time::timeout(JOIN_TIMEOUT, asked).await.ok()?.ok()?;
        serde_json::from_slice(&reply.payload).ok()
    }

    fn lobby_request(&self, ask: &LobbyAsk) -> Option<Bytes> {
        let request = LobbyRequest {
            node: self.node_id.clone(),
            ask,
        };
        serde_json::to_vec(&request).ok().map(Bytes::from)
    }

    /// Answers another node's question about this node's rooms.
    fn serve_lobby(self: &Arc<Self>, state: AppState, message: async_nats::Message) {
        let (Some(reply_to), Ok(request)) = (
            message.reply,
            serde_json::from_slice::<LobbyRequest<LobbyAsk>>(&message.payload),
        ) else {
            return;
        };
        if request.node == self.node_id {
            return;
        }
        let answer = RemoteMembers::serve_lobby(&state, request.ask);
        if let Some(payload) = answer.and_then(|a| serde_json::to_vec(&a).ok()) {
            self.queue(reply_to.to_string(), payload.into());
        }
    }

    /// Runs `handle` on each message of `subscription` until the cluster stops, the
    /// subscription ends or the server is gone.
    fn listen(
        self: &Arc<Self>,
        mut subscription: async_nats::Subscriber,
        weak: &Weak<AppInner>,
        handle: impl Fn(&Arc<Self>, AppState, async_nats::Message) + Send + 'static,
    ) {
        let (this, weak) = (self.clone(), weak.clone());
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    message = subscription.next() => match message {
                        Some(message) => message,
                        None => return,
                    },
                    _ = this.stop.cancelled() => return,
                };
                let Some(inner) = weak.upgrade() else { return };
                handle(&this, AppState(inner), message);
            }
        });
    }

    /// One of this node's rooms as it is now, for the other nodes to adopt if this one dies.
    pub fn room_replica(&self, replica: Replica) {
        self.send(Event::RoomReplica(replica));
    }

    pub fn room_closed(&self, room_id: &str) {
        self.send(Event::RoomClosed {
            room_id: room_id.to_owned(),
        });
    }

    /// `member`'s socket dropped: its seat in `room_id` on `home` waits for a resume.
    pub fn member_away(&self, home: &str, member: remote::Member, room_id: &str) {
        let room_id = room_id.to_owned();
        self.direct(home, Direct::MemberAway { member, room_id });
    }

    /// A frame for one socket on `node`.
    pub fn socket_frame(&self, node: &str, frame: SocketFrame) {
        self.direct(node, Direct::SocketFrame(frame));
    }

    /// A matchmaking request to `node`: its answer, or `None` when none came in time.
    pub async fn mm_request(&self, node: &str, payload: Bytes) -> Option<Bytes> {
        let asked = self.client.request(self.mm_subject(node), payload);
        let message = tokio::time::timeout(MM_TIMEOUT, asked).await.ok()?.ok()?;
        Some(message.payload)
    }

    /// A matchmaking message for `node` that needs no answer.
    pub fn mm_notice(&self, node: &str, payload: Bytes) {
        self.queue(self.mm_subject(node), payload);
    }

    /// The answer to a matchmaking request (`to`: its reply subject).
    pub fn mm_reply(&self, to: String, payload: Bytes) {
        self.queue(to, payload);
    }

    fn mm_subject(&self, node: &str) -> String {
        format!("{}.mm.{node}", self.prefix)
    }

    fn direct(&self, node: &str, message: Direct) {
        match serde_json::to_vec(&message) {
            Ok(payload) => self.queue(format!("{}.node.{node}", self.prefix), payload.into()),
            Err(e) => tracing::error!(error = %e, "encoding a message for another node"),
        }
    }

    fn send(&self, event: Event) {
        if let Some(payload) = self.encode(event) {
            self.queue(self.subject.clone(), payload);
        }
    }

    fn queue(&self, subject: String, payload: Bytes) {
        if let Err(e) = self.outbound.try_send((subject, payload)) {
            tracing::warn!(error = %e, "cluster outbound queue full; a message is dropped");
        }
    }

    fn encode(&self, event: Event) -> Option<Bytes> {
        let envelope = Envelope {
            node: self.node_id.clone(),
            event,
        };
        match serde_json::to_vec(&envelope) {
            Ok(bytes) => Some(bytes.into()),
            Err(e) => {
                tracing::error!(error = %e, "encoding a cluster event");
                None
            }
        }
    }

    async fn publish(&self, subject: String, payload: Bytes) {
        if let Err(e) = self.client.publish(subject, payload).await {
            tracing::warn!(error = %e, "publishing a cluster event");
        }
    }

    fn dispatch(self: &Arc<Self>, state: &AppState, envelope: Envelope) {
        let node = envelope.node;
        if node == self.node_id {
            return;
        }
        let presence = &state.realtime.presence;
        if presence.node_heard(&node) && !matches!(envelope.event, Event::Bye) {
            // A node met for the first time (or again after it went silent): it learns this
            // node's players and tells its own.
            self.send(Event::Snapshot {
                users: presence.local_snapshot(),
                want_reply: true,
            });
            failover::replicate_all(state);
        }
        match envelope.event {
            Event::Alive => {}
            Event::Bye => {
                Presence::node_gone(state, &node);
                failover::node_gone(state, self, &node);
            }
            Event::Presence(update) => Presence::remote_update(state, &node, update),
            Event::Snapshot { users, want_reply } => {
                Presence::remote_snapshot(state, &node, users);
                if want_reply {
                    self.send(Event::Snapshot {
                        users: presence.local_snapshot(),
                        want_reply: false,
                    });
                }
            }
            Event::Push {
                project_id,
                user_id,
                message,
            } => {
                // Encoded here, once for this node's sockets, in whichever encoding each speaks.
                state
                    .realtime
                    .users
                    .send_local(&project_id, &user_id, &encode(None, message));
            }
            Event::RoomReplica(replica) => Failover::replica_received(state, &node, replica),
            Event::RoomClosed { room_id } => Failover::room_closed(state, &node, &room_id),
            Event::LeaderboardEntry(change) => state.social.leaderboards.apply_remote(change),
            Event::LeaderboardDefined { project_id, def } => {
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = state.social.leaderboards.install(&project_id, def).await {
                        tracing::warn!(error = ?e, "a board defined on another node");
                    }
                });
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
