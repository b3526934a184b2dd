//! In-memory accounts, sessions and saves with the real server's rules.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aethex_protocol::auth::{AuthResponse, UpdateProfileRequest, User};
use aethex_protocol::saves::{
    SaveConflictDetails, SaveData, SaveHistory, SaveList, SaveSlotInfo, SaveVersionInfo,
};
use aethex_protocol::ErrorCode;
use base64::Engine;
use rand::RngCore;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::error::{MockError, MockResult};

/// Limits and lifetimes of the mock.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Lifetime of access tokens; `expires_in` is this rounded up to whole seconds.
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

struct Account {
    user: User,
    password_hash: Option<String>,
}

/// A mail the real server would send; the mock keeps it for tests to read the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MockMail {
    pub to: String,
    /// `verify_email` or `password_reset`.
    pub kind: String,
    pub token: String,
}

struct MailToken {
    user_id: String,
    kind: &'static str,
    email_lower: String,
    used: bool,
}

struct AccessToken {
    user_id: String,
    session_id: String,
    expires_at: Instant,
}

struct RefreshToken {
    session_id: String,
    used: bool,
}

struct Session {
    user_id: String,
    revoked: bool,
}

#[derive(Clone)]
struct Version {
    record: SaveVersionInfo,
    /// `None` for a delete version.
    data: Option<Value>,
}

impl Version {
    fn slot_info(&self) -> SaveSlotInfo {
        SaveSlotInfo {
            slot: self.record.slot.clone(),
            version: self.record.version,
            size: self.record.size,
            updated_at: self.record.created_at,
            checksum: self.record.checksum.clone(),
            metadata: self.record.metadata.clone(),
        }
    }
}

/// What must hold about a slot's current version for a change to apply (the real server's rules).
#[derive(Debug, Clone, Copy)]
enum Precondition {
    /// Writes: the current version must be this one; `0` = the slot is absent or deleted.
    Base(i64),
    /// Deletes: the slot must exist (404 otherwise) and, when given, be at this version.
    Exists(Option<i64>),
    /// Restores without a base version, writes from "another device".
    None,
}

struct Change {
    data: Option<Value>,
    metadata: Value,
    kind: &'static str,
    restored_from: Option<i64>,
}

#[derive(Default)]
pub struct Store {
    pub limits: Limits,
    accounts: HashMap<String, Account>,
    by_email: HashMap<String, String>,
    by_device: HashMap<String, String>,
    by_username: HashMap<String, String>,
    sessions: HashMap<String, Session>,
    access: HashMap<String, AccessToken>,
    refresh: HashMap<String, RefreshToken>,
    mail_tokens: HashMap<String, MailToken>,
    outbox: Vec<MockMail>,
    /// (user id, slot) -> every version, oldest first.
    slots: BTreeMap<(String, String), Vec<Version>>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Size and checksum of a save exactly as the real server computes them.
pub fn size_and_checksum(data: &Value) -> (i64, String) {
    let bytes = serde_json::to_vec(data).unwrap_or_default();
    (bytes.len() as i64, sha256_hex(&bytes))
}

fn hash_password(password: &str) -> String {
    sha256_hex(format!("aethex-mock:{password}").as_bytes())
}

fn validate_username(username: &str) -> MockResult<()> {
    let len = username.chars().count();
    if !(3..=32).contains(&len)
        || !username
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(MockError::invalid(
            "username must be 3 to 32 letters, digits, '_', '-' or '.'",
        ));
    }
    Ok(())
}

fn validate_device_id(device_id: &str) -> MockResult<()> {
    if !(8..=128).contains(&device_id.len()) || !device_id.chars().all(|c| c.is_ascii_graphic()) {
        return Err(MockError::invalid(
            "device_id must be 8 to 128 printable ASCII characters",
        ));
    }
    Ok(())
}

