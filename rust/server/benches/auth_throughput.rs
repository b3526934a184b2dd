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
//! Operations are a list (`OPERATIONS`): adding one is a `setup` (what each client prepares
//! before the clock starts) and a `request` (one call; returns what the client carries to its
//! next call, `None` on failure).
//!
//! `cargo bench -p aethex-server --bench auth_throughput` (env `AUTH_BENCH_SECS`, default 5;
//! `AUTH_BENCH_CLIENTS`, default `32,128`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    },
];

fn refresh_token(answer: Value) -> Option<String> {
    answer["refresh_token"].as_str().map(str::to_owned)
}

struct Target {
    base: String,
    echo: String,
    key: String,
    http: reqwest::Client,
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

/// Starts the server (and the baseline endpoint) on `runtime`; returns (auth base URL, baseline
/// URL, client key).
fn start_server(runtime: &tokio::runtime::Runtime, config: Config) -> (String, String, String) {
    runtime.block_on(async move {
        let server = Server::build(config).await.unwrap();
        let key = server.created_default_project.clone().unwrap().client_key;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/api/v1/auth", listener.local_addr().unwrap());
        tokio::spawn(server.serve(listener, std::future::pending()));
        (base, bare_axum().await, key)
    })
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
        if backend == "PostgreSQL" {
            let url = pg_url.clone().unwrap();
            let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
            let application_name = format!("aethex-bench-{}", std::process::id());
            let admin = load.block_on(async {
                let admin = sqlx::PgPool::connect(&url).await.unwrap();
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&admin)
                    .await
                    .unwrap();
                admin
            });
            let sep = if url.contains('?') { '&' } else { '?' };
            config.database_url = format!(
                "{url}{sep}application_name={application_name}&options=-c%20search_path%3D{schema}"
            );
            pg = Some((
                PgBackends {
                    admin,
                    application_name,
                },
                schema,
            ));
        }
        let (base, echo, key) = start_server(&server_rt, config);
        let max_clients = concurrencies.iter().copied().max().unwrap_or(1);
        let target = Arc::new(Target {
            base,
            echo,
            key,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(max_clients)
                .build()
                .unwrap(),
        });

        println!("\n{backend}, {secs} s per row");
        println!(
            "| operation | clients | req/s | x baseline | p50 ms | p99 ms | server CPU ms/req |{}",
            if pg.is_some() { " db CPU ms/req |" } else { "" }
        );
        println!(
            "|---|---|---|---|---|---|---|{}",
            if pg.is_some() { "---|" } else { "" }
        );
        let mut baselines = HashMap::new();
        let mut run = 0;
        for op in OPERATIONS {
            for &clients in &concurrencies {
                run += 1;
                let pg_backends = pg.as_ref().map(|(b, _)| b);
                let f = load.block_on(measure(op, &target, pg_backends, run, clients, secs));
                let baseline = *baselines.entry(clients).or_insert(f.rate);
                println!(
                    "| {} | {clients} | {:.0} | {:.3} | {:.2} | {:.2} | {:.3} |{}",
                    op.name,
                    f.rate,
                    f.rate / baseline,
                    f.p50_ms,
                    f.p99_ms,
                    f.server_ms,
                    f.db_ms.map(|ms| format!(" {ms:.3} |")).unwrap_or_default()
                );
            }
        }
        drop(server_rt);
        if let Some((backends, schema)) = pg {
            load.block_on(async {
                sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                    .execute(&backends.admin)
                    .await
                    .unwrap();
            });
        }
    }
}
