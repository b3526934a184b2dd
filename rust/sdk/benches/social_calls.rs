//! How long the social calls take to return to their caller (the binding contract allows 20 µs).
//! Not a test: run `cargo bench -p aethex-sdk --bench social_calls` and read the figures.
//!
//! Calls go to the real server in-process on loopback (SQLite in a temp dir), signed in, so the
//! runtime does the real work on its two threads while the caller measures only its own side.

use std::time::{Duration, Instant};

use aethex_sdk::{Client, ClientConfig, CredentialStore, Event, RequestId, Value};

const CALLS: usize = 1_000;
/// Completions awaited after every this many calls, so the backlog stays realistic.
const BATCH: usize = 100;

fn stats(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    println!(
        "{name:<52} n={:<6} median={:>9.2?} p99={:>9.2?} max={:>9.2?}",
        samples.len(),
        at(0.5),
        at(0.99),
        samples[samples.len() - 1]
    );
}

/// Waits until `request` completed successfully, keeping every other event out of the way.
fn wait_for(client: &Client, request: RequestId, what: &str) {
    let end = Instant::now() + Duration::from_secs(60);
    let mut events = Vec::new();
    loop {
        events.clear();
        client.drain_events(&mut events, usize::MAX);
        for e in events.drain(..) {
            if let Event::Completed {
                request: r,
                outcome,
            } = e
            {
                if r == request {
                    if let Err(e) = outcome {
                        panic!("{what}: {e}");
                    }
                    return;
                }
            }
        }
        assert!(Instant::now() < end, "request timed out");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn measure(client: &Client, name: &str, mut call: impl FnMut(usize) -> RequestId) {
    let mut samples = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let t = Instant::now();
        let id = call(i);
        samples.push(t.elapsed());
        if i % BATCH == BATCH - 1 {
            wait_for(client, id, name);
        }
    }
    stats(name, samples);
}

fn main() {
    let server_rt = tokio::runtime::Runtime::new().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (url, client_key) = server_rt.block_on(async {
        let mut config = aethex_server::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data.path().to_path_buf(),
            ..aethex_server::Config::default()
        };
        config.rate_limit.enabled = false;
        let server = aethex_server::Server::build(config).await.expect("server");
        let created = server.created_default_project.clone().expect("project");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            server
                .serve(listener, std::future::pending::<()>())
                .await
                .expect("server runs")
        });
        let http = reqwest::Client::new();
        for (path, body) in [
            ("leaderboards/high_scores", r#"{"operator":"best"}"#),
            ("achievements/first_kill", r#"{"name":"First blood"}"#),
            (
                "achievements/collector",
                r#"{"name":"Collector","goal":1000000}"#,
            ),
        ] {
            let resp = http
                .put(format!("{url}/api/v1/{path}"))
                .header("Authorization", format!("ServerKey {}", created.server_key))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
        }
        (url, created.client_key)
    });

    let dir = tempfile::tempdir().unwrap();
    let mut config = ClientConfig::new(url, client_key, dir.path());
    config.credential_store = CredentialStore::FileOnly;
    let client = Client::new(config).unwrap();
    let id = client.auth().login_device(Some("bench-social-0001".into()));
    wait_for(&client, id, "sign-in");

    let social = client.social();
    measure(
        &client,
        "leaderboards().submit_score(board, score, None)",
        |i| {
            social
                .leaderboards()
                .submit_score("high_scores".into(), i as i64, None)
        },
    );
    let options = Value::dict([
        ("range", Value::String("global".into())),
        ("limit", Value::Int(10)),
    ]);
    measure(&client, "leaderboards().get(board, {range, limit})", |_| {
        social
            .leaderboards()
            .get("high_scores".into(), options.clone())
    });
    measure(&client, "achievements().unlock(id)", |_| {
        social.achievements().unlock("first_kill".into())
    });
    measure(&client, "achievements().set_progress(id, n)", |i| {
        social
            .achievements()
            .set_progress("collector".into(), i as i64)
    });
    measure(&client, "stats().increment(name, 1)", |_| {
        social.stats().increment("enemies_killed".into(), 1)
    });
    measure(&client, "friends().list(None)", |_| {
        social.friends().list(None)
    });
    client.shutdown();
}
