//! `Analytics`: opt-in events and metrics.
//!
//! Nothing is recorded before `set_consent(true)`. A `track_*` call only stamps the event (id,
//! session, sequence, client time) and hands it to the analytics task over a channel: no disk or
//! network I/O on the caller's thread. The task appends events to the persisted queue
//! (`queue`), and uploads them in zstd-compressed batches of up to `batch_size` (every
//! `flush_interval`, as soon as a batch is full, on `flush` and at quit) while a player is signed
//! in. Offline, the queue waits on disk; across a crash it is read back at the next start, and
//! the server stores each event id once, so a batch sent twice arrives once. Revoking consent
//! deletes the queue.
//!
//! Experiments and remote config: the player's assignments are fetched at every sign-in and
//! every `assignments_interval`, cached in memory and on disk, and `get_variant` / `get_config`
//! answer from that copy at once; the first `get_variant` of an experiment per session records
//! an `experiment_exposure` event.
//!
//! The consent is also stored on the server (`PUT`/`DELETE /api/v1/analytics/consent`, with its
//! time); changed while offline or signed out, it is sent before the next upload.

mod queue;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use aethex_protocol::analytics::{
    AnalyticsEvent, Assignments, ConsentRequest, EventKind, IngestRequest, IngestResponse,
    MAX_EVENTS_PER_BATCH,
};
use aethex_protocol::ErrorCode;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::client::Shared;
use crate::codec::plain_from_json;
use crate::http::{Body, Request};
use crate::storage::write_atomic;
use crate::{RequestId, SdkError, Value};

use queue::DiskQueue;

/// Tuning of the analytics queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyticsConfig {
    /// Most events kept on disk; beyond it the oldest are dropped (`dropped_events`).
    pub max_queued_events: usize,
    /// Most events per upload (the server takes up to 500).
    pub batch_size: usize,
    /// How often queued events are uploaded.
    pub flush_interval: Duration,
    /// How often experiment assignments and remote config are fetched again (also at every
    /// sign-in).
    pub assignments_interval: Duration,
    /// Sent with the assignment request, for experiments targeting platforms (e.g. `android`).
    pub platform: Option<String>,
    /// Sent with the assignment request, for experiments targeting game builds.
    pub build: Option<String>,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            max_queued_events: 10_000,
            batch_size: 200,
            flush_interval: Duration::from_secs(15),
            assignments_interval: Duration::from_secs(300),
            platform: None,
            build: None,
        }
    }
}

/// The consent as kept on disk (`data_dir/analytics/consent.json`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct StoredConsent {
    granted: bool,
    under_13: bool,
    /// The server has this answer.
    synced: bool,
}

impl StoredConsent {
    /// Never asked, or refused by the server: nothing to send it.
    const NONE: Self = Self {
        granted: false,
        under_13: false,
        synced: true,
    };
}

enum Command {
    Track(Tracked),
    Consent {
        consent: StoredConsent,
        request: RequestId,
    },
    Flush(RequestId),
    /// Persist, try one upload, then answer (quit).
    Quit(std::sync::mpsc::Sender<()>),
}

/// An event as the caller stamped it; the task converts the properties.
struct Tracked {
    id: uuid::Uuid,
    kind: EventKind,
    name: String,
    properties: Value,
    value: Option<f64>,
    seq: i64,
    client_time: i64,
}

pub(crate) struct AnalyticsState {
    consent: AtomicBool,
    session_id: String,
    seq: AtomicI64,
    inbox: mpsc::UnboundedSender<Command>,
    /// Events in the persisted queue, as of the task's last write.
    queued: AtomicU64,
    dropped: AtomicU64,
    /// The last fetched experiment variants and config values (also kept on disk, read at start).
    assignments: RwLock<Cached>,
    /// Experiments whose exposure this session already recorded.
    exposed: Mutex<HashSet<String>>,
}

/// Experiment variants and remote config as the SDK caches them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Cached {
    variants: BTreeMap<String, String>,
    config: serde_json::Map<String, serde_json::Value>,
}

#[derive(Clone)]
pub struct Analytics {
    shared: Arc<Shared>,
    state: Arc<AnalyticsState>,
}

fn dir(shared: &Shared) -> PathBuf {
    shared.config.data_dir.join("analytics")
}

