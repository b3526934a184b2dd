//! Accounts and sessions: `/api/v1/auth/*`.

pub mod device;
pub mod sessions;
pub mod users;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::routing::post;
use axum::Router;
use utoipa::OpenApi;

use crate::app::AppState;
use crate::config::Config;
use crate::db::Db;

/// State the auth service keeps between requests.
#[derive(Clone, Default)]
pub struct AuthService {
    /// Sessions signed out on this node, with when: their access tokens stop working at once
    /// instead of at expiry. Entries older than the access-token lifetime are pruned.
    revoked_sessions: Arc<RwLock<HashMap<String, i64>>>,
    access_token_ttl_ms: i64,
}

impl AuthService {
    pub async fn new(config: &Config, _db: &Db) -> anyhow::Result<Self> {
        Ok(Self {
            revoked_sessions: Default::default(),
            access_token_ttl_ms: config.auth.access_token_ttl_secs as i64 * 1000,
        })
    }

    pub fn is_session_revoked(&self, session_id: &str) -> bool {
        self.revoked_sessions
            .read()
            .expect("lock")
            .contains_key(session_id)
    }

    pub fn remember_revoked_session(&self, session_id: &str, now_ms: i64) {
        let mut revoked = self.revoked_sessions.write().expect("lock");
        let ttl = self.access_token_ttl_ms;
        revoked.retain(|_, at| now_ms - *at < ttl);
        revoked.insert(session_id.to_owned(), now_ms);
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/auth/device", post(device::device_login))
}

#[derive(OpenApi)]
#[openapi(
    paths(device::device_login),
    components(schemas(
        aethex_protocol::auth::User,
        aethex_protocol::auth::AuthResponse,
        aethex_protocol::auth::DeviceAuthRequest,
    ))
)]
pub struct AuthApi;
