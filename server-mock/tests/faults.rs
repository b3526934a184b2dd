//! Every scripted fault, hit with a plain reqwest client.

mod common;

use std::time::{Duration, Instant};

use aethex_mock::{DropWhen, MockServer, Times};
use aethex_protocol::saves::SaveSlotInfo;
use aethex_protocol::ErrorCode;
use common::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn server_errors_n_times_then_success() {
    let mock = MockServer::start().await;
    let http = client();
    let player = device_player(&mock, &http, "device-5xx-0001").await;
    mock.fail("POST /api/v1/saves/*", 503, ErrorCode::Unavailable, 2);

    for _ in 0..2 {
        let resp = write_save(&mock, &http, &player, "slot1", json!({"a": 1}), None).await;
        expect_error(resp, 503, "unavailable").await;
    }
    let resp = write_save(&mock, &http, &player, "slot1", json!({"a": 1}), None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.versions(&player.user_id, "slot1").len(), 1);

    let log = mock.requests_matching("POST /api/v1/saves/me");
    let statuses: Vec<_> = log.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![Some(503), Some(503), Some(200)]);
    assert!(!log[0].handled && log[2].handled);
    assert!(mock.faults().is_empty());
    mock.stop().await;
}

#[tokio::test]
async fn delay_is_observed() {
    let mock = MockServer::start().await;
    let http = client();
    mock.delay("POST /api/v1/auth/device", Duration::from_millis(300), 1);
    let started = Instant::now();
    device_player(&mock, &http, "device-delay-01").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Spent after one request.
    assert!(mock.faults().is_empty());
    let entry = &mock.requests_matching("POST /api/v1/auth/device")[0];
    assert!(entry.duration >= Duration::from_millis(300));
    assert_eq!(entry.faults, vec!["delay 300ms".to_owned()]);
    mock.stop().await;
}

#[tokio::test]
async fn drop_before_handling_is_a_transport_error_and_applies_nothing() {
    let mock = MockServer::start().await;
    let http = client();
    let player = device_player(&mock, &http, "device-drop-b01").await;
    mock.drop_connection("POST /api/v1/saves/me", DropWhen::BeforeHandling, 1);
    let err = authed(&mock, &http, &player, Method::POST, "/api/v1/saves/me")
        .json(&json!({"slot": "s", "data": {"x": 1}}))
        .send()
        .await
        .expect_err("the socket is closed without an answer");
    assert!(err.status().is_none(), "{err:?}");
    assert!(mock.versions(&player.user_id, "s").is_empty());
    let entry = mock.requests_matching("POST /api/v1/saves/me").remove(0);
    assert!(entry.dropped() && !entry.handled);
    // The fault was for one request only.
    let resp = write_save(&mock, &http, &player, "s", json!({"x": 1}), None).await;
    assert_eq!(resp.status(), 200);
    mock.stop().await;
}

#[tokio::test]
async fn drop_after_handling_applies_the_write_but_loses_the_answer() {
    let mock = MockServer::start().await;
    let http = client();
    let player = device_player(&mock, &http, "device-drop-a01").await;
    mock.drop_connection("POST /api/v1/saves/me", DropWhen::AfterHandling, 1);
    let err = write_save_err(&mock, &http, &player).await;
    assert!(err.status().is_none(), "{err:?}");
    let versions = mock.versions(&player.user_id, "s");
    assert_eq!(versions.len(), 1, "the write was applied");
    // A retry with the same base version now conflicts: the SDK must reconcile, not duplicate.
    let resp = write_save(&mock, &http, &player, "s", json!({"x": 1}), None).await;
    let envelope = expect_error(resp, 409, "save_conflict").await;
    let current: SaveSlotInfo =
        serde_json::from_value(envelope.error.details.unwrap()["current"].clone()).unwrap();
    assert_eq!(current.version, 1);
    assert_eq!(mock.versions(&player.user_id, "s").len(), 1);
    mock.stop().await;
}

async fn write_save_err(
    mock: &MockServer,
    http: &reqwest::Client,
    player: &Player,
) -> reqwest::Error {
    authed(mock, http, player, Method::POST, "/api/v1/saves/me")
        .json(&json!({"slot": "s", "data": {"x": 1}}))
        .send()
        .await
        .expect_err("the socket is closed without an answer")
}

