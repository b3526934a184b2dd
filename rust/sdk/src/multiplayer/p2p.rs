//! Peer-to-peer links for a [`super::MultiplayerPeer`]: one WebRTC connection (webrtc-rs) to each
//! other member of the room, with two negotiated data channels, reliable-ordered (id 0) and
//! unreliable-unordered (id 1), signaled through the realtime socket (`signal` frames).
//!
//! # Per member
//! - The member with the lower user id offers, so two members never offer to each other at once
//!   (no glare); the other answers every offer it gets.
//! - Attempt 1, **direct**: STUN servers only, every candidate type. Not open within
//!   [`P2pConfig::direct_timeout`]: attempt 2, **turn**: a new connection with the server's TURN
//!   credentials and relay-only ICE. Not open within [`P2pConfig::turn_timeout`] (or no TURN
//!   configured): the **relay** (the realtime socket), and the offerer tells the other side with a
//!   `fallback` signal. [`P2pConfig::relay_only_ice`] skips attempt 1 (a player who must not
//!   reveal their address).
//! - The game sees a member as connected (`peer_connected`) once its link has settled on a path,
//!   so packets never switch path under a running exchange except when an open link dies later
//!   (it then stays on the relay).
//! - Rooms of more than [`P2pConfig::mesh_size`] members open no new links: the members past
//!   the limit are reached over the relay.
//!
//! # Data channel frames
//! `[mode u8][channel u32 LE][sequence u64 LE][payload]`, `mode` being Godot's transfer mode, the
//! sequence numbering each sender's packets to one receiver (to drop stale `unreliable_ordered`
//! packets as the relay does with its `seq`). Mode `PING`/`PONG` frames carry a send time and
//! measure the round trip reported as `rtt_ms`.
//!
//! Everything runs as tasks on the client's runtime (webrtc-rs's drivers included: the default
//! reactor pool stays off), so `Client::shutdown` ends all of it and no thread is left behind.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aethex_protocol::realtime::ClientMessage;
use aethex_protocol::signaling::{IceConfig, PeerSignal, ICE_PATH};
use aethex_protocol::ErrorCode;
use bytes::BytesMut;
use reqwest::Method;
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
    RTCIceCandidateInit, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnectionIceEvent,
    RTCPeerConnectionState, RTCSessionDescription,
};

use super::peer::{PeerInbox, RoomEvent};
use super::socket::Realtime;
use super::{lock, MULTIPLAYER};
use crate::client::Shared;
use crate::http::Request;
use crate::{SdkError, Value};

/// Frame modes past Godot's transfer modes (0-2).
const PING: u8 = 0xF0;
const PONG: u8 = 0xF1;
const HEADER: usize = 13;
/// webrtc-rs delivers data channel messages up to 16 KiB; bigger packets take the relay.
pub(crate) const MAX_DIRECT_PAYLOAD: usize = 16 * 1024 - HEADER;
const PING_EVERY: Duration = Duration::from_secs(1);
/// Packets waiting for one member's data channel; more are refused with `rate_limited`.
const LINK_QUEUE: usize = 1024;

/// How a [`super::MultiplayerPeer`] reaches the other members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerTransport {
    /// Everything through the server's socket relay.
    #[default]
    Relay,
    /// WebRTC data channels to each member where they open, the relay where they do not.
    P2p,
}

impl PeerTransport {
    /// `"relay"`, or `"p2p"` / `"auto"` (the same: a link that cannot open falls back to the
    /// relay in either).
    pub fn parse(text: &str) -> Result<Self, SdkError> {
        match text {
            "relay" => Ok(Self::Relay),
            "p2p" | "auto" => Ok(Self::P2p),
            other => Err(SdkError::new(
                ErrorCode::InvalidRequest,
                format!("unknown transport {other:?}: \"p2p\", \"auto\" or \"relay\""),
            )),
        }
    }
}

/// P2P tuning, part of [`super::RealtimeConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct P2pConfig {
    /// Largest room (members, the caller included) that gets peer-to-peer links.
    pub mesh_size: usize,
    /// How long a direct (host or STUN) attempt may take before TURN is tried.
    pub direct_timeout: Duration,
    /// How long the TURN attempt may take before the member is reached over the relay.
    pub turn_timeout: Duration,
    /// Skip the direct attempt: only TURN-relayed candidates, so no other player learns this
    /// player's address.
    pub relay_only_ice: bool,
    /// Local address the UDP sockets bind; unspecified (the default) binds every non-loopback
    /// interface.
    pub bind_ip: IpAddr,
}

