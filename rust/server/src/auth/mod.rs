//! Accounts and sessions: `/api/v1/auth/*`.

pub mod captcha;
pub mod device;
pub mod email;
pub mod identity_lookup;
pub mod link;
pub mod mail;
pub mod oauth;
pub mod passwords;
pub mod profile;
pub mod rate_limit;
pub mod recovery;
pub mod refresh;
pub mod sessions;
pub mod sign_in_writer;
pub mod users;

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use sqlx::Row;
use utoipa::OpenApi;

use crate::app::AppState;
use crate::config::Config;
use crate::db::Db;

/// State the auth service keeps between requests.
#[derive(Clone)]
pub struct AuthService {
    /// Revoked sessions, with when: their access tokens stop working at once instead of at
    /// expiry. This node's revocations land here immediately; other nodes' (and those from
    /// before a restart) are read from `sessions` every `REVOCATION_SYNC_INTERVAL`, so requests
    /// never query the database for it. Entries older than the access-token lifetime are pruned.
    revoked_sessions: Arc<RwLock<HashMap<String, i64>>>,
    access_token_ttl_ms: i64,
    pub passwords: passwords::Passwords,
    pub rate_limits: rate_limit::RateLimits,
    pub mailer: mail::Mailer,
    pub captcha_key: captcha::CaptchaKey,
    /// Client for OAuth providers (connection pool shared by every sign-in).
    pub http: reqwest::Client,
    /// Reads the account of a returning device sign-in.
    pub identity_lookup: Arc<identity_lookup::IdentityLookup>,
    /// Group-commits the sessions and accounts device sign-ins create.
    pub sign_in_writer: sign_in_writer::SignInWriter,
    /// Names accounts created without a requested username.
    pub username_generator: users::UsernameGenerator,
}

