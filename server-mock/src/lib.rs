//! The real AeThex Cloud server behind a scriptable fault layer, for SDK tests of what a healthy
//! server never does on demand: latency, 5xx, 429, dropped sockets (before, after or in the
//! middle of a request), expired access tokens, a conflicting write from "another device", and
//! going offline; on the realtime socket: refused upgrades, delayed and dropped frames and forced
//! disconnects.
//!
//! The API is `aethex-server`'s own router, built in-process on a fresh SQLite data dir with an
//! [`OffsetClock`](aethex_server::clock::OffsetClock), so there is one implementation of every
//! endpoint. The mock runs on its own small tokio runtime so it keeps answering while a test's
//! thread blocks.
//!
//! ```no_run
//! # async fn demo() {
//! use aethex_mock::{MockServer, DropWhen};
//! use aethex_protocol::ErrorCode;
//! let mock = MockServer::start().await;
//! mock.fail("POST /api/v1/saves/*", 503, ErrorCode::Unavailable, 2);
//! mock.drop_connection("POST /api/v1/saves/*", DropWhen::AfterHandling, 1);
//! // ... point the SDK at mock.url() with mock.client_key() ...
//! assert!(mock.requests().iter().any(|r| r.status == Some(503)));
//! mock.stop().await;
//! # }
//! ```

mod admin;
mod backend;
mod error;
mod faults;
mod layer;
mod log;
mod net;
mod realtime;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use aethex_protocol::auth::User;
use aethex_protocol::saves::{SaveData, SaveSlotInfo, SaveVersionInfo};
use aethex_protocol::ErrorCode;
use serde_json::{json, Value};
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::backend::Backend;

pub use admin::OFFLINE_GRACE;
pub use backend::{size_and_checksum, Limits, MockMail};
pub use error::MockError;
pub use faults::{
    ActiveFault, ActiveFrameFault, Direction, DropWhen, FaultAction, FaultSpec, FrameAction,
    FrameFaultSpec, FrameFilter, Route, Times,
};
pub use log::{LogEntry, LOG_CAPACITY};
pub use realtime::{Disconnect, FrameCounts, SocketInfo};

/// Locks a mutex; a panic in another test thread must not poison the mock for the rest.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// State shared by the handlers and the scripting API.
pub(crate) struct Inner {
    client_key: String,
    limits: Limits,
    url: String,
    /// The server behind the fault layer; a reset replaces it with a fresh one.
    backend: RwLock<Arc<Backend>>,
    faults: Mutex<faults::Faults>,
    /// Realtime sockets relayed to the server.
    sockets: realtime::Sockets,
    log: Mutex<log::RequestLog>,
    started: Instant,
    online: watch::Sender<bool>,
    listening: watch::Receiver<bool>,
}

impl Inner {
    fn backend(&self) -> Arc<Backend> {
        self.backend
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn set_offline(&self, offline: bool) {
        self.online.send_replace(!offline);
        if offline {
            // Upgraded sockets left the accept loop's connections; cut them like the rest.
            self.sockets.disconnect(None, Disconnect::Abrupt).await;
        }
        let mut listening = self.listening.clone();
        // Err only when the accept loop is gone (stopped): nothing left to wait for.
        let _ = listening.wait_for(|listening| *listening != offline).await;
    }

    async fn conflicting_write(
        &self,
        user_id: &str,
        slot: &str,
        data: Value,
        metadata: Option<Value>,
    ) -> Result<SaveSlotInfo, MockError> {
        let metadata = metadata.unwrap_or_else(|| json!({ "device": "another-device" }));
        self.backend()
            .conflicting_write(user_id, slot, data, metadata)
            .await
    }

    /// Forgets faults and the log, and swaps in a fresh server (no accounts, no saves) with the
    /// same client key.
    async fn reset(&self) -> Result<(), MockError> {
        let (fresh, _) = Backend::start(&self.limits, self.url.clone(), Some(&self.client_key))
            .await
            .map_err(MockError::internal)?;
        *self.backend.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        // Their rooms and sessions were the old server's.
        self.sockets.disconnect(None, Disconnect::Abrupt).await;
        lock(&self.faults).clear();
        lock(&self.log).clear();
        Ok(())
    }
}

/// How to start a [`MockServer`].
#[derive(Debug, Clone)]
pub struct MockBuilder {
    listen: SocketAddr,
    client_key: Option<String>,
    limits: Limits,
}

impl MockBuilder {
    /// Address to listen on; default `127.0.0.1:0` (a free port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The client key requests must carry in `X-AeThex-Key`; default the one the server
    /// generated for its `default` project.
    pub fn client_key(mut self, key: impl Into<String>) -> Self {
        self.client_key = Some(key.into());
        self
    }

