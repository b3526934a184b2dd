//! Shared test helpers: the real server in-process on loopback, SDK clients, and an event probe
//! that polls `drain_events` with a deadline (never sleep-and-hope).

#![allow(dead_code)] // each test binary uses a different part

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aethex_sdk::{
    Client, ClientConfig, CredentialStore, Event, MultiplayerPeer, PeerEvent, RequestId,
    RetryConfig, SdkError, TransferMode, Value,
};
use aethex_server::clock::OffsetClock;
use aethex_server::{AppState, Config, Server};

pub const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// SQLite always; PostgreSQL too when `AETHEX_TEST_DATABASE_URL` is set.
pub fn backends() -> Vec<Backend> {
    let mut list = vec![Backend::Sqlite];
    if std::env::var("AETHEX_TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        list.push(Backend::Postgres);
    }
    list
}

/// A fresh PostgreSQL schema and a URL whose connections use it, so concurrent tests never see
/// each other's rows.
async fn fresh_pg_schema() -> (String, String) {
    use sqlx::{Connection, Executor};
    let base = std::env::var("AETHEX_TEST_DATABASE_URL").expect("AETHEX_TEST_DATABASE_URL");
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .expect("connect to AETHEX_TEST_DATABASE_URL");
    conn.execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .expect("create schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    (
        format!("{base}{sep}options=-c%20search_path%3D{schema}"),
        schema,
    )
}

async fn drop_pg_schema(schema: &str) {
    use sqlx::{Connection, Executor};
    let base = std::env::var("AETHEX_TEST_DATABASE_URL").expect("AETHEX_TEST_DATABASE_URL");
    if let Ok(mut conn) = sqlx::PgConnection::connect(&base).await {
        let _ = conn
            .execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
            .await;
    }
}

pub struct RealServer {
    pub addr: SocketAddr,
    pub url: String,
    pub client_key: String,
    pub clock: Arc<OffsetClock>,
    pub state: AppState,
    pub data_dir: tempfile::TempDir,
    adjust: Arc<dyn Fn(&mut Config) + Send + Sync>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    pg_schema: Option<String>,
}

