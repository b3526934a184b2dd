//! Small save writes over real loopback HTTP: each client writes a ~200-byte JSON save,
//! conditional on the last version it got back (`base_version`), as fast as it is answered.
//!
//! - `own slot`: every client is its own player writing its own slot.
//! - `4 players`: the clients share 4 players, each client its own slot (writes of one player
//!   contend for that player's usage row / quota).
//!
//! At concurrency 32 and 128, on SQLite and (when `AETHEX_BENCH_DATABASE_URL` or
//! `AETHEX_TEST_DATABASE_URL` is set) PostgreSQL, beside a bare axum endpoint measured in the same
//! run with the same load generator (parses the same body, answers a same-shaped JSON): the
//! ceiling of HTTP stack + client on this machine. The servers are child processes, so their CPU
//! time is their own: `server CPU/req` is the `aethex-server` process (all threads, user + system;
//! SQLite runs inside it), `db CPU/req` on PostgreSQL the database backends serving its
//! connections (found by application name; the shared WAL writer and checkpointer are not
//! counted). The load generator shares the cores. `auth_throughput` runs the same write in-process
//! beside the raw SQL statements it needs.
//!
//! `cargo bench -p aethex-server --bench save_throughput` (env `SAVE_BENCH_SECS`, default 5;
//! `-- --quick` for 1 s runs).

#[path = "realtime_common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};
use hdrhistogram::Histogram;
use serde_json::{json, Value};

const CONCURRENCY: [usize; 2] = [32, 128];
const SHARED_PLAYERS: usize = 4;
const APP_NAME: &str = "aethex_save_bench";

fn main() {
    if common::is_baseline_child() {
        run_baseline_server();
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench());
}

/// The bare baseline: parses the write body and answers a SaveSlotInfo-shaped JSON.
fn run_baseline_server() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let app = Router::new().route(
            "/api/v1/saves/me",
            post(|Json(v): Json<Value>| async move {
                let version = v["base_version"].as_i64().unwrap_or(0) + 1;
                Json(json!({
                    "slot": v["slot"], "version": version, "size": 200,
                    "updated_at": 1_700_000_000_000i64,
                    "checksum": "0".repeat(64), "metadata": {},
                }))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        println!("LISTENING {}", listener.local_addr().unwrap());
        axum::serve(listener, app).await.unwrap();
    });
}

#[derive(Clone)]
struct Writer {
    token: String,
    slot: String,
}

struct Figures {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The server process.
    server_ms: f64,
    /// Its PostgreSQL backends; `None` on SQLite (in the server process) and for the baseline.
    db_ms: Option<f64>,
    failed: u64,
}

/// CPU seconds of the PostgreSQL backends of the server under test, by pid.
async fn pg_backend_cpu(admin: &mut Option<sqlx::PgConnection>) -> HashMap<i32, f64> {
    let Some(conn) = admin else {
        return HashMap::new();
    };
    let pids: Vec<(i32,)> =
        sqlx::query_as("SELECT pid FROM pg_stat_activity WHERE application_name = $1")
            .bind(APP_NAME)
            .fetch_all(&mut *conn)
            .await
            .expect("list the server's backends");
    pids.into_iter()
        .filter_map(|(pid,)| {
            let path = format!("/proc/{pid}/stat");
            std::path::Path::new(&path)
                .exists()
                .then(|| (pid, common::proc_cpu_secs(&path)))
        })
        .collect()
}

