//! The realtime socket through the fault layer. The mock accepts the client's WebSocket itself
//! and opens a second one to the real server's router over an in-memory pipe, so the server's
//! own upgrade handler answers (authentication with the mock's clock, limits, every message,
//! its close codes); the mock only copies frames between the two, applying the scripted frame
//! faults (delay, drop) and forced disconnects. Ping and pong control frames are answered on
//! each hop (by tungstenite), not copied: they say the hop is alive, and each hop is.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{
    AUTHORIZATION, CONNECTION, HOST, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS,
    SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use crate::error::MockError;
use crate::faults::Direction;
use crate::{lock, Inner};

/// Bytes in flight between the mock and the in-process server, per socket.
const PIPE_BYTES: usize = 64 * 1024;
/// How long a side that was sent a close frame may take to answer it.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `disconnect` waits for the cut sockets to be gone on the server side too.
const DISCONNECT_WAIT: Duration = Duration::from_secs(5);

/// Headers of the client's handshake that belong to its hop; the rest (key, token, protocols,
/// anything a newer client sends) goes to the server unchanged.
const HOP_HEADERS: [HeaderName; 6] = [
    HOST,
    CONNECTION,
    UPGRADE,
    SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION,
    SEC_WEBSOCKET_EXTENSIONS,
];

/// How a forced disconnect ends a socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum Disconnect {
    /// The TCP connection closes without a WebSocket close frame, like a lost network; the
    /// server sees its socket vanish the same way.
    Abrupt,
    /// The client gets a close frame with `code` (1000-1003, 1007-1014 or 3000-4999) and
    /// `reason` (at most 123 bytes); the server sees its socket vanish.
    Close { code: u16, reason: String },
}

/// Frames a socket carried one way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FrameCounts {
    /// Data frames delivered.
    pub frames: u64,
    /// Data frames a fault dropped.
    pub dropped: u64,
}

/// A live realtime socket through the mock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SocketInfo {
    pub id: u64,
    pub user_id: String,
    /// Milliseconds since the mock started.
    pub connected_ms: u64,
    pub to_client: FrameCounts,
    pub to_server: FrameCounts,
}

#[derive(Default)]
struct Counts {
    frames: AtomicU64,
    dropped: AtomicU64,
}

impl Counts {
    fn snapshot(&self) -> FrameCounts {
        FrameCounts {
            frames: self.frames.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

struct Entry {
    id: u64,
    user_id: String,
    connected_ms: u64,
    to_client: Counts,
    to_server: Counts,
    kill: watch::Sender<Option<Disconnect>>,
    gone: watch::Receiver<bool>,
}

impl Entry {
    fn counts(&self, way: Direction) -> &Counts {
        match way {
            Direction::ToServer => &self.to_server,
            _ => &self.to_client,
        }
    }
}

/// The live sockets, for forced disconnects and inspection.
#[derive(Default)]
pub(crate) struct Sockets {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Arc<Entry>>>,
}

/// Unregisters a socket and reports it gone when its relay ends, however it ends.
struct Registration {
    inner: Arc<Inner>,
    entry: Arc<Entry>,
    gone: watch::Sender<bool>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.inner.sockets.live).remove(&self.entry.id);
        self.gone.send_replace(true);
    }
}

impl Sockets {
    fn register(&self, inner: &Arc<Inner>, user_id: String) -> Registration {
        let (kill, _) = watch::channel(None);
        let (gone_tx, gone) = watch::channel(false);
        let entry = Arc::new(Entry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            user_id,
            connected_ms: inner.started.elapsed().as_millis() as u64,
            to_client: Counts::default(),
            to_server: Counts::default(),
            kill,
            gone,
        });
        lock(&self.live).insert(entry.id, entry.clone());
        Registration {
            inner: inner.clone(),
            entry,
            gone: gone_tx,
        }
    }

    pub fn list(&self) -> Vec<SocketInfo> {
        let mut sockets: Vec<_> = lock(&self.live)
            .values()
            .map(|e| SocketInfo {
                id: e.id,
                user_id: e.user_id.clone(),
                connected_ms: e.connected_ms,
                to_client: e.to_client.snapshot(),
                to_server: e.to_server.snapshot(),
            })
            .collect();
        sockets.sort_by_key(|s| s.id);
        sockets
    }

