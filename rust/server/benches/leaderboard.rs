//! Leaderboard benchmark: the in-memory rank index against Redis sorted sets, measured in the
//! same run, at 10k, 100k and 1M entries; then the HTTP submit path end to end.
//!
//! `cargo bench -p aethex-server --bench leaderboard` (Redis at 127.0.0.1:6379, or set
//! `AETHEX_BENCH_REDIS`; without Redis the comparison columns are skipped).
//!
//! Fairness: every Redis command is one synchronous round trip (no pipelining), as a game
//! server calling Redis per submission would pay; the index is called in-process behind the
//! same `RwLock` the server takes. Both sides do the same work per op: submit = update a random
//! existing player's score to a random value and return their rank (index `upsert`; Redis
//! `ZADD` then `ZREVRANK`, since ZADD alone does not answer the rank), rank = look up a random
//! player's rank (index `rank_of`; Redis `ZREVRANK`). Scores are random in 0..1,000,000 so ties
//! occur at 1M entries; the index breaks them by submission order, Redis by member name.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use aethex_protocol::social::SortOrder;
use aethex_server::social::leaderboards::board::{PeriodIndex, StoredEntry};
use rand::{Rng, SeedableRng};

const SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];
const INDEX_OPS: usize = 200_000;
const REDIS_OPS: usize = 20_000;
const SCORE_RANGE: i64 = 1_000_000;

struct Figure {
    ops_per_sec: f64,
    micros_per_op: f64,
}

fn figure(ops: usize, elapsed: Duration) -> Figure {
    let secs = elapsed.as_secs_f64();
    Figure {
        ops_per_sec: ops as f64 / secs,
        micros_per_op: secs * 1e6 / ops as f64,
    }
}

fn user(i: usize) -> String {
    format!("user-{i:08}")
}

struct IndexRun {
    submit: Figure,
    rank: Figure,
    build: Duration,
    /// Resident memory the built index added, MiB.
    rss_growth_mib: f64,
}

fn bench_index(n: usize, rng: &mut rand::rngs::StdRng) -> IndexRun {
    let entries: Vec<StoredEntry> = (0..n)
        .map(|i| StoredEntry {
            user_id: user(i),
            score: rng.gen_range(0..SCORE_RANGE),
            num_scores: 1,
            reached_at: 1_700_000_000_000 + i as i64,
            seq: i as i64 + 1,
        })
        .collect();
    let rss_before = rss_mib().unwrap_or(0.0);
    let started = Instant::now();
    let index = RwLock::new(PeriodIndex::from_entries(SortOrder::Desc, entries));
    let build = started.elapsed();
    let rss_growth_mib = rss_mib().unwrap_or(0.0) - rss_before;
    let ids: Vec<String> = (0..INDEX_OPS).map(|_| user(rng.gen_range(0..n))).collect();
    let scores: Vec<i64> = (0..INDEX_OPS)
        .map(|_| rng.gen_range(0..SCORE_RANGE))
        .collect();

    let started = Instant::now();
    let mut checksum = 0u64;
    for (i, (id, score)) in ids.iter().zip(&scores).enumerate() {
        let mut idx = index.write().expect("lock");
        let seq = idx.take_seq();
        checksum =
            checksum.wrapping_add(idx.upsert(id, *score, 2, 1_800_000_000_000 + i as i64, seq));
    }
    let submit = figure(INDEX_OPS, started.elapsed());

    let started = Instant::now();
    for id in &ids {
        let rank = index.read().expect("lock").rank_of(id).expect("present");
        checksum = checksum.wrapping_add(rank);
    }
    let rank = figure(INDEX_OPS, started.elapsed());
    assert_eq!(index.read().expect("lock").len(), n);
    std::hint::black_box(checksum);
    IndexRun {
        submit,
        rank,
        build,
        rss_growth_mib,
    }
}

fn bench_redis(
    con: &mut redis::Connection,
    n: usize,
    rng: &mut rand::rngs::StdRng,
) -> redis::RedisResult<(Figure, Figure)> {
    let key = format!("aethex:bench:leaderboard:{n}");
    redis::cmd("DEL").arg(&key).query::<()>(con)?;
    // Prefill in pipelined batches: only the measured loops below are one round trip per op.
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            pipe.cmd("ZADD")
                .arg(&key)
                .arg(rng.gen_range(0..SCORE_RANGE))
                .arg(user(i))
                .ignore();
        }
        pipe.query::<()>(con)?;
    }
    let ids: Vec<String> = (0..REDIS_OPS).map(|_| user(rng.gen_range(0..n))).collect();

    let started = Instant::now();
    let mut checksum = 0u64;
    for id in &ids {
        redis::cmd("ZADD")
            .arg(&key)
            .arg(rng.gen_range(0..SCORE_RANGE))
            .arg(id)
            .query::<i64>(con)?;
        let rank: u64 = redis::cmd("ZREVRANK").arg(&key).arg(id).query(con)?;
        checksum = checksum.wrapping_add(rank);
    }
    let submit = figure(REDIS_OPS, started.elapsed());

    let started = Instant::now();
    for id in &ids {
        let rank: u64 = redis::cmd("ZREVRANK").arg(&key).arg(id).query(con)?;
        checksum = checksum.wrapping_add(rank);
    }
    let rank = figure(REDIS_OPS, started.elapsed());
    std::hint::black_box(checksum);
    redis::cmd("DEL").arg(&key).query::<()>(con)?;
    Ok((submit, rank))
}

