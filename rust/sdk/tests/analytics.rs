//! Analytics through the SDK against the real server on loopback: consent gating, revocation
//! clearing the queue, and the persisted queue across an offline spell and a crash, with every
//! event ingested exactly once.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use aethex_sdk::Value;
use common::{test_config, user_id, Probe, RealServer, DEADLINE};

fn config(server: &RealServer, dir: &Path) -> aethex_sdk::ClientConfig {
    let mut config = test_config(&server.url, &server.client_key, dir);
    config.analytics.flush_interval = Duration::from_millis(100);
    config
}

async fn stored_events(server: &RealServer, user: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM analytics_events WHERE user_id = $1")
        .bind(user.to_owned())
        .fetch_one(&server.state.db.read)
        .await
        .unwrap()
}

async fn wait_until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !done().await {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn props(level: i64) -> Value {
    Value::dict([("level", Value::Int(level)), ("time", Value::Float(120.5))])
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_recorded_before_consent_and_revoking_clears_the_queue() {
    let mut server = RealServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut probe = Probe::new(config(&server, dir.path()));
    let user = user_id(&probe.login_device("analytics-device-1").await);
    let analytics = probe.client.analytics().clone();

    assert!(!analytics.track_event("level_completed", props(1)));
    assert!(!analytics.track_metric("fps", 60.0));
    let flushed = probe.ok(analytics.flush()).await;
    assert_eq!(flushed.get("uploaded"), Some(&Value::Int(0)));
    assert_eq!(stored_events(&server, &user).await, 0);

    let consent = probe.ok(analytics.set_consent(true, false)).await;
    assert_eq!(consent.get("synced"), Some(&Value::Bool(true)));
    assert!(analytics.track_event("level_completed", props(5)));
    assert!(analytics.track_metric("fps", 59.5));
    assert!(analytics.track_screen("main_menu"));
    assert!(analytics.set_user_property("vip_status", Value::Bool(true)));
    let flushed = probe.ok(analytics.flush()).await;
    assert_eq!(flushed.get("uploaded"), Some(&Value::Int(4)));
    assert_eq!(stored_events(&server, &user).await, 4);
    let (name, properties): (String, String) = sqlx::query_as(
        "SELECT name, properties FROM analytics_events WHERE user_id = $1 AND kind = 'event'",
    )
    .bind(&user)
    .fetch_one(&server.state.db.read)
    .await
    .unwrap();
    assert_eq!(name, "level_completed");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&properties).unwrap(),
        serde_json::json!({"level": 5, "time": 120.5})
    );

    // Offline: events wait on disk; revoking deletes them and stops recording.
    server.stop().await;
    assert!(analytics.track_event("offline", Value::Nil));
    assert!(analytics.track_event("offline", Value::Nil));
    wait_until("the queue on disk", async || analytics.queued_events() == 2).await;
    let queue_file = dir.path().join("analytics").join("queue.jsonl");
    assert!(queue_file.exists());
    let revoked = probe.ok(analytics.set_consent(false, false)).await;
    assert_eq!(revoked.get("synced"), Some(&Value::Bool(false)));
    assert_eq!(analytics.queued_events(), 0);
    assert!(!queue_file.exists());
    assert!(!analytics.track_event("after_revoke", Value::Nil));

    // Back online: the revocation reaches the server before anything else; nothing is sent.
    server.restart().await;
    wait_until("the revocation on the server", async || {
        sqlx::query_scalar::<_, i64>("SELECT granted FROM analytics_consent WHERE user_id = $1")
            .bind(&user)
            .fetch_one(&server.state.db.read)
            .await
            .unwrap()
            == 0
    })
    .await;
    assert_eq!(stored_events(&server, &user).await, 4);
    drop(probe);
    server.finish().await;
}

