//! Auth throughput over real loopback HTTP, per operation and concurrency (32 and 128 clients):
//! req/s, p50/p99 latency and server CPU per request, on SQLite and (when
//! `AETHEX_BENCH_DATABASE_URL` or `AETHEX_TEST_DATABASE_URL` is set) PostgreSQL, next to a bare
//! axum JSON endpoint measured in the same run with the same load generator: the ceiling of HTTP
//! stack + client on this machine. Client and server share the machine, so compare ratios to the
//! baseline rather than raw rates across runs.
//!
//! Server CPU: the server (and the baseline endpoint) runs on its own tokio runtime whose threads
//! are named `aethex-server`; CPU per request is the utime+stime those threads and sqlx's SQLite
//! worker threads (`sqlx-sqlite-worker-*`) spent during the run, from `/proc/self/task/*/stat`,
//! divided by the requests served. The load generator runs on other threads and is not counted.
//! On PostgreSQL, `db ms/req` is the CPU of the backend processes serving the server's
//! connections (found by `application_name` in `pg_stat_activity`); WAL writer, checkpointer and
//! other helpers' sessions are not counted.
//!
//! Raw SQL rows: before registration, returning sign-in, refresh and the small save write, the
//! same clients run the rows that operation writes straight through sqlx (no HTTP, no server),
//! one transaction of single-row statements per request, on a database of their own (a second
//! SQLite file; a second schema reached with the server's `application_name`). That is what the
//! database itself does with those statements at that concurrency; `x raw SQL` is the server
//! operation's rate over it. Their `server CPU` is only sqlx's SQLite worker threads, which on
//! SQLite is the database's own CPU (it runs in-process); on PostgreSQL it is in `db CPU`.
//!
//! Operations are a list (`OPERATIONS`): adding one is a `setup` (what each client prepares
//! before the clock starts) and a `request` (one call; returns what the client carries to its
//! next call, `None` on failure).
//!
//! `cargo bench -p aethex-server --bench auth_throughput` (env `AUTH_BENCH_SECS`, default 5;
//! `AUTH_BENCH_CLIENTS`, default `32,128`; `AUTH_BENCH_OPS`, comma-separated parts of operation
//! names to run, default all, the baseline always runs).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aethex_server::db::Db;
use aethex_server::{Config, Server};
use axum::routing::post;
use axum::{Json, Router};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

type Step = Pin<Box<dyn Future<Output = Option<String>> + Send>>;

/// One call of an operation by client `client` (its `i`th), in run number `run` (unique per
/// operation and concurrency, so ids made from it never collide across runs).
struct Call {
    target: Arc<Target>,
    run: usize,
    client: usize,
    i: u64,
    /// What the previous call (or `setup`) returned.
    carry: String,
}

struct Operation {
    name: &'static str,
    setup: fn(Call) -> Step,
    request: fn(Call) -> Step,
    /// The same rows written straight through sqlx (see `RAW_*`), measured just before this
    /// operation at the same concurrency.
    raw: Option<&'static Operation>,
}

