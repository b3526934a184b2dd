//! In-memory accounts, sessions and saves with the real server's rules.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aethex_protocol::auth::{AuthResponse, UpdateProfileRequest, User};
use aethex_protocol::saves::{SaveData, SaveList, SaveSlotInfo, SaveVersionInfo};
use aethex_protocol::ErrorCode;
use base64::Engine;
use rand::RngCore;
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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            access_token_ttl: Duration::from_secs(15 * 60),
            max_slot_bytes: 16 * 1024 * 1024,
            user_quota_bytes: 1024 * 1024 * 1024,
        }
    }
}

struct Account {
    user: User,
    password_hash: Option<String>,
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
    info: SaveVersionInfo,
    /// `None` for a delete marker.
    data: Option<Value>,
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

fn validate_email(email: &str) -> MockResult<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    if !valid {
        return Err(MockError::invalid("email is not a valid address"));
    }
    Ok(email)
}

fn validate_password(password: &str) -> MockResult<()> {
    if !(8..=256).contains(&password.chars().count()) {
        return Err(MockError::invalid("password must be 8 to 256 characters"));
    }
    Ok(())
}

fn validate_slot(slot: &str) -> MockResult<()> {
    if slot.is_empty() || slot.len() > 128 || slot.chars().any(|c| c.is_control() || c == '/') {
        return Err(MockError::invalid(
            "slot must be 1 to 128 characters without '/' or control characters",
        ));
    }
    Ok(())
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

    pub fn register(
        &mut self,
        email: &str,
        password: &str,
        username: String,
    ) -> MockResult<AuthResponse> {
        let email = validate_email(email)?;
        validate_password(password)?;
        if self.by_email.contains_key(&email) {
            return Err(MockError::new(
                ErrorCode::Conflict,
                "an account with this email already exists",
            ));
        }
        let id = self.new_account(Some(username), "email")?;
        let account = self.accounts.get_mut(&id).expect("just created");
        account.user.email = Some(email.clone());
        account.password_hash = Some(hash_password(password));
        self.by_email.insert(email, id.clone());
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
        }
        if let Some(url) = &req.avatar_url {
            if url.len() > 2048 {
                return Err(MockError::invalid("avatar_url is too long"));
            }
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
            account.user.avatar_url = Some(url);
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

    fn current(&self, user_id: &str, slot: &str) -> Option<&Version> {
        self.slots
            .get(&(user_id.to_owned(), slot.to_owned()))
            .and_then(|versions| versions.last())
            .filter(|v| v.data.is_some())
    }

    fn used_bytes(&self, user_id: &str) -> i64 {
        self.slots
            .iter()
            .filter(|((owner, _), _)| owner == user_id)
            .flat_map(|(_, versions)| versions.iter())
            .map(|v| v.info.size)
            .sum()
    }

    fn slot_info(version: &Version) -> SaveSlotInfo {
        SaveSlotInfo {
            slot: version.info.slot.clone(),
            version: version.info.version,
            size: version.info.size,
            updated_at: version.info.created_at,
            checksum: version.info.checksum.clone(),
            metadata: version.info.metadata.clone(),
        }
    }

    fn append(
        &mut self,
        user_id: &str,
        slot: &str,
        data: Option<Value>,
        metadata: Value,
        kind: &str,
    ) -> MockResult<SaveSlotInfo> {
        let (size, checksum) = match &data {
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
        if self.used_bytes(user_id) + size > self.limits.user_quota_bytes {
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
        let version = versions.last().map_or(1, |v| v.info.version + 1);
        let now = now_ms().max(versions.last().map_or(0, |v| v.info.created_at));
        let entry = Version {
            info: SaveVersionInfo {
                slot: slot.to_owned(),
                version,
                size,
                created_at: now,
                checksum,
                metadata,
                kind: kind.to_owned(),
            },
            data,
        };
        let info = Self::slot_info(&entry);
        versions.push(entry);
        Ok(info)
    }

    /// A player's write with optimistic concurrency: `base_version` must be the current version
    /// (`None`/`0` = the slot must not exist yet), else 409 `save_conflict` with `details.current`.
    pub fn write_save(
        &mut self,
        user_id: &str,
        slot: &str,
        data: Value,
        metadata: Option<Value>,
        base_version: Option<i64>,
    ) -> MockResult<SaveSlotInfo> {
        validate_slot(slot)?;
        let current = self.current(user_id, slot);
        let current_version = current.map_or(0, |v| v.info.version);
        if base_version.unwrap_or(0) != current_version {
            let details = match current {
                Some(v) => json!({ "current": Self::slot_info(v) }),
                None => json!({ "current": Value::Null }),
            };
            return Err(MockError::new(
                ErrorCode::SaveConflict,
                format!(
                    "slot {slot:?} is at version {current_version}, the write was based on {}",
                    base_version.unwrap_or(0)
                ),
            )
            .with_details(details));
        }
        self.append(
            user_id,
            slot,
            Some(data),
            metadata.unwrap_or_else(|| json!({})),
            "write",
        )
    }

    /// A write from "another device": lands on top of whatever is current.
    pub fn force_write(
        &mut self,
        user_id: &str,
        slot: &str,
        data: Value,
        metadata: Value,
    ) -> MockResult<SaveSlotInfo> {
        validate_slot(slot)?;
        self.append(user_id, slot, Some(data), metadata, "write")
    }

    pub fn load_save(&self, user_id: &str, slot: &str) -> MockResult<SaveData> {
        let current = self
            .current(user_id, slot)
            .ok_or_else(|| MockError::not_found(format!("no save in slot {slot:?}")))?;
        Ok(SaveData {
            info: Self::slot_info(current),
            data: current.data.clone().unwrap_or(Value::Null),
        })
    }

    pub fn list_saves(&self, user_id: &str) -> SaveList {
        let slots = self
            .slots
            .iter()
            .filter(|((owner, _), _)| owner == user_id)
            .filter_map(|(_, versions)| versions.last().filter(|v| v.data.is_some()))
            .map(Self::slot_info)
            .collect();
        SaveList {
            slots,
            used_bytes: self.used_bytes(user_id),
            quota_bytes: self.limits.user_quota_bytes,
        }
    }

    /// Deleting keeps history: a `delete` marker becomes the newest version.
    pub fn delete_save(&mut self, user_id: &str, slot: &str) -> MockResult<()> {
        if self.current(user_id, slot).is_none() {
            return Err(MockError::not_found(format!("no save in slot {slot:?}")));
        }
        self.append(user_id, slot, None, json!({}), "delete")?;
        Ok(())
    }

    /// Every version, newest first; only `slot`'s when given.
    pub fn history(&self, user_id: &str, slot: Option<&str>) -> Vec<SaveVersionInfo> {
        let mut versions: Vec<SaveVersionInfo> = self
            .slots
            .iter()
            .filter(|((owner, name), _)| owner == user_id && slot.is_none_or(|s| s == name))
            .flat_map(|(_, versions)| versions.iter().map(|v| v.info.clone()))
            .collect();
        versions.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.slot.cmp(&b.slot))
                .then_with(|| b.version.cmp(&a.version))
        });
        versions
    }

    /// Every version of one slot, oldest first, delete markers included.
    pub fn versions(&self, user_id: &str, slot: &str) -> Vec<SaveVersionInfo> {
        self.slots
            .get(&(user_id.to_owned(), slot.to_owned()))
            .map(|versions| versions.iter().map(|v| v.info.clone()).collect())
            .unwrap_or_default()
    }

    /// Makes an old version current again as a new `restore` version.
    pub fn restore(&mut self, user_id: &str, slot: &str, version: i64) -> MockResult<SaveSlotInfo> {
        let old = self
            .slots
            .get(&(user_id.to_owned(), slot.to_owned()))
            .and_then(|versions| versions.iter().find(|v| v.info.version == version))
            .filter(|v| v.data.is_some())
            .cloned()
            .ok_or_else(|| {
                MockError::not_found(format!("slot {slot:?} has no version {version} with data"))
            })?;
        self.append(user_id, slot, old.data, old.info.metadata, "restore")
    }
}
