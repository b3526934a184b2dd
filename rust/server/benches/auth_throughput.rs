//! Auth throughput over real loopback HTTP: new device registrations/s, returning device
//! sign-ins/s and email+password logins/s (argon2-bound), each from concurrent clients against an
//! in-process server on SQLite (rate limits off). Client and server share the machine, so the
//! figures are a lower bound for the server alone.
//!
//! `cargo bench -p aethex-server --bench auth_throughput` (env `AUTH_BENCH_SECS`, default 5).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aethex_server::{Config, Server};
use serde_json::json;

const CLIENTS: usize = 64;

struct Target {
    base: String,
    key: String,
    http: reqwest::Client,
}

/// Runs `CLIENTS` loops of `request(client index, iteration)` for `secs`; returns successes/s.
async fn run<F, Fut>(secs: u64, request: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let request = Arc::new(request);
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (request, ok, failed) = (request.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while Instant::now() < deadline {
                    let counter = if request(c, i).await { &ok } else { &failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let failed = failed.load(Ordering::Relaxed);
    assert_eq!(failed, 0, "{failed} requests failed");
    ok.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let secs: u64 = std::env::var("AUTH_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.rate_limit.enabled = false;
    let server = Server::build(config).await.unwrap();
    let key = server.created_default_project.clone().unwrap().client_key;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api/v1/auth", listener.local_addr().unwrap());
    tokio::spawn(server.serve(listener, std::future::pending()));
    let target = Arc::new(Target {
        base,
        key,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(CLIENTS)
            .build()
            .unwrap(),
    });

    let post = |t: Arc<Target>, path: &'static str, body: serde_json::Value| async move {
        t.http
            .post(format!("{}{path}", t.base))
            .header("X-AeThex-Key", &t.key)
            .json(&body)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    };

    let t = target.clone();
    let registrations = run(secs, move |c, i| {
        post(
            t.clone(),
            "/device",
            json!({"device_id": format!("bench-device-{c}-{i}")}),
        )
    })
    .await;
    println!("device registrations: {registrations:.0}/s ({CLIENTS} clients, {secs} s)");

    let t = target.clone();
    let returning = run(secs, move |c, i| {
        post(
            t.clone(),
            "/device",
            json!({"device_id": format!("bench-device-{c}-{}", i % 16)}),
        )
    })
    .await;
    println!("returning device sign-ins: {returning:.0}/s");

    for c in 0..CLIENTS {
        assert!(
            post(
                target.clone(),
                "/register",
                json!({"email": format!("bench{c}@example.com"), "password": "bench password", "username": format!("bench{c}")}),
            )
            .await
        );
    }
    let t = target.clone();
    let logins = run(secs, move |c, _| {
        post(
            t.clone(),
            "/login",
            json!({"email": format!("bench{c}@example.com"), "password": "bench password"}),
        )
    })
    .await;
    println!("email+password logins (argon2id m=19MiB t=2 p=1): {logins:.0}/s");
}