const OPERATIONS: &[Operation] = &[
    Operation {
        name: "bare axum JSON (baseline)",
        setup: |_| Box::pin(async { Some(String::new()) }),
        request: |c| {
            Box::pin(async move {
                let body = json!({"device_id": format!("bench-{}-{}-{}", c.run, c.client, c.i)});
                c.target
                    .post_to(&c.target.echo, &body)
                    .await
                    .map(|_| c.carry)
            })
        },
        raw: None,
    },
    Operation {
        name: "new device registration",
        setup: |_| Box::pin(async { Some(String::new()) }),
        request: |c| {
            Box::pin(async move {
                let device = format!("reg-{}-{}-{}", c.run, c.client, c.i);
                c.target.device(&device).await.map(|_| c.carry)
            })
        },
        raw: Some(&RAW_REGISTRATION),
    },
    Operation {
        name: "returning device sign-in",
        setup: |c| {
            Box::pin(async move {
                let device = format!("returning-{}-{}", c.run, c.client);
                c.target.device(&device).await.map(|_| device)
            })
        },
        request: |c| Box::pin(async move { c.target.device(&c.carry).await.map(|_| c.carry) }),
        raw: Some(&RAW_SIGN_IN),
    },
    Operation {
        name: "token refresh (chained)",
        setup: |c| {
            Box::pin(async move {
                let device = format!("refreshing-{}-{}", c.run, c.client);
                refresh_token(c.target.device(&device).await?)
            })
        },
        request: |c| {
            Box::pin(async move {
                let body = json!({"refresh_token": c.carry});
                refresh_token(c.target.post("/refresh", &body).await?)
            })
        },
        raw: Some(&RAW_REFRESH),
    },
    Operation {
        name: "email+password login (argon2id)",
        setup: |c| {
            Box::pin(async move {
                let email = format!("bench-{}-{}@example.com", c.run, c.client);
                let username = format!("bench{}x{}", c.run, c.client);
                let body =
                    json!({"email": email, "password": "bench password", "username": username});
                c.target.post("/register", &body).await.map(|_| email)
            })
        },
        request: |c| {
            Box::pin(async move {
                let body = json!({"email": c.carry, "password": "bench password"});
                c.target.post("/login", &body).await.map(|_| c.carry)
            })
        },
        raw: None,
    },
    Operation {
        // The write of `save_throughput`'s `own slot` scenario; the carry is `token,version`.
        name: "small save write (own slot)",
        setup: |c| {
            Box::pin(async move {
                let device = format!("saving-{}-{}", c.run, c.client);
                let answer = c.target.device(&device).await?;
                Some(format!("{},0", answer["access_token"].as_str()?))
            })
        },
        request: |c| {
            Box::pin(async move {
                let (token, version) = c.carry.split_once(',')?;
                let version: i64 = version.parse().ok()?;
                let next = c.target.save(token, version, c.i).await?;
                Some(format!("{token},{next}"))
            })
        },
        raw: Some(&RAW_SAVE_VERSION),
    },
];

/// A new device account and its first session: the rows a registration writes, one transaction
/// per request.
const RAW_REGISTRATION: Operation = Operation {
    name: "raw SQL: users + identities + sessions + refresh_tokens INSERT",
    setup: |_| Box::pin(async { Some(String::new()) }),
    request: |c| {
        Box::pin(async move {
            let raw = &c.target.raw;
            let user = raw.new_id();
            let name = format!("raw{}x{}x{}", c.run, c.client, c.i);
            let now = now_ms();
            let mut tx = raw.db.write.begin().await.ok()?;
            sqlx::query(
                "INSERT INTO users (id, project_id, username, username_lower, username_skeleton, \
                 preferences, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, '{}', $6, $7)",
            )
            .bind(&user)
            .bind(&raw.project)
            .bind(&name)
            .bind(&name)
            .bind(&name)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await
            .ok()?;
            sqlx::query(
                "INSERT INTO identities (project_id, provider, subject, user_id, created_at) \
                 VALUES ($1, 'device', $2, $3, $4)",
            )
            .bind(&raw.project)
            .bind(&name)
            .bind(&user)
            .bind(now)
            .execute(&mut *tx)
            .await
            .ok()?;
            raw.insert_session(&mut tx, &user, now).await?;
            tx.commit().await.ok()?;
            Some(c.carry)
        })
    },
    raw: None,
};

/// A returning sign-in's rows: a session and its first refresh token.
const RAW_SIGN_IN: Operation = Operation {
    name: "raw SQL: sessions + refresh_tokens INSERT",
    setup: |c| Box::pin(async move { c.target.raw.new_user(c.run, c.client).await }),
    request: |c| {
        Box::pin(async move {
            let raw = &c.target.raw;
            let mut tx = raw.db.write.begin().await.ok()?;
            raw.insert_session(&mut tx, &c.carry, now_ms()).await?;
            tx.commit().await.ok()?;
            Some(c.carry)
        })
    },
    raw: None,
};

