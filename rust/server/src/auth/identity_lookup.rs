//! The reads of the hot sign-in paths (the account a sign-in identity leads to, the family of a
//! presented refresh token), on connections kept out of the pool's hand-over.
//!
//! sqlx 0.8 pings every connection returned to its pool (and, on PostgreSQL, again when it is
//! taken unless `test_before_acquire` is off): on SQLite a second round trip through the
//! connection's worker thread after each one-query sign-in, as costly as the query (measured:
//! ~10% of the CPU of a returning device sign-in); on PostgreSQL two more round trips the backend
//! answers for each one-query lookup. So the lookups keep their connections: on SQLite detached
//! ones (the read pool is small and opens replacements); on PostgreSQL some of the pool's, held,
//! so the server's connection count stays the configured one. A lookup that fails other than with
//! a database error drops its connection (it may have died with a database restart) and is tried
//! once more on a fresh one, which is the check the acquire ping used to make.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};

use aethex_protocol::auth::User;
use aethex_protocol::ErrorCode;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool};
use tokio::sync::{Mutex, MutexGuard};

use super::{sessions, users};
use crate::db::{Backend, Db};
use crate::error::ApiResult;

/// Connections kept for lookups: on SQLite besides the read pool's own, on PostgreSQL out of it
/// (one, the least that works, from a pool too small to keep more: see `Db::keeps_connections`).
fn lookup_connections(db: &Db) -> usize {
    match db.backend {
        Backend::Sqlite => 4,
        Backend::Postgres if db.keeps_connections() => 8,
        Backend::Postgres => 1,
    }
}

enum Kept {
    Detached(AnyConnection),
    Held(PoolConnection<Any>),
}

pub struct IdentityLookup {
    pool: AnyPool,
    backend: Backend,
    own: Vec<Mutex<Option<Kept>>>,
    next: AtomicUsize,
}

impl IdentityLookup {
    pub async fn new(db: &Db) -> anyhow::Result<Self> {
        Ok(Self {
            pool: db.read.clone(),
            backend: db.backend,
            own: (0..lookup_connections(db))
                .map(|_| Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
        })
    }

    /// `users::load_by_identity` on a lookup connection.
    pub async fn user(
        &self,
        project_id: &str,
        provider: &str,
        subject: &str,
    ) -> ApiResult<Option<User>> {
        let mut conn = self.connection().await?;
        match users::load_by_identity(&mut *conn, project_id, provider, subject).await {
            Err(e) if e.code == ErrorCode::Internal => {
                conn.discard();
                let mut conn = self.connection().await?;
                users::load_by_identity(&mut *conn, project_id, provider, subject).await
            }
            answer => answer,
        }
    }

    /// `sessions::presented_token` on a lookup connection.
    pub async fn presented_token(
        &self,
        token_hash: &str,
    ) -> ApiResult<Option<sessions::PresentedToken>> {
        let mut conn = self.connection().await?;
        match sessions::presented_token(&mut conn, token_hash).await {
            Err(e) if e.code == ErrorCode::Internal => {
                conn.discard();
                let mut conn = self.connection().await?;
                sessions::presented_token(&mut conn, token_hash).await
            }
            answer => answer,
        }
    }

    /// A free lookup connection, opened if its slot has none.
    async fn connection(&self) -> ApiResult<LookupConnection<'_>> {
        let first = self.next.fetch_add(1, Ordering::Relaxed);
        let free = (0..self.own.len())
            .find_map(|i| self.own[(first + i) % self.own.len()].try_lock().ok());
        let mut slot = match free {
            Some(slot) => slot,
            None => self.own[first % self.own.len()].lock().await,
        };
        if slot.is_none() {
            let conn = self.pool.acquire().await?;
            *slot = Some(match self.backend {
                // Detached: the pool opens a replacement and never pings or reclaims this one.
                Backend::Sqlite => Kept::Detached(conn.detach()),
                Backend::Postgres => Kept::Held(conn),
            });
        }
        Ok(LookupConnection(slot))
    }
}

/// A lookup connection, locked for one lookup; never empty.
struct LookupConnection<'a>(MutexGuard<'a, Option<Kept>>);

impl LookupConnection<'_> {
    /// Drops the connection (a held one goes back to the pool, whose ping closes it if broken).
    fn discard(&mut self) {
        self.0.take();
    }
}

impl Deref for LookupConnection<'_> {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        match self.0.as_ref() {
            Some(Kept::Detached(conn)) => conn,
            Some(Kept::Held(conn)) => conn,
            None => unreachable!("a lookup connection is opened before it is handed out"),
        }
    }
}

impl DerefMut for LookupConnection<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self.0.as_mut() {
            Some(Kept::Detached(conn)) => conn,
            Some(Kept::Held(conn)) => conn,
            None => unreachable!("a lookup connection is opened before it is handed out"),
        }
    }
}