fn validate_email(email: &str) -> MockResult<()> {
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && matches!(email.split_once('@'), Some((local, domain))
            if !local.is_empty()
                && local.len() <= 64
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.'));
    if !valid {
        return Err(MockError::invalid("email is not a valid address"));
    }
    Ok(())
}

const MIN_PASSWORD_LEN: usize = 8;
const MAX_PASSWORD_LEN: usize = 1024;

fn validate_password(password: &str) -> MockResult<()> {
    if password.chars().count() < MIN_PASSWORD_LEN || password.len() > MAX_PASSWORD_LEN {
        return Err(MockError::invalid(format!(
            "password must be {MIN_PASSWORD_LEN} to {MAX_PASSWORD_LEN} characters"
        )));
    }
    Ok(())
}

const MAX_PREFERENCES_BYTES: usize = 64 * 1024;
const MAX_AVATAR_URL_LEN: usize = 2048;

fn validate_avatar_url(url: &str) -> MockResult<()> {
    let http = url.starts_with("http://") || url.starts_with("https://");
    if !url.is_empty()
        && (!http || url.len() > MAX_AVATAR_URL_LEN || url.contains(char::is_whitespace))
    {
        return Err(MockError::invalid(format!(
            "avatar_url must be an http(s) URL of at most {MAX_AVATAR_URL_LEN} characters"
        )));
    }
    Ok(())
}

const MAX_SLOT_NAME_LEN: usize = 64;
const MAX_METADATA_BYTES: usize = 4 * 1024;

/// 1 to 64 of `A-Z a-z 0-9 _ . -`, starting with a letter, digit or `_`; `history` is reserved.
fn validate_slot(slot: &str) -> MockResult<()> {
    let valid = !slot.is_empty()
        && slot.len() <= MAX_SLOT_NAME_LEN
        && slot
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && slot
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && slot != "history";
    if valid {
        Ok(())
    } else {
        Err(MockError::invalid(format!(
            "slot must be 1 to {MAX_SLOT_NAME_LEN} characters of A-Z a-z 0-9 _ . -, start with a \
             letter, digit or _, and not be `history`"
        )))
    }
}

/// A JSON object of at most 4 KiB; absent or null = `{}`.
fn validate_metadata(metadata: Option<Value>) -> MockResult<Value> {
    let metadata = match metadata {
        None | Some(Value::Null) => return Ok(json!({})),
        Some(m @ Value::Object(_)) => m,
        Some(_) => return Err(MockError::invalid("metadata must be a JSON object")),
    };
    let len = metadata.to_string().len();
    if len > MAX_METADATA_BYTES {
        return Err(MockError::invalid(format!(
            "metadata is {len} bytes; at most {MAX_METADATA_BYTES} are allowed"
        )));
    }
    Ok(metadata)
}

impl Store {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Default::default()
        }
    }

    /// Forgets every account, session and save; keeps the limits.
    pub fn reset(&mut self) {
        *self = Store::new(self.limits.clone());
    }

    fn new_account(&mut self, username: Option<String>, linked: &str) -> MockResult<String> {
        let username = match username {
            Some(name) => {
                validate_username(&name)?;
                if self.by_username.contains_key(&name.to_lowercase()) {
                    return Err(MockError::new(
                        ErrorCode::Conflict,
                        "username is already taken",
                    ));
                }
                name
            }
            None => loop {
                let name = format!("player_{:08x}", rand::random::<u32>());
                if !self.by_username.contains_key(&name) {
                    break name;
                }
            },
        };
        let id = uuid::Uuid::now_v7().to_string();
        self.by_username.insert(username.to_lowercase(), id.clone());
        self.accounts.insert(
            id.clone(),
            Account {
                user: User {
                    id: id.clone(),
                    username,
                    email: None,
                    email_verified: false,
                    avatar_url: None,
                    preferences: json!({}),
                    linked: vec![linked.to_owned()],
                    created_at: now_ms(),
                },
                password_hash: None,
            },
        );
        Ok(id)
    }

    fn sign_in(&mut self, user_id: &str) -> AuthResponse {
        let session_id = uuid::Uuid::now_v7().to_string();
        self.sessions.insert(
            session_id.clone(),
            Session {
                user_id: user_id.to_owned(),
                revoked: false,
            },
        );
        self.issue_tokens(user_id, &session_id)
    }

    fn issue_tokens(&mut self, user_id: &str, session_id: &str) -> AuthResponse {
        let ttl = self.limits.access_token_ttl;
        let access_token = random_token("at_");
        self.access.insert(
            access_token.clone(),
            AccessToken {
                user_id: user_id.to_owned(),
                session_id: session_id.to_owned(),
                expires_at: Instant::now() + ttl,
            },
        );
        let refresh_token = random_token("rt_");
        self.refresh.insert(
            refresh_token.clone(),
            RefreshToken {
                session_id: session_id.to_owned(),
                used: false,
            },
        );
        AuthResponse {
            user: self.accounts[user_id].user.clone(),
            access_token,
            refresh_token,
            expires_in: ttl.as_millis().div_ceil(1000) as u64,
        }
    }

    pub fn device_login(
        &mut self,
        device_id: &str,
        username: Option<String>,
    ) -> MockResult<AuthResponse> {
        validate_device_id(device_id)?;
        let user_id = match self.by_device.get(device_id) {
            Some(id) => id.clone(),
            None => {
                let id = self.new_account(username, "device")?;
                self.by_device.insert(device_id.to_owned(), id.clone());
                id
            }
        };
        Ok(self.sign_in(&user_id))
    }

    fn queue_mail(&mut self, user_id: &str, kind: &'static str, to: &str) {
        let token = random_token("mt_");
        self.mail_tokens.insert(
            token.clone(),
            MailToken {
                user_id: user_id.to_owned(),
                kind,
                email_lower: to.trim().to_lowercase(),
                used: false,
            },
        );
        self.outbox.push(MockMail {
            to: to.to_owned(),
            kind: kind.to_owned(),
            token,
        });
    }

    fn spend_mail_token(&mut self, token: &str, kind: &str) -> MockResult<(String, String)> {
        // As the server: any string is a well-formed token, so an unknown one is not found.
        let invalid = || MockError::not_found("token is invalid, expired or already used");
        let record = self.mail_tokens.get_mut(token).ok_or_else(invalid)?;
        if record.used || record.kind != kind {
            return Err(invalid());
        }
        record.used = true;
        Ok((record.user_id.clone(), record.email_lower.clone()))
    }

    pub fn outbox(&self) -> Vec<MockMail> {
        self.outbox.clone()
    }

    pub fn register(
        &mut self,
        email: &str,
        password: &str,
        username: String,
    ) -> MockResult<AuthResponse> {
        let email = email.trim();
        validate_email(email)?;
        validate_password(password)?;
        validate_username(&username)?;
        let email_lower = email.to_lowercase();
        if self.by_email.contains_key(&email_lower) {
            return Err(MockError::new(
                ErrorCode::Conflict,
                "an account with this email already exists",
            ));
        }
        let id = self.new_account(Some(username), "email")?;
        let account = self.accounts.get_mut(&id).expect("just created");
        account.user.email = Some(email.to_owned());
        account.password_hash = Some(hash_password(password));
        self.by_email.insert(email_lower, id.clone());
        self.queue_mail(&id, "verify_email", email);
        Ok(self.sign_in(&id))
    }

    pub fn login(&mut self, email: &str, password: &str) -> MockResult<AuthResponse> {
        let wrong = || MockError::new(ErrorCode::InvalidCredentials, "wrong email or password");
        let id = self
            .by_email
            .get(&email.trim().to_lowercase())
            .cloned()
            .ok_or_else(wrong)?;
        let matches = self.accounts[&id].password_hash.as_deref() == Some(&hash_password(password));
        if !matches {
            return Err(wrong());
        }
        Ok(self.sign_in(&id))
    }

    fn add_linked(&mut self, user_id: &str, method: &str) -> MockResult<User> {
        let account = self
            .accounts
            .get_mut(user_id)
            .ok_or_else(|| MockError::not_found("no such user"))?;
        if !account.user.linked.iter().any(|m| m == method) {
            account.user.linked.push(method.to_owned());
        }
        Ok(account.user.clone())
    }

    /// The device id now signs in to this account too.
    pub fn link_device(&mut self, user_id: &str, device_id: &str) -> MockResult<User> {
        validate_device_id(device_id)?;
        match self.by_device.get(device_id) {
            Some(owner) if owner != user_id => {
                return Err(MockError::new(
                    ErrorCode::Conflict,
                    "this device identity belongs to another account",
                ))
            }
            Some(_) => {}
            None => {
                self.by_device
                    .insert(device_id.to_owned(), user_id.to_owned());
            }
        }
        self.add_linked(user_id, "device")
    }

    /// Email + password now sign in to this account (e.g. upgrading an anonymous one).
    pub fn link_email(&mut self, user_id: &str, email: &str, password: &str) -> MockResult<User> {
        let email = email.trim();
        validate_email(email)?;
        validate_password(password)?;
        let email_lower = email.to_lowercase();
        let account = self
            .accounts
            .get(user_id)
            .ok_or_else(|| MockError::not_found("no such user"))?;
        if account.user.email.is_some() {
            return Err(MockError::new(
                ErrorCode::Conflict,
                "this account already has an email address",
            ));
        }
        if self.by_email.contains_key(&email_lower) {
            return Err(MockError::new(
                ErrorCode::Conflict,
                "this email identity belongs to another account",
            ));
        }
        let account = self.accounts.get_mut(user_id).expect("checked above");
        account.user.email = Some(email.to_owned());
        account.user.email_verified = false;
        account.password_hash = Some(hash_password(password));
        self.by_email.insert(email_lower, user_id.to_owned());
        self.queue_mail(user_id, "verify_email", email);
        self.add_linked(user_id, "email")
    }

    /// Queues a reset mail when an account has this email; silent otherwise (as the server).
    pub fn forgot_password(&mut self, email: &str) {
        if let Some(id) = self.by_email.get(&email.trim().to_lowercase()).cloned() {
            let to = self.accounts[&id].user.email.clone().unwrap_or_default();
            self.queue_mail(&id, "password_reset", &to);
        }
    }

    pub fn reset_password(&mut self, token: &str, new_password: &str) -> MockResult<()> {
        validate_password(new_password)?;
        let (user_id, email_lower) = self.spend_mail_token(token, "password_reset")?;
        let account = self
            .accounts
            .get_mut(&user_id)
            .ok_or_else(|| MockError::not_found("no such user"))?;
        account.password_hash = Some(hash_password(new_password));
        if account.user.email.as_deref().map(str::to_lowercase) == Some(email_lower) {
            account.user.email_verified = true;
        }
        Ok(())
    }

    pub fn verify_email(&mut self, token: &str) -> MockResult<User> {
        let (user_id, email_lower) = self.spend_mail_token(token, "verify_email")?;
        let account = self
            .accounts
            .get_mut(&user_id)
            .ok_or_else(|| MockError::not_found("no such user"))?;
        if account.user.email.as_deref().map(str::to_lowercase) != Some(email_lower) {
            return Err(MockError::invalid(
                "the account's email changed since this token was sent",
            ));
        }
        account.user.email_verified = true;
        Ok(account.user.clone())
    }

    /// Rotates a refresh token. Presenting a used one revokes its whole session (reuse detection).
    pub fn refresh(&mut self, token: &str) -> MockResult<AuthResponse> {
        let invalid = || MockError::unauthorized("refresh token is invalid, used or revoked");
        let record = self.refresh.get_mut(token).ok_or_else(invalid)?;
        let session_id = record.session_id.clone();
        if record.used {
            self.revoke_session(&session_id);
            return Err(invalid());
        }
        record.used = true;
        let session = self.sessions.get(&session_id).ok_or_else(invalid)?;
        if session.revoked {
            return Err(invalid());
        }
        let user_id = session.user_id.clone();
        Ok(self.issue_tokens(&user_id, &session_id))
    }

    fn revoke_session(&mut self, session_id: &str) {
        if let Some(session) = self.sessions.get_mut(session_id) {
            session.revoked = true;
        }
        self.access.retain(|_, t| t.session_id != session_id);
        self.refresh.retain(|_, t| t.session_id != session_id);
    }

    /// Resolves a bearer token to its user id, as the real server's `Player` extractor does.
    pub fn authenticate(&self, access_token: &str) -> MockResult<(String, String)> {
        let token = self
            .access
            .get(access_token)
            .ok_or_else(|| MockError::unauthorized("access token is invalid or signed out"))?;
        if Instant::now() >= token.expires_at {
            return Err(MockError::new(
                ErrorCode::TokenExpired,
                "access token has expired",
            ));
        }
        Ok((token.user_id.clone(), token.session_id.clone()))
    }

    pub fn logout(&mut self, session_id: &str) {
        self.revoke_session(session_id);
    }

    /// Signs every session out (as if the server revoked them): access and refresh tokens stop
    /// working (401 `unauthorized`). Returns how many sessions were open.
    pub fn revoke_all_sessions(&mut self) -> usize {
        let open: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.revoked)
            .map(|(id, _)| id.clone())
            .collect();
        for session_id in &open {
            self.revoke_session(session_id);
        }
        open.len()
    }

    /// Every access token issued so far answers `token_expired` from now on; returns how many.
    pub fn expire_access_tokens(&mut self) -> usize {
        let now = Instant::now();
        for token in self.access.values_mut() {
            token.expires_at = token.expires_at.min(now);
        }
        self.access.len()
    }

    pub fn profile(&self, user_id: &str) -> MockResult<User> {
        self.accounts
            .get(user_id)
            .map(|a| a.user.clone())
            .ok_or_else(|| MockError::not_found("no such user"))
    }

    pub fn update_profile(&mut self, user_id: &str, req: UpdateProfileRequest) -> MockResult<User> {
        if let Some(prefs) = &req.preferences {
            if !prefs.is_object() {
                return Err(MockError::invalid("preferences must be a JSON object"));
            }
            if prefs.to_string().len() > MAX_PREFERENCES_BYTES {
                return Err(MockError::new(
                    ErrorCode::PayloadTooLarge,
                    format!("preferences must be at most {MAX_PREFERENCES_BYTES} bytes"),
                ));
            }
        }
        if let Some(url) = &req.avatar_url {
            validate_avatar_url(url)?;
        }
        if let Some(name) = &req.username {
            validate_username(name)?;
            let key = name.to_lowercase();
            if self.by_username.get(&key).is_some_and(|id| id != user_id) {
                return Err(MockError::new(
                    ErrorCode::Conflict,
                    "username is already taken",
                ));
            }
        }
        let account = self
            .accounts
            .get_mut(user_id)
            .ok_or_else(|| MockError::not_found("no such user"))?;
        if let Some(name) = req.username {
            self.by_username
                .remove(&account.user.username.to_lowercase());
            self.by_username
                .insert(name.to_lowercase(), user_id.to_owned());
            account.user.username = name;
        }
        if let Some(url) = req.avatar_url {
            // "" clears the avatar.
            account.user.avatar_url = Some(url).filter(|u| !u.is_empty());
        }
        if let Some(prefs) = req.preferences {
            account.user.preferences = prefs;
        }
        Ok(account.user.clone())
    }

    pub fn users(&self) -> Vec<User> {
        let mut users: Vec<User> = self.accounts.values().map(|a| a.user.clone()).collect();
        users.sort_by(|a, b| a.id.cmp(&b.id));
        users
    }

    pub fn user_exists(&self, user_id: &str) -> bool {
        self.accounts.contains_key(user_id)
    }

    // ---- saves ----

    fn latest(&self, user_id: &str, slot: &str) -> Option<&Version> {
        self.slots
            .get(&(user_id.to_owned(), slot.to_owned()))
            .and_then(|versions| versions.last())
    }

    fn current(&self, user_id: &str, slot: &str) -> Option<&Version> {
        self.latest(user_id, slot).filter(|v| v.data.is_some())
    }

    fn used_bytes(&self, user_id: &str) -> i64 {
        self.slots
            .iter()
            .filter(|((owner, _), _)| owner == user_id)
            .flat_map(|(_, versions)| versions.iter())
            .map(|v| v.record.size)
            .sum()
    }

    /// 409 `save_conflict` with `SaveConflictDetails`, as the real server answers.
    fn conflict(&self, user_id: &str, slot: &str) -> MockError {
        let latest = self.latest(user_id, slot);
        let details = serde_json::to_value(SaveConflictDetails {
            current: self.current(user_id, slot).map(Version::slot_info),
            current_version: latest.map_or(0, |v| v.record.version),
        })
        .expect("conflict details serialize");
        MockError::new(
            ErrorCode::SaveConflict,
            "the slot changed since base_version; nothing was overwritten",
        )
        .with_details(details)
    }

    fn check(&self, user_id: &str, slot: &str, precondition: Precondition) -> MockResult<()> {
        let latest = self.latest(user_id, slot);
        let current = latest.map_or(0, |v| v.record.version);
        let deleted = latest.is_none_or(|v| v.data.is_none());
        match precondition {
            Precondition::Base(base) if base == current || (base == 0 && deleted) => Ok(()),
            Precondition::Base(_) => Err(self.conflict(user_id, slot)),
            Precondition::Exists(_) if deleted => Err(MockError::not_found("no such save slot")),
            Precondition::Exists(Some(expected)) if expected != current => {
                Err(self.conflict(user_id, slot))
            }
            Precondition::Exists(_) | Precondition::None => Ok(()),
        }
    }

    /// Adds a version after checking the precondition, the size limit and the quota (versions
    /// the retention limit prunes count as freed), then prunes.
    fn append(
        &mut self,
        user_id: &str,
        slot: &str,
        precondition: Precondition,
        change: Change,
    ) -> MockResult<SaveSlotInfo> {
        validate_slot(slot)?;
        self.check(user_id, slot, precondition)?;
        let (size, checksum) = match &change.data {
            Some(data) => size_and_checksum(data),
            None => (0, String::new()),
        };
        if size > self.limits.max_slot_bytes {
            return Err(MockError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "save is {size} bytes, the limit per slot is {}",
                    self.limits.max_slot_bytes
                ),
            ));
        }
        let keep = self.limits.history_versions.max(1);
        let existing = self
            .slots
            .get(&(user_id.to_owned(), slot.to_owned()))
            .map_or(&[][..], Vec::as_slice);
        let pruned = (existing.len() + 1).saturating_sub(keep);
        let freed: i64 = existing[..pruned.min(existing.len())]
            .iter()
            .map(|v| v.record.size)
            .sum();
        if self.used_bytes(user_id) - freed + size > self.limits.user_quota_bytes {
            return Err(MockError::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "storage quota of {} bytes would be exceeded",
                    self.limits.user_quota_bytes
                ),
            ));
        }
        let versions = self
            .slots
            .entry((user_id.to_owned(), slot.to_owned()))
            .or_default();
        let last = versions
            .last()
            .map(|v| (v.record.version, v.record.created_at));
        let version = Version {
            record: SaveVersionInfo {
                slot: slot.to_owned(),
                version: last.map_or(1, |(version, _)| version + 1),
                size,
                created_at: now_ms().max(last.map_or(0, |(_, at)| at)),
                checksum,
                metadata: change.metadata,
                kind: change.kind.to_owned(),
                restored_from: change.restored_from,
            },
            data: change.data,
        };
        let info = version.slot_info();
        versions.push(version);
        versions.drain(..pruned.min(versions.len()));
        Ok(info)
    }

    /// A player's write with optimistic concurrency: `base_version` must be the current version
    /// (`None`/`0` = the slot must not exist or be deleted), else 409 `save_conflict`.
    pub fn write_save(
        &mut self,
        user_id: &str,
        slot: &str,
        data: Value,
        metadata: Option<Value>,
        base_version: Option<i64>,
    ) -> MockResult<SaveSlotInfo> {
        let base = base_version.unwrap_or(0);
        if base < 0 {
            return Err(MockError::invalid("base_version must be 0 or positive"));
        }
        let change = Change {
            data: Some(data),
            metadata: validate_metadata(metadata)?,
            kind: "write",
            restored_from: None,
        };
        self.append(user_id, slot, Precondition::Base(base), change)
    }

    /// A write from "another device": lands on top of whatever is current.
    pub fn force_write(
        &mut self,
        user_id: &str,
        slot: &str,
        data: Value,
        metadata: Value,
    ) -> MockResult<SaveSlotInfo> {
        let change = Change {
            data: Some(data),
            metadata: validate_metadata(Some(metadata))?,
            kind: "write",
            restored_from: None,
        };
        self.append(user_id, slot, Precondition::None, change)
    }

    /// The current save, or a kept older `version` of it.
    pub fn load_save(
        &self,
        user_id: &str,
        slot: &str,
        version: Option<i64>,
    ) -> MockResult<SaveData> {
        let found = match version {
            None => self.current(user_id, slot),
            Some(wanted) => self
                .slots
                .get(&(user_id.to_owned(), slot.to_owned()))
                .and_then(|versions| versions.iter().find(|v| v.record.version == wanted))
                .filter(|v| v.data.is_some()),
        };
        let found = found.ok_or_else(|| MockError::not_found("no such save slot or version"))?;
        Ok(SaveData {
            info: found.slot_info(),
            data: found.data.clone().unwrap_or(Value::Null),
        })
    }

    pub fn list_saves(&self, user_id: &str) -> SaveList {
        let slots = self
            .slots
            .iter()
            .filter(|((owner, _), _)| owner == user_id)
            .filter_map(|(_, versions)| versions.last().filter(|v| v.data.is_some()))
            .map(Version::slot_info)
            .collect();
        SaveList {
            slots,
            used_bytes: self.used_bytes(user_id),
            quota_bytes: self.limits.user_quota_bytes,
        }
    }

    /// Deleting keeps history: a `delete` version becomes the newest. `if_match` = the version
    /// the client expects to delete (409 otherwise).
    pub fn delete_save(
        &mut self,
        user_id: &str,
        slot: &str,
        if_match: Option<i64>,
    ) -> MockResult<()> {
        let change = Change {
            data: None,
            metadata: json!({}),
            kind: "delete",
            restored_from: None,
        };
        self.append(user_id, slot, Precondition::Exists(if_match), change)?;
        Ok(())
    }

    fn records(&self, user_id: &str, slot: Option<&str>) -> Vec<SaveVersionInfo> {
        let mut records: Vec<SaveVersionInfo> = self
            .slots
            .iter()
            .filter(|((owner, name), _)| owner == user_id && slot.is_none_or(|s| s == name))
            .flat_map(|(_, versions)| versions.iter().map(|v| v.record.clone()))
            .collect();
        records.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.slot.cmp(&b.slot))
                .then_with(|| b.version.cmp(&a.version))
        });
        records
    }

    /// Every kept version, newest first; only `slot`'s when given.
    pub fn history(&self, user_id: &str, slot: Option<&str>) -> SaveHistory {
        SaveHistory {
            versions: self.records(user_id, slot),
        }
    }

    /// Every kept version of one slot, oldest first, deletions included.
    pub fn versions(&self, user_id: &str, slot: &str) -> Vec<SaveVersionInfo> {
        let mut records = self.records(user_id, Some(slot));
        records.reverse();
        records
    }

    /// Makes a kept version current again as a new `restore` version; works on a deleted slot.
    pub fn restore(
        &mut self,
        user_id: &str,
        slot: &str,
        version: i64,
        base_version: Option<i64>,
    ) -> MockResult<SaveSlotInfo> {
        let precondition = match base_version {
            Some(base) if base < 0 => {
                return Err(MockError::invalid("base_version must be 0 or positive"))
            }
            Some(base) => Precondition::Base(base),
            None => Precondition::None,
        };
        validate_slot(slot)?;
        let source = self
            .slots
            .get(&(user_id.to_owned(), slot.to_owned()))
            .and_then(|versions| versions.iter().find(|v| v.record.version == version))
            .cloned()
            .ok_or_else(|| MockError::not_found("no such kept version of this slot"))?;
        let Some(data) = source.data else {
            return Err(MockError::invalid(
                "that version is a deletion; restore a version that holds data",
            ));
        };
        let change = Change {
            data: Some(data),
            metadata: source.record.metadata,
            kind: "restore",
            restored_from: Some(version),
        };
        self.append(user_id, slot, precondition, change)
    }
}
