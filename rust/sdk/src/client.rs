//! The client: a tokio runtime on two named background threads, the event queue, and the
//! session every authenticated request goes through.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use aethex_protocol::auth::{AuthResponse, RefreshRequest, User};
use aethex_protocol::ErrorCode;
use crossbeam_queue::SegQueue;
use reqwest::Method;
use tokio::runtime::{Handle, Runtime};

use crate::analytics::Analytics;
use crate::auth::Auth;
use crate::codec::plain_from_json;
use crate::credentials::TokenStore;
use crate::http::{Api, Reply, Request};
use crate::multiplayer::{Chat, Multiplayer};
use crate::saves::{Saves, SyncState};
use crate::social::Social;
use crate::storage::{write_atomic, UserStore};
use crate::{ClientConfig, Event, RequestId, SdkError, Value};

/// Refresh the access token this long before it expires, so a request never carries a token
/// that expires in flight.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

pub(crate) struct Session {
    pub user_id: String,
    pub user: Value,
    pub access_token: String,
    pub refresh_token: String,
    pub refresh_at: Instant,
}

/// State shared by the client handles and the background tasks.
pub(crate) struct Shared {
    pub config: ClientConfig,
    pub handle: Handle,
    events: SegQueue<Event>,
    next_id: AtomicU64,
    pub api: Api,
    pub session: RwLock<Option<Session>>,
    /// One refresh at a time: refresh tokens are single use.
    refresh_lock: tokio::sync::Mutex<()>,
    pub tokens: TokenStore,
    pub sync: SyncState,
    shut_down: AtomicBool,
    /// Bumped whenever the session changes (sign-in, refresh, sign-out): the realtime socket
    /// sends the new token as `refresh_session`, or closes on sign-out.
    session_epoch: tokio::sync::watch::Sender<u64>,
}

/// Owns the runtime; dropped with the last `Client` clone.
struct RuntimeOwner(Mutex<Option<Runtime>>);

impl RuntimeOwner {
    fn stop(&self) {
        if let Some(rt) = self.0.lock().expect("runtime lock").take() {
            // Never blocks the caller, also when dropped inside another runtime.
            rt.shutdown_background();
        }
    }

    fn stop_waiting(&self, timeout: std::time::Duration) {
        if let Some(rt) = self.0.lock().expect("runtime lock").take() {
            rt.shutdown_timeout(timeout);
        }
    }
}

