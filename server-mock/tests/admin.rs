//! The `/__mock/` scripting endpoints, on a library-started mock and on the real binary.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aethex_mock::MockServer;
use aethex_protocol::saves::SaveSlotInfo;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

async fn admin(
    http: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = http.request(method, format!("{base}/__mock/{path}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("admin request")
}

#[tokio::test]
async fn faults_log_tokens_conflicts_state_and_reset_over_http() {
    let mock = MockServer::start().await;
    let http = client();
    let base = mock.url();

    let resp = admin(
        &http,
        &base,
        Method::POST,
        "faults",
        Some(json!({"route": "POST /api/v1/saves/*", "kind": "fail", "status": 500, "code": "internal", "times": 1})),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let resp = admin(
        &http,
        &base,
        Method::POST,
        "faults",
        Some(json!({"route": "GET /api/v1/saves/me", "kind": "rate_limit", "retry_after_secs": 4})),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let resp = admin(
        &http,
        &base,
        Method::POST,
        "faults",
        Some(json!({"route": "*", "kind": "drop", "when": "before_handling"})),
    )
    .await;
    let id = resp.json::<Value>().await.unwrap()["id"].as_u64().unwrap();
    let path = format!("faults/{id}");
    assert_eq!(
        admin(&http, &base, Method::DELETE, &path, None)
            .await
            .status(),
        204
    );
    let gone = admin(&http, &base, Method::DELETE, &path, None).await;
    expect_error(gone, 404, "not_found").await;
    let bad = admin(
        &http,
        &base,
        Method::POST,
        "faults",
        Some(json!({"route": "*", "kind": "explode"})),
    )
    .await;
    expect_error(bad, 400, "invalid_request").await;
    let never = admin(
        &http,
        &base,
        Method::POST,
        "faults",
        Some(json!({"route": "*", "kind": "delay", "ms": 10, "times": 0})),
    )
    .await;
    expect_error(never, 400, "invalid_request").await;
    let listed: Value = admin(&http, &base, Method::GET, "faults", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["faults"].as_array().unwrap().len(), 2);

    let player = device_player(&mock, &http, "device-admin-01").await;
    let first = write_save(&mock, &http, &player, "s", json!(1), None).await;
    expect_error(first, 500, "internal").await;
    let second = write_save(&mock, &http, &player, "s", json!(1), None).await;
    let mine: SaveSlotInfo = second.json().await.unwrap();
    for _ in 0..2 {
        let limited = authed(&mock, &http, &player, Method::GET, "/api/v1/saves/me")
            .send()
            .await
            .unwrap();
        assert_eq!(limited.headers()["retry-after"], "4");
        expect_error(limited, 429, "rate_limited").await;
    }
    assert_eq!(
        admin(&http, &base, Method::DELETE, "faults", None)
            .await
            .status(),
        204
    );
    let listed = authed(&mock, &http, &player, Method::GET, "/api/v1/saves/me")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);

    let log: Value = admin(&http, &base, Method::GET, "log", None)
        .await
        .json()
        .await
        .unwrap();
    let statuses: Vec<_> = log["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["method"].as_str().unwrap().to_owned(),
                r["status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("POST".to_owned(), json!(200)),
            ("POST".to_owned(), json!(500)),
            ("POST".to_owned(), json!(200)),
            ("GET".to_owned(), json!(429)),
            ("GET".to_owned(), json!(429)),
            ("GET".to_owned(), json!(200)),
        ]
    );
    assert_eq!(log["requests"][1]["faults"], json!(["fail 500 internal"]));

    // Conflicting write and token expiry.
    let resp = admin(
        &http,
        &base,
        Method::POST,
        "conflicting-write",
        Some(json!({"user_id": player.user_id, "slot": "s", "data": {"other": true}})),
    )
    .await;
    let theirs: SaveSlotInfo = resp.json().await.unwrap();
    assert_eq!(theirs.version, mine.version + 1);
    let unknown_user = admin(
        &http,
        &base,
        Method::POST,
        "conflicting-write",
        Some(json!({"user_id": "nobody", "slot": "s", "data": 1})),
    )
    .await;
    expect_error(unknown_user, 404, "not_found").await;
    let versions: Value = admin(
        &http,
        &base,
        Method::GET,
        &format!("saves/{}/s/versions", player.user_id),
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);
    let expired: Value = admin(&http, &base, Method::POST, "expire-tokens", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(expired["expired"], 1);
    let stale = authed(&mock, &http, &player, Method::GET, "/api/v1/saves/me")
        .send()
        .await
        .unwrap();
    expect_error(stale, 401, "token_expired").await;

    let revoked: Value = admin(&http, &base, Method::POST, "revoke-sessions", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(revoked["revoked"], 1);
    let refresh = req(&mock, &http, Method::POST, "/api/v1/auth/refresh")
        .json(&json!({ "refresh_token": player.refresh_token }))
        .send()
        .await
        .unwrap();
    expect_error(refresh, 401, "unauthorized").await;

    let users: Value = admin(&http, &base, Method::GET, "users", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(users["users"][0]["id"], json!(player.user_id));

    assert_eq!(
        admin(&http, &base, Method::POST, "reset", None)
            .await
            .status(),
        204
    );
    assert!(mock.users().is_empty());
    assert!(mock.requests().is_empty());
    assert!(mock.versions(&player.user_id, "s").is_empty());

    // The fresh server answers the same client key; its server key acts as the game's server.
    let player = device_player(&mock, &http, "device-admin-02").await;
    let config: Value = admin(&http, &base, Method::GET, "config", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(config["client_key"], mock.client_key());
    let server_key = config["server_key"].as_str().unwrap().to_owned();
    assert_eq!(server_key, mock.server_key());
    let as_server = http
        .get(format!("{base}/api/v1/saves/{}", player.user_id))
        .header("Authorization", format!("ServerKey {server_key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(as_server.status(), 200);

    // The server's clock: a token outlives 14 minutes, not 16 (15 min lifetime).
    let profile = || authed(&mock, &http, &player, Method::GET, "/api/v1/auth/profile").send();
    let advance = |ms: u64| {
        admin(
            &http,
            &base,
            Method::POST,
            "clock",
            Some(json!({ "advance_ms": ms })),
        )
    };
    assert_eq!(advance(14 * 60_000).await.status(), 200);
    assert_eq!(profile().await.unwrap().status(), 200);
    assert_eq!(advance(2 * 60_000).await.status(), 200);
    expect_error(profile().await.unwrap(), 401, "token_expired").await;
    mock.stop().await;
}

#[tokio::test]
async fn offline_over_http_comes_back_on_the_same_port() {
    let mock = MockServer::start().await;
    let http = client();
    let base = mock.url();
    let resp = admin(
        &http,
        &base,
        Method::POST,
        "offline",
        Some(json!({"seconds": 0.5})),
    )
    .await;
    assert_eq!(resp.status(), 202);
    let asked = Instant::now();
    tokio::time::sleep(aethex_mock::OFFLINE_GRACE + Duration::from_millis(100)).await;
    let err = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect_err("offline");
    assert!(err.status().is_none());
    // Back online by itself, same address.
    loop {
        if let Ok(resp) = http.get(format!("{base}/healthz")).send().await {
            assert_eq!(resp.status(), 200);
            break;
        }
        assert!(asked.elapsed() < Duration::from_secs(10), "never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(asked.elapsed() >= Duration::from_millis(500));
    let bad = admin(
        &http,
        &base,
        Method::POST,
        "offline",
        Some(json!({"seconds": -1})),
    )
    .await;
    expect_error(bad, 400, "invalid_request").await;
    mock.stop().await;
}

/// Kills the child process when the test ends, pass or fail.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_prints_its_url_and_client_key_and_serves_the_admin_api() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_aethex-mock"))
            .args(["--listen", "127.0.0.1:0", "--client-key", "ck_manual_play"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start aethex-mock"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let lines: Vec<String> = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .take(3)
            .map(|l| l.unwrap())
            .collect()
    })
    .await
    .unwrap();
    let url = lines[0]
        .strip_prefix("aethex-mock listening on ")
        .expect("first line names the URL")
        .to_owned();
    assert_eq!(lines[1], "client key: ck_manual_play");

    let http = client();
    let config: Value = admin(&http, &url, Method::GET, "config", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(config["client_key"], "ck_manual_play");
    let resp = http
        .post(format!("{url}/api/v1/auth/device"))
        .header("X-AeThex-Key", "ck_manual_play")
        .json(&json!({"device_id": "device-binary-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    drop(child);
}
