//! Realtime idle capacity: authenticated idle sockets held by `aethex-server` (a child process
//! on SQLite) and its resident memory per 10,000 sockets (VmRSS from /proc, the growth from
//! before the sockets opened), next to a bare tokio-tungstenite server child holding the same
//! number of sockets (this binary re-executed with `--baseline-server`). Clients bind source
//! addresses 127.0.0.2, .3, ... to get past one address's ephemeral port range; the bench
//! raises its open-file limit, which the children inherit.
//!
//! `cargo bench -p aethex-server --bench realtime_idle` (100,000 sockets); `-- --quick` or
//! `AETHEX_BENCH_QUICK=1` for 2,000. Overrides: `IDLE_SOCKETS`, `IDLE_ACCOUNTS` (distinct
//! device accounts, default one per socket; fewer means several sockets per account, which the
//! server allows).

#[path = "realtime_common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ChildServer, ClientSocket};
use futures::{SinkExt, StreamExt};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

/// Sockets per source address: below the 28k ports of the default ephemeral range.
const PER_ADDRESS: usize = 25_000;
/// Handshakes in flight (below the listen backlog).
const PARALLEL: usize = 256;
/// Descriptors kept free for everything but the sockets (database, pipes, the HTTP client).
const FD_MARGIN: u64 = 1024;

/// A server holding idle sockets.
struct Held {
    sockets: usize,
    /// Server RSS before any socket opened, and with all of them open.
    rss_before: u64,
    rss_after: u64,
    open_secs: f64,
    bench_rss: u64,
}

impl Held {
    fn per_10k(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.sockets.max(1) as f64
            * 10_000.0
    }
}

fn main() {
    if common::is_baseline_child() {
        return common::run_baseline_server();
    }
    let quick = common::quick();
    let wanted: usize = common::env_or("IDLE_SOCKETS", if quick { 2_000 } else { 100_000 });
    let limit = common::raise_fd_limit(wanted as u64 + FD_MARGIN);
    // The server holds one descriptor per socket in one process, and so does this one.
    let sockets = wanted.min(limit.saturating_sub(FD_MARGIN) as usize);
    let accounts: usize = common::env_or("IDLE_ACCOUNTS", sockets).clamp(1, sockets);
    println!(
        "realtime_idle: {sockets} idle authenticated sockets from {accounts} device accounts{}; open-file limit {limit}",
        if quick { " (quick smoke run)" } else { "" }
    );
    if sockets < wanted {
        println!(
            "note: {wanted} sockets asked for, but the open-file limit cannot be raised above {limit} \
             here (no CAP_SYS_RESOURCE), so one process holds at most {sockets}; the per-socket \
             figures below are measured at that count and projected to 100,000"
        );
    }
    println!("machine: {}", common::machine());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = common::start_aethex_server();
        let started = Instant::now();
        let tokens = common::sign_in_devices(&server, "idle", accounts, 64).await;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "aethex-server: {accounts} devices signed in in {secs:.1} s ({:.0}/s)",
            accounts as f64 / secs
        );
        let tokens = Arc::new(tokens);
        let key = server.client_key.clone();
        let real = hold(&server, sockets, move |i| {
            Some((key.clone(), tokens[i % tokens.len()].clone()))
        })
        .await;
        drop(server);

        let baseline_server = common::start_baseline_server();
        let baseline = hold(&baseline_server, sockets, |_| None).await;
        drop(baseline_server);

        println!();
        println!(
            "{:<24} {:>9} {:>14} {:>13} {:>16} {:>10}",
            "server", "held", "RSS before", "RSS held", "RSS per 10k", "open time"
        );
        for (name, h) in [("bare tokio-tungstenite", &baseline), ("aethex-server", &real)] {
            println!(
                "{:<24} {:>9} {:>10.1} MiB {:>9.1} MiB {:>12.1} MiB {:>8.1} s",
                name,
                h.sockets,
                common::mib(h.rss_before),
                common::mib(h.rss_after),
                common::mib(h.per_10k() as u64),
                h.open_secs
            );
        }
        let projected = common::mib((real.per_10k() * 10.0) as u64 + real.rss_before);
        println!(
            "aethex-server / baseline RSS per socket: {:.2}; 100,000 sockets would need ~{projected:.0} MiB (target < 2048 MiB: {})",
            real.per_10k() / baseline.per_10k(),
            if projected < 2048.0 { "met" } else { "NOT met" }
        );
        println!(
            "load generator RSS (this process, client side of the sockets): {:.0} MiB",
            common::mib(real.bench_rss.max(baseline.bench_rss))
        );
    });
}

/// Opens `count` sockets to `server` and holds them idle; measures the server's RSS growth and
/// checks every socket is still open after a settle time.
async fn hold<F>(server: &ChildServer, count: usize, auth: F) -> Held
where
    F: Fn(usize) -> Option<(String, String)> + Send + Sync + 'static,
{
    let addr = server.addr;
    tokio::time::sleep(common::SETTLE).await;
    let rss_before = server.rss_bytes();
    let path = if server.client_key.is_empty() {
        "/room/idle"
    } else {
        "/api/v1/realtime"
    };
    let auth = Arc::new(auth);
    let closed = Arc::new(AtomicUsize::new(0));
    let mut holders = JoinSet::new();
    let started = Instant::now();
    let mut opened = futures::stream::iter(0..count)
        .map(|i| {
            let auth = auth.clone();
            async move {
                let credentials = auth(i);
                let ws = common::open_socket(
                    addr,
                    common::source_address(i, PER_ADDRESS),
                    path,
                    credentials.as_ref().map(|(k, t)| (k.as_str(), t.as_str())),
                )
                .await
                .unwrap_or_else(|e| panic!("socket {i}: {e}"));
                (i, ws)
            }
        })
        .buffer_unordered(PARALLEL);
    while let Some((i, mut ws)) = opened.next().await {
        // Every 1,000th socket proves it is served: a ping answered by the server.
        if i.is_multiple_of(1000) && !server.client_key.is_empty() {
            ping(&mut ws).await;
        }
        let closed = closed.clone();
        holders.spawn(async move {
            // Reading answers the server's pings; the socket stays otherwise idle.
            while let Some(Ok(_)) = ws.next().await {}
            closed.fetch_add(1, Ordering::Relaxed);
        });
    }
    let open_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(common::SETTLE).await;
    let rss_after = server.rss_bytes();
    let still_open = count - closed.load(Ordering::Relaxed);
    let bench_rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    holders.abort_all();
    while holders.join_next().await.is_some() {}
    Held {
        sockets: still_open,
        rss_before,
        rss_after,
        open_secs,
        bench_rss,
    }
}

async fn ping(ws: &mut ClientSocket) {
    ws.send(Message::text(r#"{"type":"ping","cid":1}"#))
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a pong in time");
    match reply {
        Some(Ok(Message::Text(text))) => assert!(text.contains("pong"), "{text}"),
        other => panic!("no pong: {other:?}"),
    }
}
