//! Where the refresh token lives between runs.
//!
//! `Keyring` uses the OS credential store (Keychain, Windows Credential Manager, Secret Service)
//! and falls back to an encrypted file in `data_dir` when the store is missing or fails (headless
//! Linux, CI). `FileOnly` always uses the file.
//!
//! The OS store is opened at first use and closed with the client, and none of the stores starts
//! a thread: the library can be unloaded (Godot at exit) once the client has shut down. On Linux
//! that rules out the zbus-based Secret Service store, whose threads are process-global.
//!
//! Every server + game (api_url + client key) has its own session: a game that switches servers
//! (`reconfigure()` in Godot) and back resumes instead of signing in again. The file is
//! `session-<server tag>.token` = `"AXT1" || nonce (12) || AES-256-GCM(token)`, with the key derived
//! by HKDF-SHA256 from 32 random bytes in `credentials.key` (mode 0600), the machine id (when the
//! OS has one) and the API URL + client key.
//!
//! Threat model, honestly: this stops casual copying (a save folder shared or synced to another
//! machine does not carry a usable session, and the token is not greppable in plain text). It does
//! not stop an attacker who can read the user's files on this machine: the key file sits next to
//! the token. Only the OS credential store protects against that.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hkdf::Hkdf;
use keyring_core::CredentialStore as OsStore;
use sha2::{Digest, Sha256};

use crate::storage::write_atomic;

/// Where refresh tokens are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialStore {
    /// The OS credential store under this service name, with the encrypted-file fallback.
    Keyring { service: String },
    /// Only the encrypted file (tests, or games that want no keychain prompts).
    FileOnly,
}

const MAGIC: &[u8; 4] = b"AXT1";

pub(crate) struct TokenStore {
    kind: CredentialStore,
    /// The keyring account and key-derivation context: one session per server + game.
    account: String,
    token_file: PathBuf,
    key_file: PathBuf,
    /// The signed-in user of this server's session (see `Shared::resume_offline`).
    user_file: PathBuf,
    data_dir: PathBuf,
    /// The OS store once opened (`None` when it could not be); dropped with the client.
    os_store: OnceLock<Option<Arc<OsStore>>>,
}

impl TokenStore {
    pub fn new(kind: CredentialStore, data_dir: PathBuf, api_url: &str, client_key: &str) -> Self {
        let tag = server_tag(api_url, client_key);
        Self {
            kind,
            account: format!("{api_url}|{client_key}"),
            token_file: data_dir.join(format!("session-{tag}.token")),
            key_file: data_dir.join("credentials.key"),
            user_file: data_dir.join(format!("session_user-{tag}.json")),
            data_dir,
            os_store: OnceLock::new(),
        }
    }

    pub fn user_file(&self) -> &Path {
        &self.user_file
    }

    fn keyring_entry(&self) -> Option<keyring_core::Entry> {
        let CredentialStore::Keyring { service } = &self.kind else {
            return None;
        };
        let store = self.os_store.get_or_init(|| {
            open_os_store()
                .map_err(|e| tracing::debug!(error = %e, "OS credential store unavailable"))
                .ok()
        });
        keyring_core::Entry::new_in_store(store.as_ref()?, service, &self.account)
            .map_err(|e| tracing::debug!(error = %e, "OS credential store refused the entry"))
            .ok()
    }

    /// The stored token, if any. Blocking (keyring and file I/O): call off the game thread.
    pub fn load(&self) -> Option<String> {
        if let Some(entry) = self.keyring_entry() {
            if let Ok(token) = entry.get_password() {
                return Some(token);
            }
        }
        match self.load_file(&self.token_file) {
            Ok(None) => self.take_over_legacy(),
            Ok(token) => token,
            Err(e) => {
                tracing::warn!(error = %e, "stored session unreadable; signing in again is needed");
                let _ = fs::remove_file(&self.token_file);
                None
            }
        }
    }