fn consent_path(shared: &Shared) -> PathBuf {
    dir(shared).join("consent.json")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Analytics {
    /// Reads the stored consent (one small file, at client creation) and starts the task.
    pub(crate) fn start(shared: Arc<Shared>) -> Self {
        let stored: StoredConsent = std::fs::read(consent_path(&shared))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(StoredConsent::NONE);
        let (inbox, commands) = mpsc::unbounded_channel();
        let state = Arc::new(AnalyticsState {
            consent: AtomicBool::new(stored.granted),
            session_id: uuid::Uuid::now_v7().to_string(),
            seq: AtomicI64::new(0),
            inbox,
            queued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            assignments: RwLock::new(Cached::default()),
            exposed: Mutex::new(HashSet::new()),
        });
        shared
            .handle
            .spawn(run(shared.clone(), state.clone(), stored, commands));
        Self { shared, state }
    }

    /// Whether events are recorded now.
    pub fn has_consent(&self) -> bool {
        self.state.consent.load(Ordering::Relaxed)
    }

    /// Grants or revokes consent. Effective at once locally (revoking deletes the queue); the
    /// result reports whether the server has it yet (`synced`; else it is sent before the next
    /// upload).
    pub fn set_consent(&self, granted: bool, under_13: bool) -> RequestId {
        self.state.consent.store(granted, Ordering::SeqCst);
        let request = self.shared.new_request();
        self.send(Command::Consent {
            consent: StoredConsent {
                granted,
                under_13,
                synced: false,
            },
            request,
        });
        request
    }

    /// Records a named event with properties (a Dictionary). False when not recorded (no
    /// consent).
    pub fn track_event(&self, name: &str, properties: Value) -> bool {
        self.track(EventKind::Event, name, properties, None)
    }

    /// Records a number, e.g. `fps`.
    pub fn track_metric(&self, name: &str, value: f64) -> bool {
        self.track(EventKind::Metric, name, Value::Nil, Some(value))
    }

    /// Records that the player opened the screen `name`.
    pub fn track_screen(&self, name: &str) -> bool {
        self.track(EventKind::Screen, name, Value::Nil, None)
    }

    /// Sets a property of the player (e.g. `vip_status`); the server keeps the latest value.
    pub fn set_user_property(&self, name: &str, value: Value) -> bool {
        self.track(
            EventKind::UserProperty,
            name,
            Value::dict([("value", value)]),
            None,
        )
    }

    fn track(&self, kind: EventKind, name: &str, properties: Value, value: Option<f64>) -> bool {
        if !self.has_consent() || self.shared.is_shut_down() {
            return false;
        }
        self.send(Command::Track(Tracked {
            id: uuid::Uuid::now_v7(),
            kind,
            name: name.to_owned(),
            properties,
            value,
            seq: self.state.seq.fetch_add(1, Ordering::Relaxed),
            client_time: now_ms(),
        }));
        true
    }

    /// This player's variant of a running experiment, from the cached assignments (fetched at
    /// sign-in and every `assignments_interval`); `None` when not assigned or not fetched yet.
    /// The first answer per experiment and session (with consent) records an
    /// `experiment_exposure` event.
    pub fn get_variant(&self, experiment: &str) -> Option<String> {
        let variant = self
            .state
            .assignments
            .read()
            .expect("assignments lock")
            .variants
            .get(experiment)
            .cloned()?;
        // Marked only once recorded: a variant read before consent is recorded at the first
        // read after it.
        let mut exposed = self.state.exposed.lock().expect("exposure lock");
        if !exposed.contains(experiment)
            && self.track_event(
                "experiment_exposure",
                Value::dict([
                    ("experiment", Value::String(experiment.to_owned())),
                    ("variant", Value::String(variant.clone())),
                ]),
            )
        {
            exposed.insert(experiment.to_owned());
        }
        Some(variant)
    }

    /// A remote config value from the cached copy, or `default` when the key is unknown.
    pub fn get_config(&self, key: &str, default: Value) -> Value {
        self.state
            .assignments
            .read()
            .expect("assignments lock")
            .config
            .get(key)
            .map_or(default, plain_from_json)
    }

    /// Uploads everything queued now; completes with `{uploaded, queued}`.
    pub fn flush(&self) -> RequestId {
        let request = self.shared.new_request();
        self.send(Command::Flush(request));
        request
    }

    /// Events waiting in the persisted queue (as of the last write to disk).
    pub fn queued_events(&self) -> u64 {
        self.state.queued.load(Ordering::SeqCst)
    }

    /// Events dropped because the queue was full since the client started.
    pub fn dropped_events(&self) -> u64 {
        self.state.dropped.load(Ordering::SeqCst)
    }

    /// At quit: writes what is queued to disk and tries one upload, waiting at most `timeout`.
    /// Blocks the caller; `Client::shutdown_and_wait` calls it.
    pub(crate) fn quit(&self, timeout: Duration) {
        let (done, wait) = std::sync::mpsc::channel();
        if self.state.inbox.send(Command::Quit(done)).is_ok() {
            let _ = wait.recv_timeout(timeout);
        }
    }

    fn send(&self, command: Command) {
        if let Err(mpsc::error::SendError(command)) = self.state.inbox.send(command) {
            // The task ended with the runtime: answer calls that expect one.
            let stopped = SdkError::new(ErrorCode::Unavailable, "the client was shut down");
            match command {
                Command::Consent { request, .. } | Command::Flush(request) => {
                    self.shared.complete(request, Err(stopped))
                }
                Command::Track(_) | Command::Quit(_) => {}
            }
        }
    }
}

/// A Godot value as plain JSON: math types become arrays of numbers, non-string keys their JSON
/// text, non-finite floats `null`.
fn plain_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    fn numbers<T: Copy + Into<f64>>(items: &[T]) -> J {
        J::Array(items.iter().map(|n| number((*n).into())).collect())
    }
    fn number(n: f64) -> J {
        serde_json::Number::from_f64(n).map_or(J::Null, J::Number)
    }
    match value {
        Value::Nil => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(f) => number(*f),
        Value::String(s) | Value::StringName(s) | Value::NodePath(s) => J::String(s.clone()),
        Value::Vector2(v) => numbers(v),
        Value::Vector2i(v) => numbers(v),
        Value::Vector3(v) => numbers(v),
        Value::Vector3i(v) => numbers(v),
        Value::Vector4(v) | Value::Rect2(v) | Value::Quaternion(v) | Value::Plane(v) => numbers(v),
        Value::Color(v) => numbers(v),
        Value::Vector4i(v) | Value::Rect2i(v) => numbers(v),
        Value::Transform2D(v) | Value::Aabb(v) => numbers(v),
        Value::Basis(v) => numbers(v),
        Value::Transform3D(v) => numbers(v),
        Value::Projection(v) => numbers(v),
        Value::PackedByteArray(v) => J::Array(v.iter().map(|b| J::from(*b)).collect()),
        Value::PackedInt32Array(v) => J::Array(v.iter().map(|n| J::from(*n)).collect()),
        Value::PackedInt64Array(v) => J::Array(v.iter().map(|n| J::from(*n)).collect()),
        Value::PackedFloat32Array(v) => numbers(v),
        Value::PackedFloat64Array(v) => numbers(v),
        Value::PackedStringArray(v) => J::Array(v.iter().map(|s| J::String(s.clone())).collect()),
        Value::PackedVector2Array(v) => J::Array(v.iter().map(|p| numbers(p)).collect()),
        Value::PackedVector3Array(v) => J::Array(v.iter().map(|p| numbers(p)).collect()),
        Value::PackedVector4Array(v) | Value::PackedColorArray(v) => {
            J::Array(v.iter().map(|p| numbers(p)).collect())
        }
        Value::Array(items) => J::Array(items.iter().map(plain_json).collect()),
        Value::Dictionary(pairs) => J::Object(
            pairs
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Value::String(s) | Value::StringName(s) => s.clone(),
                        other => plain_json(other).to_string(),
                    };
                    (key, plain_json(v))
                })
                .collect(),
        ),
    }
}