    /// Ends every live socket (or those of `user_id`) and waits until they are gone; returns how
    /// many there were.
    pub async fn disconnect(&self, user_id: Option<&str>, how: Disconnect) -> usize {
        let targets: Vec<Arc<Entry>> = lock(&self.live)
            .values()
            .filter(|e| user_id.is_none_or(|u| u == e.user_id))
            .cloned()
            .collect();
        for entry in &targets {
            entry.kill.send_replace(Some(how.clone()));
        }
        for entry in &targets {
            let mut gone = entry.gone.clone();
            // Err: the relay is already gone (its sender dropped).
            let _ = tokio::time::timeout(DISCONNECT_WAIT, gone.wait_for(|g| *g)).await;
        }
        targets.len()
    }
}

/// A close code a server may send (RFC 6455 7.4): not one of the reserved 1004-1006 and 1015.
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A WebSocket handshake (as opposed to a plain request to the same path, which the server
/// answers itself).
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
        && headers.contains_key(SEC_WEBSOCKET_KEY)
}

fn ws_config() -> WebSocketConfig {
    // Frames go out as they come (no write batching): delays are the scripted ones only.
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(0)
}

/// Hands the handshake to the server over an in-memory pipe. A refusal (401, 403, 400, ...)
/// reaches the client as the server sent it; an accepted handshake is accepted towards the
/// client too, and the two sockets are relayed.
pub(crate) async fn proxy(inner: Arc<Inner>, mut req: Request) -> Response {
    let Some(client_key) = req.headers().get(SEC_WEBSOCKET_KEY).cloned() else {
        return MockError::invalid("missing Sec-WebSocket-Key").into_response();
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut upstream_req = match format!("ws://aethex-mock.internal{path}").into_client_request() {
        Ok(r) => r,
        Err(e) => return MockError::invalid(format!("bad WebSocket URI: {e}")).into_response(),
    };
    for (name, value) in req.headers() {
        if !HOP_HEADERS.contains(name) {
            upstream_req
                .headers_mut()
                .append(name.clone(), value.clone());
        }
    }
    let backend = inner.backend();
    let (client_end, server_end) = tokio::io::duplex(PIPE_BYTES);
    tokio::spawn(crate::net::serve_io(server_end, backend.router.clone()));
    let (upstream, accepted) = match tokio_tungstenite::client_async_with_config(
        upstream_req,
        client_end,
        Some(ws_config()),
    )
    .await
    {
        Ok(ok) => ok,
        Err(WsError::Http(refused)) => {
            let (parts, body) = refused.into_parts();
            return Response::from_parts(parts, Body::from(body.unwrap_or_default()));
        }
        Err(e) => {
            return MockError::internal(format!("the server's handshake failed: {e}"))
                .into_response()
        }
    };
    // Accepted by the server, so the token is valid by its clock: whose socket this is.
    let user_id = match token(&req) {
        Some(token) => backend
            .state
            .tokens
            .verify(&token, aethex_server::clock::Clock::now_ms(&*backend.clock))
            .await
            .map(|claims| claims.sub)
            .unwrap_or_default(),
        None => String::new(),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let registration = inner.sockets.register(&inner, user_id);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            // The client's connection went away before the switch (e.g. a drop fault).
            return;
        };
        let client = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(ws_config()),
        )
        .await;
        relay(registration, client, upstream).await;
    });
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, "websocket")
        .header(
            SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(client_key.as_bytes()),
        );
    for (name, value) in accepted.headers() {
        if ![CONNECTION, UPGRADE, SEC_WEBSOCKET_ACCEPT].contains(name) {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::empty())
        .unwrap_or_else(|e| MockError::internal(e).into_response())
}

