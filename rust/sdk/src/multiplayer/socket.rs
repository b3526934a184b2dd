//! The socket task: one WebSocket per client on the client's runtime. Calls reach it through a
//! bounded channel; it writes frames with a fresh `cid`, matches replies to calls, turns pushes
//! into signals and peer events, keeps the socket's token fresh (`refresh_session`), and after a
//! drop reconnects with backoff and `resume`s the rooms.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use aethex_protocol::realtime::{
    Cid, ClientFrame, ClientMessage, ServerFrame, ServerMessage, REALTIME_PATH,
};
use aethex_protocol::{ErrorCode, ErrorEnvelope, CLIENT_KEY_HEADER};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::p2p::MeshInput;
use super::peer::{PeerInbox, RoomEvent};
use super::rooms::{room_value, tagged, wire_value, Rooms};
use super::voice;
use super::{
    free_form, lock, ConnectionState, RealtimeEncoding, CHAT, FRIENDS, MATCHMAKING, MULTIPLAYER,
};
use crate::client::Shared;
use crate::codec::plain_from_json;
use crate::http::backoff;
use crate::{RequestId, RetryConfig, SdkError, Value};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A socket that lived this long resets the reconnect backoff.
const STABLE_SOCKET: Duration = Duration::from_secs(5);

/// Pause before the socket tries again to refresh a session whose refresh failed.
const REFRESH_RETRY: Duration = Duration::from_secs(5);

/// Signals kept per room until its mesh starts: a few attempts' offers, answers and candidates.
const EARLY_SIGNALS: usize = 64;

/// How often calls waiting for a socket are checked for their timeout.
const EXPIRY_TICK: Duration = Duration::from_millis(100);

/// What a call asks the task to send.
enum Outgoing {
    Message(ClientMessage),
    /// Encoded on the task, not on the caller's (the game's) thread.
    State {
        room_id: String,
        state: Value,
        targets: Option<Vec<String>>,
        echo: bool,
    },
}

struct Command {
    /// `None`: nothing waits for it (peer packets).
    request: Option<RequestId>,
    outgoing: Outgoing,
    queued_at: Instant,
}

/// A sent frame whose reply is awaited.
enum Awaiting {
    Call {
        request: RequestId,
        /// Kept to send again once after a `token_expired` refusal.
        message: ClientMessage,
        retried: bool,
    },
    Resume,
    RefreshSession,
}

struct Pending {
    awaiting: Awaiting,
    sent_at: Instant,
}

/// A wait between reconnect attempts.
#[derive(Clone, Copy)]
struct Backoff {
    until: tokio::time::Instant,
    /// A call already cut this step short with an early attempt.
    hurried: bool,
    /// When the last attempt began: only calls queued since then may cut the step short.
    attempted_at: Instant,
}

/// How a backoff step ended.
enum Waited {
    Over,
    /// A call arrived: try to connect now.
    Hurry,
    Ended(Ended),
}

/// Why a connected socket stopped.
enum Ended {
    Dropped,
    SignedOut,
    Shutdown,
}

enum ConnectError {
    /// 401 `token_expired` on the upgrade: refresh, then connect again at once.
    TokenExpired,
    /// 401 otherwise / 403: the session is not valid for the socket.
    Refused(SdkError),
    Transient(SdkError),
}

pub(crate) struct Realtime {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Command>,
    /// Taken by the task when the first call starts it.
    rx: Mutex<Option<mpsc::Receiver<Command>>>,
    state: AtomicU8,
    rooms: Rooms,
    peers: Mutex<HashMap<String, Arc<PeerInbox>>>,
    /// P2P meshes of the rooms whose peer uses them: signals and membership go there.
    meshes: Mutex<HashMap<String, mpsc::UnboundedSender<MeshInput>>>,
    /// Signals for joined rooms that have no mesh yet (another member's peer started first),
    /// handed to the room's mesh when it starts.
    early_signals: Mutex<HashMap<String, Vec<MeshInput>>>,
    /// Voice chat, told of voice messages and of membership changes.
    voice: OnceLock<Weak<voice::Engine>>,
}

impl Realtime {
    pub fn new(shared: Arc<Shared>) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(shared.config.realtime.queue_capacity.max(1));
        Arc::new(Self {
            shared,
            tx,
            rx: Mutex::new(Some(rx)),
            state: AtomicU8::new(ConnectionState::Disconnected as u8),
            rooms: Rooms::default(),
            peers: Mutex::new(HashMap::new()),
            meshes: Mutex::new(HashMap::new()),
            early_signals: Mutex::new(HashMap::new()),
            voice: OnceLock::new(),
        })
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn attach_voice(&self, engine: Weak<voice::Engine>) {
        let _ = self.voice.set(engine);
    }

