//! The real `aethex-server`, built in-process on a fresh SQLite data dir with an injectable clock,
//! and what the scripting API needs from it. Saves are read and written through the server's own
//! API (in-process, with the project's server key, past the fault layer); accounts, sessions and
//! mails are read from its database, so the mock never holds a second copy of the API's state.

use std::sync::Arc;
use std::time::Duration;

use aethex_protocol::auth::User;
use aethex_protocol::saves::{SaveData, SaveHistory, SaveSlotInfo, SaveVersionInfo};
use aethex_protocol::{ErrorCode, ErrorEnvelope, SERVER_KEY_SCHEME};
use aethex_server::clock::OffsetClock;
use aethex_server::{AppState, Config, Server};
use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::Method;
use axum::Router;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::Row;
use tower::ServiceExt;

use crate::error::{MockError, MockResult};

/// Limits and lifetimes of the server behind the mock.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Lifetime of access tokens, rounded up to whole seconds (the server's granularity).
    pub access_token_ttl: Duration,
    /// Largest serialized `data` of one save.
    pub max_slot_bytes: i64,
    /// Bytes of every kept version of every slot of one user.
    pub user_quota_bytes: i64,
    /// Versions kept per slot (deletions included); older ones are pruned.
    pub history_versions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            access_token_ttl: Duration::from_secs(15 * 60),
            max_slot_bytes: 16 * 1024 * 1024,
            user_quota_bytes: 1024 * 1024 * 1024,
            history_versions: 50,
        }
    }
}

impl Limits {
    pub fn access_token_ttl_secs(&self) -> u64 {
        let ttl = self.access_token_ttl;
        (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1)
    }
}

/// A mail the server wrote to its outbox, with the token it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MockMail {
    pub to: String,
    /// `verify_email` or `password_reset`.
    pub kind: String,
    pub token: String,
}

/// The lines of the server's mails that carry a token, and the mail kind each one means.
const TOKEN_LINES: [(&str, &str); 2] = [
    ("verification token: ", "verify_email"),
    ("reset token: ", "password_reset"),
];

pub(crate) struct Backend {
    pub router: Router,
    pub state: AppState,
    pub clock: Arc<OffsetClock>,
    pub server_key: String,
    /// Deleted with the backend; the server's SQLite file and blobs live in it.
    _data_dir: tempfile::TempDir,
}

impl Backend {
    /// Builds a server on a fresh data dir. Its default project gets `client_key` when given (so
    /// a reset keeps the key the game was configured with), else the key the server generated.
    pub async fn start(
        limits: &Limits,
        public_url: String,
        client_key: Option<&str>,
    ) -> std::io::Result<(Backend, String)> {
        let data_dir = tempfile::tempdir()?;
        let mut config = Config {
            data_dir: data_dir.path().to_path_buf(),
            public_url: Some(public_url),
            ..Config::default()
        };
        // The server's own limits would throttle test suites; faults script 429s instead.
        config.rate_limit.enabled = false;
        config.auth.access_token_ttl_secs = limits.access_token_ttl_secs();
        config.saves.max_slot_bytes = limits.max_slot_bytes;
        config.saves.user_quota_bytes = limits.user_quota_bytes;
        config.saves.history_versions = limits.history_versions.max(1) as i64;
        let clock = OffsetClock::new();
        let server = Server::build_with_clock(config, clock.clone())
            .await
            .map_err(|e| std::io::Error::other(format!("aethex-mock: server build: {e:#}")))?;
        let created = server.created_default_project.clone().ok_or_else(|| {
            std::io::Error::other("aethex-mock: a fresh data dir must create the default project")
        })?;
        let client_key = match client_key {
            Some(key) => {
                // Before the first request, so the server's key cache holds nothing stale.
                sqlx::query("UPDATE projects SET client_key = $1 WHERE id = $2")
                    .bind(key)
                    .bind(&created.project.id)
                    .execute(&server.state.db.write)
                    .await
                    .map_err(std::io::Error::other)?;
                key.to_owned()
            }
            None => created.client_key,
        };
        let backend = Backend {
            router: server.router,
            state: server.state,
            clock,
            server_key: created.server_key,
            _data_dir: data_dir,
        };
        Ok((backend, client_key))
    }