/// Events tracked offline, then the game killed without a flush: the next start uploads them.
/// A crash after an upload but before the queue was rewritten re-sends the same events: the
/// server keeps one of each.
#[tokio::test(flavor = "multi_thread")]
async fn the_queue_survives_offline_and_crashes_and_arrives_exactly_once() {
    let mut server = RealServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let device = "analytics-device-2";
    let mut first = Probe::new(config(&server, dir.path()));
    let user = user_id(&first.login_device(device).await);
    first
        .ok(first.client.analytics().set_consent(true, false))
        .await;

    server.stop().await;
    let analytics = first.client.analytics().clone();
    for level in 0..250 {
        assert!(analytics.track_event("level_completed", props(level)));
    }
    wait_until("the queue on disk", async || {
        analytics.queued_events() == 250
    })
    .await;
    let queue_file = dir.path().join("analytics").join("queue.jsonl");
    let before_upload = std::fs::read(&queue_file).unwrap();
    // Killed: no flush, no quit.
    first.client.shutdown();
    drop(first);

    server.restart().await;
    let mut second = Probe::new(config(&server, dir.path()));
    second.login_device(device).await;
    wait_until("the upload", async || {
        stored_events(&server, &user).await == 250
    })
    .await;
    wait_until("the queue to empty", async || {
        second.client.analytics().queued_events() == 0
    })
    .await;
    second.client.shutdown();
    drop(second);

    // As if the process died after the server took the batches but before the queue file was
    // rewritten: the same events are on disk again.
    std::fs::write(&queue_file, &before_upload).unwrap();
    let mut third = Probe::new(config(&server, dir.path()));
    third.login_device(device).await;
    wait_until("the re-sent queue to drain", async || {
        third.client.analytics().queued_events() == 0
    })
    .await;
    assert_eq!(stored_events(&server, &user).await, 250);
    let distinct: i64 =
        sqlx::query_scalar("SELECT COUNT(DISTINCT seq) FROM analytics_events WHERE user_id = $1")
            .bind(&user)
            .fetch_one(&server.state.db.read)
            .await
            .unwrap();
    assert_eq!(distinct, 250, "every event of the session, once");
    drop(third);
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_drops_the_oldest_and_counts_them() {
    let server = RealServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&server, dir.path());
    config.analytics.max_queued_events = 10;
    let mut probe = Probe::new(config);
    // Not signed in: nothing uploads, the queue only grows.
    probe
        .ok(probe.client.analytics().set_consent(true, false))
        .await;
    let analytics = probe.client.analytics().clone();
    for level in 0..25 {
        analytics.track_event("level_completed", props(level));
    }
    wait_until("the drops", async || analytics.dropped_events() == 15).await;
    assert_eq!(analytics.queued_events(), 10);
    let text = std::fs::read_to_string(dir.path().join("analytics").join("queue.jsonl")).unwrap();
    let levels: Vec<i64> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["properties"]["level"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        levels,
        (15..25).collect::<Vec<_>>(),
        "the newest ten are kept"
    );
    drop(probe);
    server.finish().await;
}

/// Variants and config come from the copy fetched at sign-in; the first read of a variant
/// records one exposure event.
#[tokio::test(flavor = "multi_thread")]
async fn variants_and_config_answer_from_the_cache_with_one_exposure_event() {
    let server = RealServer::start().await;
    let server_key = std::fs::read_to_string(server.data_dir.path().join("default-server-key"))
        .unwrap()
        .trim()
        .to_owned();
    let http = reqwest::Client::new();
    for (path, body) in [
        (
            "/api/v1/analytics/experiments/button_color",
            serde_json::json!({"variants": [{"name": "blue", "weight": 1}], "running": true}),
        ),
        (
            "/api/v1/analytics/config/max_lives",
            serde_json::json!({"value": 5}),
        ),
    ] {
        let resp = http
            .put(format!("{}{path}", server.url))
            .header("Authorization", format!("ServerKey {server_key}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let mut probe = Probe::new(config(&server, dir.path()));
    let analytics = probe.client.analytics().clone();
    assert_eq!(
        analytics.get_variant("button_color"),
        None,
        "nothing fetched yet"
    );
    let user = user_id(&probe.login_device("analytics-device-3").await);
    probe.ok(analytics.set_consent(true, false)).await;
    wait_until("the assignments", async || {
        analytics.get_variant("button_color").is_some()
    })
    .await;
    assert_eq!(
        analytics.get_variant("button_color").as_deref(),
        Some("blue")
    );
    assert_eq!(analytics.get_variant("unknown"), None);
    assert_eq!(
        analytics.get_config("max_lives", Value::Int(3)),
        Value::Int(5)
    );
    assert_eq!(
        analytics.get_config("missing", Value::Int(3)),
        Value::Int(3)
    );
    probe.ok(analytics.flush()).await;
    let exposures: Vec<String> = sqlx::query_scalar(
        "SELECT properties FROM analytics_events WHERE user_id = $1 AND name = 'experiment_exposure'",
    )
    .bind(&user)
    .fetch_all(&server.state.db.read)
    .await
    .unwrap();
    assert_eq!(
        exposures.len(),
        1,
        "one exposure per experiment and session"
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&exposures[0]).unwrap(),
        serde_json::json!({"experiment": "button_color", "variant": "blue"})
    );
    // The cached copy answers after a restart, before any sign-in.
    drop(probe);
    let probe = Probe::new(config(&server, dir.path()));
    let analytics = probe.client.analytics().clone();
    wait_until("the cached copy", async || {
        analytics.get_variant("button_color").is_some()
    })
    .await;
    drop(probe);
    server.finish().await;
}
