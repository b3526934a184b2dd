//! Fault tests against `aethex-mock`: what the real server cannot stage on demand.

mod common;

use std::time::Duration;

use aethex_mock::{DropWhen, MockServer};
use aethex_protocol::ErrorCode;
use aethex_sdk::{ConflictStrategy, Value};
use common::*;

async fn signed_in(mock: &MockServer, dir: &std::path::Path) -> (Probe, String) {
    let mut p = Probe::new(test_config(&mock.url(), mock.client_key(), dir));
    let user = user_id(&p.login_device("mock-device-0001").await);
    (p, user)
}

/// Requests the client makes on its own schedule (analytics assignments at sign-in and every few
/// minutes), which these request-by-request checks leave out.
fn is_background(path: &str) -> bool {
    path.starts_with("/api/v1/analytics/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_expiry_mid_session_refreshes_once_and_retries() {
    let mock = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut p, _) = signed_in(&mock, dir.path()).await;
    p.save("slot1", game_save(1)).await.unwrap();
    assert!(mock.expire_access_tokens() > 0);
    mock.clear_log();
    p.save("slot1", game_save(2)).await.unwrap();
    let log = mock.requests();
    let summary: Vec<(String, String, Option<u16>)> = log
        .iter()
        .filter(|r| !is_background(&r.path))
        .map(|r| (r.method.clone(), r.path.clone(), r.status))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("POST".into(), "/api/v1/saves/me".into(), Some(401)),
            ("POST".into(), "/api/v1/auth/refresh".into(), Some(200)),
            ("POST".into(), "/api/v1/saves/me".into(), Some(200)),
        ]
    );
    assert!(p.take_signals("auth", "session_expired").is_empty());
    assert!(p.client.auth().is_logged_in());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_token_is_refreshed_shortly_before_expiry() {
    let mock = MockServer::builder()
        .access_token_ttl(Duration::from_secs(3))
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut p, _) = signed_in(&mock, dir.path()).await;
    // Time has to pass for the token to age; 3 s lifetime -> refreshed from 2.4 s on. (Not 1 s:
    // the server rounds a token's issue time down to the second, so a 1 s token can be dead a
    // few ms after it is issued and the profile call would race it.)
    tokio::time::sleep(Duration::from_millis(2500)).await;
    mock.clear_log();
    let id = p.client.auth().fetch_profile();
    p.ok(id).await;
    let summary: Vec<(String, Option<u16>)> = mock
        .requests()
        .iter()
        .filter(|r| !is_background(&r.path))
        .map(|r| (r.path.clone(), r.status))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("/api/v1/auth/refresh".into(), Some(200)),
            ("/api/v1/auth/profile".into(), Some(200)),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_refresh_ends_the_session() {
    let mock = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut p, _) = signed_in(&mock, dir.path()).await;
    mock.expire_access_tokens();
    mock.fail("POST /api/v1/auth/refresh", 401, ErrorCode::Unauthorized, 1);
    let id = p.client.auth().fetch_profile();
    assert_eq!(p.err(id).await.status, 401);
    p.signal("auth", "session_expired").await;
    assert!(!p.client.auth().is_logged_in());
    let id = p.client.auth().resume_session();
    assert_eq!(p.err(id).await.code, ErrorCode::Unauthorized);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_with_growing_backoff() {
    let mock = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut p, _) = signed_in(&mock, dir.path()).await;
    mock.clear_log();
    mock.fail("POST /api/v1/saves/*", 503, ErrorCode::Unavailable, 3);
    let saved = p.save("slot1", game_save(1)).await.unwrap();
    assert_eq!(int(&saved, "version"), 1);
    let attempts = mock.requests_matching("POST /api/v1/saves/*");
    let statuses: Vec<_> = attempts.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![Some(503), Some(503), Some(503), Some(200)]);
    // base 20 ms doubling with jitter in the upper half: gaps >= 10, 20, 40 ms.
    for (i, pair) in attempts.windows(2).enumerate() {
        let gap = pair[1].at.saturating_sub(pair[0].at);
        let floor = Duration::from_millis(10 << i);
        assert!(gap >= floor, "gap {i} was {gap:?}, expected >= {floor:?}");
    }

    // More failures than attempts: a typed error, and the write stays queued on disk.
    mock.fail("POST /api/v1/saves/*", 500, ErrorCode::Internal, 4);
    let e = p.save("slot1", game_save(2)).await.unwrap_err();
    assert_eq!((e.code, e.status), (ErrorCode::Internal, 500));
    let id = p.client.saves().sync_now();
    let synced = p.ok(id).await;
    assert_eq!(int(&synced, "uploaded"), 1);
    assert_eq!(mock.versions(&user_of(&p), "slot1").len(), 2);

    // Client errors are not retried.
    mock.clear_log();
    mock.fail("GET /api/v1/saves/*", 403, ErrorCode::Forbidden, 1);
    let id = p.client.saves().list();
    assert_eq!(p.err(id).await.code, ErrorCode::Forbidden);
    assert_eq!(mock.requests_matching("GET /api/v1/saves/*").len(), 1);
}

