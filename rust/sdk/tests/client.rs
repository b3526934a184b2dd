//! Client mechanics that need no server: request ids, the event queue, shutdown, configuration.

mod common;

use std::time::{Duration, Instant};

use aethex_protocol::ErrorCode;
use aethex_sdk::{Client, ConflictStrategy, Event, Value};
use common::*;

fn unreachable_client(dir: &std::path::Path) -> Client {
    // Port 9 (discard) on loopback: connections are refused at once.
    Client::new(test_config("http://127.0.0.1:9", "ck_test", dir)).unwrap()
}

fn wait_queued(client: &Client, n: usize) {
    let end = Instant::now() + DEADLINE;
    while client.queued_events() < n {
        assert!(Instant::now() < end, "events did not arrive");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn calls_return_distinct_ids_and_drain_respects_max() {
    let dir = tempfile::tempdir().unwrap();
    let client = unreachable_client(dir.path());
    let ids: Vec<_> = (0..5)
        .map(|_| client.saves().load("../bad".into()))
        .collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 5);

    wait_queued(&client, 5);
    let mut out = Vec::new();
    assert_eq!(client.drain_events(&mut out, 2), 2);
    assert_eq!(client.drain_events(&mut out, 100), 3);
    assert_eq!(client.drain_events(&mut out, 100), 0);
    for event in &out {
        match event {
            Event::Completed { request, outcome } => {
                assert!(ids.contains(request));
                assert_eq!(
                    outcome.as_ref().unwrap_err().code,
                    ErrorCode::InvalidRequest
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn signed_out_and_unreachable_calls_fail_with_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let client = unreachable_client(dir.path());
    let save = client.saves().save("slot1".into(), Value::Int(1), None);
    let login = client
        .auth()
        .login_device(Some("device-unreachable".into()));
    let mut outcomes = std::collections::HashMap::new();
    let end = Instant::now() + DEADLINE;
    let mut out = Vec::new();
    while outcomes.len() < 2 {
        assert!(Instant::now() < end);
        out.clear();
        client.drain_events(&mut out, 16);
        for e in out.drain(..) {
            if let Event::Completed { request, outcome } = e {
                outcomes.insert(request, outcome);
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        outcomes[&save].as_ref().unwrap_err().code,
        ErrorCode::Unauthorized
    );
    let e = outcomes[&login].as_ref().unwrap_err();
    assert_eq!((e.code, e.status), (ErrorCode::Network, 0));
    assert!(!client.auth().is_logged_in());
    assert_eq!(client.saves().sync_status(), "disabled");
    client.saves().enable_auto_sync(true);
    assert_eq!(client.saves().sync_status(), "idle");
}

#[test]
fn after_shutdown_calls_complete_with_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let client = unreachable_client(dir.path());
    client.shutdown();
    let id = client.auth().fetch_profile();
    let mut out = Vec::new();
    assert_eq!(client.drain_events(&mut out, 10), 1);
    assert_eq!(
        out[0],
        Event::Completed {
            request: id,
            outcome: Err(aethex_sdk::SdkError::new(
                ErrorCode::Unavailable,
                "the client was shut down"
            )),
        }
    );
    // Dropping clones after shutdown is fine, also inside an async runtime.
    let clone = client.clone();
    drop(client);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move { drop(clone) });
}

#[test]
fn conflict_strategy_parses_its_setting_names() {
    for s in [
        ConflictStrategy::NewestWins,
        ConflictStrategy::ServerWins,
        ConflictStrategy::ClientWins,
        ConflictStrategy::Manual,
    ] {
        assert_eq!(s.as_str().parse::<ConflictStrategy>().unwrap(), s);
    }
    let e = "last_wins".parse::<ConflictStrategy>().unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidRequest);
}