fn event_of(state: &AnalyticsState, tracked: Tracked) -> AnalyticsEvent {
    let properties = match plain_json(&tracked.properties) {
        serde_json::Value::Object(map) => map,
        serde_json::Value::Null => serde_json::Map::new(),
        // A bare value (not a Dictionary) is kept under `value`.
        other => serde_json::Map::from_iter([("value".to_owned(), other)]),
    };
    AnalyticsEvent {
        id: tracked.id.to_string(),
        kind: tracked.kind,
        name: tracked.name,
        properties,
        value: tracked.value,
        session_id: state.session_id.clone(),
        seq: tracked.seq,
        client_time: tracked.client_time,
    }
}

/// Blocking file work from the task: on a runtime thread (never the game's), without stalling
/// the other tasks of the worker.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

struct Task {
    shared: Arc<Shared>,
    state: Arc<AnalyticsState>,
    queue: DiskQueue,
    consent: StoredConsent,
}

async fn run(
    shared: Arc<Shared>,
    state: Arc<AnalyticsState>,
    consent: StoredConsent,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let path = dir(&shared).join("queue.jsonl");
    let cap = shared.config.analytics.max_queued_events;
    let queue = blocking(|| DiskQueue::load(path, cap));
    let cache_path = dir(&shared).join("assignments.json");
    if let Some(cached) = blocking(|| std::fs::read(&cache_path).ok())
        .and_then(|bytes| serde_json::from_slice::<Cached>(&bytes).ok())
    {
        *state.assignments.write().expect("assignments lock") = cached;
    }
    let mut sessions = shared.session_epoch();
    let mut fetched_for: Option<String> = None;
    let mut task = Task {
        shared,
        state,
        queue,
        consent,
    };
    task.after_write();
    let mut tick = tokio::time::interval(task.shared.config.analytics.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refresh = tokio::time::interval(task.shared.config.analytics.assignments_interval);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { return };
                // Everything waiting is handled together: one disk write for a burst of events.
                let mut batch = vec![command];
                while let Ok(more) = commands.try_recv() {
                    batch.push(more);
                }
                task.handle(batch).await;
            }
            // A sign-in (another player, or the first) and the periodic refresh fetch
            // assignments; a token refresh of the same player changes nothing they depend on.
            changed = sessions.changed() => {
                if changed.is_err() {
                    return;
                }
                let player = task.shared.session_user_id();
                if player.is_some() && player != fetched_for {
                    fetched_for = player;
                    task.fetch_assignments().await;
                }
            }
            _ = refresh.tick() => {
                fetched_for = task.shared.session_user_id();
                task.fetch_assignments().await;
            }
            _ = tick.tick() => {
                // A failed upload is retried at the next tick; the events stay queued.
                let _ = task.upload_all().await;
            }
        }
    }
}