impl Default for P2pConfig {
    fn default() -> Self {
        Self {
            mesh_size: 8,
            direct_timeout: Duration::from_secs(5),
            turn_timeout: Duration::from_secs(5),
            relay_only_ice: false,
            bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }
}

/// The path a member's packets take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPath {
    Direct,
    Turn,
    Relay,
}

impl LinkPath {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Turn => "turn",
            Self::Relay => "relay",
        }
    }
}

/// A member's link as `peer_connection_changed` reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkStatus {
    /// `"connecting"` (path: the attempt under way) or `"connected"`.
    pub state: &'static str,
    pub path: LinkPath,
    /// Round trip over the data channel in milliseconds; `None` on the relay or before the
    /// first measure.
    pub rtt_ms: Option<f64>,
}

/// What the socket task and the mesh hand a link task.
#[derive(Debug)]
pub(crate) enum MeshInput {
    Signal { from: String, signal: PeerSignal },
    Joined(String),
    Left(String),
}

/// One member's side of the mesh, as `put_packet` uses it on the game's thread.
struct LinkOut {
    /// Both data channels are open: packets go direct.
    open: AtomicBool,
    /// Next sequence number of a packet to this member.
    sequence: AtomicU64,
    tx: mpsc::Sender<(bool, Vec<u8>)>,
    status: Mutex<LinkStatus>,
}

/// The peer-to-peer links of one room.
pub(crate) struct Mesh {
    room_id: String,
    links: Mutex<HashMap<String, Arc<LinkOut>>>,
}

/// What a link task needs from its surroundings.
#[derive(Clone)]
struct Context {
    shared: Arc<Shared>,
    realtime: Arc<Realtime>,
    inbox: Arc<PeerInbox>,
    mesh: Arc<Mesh>,
    config: P2pConfig,
    self_user: String,
    ice: Arc<tokio::sync::OnceCell<IceConfig>>,
}

impl Mesh {
    /// Starts the mesh of `room_id` on the client's runtime; `members`: the room now. It runs
    /// until every sender of its input is dropped (the peer's and the socket's).
    pub fn start(
        shared: Arc<Shared>,
        realtime: Arc<Realtime>,
        inbox: Arc<PeerInbox>,
        room_id: String,
        self_user: String,
        members: Vec<String>,
    ) -> (Arc<Mesh>, mpsc::UnboundedSender<MeshInput>) {
        let (input, rx) = mpsc::unbounded_channel();
        let mesh = Arc::new(Mesh {
            room_id,
            links: Mutex::new(HashMap::new()),
        });
        let context = Context {
            config: shared.config.realtime.p2p,
            shared: shared.clone(),
            realtime,
            inbox,
            mesh: mesh.clone(),
            self_user,
            ice: Arc::new(tokio::sync::OnceCell::new()),
        };
        shared.handle.spawn(run_mesh(context, members, rx));
        (mesh, input)
    }

    /// Queues `frame` (built by [`frame`]) for `user_id` when its data channels are open;
    /// `false` when the packet must take the relay.
    pub fn send(
        &self,
        user_id: &str,
        reliable: bool,
        mode: u8,
        channel: u32,
        payload: &[u8],
    ) -> Result<bool, SdkError> {
        let Some(link) = lock(&self.links).get(user_id).cloned() else {
            return Ok(false);
        };
        if !link.open.load(Ordering::Acquire) || payload.len() > MAX_DIRECT_PAYLOAD {
            return Ok(false);
        }
        let sequence = link.sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let data = frame(mode, channel, sequence, payload);
        match link.tx.try_send((reliable, data)) {
            Ok(()) => Ok(true),
            Err(mpsc::error::TrySendError::Full(_)) => Err(SdkError::new(
                ErrorCode::RateLimited,
                "too many packets waiting for a peer-to-peer link",
            )),
            // The link task ended (its connection died): the relay takes over.
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(false),
        }
    }

    /// The link to `user_id` (no I/O).
    pub fn status(&self, user_id: &str) -> Option<LinkStatus> {
        lock(&self.links)
            .get(user_id)
            .map(|link| *lock(&link.status))
    }
}

