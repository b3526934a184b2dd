//! Access tokens: EdDSA (Ed25519) JWTs with a `kid` header. Keys live in the database so every
//! node signs and verifies alike; the public halves are served as a JWKS at
//! `/.well-known/jwks.json` so a game's own servers can verify tokens offline.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use aethex_protocol::auth::AccessClaims;
use aethex_protocol::ErrorCode;
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer, SigningKey};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::{json, Value};
use sqlx::Row;

use crate::db::Db;
use crate::error::ApiError;

#[derive(Clone)]
pub struct TokenKeys {
    db: Db,
    issuer: String,
    active_kid: String,
    /// Parsed once: `jsonwebtoken::encode` re-derives the key pair from PKCS#8 on every call,
    /// a second curve multiplication per token (measured: half the signing cost).
    signing: Arc<SigningKey>,
    /// `base64url(header)`: the same for every token of this key.
    encoded_header: Arc<str>,
    decoding: Arc<RwLock<HashMap<String, Arc<DecodingKey>>>>,
    jwks: Arc<RwLock<Value>>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("active_kid", &self.active_kid)
            .finish_non_exhaustive()
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl TokenKeys {
    /// Loads the newest signing key, creating the first one on a fresh database.
    pub async fn load_or_create(db: Db, issuer: String, now_ms: i64) -> anyhow::Result<Self> {
        if Self::newest_key(&db).await?.is_none() {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let kid = crate::db::new_id();
            let pkcs8 = key
                .to_pkcs8_der()
                .map_err(|e| anyhow::anyhow!("encoding signing key: {e}"))?;
            // Two nodes starting at once may both insert; both keys are then valid and the
            // newest one signs everywhere.
            sqlx::query(
                "INSERT INTO signing_keys (kid, private_pkcs8, public_raw, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&kid)
            .bind(pkcs8.as_bytes().to_vec())
            .bind(key.verifying_key().to_bytes().to_vec())
            .bind(now_ms)
            .execute(&db.write)
            .await?;
        }
        let (kid, private) = Self::newest_key(&db)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no signing key after creating one"))?;
        let signing = SigningKey::from_pkcs8_der(&private)
            .map_err(|e| anyhow::anyhow!("decoding signing key {kid}: {e}"))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        let encoded_header = b64url(&serde_json::to_vec(&header)?).into();
        let keys = Self {
            db,
            issuer,
            active_kid: kid,
            signing: Arc::new(signing),
            encoded_header,
            decoding: Default::default(),
            jwks: Arc::new(RwLock::new(json!({"keys": []}))),
        };
        keys.reload_public_keys().await?;
        Ok(keys)
    }

    async fn newest_key(db: &Db) -> sqlx::Result<Option<(String, Vec<u8>)>> {
        let row = sqlx::query(
            "SELECT kid, private_pkcs8 FROM signing_keys ORDER BY created_at DESC, kid DESC LIMIT 1",
        )
        .fetch_optional(&db.write)
        .await?;
        row.map(|r| Ok((r.try_get("kid")?, r.try_get("private_pkcs8")?)))
            .transpose()
    }

    async fn reload_public_keys(&self) -> sqlx::Result<()> {
        let rows = sqlx::query("SELECT kid, public_raw FROM signing_keys ORDER BY created_at")
            .fetch_all(&self.db.read)
            .await?;
        let mut decoding = HashMap::new();
        let mut jwks = Vec::new();
        for row in rows {
            let kid: String = row.try_get("kid")?;
            let public: Vec<u8> = row.try_get("public_raw")?;
            let x = b64url(&public);
            if let Ok(key) = DecodingKey::from_ed_components(&x) {
                decoding.insert(kid.clone(), Arc::new(key));
            }
            jwks.push(json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid, "x": x}));
        }
        *self.decoding.write().expect("lock") = decoding;
        *self.jwks.write().expect("lock") = json!({ "keys": jwks });
        Ok(())
    }

    pub fn jwks(&self) -> Value {
        self.jwks.read().expect("lock").clone()
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The compact JWS `jsonwebtoken::encode` would produce (Ed25519 is deterministic, so
    /// byte for byte the same token), without re-parsing the key.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, ApiError> {
        let claims = serde_json::to_vec(claims).map_err(ApiError::internal)?;
        let mut token = format!("{}.{}", self.encoded_header, b64url(&claims));
        let signature = self.signing.sign(token.as_bytes());
        token.push('.');
        token.push_str(&b64url(&signature.to_bytes()));
        Ok(token)
    }

    /// Verifies signature, issuer and expiry. An expired token is `token_expired` so clients know
    /// a refresh will help; anything else is `unauthorized`.
    /// Expiry is checked against `now_ms` (the server's clock) rather than the system time.
    pub async fn verify(&self, token: &str, now_ms: i64) -> Result<AccessClaims, ApiError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| ApiError::unauthorized("malformed access token"))?;
        let kid = header
            .kid
            .ok_or_else(|| ApiError::unauthorized("access token has no kid"))?;
        let key = match self.decoding_key(&kid) {
            Some(key) => key,
            None => {
                // A key created by another node since we loaded ours.
                self.reload_public_keys().await?;
                self.decoding_key(&kid).ok_or_else(|| {
                    ApiError::unauthorized("access token signed by an unknown key")
                })?
            }
        };
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &key, &validation)
            .map_err(|_| ApiError::unauthorized("invalid access token"))?
            .claims;
        if claims.exp * 1000 <= now_ms {
            return Err(ApiError::new(
                ErrorCode::TokenExpired,
                "access token expired",
            ));
        }
        Ok(claims)
    }

    fn decoding_key(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.decoding.read().expect("lock").get(kid).cloned()
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::EncodingKey;

    use super::*;

    #[tokio::test]
    async fn tokens_are_exactly_what_jsonwebtoken_signs() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}/tokens.db", dir.path().display()))
            .await
            .unwrap();
        let keys = TokenKeys::load_or_create(db.clone(), "aethex-test".into(), 1_000)
            .await
            .unwrap();
        let claims = AccessClaims {
            sub: "user".into(),
            pid: "project".into(),
            sid: "session \"quoted\" é".into(),
            iat: 1_700_000_000,
            exp: 1_700_000_900,
            iss: "aethex-test".into(),
        };
        let token = keys.sign(&claims).unwrap();

        let (kid, private) = TokenKeys::newest_key(&db).await.unwrap().unwrap();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid);
        let reference =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&private)).unwrap();
        assert_eq!(token, reference);
        let verified = keys.verify(&token, 1_700_000_000_000).await.unwrap();
        assert_eq!(verified, claims);
    }
}
