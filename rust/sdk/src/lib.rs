//! AeThex Cloud client SDK core: all client logic in plain Rust, no Godot types.
//!
//! # Contract with the Godot binding
//! - [`Client`] owns a tokio runtime on background threads. Every network call returns a
//!   [`RequestId`] at once; nothing here blocks its caller or does I/O on the caller's thread.
//! - Results and pushes arrive as [`Event`]s on a queue the binding drains once per frame on
//!   Godot's main thread ([`Client::drain_events`]).
//! - Data crosses the boundary as [`Value`], a portable mirror of Godot's Variant.

// `SdkError` carries a `Value` (as the binding contract fixes), which makes it large; errors are
// rare and never on a hot path, so boxing them would only complicate the API.
#![allow(clippy::result_large_err)]

pub mod analytics;
mod auth;
mod client;
pub mod codec;
mod credentials;
mod http;
pub mod multiplayer;
mod oauth;
mod saves;
mod social;
mod storage;
pub mod value;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub use analytics::{Analytics, AnalyticsConfig};
pub use auth::Auth;
pub use client::Client;
pub use credentials::CredentialStore;
pub use multiplayer::{
    Chat, ConnectionState, ConnectionStatus, LinkPath, LinkStatus, Matchmaking, Multiplayer,
    MultiplayerPeer, P2pConfig, PeerEvent, PeerTransport, RealtimeConfig, RealtimeEncoding,
    TransferMode,
};
pub use saves::Saves;
pub use social::{Achievements, Friends, Groups, Leaderboards, Social, Stats};
pub use value::Value;

/// The release of AeThex Cloud: the workspace's version, which plugin.cfg and CHANGELOG.md state
/// too (held equal by `rust/sdk-smoke/tests/ship.rs`). `AeThexCloud.get_version()` returns it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What to do when an upload finds the slot changed on the server (409 `save_conflict`).
/// Whatever wins, the losing data stays in the server's history of the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictStrategy {
    /// The side written last (local write time vs the server's `updated_at`) becomes current.
    NewestWins,
    /// The server's version stays current; the local data is uploaded first so it is kept in
    /// history, then the server's version is restored on top.
    ServerWins,
    /// The local data is written on top of the server's version.
    ClientWins,
    /// `conflict_detected(slot, local, remote)` is emitted; `Saves::resolve_conflict` answers.
    Manual,
}

impl FromStr for ConflictStrategy {
    type Err = SdkError;
    fn from_str(s: &str) -> Result<Self, SdkError> {
        match s {
            "newest_wins" => Ok(Self::NewestWins),
            "server_wins" => Ok(Self::ServerWins),
            "client_wins" => Ok(Self::ClientWins),
            "manual" => Ok(Self::Manual),
            other => Err(SdkError::new(
                aethex_protocol::ErrorCode::InvalidRequest,
                format!("unknown conflict strategy `{other}`"),
            )),
        }
    }
}

impl ConflictStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NewestWins => "newest_wins",
            Self::ServerWins => "server_wins",
            Self::ClientWins => "client_wins",
            Self::Manual => "manual",
        }
    }
}

/// How transient failures (5xx, 429, network, timeout) are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles each time, with jitter.
    pub base_delay: Duration,
    /// Upper bound of one delay, also for a server's `Retry-After`.
    pub max_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// Opens the OAuth authorize URL; the default launches the system browser.
pub type UrlOpener = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

#[derive(Clone)]
pub struct ClientConfig {
    pub api_url: String,
    /// The game's client key, sent as `X-AeThex-Key`.
    pub client_key: String,
    /// Local state: device id, session, save cache and the offline queue.
    pub data_dir: PathBuf,
    pub conflict_strategy: ConflictStrategy,
    /// How often auto-sync retries queued saves while offline.
    pub auto_sync_interval: Duration,
    pub request_timeout: Duration,
    pub credential_store: CredentialStore,
    /// Additive to the binding contract: retry tuning (tests shorten the delays).
    pub retry: RetryConfig,
    /// Additive to the binding contract: how OAuth opens the browser (tests follow the URL).
    pub url_opener: UrlOpener,
    /// The realtime socket: encoding, reconnect backoff, keepalive.
    pub realtime: RealtimeConfig,
    /// The analytics queue: cap, batch size, upload interval.
    pub analytics: AnalyticsConfig,
}

impl ClientConfig {
    pub fn new(
        api_url: impl Into<String>,
        client_key: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            api_url: api_url.into(),
            client_key: client_key.into(),
            data_dir: data_dir.into(),
            conflict_strategy: ConflictStrategy::NewestWins,
            auto_sync_interval: Duration::from_secs(30),
            request_timeout: Duration::from_secs(15),
            credential_store: CredentialStore::Keyring {
                service: "aethex-cloud".to_owned(),
            },
            retry: RetryConfig::default(),
            url_opener: Arc::new(|url: &str| webbrowser::open(url).map_err(|e| e.to_string())),
            realtime: RealtimeConfig::default(),
            analytics: AnalyticsConfig::default(),
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("api_url", &self.api_url)
            .field("data_dir", &self.data_dir)
            .field("conflict_strategy", &self.conflict_strategy)
            .field("auto_sync_interval", &self.auto_sync_interval)
            .field("request_timeout", &self.request_timeout)
            .field("credential_store", &self.credential_store)
            .field("retry", &self.retry)
            .field("realtime", &self.realtime)
            .field("analytics", &self.analytics)
            .finish_non_exhaustive()
    }
}

/// Identifies one asynchronous call; its [`Event::Completed`] carries the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// An error as the SDK reports it: the server's stable code (or `network` / `timeout` for
/// failures before an answer) and a message for humans.
#[derive(Debug, Clone, PartialEq)]
pub struct SdkError {
    pub code: aethex_protocol::ErrorCode,
    pub message: String,
    /// HTTP status, 0 when no answer arrived.
    pub status: u16,
    /// Code-specific data from the server (e.g. `current` on `save_conflict`).
    pub details: Option<Value>,
}

impl SdkError {
    /// A client-side error (status 0).
    pub fn new(code: aethex_protocol::ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            status: 0,
            details: None,
        }
    }

    /// The error as a Dictionary `{code, message, status}` (plus `details` when present).
    pub fn to_value(&self) -> Value {
        let mut pairs = vec![
            ("code", Value::String(self.code.as_str().to_owned())),
            ("message", Value::String(self.message.clone())),
            ("status", Value::Int(i64::from(self.status))),
        ];
        if let Some(details) = &self.details {
            pairs.push(("details", details.clone()));
        }
        Value::dict(pairs)
    }
}

impl std::fmt::Display for SdkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for SdkError {}

/// What the binding receives each frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An asynchronous call finished. `Ok` holds the result data (usually a `Value::Dictionary`).
    Completed {
        request: RequestId,
        outcome: Result<Value, SdkError>,
    },
    /// A signal to emit on a service object, e.g. `service: "auth", name: "logged_in"`.
    Signal {
        service: &'static str,
        name: &'static str,
        args: Vec<Value>,
    },
}