    /// Access-token lifetime, rounded up to whole seconds (`expires_in`). Default 15 min.
    pub fn access_token_ttl(mut self, ttl: Duration) -> Self {
        self.limits.access_token_ttl = ttl;
        self
    }

    /// Largest serialized save (413 `payload_too_large` above). Default 16 MiB.
    pub fn max_slot_bytes(mut self, bytes: i64) -> Self {
        self.limits.max_slot_bytes = bytes;
        self
    }

    /// Versions kept per slot, deletions included (older ones are pruned). Default 50.
    pub fn history_versions(mut self, versions: usize) -> Self {
        self.limits.history_versions = versions.max(1);
        self
    }

    /// Bytes of every kept version of one user (413 `quota_exceeded` above). Default 1 GiB.
    pub fn user_quota_bytes(mut self, bytes: i64) -> Self {
        self.limits.user_quota_bytes = bytes;
        self
    }

    pub async fn start(self) -> std::io::Result<MockServer> {
        self.start_blocking()
    }

    /// Starts without an async context (the mock runs on its own runtime either way).
    pub fn start_blocking(self) -> std::io::Result<MockServer> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("aethex-mock")
            .enable_all()
            .build()?;
        let listener = {
            let _guard = runtime.enter();
            net::bind(self.listen)?
        };
        let addr = listener.local_addr()?;
        let url = format!("http://{addr}");
        let limits = self.limits.clone();
        let (backend, client_key) = block_on(runtime.handle(), {
            let url = url.clone();
            async move { Backend::start(&limits, url, self.client_key.as_deref()).await }
        })?;
        let (online_tx, online_rx) = watch::channel(true);
        let (listening_tx, listening_rx) = watch::channel(true);
        let inner = Arc::new(Inner {
            client_key,
            limits: self.limits,
            url,
            backend: RwLock::new(Arc::new(backend)),
            faults: Mutex::new(faults::Faults::default()),
            sockets: realtime::Sockets::default(),
            log: Mutex::new(log::RequestLog::default()),
            started: Instant::now(),
            online: online_tx,
            listening: listening_rx,
        });
        let app = layer::router(inner.clone());
        runtime.spawn(net::supervise(listener, addr, app, online_rx, listening_tx));
        Ok(MockServer {
            inner,
            addr,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }
}

/// Runs `future` on the mock's runtime and waits for it from any thread, also from inside a
/// test's own runtime (whose thread is blocked meanwhile; the mock's threads do the work).
fn block_on<F>(handle: &Handle, future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    handle.spawn(async move {
        let _ = tx.send(future.await);
    });
    rx.recv().expect("aethex-mock: its runtime stopped")
}

/// A running mock. Dropping it stops it.
pub struct MockServer {
    inner: Arc<Inner>,
    addr: SocketAddr,
    handle: Handle,
    runtime: Option<tokio::runtime::Runtime>,
}

impl MockServer {
    pub fn builder() -> MockBuilder {
        MockBuilder {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            client_key: None,
            limits: Limits::default(),
        }
    }

