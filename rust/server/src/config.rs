//! Server configuration: built-in defaults, then a TOML file, then environment variables and flags.
//!
//! Flags and env vars cover what an operator changes most (`--listen`, `--data-dir`,
//! `--database-url`, `--blob-store`); everything else lives in the TOML file (see docs/server.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

#[derive(Debug, Parser)]
#[command(
    name = "aethex-server",
    version,
    about = "AeThex Cloud reference backend: accounts, cloud saves and every other AeThex API.",
    long_about = "AeThex Cloud reference backend.\n\nWith no arguments it listens on 127.0.0.1:8080 with embedded storage: SQLite and a blob folder under ./aethex-data. On first start it creates the project `default` and writes its client key to <data-dir>/default-project-key and its server key to <data-dir>/default-server-key.\n\nPrecedence: flags > environment variables > the TOML file given by --config > built-in defaults."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub overrides: Overrides,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default when no subcommand is given).
    Serve,
    /// Manage projects (games).
    Project {
        #[command(subcommand)]
        action: ProjectAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectAction {
    /// Create a project and print its client key and server key.
    Create { name: String },
}

/// Settings that flags and environment variables can override.
#[derive(Debug, Default, Clone, Args)]
pub struct Overrides {
    /// TOML configuration file.
    #[arg(long, env = "AETHEX_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "AETHEX_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// Folder for the embedded database, blobs and generated keys [default: ./aethex-data].
    #[arg(long, env = "AETHEX_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://USER@HOST/DB` [default: sqlite://<data-dir>/aethex.db].
    #[arg(long, env = "AETHEX_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    /// `file://DIR` or `s3://BUCKET` (credentials from the usual AWS_* variables)
    /// [default: file://<data-dir>/blobs].
    #[arg(long, env = "AETHEX_BLOB_STORE", global = true)]
    pub blob_store: Option<String>,
    /// Most pooled database connections (PostgreSQL: the whole pool; SQLite: the readers)
    /// [default: 32 on PostgreSQL, 2 per CPU (at least 4) on SQLite].
    #[arg(long, env = "AETHEX_DB_MAX_CONNECTIONS", global = true)]
    pub db_max_connections: Option<u32>,
    /// Milliseconds a request waits for a free database connection before it is answered
    /// 503 `unavailable` with `Retry-After` [default: 3000].
    #[arg(long, env = "AETHEX_DB_ACQUIRE_TIMEOUT_MS", global = true)]
    pub db_acquire_timeout_ms: Option<u64>,
    /// Largest realtime socket frame in bytes [default: 65536].
    #[arg(long, env = "AETHEX_REALTIME_MAX_FRAME_BYTES", global = true)]
    pub realtime_max_frame_bytes: Option<usize>,
    /// Realtime messages a socket may send per second, on average [default: 60].
    #[arg(long, env = "AETHEX_REALTIME_MESSAGES_PER_SECOND", global = true)]
    pub realtime_messages_per_second: Option<u32>,
    /// Rooms one player may be in at once [default: 8].
    #[arg(long, env = "AETHEX_REALTIME_MAX_ROOMS_PER_USER", global = true)]
    pub realtime_max_rooms_per_user: Option<u32>,
    /// NATS server joining this node to a cluster of nodes sharing one PostgreSQL database,
    /// e.g. `nats://127.0.0.1:4222` [default: none, a single node].
    #[arg(long, env = "AETHEX_NATS_URL", global = true)]
    pub nats_url: Option<String>,
    /// First token of every NATS subject the cluster uses; nodes of one cluster share it
    /// [default: aethex].
    #[arg(long, env = "AETHEX_NATS_SUBJECT_PREFIX", global = true)]
    pub nats_subject_prefix: Option<String>,
    /// STUN server URL for WebRTC peer-to-peer connections, e.g. `stun:turn.example.com:3478`;
    /// repeat the flag (or separate with commas) for several [default: none].
    #[arg(
        long = "stun-url",
        env = "AETHEX_STUN_URLS",
        value_delimiter = ',',
        global = true
    )]
    pub stun_urls: Vec<String>,
    /// TURN server URL, e.g. `turn:turn.example.com:3478?transport=udp`; repeatable or
    /// comma-separated. Needs --turn-secret [default: none].
    #[arg(
        long = "turn-url",
        env = "AETHEX_TURN_URLS",
        value_delimiter = ',',
        global = true
    )]
    pub turn_urls: Vec<String>,
    /// The TURN server's `static-auth-secret` (coturn `use-auth-secret`).
    #[arg(
        long,
        env = "AETHEX_TURN_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub turn_secret: Option<String>,
    /// Seconds the TURN credentials handed out stay valid [default: 3600].
    #[arg(long, env = "AETHEX_TURN_CREDENTIAL_TTL_SECS", global = true)]
    pub turn_credential_ttl_secs: Option<u64>,
}

