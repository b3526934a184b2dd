//! Matchmaker benchmark: forms matches from 100,000 queued tickets and prints tickets matched per
//! second, beside baselines measured in the same run.
//!
//! `cargo bench -p aethex-server --bench matchmaker`
//!
//! - `sweep`: the server's algorithm (`pool::form_matches`) over one pool of 100,000 tickets.
//! - `service`: the same tickets queued in a real server's matchmaker (in-process, SQLite in a
//!   temp dir, no sockets), one `run_once`: the pool bookkeeping, a reserved room per match and
//!   the `match_found` frames (serialized; nobody is connected to receive them).
//! - baselines: the naive pairwise matcher (`pool::naive_pairwise`, O(n^2)) on 10,000 tickets,
//!   and sorting 100,000 floats (the floor of any sort-based matcher).
//!
//! Tickets: skill uniform in 0..3000, requested range skill +- 25..150, 1 or 2 players (a party
//! of two in one ticket of five), queued over the last 30 s; mode: 2 to 4 players, widening 5
//! points/s up to 250.

use std::time::{Duration, Instant};

use aethex_protocol::realtime::Ticket;
use aethex_server::realtime::matchmaking::pool::{self, Candidate, Rules};
use aethex_server::{Config, Server};
use rand::{Rng, SeedableRng};

const TICKETS: usize = 100_000;
const NAIVE_TICKETS: usize = 10_000;
const NOW: i64 = 1_700_000_000_000;
const RULES: Rules = Rules {
    min_players: 2,
    max_players: 4,
    widen_per_sec: 5.0,
    max_widen: 250.0,
};
const RUNS: usize = 5;

/// Narrow ranges and no widening: most tickets find nobody, the case a pairwise matcher pays
/// n^2 for.
const SPARSE_RULES: Rules = Rules {
    widen_per_sec: 0.0,
    max_widen: 0.0,
    ..RULES
};

fn tickets(n: usize, seed: u64) -> Vec<Candidate> {
    pool_of(n, seed, 25.0..150.0)
}

fn sparse_tickets(n: usize, seed: u64) -> Vec<Candidate> {
    // Over 0..3000, about four in ten of 10k tickets find a match; nine in ten of 100k.
    pool_of(n, seed, 0.0..0.05)
}

fn pool_of(n: usize, seed: u64, spreads: std::ops::Range<f64>) -> Vec<Candidate> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let skill = rng.gen_range(0.0..3000.0);
            let spread = rng.gen_range(spreads.clone());
            let created_at = NOW - 30_000 + (i as i64 * 30_000 / n as i64);
            Candidate {
                range: [skill - spread, skill + spread],
                created_at,
                expires_at: created_at + 60_000,
                players: if rng.gen_ratio(1, 5) { 2 } else { 1 },
            }
        })
        .collect()
}

fn matched_tickets(matches: &[Vec<usize>]) -> usize {
    matches.iter().map(Vec::len).sum()
}

/// The median of `RUNS` timings of `f`, with what the last run returned.
fn median<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::with_capacity(RUNS);
    let mut last = None;
    for _ in 0..RUNS {
        let start = Instant::now();
        let out = f();
        times.push(start.elapsed());
        last = Some(out);
    }
    times.sort();
    (times[RUNS / 2], last.expect("at least one run"))
}

fn line(name: &str, tickets: usize, matched: usize, elapsed: Duration) -> f64 {
    let per_sec = matched as f64 / elapsed.as_secs_f64();
    println!(
        "{name:<34} {tickets:>8} tickets  {matched:>8} matched  {:>9.2} ms  {:>12.0} tickets matched/s",
        elapsed.as_secs_f64() * 1e3,
        per_sec
    );
    per_sec
}