fn rss_mib() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0 / (1024.0 * 1024.0))
}

fn main() {
    let redis_url =
        std::env::var("AETHEX_BENCH_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let mut redis_con = redis::Client::open(redis_url.as_str())
        .and_then(|c| c.get_connection())
        .map_err(|e| eprintln!("redis unavailable ({e}); index figures only"))
        .ok();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);

    println!("leaderboard rank index vs Redis sorted set (one round trip per Redis command, no pipelining)");
    println!(
        "{:>9} | {:>22} | {:>22} | {:>22} | {:>22} | {:>13} | {:>13}",
        "entries",
        "index submit",
        "redis ZADD+ZREVRANK",
        "index rank",
        "redis ZREVRANK",
        "submit ratio",
        "rank ratio"
    );
    for n in SIZES {
        let IndexRun {
            submit: isub,
            rank: irank,
            build,
            rss_growth_mib,
        } = bench_index(n, &mut rng);
        let redis = redis_con
            .as_mut()
            .map(|con| bench_redis(con, n, &mut rng).expect("redis bench"));
        let cell = |f: &Figure| format!("{:>9.0}/s {:>7.3} µs", f.ops_per_sec, f.micros_per_op);
        let (rsub, rrank, sub_ratio, rank_ratio) = match &redis {
            Some((s, r)) => (
                cell(s),
                cell(r),
                format!("{:.1}x faster", s.micros_per_op / isub.micros_per_op),
                format!("{:.1}x faster", r.micros_per_op / irank.micros_per_op),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!(
            "{n:>9} | {:>22} | {rsub:>22} | {:>22} | {rrank:>22} | {sub_ratio:>13} | {rank_ratio:>13}",
            cell(&isub),
            cell(&irank),
        );
        println!(
            "          (index built from {n} stored entries in {:.1} ms; resident memory +{:.0} MiB)",
            build.as_secs_f64() * 1e3,
            rss_growth_mib
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(http_submit());
}

/// The whole submit path: HTTP, server-key auth, SQLite write-through, index, rank, username.
async fn http_submit() {
    use aethex_server::{Config, Server};
    const PLAYERS: usize = 1_000;
    const CONCURRENCY: usize = 32;
    const DURATION: Duration = Duration::from_secs(5);

    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    config.rate_limit.enabled = false;
    let server = Server::build(config).await.expect("server builds");
    let keys = server
        .created_default_project
        .clone()
        .expect("fresh project");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(server.serve(listener, std::future::pending()));
    let http = reqwest::Client::new();
    let server_auth = format!("ServerKey {}", keys.server_key);
    http.put(format!("{base}/api/v1/leaderboards/bench"))
        .header("Authorization", &server_auth)
        .json(&serde_json::json!({"operator": "best"}))
        .send()
        .await
        .expect("define")
        .error_for_status()
        .expect("define ok");
    let mut users = Vec::with_capacity(PLAYERS);
    for i in 0..PLAYERS {
        let body: serde_json::Value = http
            .post(format!("{base}/api/v1/auth/device"))
            .header("X-AeThex-Key", &keys.client_key)
            .json(&serde_json::json!({"device_id": format!("bench-device-{i:06}")}))
            .send()
            .await
            .expect("sign in")
            .json()
            .await
            .expect("json");
        users.push(body["user"]["id"].as_str().expect("id").to_owned());
    }
    let users = std::sync::Arc::new(users);
    let deadline = Instant::now() + DURATION;
    let mut tasks = Vec::new();
    for t in 0..CONCURRENCY {
        let (http, base, auth, users) = (
            http.clone(),
            base.clone(),
            server_auth.clone(),
            users.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(t as u64);
            let mut done = 0usize;
            let mut latency = Duration::ZERO;
            while Instant::now() < deadline {
                let user = &users[rng.gen_range(0..users.len())];
                let started = Instant::now();
                let resp = http
                    .post(format!("{base}/api/v1/leaderboards/bench/scores"))
                    .header("Authorization", &auth)
                    .json(&serde_json::json!({"score": rng.gen_range(0..SCORE_RANGE), "user_id": user}))
                    .send()
                    .await
                    .expect("submit");
                assert!(resp.status().is_success(), "submit failed: {}", resp.status());
                resp.bytes().await.expect("body");
                latency += started.elapsed();
                done += 1;
            }
            (done, latency)
        }));
    }
    let started = Instant::now();
    let (mut total, mut latency) = (0usize, Duration::ZERO);
    for task in tasks {
        let (done, lat) = task.await.expect("task");
        total += done;
        latency += lat;
    }
    let elapsed = started.elapsed();
    println!();
    println!(
        "HTTP submit end to end (SQLite, {PLAYERS} players, {CONCURRENCY} concurrent clients, {:.1} s): {:.0} submits/s, mean latency {:.0} µs",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        latency.as_secs_f64() * 1e6 / total.max(1) as f64
    );
}
