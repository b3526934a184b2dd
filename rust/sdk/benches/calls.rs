//! How long an SDK call takes to return to its caller (HTTP-backed calls, analytics'
//! `track_event` and a realtime `send_state`), and how long draining 1,000 queued events
//! takes. Not a test: run `cargo bench -p aethex-sdk --bench calls` and read the figures.
//!
//! Calls go to `aethex-mock` on loopback (signed in), so the runtime does real work (encoding,
//! zstd, HTTP) on its two threads while the caller measures only its own side.

use std::time::{Duration, Instant};

use aethex_sdk::{Client, ClientConfig, CredentialStore, Event, Value};

fn stats(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    println!(
        "{name:<44} n={:<6} median={:>9.2?} p99={:>9.2?} max={:>9.2?}",
        samples.len(),
        at(0.5),
        at(0.99),
        samples[samples.len() - 1]
    );
}

fn wait_until(client: &Client, events: usize) {
    let end = Instant::now() + Duration::from_secs(60);
    while client.queued_events() < events {
        assert!(Instant::now() < end, "events did not arrive");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits for `request` to complete successfully (other events are dropped).
fn wait_for(client: &Client, request: aethex_sdk::RequestId) {
    let end = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    loop {
        client.drain_events(&mut events, usize::MAX);
        for e in events.drain(..) {
            if let Event::Completed {
                request: r,
                outcome,
            } = e
            {
                if r == request {
                    outcome.expect("call succeeds");
                    return;
                }
            }
        }
        assert!(Instant::now() < end, "call timed out");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn drain_all(client: &Client) {
    let mut sink = Vec::new();
    while client.drain_events(&mut sink, usize::MAX) > 0 {
        sink.clear();
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn main() {
    let mock = aethex_mock::MockServer::builder()
        .start_blocking()
        .expect("mock starts");
    let dir = tempfile::tempdir().unwrap();
    let mut config = ClientConfig::new(mock.url(), mock.client_key(), dir.path());
    config.credential_store = CredentialStore::FileOnly;
    let client = Client::new(config).unwrap();

    let id = client.auth().login_device(Some("bench-device-0001".into()));
    let end = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    'wait: loop {
        client.drain_events(&mut events, usize::MAX);
        for e in &events {
            if let Event::Completed { request, outcome } = e {
                if *request == id {
                    outcome.as_ref().expect("signed in");
                    break 'wait;
                }
            }
        }
        assert!(Instant::now() < end, "sign-in timed out");
        std::thread::sleep(Duration::from_millis(1));
    }
    drain_all(&client);

    let save = Value::dict([
        ("level", Value::Int(5)),
        ("position", Value::Vector3([10.0, 0.0, 20.0])),
        (
            "inventory",
            Value::PackedStringArray((0..32).map(|i| format!("item{i}")).collect()),
        ),
    ]);

    const CALLS: usize = 2_000;
    let mut samples = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let t = Instant::now();
        let user = client.auth().current_user();
        samples.push(t.elapsed());
        assert!(user.is_some());
    }
    stats("auth().current_user()", samples);

    let mut samples = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let data = save.clone();
        let slot = format!("slot{}", i % 8);
        let t = Instant::now();
        client.saves().save(slot, data, None);
        samples.push(t.elapsed());
        if i % 100 == 99 {
            // Keep the backlog realistic (a game saves a few times a minute, not 2,000 at once).
            wait_until(&client, 1);
            drain_all(&client);
        }
    }
    stats("saves().save(slot, data, None)", samples);
    drain_all(&client);

    let mut samples = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let t = Instant::now();
        client.auth().fetch_profile();
        samples.push(t.elapsed());
    }
    stats("auth().fetch_profile()", samples);
    std::thread::sleep(Duration::from_secs(2));
    drain_all(&client);

    let mut samples = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let t = Instant::now();
        let _ = client.saves().sync_status();
        samples.push(t.elapsed());
    }
    stats("saves().sync_status()", samples);

    // Analytics (target < 5 µs; baseline: current_user() above): the call stamps the event (id,
    // sequence, time) and hands it to the analytics task, which queues it on disk and uploads.
    wait_for(&client, client.analytics().set_consent(true, false));
    let properties = Value::dict([
        ("level", Value::Int(5)),
        ("time", Value::Float(120.5)),
        ("deaths", Value::Int(3)),
    ]);
    let mut samples = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let properties = properties.clone();
        let t = Instant::now();
        let recorded = client
            .analytics()
            .track_event("level_completed", properties);
        samples.push(t.elapsed());
        assert!(recorded);
    }
    stats("analytics().track_event(name, props)", samples);

    realtime_calls();

    // 1,000 events: calls that complete at once (invalid slot name) fill the queue.
    let mut drains = Vec::new();
    let mut out = Vec::with_capacity(1_000);
    for _ in 0..50 {
        for _ in 0..1_000 {
            client.saves().load("../invalid".into());
        }
        wait_until(&client, 1_000);
        out.clear();
        let t = Instant::now();
        let n = client.drain_events(&mut out, 1_000);
        drains.push(t.elapsed());
        assert_eq!(n, 1_000);
    }
    stats("drain_events(out, 1000) with 1,000 queued", drains);
    client.shutdown();
    compare_queues();
}