#[tokio::test]
async fn drop_mid_body_cuts_the_upload_and_applies_nothing() {
    let mock = MockServer::start().await;
    let http = client();
    let player = device_player(&mock, &http, "device-drop-m01").await;
    mock.drop_connection("POST /api/v1/saves/me", DropWhen::MidBody, 1);
    // A streamed body: the first chunk goes out, the rest only after the mock has hung up.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(ReceiverStream(rx));
    let sender = tokio::spawn(async move {
        let _ = tx
            .send(Ok(br#"{"slot":"s","data":{"blob":""#.to_vec()))
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = tx.send(Ok(vec![b'x'; 64 * 1024])).await;
        let _ = tx.send(Ok(br#""}}"#.to_vec())).await;
    });
    let err = authed(&mock, &http, &player, Method::POST, "/api/v1/saves/me")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect_err("the connection drops during the upload");
    assert!(err.status().is_none(), "{err:?}");
    sender.await.unwrap();
    assert!(mock.versions(&player.user_id, "s").is_empty());
    let entry = mock.requests_matching("POST /api/v1/saves/me").remove(0);
    assert!(entry.dropped() && !entry.handled);
    assert_eq!(entry.faults, vec!["drop mid_body".to_owned()]);
    mock.stop().await;
}

/// `tokio::sync::mpsc::Receiver` as a `futures` stream, for a streamed request body.
struct ReceiverStream<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> futures_core::Stream for ReceiverStream<T> {
    type Item = T;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

#[tokio::test]
async fn drop_mid_response_sends_the_status_then_breaks_the_body() {
    let mock = MockServer::start().await;
    let http = client();
    let player = device_player(&mock, &http, "device-drop-r01").await;
    mock.drop_connection("POST /api/v1/saves/me", DropWhen::MidResponse, 1);
    let resp = write_save(&mock, &http, &player, "s", json!({"x": 1}), None).await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.expect_err("the body breaks off");
    assert_eq!(mock.versions(&player.user_id, "s").len(), 1);
    mock.stop().await;
}

#[tokio::test]
async fn expired_tokens_answer_token_expired_until_refresh() {
    let mock = MockServer::start().await;
    let http = client();
    let mut player = device_player(&mock, &http, "device-expire-1").await;
    assert_eq!(mock.expire_access_tokens(), 1);
    for _ in 0..2 {
        let resp = authed(&mock, &http, &player, Method::GET, "/api/v1/auth/profile")
            .send()
            .await
            .unwrap();
        expect_error(resp, 401, "token_expired").await;
    }
    let resp = req(&mock, &http, Method::POST, "/api/v1/auth/refresh")
        .json(&json!({ "refresh_token": player.refresh_token }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let auth: aethex_protocol::auth::AuthResponse = resp.json().await.unwrap();
    assert_ne!(auth.refresh_token, player.refresh_token, "rotated");
    player.access_token = auth.access_token;
    let resp = authed(&mock, &http, &player, Method::GET, "/api/v1/auth/profile")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    mock.stop().await;
}

#[tokio::test]
async fn access_tokens_expire_after_the_configured_ttl() {
    // The server counts token lifetimes in whole seconds, rounded up: 2.5 s is 3 s. (At least
    // 2 s are left of a fresh token: its issue time is rounded down to the second.)
    let mock = MockServer::builder()
        .access_token_ttl(Duration::from_millis(2500))
        .start()
        .await
        .unwrap();
    let http = client();
    let resp = req(&mock, &http, Method::POST, "/api/v1/auth/device")
        .json(&json!({ "device_id": "device-ttl-0001" }))
        .send()
        .await
        .unwrap();
    let auth: aethex_protocol::auth::AuthResponse = resp.json().await.unwrap();
    assert_eq!(auth.expires_in, 3);
    let profile = |token: String| {
        req(&mock, &http, Method::GET, "/api/v1/auth/profile")
            .bearer_auth(token)
            .send()
    };
    assert_eq!(
        profile(auth.access_token.clone()).await.unwrap().status(),
        200
    );
    // The server's clock, not a sleep: the lifetime has passed exactly when the mock says so.
    mock.advance_clock(Duration::from_millis(3001));
    expect_error(
        profile(auth.access_token).await.unwrap(),
        401,
        "token_expired",
    )
    .await;
    mock.stop().await;
}

#[tokio::test]
async fn conflicting_write_makes_the_next_save_conflict_with_details() {
    let mock = MockServer::start().await;
    let http = client();
    let player = device_player(&mock, &http, "device-conflict").await;
    let resp = write_save(&mock, &http, &player, "slot1", json!({"level": 1}), None).await;
    let mine: SaveSlotInfo = resp.json().await.unwrap();
    let theirs = mock
        .conflicting_write(&player.user_id, "slot1", json!({"level": 7}))
        .unwrap();
    assert_eq!(theirs.version, mine.version + 1);
    let resp = write_save(
        &mock,
        &http,
        &player,
        "slot1",
        json!({"level": 2}),
        Some(mine.version),
    )
    .await;
    let envelope = expect_error(resp, 409, "save_conflict").await;
    let current: SaveSlotInfo =
        serde_json::from_value(envelope.error.details.unwrap()["current"].clone()).unwrap();
    assert_eq!(current, theirs);
    let expected = aethex_mock::size_and_checksum(&json!({"level": 7}));
    assert_eq!((current.size, current.checksum), expected);
    // Nothing was overwritten.
    assert_eq!(
        mock.save(&player.user_id, "slot1").unwrap().data,
        json!({"level": 7})
    );
    mock.stop().await;
}

#[tokio::test]
async fn offline_refuses_connections_then_online_on_the_same_port() {
    let mock = MockServer::start().await;
    let http = reqwest::Client::new(); // with a connection pool: open connections must be cut too
    let url = format!("{}/healthz", mock.url());
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    mock.set_offline(true).await;
    assert!(mock.is_offline());
    for _ in 0..2 {
        let err = http.get(&url).send().await.expect_err("offline");
        assert!(err.is_connect() || err.status().is_none(), "{err:?}");
    }
    let raw = tokio::net::TcpStream::connect(mock.addr()).await;
    assert!(raw.is_err(), "connections are refused while offline");
    mock.set_offline(false).await;
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    mock.stop().await;
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let mock = MockServer::start().await;
    let http = client();
    mock.rate_limit("/api/v1/auth/**", 3, Times::Next(1));
    let resp = req(&mock, &http, Method::POST, "/api/v1/auth/device")
        .json(&json!({ "device_id": "device-ratelimit" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["retry-after"], "3");
    expect_error(resp, 429, "rate_limited").await;
    device_player(&mock, &http, "device-ratelimit").await;
    mock.stop().await;
}

#[tokio::test]
async fn always_faults_last_until_cleared() {
    let mock = MockServer::start().await;
    let http = client();
    mock.fail("GET /healthz", 502, ErrorCode::Unavailable, Times::Always);
    for _ in 0..3 {
        let resp = http
            .get(format!("{}/healthz", mock.url()))
            .send()
            .await
            .unwrap();
        expect_error(resp, 502, "unavailable").await;
    }
    mock.clear_faults();
    let resp = http
        .get(format!("{}/healthz", mock.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    mock.stop().await;
}

#[tokio::test]
async fn a_client_timing_out_during_a_delay_is_logged_as_gone() {
    let mock = MockServer::start().await;
    let http = client();
    mock.delay("GET /healthz", Duration::from_secs(2), 1);
    let err = http
        .get(format!("{}/healthz", mock.url()))
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .expect_err("times out");
    assert!(err.is_timeout(), "{err:?}");
    let started = Instant::now();
    let entry = loop {
        if let Some(entry) = mock.requests_matching("GET /healthz").pop() {
            break entry;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "never logged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(entry.client_gone && entry.dropped() && !entry.handled);
    mock.stop().await;
}

#[tokio::test]
async fn revoked_sessions_cannot_refresh() {
    let mock = MockServer::start().await;
    let http = client();
    let player = device_player(&mock, &http, "device-revoke-1").await;
    device_player(&mock, &http, "device-revoke-2").await;
    assert_eq!(mock.revoke_all_sessions(), 2);
    let resp = authed(&mock, &http, &player, Method::GET, "/api/v1/auth/profile")
        .send()
        .await
        .unwrap();
    expect_error(resp, 401, "unauthorized").await;
    let resp = req(&mock, &http, Method::POST, "/api/v1/auth/refresh")
        .json(&json!({ "refresh_token": player.refresh_token }))
        .send()
        .await
        .unwrap();
    expect_error(resp, 401, "unauthorized").await;
    // Signing in again works.
    let again = device_player(&mock, &http, "device-revoke-1").await;
    assert_eq!(again.user_id, player.user_id);
    mock.stop().await;
}