fn frame(mode: u8, channel: u32, sequence: u64, payload: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(HEADER + payload.len());
    data.push(mode);
    data.extend_from_slice(&channel.to_le_bytes());
    data.extend_from_slice(&sequence.to_le_bytes());
    data.extend_from_slice(payload);
    data
}

/// Routes inputs to one task per member; ends when the peer closes (its sender is dropped).
async fn run_mesh(
    context: Context,
    members: Vec<String>,
    mut rx: mpsc::UnboundedReceiver<MeshInput>,
) {
    let mut links: HashMap<String, mpsc::UnboundedSender<PeerSignal>> = HashMap::new();
    let mut count = members.len();
    for user in members.into_iter().filter(|u| *u != context.self_user) {
        let tx = spawn_link(&context, user.clone(), count);
        links.insert(user, tx);
    }
    while let Some(input) = rx.recv().await {
        match input {
            MeshInput::Joined(user) => {
                if user == context.self_user || links.contains_key(&user) {
                    continue;
                }
                count += 1;
                let tx = spawn_link(&context, user.clone(), count);
                links.insert(user, tx);
            }
            MeshInput::Left(user) => {
                count = count.saturating_sub(1);
                // Dropping the sender ends the link task, which closes its connection.
                links.remove(&user);
                lock(&context.mesh.links).remove(&user);
            }
            MeshInput::Signal { from, signal } => {
                if let Some(tx) = links.get(&from) {
                    let _ = tx.send(signal);
                }
            }
        }
    }
}

fn spawn_link(
    context: &Context,
    user: String,
    room_size: usize,
) -> mpsc::UnboundedSender<PeerSignal> {
    let (signals, signal_rx) = mpsc::unbounded_channel();
    let (tx, out_rx) = mpsc::channel(LINK_QUEUE);
    let out = Arc::new(LinkOut {
        open: AtomicBool::new(false),
        sequence: AtomicU64::new(0),
        tx,
        status: Mutex::new(LinkStatus {
            state: "connecting",
            path: LinkPath::Direct,
            rtt_ms: None,
        }),
    });
    lock(&context.mesh.links).insert(user.clone(), out.clone());
    let link = Link {
        context: context.clone(),
        offerer: context.self_user < user,
        user,
        out,
        signals: signal_rx,
        outbound: out_rx,
        room_size,
    };
    context.shared.handle.spawn(link.run());
    signals
}

/// What the connection's event handler reports to its link task.
enum Happened {
    Candidate(RTCIceCandidateInit),
    State(RTCPeerConnectionState),
    ChannelOpen(bool),
    ChannelClosed,
    Message(Vec<u8>),
}

struct Handler {
    tx: mpsc::UnboundedSender<Happened>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self.tx.send(Happened::Candidate(init));
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self.tx.send(Happened::State(state));
    }
}

/// One attempt's connection and its two channels.
struct Attempt {
    pc: Box<dyn DynPeerConnection>,
    reliable: Arc<dyn DataChannel>,
    unreliable: Arc<dyn DataChannel>,
    events: mpsc::UnboundedReceiver<Happened>,
    /// Candidates that arrived before the remote description.
    early: Vec<RTCIceCandidateInit>,
    has_remote: bool,
    opened: (bool, bool),
    /// This side gathers relayed candidates only.
    relay_only: bool,
    /// The other side's candidates seen so far: (relayed ones, others).
    remote_kinds: (bool, bool),
}

impl Attempt {
    /// Notes the kind of a remote candidate (`candidate:...` line or an SDP `a=candidate` line).
    fn note_remote(&mut self, candidate: &str) {
        if candidate.contains(" typ relay") {
            self.remote_kinds.0 = true;
        } else if candidate.contains(" typ ") {
            self.remote_kinds.1 = true;
        }
    }

    fn note_remote_sdp(&mut self, sdp: &str) {
        for line in sdp.lines().filter(|l| l.starts_with("a=candidate")) {
            self.note_remote(line);
        }
    }

    /// The open connection's path. Every attempt has either no TURN at all on either side (the
    /// direct attempt) or relay-only candidates on at least one side, so the candidate kinds
    /// say whether packets pass a TURN server.
    fn path(&self) -> LinkPath {
        let (relayed, others) = self.remote_kinds;
        if self.relay_only || (relayed && !others) {
            LinkPath::Turn
        } else {
            LinkPath::Direct
        }
    }
}