/// The access token of the handshake: `Authorization: Bearer` first, like the server.
fn token(req: &Request) -> Option<String> {
    if let Some(value) = req.headers().get(AUTHORIZATION) {
        let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    req.uri().query()?.split('&').find_map(|pair| {
        let value = pair.strip_prefix("token=")?;
        percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .ok()
            .map(|v| v.into_owned())
    })
}

/// A frame waiting for its delay to pass.
struct Queued {
    due: Instant,
    message: Message,
}

/// Resolves when the first queued frame is due.
async fn next_due(queue: &VecDeque<Queued>) {
    match queue.front() {
        Some(q) => tokio::time::sleep_until(q.due.into()).await,
        None => std::future::pending().await,
    }
}

/// One side of the relay: its socket, whether it can still be read, and the frames queued for it.
struct Side<S> {
    ws: WebSocketStream<S>,
    open: bool,
    /// A close frame from the other side was queued or sent to it.
    sent_close: bool,
    queue: VecDeque<Queued>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Side<S> {
    fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            open: true,
            sent_close: false,
            queue: VecDeque::new(),
        }
    }

    /// Sends the frames whose time has come; false when the socket is broken.
    async fn send_due(&mut self) -> bool {
        while self.queue.front().is_some_and(|q| q.due <= Instant::now()) {
            let Some(q) = self.queue.pop_front() else {
                break;
            };
            if self.ws.send(q.message).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Reads and discards until the peer answers the close frame sent to it (or gives up);
    /// the connection is dropped right after, as the side that closes TCP first.
    async fn finish_close(&mut self) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            while let Some(Ok(message)) = self.ws.next().await {
                if matches!(message, Message::Close(_)) {
                    return;
                }
            }
        })
        .await;
    }
}

/// Copies frames both ways until either side ends or a forced disconnect comes.
async fn relay<C, U>(
    registration: Registration,
    client: WebSocketStream<C>,
    upstream: WebSocketStream<U>,
) where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let inner = registration.inner.clone();
    let entry = registration.entry.clone();
    let mut kill = entry.kill.subscribe();
    let mut client = Side::new(client);
    let mut upstream = Side::new(upstream);
    loop {
        if !client.open && upstream.queue.is_empty() {
            // The client is gone and all it sent is delivered. Had it sent a close frame, that
            // went to the server; otherwise the server's socket vanishes like the client's did.
            if upstream.sent_close {
                upstream.finish_close().await;
            }
            return;
        }
        if !upstream.open && client.queue.is_empty() {
            // The server is done with this socket: it is gone as far as scripts can tell.
            drop(registration);
            if client.sent_close {
                client.finish_close().await;
            }
            return;
        }
        tokio::select! {
            biased;
            changed = kill.changed() => {
                let how = kill.borrow_and_update().clone();
                if changed.is_err() || how.is_none() {
                    continue;
                }
                // The server's socket vanishes, as behind a cut network.
                drop(upstream);
                drop(registration);
                if let Some(Disconnect::Close { code, reason }) = how {
                    let frame = CloseFrame { code: code.into(), reason: reason.into() };
                    if client.ws.send(Message::Close(Some(frame))).await.is_ok() {
                        client.finish_close().await;
                    }
                }
                return;
            }
            _ = next_due(&client.queue) => if !client.send_due().await { return },
            _ = next_due(&upstream.queue) => if !upstream.send_due().await { return },
            frame = client.ws.next(), if client.open => {
                forward(&inner, &entry, Direction::ToServer, frame, &mut client.open, &mut upstream)
            }
            frame = upstream.ws.next(), if upstream.open => {
                forward(&inner, &entry, Direction::ToClient, frame, &mut upstream.open, &mut client)
            }
        }
    }
}

/// Queues one frame read from a side for the other, as the frame faults decide.
fn forward<S>(
    inner: &Inner,
    entry: &Entry,
    way: Direction,
    frame: Option<Result<Message, WsError>>,
    from_open: &mut bool,
    to: &mut Side<S>,
) {
    let message = match frame {
        Some(Ok(message)) => message,
        // The side ended without (or after) a close frame.
        Some(Err(_)) | None => {
            *from_open = false;
            return;
        }
    };
    let counts = entry.counts(way);
    let delay = match &message {
        Message::Text(_) | Message::Binary(_) => {
            let plan =
                lock(&inner.faults).take_frame(way, &entry.user_id, || message_type(&message));
            if plan.drop {
                counts.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            counts.frames.fetch_add(1, Ordering::Relaxed);
            plan.delay
        }
        Message::Close(_) => {
            to.sent_close = true;
            Duration::ZERO
        }
        // Answered on their own hop.
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return,
    };
    // Never before a frame queued earlier: the socket stays ordered.
    let mut due = Instant::now() + delay;
    if let Some(last) = to.queue.back() {
        due = due.max(last.due);
    }
    to.queue.push_back(Queued { due, message });
}

/// The `type` of a JSON text frame.
fn message_type(message: &Message) -> Option<String> {
    #[derive(Deserialize)]
    struct Typed {
        #[serde(rename = "type")]
        kind: String,
    }
    match message {
        Message::Text(text) => serde_json::from_str::<Typed>(text.as_str())
            .ok()
            .map(|t| t.kind),
        _ => None,
    }
}