/// The resolved configuration every part of the server reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Empty means the embedded SQLite file under `data_dir`.
    pub database_url: String,
    /// Empty means the blob folder under `data_dir`.
    pub blob_store: String,
    /// Base URL players reach this server at (used in mails); defaults to `http://<listen>`.
    pub public_url: Option<String>,
    pub auth: AuthConfig,
    pub rate_limit: RateLimitConfig,
    pub mail: MailConfig,
    pub oauth: OAuthConfig,
    pub saves: SavesConfig,
    pub database: DatabaseConfig,
    pub realtime: RealtimeConfig,
    pub cluster: ClusterConfig,
    pub chat: ChatConfig,
    pub matchmaking: MatchmakingConfig,
    pub ice: IceConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid default address"),
            data_dir: PathBuf::from("aethex-data"),
            database_url: String::new(),
            blob_store: String::new(),
            public_url: None,
            auth: AuthConfig::default(),
            rate_limit: RateLimitConfig::default(),
            mail: MailConfig::default(),
            oauth: OAuthConfig::default(),
            saves: SavesConfig::default(),
            database: DatabaseConfig::default(),
            realtime: RealtimeConfig::default(),
            cluster: ClusterConfig::default(),
            chat: ChatConfig::default(),
            matchmaking: MatchmakingConfig::default(),
            ice: IceConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub issuer: String,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_days: u64,
    /// Require a solved proof-of-work captcha on registration.
    pub captcha_required: bool,
    /// Leading zero bits the captcha asks for.
    pub captcha_difficulty: u32,
    pub min_password_len: usize,
    /// Lifetime of a mailed email-verification token.
    pub verify_token_ttl_secs: u64,
    /// Lifetime of a mailed password-reset token.
    pub reset_token_ttl_secs: u64,
    /// Lifetime of a captcha challenge.
    pub captcha_ttl_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "aethex-cloud".into(),
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_days: 30,
            captcha_required: false,
            captcha_difficulty: 18,
            min_password_len: 8,
            verify_token_ttl_secs: 24 * 3600,
            reset_token_ttl_secs: 3600,
            captcha_ttl_secs: 300,
        }
    }
}

/// Limits on the auth endpoints (token bucket: a burst, refilled at `per_minute`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub auth_per_ip_per_minute: u32,
    pub auth_per_ip_burst: u32,
    pub auth_per_account_per_minute: u32,
    pub auth_per_account_burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            auth_per_ip_per_minute: 120,
            auth_per_ip_burst: 60,
            auth_per_account_per_minute: 10,
            auth_per_account_burst: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailConfig {
    /// `smtp://host:port` (plain) or `smtps://user:pass@host` ; unset keeps mail in the outbox.
    pub smtp_url: Option<String>,
    pub from: String,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            smtp_url: None,
            from: "AeThex Cloud <no-reply@localhost>".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthConfig {
    pub google: Option<OAuthProviderConfig>,
    pub github: Option<OAuthProviderConfig>,
    pub discord: Option<OAuthProviderConfig>,
}

/// One OAuth provider. Endpoint URLs default to the provider's public ones when empty.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthProviderConfig {
    pub client_id: String,
    pub client_secret: String,
    pub authorize_url: String,
    pub token_url: String,
    pub userinfo_url: String,
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SavesConfig {
    /// Largest serialized `data` of one slot.
    pub max_slot_bytes: i64,
    /// Per-player total of every kept version.
    pub user_quota_bytes: i64,
    /// Versions kept per slot (older ones are pruned); at least 1.
    pub history_versions: i64,
    /// Base64 of 32 bytes for AES-256-GCM; when unset a key is generated into the data dir.
    pub encryption_key: Option<String>,
}

impl Default for SavesConfig {
    fn default() -> Self {
        Self {
            max_slot_bytes: 16 * 1024 * 1024,
            user_quota_bytes: 1024 * 1024 * 1024,
            history_versions: 50,
            encryption_key: None,
        }
    }
}

/// Connection pools. When every connection is busy a request waits `acquire_timeout_ms`, then
/// gets 503 `unavailable` with `Retry-After` instead of queueing until the client gives up.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// PostgreSQL: the pool size; SQLite: the reader pool size (it has one writer connection).
    /// 0 picks the default: 32 on PostgreSQL, 2 per CPU (at least 4) on SQLite.
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            max_connections: 0,
            acquire_timeout_ms: 3000,
        }
    }
}