/// The parts of [`PeerConnection`] a link uses, object-safe (the builder returns an opaque type).
#[async_trait::async_trait]
trait DynPeerConnection: Send + Sync {
    async fn offer(&self) -> Result<String, webrtc::error::Error>;
    async fn answer(&self, offer: String) -> Result<String, webrtc::error::Error>;
    async fn accept(&self, answer: String) -> Result<(), webrtc::error::Error>;
    async fn candidate(&self, candidate: RTCIceCandidateInit) -> Result<(), webrtc::error::Error>;
    async fn close(&self);
}

#[async_trait::async_trait]
impl<P: PeerConnection> DynPeerConnection for P {
    async fn offer(&self) -> Result<String, webrtc::error::Error> {
        let offer = self.create_offer(None).await?;
        let sdp = offer.sdp.clone();
        self.set_local_description(offer).await?;
        Ok(sdp)
    }

    async fn answer(&self, offer: String) -> Result<String, webrtc::error::Error> {
        self.set_remote_description(RTCSessionDescription::offer(offer)?)
            .await?;
        let answer = self.create_answer(None).await?;
        let sdp = answer.sdp.clone();
        self.set_local_description(answer).await?;
        Ok(sdp)
    }

    async fn accept(&self, answer: String) -> Result<(), webrtc::error::Error> {
        self.set_remote_description(RTCSessionDescription::answer(answer)?)
            .await
    }

    async fn candidate(&self, candidate: RTCIceCandidateInit) -> Result<(), webrtc::error::Error> {
        self.add_ice_candidate(candidate).await
    }

    async fn close(&self) {
        let _ = PeerConnection::close(self).await;
    }
}

/// What woke a connecting link.
enum Step {
    Signal(Option<PeerSignal>),
    Event(Option<Happened>),
    Timeout,
}

/// What woke an open link.
enum Serving {
    Packet(Option<(bool, Vec<u8>)>),
    Event(Option<Happened>),
    Signal(Option<PeerSignal>),
    Ping,
}

async fn next_step(
    signals: &mut mpsc::UnboundedReceiver<PeerSignal>,
    attempt: &mut Attempt,
    deadline: Instant,
) -> Step {
    tokio::select! {
        signal = signals.recv() => Step::Signal(signal),
        happened = attempt.events.recv() => Step::Event(happened),
        () = tokio::time::sleep_until(deadline.into()) => Step::Timeout,
    }
}

fn candidate_init(
    candidate: String,
    sdp_mid: Option<String>,
    sdp_mline_index: Option<u16>,
) -> RTCIceCandidateInit {
    RTCIceCandidateInit {
        candidate,
        sdp_mid,
        sdp_mline_index,
        ..Default::default()
    }
}

struct Link {
    context: Context,
    user: String,
    offerer: bool,
    out: Arc<LinkOut>,
    signals: mpsc::UnboundedReceiver<PeerSignal>,
    outbound: mpsc::Receiver<(bool, Vec<u8>)>,
    room_size: usize,
}

/// How an attempt ended.
enum Outcome {
    Open(Attempt),
    Failed,
    /// The other side gave up (`fallback`) or left: no further attempts.
    GiveUp,
}

impl Link {
    async fn run(mut self) {
        let path = if self.room_size > self.context.config.mesh_size {
            if self.offerer {
                self.signal(PeerSignal::Fallback);
            }
            None
        } else {
            self.connect().await
        };
        let Some((attempt, path)) = path else {
            self.settle(LinkPath::Relay, None);
            // Stay until the member leaves; a late offer is answered with `fallback`.
            while let Some(signal) = self.signals.recv().await {
                if matches!(signal, PeerSignal::Offer { .. }) {
                    self.signal(PeerSignal::Fallback);
                }
            }
            return;
        };
        self.serve(attempt, path).await;
    }

