//! Password hashing: argon2id with OWASP's recommended parameters (m = 19 MiB, t = 2, p = 1).
//! One hash costs ~20 ms of one core, which is the point: it bounds offline guessing. Hashing runs
//! on the blocking pool behind a semaphore so a burst of logins cannot starve the async workers or
//! allocate 19 MiB per request without bound.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::error::{ApiError, ApiResult};

/// Longest accepted password: long enough for any passphrase, short enough to bound hashing.
pub const MAX_PASSWORD_LEN: usize = 1024;

#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    /// Hash checked when the email is unknown, so such a login takes as long as a wrong password.
    dummy_hash: Arc<str>,
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 params");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_now(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(argon2()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

fn verify_now(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

impl Passwords {
    pub async fn new() -> anyhow::Result<Self> {
        let dummy_hash = tokio::task::spawn_blocking(|| hash_now("aethex-dummy-password"))
            .await?
            .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            permits: Arc::new(Semaphore::new(cores * 2)),
            dummy_hash: dummy_hash.into(),
        })
    }

    pub fn validate(password: &str, min_len: usize) -> ApiResult<()> {
        let len = password.chars().count();
        if len < min_len || len > MAX_PASSWORD_LEN {
            return Err(ApiError::invalid(format!(
                "password must be {min_len} to {MAX_PASSWORD_LEN} characters"
            )));
        }
        Ok(())
    }

    pub async fn hash(&self, password: &str) -> ApiResult<String> {
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || hash_now(&password))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)
    }

    /// Checks `password` against `hash`; with no hash (unknown account, or one without a
    /// password) it burns the same time and answers false.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> ApiResult<bool> {
        let _permit = self.permits.acquire().await.map_err(ApiError::internal)?;
        let known = hash.is_some();
        let hash = hash.map_or_else(|| self.dummy_hash.to_string(), str::to_owned);
        let password = password.to_owned();
        let matches = tokio::task::spawn_blocking(move || verify_now(&password, &hash))
            .await
            .map_err(ApiError::internal)?;
        Ok(known && matches)
    }
}