impl Task {
    async fn handle(&mut self, commands: Vec<Command>) {
        let mut flushes = Vec::new();
        let mut quits = Vec::new();
        for command in commands {
            match command {
                Command::Track(tracked) => {
                    // Tracked before a revocation that is handled in this same batch: the
                    // revocation below clears it.
                    if self.consent.granted {
                        self.queue.push(event_of(&self.state, tracked));
                    }
                }
                Command::Consent { consent, request } => {
                    let result = self.change_consent(consent).await;
                    self.shared.complete(request, result);
                }
                Command::Flush(request) => flushes.push(request),
                Command::Quit(done) => quits.push(done),
            }
        }
        self.write();
        if !flushes.is_empty() || !quits.is_empty() {
            let uploaded = if quits.is_empty() {
                self.upload_all().await
            } else {
                // At quit one attempt only: the game is waiting to close.
                self.upload_once().await
            };
            for request in flushes {
                self.shared.complete(
                    request,
                    uploaded.clone().map(|n| {
                        Value::dict([
                            ("uploaded", Value::Int(n as i64)),
                            ("queued", Value::Int(self.queue.len() as i64)),
                        ])
                    }),
                );
            }
            for done in quits {
                let _ = done.send(());
            }
        } else if self.queue.len() >= self.batch_size() {
            let _ = self.upload_all().await;
        }
    }

    fn batch_size(&self) -> usize {
        self.shared
            .config
            .analytics
            .batch_size
            .clamp(1, MAX_EVENTS_PER_BATCH)
    }

    fn write(&mut self) {
        if let Err(e) = blocking(|| self.queue.persist()) {
            tracing::warn!(error = %e, "could not write the analytics queue");
        }
        self.after_write();
    }

    fn after_write(&self) {
        self.state
            .queued
            .store(self.queue.len() as u64, Ordering::SeqCst);
        self.state
            .dropped
            .store(self.queue.dropped, Ordering::SeqCst);
    }

    async fn change_consent(&mut self, consent: StoredConsent) -> Result<Value, SdkError> {
        self.consent = consent;
        if !consent.granted {
            if let Err(e) = blocking(|| self.queue.clear()) {
                tracing::warn!(error = %e, "could not delete the analytics queue");
            }
            self.after_write();
        }
        self.store_consent();
        let synced = if self.consent.synced {
            true
        } else if self.shared.is_logged_in() {
            self.sync_consent().await.is_ok()
        } else {
            false
        };
        Ok(Value::dict([
            ("granted", Value::Bool(consent.granted)),
            ("under_13", Value::Bool(consent.under_13)),
            ("synced", Value::Bool(synced)),
        ]))
    }

    fn store_consent(&self) {
        let path = consent_path(&self.shared);
        let bytes = serde_json::to_vec(&self.consent).expect("consent serializes");
        if let Err(e) = blocking(|| write_atomic(&path, &bytes, true)) {
            tracing::warn!(error = %e, "could not store the analytics consent");
        }
    }