    /// Starts on `127.0.0.1:<free port>` with the defaults.
    pub async fn start() -> MockServer {
        Self::builder()
            .start()
            .await
            .expect("aethex-mock: cannot listen on 127.0.0.1")
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:<port>/api/v1/realtime`, the realtime socket through the fault layer.
    pub fn realtime_url(&self) -> String {
        format!(
            "ws://{}{}",
            self.addr,
            aethex_protocol::realtime::REALTIME_PATH
        )
    }

    pub fn client_key(&self) -> &str {
        &self.inner.client_key
    }

    /// The `default` project's server key (`Authorization: ServerKey <key>`), for acting as the
    /// game's trusted server, e.g. writing a save as "another device".
    pub fn server_key(&self) -> String {
        self.inner.backend().server_key.clone()
    }

    /// Runs `f` on the current server, on the mock's runtime.
    fn with_backend<F, Fut>(&self, f: F) -> Fut::Output
    where
        F: FnOnce(Arc<Backend>) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        block_on(&self.handle, f(self.inner.backend()))
    }

    /// Closes every connection and the listener, then shuts the mock's runtime down.
    pub async fn stop(mut self) {
        self.inner.set_offline(true).await;
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    // ---- faults ----

    /// Installs a fault; returns its id.
    pub fn add_fault(&self, route: impl Into<Route>, action: FaultAction, times: Times) -> u64 {
        lock(&self.inner.faults).add(route.into(), action, times)
    }

    /// Answers `status` with error `code` (the real envelope) instead of handling the request.
    pub fn fail(
        &self,
        route: impl Into<Route>,
        status: u16,
        code: ErrorCode,
        times: impl Into<Times>,
    ) -> u64 {
        let action = FaultAction::Fail {
            status,
            code,
            retry_after_secs: None,
        };
        self.add_fault(route, action, times.into())
    }

    /// Waits `delay` before handling each matching request (the request is then handled normally
    /// or by another fault).
    pub fn delay(&self, route: impl Into<Route>, delay: Duration, times: impl Into<Times>) -> u64 {
        let action = FaultAction::Delay {
            ms: delay.as_millis() as u64,
        };
        self.add_fault(route, action, times.into())
    }

    /// Closes the TCP connection at `when`; the client sees a transport error, never a status
    /// (except [`DropWhen::MidResponse`], where the status arrives and the body breaks).
    pub fn drop_connection(
        &self,
        route: impl Into<Route>,
        when: DropWhen,
        times: impl Into<Times>,
    ) -> u64 {
        self.add_fault(route, FaultAction::Drop { when }, times.into())
    }

    /// 429 `rate_limited` with `Retry-After: retry_after_secs`.
    pub fn rate_limit(
        &self,
        route: impl Into<Route>,
        retry_after_secs: u64,
        times: impl Into<Times>,
    ) -> u64 {
        let action = FaultAction::RateLimit { retry_after_secs };
        self.add_fault(route, action, times.into())
    }

    /// The next `times` realtime handshakes are answered 503 `unavailable` instead of being
    /// upgraded (a route fault on `GET /api/v1/realtime`; use [`Self::fail`] for another status).
    pub fn refuse_upgrades(&self, times: impl Into<Times>) -> u64 {
        let route = format!("GET {}", aethex_protocol::realtime::REALTIME_PATH);
        self.fail(route.as_str(), 503, ErrorCode::Unavailable, times)
    }

    /// Installs a fault on the data frames of live and future realtime sockets; returns its id
    /// (shared with route faults: [`Self::remove_fault`] removes either).
    pub fn add_frame_fault(&self, filter: FrameFilter, action: FrameAction, times: Times) -> u64 {
        lock(&self.inner.faults).add_frame(filter, action, times)
    }

    /// Delivers the next `times` data frames going `direction` `delay` late (in order).
    pub fn delay_frames(
        &self,
        direction: Direction,
        delay: Duration,
        times: impl Into<Times>,
    ) -> u64 {
        let action = FrameAction::Delay {
            ms: delay.as_millis() as u64,
        };
        self.add_frame_fault(FrameFilter::direction(direction), action, times.into())
    }

    /// Drops the next `times` data frames going `direction`, only those of JSON `type`
    /// `message_type` when given.
    pub fn drop_frames(
        &self,
        direction: Direction,
        message_type: Option<&str>,
        times: impl Into<Times>,
    ) -> u64 {
        let mut filter = FrameFilter::direction(direction);
        filter.message_type = message_type.map(str::to_owned);
        self.add_frame_fault(filter, FrameAction::Drop, times.into())
    }

    /// Route faults (frame faults: [`Self::frame_faults`]).
    pub fn faults(&self) -> Vec<ActiveFault> {
        lock(&self.inner.faults).list()
    }

    pub fn frame_faults(&self) -> Vec<ActiveFrameFault> {
        lock(&self.inner.faults).list_frames()
    }

    /// Removes one fault (route or frame) by the id its installer returned; false when unknown
    /// or already spent.
    pub fn remove_fault(&self, id: u64) -> bool {
        lock(&self.inner.faults).remove(id)
    }

    /// Removes every route fault and frame fault.
    pub fn clear_faults(&self) {
        lock(&self.inner.faults).clear();
    }

    /// Ends every live realtime socket, or only `user_id`'s, the way `how` says, and returns
    /// once they are gone on the server's side too; answers how many there were.
    ///
    /// Panics on a close code a server may not send (see [`Disconnect::Close`]).
    pub async fn disconnect_sockets(&self, user_id: Option<&str>, how: Disconnect) -> usize {
        if let Disconnect::Close { code, .. } = &how {
            assert!(
                realtime::valid_close_code(*code),
                "aethex-mock: close code {code} is reserved or invalid"
            );
        }
        let inner = self.inner.clone();
        let user_id = user_id.map(str::to_owned);
        let handle = self.handle.clone();
        // On the mock's runtime; awaited here without blocking the caller's runtime.
        handle
            .spawn(async move { inner.sockets.disconnect(user_id.as_deref(), how).await })
            .await
            .expect("aethex-mock: disconnect task")
    }

    /// The live realtime sockets, oldest first.
    pub fn sockets(&self) -> Vec<SocketInfo> {
        self.inner.sockets.list()
    }

    /// Moves the server's clock past the access-token lifetime, so every access token issued so
    /// far answers 401 `token_expired` (refresh tokens keep working). Returns how many sessions
    /// were open.
    pub fn expire_access_tokens(&self) -> usize {
        self.with_backend(|b| async move { b.expire_access_tokens().await })
            .expect("aethex-mock: read sessions")
    }

    /// Moves the server's clock forward (token lifetimes, mailed-token expiry, ...).
    pub fn advance_clock(&self, by: Duration) {
        self.inner.backend().clock.advance_ms(by.as_millis() as i64);
    }

    /// Signs every session out, as an operator or a password change would: access tokens and
    /// refresh tokens answer 401 `unauthorized`, so the SDK must report `session_expired`.
    /// Returns how many sessions were open.
    pub fn revoke_all_sessions(&self) -> usize {
        self.with_backend(|b| async move { b.revoke_all_sessions().await })
            .expect("aethex-mock: revoke sessions")
    }

    /// Writes `data` to the slot as if another device did, through the server's API with the
    /// server key: a new version lands on top of the current one, so the SDK's next write based
    /// on the old version gets 409 `save_conflict`. Metadata is `{"device": "another-device"}`.
    pub fn conflicting_write(
        &self,
        user_id: &str,
        slot: &str,
        data: Value,
    ) -> Result<SaveSlotInfo, MockError> {
        let inner = self.inner.clone();
        let (user_id, slot) = (user_id.to_owned(), slot.to_owned());
        block_on(&self.handle, async move {
            inner.conflicting_write(&user_id, &slot, data, None).await
        })
    }

    /// Offline: the listener is closed (connections refused) and every open connection is cut.
    /// Online again: listens on the same port. Returns once the change has happened.
    pub async fn set_offline(&self, offline: bool) {
        self.inner.set_offline(offline).await;
    }

    pub fn is_offline(&self) -> bool {
        !*self.inner.online.borrow()
    }

    // ---- inspection ----

    /// Every API request so far (admin requests excluded), in arrival order.
    pub fn requests(&self) -> Vec<LogEntry> {
        lock(&self.inner.log).entries()
    }

    /// The logged requests matching `route` (same pattern syntax as faults).
    pub fn requests_matching(&self, route: impl Into<Route>) -> Vec<LogEntry> {
        let route = route.into();
        self.requests()
            .into_iter()
            .filter(|entry| {
                entry
                    .method
                    .parse()
                    .is_ok_and(|method| route.matches(&method, &entry.path))
            })
            .collect()
    }

    pub fn clear_log(&self) {
        lock(&self.inner.log).clear();
    }

    /// Every kept version of a slot, oldest first (delete markers included); empty when the
    /// user or slot does not exist.
    pub fn versions(&self, user_id: &str, slot: &str) -> Vec<SaveVersionInfo> {
        let (user_id, slot) = (user_id.to_owned(), slot.to_owned());
        self.with_backend(|b| async move { b.versions(&user_id, &slot).await })
            .unwrap_or_default()
    }

    /// The slot's current save, if any.
    pub fn save(&self, user_id: &str, slot: &str) -> Option<SaveData> {
        let (user_id, slot) = (user_id.to_owned(), slot.to_owned());
        self.with_backend(|b| async move { b.save(&user_id, &slot).await })
            .ok()
    }

    /// The mails the server wrote to its outbox (email verification, password reset), oldest
    /// first, with their tokens.
    pub fn outbox(&self) -> Vec<MockMail> {
        self.with_backend(|b| async move { b.outbox().await })
            .expect("aethex-mock: read the outbox")
    }

    pub fn users(&self) -> Vec<User> {
        self.with_backend(|b| async move { b.users().await })
            .expect("aethex-mock: read users")
    }

    /// Forgets faults and the log, and replaces the server with a fresh one (no accounts, no
    /// saves); the port and client key stay.
    pub fn reset(&self) -> Result<(), MockError> {
        let inner = self.inner.clone();
        block_on(&self.handle, async move { inner.reset().await })
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