/// Limits of the realtime socket (`/api/v1/realtime`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RealtimeConfig {
    /// Largest frame a client may send; a bigger one is refused with `payload_too_large`, one
    /// over four times this closes the socket (1009).
    pub max_frame_bytes: usize,
    /// Token bucket per socket: the sustained rate ...
    pub messages_per_second: u32,
    /// ... and the burst above it.
    pub message_burst: u32,
    /// `voice_frame`s have their own bucket per socket, apart from the message rate: the
    /// sustained rate (a speaker sends 50 frames of 20 ms a second) ...
    pub voice_frames_per_second: u32,
    /// ... and the burst above it (a client catching up after a stall).
    pub voice_frame_burst: u32,
    /// Rooms one player may be in at once (over all their sockets).
    pub max_rooms_per_user: u32,
    /// Largest `max_players` a room may ask for (and the default).
    pub max_players: u32,
    /// Highest room `tick_rate` (per second).
    pub max_tick_rate: u32,
    /// Frames queued to one socket; a client that lets it fill up is disconnected (4008).
    pub outbound_queue: usize,
    /// Refused frames (limits, malformed) within `violation_window_secs` that close the socket
    /// (1008).
    pub max_violations: u32,
    pub violation_window_secs: u64,
    /// How long a dropped socket's seats stay "away" for a `resume` before the others see
    /// `player_left`; 0 leaves the rooms at once.
    pub resume_grace_secs: u64,
    /// Events each room keeps for members who resume.
    pub replay_buffer: usize,
    /// Seconds between the server's pings; a socket silent for twice this is dead.
    pub heartbeat_secs: u64,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 64 * 1024,
            messages_per_second: 60,
            message_burst: 120,
            voice_frames_per_second: 60,
            voice_frame_burst: 30,
            max_rooms_per_user: 8,
            max_players: 64,
            max_tick_rate: 60,
            outbound_queue: 1024,
            max_violations: 20,
            violation_window_secs: 10,
            resume_grace_secs: 30,
            replay_buffer: 512,
            heartbeat_secs: 15,
        }
    }
}

/// STUN and TURN servers for WebRTC peer-to-peer connections (`GET /api/v1/realtime/ice`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IceConfig {
    pub stun_urls: Vec<String>,
    pub turn_urls: Vec<String>,
    /// coturn's `static-auth-secret`; TURN servers are handed out only with it.
    pub turn_secret: Option<String>,
    pub turn_credential_ttl_secs: u64,
}

impl Default for IceConfig {
    fn default() -> Self {
        Self {
            stun_urls: Vec::new(),
            turn_urls: Vec::new(),
            turn_secret: None,
            turn_credential_ttl_secs: 3600,
        }
    }
}

/// Several nodes acting as one over NATS (docs/server.md, "Several nodes").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Empty: a single node that needs no NATS.
    pub nats_url: String,
    /// First token of every subject; one per cluster (tests use one per run).
    pub subject_prefix: String,
    /// How often a node announces it is alive.
    pub heartbeat_ms: u64,
    /// A node not heard from for this long is taken as gone: its players' presence is dropped.
    pub node_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nats_url: String::new(),
            subject_prefix: "aethex".into(),
            heartbeat_ms: 1000,
            node_timeout_ms: 5000,
        }
    }
}

