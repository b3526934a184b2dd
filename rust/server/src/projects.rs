//! Projects (games) and their keys. A client key is public (it ships inside the game) and only
//! scopes requests to a project; a server key is secret, stored hashed, and grants admin access.
//!
//! Lookups are cached in memory: no request pays a database round trip to resolve its key. A
//! miss falls through to SQL, so a project created on another node is found too.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::db::{new_id, Db};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub id: String,
    pub name: String,
}

/// What `project create` prints: the only time the server key is shown.
#[derive(Debug, Clone)]
pub struct CreatedProject {
    pub project: Project,
    pub client_key: String,
    pub server_key: String,
}

#[derive(Debug, Clone)]
pub struct Projects {
    db: Db,
    by_client_key: Arc<RwLock<HashMap<String, Arc<Project>>>>,
    by_server_key_hash: Arc<RwLock<HashMap<String, Arc<Project>>>>,
}

pub const DEFAULT_PROJECT: &str = "default";

fn random_key(prefix: &str) -> String {
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl Projects {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            by_client_key: Default::default(),
            by_server_key_hash: Default::default(),
        }
    }

    pub async fn create(&self, name: &str, now_ms: i64) -> anyhow::Result<CreatedProject> {
        let name = name.trim();
        anyhow::ensure!(
            !name.is_empty() && name.len() <= 64,
            "project name must be 1 to 64 characters"
        );
        let project = Project {
            id: new_id(),
            name: name.to_owned(),
        };
        let client_key = random_key("pk_");
        let server_key = random_key("sk_");
        sqlx::query(
            "INSERT INTO projects (id, name, client_key, server_key_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&project.id)
        .bind(&project.name)
        .bind(&client_key)
        .bind(hash_secret(&server_key))
        .bind(now_ms)
        .execute(&self.db.write)
        .await
        .map_err(|e| {
            if crate::db::is_unique_violation(&e) {
                anyhow::anyhow!("a project named {name:?} already exists")
            } else {
                e.into()
            }
        })?;
        Ok(CreatedProject {
            project,
            client_key,
            server_key,
        })
    }

    pub async fn by_name(&self, name: &str) -> sqlx::Result<Option<Project>> {
        let row = sqlx::query("SELECT id, name FROM projects WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.db.read)
            .await?;
        row.map(|r| {
            Ok(Project {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
            })
        })
        .transpose()
    }

    pub async fn by_client_key(&self, key: &str) -> sqlx::Result<Option<Arc<Project>>> {
        if let Some(p) = self.by_client_key.read().expect("lock").get(key) {
            return Ok(Some(p.clone()));
        }
        self.load("client_key", key, &self.by_client_key).await
    }

    pub async fn by_server_key(&self, key: &str) -> sqlx::Result<Option<Arc<Project>>> {
        let hash = hash_secret(key);
        if let Some(p) = self.by_server_key_hash.read().expect("lock").get(&hash) {
            return Ok(Some(p.clone()));
        }
        self.load("server_key_hash", &hash, &self.by_server_key_hash)
            .await
    }

    async fn load(
        &self,
        column: &'static str,
        value: &str,
        cache: &RwLock<HashMap<String, Arc<Project>>>,
    ) -> sqlx::Result<Option<Arc<Project>>> {
        let sql = format!("SELECT id, name FROM projects WHERE {column} = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(value)
            .fetch_optional(&self.db.read)
            .await?
        else {
            return Ok(None);
        };
        let project = Arc::new(Project {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
        });
        cache
            .write()
            .expect("lock")
            .insert(value.to_owned(), project.clone());
        Ok(Some(project))
    }
}
