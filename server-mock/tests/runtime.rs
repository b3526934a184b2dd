//! The mock runs on its own runtime: it serves while the test's thread blocks, and it logs
//! enough to assert a client's retry schedule and that concurrent writers cannot both win.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use aethex_mock::MockServer;
use aethex_protocol::ErrorCode;
use common::*;
use reqwest::Method;
use serde_json::json;

/// No async runtime on this thread at all: a blocking raw HTTP/1.1 exchange.
#[test]
fn serves_a_blocking_caller_without_a_runtime() {
    let mock = MockServer::builder().start_blocking().unwrap();
    let mut stream = TcpStream::connect(mock.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        mock.addr()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");
    // Dropping the mock closes its port.
    let addr = mock.addr();
    drop(mock);
    let dropped = std::time::Instant::now();
    while TcpStream::connect(addr).is_ok() {
        assert!(
            dropped.elapsed() < Duration::from_secs(5),
            "still listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn the_log_shows_a_retry_schedule() {
    let mock = MockServer::start().await;
    let http = client();
    let player = device_player(&mock, &http, "device-backoff1").await;
    mock.fail("POST /api/v1/saves/me", 503, ErrorCode::Unavailable, 3);
    // A client backing off 100, 200, 400 ms between attempts.
    let mut wait = Duration::from_millis(100);
    loop {
        let resp = write_save(&mock, &http, &player, "s", json!({"n": 1}), None).await;
        if resp.status() == 200 {
            break;
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
    let attempts = mock.requests_matching("POST /api/v1/saves/me");
    assert_eq!(attempts.len(), 4);
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1].at - w[0].at).collect();
    for (gap, expected) in gaps.iter().zip([100, 200, 400]) {
        assert!(*gap >= Duration::from_millis(expected), "{gaps:?}");
    }
    assert_eq!(attempts.iter().filter(|r| r.handled).count(), 1);
    assert_eq!(mock.versions(&player.user_id, "s").len(), 1);
    mock.stop().await;
}

#[tokio::test]
async fn concurrent_writes_on_one_base_version_have_one_winner() {
    let mock = MockServer::start().await;
    let http = client();
    let player = device_player(&mock, &http, "device-racers01").await;
    let writes = (0..8).map(|i| {
        authed(&mock, &http, &player, Method::POST, "/api/v1/saves/me")
            .json(&json!({"slot": "race", "data": {"writer": i}, "base_version": 0}))
            .send()
    });
    let answers = join_all(writes).await;
    let statuses: Vec<u16> = answers
        .iter()
        .map(|r| r.as_ref().unwrap().status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        7,
        "{statuses:?}"
    );
    assert_eq!(mock.versions(&player.user_id, "race").len(), 1);
    mock.stop().await;
}

/// Runs the futures concurrently on the test's runtime and returns their outputs in order.
async fn join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}