    /// Direct, then TURN; `None`: the relay.
    async fn connect(&mut self) -> Option<(Attempt, LinkPath)> {
        let config = self.context.config;
        let mut plan = Vec::new();
        if !config.relay_only_ice {
            plan.push((LinkPath::Direct, config.direct_timeout));
        }
        plan.push((LinkPath::Turn, config.turn_timeout));
        if !self.offerer {
            // The answerer follows the offerer's attempts; it gives up when they all are over.
            let deadline = plan.iter().map(|(_, t)| *t).sum::<Duration>() + config.direct_timeout;
            return self
                .answer_until(Instant::now() + deadline)
                .await
                .map(|attempt| {
                    let path = attempt.path();
                    (attempt, path)
                });
        }
        for (path, timeout) in plan {
            let ice = self.ice().await;
            let has_turn = ice
                .ice_servers
                .iter()
                .any(|s| s.urls.iter().any(|u| u.starts_with("turn")));
            if path == LinkPath::Turn && !has_turn {
                continue;
            }
            self.report("connecting", path, None);
            let turn = path == LinkPath::Turn;
            let Ok(attempt) = self.attempt(turn, turn, &ice).await else {
                continue;
            };
            let offered = match attempt.pc.offer().await {
                Ok(sdp) => sdp,
                Err(e) => {
                    tracing::debug!(error = %e, "creating a WebRTC offer");
                    attempt.pc.close().await;
                    continue;
                }
            };
            self.signal(PeerSignal::Offer { sdp: offered });
            match self.wait_open(attempt, Instant::now() + timeout).await {
                Outcome::Open(attempt) => {
                    let path = attempt.path();
                    return Some((attempt, path));
                }
                Outcome::Failed => continue,
                Outcome::GiveUp => return None,
            }
        }
        self.signal(PeerSignal::Fallback);
        None
    }