fn user_of(p: &Probe) -> String {
    string(&p.client.auth().current_user().unwrap(), "id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_honours_retry_after() {
    let mock = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&mock.url(), mock.client_key(), dir.path());
    config.retry.max_delay = Duration::from_secs(5);
    let mut p = Probe::new(config);
    p.login_device("mock-device-0001").await;
    mock.clear_log();
    mock.rate_limit("GET /api/v1/auth/profile", 1, 1);
    let id = p.client.auth().fetch_profile();
    p.ok(id).await;
    let attempts = mock.requests_matching("GET /api/v1/auth/profile");
    assert_eq!(attempts.len(), 2);
    let gap = attempts[1].at - attempts[0].at;
    assert!(gap >= Duration::from_millis(950), "waited only {gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_dropped_mid_upload_is_retried_without_a_duplicate_version() {
    let mock = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut p, user) = signed_in(&mock, dir.path()).await;
    p.save("slot1", game_save(1)).await.unwrap();

    // The write lands, the answer is lost: the retry gets 409 with our own checksum.
    mock.drop_connection("POST /api/v1/saves/*", DropWhen::AfterHandling, 1);
    let saved = p.save("slot1", game_save(2)).await.unwrap();
    assert_eq!(int(&saved, "version"), 2);
    assert_eq!(mock.versions(&user, "slot1").len(), 2);
    assert!(p.take_signals("saves", "conflict_detected").is_empty());

    // The body is cut before the server applied it: the retry writes it once.
    mock.drop_connection("POST /api/v1/saves/*", DropWhen::MidBody, 1);
    let saved = p.save("slot1", game_save(3)).await.unwrap();
    assert_eq!(int(&saved, "version"), 3);

    // The answer breaks halfway through.
    mock.drop_connection("POST /api/v1/saves/*", DropWhen::MidResponse, 1);
    let saved = p.save("slot1", game_save(4)).await.unwrap();
    assert_eq!(int(&saved, "version"), 4);
    assert_eq!(mock.versions(&user, "slot1").len(), 4);
    let stored = mock.save(&user, "slot1").unwrap();
    assert_eq!(
        aethex_sdk::codec::from_json(&stored.data).unwrap(),
        game_save(4)
    );

    // Uploads are zstd-compressed.
    let writes = mock.requests_matching("POST /api/v1/saves/*");
    assert!(writes.iter().all(|w| w.content_encoding() == Some("zstd")));
    // And answers may come back zstd-compressed.
    assert!(writes.iter().all(|w| w
        .header("accept-encoding")
        .is_some_and(|v| v.contains("zstd"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_queue_flushes_in_order_after_reconnect() {
    let mock = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut p, user) = signed_in(&mock, dir.path()).await;
    p.client.saves().enable_auto_sync(true);
    mock.set_offline(true).await;
    p.save("a", Value::Int(1)).await.unwrap();
    p.save("b", Value::Int(2)).await.unwrap();
    p.save("a", Value::Int(3)).await.unwrap();
    p.signal("saves", "sync_status_changed").await;
    mock.clear_log();
    mock.set_offline(false).await;
    let mut order = Vec::new();
    for _ in 0..3 {
        let done = p.signal("saves", "save_completed").await;
        order.push((done[0].clone(), int(&done[1], "version")));
    }
    assert_eq!(
        order,
        vec![
            (Value::String("a".into()), 1),
            (Value::String("b".into()), 1),
            (Value::String("a".into()), 2),
        ]
    );
    assert_eq!(mock.versions(&user, "a").len(), 2);
    let id = p.client.saves().sync_now();
    assert_eq!(int(&p.ok(id).await, "pending"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_before_upload_is_replayed_by_the_next_client() {
    let mock = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut p, user) = signed_in(&mock, dir.path()).await;
    mock.set_offline(true).await;
    assert_eq!(
        p.save("slot1", game_save(7)).await.unwrap_err().code,
        ErrorCode::Network
    );
    p.client.shutdown();
    drop(p);
    mock.set_offline(false).await;
    assert!(mock.save(&user, "slot1").is_none());

    let mut again = Probe::new(test_config(&mock.url(), mock.client_key(), dir.path()));
    let id = again.client.auth().resume_session();
    again.ok(id).await;
    again.signal("saves", "save_completed").await;
    let stored = mock.save(&user, "slot1").unwrap();
    assert_eq!(
        aethex_sdk::codec::from_json(&stored.data).unwrap(),
        game_save(7)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn game_started_offline_resumes_keeps_saving_and_syncs_later() {
    let mock = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (p, user) = signed_in(&mock, dir.path()).await;
    drop(p);
    mock.set_offline(true).await;

    let mut p = Probe::new(test_config(&mock.url(), mock.client_key(), dir.path()));
    let id = p.client.auth().resume_session();
    let resumed = p.ok(id).await;
    assert_eq!(resumed.get("offline"), Some(&Value::Bool(true)));
    assert_eq!(user_id(&resumed), user);
    assert!(p.client.auth().is_logged_in());
    p.client.saves().enable_auto_sync(true);
    let queued = p.save("slot1", game_save(3)).await.unwrap();
    assert_eq!(queued.get("queued"), Some(&Value::Bool(true)));
    assert_eq!(
        p.load("slot1").await.unwrap().get("data"),
        Some(&game_save(3))
    );

    mock.set_offline(false).await;
    p.signal("saves", "save_completed").await;
    let stored = mock.save(&user, "slot1").unwrap();
    assert_eq!(
        aethex_sdk::codec::from_json(&stored.data).unwrap(),
        game_save(3)
    );
    let id = p.client.auth().fetch_profile();
    p.ok(id).await;
}

async fn conflict_on_mock(
    strategy: ConflictStrategy,
) -> (MockServer, Probe, String, tempfile::TempDir) {
    let mock = MockServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&mock.url(), mock.client_key(), dir.path());
    config.conflict_strategy = strategy;
    let mut p = Probe::new(config);
    let user = user_id(&p.login_device("mock-device-0001").await);
    p.save("slot1", game_save(1)).await.unwrap();
    mock.conflicting_write(&user, "slot1", serde_json::json!({"other": "device"}))
        .unwrap();
    (mock, p, user, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_conflict_strategy_against_another_devices_write() {
    let other = Value::dict([("other", Value::String("device".into()))]);

    let (mock, mut p, user, _d) = conflict_on_mock(ConflictStrategy::ClientWins).await;
    assert_eq!(
        int(&p.save("slot1", game_save(2)).await.unwrap(), "version"),
        3
    );
    assert_eq!(mock.versions(&user, "slot1").len(), 3);
    assert_eq!(
        aethex_sdk::codec::from_json(&mock.save(&user, "slot1").unwrap().data).unwrap(),
        game_save(2)
    );

    let (mock, mut p, user, _d) = conflict_on_mock(ConflictStrategy::ServerWins).await;
    assert_eq!(
        int(&p.save("slot1", game_save(2)).await.unwrap(), "version"),
        4
    );
    assert_eq!(mock.versions(&user, "slot1").len(), 4);
    assert_eq!(
        aethex_sdk::codec::from_json(&mock.save(&user, "slot1").unwrap().data).unwrap(),
        other
    );
    assert_eq!(p.load("slot1").await.unwrap().get("data"), Some(&other));

    let (mock, mut p, user, _d) = conflict_on_mock(ConflictStrategy::NewestWins).await;
    // Our write happens after the other device's (clock tick guaranteed): ours is newest.
    tokio::time::sleep(Duration::from_millis(2)).await;
    p.save("slot1", game_save(2)).await.unwrap();
    assert_eq!(
        aethex_sdk::codec::from_json(&mock.save(&user, "slot1").unwrap().data).unwrap(),
        game_save(2)
    );

    let (mock, mut p, user, _d) = conflict_on_mock(ConflictStrategy::Manual).await;
    let e = p.save("slot1", game_save(2)).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::SaveConflict);
    let detected = p.signal("saves", "conflict_detected").await;
    assert_eq!((&detected[1], &detected[2]), (&game_save(2), &other));
    // While waiting, auto-sync does not overwrite anything.
    p.client.saves().enable_auto_sync(true);
    mock.clear_log();
    let id = p.client.saves().sync_now();
    p.wait_for(id).await.ok();
    assert_eq!(mock.versions(&user, "slot1").len(), 2);
    assert!(mock.requests_matching("POST /api/v1/saves/*").is_empty());
    let id = p
        .client
        .saves()
        .resolve_conflict("slot1".into(), Value::Int(3));
    assert_eq!(int(&p.ok(id).await, "version"), 3);
    assert_eq!(
        aethex_sdk::codec::from_json(&mock.save(&user, "slot1").unwrap().data).unwrap(),
        Value::Int(3)
    );
}