impl Drop for RuntimeOwner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The SDK entry point. Cheap to clone; every clone drives the same runtime and queue.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    runtime: Arc<RuntimeOwner>,
    auth: Auth,
    saves: Saves,
    social: Social,
    multiplayer: Multiplayer,
    chat: Chat,
    analytics: Analytics,
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client, SdkError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            SdkError::new(
                ErrorCode::InvalidRequest,
                format!("data_dir {}: {e}", config.data_dir.display()),
            )
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("aethex-sdk")
            .enable_all()
            .build()
            .map_err(|e| SdkError::new(ErrorCode::Internal, format!("runtime: {e}")))?;
        let api = Api::new(
            &config.api_url,
            &config.client_key,
            config.request_timeout,
            config.retry,
        )?;
        let tokens = TokenStore::new(
            config.credential_store.clone(),
            config.data_dir.clone(),
            &config.api_url,
            &config.client_key,
        );
        let shared = Arc::new(Shared {
            handle: runtime.handle().clone(),
            events: SegQueue::new(),
            next_id: AtomicU64::new(1),
            api,
            session: RwLock::new(None),
            refresh_lock: tokio::sync::Mutex::new(()),
            tokens,
            sync: SyncState::new(),
            shut_down: AtomicBool::new(false),
            session_epoch: tokio::sync::watch::Sender::new(0),
            config,
        });
        runtime.spawn(crate::saves::auto_sync_loop(shared.clone()));
        let multiplayer = Multiplayer::new(shared.clone());
        let analytics = Analytics::start(shared.clone());
        Ok(Client {
            analytics,
            auth: Auth::new(shared.clone()),
            saves: Saves::new(shared.clone()),
            social: Social::new(shared.clone()),
            chat: Chat::new(multiplayer.realtime().clone()),
            multiplayer,
            shared,
            runtime: Arc::new(RuntimeOwner(Mutex::new(Some(runtime)))),
        })
    }

    /// Non-blocking: moves up to `max` queued events into `out`; returns how many.
    pub fn drain_events(&self, out: &mut Vec<Event>, max: usize) -> usize {
        let mut moved = 0;
        while moved < max {
            match self.shared.events.pop() {
                Some(event) => {
                    out.push(event);
                    moved += 1;
                }
                None => break,
            }
        }
        moved
    }

    /// Events waiting to be drained (additive to the binding contract; for metrics/benchmarks).
    pub fn queued_events(&self) -> usize {
        self.shared.events.len()
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    pub fn saves(&self) -> &Saves {
        &self.saves
    }

    /// Leaderboards, achievements, stats, friends and groups.
    pub fn social(&self) -> &Social {
        &self.social
    }

    /// Rooms, state relay, packets, matchmaking and the realtime socket.
    pub fn multiplayer(&self) -> &Multiplayer {
        &self.multiplayer
    }

    /// Opt-in events and metrics.
    pub fn analytics(&self) -> &Analytics {
        &self.analytics
    }

    /// Chat channels (the binding's `social.chat`).
    pub fn chat(&self) -> &Chat {
        &self.chat
    }

    /// Stops background tasks at once; in-flight requests are abandoned (queued saves stay on
    /// disk and are uploaded by the next client). Later calls complete with `unavailable`.
    pub fn shutdown(&self) {
        self.shared.shut_down.store(true, Ordering::SeqCst);
        self.runtime.stop();
    }

    /// Like [`Client::shutdown`], but waits up to `timeout` for the runtime's threads to end, so
    /// none of them still runs when a host unloads this code (Godot at exit). Blocks the caller:
    /// only for process or library teardown, never from inside a tokio runtime.
    pub fn shutdown_and_wait(&self, timeout: std::time::Duration) {
        // Flush on quit: the analytics queue goes to disk (and, if the server answers in time,
        // up) before the runtime stops; half the budget, the rest is for the threads to end.
        self.analytics.quit(timeout / 2);
        self.shared.shut_down.store(true, Ordering::SeqCst);
        self.runtime.stop_waiting(timeout);
    }
}