impl AuthService {
    pub async fn new(config: &Config, db: &Db) -> anyhow::Result<Self> {
        let access_token_ttl_ms = config.auth.access_token_ttl_secs as i64 * 1000;
        users::backfill_skeletons(&db.write).await?;
        let revoked_sessions = Arc::new(RwLock::new(HashMap::new()));
        // Sessions revoked while this node was down may still have live access tokens.
        let newest: Option<i64> = sqlx::query("SELECT MAX(revoked_at) AS newest FROM sessions")
            .fetch_one(&db.read)
            .await?
            .try_get("newest")?;
        let watermark = match newest {
            Some(newest) => {
                sync_revocations(
                    &revoked_sessions,
                    db,
                    newest - access_token_ttl_ms,
                    access_token_ttl_ms,
                )
                .await?
            }
            None => 0,
        };
        tokio::spawn(keep_revocations_in_sync(
            Arc::downgrade(&revoked_sessions),
            db.clone(),
            watermark,
            access_token_ttl_ms,
        ));
        Ok(Self {
            revoked_sessions,
            access_token_ttl_ms,
            passwords: passwords::Passwords::new().await?,
            rate_limits: rate_limit::RateLimits::new(&config.rate_limit),
            mailer: mail::Mailer::new(&config.mail, db.clone())?,
            captcha_key: captcha::CaptchaKey::load_or_create(db).await?,
            http: reqwest::Client::builder()
                .timeout(oauth::PROVIDER_TIMEOUT)
                .build()?,
            identity_lookup: Arc::new(identity_lookup::IdentityLookup::new(db).await?),
            sign_in_writer: sign_in_writer::SignInWriter::start(
                db,
                config.auth.refresh_token_ttl_days as i64 * 24 * 3600 * 1000,
            ),
            username_generator: users::UsernameGenerator::default(),
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

/// How often a node picks up sessions other nodes revoked.
pub const REVOCATION_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Re-read window behind the newest revocation seen: a transaction that stamped `revoked_at`
/// earlier may commit after a later one was already read.
const REVOCATION_OVERLAP_MS: i64 = 10_000;

/// Adds sessions revoked after `since` to `revoked`; returns the newest `revoked_at` read.
async fn sync_revocations(
    revoked: &RwLock<HashMap<String, i64>>,
    db: &Db,
    since: i64,
    ttl_ms: i64,
) -> sqlx::Result<i64> {
    let rows = sqlx::query("SELECT id, revoked_at FROM sessions WHERE revoked_at > $1")
        .bind(since)
        .fetch_all(&db.read)
        .await?;
    let mut newest = since;
    let mut map = revoked.write().expect("lock");
    for row in rows {
        let at: i64 = row.try_get("revoked_at")?;
        newest = newest.max(at);
        map.entry(row.try_get("id")?).or_insert(at);
    }
    map.retain(|_, at| newest - *at < ttl_ms);
    Ok(newest)
}

async fn keep_revocations_in_sync(
    revoked: Weak<RwLock<HashMap<String, i64>>>,
    db: Db,
    mut watermark: i64,
    ttl_ms: i64,
) {
    let mut tick = tokio::time::interval(REVOCATION_SYNC_INTERVAL);
    loop {
        tick.tick().await;
        let Some(revoked) = revoked.upgrade() else {
            break;
        };
        match sync_revocations(&revoked, &db, watermark - REVOCATION_OVERLAP_MS, ttl_ms).await {
            Ok(newest) => watermark = watermark.max(newest),
            Err(e) => tracing::warn!(error = %e, "reading revoked sessions failed"),
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/auth/device", post(device::device_login))
        .route("/api/v1/auth/register", post(email::register))
        .route("/api/v1/auth/login", post(email::login))
        .route("/api/v1/auth/refresh", post(refresh::refresh))
        .route("/api/v1/auth/logout", post(refresh::logout))
        .route(
            "/api/v1/auth/profile",
            get(profile::get_profile).put(profile::update_profile),
        )
        .route("/api/v1/auth/link/device", post(link::link_device))
        .route("/api/v1/auth/link/email", post(link::link_email))
        .route("/api/v1/auth/link/oauth/{provider}", post(link::link_oauth))
        .route("/api/v1/auth/email/verify", post(recovery::verify_email))
        .route(
            "/api/v1/auth/password/forgot",
            post(recovery::forgot_password),
        )
        .route(
            "/api/v1/auth/password/reset",
            post(recovery::reset_password),
        )
        .route("/api/v1/auth/oauth/{provider}/start", post(oauth::start))
        .route("/api/v1/auth/oauth/{provider}", post(oauth::sign_in))
        .route("/api/v1/auth/captcha", get(captcha::challenge))
}

/// Declares the `bearer` scheme the player endpoints' `security` refers to.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    modifiers(&BearerScheme),
    paths(
        device::device_login,
        email::register,
        email::login,
        refresh::refresh,
        refresh::logout,
        profile::get_profile,
        profile::update_profile,
        link::link_device,
        link::link_email,
        link::link_oauth,
        recovery::verify_email,
        recovery::forgot_password,
        recovery::reset_password,
        oauth::start,
        oauth::sign_in,
        captcha::challenge,
    ),
    components(schemas(
        aethex_protocol::auth::User,
        aethex_protocol::auth::AuthResponse,
        aethex_protocol::auth::DeviceAuthRequest,
        aethex_protocol::auth::RegisterRequest,
        aethex_protocol::auth::LoginRequest,
        aethex_protocol::auth::RefreshRequest,
        aethex_protocol::auth::UpdateProfileRequest,
        aethex_protocol::auth::LinkDeviceRequest,
        aethex_protocol::auth::LinkEmailRequest,
        aethex_protocol::auth::OAuthStartRequest,
        aethex_protocol::auth::OAuthStartResponse,
        aethex_protocol::auth::OAuthCodeRequest,
        aethex_protocol::auth::VerifyEmailRequest,
        aethex_protocol::auth::ForgotPasswordRequest,
        aethex_protocol::auth::ResetPasswordRequest,
        aethex_protocol::auth::CaptchaChallenge,
        aethex_protocol::auth::CaptchaSolution,
    ))
)]
pub struct AuthApi;
