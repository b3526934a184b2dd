//! SQL storage on SQLite (embedded default) or PostgreSQL, through sqlx's `Any` driver so every
//! service writes its queries once.
//!
//! Portable SQL rules for every service: `$1, $2, ...` placeholders numbered in order of first
//! appearance, only TEXT / BIGINT / DOUBLE PRECISION / blob columns (`BLOB` on SQLite, `BYTEA` on
//! Postgres: the two migration folders differ only there and in DDL details), booleans as BIGINT
//! 0/1, times as BIGINT unix milliseconds, ids as TEXT (UUID v7).
//!
//! SQLite allows one writer at a time; `Db::write` is a single-connection pool there so writers
//! queue in-process instead of failing with SQLITE_BUSY, while readers use the WAL in parallel.
//!
//! Concurrency rule: PostgreSQL runs write transactions in parallel (READ COMMITTED), so a
//! read-then-write must either be one statement (`SET v = v + $1`, `WHERE count < max`,
//! `ON CONFLICT`) or first lock what it reads with `Db::lock_rows` (taking locks in one order).

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::pool::PoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Any, AnyPool, Executor};

use crate::config::DatabaseConfig;

/// The smallest PostgreSQL pool from which the hot paths keep connections.
const KEPT_CONNECTIONS_MIN_POOL: u32 = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug)]
pub struct Db {
    /// Reads (and, on Postgres, writes too).
    pub read: AnyPool,
    /// Writes and read-modify-write transactions.
    pub write: AnyPool,
    pub backend: Backend,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Db {
    /// Whether the hot paths may keep PostgreSQL connections out of the pool between uses (the
    /// group-commit writers and the sign-in lookups keep up to 20): only when the pool is large
    /// enough that the other requests still have theirs (the default of 32 leaves 12). A smaller
    /// pool is shared by every request as it is.
    pub fn keeps_connections(&self) -> bool {
        self.backend == Backend::Postgres
            && self.write.options().get_max_connections() >= KEPT_CONNECTIONS_MIN_POOL
    }

    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Self::connect_with(url, &DatabaseConfig::default()).await
    }

    pub async fn connect_with(url: &str, pools: &DatabaseConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(
            pools.acquire_timeout_ms > 0,
            "database.acquire_timeout_ms must be positive"
        );
        sqlx::any::install_default_drivers();
        if url.starts_with("sqlite:") {
            Self::connect_sqlite(url, pools).await
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Self::connect_postgres(url, pools).await
        } else {
            anyhow::bail!("unsupported database URL {url:?}: expected sqlite://… or postgres://…")
        }
    }

    async fn connect_sqlite(url: &str, pools: &DatabaseConfig) -> anyhow::Result<Self> {
        let path = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let path = path.split('?').next().unwrap_or(path);
        if let Some(parent) = std::path::Path::new(path).parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)?;
            }
        }
        if path != ":memory:" {
            crate::data_files::secure_sqlite_file(std::path::Path::new(path))?;
        }
        // Create the file and switch it to WAL once; journal mode is persistent.
        let setup = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal);
        {
            use sqlx::ConnectOptions;
            let mut conn = setup.connect().await?;
            conn.execute("SELECT 1").await?;
        }
        let any_url = format!("sqlite://{path}");
        // WAL + synchronous=NORMAL: a commit survives a process kill (the WAL is written before
        // the commit returns); only an OS crash can lose the last transactions.
        let pragmas = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                       PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; \
                       PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16000;";
        let acquire_timeout = Duration::from_millis(pools.acquire_timeout_ms);
        let write = sqlite_pool(1, acquire_timeout, pragmas)
            .connect(&any_url)
            .await?;
        let readers = match pools.max_connections {
            0 => std::thread::available_parallelism()
                .map(|n| n.get() as u32 * 2)
                .unwrap_or(4)
                .max(4),
            n => n,
        };
        let read = sqlite_pool(readers, acquire_timeout, pragmas)
            .connect(&any_url)
            .await?;
        let db = Self {
            read,
            write,
            backend: Backend::Sqlite,
        };
        SQLITE_MIGRATIONS.run(&db.write).await?;
        Ok(db)
    }

    async fn connect_postgres(url: &str, pools: &DatabaseConfig) -> anyhow::Result<Self> {
        let pool = AnyPoolOptions::new()
            .max_connections(match pools.max_connections {
                0 => 32,
                n => n,
            })
            .acquire_timeout(Duration::from_millis(pools.acquire_timeout_ms))
            .connect(url)
            .await?;
        POSTGRES_MIGRATIONS.run(&pool).await?;
        Ok(Self {
            read: pool.clone(),
            write: pool,
            backend: Backend::Postgres,
        })
    }
}

fn sqlite_pool(max: u32, acquire_timeout: Duration, pragmas: &'static str) -> PoolOptions<Any> {
    AnyPoolOptions::new()
        .max_connections(max)
        .min_connections(1)
        .acquire_timeout(acquire_timeout)
        // An embedded connection cannot drop; the default ping on every acquire doubled the
        // round trips through sqlx's worker thread of a one-query request.
        .test_before_acquire(false)
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                conn.execute(pragmas).await?;
                Ok(())
            })
        })
}

impl Db {
    /// The row-lock clause to append to a `SELECT` inside a write transaction: on PostgreSQL
    /// ` FOR NO KEY UPDATE`, which makes a second read-modify-write of the same rows wait for the
    /// first to commit and then read its result (it does not block foreign-key checks of other
    /// rows pointing here); empty on SQLite, whose one writer connection already runs write
    /// transactions one at a time (and which has no `FOR UPDATE`).
    pub fn lock_rows(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR NO KEY UPDATE",
        }
    }
}

/// Reads a BIGINT 0/1 flag.
pub fn get_flag(row: &AnyRow, column: &str) -> Result<bool, sqlx::Error> {
    use sqlx::Row;
    Ok(row.try_get::<i64, _>(column)? != 0)
}

/// Whether `e` is a unique-constraint violation (both backends).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            matches!(db.kind(), sqlx::error::ErrorKind::UniqueViolation)
                || db.code().as_deref() == Some("23505")
                || db.message().contains("UNIQUE constraint failed")
        }
        _ => false,
    }
}

/// Whether `e` is PostgreSQL aborting a transaction because of a concurrent one: a
/// serialization failure (40001) or a deadlock (40P01). Retrying the request succeeds.
pub fn is_concurrency_abort(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("40001" | "40P01")),
        _ => false,
    }
}

/// A fresh time-ordered id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