/// Chat on the realtime socket (`send_message`, history, mutes).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChatConfig {
    /// Token bucket per player (over all their sockets): the sustained rate ...
    pub messages_per_minute: u32,
    /// ... and the burst above it.
    pub message_burst: u32,
    /// Longest message body, in characters.
    pub max_body_chars: usize,
    /// Largest `metadata`, in bytes of JSON.
    pub max_metadata_bytes: usize,
    /// Largest history page (`limit`); pages default to 50.
    pub max_page: u32,
    /// Most players one player may mute.
    pub max_mutes: u32,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            messages_per_minute: 60,
            message_burst: 10,
            max_body_chars: 2000,
            max_metadata_bytes: 4096,
            max_page: 100,
            max_mutes: 1000,
        }
    }
}

/// Matchmaking on the realtime socket: how often the pool is matched, and the rules of every mode
/// not configured through `PUT /api/v1/matchmaking/modes/{mode}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatchmakingConfig {
    /// Milliseconds between matching passes (a new ticket also starts one at once).
    pub interval_ms: u64,
    pub default_min_players: u32,
    pub default_max_players: u32,
    pub default_timeout_secs: u32,
    pub default_widen_per_sec: f64,
    pub default_max_widen: f64,
    /// Seconds a match's room waits for its first player before it closes.
    pub room_claim_secs: u64,
}

impl Default for MatchmakingConfig {
    fn default() -> Self {
        Self {
            interval_ms: 200,
            default_min_players: 2,
            default_max_players: 2,
            default_timeout_secs: 60,
            default_widen_per_sec: 5.0,
            default_max_widen: 250.0,
            room_claim_secs: 60,
        }
    }
}

impl Config {
    /// Defaults, then the TOML file (if any), then the overrides.
    pub fn load(overrides: &Overrides) -> anyhow::Result<Self> {
        let mut config = match &overrides.config {
            Some(path) => Self::from_toml_file(path)?,
            None => Self::default(),
        };
        if let Some(listen) = overrides.listen {
            config.listen = listen;
        }
        if let Some(dir) = &overrides.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(url) = &overrides.database_url {
            config.database_url = url.clone();
        }
        if let Some(url) = &overrides.blob_store {
            config.blob_store = url.clone();
        }
        if let Some(max) = overrides.db_max_connections {
            config.database.max_connections = max;
        }
        if let Some(ms) = overrides.db_acquire_timeout_ms {
            config.database.acquire_timeout_ms = ms;
        }
        if let Some(bytes) = overrides.realtime_max_frame_bytes {
            config.realtime.max_frame_bytes = bytes;
        }
        if let Some(rate) = overrides.realtime_messages_per_second {
            config.realtime.messages_per_second = rate;
        }
        if let Some(rooms) = overrides.realtime_max_rooms_per_user {
            config.realtime.max_rooms_per_user = rooms;
        }
        if let Some(url) = &overrides.nats_url {
            config.cluster.nats_url = url.clone();
        }
        if let Some(prefix) = &overrides.nats_subject_prefix {
            config.cluster.subject_prefix = prefix.clone();
        }
        if !overrides.stun_urls.is_empty() {
            config.ice.stun_urls = overrides.stun_urls.clone();
        }
        if !overrides.turn_urls.is_empty() {
            config.ice.turn_urls = overrides.turn_urls.clone();
        }
        if let Some(secret) = &overrides.turn_secret {
            config.ice.turn_secret = Some(secret.clone());
        }
        if let Some(ttl) = overrides.turn_credential_ttl_secs {
            config.ice.turn_credential_ttl_secs = ttl;
        }
        Ok(config)
    }