    /// The answerer: answers each offer with a fresh connection until one opens.
    async fn answer_until(&mut self, deadline: Instant) -> Option<Attempt> {
        let mut current: Option<Attempt> = None;
        let mut early: Vec<RTCIceCandidateInit> = Vec::new();
        let mut offers = 0;
        loop {
            let step = match current.as_mut() {
                None => {
                    let wait = tokio::time::timeout_at(deadline.into(), self.signals.recv());
                    match wait.await {
                        Ok(signal) => Step::Signal(signal),
                        Err(_) => Step::Timeout,
                    }
                }
                Some(attempt) => next_step(&mut self.signals, attempt, deadline).await,
            };
            let signal = match step {
                Step::Signal(Some(signal)) => signal,
                Step::Event(happened) => {
                    let attempt = current.as_mut().expect("events come from an attempt");
                    if let Some(happened) = happened {
                        self.on_event(attempt, happened);
                    }
                    if attempt.opened == (true, true) {
                        return current.take();
                    }
                    continue;
                }
                Step::Signal(None) | Step::Timeout => {
                    if let Some(old) = current.take() {
                        old.pc.close().await;
                    }
                    return None;
                }
            };
            match signal {
                PeerSignal::Offer { sdp } => {
                    if let Some(old) = current.take() {
                        old.pc.close().await;
                    }
                    // The offerer picks relay-only ICE for its TURN attempt; this side keeps
                    // every candidate type unless its own player asked for relay-only, and adds
                    // TURN from the second offer on (the first is the direct attempt).
                    offers += 1;
                    let ice = self.ice().await;
                    let relay_only = self.context.config.relay_only_ice;
                    let with_turn = relay_only || offers > 1;
                    let Ok(mut attempt) = self.attempt(relay_only, with_turn, &ice).await else {
                        continue;
                    };
                    let path = if relay_only {
                        LinkPath::Turn
                    } else {
                        LinkPath::Direct
                    };
                    self.report("connecting", path, None);
                    attempt.note_remote_sdp(&sdp);
                    match attempt.pc.answer(sdp).await {
                        Ok(answer) => {
                            attempt.has_remote = true;
                            for candidate in early.drain(..) {
                                attempt.note_remote(&candidate.candidate);
                                let _ = attempt.pc.candidate(candidate).await;
                            }
                            self.signal(PeerSignal::Answer { sdp: answer });
                            current = Some(attempt);
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "answering a WebRTC offer");
                            attempt.pc.close().await;
                        }
                    }
                }
                PeerSignal::Candidate {
                    candidate,
                    sdp_mid,
                    sdp_mline_index,
                } => {
                    let init = candidate_init(candidate, sdp_mid, sdp_mline_index);
                    match &mut current {
                        Some(attempt) => {
                            attempt.note_remote(&init.candidate);
                            let _ = attempt.pc.candidate(init).await;
                        }
                        None => early.push(init),
                    }
                }
                PeerSignal::Fallback => {
                    if let Some(old) = current.take() {
                        old.pc.close().await;
                    }
                    return None;
                }
                PeerSignal::Answer { .. } => {}
            }
        }
    }

    /// The offerer: waits for the answer and the channels to open.
    async fn wait_open(&mut self, mut attempt: Attempt, deadline: Instant) -> Outcome {
        loop {
            match next_step(&mut self.signals, &mut attempt, deadline).await {
                Step::Signal(None) => {
                    attempt.pc.close().await;
                    return Outcome::GiveUp;
                }
                Step::Signal(Some(PeerSignal::Answer { sdp })) if !attempt.has_remote => {
                    attempt.note_remote_sdp(&sdp);
                    if attempt.pc.accept(sdp).await.is_err() {
                        attempt.pc.close().await;
                        return Outcome::Failed;
                    }
                    attempt.has_remote = true;
                    for candidate in std::mem::take(&mut attempt.early) {
                        let _ = attempt.pc.candidate(candidate).await;
                    }
                }
                Step::Signal(Some(PeerSignal::Candidate {
                    candidate,
                    sdp_mid,
                    sdp_mline_index,
                })) => {
                    let init = candidate_init(candidate, sdp_mid, sdp_mline_index);
                    attempt.note_remote(&init.candidate);
                    if attempt.has_remote {
                        let _ = attempt.pc.candidate(init).await;
                    } else {
                        attempt.early.push(init);
                    }
                }
                Step::Signal(Some(PeerSignal::Fallback)) => {
                    attempt.pc.close().await;
                    return Outcome::GiveUp;
                }
                Step::Signal(Some(_)) => {}
                Step::Event(happened) => {
                    if let Some(happened) = happened {
                        if matches!(happened, Happened::State(RTCPeerConnectionState::Failed)) {
                            attempt.pc.close().await;
                            return Outcome::Failed;
                        }
                        self.on_event(&mut attempt, happened);
                    }
                    if attempt.opened == (true, true) {
                        return Outcome::Open(attempt);
                    }
                }
                Step::Timeout => {
                    attempt.pc.close().await;
                    return Outcome::Failed;
                }
            }
        }
    }

    /// Handles a connection event while connecting.
    fn on_event(&self, attempt: &mut Attempt, happened: Happened) {
        match happened {
            Happened::Candidate(init) => self.signal(PeerSignal::Candidate {
                candidate: init.candidate,
                sdp_mid: init.sdp_mid,
                sdp_mline_index: init.sdp_mline_index,
            }),
            Happened::ChannelOpen(reliable) => {
                if reliable {
                    attempt.opened.0 = true;
                } else {
                    attempt.opened.1 = true;
                }
            }
            // Packets can arrive before this side saw its own channels open.
            Happened::Message(data) => self.deliver(data),
            Happened::State(_) | Happened::ChannelClosed => {}
        }
    }

    /// A new connection for one attempt, with both channels created (negotiated: no
    /// `on_data_channel` round trip, the same ids on both sides). `with_turn`: TURN servers too
    /// (else STUN only); `relay_only`: relayed candidates only.
    async fn attempt(
        &self,
        relay_only: bool,
        with_turn: bool,
        ice: &IceConfig,
    ) -> Result<Attempt, webrtc::error::Error> {
        let servers = ice
            .ice_servers
            .iter()
            .filter(|s| with_turn || s.urls.iter().all(|u| u.starts_with("stun")))
            .map(|s| RTCIceServer {
                urls: s.urls.clone(),
                username: s.username.clone().unwrap_or_default(),
                credential: s.credential.clone().unwrap_or_default(),
            })
            .collect();
        let policy = if relay_only {
            RTCIceTransportPolicy::Relay
        } else {
            RTCIceTransportPolicy::All
        };
        let (tx, events) = mpsc::unbounded_channel();
        let pc = PeerConnectionBuilder::new()
            .with_configuration(
                RTCConfigurationBuilder::new()
                    .with_ice_servers(servers)
                    .with_ice_transport_policy(policy)
                    .build(),
            )
            .with_handler(Arc::new(Handler { tx: tx.clone() }))
            .with_udp_addrs(vec![SocketAddr::new(self.context.config.bind_ip, 0)])
            .build()
            .await?;
        let channel = |id: u16, reliable: bool| RTCDataChannelInit {
            ordered: reliable,
            max_retransmits: (!reliable).then_some(0),
            negotiated: Some(id),
            ..Default::default()
        };
        let reliable = pc
            .create_data_channel("reliable", Some(channel(0, true)))
            .await?;
        let unreliable = pc
            .create_data_channel("unreliable", Some(channel(1, false)))
            .await?;
        for (dc, is_reliable) in [(reliable.clone(), true), (unreliable.clone(), false)] {
            let tx = tx.clone();
            self.context.shared.handle.spawn(async move {
                while let Some(event) = dc.poll().await {
                    let happened = match event {
                        DataChannelEvent::OnOpen => Happened::ChannelOpen(is_reliable),
                        DataChannelEvent::OnMessage(message) => {
                            Happened::Message(message.data.to_vec())
                        }
                        DataChannelEvent::OnClose => Happened::ChannelClosed,
                        _ => continue,
                    };
                    if tx.send(happened).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Attempt {
            pc: Box::new(pc),
            reliable,
            unreliable,
            events,
            early: Vec::new(),
            has_remote: false,
            opened: (false, false),
            relay_only,
            remote_kinds: (false, false),
        })
    }

    /// An open link: sends queued packets, delivers received ones, measures the round trip;
    /// falls back to the relay when the connection dies.
    async fn serve(mut self, mut attempt: Attempt, path: LinkPath) {
        self.settle(path, None);
        let mut pings = tokio::time::interval(PING_EVERY);
        let started = Instant::now();
        loop {
            let step = tokio::select! {
                packet = self.outbound.recv() => Serving::Packet(packet),
                happened = attempt.events.recv() => Serving::Event(happened),
                signal = self.signals.recv() => Serving::Signal(signal),
                _ = pings.tick() => Serving::Ping,
            };
            match step {
                Serving::Packet(None) => break,
                Serving::Packet(Some((reliable, data))) => {
                    let channel = if reliable {
                        &attempt.reliable
                    } else {
                        &attempt.unreliable
                    };
                    if channel.send(BytesMut::from(&data[..])).await.is_err() && reliable {
                        break;
                    }
                }
                Serving::Event(Some(Happened::Message(data))) => {
                    if let Some(rtt) = self.on_message(&attempt, data, started).await {
                        self.report("connected", path, Some(rtt));
                    }
                }
                Serving::Event(
                    Some(Happened::State(
                        RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed
                        | RTCPeerConnectionState::Disconnected,
                    ))
                    | Some(Happened::ChannelClosed)
                    | None,
                ) => break,
                Serving::Event(Some(Happened::Candidate(init))) => {
                    self.signal(PeerSignal::Candidate {
                        candidate: init.candidate,
                        sdp_mid: init.sdp_mid,
                        sdp_mline_index: init.sdp_mline_index,
                    })
                }
                Serving::Event(Some(_)) => {}
                Serving::Signal(None) => {
                    attempt.pc.close().await;
                    return;
                }
                Serving::Signal(Some(PeerSignal::Fallback)) => break,
                Serving::Signal(Some(PeerSignal::Candidate {
                    candidate,
                    sdp_mid,
                    sdp_mline_index,
                })) => {
                    let init = candidate_init(candidate, sdp_mid, sdp_mline_index);
                    let _ = attempt.pc.candidate(init).await;
                }
                Serving::Signal(Some(_)) => {}
                Serving::Ping => {
                    let now = started.elapsed().as_micros() as u64;
                    let ping = frame(PING, 0, now, &[]);
                    let _ = attempt.unreliable.send(BytesMut::from(&ping[..])).await;
                }
            }
        }
        // The link died: the relay from now on, for good (a path that flaps would reorder
        // packets each time).
        self.out.open.store(false, Ordering::Release);
        attempt.pc.close().await;
        self.signal(PeerSignal::Fallback);
        self.report("connected", LinkPath::Relay, None);
        while self.signals.recv().await.is_some() {}
    }

    /// A data channel message; a round trip in milliseconds when it was a `PONG`.
    async fn on_message(&self, attempt: &Attempt, data: Vec<u8>, started: Instant) -> Option<f64> {
        match data.first() {
            Some(&PING) => {
                let mut pong = data;
                pong[0] = PONG;
                let _ = attempt.unreliable.send(BytesMut::from(&pong[..])).await;
                None
            }
            Some(&PONG) if data.len() >= HEADER => {
                let sent = u64::from_le_bytes(data[5..13].try_into().ok()?);
                let now = started.elapsed().as_micros() as u64;
                Some(now.saturating_sub(sent) as f64 / 1000.0)
            }
            _ => {
                self.deliver(data);
                None
            }
        }
    }

    /// Hands a received data frame to the peer, like a relayed packet.
    fn deliver(&self, data: Vec<u8>) {
        if data.len() < HEADER || data[0] > 2 {
            return;
        }
        let channel = u32::from_le_bytes(data[1..5].try_into().expect("4 bytes"));
        let sequence = u64::from_le_bytes(data[5..13].try_into().expect("8 bytes"));
        let mut packet = Vec::with_capacity(data.len() - HEADER + 1);
        packet.push(data[0]);
        packet.extend_from_slice(&data[HEADER..]);
        self.context.inbox.queue.push(RoomEvent::Packet {
            from: self.user.clone(),
            seq: sequence,
            data: packet,
            channel,
            reliable: data[0] == 2,
            direct: true,
        });
    }

    /// The link settled on `path`: packets take it from now on, and the game sees the member.
    fn settle(&self, path: LinkPath, rtt_ms: Option<f64>) {
        self.out
            .open
            .store(path != LinkPath::Relay, Ordering::Release);
        self.report("connected", path, rtt_ms);
        self.context
            .inbox
            .queue
            .push(RoomEvent::LinkSettled(self.user.clone()));
    }

    /// Records the status and emits `peer_connection_changed` when it changed (RTT: by 10% or
    /// more, so a steady link does not signal every second).
    fn report(&self, state: &'static str, path: LinkPath, rtt_ms: Option<f64>) {
        let next = LinkStatus {
            state,
            path,
            rtt_ms,
        };
        {
            let mut status = lock(&self.out.status);
            let steady_rtt = match (status.rtt_ms, rtt_ms) {
                (Some(old), Some(new)) => (new - old).abs() < old * 0.1,
                (None, None) => true,
                _ => false,
            };
            if status.state == state && status.path == path && steady_rtt {
                return;
            }
            *status = next;
        }
        self.context.shared.emit(
            MULTIPLAYER,
            "peer_connection_changed",
            vec![
                Value::String(self.user.clone()),
                Value::String(state.to_owned()),
                Value::String(path.as_str().to_owned()),
                rtt_ms.map_or(Value::Float(-1.0), Value::Float),
            ],
        );
    }

    fn signal(&self, signal: PeerSignal) {
        let message = ClientMessage::Signal {
            room_id: self.context.mesh.room_id.clone(),
            to: self.user.clone(),
            signal,
        };
        if let Err(e) = self.context.realtime.send_untracked(message) {
            tracing::debug!(error = %e, "sending a WebRTC signal");
        }
    }

    /// The deployment's STUN/TURN servers, asked once per mesh; none when the server cannot
    /// say (host candidates still connect players on one network).
    async fn ice(&self) -> IceConfig {
        let shared = self.context.shared.clone();
        self.context
            .ice
            .get_or_init(|| async move {
                let reply = shared
                    .authed(|| Request::new(Method::GET, ICE_PATH))
                    .await
                    .and_then(|reply| reply.json::<IceConfig>());
                reply.unwrap_or_else(|e| {
                    tracing::debug!(error = %e, "reading the ICE servers");
                    IceConfig {
                        ice_servers: Vec::new(),
                        expires_at: None,
                    }
                })
            })
            .await
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_parse_and_unknown_ones_are_refused() {
        assert_eq!(PeerTransport::parse("relay").unwrap(), PeerTransport::Relay);
        assert_eq!(PeerTransport::parse("p2p").unwrap(), PeerTransport::P2p);
        assert_eq!(PeerTransport::parse("auto").unwrap(), PeerTransport::P2p);
        assert_eq!(
            PeerTransport::parse("udp").unwrap_err().code,
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn frames_carry_mode_channel_and_sequence() {
        let data = frame(1, 7, 9, b"abc");
        assert_eq!(data.len(), HEADER + 3);
        assert_eq!(data[0], 1);
        assert_eq!(u32::from_le_bytes(data[1..5].try_into().unwrap()), 7);
        assert_eq!(u64::from_le_bytes(data[5..13].try_into().unwrap()), 9);
        assert_eq!(&data[HEADER..], b"abc");
    }
}
