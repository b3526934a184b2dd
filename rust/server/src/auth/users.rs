//! Reading and creating user rows.

use std::sync::{Arc, RwLock};

use aethex_protocol::auth::User;
use rand::Rng;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};
use unicode_normalization::UnicodeNormalization;

use crate::db::{get_flag, is_unique_violation, new_id};
use crate::error::{ApiError, ApiResult};

/// Columns `from_row` reads.
pub const USER_COLUMNS: &str =
    "id, username, email, email_verified, avatar_url, preferences, created_at";

pub async fn load(conn: &mut AnyConnection, user_id: &str) -> ApiResult<User> {
    let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(user_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    let linked = linked(conn, user_id).await?;
    from_row(&row, linked)
}

/// The account `(provider, subject)` signs in to, with its linked providers, in one query.
pub async fn load_by_identity<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    provider: &str,
    subject: &str,
) -> ApiResult<Option<User>> {
    let rows = sqlx::query(
        "SELECT u.id, u.username, u.email, u.email_verified, u.avatar_url, u.preferences, u.created_at, l.provider \
         FROM identities i JOIN users u ON u.id = i.user_id JOIN identities l ON l.user_id = i.user_id \
         WHERE i.project_id = $1 AND i.provider = $2 AND i.subject = $3",
    )
    .bind(project_id)
    .bind(provider)
    .bind(subject)
    .fetch_all(executor)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut linked = rows
        .iter()
        .map(|r| r.try_get::<String, _>("provider"))
        .collect::<Result<Vec<_>, _>>()?;
    linked.sort_unstable();
    linked.dedup();
    from_row(first, linked).map(Some)
}

/// A device account as `insert` + `add_identity` create it, without reading it back.
pub fn new_device_user(user_id: String, username: String, created_at: i64) -> User {
    User {
        id: user_id,
        username,
        email: None,
        email_verified: false,
        avatar_url: None,
        preferences: serde_json::Value::Object(Default::default()),
        linked: vec![super::device::PROVIDER.to_owned()],
        created_at,
    }
}

/// Whether `username` or a look-alike of it is taken in the project (as the unique indexes on
/// `username_lower` and `username_skeleton` say).
pub async fn username_taken<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    project_id: &str,
    username: &str,
) -> ApiResult<bool> {
    Ok(sqlx::query(
        "SELECT 1 FROM users WHERE project_id = $1 AND (username_lower = $2 OR username_skeleton = $3)",
    )
    .bind(project_id)
    .bind(username.to_lowercase())
    .bind(username_skeleton(username))
    .fetch_optional(executor)
    .await?
    .is_some())
}

/// The providers an account can sign in with, sorted.
pub async fn linked(conn: &mut AnyConnection, user_id: &str) -> ApiResult<Vec<String>> {
    Ok(
        sqlx::query(
            "SELECT DISTINCT provider FROM identities WHERE user_id = $1 ORDER BY provider",
        )
        .bind(user_id)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(|r| r.try_get::<String, _>("provider"))
        .collect::<Result<Vec<_>, _>>()?,
    )
}

/// Builds a `User` from a row holding `USER_COLUMNS`.
pub fn from_row(row: &AnyRow, linked: Vec<String>) -> ApiResult<User> {
    let preferences: String = row.try_get("preferences")?;
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        email: row.try_get("email")?,
        email_verified: get_flag(row, "email_verified")?,
        avatar_url: row.try_get("avatar_url")?,
        preferences: serde_json::from_str(&preferences).unwrap_or_default(),
        linked,
        created_at: row.try_get("created_at")?,
    })
}

/// Addresses the server takes: an ASCII dot-atom of at most 64 characters, `@`, and a dotted
/// host name. Every such address is one the mailer can send to; `RegisterRequest.email` in the
/// OpenAPI document states the same rule (its pattern checks the 64 with a look-ahead, which the
/// `regex` crate lacks).
pub const EMAIL_PATTERN: &str = r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$";

/// At most 254 characters matching [`EMAIL_PATTERN`] with at most 64 before the `@`.
/// Deliverability is what the verification mail proves.
pub fn validate_email(email: &str) -> ApiResult<()> {
    static SHAPE: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(EMAIL_PATTERN).expect("valid pattern"));
    let valid = email.len() <= 254
        && SHAPE.is_match(email)
        && email
            .split_once('@')
            .is_some_and(|(local, _)| local.len() <= 64);
    if !valid {
        return Err(ApiError::invalid("email is not a valid address"));
    }
    Ok(())
}