impl Shared {
    /// Set once `shutdown` began: long work checks it so no thread outlives the client.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Relaxed)
    }

    /// A fresh id for a call whose outcome `complete` reports.
    pub fn new_request(&self) -> RequestId {
        RequestId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    pub fn complete(&self, request: RequestId, outcome: Result<Value, SdkError>) {
        self.events.push(Event::Completed { request, outcome });
    }

    pub fn complete_all_with(&self, requests: impl Iterator<Item = RequestId>, error: &SdkError) {
        for request in requests {
            self.complete(request, Err(error.clone()));
        }
    }

    pub fn session_epoch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.session_epoch.subscribe()
    }

    fn session_changed(&self) {
        self.session_epoch.send_modify(|epoch| *epoch += 1);
    }

    pub fn session_user_id(&self) -> Option<String> {
        self.session
            .read()
            .expect("session lock")
            .as_ref()
            .map(|s| s.user_id.clone())
    }

    pub fn session_access_token(&self) -> Option<String> {
        self.session
            .read()
            .expect("session lock")
            .as_ref()
            .map(|s| s.access_token.clone())
    }

    /// When the access token should be refreshed (a margin before it expires).
    pub fn session_refresh_at(&self) -> Option<Instant> {
        self.session
            .read()
            .expect("session lock")
            .as_ref()
            .map(|s| s.refresh_at)
    }

    pub fn emit(&self, service: &'static str, name: &'static str, args: Vec<Value>) {
        self.events.push(Event::Signal {
            service,
            name,
            args,
        });
    }

    /// Runs `work` on the runtime; its outcome becomes an `Event::Completed` with the returned id.
    pub fn spawn_call<F, Fut>(self: &Arc<Self>, work: F) -> RequestId
    where
        F: FnOnce(Arc<Shared>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Value, SdkError>> + Send + 'static,
    {
        let request = self.new_request();
        if self.shut_down.load(Ordering::Relaxed) {
            self.events.push(Event::Completed {
                request,
                outcome: Err(SdkError::new(
                    ErrorCode::Unavailable,
                    "the client was shut down",
                )),
            });
            return request;
        }
        let shared = self.clone();
        self.handle.spawn(async move {
            let outcome = work(shared.clone()).await;
            shared.events.push(Event::Completed { request, outcome });
        });
        request
    }

    pub fn is_logged_in(&self) -> bool {
        self.session.read().expect("session lock").is_some()
    }

    pub fn current_user(&self) -> Option<Value> {
        self.session
            .read()
            .expect("session lock")
            .as_ref()
            .map(|s| s.user.clone())
    }

    pub fn user_store(&self) -> Option<UserStore> {
        self.session
            .read()
            .expect("session lock")
            .as_ref()
            .map(|s| UserStore::new(&self.config.data_dir, &s.user_id))
    }

    pub fn set_user(&self, user: &User) -> Value {
        let value = user_value(user);
        if let Some(session) = self.session.write().expect("session lock").as_mut() {
            if session.user_id == user.id {
                session.user = value.clone();
            }
        }
        value
    }

    /// The signed-in user (not secret: the same data the save cache holds), so a game started
    /// offline can resume the session and keep saving; see `resume_offline`. One per server, as
    /// the refresh token.
    fn session_user_file(&self) -> &std::path::Path {
        self.tokens.user_file()
    }

    /// Takes a sign-in answer: memory, persisted refresh token, `logged_in`.
    pub async fn establish(self: &Arc<Self>, auth: AuthResponse, announce: bool) -> Value {
        let user = user_value(&auth.user);
        let user_file = self.session_user_file();
        if let Err(e) = write_atomic(
            user_file,
            &serde_json::to_vec(&auth.user).expect("users serialize"),
            true,
        ) {
            tracing::warn!(error = %e, "could not store the signed-in user");
        }
        *self.session.write().expect("session lock") = Some(Session {
            user_id: auth.user.id.clone(),
            user: user.clone(),
            access_token: auth.access_token,
            refresh_token: auth.refresh_token.clone(),
            refresh_at: refresh_at(auth.expires_in),
        });
        self.session_changed();
        self.persist_refresh_token(auth.refresh_token).await;
        if announce {
            self.emit("auth", "logged_in", vec![user.clone()]);
        }
        Value::dict([("user", user)])
    }

    /// Uploads what a crash or an offline spell left in the queue (after sign-in / resume).
    pub fn start_replay(self: &Arc<Self>) {
        let shared = self.clone();
        self.handle.spawn(async move {
            crate::saves::replay_after_sign_in(&shared).await;
        });
    }

    async fn persist_refresh_token(self: &Arc<Self>, token: String) {
        let shared = self.clone();
        let stored = tokio::task::spawn_blocking(move || shared.tokens.save(&token)).await;
        if let Ok(Err(e)) | Err(e) = stored.map_err(std::io::Error::other) {
            tracing::warn!(error = %e, "could not persist the session; a restart will need a login");
        }
    }

    /// Forgets the session locally (memory and stored token).
    pub async fn clear_session(self: &Arc<Self>) {
        *self.session.write().expect("session lock") = None;
        self.session_changed();
        let _ = std::fs::remove_file(self.session_user_file());
        let shared = self.clone();
        let _ = tokio::task::spawn_blocking(move || shared.tokens.clear()).await;
    }

    pub async fn stored_refresh_token(self: &Arc<Self>) -> Option<String> {
        let shared = self.clone();
        tokio::task::spawn_blocking(move || shared.tokens.load())
            .await
            .ok()
            .flatten()
    }

    /// Starts an offline session from the stored user and refresh token when the server cannot
    /// be reached at resume: saves queue locally, and the first request that gets through
    /// refreshes the access token (or ends the session if the token was revoked meanwhile).
    pub fn resume_offline(&self, refresh_token: String) -> Option<Value> {
        let bytes = std::fs::read(self.session_user_file()).ok()?;
        let user: User = serde_json::from_slice(&bytes).ok()?;
        let value = user_value(&user);
        *self.session.write().expect("session lock") = Some(Session {
            user_id: user.id,
            user: value.clone(),
            access_token: String::new(),
            refresh_token,
            refresh_at: Instant::now(),
        });
        Some(value)
    }

    /// Exchanges `refresh_token` for a new session. A rejected token ends the session:
    /// `session_expired` is emitted and the stored token is removed.
    pub async fn refresh_with(
        self: &Arc<Self>,
        refresh_token: String,
        announce: bool,
    ) -> Result<Value, SdkError> {
        let reply = self
            .api
            .send(
                // Not resent blindly: a refresh that landed rotated the token, and presenting
                // the old one again would revoke the whole session.
                &Request::new(Method::POST, "/api/v1/auth/refresh")
                    .json(&RefreshRequest { refresh_token })
                    .no_retry(),
            )
            .await;
        match reply.and_then(|r| r.json::<AuthResponse>()) {
            Ok(auth) => Ok(self.establish(auth, announce).await),
            Err(e) if matches!(e.status, 400 | 401 | 403 | 404) => {
                let had_session = self.is_logged_in();
                self.clear_session().await;
                if had_session || !announce {
                    self.emit("auth", "session_expired", Vec::new());
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// A valid access token, refreshing first when it is about to expire. `stale` names a token
    /// the server just rejected, so it is refreshed even if it looks fresh.
    pub async fn valid_access_token(
        self: &Arc<Self>,
        stale: Option<&str>,
    ) -> Result<String, SdkError> {
        let current = |s: &Self| {
            s.session.read().expect("session lock").as_ref().map(|s| {
                (
                    s.access_token.clone(),
                    s.refresh_token.clone(),
                    s.refresh_at,
                )
            })
        };
        let not_signed_in = || SdkError::new(ErrorCode::Unauthorized, "not signed in");
        let (token, _, at) = current(self).ok_or_else(not_signed_in)?;
        if Instant::now() < at && stale != Some(token.as_str()) {
            return Ok(token);
        }
        let _one_refresh = self.refresh_lock.lock().await;
        // Another task may have refreshed while we waited.
        let (token, refresh, at) = current(self).ok_or_else(not_signed_in)?;
        if Instant::now() < at && stale != Some(token.as_str()) {
            return Ok(token);
        }
        self.refresh_with(refresh, false).await?;
        current(self).map(|(t, _, _)| t).ok_or_else(not_signed_in)
    }

    /// Sends with the bearer token; on 401 `token_expired` refreshes once and retries once.
    pub async fn authed(self: &Arc<Self>, build: impl Fn() -> Request) -> Result<Reply, SdkError> {
        let token = self.valid_access_token(None).await?;
        let first = {
            let mut request = build();
            request.token = Some(token.clone());
            self.api.send(&request).await
        };
        match first {
            Err(e) if e.code == ErrorCode::TokenExpired => {
                let token = self.valid_access_token(Some(&token)).await?;
                let mut request = build();
                request.token = Some(token.clone());
                self.api.send(&request).await
            }
            other => other,
        }
    }
}

fn refresh_at(expires_in: u64) -> Instant {
    let lifetime = Duration::from_secs(expires_in);
    let margin = REFRESH_MARGIN.min(lifetime / 5);
    Instant::now() + lifetime.saturating_sub(margin)
}

pub(crate) fn user_value(user: &User) -> Value {
    plain_from_json(&serde_json::to_value(user).expect("users serialize"))
}