    fn voice(&self) -> Option<Arc<voice::Engine>> {
        self.voice.get().and_then(Weak::upgrade)
    }

    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }

    pub fn user_id(&self) -> Option<String> {
        self.shared.session_user_id()
    }

    pub fn connection_state(&self) -> ConnectionState {
        match self.state.load(Ordering::Relaxed) {
            1 => ConnectionState::Connecting,
            2 => ConnectionState::Connected,
            3 => ConnectionState::Reconnecting,
            _ => ConnectionState::Disconnected,
        }
    }

    fn set_state(&self, state: ConnectionState) {
        let code = match state {
            ConnectionState::Disconnected => 0,
            ConnectionState::Connecting => 1,
            ConnectionState::Connected => 2,
            ConnectionState::Reconnecting => 3,
        };
        if self.state.swap(code, Ordering::Relaxed) != code {
            self.shared.emit(
                MULTIPLAYER,
                "connection_state_changed",
                vec![Value::String(state.as_str().to_owned())],
            );
        }
    }

    /// A call whose `RequestId` completes with an error at once.
    pub fn fail(&self, error: SdkError) -> RequestId {
        let request = self.shared.new_request();
        self.shared.complete(request, Err(error));
        request
    }

    /// Sends `message`; its `RequestId` completes with the reply.
    pub fn call(self: &Arc<Self>, message: ClientMessage) -> RequestId {
        let request = self.shared.new_request();
        if let Err(e) = self.enqueue(Some(request), Outgoing::Message(message)) {
            self.shared.complete(request, Err(e));
        }
        request
    }

    /// A call about `room_id`, or the current room when `None`.
    pub fn call_in_room(
        self: &Arc<Self>,
        room_id: Option<String>,
        build: impl FnOnce(String) -> ClientMessage,
    ) -> RequestId {
        match self.room_or_current(room_id) {
            Ok(room_id) => self.call(build(room_id)),
            Err(e) => self.fail(e),
        }
    }

    pub fn send_state(
        self: &Arc<Self>,
        room_id: Option<String>,
        state: Value,
        targets: Option<Vec<String>>,
        echo: bool,
    ) -> RequestId {
        let request = self.shared.new_request();
        let sent = self.room_or_current(room_id).and_then(|room_id| {
            self.enqueue(
                Some(request),
                Outgoing::State {
                    room_id,
                    state,
                    targets,
                    echo,
                },
            )
        });
        if let Err(e) = sent {
            self.shared.complete(request, Err(e));
        }
        request
    }

    /// Sends without a `RequestId` (peer packets); errors only when it cannot be queued.
    pub fn send_untracked(self: &Arc<Self>, message: ClientMessage) -> Result<(), SdkError> {
        self.enqueue(None, Outgoing::Message(message))
    }

    fn room_or_current(&self, room_id: Option<String>) -> Result<String, SdkError> {
        room_id.or_else(|| self.rooms.current()).ok_or_else(|| {
            SdkError::new(
                ErrorCode::NotFound,
                "not in any room: join or create one first",
            )
        })
    }

    fn enqueue(
        self: &Arc<Self>,
        request: Option<RequestId>,
        outgoing: Outgoing,
    ) -> Result<(), SdkError> {
        if self.shared.is_shut_down() {
            return Err(SdkError::new(
                ErrorCode::Unavailable,
                "the client was shut down",
            ));
        }
        if !self.shared.is_logged_in() {
            return Err(SdkError::new(ErrorCode::Unauthorized, "not signed in"));
        }
        self.start();
        let command = Command {
            request,
            outgoing,
            queued_at: Instant::now(),
        };
        self.tx.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SdkError::new(
                ErrorCode::RateLimited,
                "too many realtime calls waiting for the socket",
            ),
            mpsc::error::TrySendError::Closed(_) => {
                SdkError::new(ErrorCode::Unavailable, "the client was shut down")
            }
        })
    }

    /// Starts the socket task on the client's runtime (once).
    fn start(self: &Arc<Self>) {
        let Some(rx) = lock(&self.rx).take() else {
            return;
        };
        let realtime = self.clone();
        self.shared.handle.spawn(realtime.run(rx));
    }

    pub fn attach_peer(&self, room_id: &str, inbox: Arc<PeerInbox>) {
        if let Some(previous) = lock(&self.peers).insert(room_id.to_owned(), inbox) {
            previous.queue.push(RoomEvent::Closed("replaced"));
        }
    }

    pub fn detach_peer(&self, room_id: &str, inbox: &Arc<PeerInbox>) {
        let mut peers = lock(&self.peers);
        if peers.get(room_id).is_some_and(|p| Arc::ptr_eq(p, inbox)) {
            peers.remove(room_id);
        }
    }

    /// Replaces the room's previous mesh, if any (its peer was replaced too).
    pub fn attach_mesh(&self, room_id: &str, input: mpsc::UnboundedSender<MeshInput>) {
        let mut meshes = lock(&self.meshes);
        for early in lock(&self.early_signals)
            .remove(room_id)
            .unwrap_or_default()
        {
            let _ = input.send(early);
        }
        meshes.insert(room_id.to_owned(), input);
    }

    pub fn detach_mesh(&self, room_id: &str, input: &mpsc::UnboundedSender<MeshInput>) {
        let mut meshes = lock(&self.meshes);
        if meshes.get(room_id).is_some_and(|m| m.same_channel(input)) {
            meshes.remove(room_id);
        }
    }

    fn to_mesh(&self, room_id: &str, input: MeshInput) {
        let meshes = lock(&self.meshes);
        if let Some(mesh) = meshes.get(room_id) {
            let _ = mesh.send(input);
        } else if matches!(input, MeshInput::Signal { .. }) && self.rooms.info(room_id).is_some() {
            let mut early = lock(&self.early_signals);
            let waiting = early.entry(room_id.to_owned()).or_default();
            if waiting.len() < EARLY_SIGNALS {
                waiting.push(input);
            }
        }
    }

    fn peer(&self, room_id: &str) -> Option<Arc<PeerInbox>> {
        lock(&self.peers).get(room_id).cloned()
    }

    fn to_peer(&self, room_id: &str, event: RoomEvent) {
        if let Some(peer) = self.peer(room_id) {
            peer.queue.push(event);
        }
    }

    /// The room is gone for this client: `room_left`, and its peer closes.
    fn room_gone(&self, room_id: &str, reason: &'static str) {
        self.rooms.remove(room_id);
        lock(&self.meshes).remove(room_id);
        lock(&self.early_signals).remove(room_id);
        if let Some(voice) = self.voice() {
            voice.on_room_left(room_id);
        }
        if let Some(peer) = lock(&self.peers).remove(room_id) {
            peer.queue.push(RoomEvent::Closed(reason));
        }
        self.shared.emit(
            MULTIPLAYER,
            "room_left",
            vec![Value::String(room_id.to_owned())],
        );
    }

    async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Command>) {
        let mut epoch = self.shared.session_epoch();
        let mut waiting: VecDeque<Command> = VecDeque::new();
        loop {
            if waiting.is_empty() {
                match rx.recv().await {
                    Some(command) => waiting.push_back(command),
                    None => return,
                }
            }
            let Some(user) = self.shared.session_user_id() else {
                self.fail_all(&mut waiting, ErrorCode::Unauthorized, "not signed in");
                continue;
            };
            epoch.borrow_and_update();
            match self.session(&user, &mut rx, &mut waiting, &mut epoch).await {
                Ended::Shutdown => return,
                Ended::SignedOut | Ended::Dropped => {}
            }
            self.set_state(ConnectionState::Disconnected);
            for room_id in self.rooms.clear() {
                self.room_gone(&room_id, "signed_out");
            }
            self.fail_all(&mut waiting, ErrorCode::Unauthorized, "signed out");
        }
    }

    fn fail_all(&self, waiting: &mut VecDeque<Command>, code: ErrorCode, message: &str) {
        for command in waiting.drain(..) {
            if let Some(request) = command.request {
                self.shared
                    .complete(request, Err(SdkError::new(code, message)));
            }
        }
    }

    /// Connects, and reconnects after drops, while `user` stays signed in.
    async fn session(
        &self,
        user: &str,
        rx: &mut mpsc::Receiver<Command>,
        waiting: &mut VecDeque<Command>,
        epoch: &mut watch::Receiver<u64>,
    ) -> Ended {
        let config = self.shared.config.realtime;
        let retry = RetryConfig {
            max_attempts: u32::MAX,
            base_delay: config.reconnect_base_delay,
            max_delay: config.reconnect_max_delay,
        };
        self.set_state(ConnectionState::Connecting);
        let mut failures = 0u32;
        let mut step: Option<Backoff> = None;
        loop {
            if let Some(current) = step {
                match self.back_off(current, user, rx, waiting, epoch).await {
                    Waited::Over => step = None,
                    Waited::Hurry => {
                        step = Some(Backoff {
                            hurried: true,
                            ..current
                        })
                    }
                    Waited::Ended(ended) => return ended,
                }
            }
            if self.shared.session_user_id().as_deref() != Some(user) {
                return Ended::SignedOut;
            }
            let attempted_at = Instant::now();
            let token = match self
                .expiring(waiting, self.shared.valid_access_token(None))
                .await
            {
                Ok(token) => token,
                Err(e) if e.status != 0 => return Ended::SignedOut,
                Err(_) => String::new(),
            };
            let connected = if token.is_empty() {
                Err(ConnectError::Transient(SdkError::new(
                    ErrorCode::Network,
                    "could not refresh the session",
                )))
            } else {
                self.expiring(waiting, self.connect(&token)).await
            };
            match connected {
                Ok(socket) => {
                    let opened = Instant::now();
                    match self.pump(socket, token, user, rx, waiting, epoch).await {
                        Ended::Dropped => self.set_state(ConnectionState::Reconnecting),
                        other => return other,
                    }
                    // A socket the server closes right away counts as a failed attempt, so
                    // the backoff still grows.
                    failures = if opened.elapsed() < STABLE_SOCKET {
                        failures + 1
                    } else {
                        0
                    };
                }
                Err(ConnectError::TokenExpired) if failures == 0 => {
                    failures += 1;
                    if let Err(e) = self.shared.valid_access_token(Some(&token)).await {
                        if e.status != 0 {
                            return Ended::SignedOut;
                        }
                    }
                    step = None;
                    continue;
                }
                Err(ConnectError::Refused(e)) => {
                    tracing::debug!(error = %e, "realtime socket refused");
                    self.shared
                        .complete_all_with(waiting.drain(..).filter_map(|c| c.request), &e);
                    return Ended::SignedOut;
                }
                Err(failed) => {
                    if let ConnectError::Transient(e) = &failed {
                        tracing::debug!(error = %e, "realtime socket unreachable");
                    }
                    if step.is_some() {
                        // A call's early attempt: the step it cut short goes on as planned.
                        continue;
                    }
                    failures += 1;
                }
            }
            if self.connection_state() == ConnectionState::Connecting && failures > 0 {
                self.set_state(ConnectionState::Reconnecting);
            }
            step = Some(Backoff {
                until: tokio::time::Instant::now()
                    + backoff(&retry, failures.max(1), &mut rand::thread_rng()),
                hurried: false,
                attempted_at,
            });
        }
    }

    /// Waits out a backoff step while calls queue up. A call queued after the last attempt began
    /// cuts the step short once (`Waited::Hurry`): the player gets an answer as soon as the server
    /// is back, and a stream of calls still tries at most twice per step.
    async fn back_off(
        &self,
        step: Backoff,
        user: &str,
        rx: &mut mpsc::Receiver<Command>,
        waiting: &mut VecDeque<Command>,
        epoch: &mut watch::Receiver<u64>,
    ) -> Waited {
        let capacity = self.shared.config.realtime.queue_capacity.max(1);
        loop {
            self.expire_waiting(waiting);
            tokio::select! {
                _ = tokio::time::sleep_until(step.until) => return Waited::Over,
                _ = tokio::time::sleep(EXPIRY_TICK) => {}
                // Bounded: past the channel's capacity, callers get `rate_limited`.
                command = rx.recv(), if waiting.len() < capacity => match command {
                    Some(command) => {
                        let fresh = command.queued_at > step.attempted_at;
                        waiting.push_back(command);
                        if fresh && !step.hurried {
                            return Waited::Hurry;
                        }
                    }
                    None => return Waited::Ended(Ended::Shutdown),
                },
                changed = epoch.changed() => {
                    if changed.is_err() {
                        return Waited::Ended(Ended::Shutdown);
                    }
                    if self.shared.session_user_id().as_deref() != Some(user) {
                        return Waited::Ended(Ended::SignedOut);
                    }
                }
            }
        }
    }

    /// Awaits `work` (a session refresh, a connect) while calls waiting for the socket still fail
    /// with `timeout` on time.
    async fn expiring<T>(
        &self,
        waiting: &mut VecDeque<Command>,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        tokio::pin!(work);
        loop {
            self.expire_waiting(waiting);
            tokio::select! {
                out = &mut work => return out,
                _ = tokio::time::sleep(EXPIRY_TICK) => {}
            }
        }
    }

    /// Calls that waited longer than the request timeout for a socket fail with `timeout`.
    fn expire_waiting(&self, waiting: &mut VecDeque<Command>) {
        let timeout = self.shared.config.request_timeout;
        while waiting
            .front()
            .is_some_and(|c| c.queued_at.elapsed() >= timeout)
        {
            let command = waiting.pop_front().expect("checked");
            if let Some(request) = command.request {
                self.shared.complete(
                    request,
                    Err(SdkError::new(
                        ErrorCode::Timeout,
                        "the realtime socket could not be reached in time",
                    )),
                );
            }
        }
    }

    fn socket_url(&self) -> String {
        let base = self.shared.config.api_url.trim_end_matches('/');
        let base = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.to_owned()
        };
        match self.shared.config.realtime.encoding {
            RealtimeEncoding::Json => format!("{base}{REALTIME_PATH}"),
            RealtimeEncoding::MessagePack => format!("{base}{REALTIME_PATH}?encoding=msgpack"),
        }
    }

    async fn connect(&self, token: &str) -> Result<Socket, ConnectError> {
        let invalid =
            |e: String| ConnectError::Refused(SdkError::new(ErrorCode::InvalidRequest, e));
        let mut request = self
            .socket_url()
            .into_client_request()
            .map_err(|e| invalid(format!("realtime url: {e}")))?;
        let headers = request.headers_mut();
        headers.insert(
            CLIENT_KEY_HEADER,
            HeaderValue::from_str(&self.shared.config.client_key)
                .map_err(|e| invalid(e.to_string()))?,
        );
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| invalid(e.to_string()))?,
        );
        let timeout = self.shared.config.request_timeout;
        let connecting =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, None);
        match tokio::time::timeout(timeout, connecting).await {
            Err(_) => Err(ConnectError::Transient(SdkError::new(
                ErrorCode::Timeout,
                "connecting the realtime socket timed out",
            ))),
            Ok(Ok((socket, _))) => Ok(socket),
            Ok(Err(tungstenite::Error::Http(response))) => {
                let status = response.status().as_u16();
                let body = response.body().as_deref().unwrap_or_default();
                let (code, message) = match serde_json::from_slice::<ErrorEnvelope>(body) {
                    Ok(envelope) => (envelope.error.code, envelope.error.message),
                    Err(_) => (
                        if status == 401 {
                            ErrorCode::Unauthorized
                        } else {
                            ErrorCode::Unavailable
                        },
                        format!("HTTP {status}"),
                    ),
                };
                let error = SdkError {
                    code,
                    message,
                    status,
                    details: None,
                };
                match (status, code) {
                    (_, ErrorCode::TokenExpired) => Err(ConnectError::TokenExpired),
                    (401 | 403, _) => Err(ConnectError::Refused(error)),
                    _ => Err(ConnectError::Transient(error)),
                }
            }
            Ok(Err(e)) => Err(ConnectError::Transient(SdkError::new(
                ErrorCode::Network,
                format!("realtime socket: {e}"),
            ))),
        }
    }

    fn encode(&self, cid: u64, message: ClientMessage) -> Message {
        let frame = ClientFrame {
            cid: Some(Cid::Number(cid)),
            message,
        };
        match self.shared.config.realtime.encoding {
            RealtimeEncoding::Json => {
                Message::text(serde_json::to_string(&frame).expect("client frames serialize"))
            }
            RealtimeEncoding::MessagePack => {
                Message::binary(rmp_serde::to_vec_named(&frame).expect("client frames serialize"))
            }
        }
    }

    /// Runs one connected socket until it drops, the session ends or the client shuts down.
    async fn pump(
        &self,
        socket: Socket,
        mut token: String,
        user: &str,
        rx: &mut mpsc::Receiver<Command>,
        waiting: &mut VecDeque<Command>,
        epoch: &mut watch::Receiver<u64>,
    ) -> Ended {
        let (mut sink, mut stream) = socket.split();
        let mut link = Link {
            realtime: self,
            pending: HashMap::new(),
            held: Vec::new(),
            next_cid: 1,
        };
        let resume = self.rooms.resume_map();
        if !resume.is_empty() {
            let frame = link.track(Awaiting::Resume, ClientMessage::Resume { rooms: resume });
            if sink.send(frame).await.is_err() {
                return Ended::Dropped;
            }
        }
        self.set_state(ConnectionState::Connected);
        while let Some(command) = waiting.pop_front() {
            if !link.send(&mut sink, command).await {
                return link.dropped();
            }
        }
        let keepalive = self.shared.config.realtime.keepalive;
        let mut last_heard = Instant::now();
        let mut tick = tokio::time::interval(keepalive.min(Duration::from_millis(250)));
        let mut refreshing: Option<tokio::task::JoinHandle<()>> = None;
        // A failed refresh is tried again after a pause, not in a loop on a passed deadline.
        let mut next_refresh = Instant::now();
        loop {
            let refresh_at = self
                .shared
                .session_refresh_at()
                .map(|at| at.max(next_refresh));
            tokio::select! {
                frame = stream.next() => {
                    let frame = match frame {
                        Some(Ok(frame)) => frame,
                        Some(Err(_)) | None => return link.dropped(),
                    };
                    last_heard = Instant::now();
                    let decoded = match frame {
                        Message::Text(text) => serde_json::from_str::<ServerFrame>(&text).map_err(|e| e.to_string()),
                        Message::Binary(bytes) => rmp_serde::from_slice::<ServerFrame>(&bytes).map_err(|e| e.to_string()),
                        Message::Close(_) => return link.dropped(),
                        _ => continue,
                    };
                    match decoded {
                        Ok(frame) => {
                            if let Some(token_expired) = link.receive(frame) {
                                if token_expired && refreshing.as_ref().is_none_or(|r| r.is_finished()) {
                                    refreshing = Some(self.refresh(Some(token.clone())));
                                }
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "unreadable realtime frame"),
                    }
                }
                command = rx.recv() => {
                    let Some(command) = command else { return Ended::Shutdown };
                    if !link.send(&mut sink, command).await {
                        return link.dropped();
                    }
                }
                changed = epoch.changed() => {
                    if changed.is_err() {
                        return Ended::Shutdown;
                    }
                    if self.shared.session_user_id().as_deref() != Some(user) {
                        let _ = sink.send(Message::Close(None)).await;
                        link.fail_pending(ErrorCode::Unauthorized, "signed out");
                        return Ended::SignedOut;
                    }
                    if let Some(fresh) = self.shared.session_access_token().filter(|t| *t != token && !t.is_empty()) {
                        token = fresh.clone();
                        let frame = link.track(Awaiting::RefreshSession, ClientMessage::RefreshSession { access_token: fresh });
                        if sink.send(frame).await.is_err() {
                            return link.dropped();
                        }
                        // Calls refused with `token_expired` go again behind the new token.
                        for (request, message) in std::mem::take(&mut link.held) {
                            let frame = link.track(Awaiting::Call { request, message: message.clone(), retried: true }, message);
                            if sink.send(frame).await.is_err() {
                                return link.dropped();
                            }
                        }
                    }
                }
                _ = sleep_until_opt(refresh_at) => {
                    // The socket's token is about to expire and no HTTP call refreshed it.
                    if refreshing.as_ref().is_none_or(|r| r.is_finished()) {
                        refreshing = Some(self.refresh(None));
                    }
                    next_refresh = Instant::now() + REFRESH_RETRY;
                }
                _ = tick.tick() => {
                    let silent = last_heard.elapsed();
                    if silent >= keepalive * 3 {
                        return link.dropped();
                    }
                    if silent >= keepalive && sink.send(Message::Ping(Default::default())).await.is_err() {
                        return link.dropped();
                    }
                    link.expire(self.shared.config.request_timeout);
                }
            }
        }
    }

    /// Refreshes the session off the socket loop; the new token reaches the socket through the
    /// session epoch.
    fn refresh(&self, stale: Option<String>) -> tokio::task::JoinHandle<()> {
        let shared = self.shared.clone();
        self.shared.handle.spawn(async move {
            if let Err(e) = shared.valid_access_token(stale.as_deref()).await {
                tracing::debug!(error = %e, "refreshing the realtime socket's session");
            }
        })
    }

    /// A pushed event (no `cid`).
    fn push(&self, message: ServerMessage) {
        match message {
            ServerMessage::PlayerJoined {
                room_id,
                seq,
                member,
            } => {
                let added = member.clone();
                if self.rooms.apply(&room_id, seq, |room| {
                    if !room.members.iter().any(|m| m.user_id == added.user_id) {
                        room.members.push(added);
                    }
                }) {
                    self.player_joined(&room_id, member);
                }
            }
            ServerMessage::PlayerLeft {
                room_id,
                seq,
                user_id,
            } => {
                if self.rooms.apply(&room_id, seq, |room| {
                    room.members.retain(|m| m.user_id != user_id)
                }) {
                    self.player_left(&room_id, user_id);
                }
            }
            ServerMessage::HostChanged { room_id, seq, host } => {
                if self
                    .rooms
                    .apply(&room_id, seq, |room| room.host = host.clone())
                {
                    self.host_changed(&room_id, host);
                }
            }
            ServerMessage::StateUpdate { room_id, updates } => {
                for update in updates {
                    if self.rooms.accept(&room_id, update.seq) {
                        self.shared.emit(
                            MULTIPLAYER,
                            "player_state_received",
                            vec![Value::String(update.from), tagged(&update.state)],
                        );
                    }
                }
            }
            ServerMessage::PacketReceived {
                room_id,
                seq,
                from,
                data,
                channel,
                reliable,
            } => {
                if !self.rooms.accept(&room_id, seq) {
                    return;
                }
                match self.peer(&room_id) {
                    Some(peer) => peer.queue.push(RoomEvent::Packet {
                        from,
                        seq,
                        data,
                        channel,
                        reliable,
                        direct: false,
                    }),
                    None => self.shared.emit(
                        MULTIPLAYER,
                        "packet_received",
                        vec![
                            Value::String(room_id),
                            Value::String(from),
                            Value::PackedByteArray(data),
                            Value::Int(i64::from(channel)),
                            Value::Bool(reliable),
                        ],
                    ),
                }
            }
            ServerMessage::VoiceReceived {
                room_id,
                from,
                data,
            } => {
                if let Some(voice) = self.voice() {
                    voice.on_frame(&room_id, &from, &data);
                }
            }
            ServerMessage::VoiceKeyReceived {
                room_id,
                seq,
                from,
                data,
            } => {
                if !self.rooms.accept(&room_id, seq) {
                    return;
                }
                if let Some(voice) = self.voice() {
                    voice.on_key(&room_id, &from, &data);
                }
            }
            ServerMessage::MatchFound { .. } => {
                self.shared
                    .emit(MATCHMAKING, "match_found", vec![message_value(&message)]);
            }
            // A party member is told of the ticket the submitter queued them on, and of its
            // end when another player of it leaves the queue.
            ServerMessage::QueueJoined { ticket } => {
                let value = wire_value(&serde_json::to_value(&ticket).expect("serializes"));
                self.shared.emit(MATCHMAKING, "queue_joined", vec![value]);
            }
            ServerMessage::QueueLeft { ticket_ids } => {
                self.shared.emit(
                    MATCHMAKING,
                    "queue_left",
                    vec![Value::PackedStringArray(ticket_ids)],
                );
            }
            ServerMessage::MatchmakingTimeout { ticket_id } => {
                self.shared.emit(
                    MATCHMAKING,
                    "matchmaking_timeout",
                    vec![Value::String(ticket_id)],
                );
            }
            ServerMessage::MessageReceived { message, seq } => {
                let room = message.channel.strip_prefix("room:");
                if let (Some(room_id), Some(seq)) = (room, seq) {
                    if !self.rooms.accept(room_id, seq) {
                        return;
                    }
                }
                let value = wire_value(&serde_json::to_value(&message).expect("serializes"));
                self.shared.emit(CHAT, "message_received", vec![value]);
            }
            ServerMessage::PresenceChanged {
                user_id,
                status,
                at,
            } => {
                let status = serde_json::to_value(status).expect("serializes");
                self.shared.emit(
                    FRIENDS,
                    "presence_changed",
                    vec![
                        Value::String(user_id),
                        plain_from_json(&status),
                        Value::Int(at),
                    ],
                );
            }
            ServerMessage::Signal {
                room_id,
                from,
                signal,
            } => self.to_mesh(&room_id, MeshInput::Signal { from, signal }),
            ServerMessage::FriendsUpdated => {
                self.shared.emit(
                    FRIENDS,
                    "friends_updated",
                    vec![Value::Dictionary(Vec::new())],
                );
            }
            ServerMessage::Error { error } => {
                let error = SdkError {
                    status: error.code.http_status(),
                    code: error.code,
                    message: error.message,
                    details: error.details.as_ref().map(plain_from_json),
                };
                self.shared
                    .emit(MULTIPLAYER, "error", vec![error.to_value()]);
            }
            // Replies whose call already timed out: the server acted, so the local view
            // follows.
            ServerMessage::RoomJoined { room } => {
                self.joined(room);
            }
            ServerMessage::RoomLeft { room_id } => self.room_gone(&room_id, "room_left"),
            other => tracing::debug!(?other, "unexpected realtime push"),
        }
    }

    /// In a room (a `room_joined` reply): tracked, current, announced.
    fn joined(&self, room: aethex_protocol::realtime::RoomInfo) -> Value {
        let value = room_value(&room);
        let room_id = room.room_id.clone();
        self.rooms.insert(room);
        if let Some(voice) = self.voice() {
            voice.on_room_joined(&room_id);
        }
        self.shared
            .emit(MULTIPLAYER, "room_joined", vec![value.clone()]);
        value
    }

    fn player_joined(&self, room_id: &str, member: aethex_protocol::realtime::Member) {
        let value = wire_value(&serde_json::to_value(&member).expect("serializes"));
        self.to_mesh(room_id, MeshInput::Joined(member.user_id.clone()));
        self.to_peer(room_id, RoomEvent::Joined(member));
        if let Some(voice) = self.voice() {
            voice.on_member_joined(room_id);
        }
        self.shared.emit(
            MULTIPLAYER,
            "player_joined",
            vec![Value::String(room_id.to_owned()), value],
        );
    }

    fn player_left(&self, room_id: &str, user_id: String) {
        self.to_mesh(room_id, MeshInput::Left(user_id.clone()));
        self.to_peer(room_id, RoomEvent::Left(user_id.clone()));
        if let Some(voice) = self.voice() {
            voice.on_member_left(room_id, &user_id);
        }
        self.shared.emit(
            MULTIPLAYER,
            "player_left",
            vec![Value::String(room_id.to_owned()), Value::String(user_id)],
        );
    }

    fn host_changed(&self, room_id: &str, host: String) {
        self.to_peer(room_id, RoomEvent::HostChanged(host.clone()));
        self.shared.emit(
            MULTIPLAYER,
            "host_changed",
            vec![Value::String(room_id.to_owned()), Value::String(host)],
        );
    }

    /// `resumed`: rooms kept (after their replay) and rooms lost.
    fn resumed(&self, kept: Vec<aethex_protocol::realtime::ResumedRoom>, lost: Vec<String>) {
        for resumed in kept {
            let room_id = resumed.room.room_id.clone();
            let diff = self.rooms.resumed(resumed.room);
            for user_id in diff.left {
                self.player_left(&room_id, user_id);
            }
            for member in diff.joined {
                self.player_joined(&room_id, member);
            }
            if let Some(host) = diff.host {
                self.host_changed(&room_id, host);
            }
        }
        for room_id in lost {
            self.room_gone(&room_id, "room_left");
        }
    }
}