    /// Replaces the stored token (refresh tokens rotate on every refresh).
    pub fn save(&self, token: &str) -> std::io::Result<()> {
        if let Some(entry) = self.keyring_entry() {
            match entry.set_password(token) {
                Ok(()) => {
                    // A stale fallback copy must not resurrect an older session.
                    let _ = fs::remove_file(&self.token_file);
                    return Ok(());
                }
                Err(e) => tracing::debug!(error = %e, "keyring write failed; using the file"),
            }
        }
        let key = self.key(true)?;
        let nonce: [u8; 12] = rand::random();
        let sealed = Aes256Gcm::new(&key)
            .encrypt(Nonce::from_slice(&nonce), token.as_bytes())
            .map_err(|_| std::io::Error::other("encryption failed"))?;
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        write_atomic(&self.token_file, &bytes, true)
    }

    pub fn clear(&self) {
        if let Some(entry) = self.keyring_entry() {
            let _ = entry.delete_credential();
        }
        let _ = fs::remove_file(&self.token_file);
    }

    /// SDK versions before per-server sessions kept one `session.token` (and
    /// `session_user.json`). It decrypts only with its own server's key, so the first load by
    /// that server moves both to its names; for any other server it stays untouched.
    fn take_over_legacy(&self) -> Option<String> {
        let legacy = self.data_dir.join("session.token");
        let token = self.load_file(&legacy).ok().flatten()?;
        if fs::rename(&legacy, &self.token_file).is_ok() {
            let _ = fs::rename(self.data_dir.join("session_user.json"), &self.user_file);
        }
        Some(token)
    }

    fn load_file(&self, path: &Path) -> std::io::Result<Option<String>> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let invalid = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
        if bytes.len() < MAGIC.len() + 12 || &bytes[..4] != MAGIC {
            return Err(invalid("not a session file"));
        }
        let key = self.key(false)?;
        let plain = Aes256Gcm::new(&key)
            .decrypt(Nonce::from_slice(&bytes[4..16]), &bytes[16..])
            .map_err(|_| invalid("session file does not decrypt (corrupted or moved)"))?;
        String::from_utf8(plain)
            .map(Some)
            .map_err(|_| invalid("session token is not text"))
    }

    fn key(&self, create: bool) -> std::io::Result<Key<Aes256Gcm>> {
        let secret = match fs::read(&self.key_file) {
            Ok(secret) if secret.len() == 32 => secret,
            Ok(_) if !create => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "key file damaged",
                ))
            }
            Err(e) if !create || e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {
                let secret: [u8; 32] = rand::random();
                write_atomic(&self.key_file, &secret, true)?;
                secret.to_vec()
            }
        };
        let machine = ["/etc/machine-id", "/var/lib/dbus/machine-id"]
            .iter()
            .find_map(|p| fs::read(p).ok())
            .unwrap_or_default();
        let hkdf = Hkdf::<Sha256>::new(Some(&machine), &secret);
        let mut key = [0u8; 32];
        hkdf.expand(
            format!("aethex-sdk refresh token v1|{}", self.account).as_bytes(),
            &mut key,
        )
        .expect("32 bytes is a valid HKDF length");
        Ok(key.into())
    }
}

/// Names the per-server files in `data_dir`: a hash, because URLs do not make file names.
fn server_tag(api_url: &str, client_key: &str) -> String {
    let digest = Sha256::digest(format!("{api_url}|{client_key}"));
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(target_os = "macos")]
fn open_os_store() -> keyring_core::Result<Arc<OsStore>> {
    let store: Arc<OsStore> = apple_native_keyring_store::keychain::Store::new()?;
    Ok(store)
}

#[cfg(target_os = "windows")]
fn open_os_store() -> keyring_core::Result<Arc<OsStore>> {
    let store: Arc<OsStore> = windows_native_keyring_store::Store::new()?;
    Ok(store)
}