fn main() {
    let pool_100k = tickets(TICKETS, 1);
    let pool_10k = tickets(NAIVE_TICKETS, 2);
    println!(
        "matchmaker benchmark (median of {RUNS} runs; mode 2-4 players)\n\
         dense pools (ranges of +-25..150, widening 5/s up to 250, queued over 30 s):"
    );

    let (t, out) = median(|| pool::form_matches(&pool_100k, &RULES, NOW));
    let sweep_100k = line(
        "sweep (server algorithm)",
        TICKETS,
        matched_tickets(&out.matches),
        t,
    );
    let (t, out) = median(|| pool::form_matches(&pool_10k, &RULES, NOW));
    let sweep_10k = line(
        "sweep (server algorithm)",
        NAIVE_TICKETS,
        matched_tickets(&out.matches),
        t,
    );

    let (t, matches) = median(|| pool::naive_pairwise(&pool_10k, &RULES, NOW));
    let naive_10k = line(
        "baseline: naive pairwise",
        NAIVE_TICKETS,
        matched_tickets(&matches),
        t,
    );

    println!("sparse pools (ranges of +-0..0.05, no widening: most tickets wait):");
    let sparse_100k = sparse_tickets(TICKETS, 3);
    let sparse_10k = sparse_tickets(NAIVE_TICKETS, 4);
    let (t, out) = median(|| pool::form_matches(&sparse_100k, &SPARSE_RULES, NOW));
    line(
        "sweep (server algorithm)",
        TICKETS,
        matched_tickets(&out.matches),
        t,
    );
    let (t, out) = median(|| pool::form_matches(&sparse_10k, &SPARSE_RULES, NOW));
    let sparse_sweep_10k = line(
        "sweep (server algorithm)",
        NAIVE_TICKETS,
        matched_tickets(&out.matches),
        t,
    );
    let (t, matches) = median(|| pool::naive_pairwise(&sparse_10k, &SPARSE_RULES, NOW));
    let sparse_naive_10k = line(
        "baseline: naive pairwise",
        NAIVE_TICKETS,
        matched_tickets(&matches),
        t,
    );
    println!();
    let (t, _) = median(|| {
        let mut lows: Vec<f64> = pool_100k.iter().map(|c| c.range[0]).collect();
        lows.sort_unstable_by(f64::total_cmp);
        lows
    });
    println!(
        "{:<34} {TICKETS:>8} floats   {:>27.2} ms",
        "baseline: sort 100k floats",
        t.as_secs_f64() * 1e3
    );
    let sort_ms = t.as_secs_f64() * 1e3;

    let service = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(service_pass(&pool_100k));
    let service_per_sec = line(
        "service run_once (rooms + frames)",
        TICKETS,
        service.1,
        service.0,
    );

    println!();
    println!(
        "dense pools, sweep vs naive pairwise at 10k tickets: {:.2}x",
        sweep_10k / naive_10k
    );
    println!(
        "sparse pools, sweep vs naive pairwise at 10k tickets: {:.1}x",
        sparse_sweep_10k / sparse_naive_10k
    );
    println!(
        "sweep at 100k costs {:.1}x sorting its 100k range starts ({sort_ms:.2} ms)",
        TICKETS as f64 / sweep_100k * 1e3 / sort_ms
    );
    println!(
        "service path at 100k: {:.0}% of the bare algorithm's rate",
        service_per_sec / sweep_100k * 100.0
    );
}

/// One pass of a real server's matchmaker over `pool`: `(elapsed, tickets matched)`.
async fn service_pass(pool: &[Candidate]) -> (Duration, usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        data_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    // The background pass must not run while the pool fills; the measured pass is called here.
    config.matchmaking.interval_ms = 3_600_000;
    config.matchmaking.default_min_players = RULES.min_players;
    config.matchmaking.default_max_players = RULES.max_players;
    config.matchmaking.default_widen_per_sec = RULES.widen_per_sec;
    config.matchmaking.default_max_widen = RULES.max_widen;
    let server = Server::build(config).await.expect("server builds");
    let state = server.state.clone();
    let project = server
        .created_default_project
        .as_ref()
        .expect("fresh data dir")
        .project
        .id
        .clone();
    // Tickets are dated relative to the server's clock, like queued ones.
    let shift = state.clock.now_ms() - NOW;
    for (i, c) in pool.iter().enumerate() {
        let players = (0..c.players).map(|p| format!("player-{i}-{p}")).collect();
        state.realtime.matchmaking.enqueue_unchecked(
            &project,
            Ticket {
                ticket_id: format!("ticket-{i}"),
                mode: "bench".into(),
                region: "eu".into(),
                skill_range: c.range,
                effective_range: c.range,
                players,
                created_at: c.created_at + shift,
                expires_at: c.expires_at + shift,
            },
            None,
        );
    }
    let start = Instant::now();
    let matched = state.realtime.matchmaking.run_once(&state);
    (start.elapsed(), matched)
}
