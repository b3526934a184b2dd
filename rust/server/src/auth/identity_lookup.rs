//! The reads of the hot sign-in paths (the account a sign-in identity leads to, the family of a
//! presented refresh token), on connections kept out of the pool.
//!
//! sqlx 0.8 pings every connection returned to its pool; on SQLite that is a second round trip
//! through the connection's worker thread after each one-query sign-in, as costly as the query
//! (measured: ~10% of the CPU of a returning device sign-in). On SQLite these reader
//! connections stay checked out, so a lookup is one round trip; on PostgreSQL the pool is used
//! as everywhere else.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};

use aethex_protocol::auth::User;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool};
use tokio::sync::{Mutex, MutexGuard};

use super::users;
use crate::db::{Backend, Db};
use crate::error::ApiResult;

/// SQLite reader connections kept for lookups (besides the read pool's own).
const LOOKUP_CONNECTIONS: usize = 4;

pub struct IdentityLookup {
    pool: AnyPool,
    own: Vec<Mutex<AnyConnection>>,
    next: AtomicUsize,
}

impl IdentityLookup {
    pub async fn new(db: &Db) -> anyhow::Result<Self> {
        let mut own = Vec::new();
        if db.backend == Backend::Sqlite {
            for _ in 0..LOOKUP_CONNECTIONS {
                // Detached: the pool opens a replacement and never pings or reclaims this one.
                own.push(Mutex::new(db.read.acquire().await?.detach()));
            }
        }
        Ok(Self {
            pool: db.read.clone(),
            own,
            next: AtomicUsize::new(0),
        })
    }

    /// `users::load_by_identity` on a free lookup connection.
    pub async fn user(
        &self,
        project_id: &str,
        provider: &str,
        subject: &str,
    ) -> ApiResult<Option<User>> {
        let mut conn = self.connection().await?;
        users::load_by_identity(&mut *conn, project_id, provider, subject).await
    }

    /// A free lookup connection (on PostgreSQL, one of the pool).
    pub async fn connection(&self) -> ApiResult<LookupConnection<'_>> {
        if self.own.is_empty() {
            return Ok(LookupConnection::Pooled(self.pool.acquire().await?));
        }
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let free = (0..self.own.len())
            .find_map(|i| self.own[(first + i) % self.own.len()].try_lock().ok());
        Ok(LookupConnection::Own(match free {
            Some(conn) => conn,
            None => self.own[first % self.own.len()].lock().await,
        }))
    }
}

pub enum LookupConnection<'a> {
    Own(MutexGuard<'a, AnyConnection>),
    Pooled(PoolConnection<Any>),
}

impl Deref for LookupConnection<'_> {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match self {
            LookupConnection::Own(conn) => conn,
            LookupConnection::Pooled(conn) => conn,
        }
    }
}

impl DerefMut for LookupConnection<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            LookupConnection::Own(conn) => conn,
            LookupConnection::Pooled(conn) => conn,
        }
    }
}
