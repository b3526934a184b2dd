//! Save blobs at rest: zstd-compressed, then sealed with AES-256-GCM.
//!
//! Layout of a stored blob: `AXS1` magic, 12-byte random nonce, ciphertext + 16-byte tag. The
//! blob key is the associated data, so a blob copied under another key (another player or
//! version) fails to open instead of serving someone else's save.

use std::cell::RefCell;
use std::io::Write;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Nonce};
use base64::Engine;

use crate::config::Config;

const MAGIC: &[u8; 4] = b"AXS1";
const NONCE_LEN: usize = 12;
const KEY_FILE: &str = "save-encryption-key";
/// zstd's default level: most of the ratio of higher levels at a fraction of their CPU time.
const ZSTD_LEVEL: i32 = 3;

thread_local! {
    // A zstd context per thread, reused: `zstd::bulk::compress` creates and frees one (and its
    // level-3 workspace) per call, which was a good part of a small save's compression time.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn compress(plain: &[u8]) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|slot| {
        if slot.is_none() {
            *slot = Some(zstd::bulk::Compressor::new(ZSTD_LEVEL)?);
        }
        slot.as_mut().expect("just set").compress(plain)
    })
}

fn decompress(compressed: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with_borrow_mut(|slot| {
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        slot.as_mut()
            .expect("just set")
            .decompress(compressed, capacity)
    })
}

#[derive(Clone)]
pub struct BlobCodec {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for BlobCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlobCodec(..)")
    }
}

impl BlobCodec {
    /// The key from `saves.encryption_key`, else `<data_dir>/save-encryption-key`, generated on
    /// first start.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let key = match &config.saves.encryption_key {
            Some(b64) => {
                decode_key(b64).map_err(|e| anyhow::anyhow!("saves.encryption_key: {e}"))?
            }
            None => load_or_create_key_file(&config.data_dir.join(KEY_FILE))?,
        };
        Ok(Self::new(&key))
    }

    pub fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    /// Compresses and encrypts `plain` for storage under `blob_key`.
    pub fn seal(&self, blob_key: &str, plain: &[u8]) -> anyhow::Result<Vec<u8>> {
        let compressed = compress(plain)?;
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: &compressed,
                    aad: blob_key.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypts and decompresses a blob stored under `blob_key`; `size` is the plain length
    /// recorded with it, which also bounds decompression.
    pub fn open(&self, blob_key: &str, blob: &[u8], size: usize) -> anyhow::Result<Vec<u8>> {
        let rest = blob
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| anyhow::anyhow!("blob {blob_key} has no AXS1 header"))?;
        if rest.len() < NONCE_LEN {
            anyhow::bail!("blob {blob_key} is truncated");
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let compressed = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: blob_key.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("blob {blob_key} fails authentication"))?;
        let plain = decompress(&compressed, size)?;
        if plain.len() != size {
            anyhow::bail!(
                "blob {blob_key} holds {} bytes, expected {size}",
                plain.len()
            );
        }
        Ok(plain)
    }
}

fn decode_key(b64: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| anyhow::anyhow!("not base64: {e}"))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| anyhow::anyhow!("expected 32 bytes, got {}", b.len()))
}

/// Reads the key file, or creates it (0600, written to a temporary file, synced, then renamed,
/// so a crash never leaves a truncated key behind).
fn load_or_create_key_file(path: &Path) -> anyhow::Result<[u8; 32]> {
    if path.exists() {
        let text = std::fs::read_to_string(path)?;
        return decode_key(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
    }
    let key: [u8; 32] = Aes256Gcm::generate_key(&mut OsRng).into();
    let tmp = path.with_extension("tmp");
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        writeln!(
            file,
            "{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        )?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    tracing::info!(path = %path.display(), "generated the save encryption key");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let codec = BlobCodec::new(&[7u8; 32]);
        let plain = br#"{"level":3,"gold":120}"#.repeat(50);
        let blob = codec.seal("saves/u/1", &plain).unwrap();
        assert!(blob.starts_with(MAGIC));
        assert!(!blob.windows(7).any(|w| w == b"\"level\""));
        assert_eq!(codec.open("saves/u/1", &blob, plain.len()).unwrap(), plain);
        // Another key path (AAD) or a flipped bit fails instead of returning wrong data.
        assert!(codec.open("saves/u/2", &blob, plain.len()).is_err());
        let mut flipped = blob.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(codec.open("saves/u/1", &flipped, plain.len()).is_err());
        assert!(BlobCodec::new(&[8u8; 32])
            .open("saves/u/1", &blob, plain.len())
            .is_err());
    }

    #[test]
    fn key_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let first = load_or_create_key_file(&path).unwrap();
        let second = load_or_create_key_file(&path).unwrap();
        assert_eq!(first, second);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(decode_key("c2hvcnQ=").is_err());
    }
}