impl RealServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts on `backend` (a fresh PostgreSQL schema for `Postgres`; `finish` drops it).
    pub async fn start_on(
        backend: Backend,
        adjust: impl Fn(&mut Config) + Send + Sync + 'static,
    ) -> Self {
        match backend {
            Backend::Sqlite => Self::start_with(adjust).await,
            Backend::Postgres => {
                let (url, schema) = fresh_pg_schema().await;
                let mut server = Self::start_with(move |c| {
                    c.database_url = url.clone();
                    adjust(c);
                })
                .await;
                server.pg_schema = Some(schema);
                server
            }
        }
    }

    /// Stops the server and drops its PostgreSQL schema, if any.
    pub async fn finish(mut self) {
        self.stop().await;
        if let Some(schema) = self.pg_schema.take() {
            drop_pg_schema(&schema).await;
        }
    }

    /// Starts after `adjust` changed the configuration (applied again by `restart`).
    pub async fn start_with(adjust: impl Fn(&mut Config) + Send + Sync + 'static) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let clock = OffsetClock::new();
        let adjust: Arc<dyn Fn(&mut Config) + Send + Sync> = Arc::new(adjust);
        let (addr, shutdown, task, key, state) = Self::launch(
            data_dir.path(),
            "127.0.0.1:0".parse().unwrap(),
            clock.clone(),
            adjust.clone(),
        )
        .await;
        Self {
            state,
            addr,
            url: format!("http://{addr}"),
            client_key: key.expect("first start creates the default project"),
            clock,
            data_dir,
            adjust,
            shutdown: Some(shutdown),
            task: Some(task),
            pg_schema: None,
        }
    }

    async fn launch(
        dir: &Path,
        addr: SocketAddr,
        clock: Arc<OffsetClock>,
        adjust: Arc<dyn Fn(&mut Config) + Send + Sync>,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
        Option<String>,
        AppState,
    ) {
        let mut config = Config {
            listen: addr,
            data_dir: dir.to_path_buf(),
            ..Config::default()
        };
        config.rate_limit.enabled = false;
        adjust(&mut config);
        let server = Server::build_with_clock(config, clock)
            .await
            .expect("server builds");
        let state = server.state.clone();
        let key = server
            .created_default_project
            .as_ref()
            .map(|p| p.client_key.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve(listener, async {
                    let _ = rx.await;
                })
                .await
                .expect("server runs");
        });
        (addr, tx, task, key, state)
    }

    /// Takes the server down (connections refused) until `restart`.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Starts again on the same port and data (database, keys, blobs).
    pub async fn restart(&mut self) {
        let (_, shutdown, task, _, state) = Self::launch(
            self.data_dir.path(),
            self.addr,
            self.clock.clone(),
            self.adjust.clone(),
        )
        .await;
        self.shutdown = Some(shutdown);
        self.task = Some(task);
        self.state = state;
    }

    /// The token after `marker` in the newest outbox mail to `to` (no SMTP in tests). Waits for
    /// it: the server writes some mails after answering (forgot-password does its work after the
    /// 202 so its timing tells nothing about the account).
    pub async fn mailed_token(&self, to: &str, marker: &str) -> String {
        use sqlx::Row;
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let rows = sqlx::query("SELECT to_addr, body FROM mail_outbox ORDER BY created_at")
                .fetch_all(&self.state.db.read)
                .await
                .unwrap();
            let found = rows
                .iter()
                .rev()
                .map(|r| (r.get::<String, _>("to_addr"), r.get::<String, _>("body")))
                .find(|(addr, body)| addr == to && body.contains(marker));
            if let Some((_, body)) = found {
                let start = body.find(marker).expect("checked above") + marker.len();
                return body[start..].split_whitespace().next().unwrap().to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no mail to {to} with {marker:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    pub fn config(&self, dir: &Path) -> ClientConfig {
        test_config(&self.url, &self.client_key, dir)
    }
}

pub fn test_config(url: &str, key: &str, dir: &Path) -> ClientConfig {
    let mut config = ClientConfig::new(url, key, dir);
    config.credential_store = CredentialStore::FileOnly;
    config.auto_sync_interval = Duration::from_millis(100);
    config.request_timeout = Duration::from_secs(5);
    config.retry = RetryConfig {
        max_attempts: 4,
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
    };
    config
}

/// A client plus every event drained from it so far.
pub struct Probe {
    pub client: Client,
    pub events: Vec<Event>,
}

impl Probe {
    pub fn new(config: ClientConfig) -> Self {
        Self {
            client: Client::new(config).expect("client starts"),
            events: Vec::new(),
        }
    }

    async fn pump(&mut self) {
        let before = self.events.len();
        self.client.drain_events(&mut self.events, 256);
        if self.events.len() == before {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The outcome of `request`, waiting up to the deadline.
    pub async fn wait_for(&mut self, request: RequestId) -> Result<Value, SdkError> {
        let end = Instant::now() + DEADLINE;
        loop {
            let found = self
                .events
                .iter()
                .position(|e| matches!(e, Event::Completed { request: r, .. } if *r == request));
            if let Some(i) = found {
                if let Event::Completed { outcome, .. } = self.events.remove(i) {
                    return outcome;
                }
            }
            assert!(Instant::now() < end, "request {request:?} did not complete");
            self.pump().await;
        }
    }

    pub async fn ok(&mut self, request: RequestId) -> Value {
        match self.wait_for(request).await {
            Ok(v) => v,
            Err(e) => panic!("request failed: {e:?}"),
        }
    }

    pub async fn err(&mut self, request: RequestId) -> SdkError {
        match self.wait_for(request).await {
            Ok(v) => panic!("request succeeded: {v:?}"),
            Err(e) => e,
        }
    }

    /// Waits for the next not-yet-taken signal `service.name` and returns its arguments.
    pub async fn signal(&mut self, service: &str, name: &str) -> Vec<Value> {
        let end = Instant::now() + DEADLINE;
        loop {
            let found = self.events.iter().position(|e| {
                matches!(e, Event::Signal { service: s, name: n, .. } if *s == service && *n == name)
            });
            if let Some(i) = found {
                if let Event::Signal { args, .. } = self.events.remove(i) {
                    return args;
                }
            }
            assert!(Instant::now() < end, "no {service}.{name} signal");
            self.pump().await;
        }
    }

    /// Signals `service.name` taken so far (after draining what is queued now).
    pub fn take_signals(&mut self, service: &str, name: &str) -> Vec<Vec<Value>> {
        self.client.drain_events(&mut self.events, usize::MAX);
        let mut taken = Vec::new();
        self.events.retain(|e| match e {
            Event::Signal {
                service: s,
                name: n,
                args,
            } if *s == service && *n == name => {
                taken.push(args.clone());
                false
            }
            _ => true,
        });
        taken
    }

    pub async fn login_device(&mut self, device: &str) -> Value {
        let id = self.client.auth().login_device(Some(device.to_owned()));
        self.ok(id).await
    }

    pub async fn login_email(&mut self, email: &str, password: &str) -> Value {
        let id = self
            .client
            .auth()
            .login_email(email.to_owned(), password.to_owned());
        self.ok(id).await
    }

    pub async fn save(&mut self, slot: &str, data: Value) -> Result<Value, SdkError> {
        let id = self.client.saves().save(slot.to_owned(), data, None);
        self.wait_for(id).await
    }

    pub async fn load(&mut self, slot: &str) -> Result<Value, SdkError> {
        let id = self.client.saves().load(slot.to_owned());
        self.wait_for(id).await
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.client.shutdown();
    }
}

/// A player signed in with `device` on a client of `url` (the server's, or a proxy's): the probe,
/// the user id, and the client's data folder (kept while the probe lives).
pub async fn player(
    server: &RealServer,
    url: &str,
    device: &str,
) -> (Probe, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut probe = Probe::new(test_config(url, &server.client_key, dir.path()));
    let signed_in = probe.login_device(device).await;
    (probe, user_id(&signed_in), dir)
}

/// A room of `host` that every guest has joined; returns the room id.
pub async fn room_with(host: &mut Probe, guests: &mut [&mut Probe]) -> String {
    let id = host.client.multiplayer().create_room(Value::Nil);
    let room_id = string(&host.ok(id).await, "room_id");
    for guest in guests.iter_mut() {
        let id = guest.client.multiplayer().join_room(room_id.clone());
        guest.ok(id).await;
    }
    room_id
}

/// Polls `peer` as Godot's `_poll` does, collecting its events, until `done` holds (or the
/// deadline).
pub async fn poll_until(
    peer: &mut MultiplayerPeer,
    events: &mut Vec<PeerEvent>,
    done: impl Fn(&MultiplayerPeer, &[PeerEvent]) -> bool,
) {
    let end = Instant::now() + DEADLINE;
    loop {
        events.extend(peer.poll());
        if done(peer, events) {
            return;
        }
        assert!(Instant::now() < end, "peer never got there: {events:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Polls `peer` until it reported `count` events.
pub async fn peer_events(peer: &mut MultiplayerPeer, count: usize) -> Vec<PeerEvent> {
    let mut events = Vec::new();
    poll_until(peer, &mut events, |_, e| e.len() >= count).await;
    events
}

/// The next packet as Godot reads it: `(peer, channel, mode, bytes)`.
pub async fn next_packet(peer: &mut MultiplayerPeer) -> (i32, i32, TransferMode, Vec<u8>) {
    let mut events = Vec::new();
    poll_until(peer, &mut events, |p, _| p.available_packet_count() > 0).await;
    let header = (
        peer.packet_peer(),
        peer.packet_channel(),
        peer.packet_mode(),
    );
    let data = peer.get_packet().expect("a packet");
    (header.0, header.1, header.2, data)
}

pub fn text(v: &str) -> Value {
    Value::String(v.to_owned())
}

pub fn int(v: &Value, key: &str) -> i64 {
    match v.get(key) {
        Some(Value::Int(i)) => *i,
        other => panic!("{key} is {other:?} in {v:?}"),
    }
}

pub fn string(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        other => panic!("{key} is {other:?} in {v:?}"),
    }
}

pub fn list(v: &Value, key: &str) -> Vec<Value> {
    match v.get(key) {
        Some(Value::Array(items)) => items.clone(),
        other => panic!("{key} is {other:?} in {v:?}"),
    }
}

pub fn user_id(signed_in: &Value) -> String {
    string(signed_in.get("user").expect("user"), "id")
}

/// Keys in sorted order: the server's JSON map sorts object keys (see docs/save-format.md), and
/// `Value` equality is order-sensitive where Godot's Dictionary `==` is not.
pub fn game_save(level: i64) -> Value {
    Value::dict([
        (
            "inventory",
            Value::PackedStringArray(vec!["sword".into(), "shield".into()]),
        ),
        ("level", Value::Int(level)),
        ("position", Value::Vector3([10.0, 0.0, 20.0])),
        ("speed", Value::Float(5.0)),
    ])
}
