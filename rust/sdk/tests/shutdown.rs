//! `shutdown_and_wait` leaves no SDK thread running. Its own test binary: it counts the
//! process's threads, which other tests' clients would disturb.

mod common;

use std::time::{Duration, Instant};

use aethex_protocol::ErrorCode;
use aethex_sdk::{Client, Event};
use common::*;

fn unreachable_client(dir: &std::path::Path) -> Client {
    // Port 9 (discard) on loopback: connections are refused at once.
    Client::new(test_config("http://127.0.0.1:9", "ck_test", dir)).unwrap()
}

/// Threads of this process named like the SDK runtime's workers (Linux: /proc/self/task).
#[cfg(target_os = "linux")]
fn sdk_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "aethex-sdk")
        .count()
}

#[cfg(target_os = "linux")]
#[test]
fn shutdown_and_wait_ends_the_runtime_threads() {
    let dir = tempfile::tempdir().unwrap();
    let before = sdk_threads();
    let client = unreachable_client(dir.path());
    let id = client.auth().fetch_profile();
    let end = Instant::now() + DEADLINE;
    let mut out = Vec::new();
    while !out
        .iter()
        .any(|e| matches!(e, Event::Completed { request, .. } if *request == id))
    {
        assert!(Instant::now() < end, "the call never completed");
        client.drain_events(&mut out, 10);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(sdk_threads() > before, "the runtime's workers are running");
    client.shutdown_and_wait(Duration::from_secs(5));
    assert_eq!(
        sdk_threads(),
        before,
        "runtime threads outlived shutdown_and_wait"
    );
    let id = client.auth().fetch_profile();
    out.clear();
    assert_eq!(client.drain_events(&mut out, 10), 1);
    assert!(matches!(
        &out[0],
        Event::Completed { request, outcome: Err(e) } if *request == id && e.code == ErrorCode::Unavailable
    ));
}
