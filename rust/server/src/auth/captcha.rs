//! `GET /api/v1/auth/captcha`: a self-hosted proof of work. The client finds a `nonce` such that
//! SHA-256(challenge || nonce) starts with `difficulty` zero bits; registration then costs a
//! client ~2^difficulty hashes while checking costs the server one.
//!
//! Challenges are stateless: random bytes, expiry and difficulty, HMAC-signed (bound to the
//! project) with a key stored in the database so every node accepts every node's challenges.
//! A solved challenge is recorded in `captcha_used` until it expires, so each one works once.

use aethex_protocol::auth::{CaptchaChallenge, CaptchaSolution};
use aethex_protocol::ErrorCode;
use axum::extract::State;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use sqlx::Row;

use super::rate_limit::IpLimited;
use crate::app::AppState;
use crate::caller::ClientProject;
use crate::db::{is_unique_violation, Db};
use crate::error::{ApiError, ApiResult};
use crate::projects::hash_secret;

type HmacSha256 = Hmac<Sha256>;

const SECRET_NAME: &str = "captcha_hmac";
const MAX_NONCE_LEN: usize = 64;

#[derive(Clone)]
pub struct CaptchaKey(std::sync::Arc<[u8]>);

impl CaptchaKey {
    /// Loads the shared key, creating it on a fresh database (the first node to insert wins).
    pub async fn load_or_create(db: &Db) -> anyhow::Result<Self> {
        let mut fresh = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut fresh);
        sqlx::query(
            "INSERT INTO auth_secrets (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(SECRET_NAME)
        .bind(fresh.to_vec())
        .execute(&db.write)
        .await?;
        let row = sqlx::query("SELECT secret FROM auth_secrets WHERE name = $1")
            .bind(SECRET_NAME)
            .fetch_one(&db.write)
            .await?;
        let secret: Vec<u8> = row.try_get("secret")?;
        Ok(Self(secret.into()))
    }

    fn mac(&self, project_id: &str, payload: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(project_id.as_bytes());
        mac.update(&[0]);
        mac.update(payload);
        mac
    }

    pub fn issue(&self, project_id: &str, difficulty: u32, expires_at: i64) -> CaptchaChallenge {
        let mut payload = [0u8; 28];
        rand::thread_rng().fill_bytes(&mut payload[..16]);
        payload[16..24].copy_from_slice(&expires_at.to_be_bytes());
        payload[24..28].copy_from_slice(&difficulty.to_be_bytes());
        let tag = self.mac(project_id, &payload).finalize().into_bytes();
        CaptchaChallenge {
            challenge: format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(payload),
                URL_SAFE_NO_PAD.encode(tag)
            ),
            difficulty,
            expires_at,
        }
    }

    /// Checks signature, expiry and work; returns the challenge's expiry.
    fn check(
        &self,
        project_id: &str,
        solution: &CaptchaSolution,
        min_difficulty: u32,
        now_ms: i64,
    ) -> Result<i64, &'static str> {
        let (payload, tag) = solution
            .challenge
            .split_once('.')
            .ok_or("malformed captcha challenge")?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| "malformed captcha challenge")?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| "malformed captcha challenge")?;
        if payload.len() != 28 {
            return Err("malformed captcha challenge");
        }
        self.mac(project_id, &payload)
            .verify_slice(&tag)
            .map_err(|_| "captcha challenge was not issued by this server")?;
        let expires_at = i64::from_be_bytes(payload[16..24].try_into().expect("8 bytes"));
        let difficulty = u32::from_be_bytes(payload[24..28].try_into().expect("4 bytes"));
        if expires_at <= now_ms {
            return Err("captcha challenge expired; fetch a new one");
        }
        if difficulty < min_difficulty {
            return Err("captcha challenge is easier than this server requires");
        }
        if solution.nonce.len() > MAX_NONCE_LEN
            || !meets_difficulty(&solution.challenge, &solution.nonce, difficulty)
        {
            return Err("captcha solution does not meet the difficulty");
        }
        Ok(expires_at)
    }
}

/// Whether SHA-256(challenge || nonce) starts with `difficulty` zero bits.
pub fn meets_difficulty(challenge: &str, nonce: &str, difficulty: u32) -> bool {
    aethex_protocol::captcha::leading_zero_bits(challenge, nonce) >= difficulty
}

/// The captcha gate (registration, logins to an account under attack): a valid, unused solution
/// or 400 `captcha_required` with `missing` as the message when there is none.
pub async fn require_solution(
    state: &AppState,
    project_id: &str,
    solution: Option<&CaptchaSolution>,
    missing: &str,
) -> ApiResult<()> {
    let rejected = |message: &str| ApiError::new(ErrorCode::CaptchaRequired, message);
    let solution = solution.ok_or_else(|| rejected(missing))?;
    let now = state.clock.now_ms();
    let expires_at = state
        .auth
        .captcha_key
        .check(
            project_id,
            solution,
            state.config.auth.captcha_difficulty,
            now,
        )
        .map_err(rejected)?;
    sqlx::query("DELETE FROM captcha_used WHERE expires_at <= $1")
        .bind(now)
        .execute(&state.db.write)
        .await?;
    sqlx::query("INSERT INTO captcha_used (challenge_hash, expires_at) VALUES ($1, $2)")
        .bind(hash_secret(&solution.challenge))
        .bind(expires_at)
        .execute(&state.db.write)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                rejected("captcha challenge was already used; fetch a new one")
            } else {
                e.into()
            }
        })?;
    Ok(())
}

#[utoipa::path(
    get,
    path = "/api/v1/auth/captcha",
    tag = "auth",
    security(("client_key" = [])),
    responses(
        (status = 200, description = "A fresh proof-of-work challenge", body = CaptchaChallenge),
        (status = 429, description = "Rate limited", body = aethex_protocol::ErrorEnvelope),
    )
)]
pub async fn challenge(
    _limit: IpLimited,
    State(state): State<AppState>,
    ClientProject(project): ClientProject,
) -> Json<CaptchaChallenge> {
    let expires_at = state.clock.now_ms() + state.config.auth.captcha_ttl_secs as i64 * 1000;
    Json(state.auth.captcha_key.issue(
        &project.id,
        state.config.auth.captcha_difficulty,
        expires_at,
    ))
}