/// One connected socket's bookkeeping.
struct Link<'a> {
    realtime: &'a Realtime,
    pending: HashMap<u64, Pending>,
    /// Calls refused with `token_expired`, sent again after `refresh_session`.
    held: Vec<(RequestId, ClientMessage)>,
    next_cid: u64,
}

impl Link<'_> {
    fn track(&mut self, awaiting: Awaiting, message: ClientMessage) -> Message {
        let cid = self.next_cid;
        self.next_cid += 1;
        self.pending.insert(
            cid,
            Pending {
                awaiting,
                sent_at: Instant::now(),
            },
        );
        self.realtime.encode(cid, message)
    }

    /// Writes a call's frame; false when the socket failed.
    async fn send(
        &mut self,
        sink: &mut futures_util::stream::SplitSink<Socket, Message>,
        command: Command,
    ) -> bool {
        let (message, answered) = match command.outgoing {
            Outgoing::Message(message) => {
                let answered = !matches!(message, ClientMessage::RelayPacket { .. });
                (message, answered)
            }
            Outgoing::State {
                room_id,
                state,
                targets,
                echo,
            } => (
                ClientMessage::PlayerStateUpdate {
                    room_id,
                    state: free_form(&state),
                    targets,
                    echo,
                },
                false,
            ),
        };
        let frame = match (command.request, answered) {
            (Some(request), true) => self.track(
                Awaiting::Call {
                    request,
                    message: message.clone(),
                    retried: false,
                },
                message,
            ),
            _ => {
                // Not answered unless refused: a refusal arrives as the `error` signal.
                let cid = self.next_cid;
                self.next_cid += 1;
                self.realtime.encode(cid, message)
            }
        };
        let written = sink.send(frame).await.is_ok();
        if let (Some(request), false) = (command.request, answered) {
            let outcome = if written {
                Ok(Value::Dictionary(Vec::new()))
            } else {
                Err(SdkError::new(
                    ErrorCode::Network,
                    "the realtime socket dropped",
                ))
            };
            self.realtime.shared.complete(request, outcome);
        }
        written
    }

    /// Handles a frame; `Some(true)` when it says the socket's token expired.
    fn receive(&mut self, frame: ServerFrame) -> Option<bool> {
        let realtime = self.realtime;
        let pending = match &frame.cid {
            Some(Cid::Number(cid)) => self.pending.remove(cid),
            _ => None,
        };
        let token_expired = matches!(
            &frame.message,
            ServerMessage::Error { error } if error.code == ErrorCode::TokenExpired
        );
        let Some(pending) = pending else {
            realtime.push(frame.message);
            return Some(token_expired);
        };
        match pending.awaiting {
            Awaiting::Call {
                request,
                message,
                retried,
            } => {
                if token_expired && !retried {
                    self.held.push((request, message));
                    return Some(true);
                }
                let outcome = self.reply(frame.message);
                realtime.shared.complete(request, outcome);
            }
            Awaiting::Resume => match frame.message {
                ServerMessage::Resumed { rooms, lost } => realtime.resumed(rooms, lost),
                other => {
                    // A server without resume (or a refusal): every seat is gone.
                    tracing::debug!(?other, "resume refused");
                    for room_id in realtime.rooms.joined() {
                        realtime.room_gone(&room_id, "room_left");
                    }
                }
            },
            Awaiting::RefreshSession => {
                if let ServerMessage::Error { error } = frame.message {
                    tracing::debug!(code = %error.code, "refresh_session refused");
                }
            }
        }
        Some(token_expired)
    }

    /// A reply to a call, as its result.
    fn reply(&self, message: ServerMessage) -> Result<Value, SdkError> {
        let realtime = self.realtime;
        match message {
            ServerMessage::Error { error } => Err(SdkError {
                status: error.code.http_status(),
                code: error.code,
                message: error.message,
                details: error.details.as_ref().map(plain_from_json),
            }),
            ServerMessage::RoomJoined { room } => Ok(realtime.joined(room)),
            ServerMessage::RoomLeft { room_id } => {
                realtime.room_gone(&room_id, "room_left");
                Ok(Value::dict([("room_id", Value::String(room_id))]))
            }
            other => Ok(message_value(&other)),
        }
    }

    fn fail_pending(&mut self, code: ErrorCode, message: &str) {
        for (_, pending) in self.pending.drain() {
            if let Awaiting::Call { request, .. } = pending.awaiting {
                self.realtime
                    .shared
                    .complete(request, Err(SdkError::new(code, message)));
            }
        }
        for (request, _) in self.held.drain(..) {
            self.realtime
                .shared
                .complete(request, Err(SdkError::new(code, message)));
        }
    }

    /// The socket dropped: calls waiting for an answer fail with `network` (not resent: they may
    /// have been applied).
    fn dropped(&mut self) -> Ended {
        self.fail_pending(ErrorCode::Network, "the realtime socket dropped");
        Ended::Dropped
    }

    /// Calls unanswered for `timeout` fail with `timeout`.
    fn expire(&mut self, timeout: Duration) {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.sent_at.elapsed() >= timeout)
            .map(|(cid, _)| *cid)
            .collect();
        for cid in expired {
            if let Some(Pending {
                awaiting: Awaiting::Call { request, .. },
                ..
            }) = self.pending.remove(&cid)
            {
                self.realtime.shared.complete(
                    request,
                    Err(SdkError::new(
                        ErrorCode::Timeout,
                        "no answer on the realtime socket",
                    )),
                );
            }
        }
    }
}

/// A reply or push as a Dictionary without its `type`.
fn message_value(message: &ServerMessage) -> Value {
    let mut json = serde_json::to_value(message).expect("server messages serialize");
    if let serde_json::Value::Object(map) = &mut json {
        map.remove("type");
    }
    wire_value(&json)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
