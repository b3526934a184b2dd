//! Reading and creating user rows.

use aethex_protocol::auth::User;
use rand::Rng;
use sqlx::{AnyConnection, Row};

use crate::db::{get_flag, is_unique_violation, new_id};
use crate::error::{ApiError, ApiResult};

pub async fn load(conn: &mut AnyConnection, user_id: &str) -> ApiResult<User> {
    let row = sqlx::query(
        "SELECT id, username, email, email_verified, avatar_url, preferences, created_at FROM users WHERE id = $1",
    )
    .bind(user_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::not_found("no such user"))?;
    let linked =
        sqlx::query("SELECT provider FROM identities WHERE user_id = $1 ORDER BY provider")
            .bind(user_id)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|r| r.try_get::<String, _>("provider"))
            .collect::<Result<Vec<_>, _>>()?;
    let preferences: String = row.try_get("preferences")?;
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        email: row.try_get("email")?,
        email_verified: get_flag(&row, "email_verified")?,
        avatar_url: row.try_get("avatar_url")?,
        preferences: serde_json::from_str(&preferences).unwrap_or_default(),
        linked,
        created_at: row.try_get("created_at")?,
    })
}

/// 3 to 32 characters: letters, digits, `_`, `-`, `.`.
pub fn validate_username(username: &str) -> ApiResult<()> {
    let len = username.chars().count();
    if !(3..=32).contains(&len)
        || !username
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(ApiError::invalid(
            "username must be 3 to 32 letters, digits, '_', '-' or '.'",
        ));
    }
    Ok(())
}

pub fn generated_username() -> String {
    format!("player_{:08x}", rand::thread_rng().gen::<u32>())
}

/// Inserts a user row; a taken username is a 409 `conflict`.
pub async fn insert(
    conn: &mut AnyConnection,
    project_id: &str,
    username: &str,
    now_ms: i64,
) -> ApiResult<String> {
    let id = new_id();
    sqlx::query(
        "INSERT INTO users (id, project_id, username, username_lower, preferences, created_at, updated_at) VALUES ($1, $2, $3, $4, '{}', $5, $5)",
    )
    .bind(&id)
    .bind(project_id)
    .bind(username)
    .bind(username.to_lowercase())
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            ApiError::conflict(format!("username {username:?} is taken"))
        } else {
            e.into()
        }
    })?;
    Ok(id)
}

pub async fn add_identity(
    conn: &mut AnyConnection,
    project_id: &str,
    provider: &str,
    subject: &str,
    user_id: &str,
    now_ms: i64,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO identities (project_id, provider, subject, user_id, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(project_id)
    .bind(provider)
    .bind(subject)
    .bind(user_id)
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            ApiError::conflict(format!("this {provider} identity belongs to another account"))
        } else {
            e.into()
        }
    })?;
    Ok(())
}

pub async fn find_by_identity(
    conn: &mut AnyConnection,
    project_id: &str,
    provider: &str,
    subject: &str,
) -> ApiResult<Option<String>> {
    let row = sqlx::query(
        "SELECT user_id FROM identities WHERE project_id = $1 AND provider = $2 AND subject = $3",
    )
    .bind(project_id)
    .bind(provider)
    .bind(subject)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| r.try_get("user_id")).transpose()?)
}
