//! Sessions: one refresh-token family each. Access tokens are short JWTs naming the session
//! (`sid`); refresh tokens are opaque, stored only as SHA-256, and single use.

use aethex_protocol::auth::{AccessClaims, AuthResponse, User};
use base64::Engine;
use rand::RngCore;
use sqlx::{AnyConnection, Row};

use super::users;
use crate::app::AppState;
use crate::db::new_id;
use crate::error::ApiResult;
use crate::projects::hash_secret;

pub fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "rt_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Stores a refresh token of `session_id` and returns the token itself.
pub async fn insert_refresh_token(
    conn: &mut AnyConnection,
    state: &AppState,
    session_id: &str,
    now_ms: i64,
) -> ApiResult<String> {
    let token = new_refresh_token();
    let ttl_ms = state.config.auth.refresh_token_ttl_days as i64 * 24 * 3600 * 1000;
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(hash_secret(&token))
    .bind(session_id)
    .bind(now_ms)
    .bind(now_ms + ttl_ms)
    .execute(&mut *conn)
    .await?;
    Ok(token)
}

/// Opens a new session for `user_id`; returns (session id, refresh token).
pub async fn create(
    conn: &mut AnyConnection,
    state: &AppState,
    project_id: &str,
    user_id: &str,
    now_ms: i64,
) -> ApiResult<(String, String)> {
    let session_id = new_id();
    sqlx::query(
        "INSERT INTO sessions (id, project_id, user_id, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&session_id)
    .bind(project_id)
    .bind(user_id)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    let refresh = insert_refresh_token(conn, state, &session_id, now_ms).await?;
    Ok((session_id, refresh))
}

/// A refresh token as presented, with its session and the session's account.
pub struct PresentedToken {
    pub session_id: String,
    pub project_id: String,
    pub session_revoked: bool,
    pub used: bool,
    pub expires_at: i64,
    pub user: User,
}

/// Reads the refresh token hashed `token_hash`, its session and account (with its linked
/// providers) in one query.
pub async fn presented_token(
    conn: &mut AnyConnection,
    token_hash: &str,
) -> ApiResult<Option<PresentedToken>> {
    let rows = sqlx::query(
        "SELECT rt.session_id, rt.expires_at, rt.used_at, s.project_id, s.revoked_at, \
         u.id, u.username, u.email, u.email_verified, u.avatar_url, u.preferences, u.created_at, l.provider \
         FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id JOIN users u ON u.id = s.user_id \
         LEFT JOIN identities l ON l.user_id = u.id \
         WHERE rt.token_hash = $1",
    )
    .bind(token_hash)
    .fetch_all(&mut *conn)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut linked = Vec::with_capacity(rows.len());
    for row in &rows {
        if let Some(provider) = row.try_get::<Option<String>, _>("provider")? {
            linked.push(provider);
        }
    }
    linked.sort_unstable();
    linked.dedup();
    Ok(Some(PresentedToken {
        session_id: first.try_get("session_id")?,
        project_id: first.try_get("project_id")?,
        session_revoked: first.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
        used: first.try_get::<Option<i64>, _>("used_at")?.is_some(),
        expires_at: first.try_get("expires_at")?,
        user: users::from_row(first, linked)?,
    }))
}

/// Signs an access token and assembles the answer of every sign-in endpoint.
pub fn auth_response(
    state: &AppState,
    project_id: &str,
    user: User,
    session_id: String,
    refresh_token: String,
    now_ms: i64,
) -> ApiResult<AuthResponse> {
    let ttl = state.config.auth.access_token_ttl_secs;
    let iat = now_ms / 1000;
    let claims = AccessClaims {
        sub: user.id.clone(),
        pid: project_id.to_owned(),
        sid: session_id,
        iat,
        exp: iat + ttl as i64,
        iss: state.tokens.issuer().to_owned(),
    };
    Ok(AuthResponse {
        access_token: state.tokens.sign(&claims)?,
        refresh_token,
        expires_in: ttl,
        user,
    })
}

/// Revokes one session in the database; the caller also tells `AuthService` after commit.
pub async fn revoke(conn: &mut AnyConnection, session_id: &str, now_ms: i64) -> ApiResult<()> {
    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now_ms)
        .bind(session_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Revokes every live session of a user; returns their ids for `AuthService`.
pub async fn revoke_all_of_user(
    conn: &mut AnyConnection,
    user_id: &str,
    now_ms: i64,
) -> ApiResult<Vec<String>> {
    let ids = sqlx::query("SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(user_id)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|r| r.try_get::<String, _>("id"))
        .collect::<Result<Vec<_>, _>>()?;
    sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
        .bind(now_ms)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    Ok(ids)
}