    /// Fetches the player's assignments into the cache (and its file). Failures keep the
    /// cached copy; the next refresh tries again.
    async fn fetch_assignments(&mut self) {
        if !self.shared.is_logged_in() {
            return;
        }
        let config = &self.shared.config.analytics;
        let mut query = Vec::new();
        for (name, value) in [("platform", &config.platform), ("build", &config.build)] {
            if let Some(value) = value {
                query.push(format!(
                    "{name}={}",
                    percent_encoding::utf8_percent_encode(
                        value,
                        percent_encoding::NON_ALPHANUMERIC
                    )
                ));
            }
        }
        let path = match query.is_empty() {
            true => "/api/v1/analytics/assignments".to_owned(),
            false => format!("/api/v1/analytics/assignments?{}", query.join("&")),
        };
        let reply = self
            .shared
            .authed(|| Request::new(Method::GET, path.clone()))
            .await;
        let Ok(assignments) = reply.and_then(|r| r.json::<Assignments>()) else {
            return;
        };
        let cached = Cached {
            variants: assignments.variants,
            config: assignments.config,
        };
        let bytes = serde_json::to_vec(&cached).expect("assignments serialize");
        *self.state.assignments.write().expect("assignments lock") = cached;
        let path = dir(&self.shared).join("assignments.json");
        if let Err(e) = blocking(|| write_atomic(&path, &bytes, true)) {
            tracing::warn!(error = %e, "could not store the experiment assignments");
        }
    }

    /// Sends the consent to the server.
    async fn sync_consent(&mut self) -> Result<(), SdkError> {
        let consent = self.consent;
        let reply = self
            .shared
            .authed(|| {
                if consent.granted {
                    Request::new(Method::PUT, "/api/v1/analytics/consent").json(&ConsentRequest {
                        under_13: consent.under_13,
                    })
                } else {
                    Request::new(Method::DELETE, "/api/v1/analytics/consent")
                }
            })
            .await;
        reply?;
        self.consent.synced = true;
        self.store_consent();
        Ok(())
    }

    /// Uploads batches until the queue is empty or an upload fails; returns how many events
    /// the server took.
    async fn upload_all(&mut self) -> Result<usize, SdkError> {
        let mut uploaded = 0;
        loop {
            match self.upload_once().await {
                Ok(0) => break,
                Ok(n) => uploaded += n,
                Err(e) => return Err(e),
            }
        }
        Ok(uploaded)
    }

    /// One batch from the front of the queue.
    async fn upload_once(&mut self) -> Result<usize, SdkError> {
        if !self.shared.is_logged_in() {
            return Ok(0);
        }
        // A consent changed while offline or signed out reaches the server first (also a
        // revocation, with nothing left to upload).
        if !self.consent.synced {
            self.sync_consent().await?;
        }
        if self.queue.is_empty() || !self.consent.granted {
            return Ok(0);
        }
        let events = self.queue.front(self.batch_size());
        let count = events.len();
        let body = IngestRequest {
            sent_at: now_ms(),
            events,
        };
        let json = serde_json::to_vec(&body).expect("events serialize");
        let compressed = zstd::bulk::compress(&json, 3)
            .map_err(|e| SdkError::new(ErrorCode::Internal, format!("zstd: {e}")))?;
        let reply = self
            .shared
            .authed(|| {
                let mut request = Request::new(Method::POST, "/api/v1/analytics/events");
                request.body = Some(Body::Zstd(compressed.clone()));
                request
            })
            .await;
        match reply.and_then(|r| r.json::<IngestResponse>()) {
            Ok(_) => {
                self.queue.remove_front(count);
                self.write();
                Ok(count)
            }
            Err(e) if e.code == ErrorCode::ConsentRequired => {
                // The server has no consent (revoked on another device): stop and forget.
                self.state.consent.store(false, Ordering::SeqCst);
                self.change_consent(StoredConsent::NONE).await?;
                Err(e)
            }
            Err(e) if matches!(e.status, 400 | 413) => {
                // The server will never take this batch: drop it rather than block the queue.
                tracing::warn!(error = %e, "analytics batch refused; dropped");
                self.queue.remove_front(count);
                self.queue.dropped += count as u64;
                self.write();
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn godot_values_become_plain_json() {
        let value = Value::Dictionary(vec![
            (Value::String("level".into()), Value::Int(5)),
            (Value::String("pos".into()), Value::Vector2([1.0, 2.5])),
            (Value::Int(3), Value::Float(f64::NAN)),
            (
                Value::StringName("tags".into()),
                Value::PackedStringArray(vec!["a".into()]),
            ),
        ]);
        assert_eq!(
            plain_json(&value),
            serde_json::json!({"level": 5, "pos": [1.0, 2.5], "3": null, "tags": ["a"]})
        );
    }
}