/// Secret Service over libdbus: synchronous calls on the caller's thread (the tokio blocking
/// pool), no threads of its own.
#[cfg(all(
    unix,
    not(any(target_os = "macos", target_os = "ios", target_os = "android"))
))]
fn open_os_store() -> keyring_core::Result<Arc<OsStore>> {
    let store: Arc<OsStore> = dbus_secret_service_keyring_store::Store::new()?;
    Ok(store)
}

#[cfg(not(any(
    target_os = "macos",
    target_os = "windows",
    all(
        unix,
        not(any(target_os = "macos", target_os = "ios", target_os = "android"))
    )
)))]
fn open_os_store() -> keyring_core::Result<Arc<OsStore>> {
    Err(keyring_core::Error::NoDefaultStore)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &std::path::Path) -> TokenStore {
        TokenStore::new(
            CredentialStore::FileOnly,
            dir.to_path_buf(),
            "http://x",
            "key",
        )
    }

    #[test]
    fn file_store_round_trips_rotates_and_clears() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        assert_eq!(s.load(), None);
        s.save("first").unwrap();
        s.save("second").unwrap();
        assert_eq!(store(dir.path()).load().as_deref(), Some("second"));
        let raw = fs::read(&s.token_file).unwrap();
        assert!(
            !raw.windows(6).any(|w| w == b"second"),
            "token stored in clear"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in [&s.token_file, &s.key_file] {
                let mode = fs::metadata(f).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", f.display());
            }
        }
        s.clear();
        assert_eq!(s.load(), None);
    }

    #[test]
    fn corrupted_or_foreign_file_reads_as_no_session() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        s.save("token").unwrap();
        let path = s.token_file.clone();
        let mut raw = fs::read(&path).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        fs::write(&path, &raw).unwrap();
        assert_eq!(s.load(), None);
        assert!(!path.exists(), "a corrupted file is removed");

        // Same files, other game: the derived key differs, so the token does not open.
        s.save("token").unwrap();
        let other = TokenStore::new(
            CredentialStore::FileOnly,
            dir.path().to_path_buf(),
            "http://x",
            "other-key",
        );
        assert_eq!(other.load(), None);

        // A new key file (e.g. token copied to another install) cannot open the old token.
        s.save("token").unwrap();
        fs::write(dir.path().join("credentials.key"), [7u8; 32]).unwrap();
        assert_eq!(s.load(), None);

        fs::write(&path, b"garbage").unwrap();
        assert_eq!(s.load(), None);
    }

    #[test]
    fn a_session_stored_before_per_server_files_is_taken_over_by_its_server_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        s.save("old-token").unwrap();
        // What SDK versions before per-server sessions left behind.
        fs::rename(&s.token_file, dir.path().join("session.token")).unwrap();
        fs::write(dir.path().join("session_user.json"), b"{}").unwrap();

        // Another server's store neither reads nor removes it.
        let other = TokenStore::new(
            CredentialStore::FileOnly,
            dir.path().to_path_buf(),
            "http://elsewhere",
            "key",
        );
        assert_eq!(other.load(), None);
        assert!(dir.path().join("session.token").exists());

        // Its own server takes it over, with the signed-in user file.
        assert_eq!(s.load().as_deref(), Some("old-token"));
        assert!(!dir.path().join("session.token").exists());
        assert_eq!(store(dir.path()).load().as_deref(), Some("old-token"));
        let tag = server_tag("http://x", "key");
        assert!(dir.path().join(format!("session_user-{tag}.json")).exists());
        assert!(!dir.path().join("session_user.json").exists());
    }

    #[test]
    fn keyring_without_a_secret_service_falls_back_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let s = TokenStore::new(
            CredentialStore::Keyring {
                service: "aethex-sdk-test".into(),
            },
            dir.path().to_path_buf(),
            "http://x",
            "key",
        );
        s.save("tok").unwrap();
        assert_eq!(s.load().as_deref(), Some("tok"));
        s.clear();
        assert_eq!(s.load(), None);
    }
}