/// A realtime call against the real server (the mock's fault layer does not carry the socket):
/// the socket is open and the room joined, so the call only hands the state to the socket task
/// (encoding happens there). Target: < 20 µs. Baseline in the same run: `current_user()`.
fn realtime_calls() {
    let server_dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (url, key) = runtime.block_on(async {
        let mut config = aethex_server::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: server_dir.path().to_path_buf(),
            ..aethex_server::Config::default()
        };
        config.rate_limit.enabled = false;
        config.realtime.messages_per_second = 1_000_000;
        config.realtime.message_burst = 1_000_000;
        let server = aethex_server::Server::build(config)
            .await
            .expect("server builds");
        let key = server
            .created_default_project
            .as_ref()
            .expect("fresh data dir")
            .client_key
            .clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = server.serve(listener, std::future::pending()).await;
        });
        (url, key)
    });
    let dir = tempfile::tempdir().unwrap();
    let mut config = ClientConfig::new(url, key, dir.path());
    config.credential_store = CredentialStore::FileOnly;
    let client = Client::new(config).unwrap();
    wait_for(
        &client,
        client.auth().login_device(Some("bench-realtime-01".into())),
    );
    wait_for(&client, client.multiplayer().create_room(Value::Nil));
    drain_all(&client);

    const CALLS: usize = 2_000;
    let mut samples = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let t = Instant::now();
        let user = client.auth().current_user();
        samples.push(t.elapsed());
        assert!(user.is_some());
    }
    stats("baseline: auth().current_user() (realtime)", samples);

    let state = Value::dict([
        ("health", Value::Int(100)),
        ("position", Value::Vector2([12.5, -3.25])),
        ("rotation", Value::Float(1.25)),
    ]);
    let mut samples = Vec::with_capacity(CALLS);
    for i in 0..CALLS {
        let state = state.clone();
        let t = Instant::now();
        client.multiplayer().send_state(state, None);
        samples.push(t.elapsed());
        if i % 100 == 99 {
            wait_until(&client, 100);
            drain_all(&client);
        }
    }
    stats("multiplayer().send_state(state, None)", samples);
    client.shutdown_and_wait(Duration::from_secs(5));
    runtime.shutdown_timeout(Duration::from_secs(5));
}

/// Why the client uses `SegQueue`: the same drain with a `Mutex<VecDeque>` (batched) for
/// comparison, while a producer thread keeps pushing as the runtime's workers would.
fn compare_queues() {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    fn event(i: u64) -> Event {
        Event::Completed {
            request: aethex_sdk::RequestId(i),
            outcome: Ok(Value::Int(i as i64)),
        }
    }
    const ROUNDS: usize = 200;
    let seg = Arc::new(crossbeam_queue::SegQueue::new());
    let mutexed = Arc::new(Mutex::new(VecDeque::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (seg, mutexed, stop) = (seg.clone(), mutexed.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                if seg.len() < 5_000 {
                    seg.push(event(i));
                }
                let mut q = mutexed.lock().unwrap();
                if q.len() < 5_000 {
                    q.push_back(event(i));
                }
                drop(q);
                i += 1;
            }
        })
    };
    let mut out = Vec::with_capacity(1_000);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        while seg.len() < 1_000 || mutexed.lock().unwrap().len() < 1_000 {
            std::thread::yield_now();
        }
        out.clear();
        let t = Instant::now();
        for _ in 0..1_000 {
            match seg.pop() {
                Some(e) => out.push(e),
                None => break,
            }
        }
        a.push(t.elapsed());
        out.clear();
        let t = Instant::now();
        {
            let mut q = mutexed.lock().unwrap();
            let n = q.len().min(1_000);
            out.extend(q.drain(..n));
        }
        b.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    stats("queue: SegQueue pop x1000 (producer running)", a);
    stats("queue: Mutex<VecDeque> drain 1000 (producer)", b);
}