    pub fn from_toml_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))
    }

    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("aethex.db").display())
        } else {
            self.database_url.clone()
        }
    }

    pub fn blob_store_url(&self) -> String {
        if self.blob_store.is_empty() {
            format!("file://{}", self.data_dir.join("blobs").display())
        } else {
            self.blob_store.clone()
        }
    }

    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aethex.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\n[saves]\nmax_slot_bytes = 1024\n[auth]\ncaptcha_required = true\n",
        )
        .unwrap();
        let overrides = Overrides {
            config: Some(file),
            data_dir: Some("/tmp/x".into()),
            ..Default::default()
        };
        let config = Config::load(&overrides).unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.saves.max_slot_bytes, 1024);
        assert!(config.auth.captcha_required);
        assert_eq!(config.database_url(), "sqlite:///tmp/x/aethex.db");
    }

    #[test]
    fn database_pool_settings_from_toml_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aethex.toml");
        std::fs::write(
            &file,
            "[database]\nmax_connections = 8\nacquire_timeout_ms = 500\n",
        )
        .unwrap();
        let mut overrides = Overrides {
            config: Some(file),
            ..Default::default()
        };
        let config = Config::load(&overrides).unwrap();
        assert_eq!(config.database.max_connections, 8);
        assert_eq!(config.database.acquire_timeout_ms, 500);
        overrides.db_acquire_timeout_ms = Some(250);
        assert_eq!(
            Config::load(&overrides)
                .unwrap()
                .database
                .acquire_timeout_ms,
            250
        );
        assert_eq!(Config::default().database.acquire_timeout_ms, 3000);
    }

    #[test]
    fn ice_servers_from_toml_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aethex.toml");
        std::fs::write(
            &file,
            "[ice]\nstun_urls = [\"stun:a:3478\"]\nturn_secret = \"from-file\"\nturn_credential_ttl_secs = 60\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "aethex-server",
            "--config",
            file.to_str().unwrap(),
            "--turn-url",
            "turn:b:3478?transport=udp,turns:b:5349",
            "--turn-url",
            "turn:c:3478",
            "--turn-secret",
            "from-flag",
        ])
        .unwrap();
        let config = Config::load(&cli.overrides).unwrap();
        assert_eq!(config.ice.stun_urls, ["stun:a:3478"]);
        assert_eq!(
            config.ice.turn_urls,
            ["turn:b:3478?transport=udp", "turns:b:5349", "turn:c:3478"]
        );
        assert_eq!(config.ice.turn_secret.as_deref(), Some("from-flag"));
        assert_eq!(config.ice.turn_credential_ttl_secs, 60);
        assert_eq!(Config::default().ice.turn_credential_ttl_secs, 3600);
    }

    #[test]
    fn realtime_limits_from_toml_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aethex.toml");
        std::fs::write(
            &file,
            "[realtime]\nmax_frame_bytes = 2048\nmessages_per_second = 5\n",
        )
        .unwrap();
        let mut overrides = Overrides {
            config: Some(file),
            ..Default::default()
        };
        let config = Config::load(&overrides).unwrap();
        assert_eq!(config.realtime.max_frame_bytes, 2048);
        assert_eq!(config.realtime.messages_per_second, 5);
        assert_eq!(config.realtime.max_rooms_per_user, 8);
        overrides.realtime_messages_per_second = Some(7);
        overrides.realtime_max_rooms_per_user = Some(2);
        let config = Config::load(&overrides).unwrap();
        assert_eq!(config.realtime.messages_per_second, 7);
        assert_eq!(config.realtime.max_rooms_per_user, 2);
    }

    #[test]
    fn cluster_from_toml_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("aethex.toml");
        std::fs::write(
            &file,
            "[cluster]\nnats_url = \"nats://127.0.0.1:4222\"\nheartbeat_ms = 500\n",
        )
        .unwrap();
        let mut overrides = Overrides {
            config: Some(file),
            ..Default::default()
        };
        let config = Config::load(&overrides).unwrap();
        assert_eq!(config.cluster.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(config.cluster.heartbeat_ms, 500);
        assert_eq!(config.cluster.subject_prefix, "aethex");
        overrides.nats_url = Some("nats://127.0.0.2:4222".into());
        overrides.nats_subject_prefix = Some("game1".into());
        let config = Config::load(&overrides).unwrap();
        assert_eq!(config.cluster.nats_url, "nats://127.0.0.2:4222");
        assert_eq!(config.cluster.subject_prefix, "game1");
        assert!(Config::default().cluster.nats_url.is_empty());
    }

    #[test]
    fn chat_limits_from_toml() {
        let config: Config =
            toml::from_str("[chat]\nmessages_per_minute = 5\nmax_body_chars = 100\n").unwrap();
        assert_eq!(config.chat.messages_per_minute, 5);
        assert_eq!(config.chat.max_body_chars, 100);
        assert_eq!(config.chat.message_burst, 10);
        assert!(toml::from_str::<Config>("[chat]\nper_minute = 5\n").is_err());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<Config>("lisen = \"x\"").unwrap_err();
        assert!(err.to_string().contains("lisen"));
    }
}