/// A rotation's rows: spend the token (conditional UPDATE ... RETURNING), insert the next one.
/// The carry is `session id,token hash`.
const RAW_REFRESH: Operation = Operation {
    name: "raw SQL: refresh_tokens UPDATE RETURNING + INSERT",
    setup: |c| {
        Box::pin(async move {
            let raw = &c.target.raw;
            let user = raw.new_user(c.run, c.client).await?;
            let mut tx = raw.db.write.begin().await.ok()?;
            let (session, hash) = raw.insert_session(&mut tx, &user, now_ms()).await?;
            tx.commit().await.ok()?;
            Some(format!("{session},{hash}"))
        })
    },
    request: |c| {
        Box::pin(async move {
            let raw = &c.target.raw;
            let (session, spent) = c.carry.split_once(',')?;
            let next = raw.token_hash();
            let now = now_ms();
            let mut tx = raw.db.write.begin().await.ok()?;
            sqlx::query(
                "UPDATE refresh_tokens SET used_at = $1 WHERE used_at IS NULL AND token_hash = $2 \
                 RETURNING token_hash",
            )
            .bind(now)
            .bind(spent)
            .fetch_one(&mut *tx)
            .await
            .ok()?;
            raw.insert_token(&mut tx, &next, session, now).await?;
            tx.commit().await.ok()?;
            Some(format!("{session},{next}"))
        })
    },
    raw: None,
};

/// A save version's statements: lock the usage row (upsert), read the slot's newest version,
/// insert the next one, write the usage back. The carry is `user id,version`.
const RAW_SAVE_VERSION: Operation = Operation {
    name: "raw SQL: save_usage upsert + save_versions SELECT, INSERT + save_usage UPDATE",
    setup: |c| {
        Box::pin(async move {
            let user = c.target.raw.new_user(c.run, c.client).await?;
            Some(format!("{user},0"))
        })
    },
    request: |c| {
        Box::pin(async move {
            let raw = &c.target.raw;
            let (user, version) = c.carry.split_once(',')?;
            let version: i64 = version.parse().ok()?;
            let now = now_ms();
            let mut tx = raw.db.write.begin().await.ok()?;
            let used: i64 = sqlx::query_scalar(
                "INSERT INTO save_usage (user_id, used_bytes) VALUES ($1, 0) ON CONFLICT (user_id) \
                 DO UPDATE SET used_bytes = save_usage.used_bytes RETURNING used_bytes",
            )
            .bind(user)
            .fetch_one(&mut *tx)
            .await
            .ok()?;
            let latest: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM save_versions WHERE user_id = $1 AND slot = 'main' \
                 ORDER BY version DESC LIMIT 1",
            )
            .bind(user)
            .fetch_optional(&mut *tx)
            .await
            .ok()?;
            if latest.unwrap_or(0) != version {
                return None;
            }
            let blob_key = format!("saves/{user}/{}", raw.new_id());
            sqlx::query(
                "INSERT INTO save_versions (user_id, slot, version, kind, size, checksum, \
                 metadata, blob_key, restored_from, created_at) \
                 VALUES ($1, 'main', $2, 'write', 200, $3, '{}', $4, NULL, $5)",
            )
            .bind(user)
            .bind(version + 1)
            .bind(raw.token_hash())
            .bind(&blob_key)
            .bind(now)
            .execute(&mut *tx)
            .await
            .ok()?;
            sqlx::query("UPDATE save_usage SET used_bytes = $1 WHERE user_id = $2")
                .bind(used + 200)
                .bind(user)
                .execute(&mut *tx)
                .await
                .ok()?;
            tx.commit().await.ok()?;
            Some(format!("{user},{}", version + 1))
        })
    },
    raw: None,
};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The database of the raw SQL rows: a database of its own (its own SQLite file, or its own
/// PostgreSQL schema reached with the server's `application_name`, so its backends' CPU counts
/// as `db CPU`), migrated like the server's, with one project.
struct RawSql {
    db: Db,
    project: String,
}

impl RawSql {
    async fn open(url: &str) -> Self {
        let db = Db::connect(url).await.expect("open the raw SQL database");
        let project = aethex_server::db::new_id();
        sqlx::query(
            "INSERT INTO projects (id, name, client_key, server_key_hash, created_at) \
             VALUES ($1, $1, $1, $1, 0)",
        )
        .bind(&project)
        .execute(&db.write)
        .await
        .expect("raw SQL project");
        Self { db, project }
    }

    fn new_id(&self) -> String {
        aethex_server::db::new_id()
    }

    /// 64 hex digits, like a SHA-256 token hash.
    fn token_hash(&self) -> String {
        format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        )
    }

    async fn new_user(&self, run: usize, client: usize) -> Option<String> {
        let user = self.new_id();
        let name = format!("rawuser{run}x{client}");
        sqlx::query(
            "INSERT INTO users (id, project_id, username, username_lower, username_skeleton, \
             preferences, created_at, updated_at) VALUES ($1, $2, $3, $3, $3, '{}', 0, 0)",
        )
        .bind(&user)
        .bind(&self.project)
        .bind(&name)
        .execute(&self.db.write)
        .await
        .ok()?;
        Some(user)
    }

    /// A session of `user` and its first token; returns (session id, token hash).
    async fn insert_session(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        user: &str,
        now: i64,
    ) -> Option<(String, String)> {
        let session = self.new_id();
        sqlx::query(
            "INSERT INTO sessions (id, project_id, user_id, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&session)
        .bind(&self.project)
        .bind(user)
        .bind(now)
        .execute(&mut **tx)
        .await
        .ok()?;
        let hash = self.token_hash();
        self.insert_token(tx, &hash, &session, now).await?;
        Some((session, hash))
    }

    async fn insert_token(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        hash: &str,
        session: &str,
        now: i64,
    ) -> Option<()> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(hash)
        .bind(session)
        .bind(now)
        .bind(now + 86_400_000)
        .execute(&mut **tx)
        .await
        .ok()?;
        Some(())
    }
}