/// The form email addresses are compared and looked up in.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Maps a unique violation on `users` to the 409 naming what is taken.
pub fn user_conflict(e: sqlx::Error, username: &str) -> ApiError {
    if !is_unique_violation(&e) {
        return e.into();
    }
    let message = match &e {
        sqlx::Error::Database(db) => db.message().to_owned(),
        _ => String::new(),
    };
    if message.contains("email") {
        ApiError::conflict("an account with this email already exists")
    } else {
        ApiError::conflict(format!("username {username:?} is taken"))
    }
}

/// The form a username is stored and shown in: NFKC, so compatibility variants (`ｕｓｅｒ１`,
/// `𝕬𝖉𝖒`) become the plain characters they stand for.
pub fn normalize_username(username: &str) -> String {
    username.nfkc().collect()
}

/// Full case folding approximated with std: `to_lowercase` alone keeps `ß` and `ss` apart, via
/// uppercase both become `ss`.
fn fold_case(text: &str) -> String {
    text.to_uppercase().to_lowercase()
}

/// The key look-alike usernames share, unique per project: NFKC, case folded, then the UTS #39
/// confusable skeleton (`аdmin` with a Cyrillic `а` → `admin`, `user1` → `userl`), folded again
/// because the skeleton maps some characters to uppercase prototypes (`0` → `O`).
pub fn username_skeleton(username: &str) -> String {
    let folded = fold_case(&normalize_username(username));
    let skeleton: String = unicode_security::confusable_detection::skeleton(&folded).collect();
    fold_case(&skeleton)
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

/// 80 random bits: 32 collided from tens of thousands of accounts on. Even so a collision only
/// costs a retry (`MAX_GENERATED_NAME_ATTEMPTS`).
pub fn generated_username() -> String {
    let bits = rand::thread_rng().gen::<u128>() >> 48;
    format!("player_{bits:020x}")
}

/// Names tried for one account created without a requested name before giving up; each
/// collides with probability ~accounts / 2^80.
pub const MAX_GENERATED_NAME_ATTEMPTS: usize = 8;

type NameFn = Arc<dyn Fn() -> String + Send + Sync>;

/// Makes the names of accounts created without one (`generated_username`). Replaceable so a test
/// can make generated names collide on purpose and exercise the retry.
#[derive(Clone)]
pub struct UsernameGenerator(Arc<RwLock<NameFn>>);

impl Default for UsernameGenerator {
    fn default() -> Self {
        Self(Arc::new(RwLock::new(Arc::new(generated_username))))
    }
}

impl UsernameGenerator {
    pub fn next_name(&self) -> String {
        let generate = self.0.read().expect("lock").clone();
        generate()
    }

    pub fn replace(&self, generate: impl Fn() -> String + Send + Sync + 'static) {
        *self.0.write().expect("lock") = Arc::new(generate);
    }
}

/// Fills `username_skeleton` of rows written before it existed (or before a change of the rule).
/// A row whose skeleton another account already holds keeps NULL: both old look-alikes keep
/// their names, and new ones are still refused because one of them holds the skeleton.
pub async fn backfill_skeletons(pool: &AnyPool) -> anyhow::Result<()> {
    let rows = sqlx::query(
        "SELECT id, username FROM users WHERE username_skeleton IS NULL ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await?;
    for row in rows {
        let id: String = row.try_get("id")?;
        let username: String = row.try_get("username")?;
        let updated = sqlx::query("UPDATE users SET username_skeleton = $1 WHERE id = $2")
            .bind(username_skeleton(&username))
            .bind(&id)
            .execute(pool)
            .await;
        match updated {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                tracing::warn!(user_id = %id, %username, "username looks like another account's; left as is");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Inserts a user row; a taken username is a 409 `conflict`.
pub async fn insert(
    conn: &mut AnyConnection,
    project_id: &str,
    username: &str,
    now_ms: i64,
) -> ApiResult<String> {
    insert_with_password(conn, project_id, username, None, now_ms).await
}

/// Inserts a user row, optionally with (email, argon2 hash); a taken username or email is a 409.
pub async fn insert_with_password(
    conn: &mut AnyConnection,
    project_id: &str,
    username: &str,
    email_and_hash: Option<(&str, &str)>,
    now_ms: i64,
) -> ApiResult<String> {
    let id = new_id();
    let (email, hash) = email_and_hash.unzip();
    sqlx::query(
        "INSERT INTO users (id, project_id, username, username_lower, username_skeleton, email, email_lower, password_hash, preferences, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '{}', $9, $9)",
    )
    .bind(&id)
    .bind(project_id)
    .bind(username)
    .bind(username.to_lowercase())
    .bind(username_skeleton(username))
    .bind(email)
    .bind(email.map(normalize_email))
    .bind(hash)
    .bind(now_ms)
    .execute(&mut *conn)
    .await
    .map_err(|e| user_conflict(e, username))?;
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
