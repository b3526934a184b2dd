//! Device registrations/s and device re-logins/s through the real HTTP stack on an embedded
//! SQLite server, next to a bare axum endpoint measured in the same run (the ceiling of the HTTP
//! stack and load generator on this machine).
//!
//! `cargo bench -p aethex-server --bench auth_throughput` (env `BENCH_OPS`, `BENCH_CONCURRENCY`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aethex_server::{Config, Server};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `ops` POSTs with `concurrency` in flight; returns ops/s. `body(i)` builds request i.
async fn drive(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    ops: usize,
    concurrency: usize,
    body: impl Fn(usize) -> Value + Send + Sync + 'static,
) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(body);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, key, next, body) = (
            client.clone(),
            url.to_owned(),
            key.to_owned(),
            next.clone(),
            body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= ops {
                    break;
                }
                let resp = client
                    .post(&url)
                    .header("X-AeThex-Key", &key)
                    .json(&body(i))
                    .send()
                    .await
                    .expect("request");
                assert!(resp.status().is_success(), "status {}", resp.status());
                resp.bytes().await.expect("body");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    ops as f64 / started.elapsed().as_secs_f64()
}

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

#[tokio::main]
async fn main() {
    let ops = env_usize("BENCH_OPS", 20_000);
    let concurrency = env_usize("BENCH_CONCURRENCY", 64);
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.rate_limit.enabled = false;
    let server = Server::build(config).await.unwrap();
    let key = server.created_default_project.clone().unwrap().client_key;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/api/v1/auth/device",
        listener.local_addr().unwrap()
    );
    tokio::spawn(server.serve(listener, std::future::pending()));

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let baseline_url = bare_axum().await;
    // Warm both paths (connections, SQLite cache).
    drive(
        &client,
        &baseline_url,
        &key,
        2_000,
        concurrency,
        |i| json!({"i": i}),
    )
    .await;
    drive(
        &client,
        &url,
        &key,
        500,
        concurrency,
        |i| json!({"device_id": format!("warmup-device-{i:08}")}),
    )
    .await;

    let baseline = drive(
        &client,
        &baseline_url,
        &key,
        ops,
        concurrency,
        |i| json!({"i": i}),
    )
    .await;
    let registrations = drive(
        &client,
        &url,
        &key,
        ops,
        concurrency,
        |i| json!({"device_id": format!("bench-device-{i:08}")}),
    )
    .await;
    let relogins = drive(
        &client,
        &url,
        &key,
        ops,
        concurrency,
        |i| json!({"device_id": format!("bench-device-{i:08}")}),
    )
    .await;

    println!("auth throughput, {ops} ops, {concurrency} in flight, embedded SQLite, loopback HTTP");
    println!("  bare axum JSON endpoint (baseline): {baseline:>9.0} req/s");
    println!(
        "  device registrations (new account):  {registrations:>9.0} /s  = {:.2} x baseline",
        registrations / baseline
    );
    println!(
        "  device sign-ins (existing account):  {relogins:>9.0} /s  = {:.2} x baseline",
        relogins / baseline
    );
}