fn refresh_token(answer: Value) -> Option<String> {
    answer["refresh_token"].as_str().map(str::to_owned)
}

struct Target {
    base: String,
    /// `POST` URL of the caller's own saves.
    saves: String,
    echo: String,
    key: String,
    http: reqwest::Client,
    raw: RawSql,
}

impl Target {
    async fn post_to(&self, url: &str, body: &Value) -> Option<Value> {
        let resp = self
            .http
            .post(url)
            .header("X-AeThex-Key", &self.key)
            .json(body)
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json().await.ok()
    }

    async fn post(&self, path: &str, body: &Value) -> Option<Value> {
        self.post_to(&format!("{}{path}", self.base), body).await
    }

    /// Writes ~200 bytes of game state to slot `main`, based on `version`; returns the new one.
    async fn save(&self, token: &str, version: i64, seq: u64) -> Option<i64> {
        let data = json!({
            "level": seq % 60, "gold": seq * 7, "xp": seq * 31,
            "position": {"x": 12.5, "y": -3.25, "z": 88.0},
            "inventory": ["sword", "shield", "potion", "potion", "map"],
            "quests": {"intro": "done", "forest": "active"},
            "settings": {"music": 0.8, "sfx": 0.6},
        });
        let resp = self
            .http
            .post(&self.saves)
            .header("X-AeThex-Key", &self.key)
            .bearer_auth(token)
            .json(&json!({"slot": "main", "data": data, "base_version": version}))
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.json::<Value>().await.ok()?["version"].as_i64()
    }

    async fn device(&self, device_id: &str) -> Option<Value> {
        self.post("/device", &json!({ "device_id": device_id }))
            .await
    }
}

struct Figures {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    server_ms: f64,
    db_ms: Option<f64>,
}

/// CPU seconds of this process's threads whose name starts with one of `prefixes`.
fn thread_cpu(prefixes: &[&str]) -> f64 {
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some((name, t)) = stat_name_ticks(&stat) {
            if prefixes.iter().any(|p| name.starts_with(p)) {
                ticks += t;
            }
        }
    }
    ticks as f64 / clock_ticks()
}

/// CPU ticks of processes `pids`, by pid.
fn process_ticks(pids: &[i32]) -> HashMap<i32, u64> {
    pids.iter()
        .filter_map(|&pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            stat_name_ticks(&stat).map(|(_, t)| (pid, t))
        })
        .collect()
}