/// `clients` loops, client `c` writing as `writers[c]`, each write based on the version its
/// previous one got; 1 s warm-up, then `secs` measured.
async fn run(
    http: &reqwest::Client,
    addr: SocketAddr,
    key: &str,
    writers: &[Writer],
    secs: f64,
    server_pid: u32,
    admin: &mut Option<sqlx::PgConnection>,
) -> Figures {
    let url = Arc::new(format!("http://{addr}/api/v1/saves/me"));
    let warmup = Instant::now() + Duration::from_secs(1);
    let deadline = warmup + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = writers
        .iter()
        .enumerate()
        .map(|(c, w)| {
            let (http, url, key, w) = (http.clone(), url.clone(), key.to_owned(), w.clone());
            tokio::spawn(async move {
                let mut histogram = Histogram::<u64>::new(3).unwrap();
                let (mut ok, mut failed) = (0u64, 0u64);
                let mut version = 0i64;
                let mut seq = 0u64;
                loop {
                    let start = Instant::now();
                    if start >= deadline {
                        break;
                    }
                    // ~200 bytes of typical game state.
                    let data = json!({
                        "level": seq % 60, "gold": seq * 7 + c as u64, "xp": seq * 31,
                        "position": {"x": 12.5, "y": -3.25, "z": 88.0},
                        "inventory": ["sword", "shield", "potion", "potion", "map"],
                        "quests": {"intro": "done", "forest": "active"},
                        "settings": {"music": 0.8, "sfx": 0.6},
                    });
                    let sent = http
                        .post(url.as_str())
                        .header("X-AeThex-Key", &key)
                        .bearer_auth(&w.token)
                        .json(&json!({"slot": w.slot, "data": data, "base_version": version}))
                        .send()
                        .await;
                    let answer = match sent {
                        Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
                        _ => None,
                    };
                    let measured = start >= warmup;
                    match answer.and_then(|a| a["version"].as_i64()) {
                        Some(v) => {
                            version = v;
                            if measured {
                                ok += 1;
                                histogram
                                    .record(start.elapsed().as_micros() as u64)
                                    .unwrap();
                            }
                        }
                        None if measured => failed += 1,
                        None => {}
                    }
                    seq += 1;
                }
                (ok, failed, histogram)
            })
        })
        .collect();
    common::until(warmup).await;
    let server_stat = format!("/proc/{server_pid}/stat");
    let server_cpu = common::proc_cpu_secs(&server_stat);
    let db_cpu = pg_backend_cpu(admin).await;
    let started = Instant::now();
    let mut histogram = Histogram::<u64>::new(3).unwrap();
    let (mut ok, mut failed) = (0, 0);
    for task in tasks {
        let (o, f, h) = task.await.unwrap();
        ok += o;
        failed += f;
        histogram.add(h).unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let server_cpu = common::proc_cpu_secs(&server_stat) - server_cpu;
    let db_cpu = if admin.is_some() {
        let after = pg_backend_cpu(admin).await;
        Some(
            after
                .into_iter()
                .map(|(pid, now)| now - db_cpu.get(&pid).copied().unwrap_or(0.0))
                .sum::<f64>(),
        )
    } else {
        None
    };
    let served = ok.max(1) as f64;
    Figures {
        rate: ok as f64 / elapsed,
        p50_ms: histogram.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: histogram.value_at_quantile(0.99) as f64 / 1000.0,
        server_ms: server_cpu * 1000.0 / served,
        db_ms: db_cpu.map(|cpu| cpu * 1000.0 / served),
        failed,
    }
}

async fn sign_in(http: &reqwest::Client, addr: SocketAddr, key: &str, device: usize) -> String {
    let answer: Value = http
        .post(format!("http://{addr}/api/v1/auth/device"))
        .header("X-AeThex-Key", key)
        .json(&json!({"device_id": format!("save-bench-device-{device}")}))
        .send()
        .await
        .expect("sign in")
        .json()
        .await
        .expect("sign-in answer");
    answer["access_token"]
        .as_str()
        .expect("access token")
        .to_owned()
}

fn print(label: &str, f: &Figures, baseline: Option<&Figures>) {
    let ratio = baseline.map_or(String::new(), |b| {
        format!(" = {:.3} x baseline", f.rate / b.rate)
    });
    let failed = if f.failed > 0 {
        format!(", {} FAILED", f.failed)
    } else {
        String::new()
    };
    println!(
        "  {label:<22} {:>7.0}/s{ratio}  p50 {:.2} ms  p99 {:.2} ms  server CPU {:.3} ms/req{}{failed}",
        f.rate,
        f.p50_ms,
        f.p99_ms,
        f.server_ms,
        f.db_ms
            .map_or(String::new(), |ms| format!("  db CPU {ms:.3} ms/req"))
    );
}

async fn bench() {
    let quick = common::quick();
    let secs = if quick {
        1.0
    } else {
        common::env_or("SAVE_BENCH_SECS", 5.0)
    };
    println!("{}", common::machine());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let baseline = common::start_baseline_server();

    let pg_url = ["AETHEX_BENCH_DATABASE_URL", "AETHEX_TEST_DATABASE_URL"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|u| !u.is_empty()));
    let mut backends: Vec<Option<String>> = vec![None];
    backends.extend(pg_url.map(Some));

    for pg in backends {
        use sqlx::{Connection, Executor};
        let (database_url, mut admin, schema) = match &pg {
            None => (None, None, None),
            Some(base) => {
                let mut admin = sqlx::PgConnection::connect(base)
                    .await
                    .expect("connect to PostgreSQL");
                let schema = format!("save_bench_{}", std::process::id());
                admin
                    .execute(format!("CREATE SCHEMA {schema}").as_str())
                    .await
                    .unwrap();
                let sep = if base.contains('?') { '&' } else { '?' };
                let url = format!(
                    "{base}{sep}options=-c%20search_path%3D{schema}&application_name={APP_NAME}"
                );
                (Some(url), Some(admin), Some(schema))
            }
        };
        let server = common::start_aethex_server_on(database_url.as_deref());
        let key = server.client_key.clone();
        println!(
            "{}, {secs} s per run after 1 s warm-up:",
            if pg.is_some() { "PostgreSQL" } else { "SQLite" }
        );
        let max = *CONCURRENCY.iter().max().unwrap();
        let mut tokens = Vec::with_capacity(max);
        for device in 0..max {
            tokens.push(sign_in(&http, server.addr, &key, device).await);
        }
        for (round, clients) in CONCURRENCY.into_iter().enumerate() {
            // Fresh slots each round, so every run starts from version 0.
            let own: Vec<Writer> = (0..clients)
                .map(|c| Writer {
                    token: tokens[c].clone(),
                    slot: format!("main{round}"),
                })
                .collect();
            let shared: Vec<Writer> = (0..clients)
                .map(|c| Writer {
                    token: tokens[c % SHARED_PLAYERS].clone(),
                    slot: format!("s{round}-{c}"),
                })
                .collect();
            let base = run(
                &http,
                baseline.addr,
                "",
                &own,
                secs,
                baseline.pid(),
                &mut None,
            )
            .await;
            let own = run(
                &http,
                server.addr,
                &key,
                &own,
                secs,
                server.pid(),
                &mut admin,
            )
            .await;
            let shared = run(
                &http,
                server.addr,
                &key,
                &shared,
                secs,
                server.pid(),
                &mut admin,
            )
            .await;
            println!(" concurrency {clients}:");
            print("bare axum (baseline)", &base, None);
            print("own slot", &own, Some(&base));
            print(
                &format!("{SHARED_PLAYERS} players, own slots"),
                &shared,
                Some(&base),
            );
        }
        drop(server);
        if let (Some(mut admin), Some(schema)) = (admin, schema) {
            admin
                .execute(format!("DROP SCHEMA {schema} CASCADE").as_str())
                .await
                .unwrap();
        }
    }
}