    /// One request to the server's API as the game's trusted server, bypassing faults and log.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> MockResult<T> {
        let mut request = Request::builder().method(method).uri(path).header(
            AUTHORIZATION,
            format!("{SERVER_KEY_SCHEME} {}", self.server_key),
        );
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        let request = request.body(body).map_err(MockError::internal)?;
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .unwrap_or_else(|never| match never {});
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .map_err(MockError::internal)?;
        if !status.is_success() {
            let envelope: ErrorEnvelope =
                serde_json::from_slice(&bytes).map_err(MockError::internal)?;
            return Err(MockError {
                status,
                code: envelope.error.code,
                message: envelope.error.message,
                details: envelope.error.details,
                retry_after: None,
            });
        }
        serde_json::from_slice(&bytes).map_err(MockError::internal)
    }

    /// Every kept version of a slot, oldest first (delete markers included).
    pub async fn versions(&self, user_id: &str, slot: &str) -> MockResult<Vec<SaveVersionInfo>> {
        let path = format!(
            "/api/v1/saves/{}/history?slot={}",
            segment(user_id),
            segment(slot)
        );
        let history: SaveHistory = self.call(Method::GET, &path, None).await?;
        Ok(history.versions.into_iter().rev().collect())
    }

    pub async fn save(&self, user_id: &str, slot: &str) -> MockResult<SaveData> {
        let path = format!("/api/v1/saves/{}/{}", segment(user_id), segment(slot));
        self.call(Method::GET, &path, None).await
    }

    /// A write on top of whatever is current, as another device of the player would make it.
    pub async fn conflicting_write(
        &self,
        user_id: &str,
        slot: &str,
        data: Value,
        metadata: Value,
    ) -> MockResult<SaveSlotInfo> {
        let base_version = match self.save(user_id, slot).await {
            Ok(current) => current.info.version,
            // No current save (never written or deleted): base 0 means exactly that.
            Err(e) if e.code == ErrorCode::NotFound => 0,
            Err(e) => return Err(e),
        };
        let body =
            json!({"slot": slot, "data": data, "metadata": metadata, "base_version": base_version});
        let path = format!("/api/v1/saves/{}", segment(user_id));
        self.call(Method::POST, &path, Some(body)).await
    }

    pub async fn users(&self) -> MockResult<Vec<User>> {
        let mut conn = self
            .state
            .db
            .read
            .acquire()
            .await
            .map_err(MockError::internal)?;
        let ids = ids_of(
            sqlx::query("SELECT id FROM users ORDER BY created_at, id")
                .fetch_all(&mut *conn)
                .await,
        )?;
        let mut users = Vec::with_capacity(ids.len());
        for id in ids {
            let user = aethex_server::auth::users::load(&mut conn, &id)
                .await
                .map_err(MockError::internal)?;
            users.push(user);
        }
        Ok(users)
    }

    /// The mails in the server's outbox that carry a token, oldest first.
    pub async fn outbox(&self) -> MockResult<Vec<MockMail>> {
        let rows = sqlx::query("SELECT to_addr, body FROM mail_outbox ORDER BY created_at, id")
            .fetch_all(&self.state.db.read)
            .await
            .map_err(MockError::internal)?;
        let mut mails = Vec::new();
        for row in rows {
            let to: String = row.try_get("to_addr").map_err(MockError::internal)?;
            let body: String = row.try_get("body").map_err(MockError::internal)?;
            let token = body.lines().find_map(|line| {
                TOKEN_LINES.iter().find_map(|(prefix, kind)| {
                    line.strip_prefix(prefix)
                        .map(|token| (kind.to_string(), token.trim().to_owned()))
                })
            });
            if let Some((kind, token)) = token {
                mails.push(MockMail {
                    to: to.clone(),
                    kind,
                    token,
                });
            }
        }
        Ok(mails)
    }

    /// Moves the server's clock past the access-token lifetime: every access token issued so far
    /// answers 401 `token_expired` (refresh tokens live for days and keep working). Returns how
    /// many sessions were open.
    pub async fn expire_access_tokens(&self) -> MockResult<usize> {
        let open: i64 = sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE revoked_at IS NULL")
            .fetch_one(&self.state.db.read)
            .await
            .and_then(|row| row.try_get("n"))
            .map_err(MockError::internal)?;
        let ttl_ms = self.state.config.auth.access_token_ttl_secs as i64 * 1000;
        self.clock.advance_ms(ttl_ms + 1000);
        Ok(open as usize)
    }

    /// Signs every session out, as the server does on a password reset: access and refresh
    /// tokens answer 401 `unauthorized`. Returns how many sessions were open.
    pub async fn revoke_all_sessions(&self) -> MockResult<usize> {
        let now = aethex_server::clock::Clock::now_ms(&*self.clock);
        let ids = ids_of(
            sqlx::query(
                "UPDATE sessions SET revoked_at = $1 WHERE revoked_at IS NULL RETURNING id",
            )
            .bind(now)
            .fetch_all(&self.state.db.write)
            .await,
        )?;
        for id in &ids {
            self.state.auth.remember_revoked_session(id, now);
        }
        Ok(ids.len())
    }
}

/// The `id` column of every row fetched.
fn ids_of(rows: Result<Vec<sqlx::any::AnyRow>, sqlx::Error>) -> MockResult<Vec<String>> {
    rows.map_err(MockError::internal)?
        .iter()
        .map(|row| row.try_get("id"))
        .collect::<Result<_, _>>()
        .map_err(MockError::internal)
}

/// One path segment, percent-encoded (ids and slots come from scripts and tests verbatim).
fn segment(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

/// Size and checksum the server computes for `data`: length and lowercase hex SHA-256 of its
/// compact JSON.
pub fn size_and_checksum(data: &Value) -> (i64, String) {
    use sha2::{Digest, Sha256};
    let bytes = serde_json::to_vec(data).expect("a JSON value serializes");
    let digest = Sha256::digest(&bytes);
    let hex = digest.iter().map(|b| format!("{b:02x}")).collect();
    (bytes.len() as i64, hex)
}