/// (comm, utime + stime) of a `/proc/.../stat` line.
fn stat_name_ticks(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
    // Fields after the name start at `state` (field 3); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((&stat[open + 1..close], utime + stime))
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

const SERVER_THREADS: &[&str] = &["aethex-server", "sqlx-sqlite-wor"];

/// Runs `op` with `clients` concurrent clients for `secs`.
async fn measure(
    op: &Operation,
    target: &Arc<Target>,
    pg: Option<&PgBackends>,
    run: usize,
    clients: usize,
    secs: u64,
) -> Figures {
    let mut carries = Vec::with_capacity(clients);
    for client in 0..clients {
        let call = Call {
            target: target.clone(),
            run,
            client,
            i: 0,
            carry: String::new(),
        };
        carries.push((op.setup)(call).await.expect("setup call failed"));
    }
    let db_before = match pg {
        Some(pg) => Some(process_ticks(&pg.pids().await)),
        None => None,
    };
    let failed = Arc::new(AtomicU64::new(0));
    let server_before = thread_cpu(SERVER_THREADS);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(secs);
    let tasks: Vec<_> = carries
        .into_iter()
        .enumerate()
        .map(|(client, mut carry)| {
            let (target, failed, request) = (target.clone(), failed.clone(), op.request);
            tokio::spawn(async move {
                let mut latencies = Histogram::<u64>::new(3).unwrap();
                let mut i = 0;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let call = Call {
                        target: target.clone(),
                        run,
                        client,
                        i,
                        carry: std::mem::take(&mut carry),
                    };
                    match request(call).await {
                        Some(next) => {
                            carry = next;
                            latencies.record(sent.elapsed().as_micros() as u64).unwrap();
                        }
                        None => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Histogram::<u64>::new(3).unwrap();
    for task in tasks {
        latencies.add(task.await.unwrap()).unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu = thread_cpu(SERVER_THREADS) - server_before;
    // Backends the pool opened during the run count from their start.
    let db_cpu = match (pg, db_before) {
        (Some(pg), Some(before)) => {
            let after = process_ticks(&pg.pids().await);
            let ticks: u64 = after
                .iter()
                .map(|(pid, t)| t - before.get(pid).copied().unwrap_or(0))
                .sum();
            Some(ticks as f64 / clock_ticks())
        }
        _ => None,
    };
    let failed = failed.load(Ordering::Relaxed);
    assert_eq!(failed, 0, "{}: {failed} requests failed", op.name);
    let served = latencies.len() as f64;
    Figures {
        rate: served / elapsed,
        p50_ms: latencies.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: latencies.value_at_quantile(0.99) as f64 / 1000.0,
        server_ms: server_cpu * 1000.0 / served,
        db_ms: db_cpu.map(|cpu| cpu * 1000.0 / served),
    }
}

/// The PostgreSQL backends serving the bench server, found by the `application_name` it
/// connects with.
struct PgBackends {
    admin: sqlx::PgPool,
    application_name: String,
}

impl PgBackends {
    async fn pids(&self) -> Vec<i32> {
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1")
            .bind(&self.application_name)
            .fetch_all(&self.admin)
            .await
            .unwrap()
    }
}

/// A bare axum endpoint answering a body shaped like a sign-in answer: the baseline.
async fn bare_axum() -> String {
    let app = Router::new().route(
        "/echo",
        post(|Json(v): Json<Value>| async move {
            Json(json!({"user": {"id": "0190", "username": "player"}, "echo": v, "access_token": "x".repeat(300)}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/echo")
}

/// Starts the server (and the baseline endpoint) on `runtime`; returns (server origin, baseline
/// URL, client key).
fn start_server(runtime: &tokio::runtime::Runtime, config: Config) -> (String, String, String) {
    runtime.block_on(async move {
        let server = Server::build(config).await.unwrap();
        let key = server.created_default_project.clone().unwrap().client_key;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(server.serve(listener, std::future::pending()));
        (origin, bare_axum().await, key)
    })
}

fn print_row(name: &str, clients: usize, f: &Figures, baseline: f64, raw: Option<f64>) {
    println!(
        "| {name} | {clients} | {:.0} | {:.3} | {} | {:.2} | {:.2} | {:.3} |{}",
        f.rate,
        f.rate / baseline,
        raw.map_or("".into(), |raw| format!("{:.2}", f.rate / raw)),
        f.p50_ms,
        f.p99_ms,
        f.server_ms,
        f.db_ms.map(|ms| format!(" {ms:.3} |")).unwrap_or_default()
    );
}

fn main() {
    let secs: u64 = std::env::var("AUTH_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let concurrencies: Vec<usize> = std::env::var("AUTH_BENCH_CLIENTS")
        .unwrap_or_else(|_| "32,128".into())
        .split(',')
        .map(|n| n.trim().parse().expect("AUTH_BENCH_CLIENTS: numbers"))
        .collect();
    let only: Vec<String> = std::env::var("AUTH_BENCH_OPS")
        .map(|ops| ops.split(',').map(|op| op.trim().to_owned()).collect())
        .unwrap_or_default();
    let pg_url = ["AETHEX_BENCH_DATABASE_URL", "AETHEX_TEST_DATABASE_URL"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|u| !u.is_empty()));
    let load = tokio::runtime::Builder::new_multi_thread()
        .thread_name("load")
        .enable_all()
        .build()
        .unwrap();

    let mut backends = vec!["SQLite"];
    if pg_url.is_some() {
        backends.push("PostgreSQL");
    }
    for backend in backends {
        // A runtime per backend: dropping it stops that server.
        let server_rt = tokio::runtime::Builder::new_multi_thread()
            .thread_name("aethex-server")
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        config.rate_limit.enabled = false;
        let mut pg = None;
        let mut raw_url = format!("sqlite://{}/raw-sql.sqlite", dir.path().display());
        if backend == "PostgreSQL" {
            let url = pg_url.clone().unwrap();
            let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
            let application_name = format!("aethex-bench-{}", std::process::id());
            let admin = load.block_on(async {
                let admin = sqlx::PgPool::connect(&url).await.unwrap();
                for schema in [schema.clone(), format!("{schema}_raw")] {
                    sqlx::query(&format!("CREATE SCHEMA {schema}"))
                        .execute(&admin)
                        .await
                        .unwrap();
                }
                admin
            });
            let sep = if url.contains('?') { '&' } else { '?' };
            let in_schema = |schema: &str| {
                format!(
                    "{url}{sep}application_name={application_name}&options=-c%20search_path%3D{schema}"
                )
            };
            config.database_url = in_schema(&schema);
            raw_url = in_schema(&format!("{schema}_raw"));
            pg = Some((
                PgBackends {
                    admin,
                    application_name,
                },
                schema,
            ));
        }
        let (origin, echo, key) = start_server(&server_rt, config);
        let max_clients = concurrencies.iter().copied().max().unwrap_or(1);
        let target = Arc::new(Target {
            base: format!("{origin}/api/v1/auth"),
            saves: format!("{origin}/api/v1/saves/me"),
            echo,
            key,
            raw: load.block_on(RawSql::open(&raw_url)),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(max_clients)
                .build()
                .unwrap(),
        });

        println!("\n{backend}, {secs} s per row");
        println!(
            "| operation | clients | req/s | x baseline | x raw SQL | p50 ms | p99 ms | server CPU ms/req |{}",
            if pg.is_some() { " db CPU ms/req |" } else { "" }
        );
        println!(
            "|---|---|---|---|---|---|---|---|{}",
            if pg.is_some() { "---|" } else { "" }
        );
        let mut baselines = HashMap::new();
        let mut run = 0;
        let pg_backends = pg.as_ref().map(|(b, _)| b);
        // The baseline always runs: every row is a ratio to it.
        let chosen = OPERATIONS.iter().enumerate().filter(|(index, op)| {
            *index == 0 || only.is_empty() || only.iter().any(|o| op.name.contains(o.as_str()))
        });
        for (_, op) in chosen {
            for &clients in &concurrencies {
                let mut raw_rate = None;
                if let Some(raw) = op.raw {
                    run += 1;
                    let f = load.block_on(measure(raw, &target, pg_backends, run, clients, secs));
                    print_row(raw.name, clients, &f, baselines[&clients], None);
                    raw_rate = Some(f.rate);
                }
                run += 1;
                let f = load.block_on(measure(op, &target, pg_backends, run, clients, secs));
                let baseline = *baselines.entry(clients).or_insert(f.rate);
                print_row(op.name, clients, &f, baseline, raw_rate);
            }
        }
        drop(server_rt);
        if let Some((backends, schema)) = pg {
            load.block_on(async {
                for schema in [schema.clone(), format!("{schema}_raw")] {
                    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                        .execute(&backends.admin)
                        .await
                        .unwrap();
                }
            });
        }
    }
}
