//! The mocked API itself: the same statuses, codes and shapes as the real server.

mod common;

use std::io::Read;

use aethex_mock::MockServer;
use aethex_protocol::auth::{AuthResponse, User};
use aethex_protocol::saves::{SaveData, SaveHistory, SaveList, SaveSlotInfo};
use common::*;
use reqwest::Method;
use serde_json::{json, Value};

async fn register(mock: &MockServer, http: &reqwest::Client, body: Value) -> reqwest::Response {
    req(mock, http, Method::POST, "/api/v1/auth/register")
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn register_login_profile_refresh_logout() {
    let mock = MockServer::start().await;
    let http = client();
    let resp = register(
        &mock,
        &http,
        json!({"email": "Ann@Example.com", "password": "hunter2hunter2", "username": "ann"}),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let registered: AuthResponse = resp.json().await.unwrap();
    assert_eq!(registered.user.email.as_deref(), Some("Ann@Example.com"));
    assert!(!registered.user.email_verified);
    assert_eq!(registered.user.linked, vec!["email".to_owned()]);
    assert_eq!(registered.expires_in, 900);

    let again = register(
        &mock,
        &http,
        json!({"email": "ann@example.com", "password": "hunter2hunter2", "username": "ann2"}),
    )
    .await;
    expect_error(again, 409, "conflict").await;
    let weak = register(
        &mock,
        &http,
        json!({"email": "bob@example.com", "password": "short", "username": "bob"}),
    )
    .await;
    expect_error(weak, 400, "invalid_request").await;

    let login = |password: &'static str| {
        req(&mock, &http, Method::POST, "/api/v1/auth/login")
            .json(&json!({"email": "ann@example.com", "password": password}))
            .send()
    };
    expect_error(
        login("wrong-password").await.unwrap(),
        401,
        "invalid_credentials",
    )
    .await;
    let session: AuthResponse = login("hunter2hunter2").await.unwrap().json().await.unwrap();
    assert_eq!(session.user.id, registered.user.id);

    let player = Player {
        user_id: session.user.id.clone(),
        access_token: session.access_token.clone(),
        refresh_token: session.refresh_token.clone(),
    };
    let resp = authed(&mock, &http, &player, Method::PUT, "/api/v1/auth/profile")
        .json(&json!({"username": "annie", "preferences": {"lang": "fr"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let updated: User = resp.json().await.unwrap();
    assert_eq!(updated.username, "annie");
    assert_eq!(updated.preferences, json!({"lang": "fr"}));
    let resp = authed(&mock, &http, &player, Method::PUT, "/api/v1/auth/profile")
        .json(&json!({"preferences": [1, 2]}))
        .send()
        .await
        .unwrap();
    expect_error(resp, 400, "invalid_request").await;
    let fetched: User = authed(&mock, &http, &player, Method::GET, "/api/v1/auth/profile")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(fetched, updated);

    // Rotation, then reuse of the old refresh token revokes the whole session.
    let refresh = |token: String| {
        req(&mock, &http, Method::POST, "/api/v1/auth/refresh")
            .json(&json!({ "refresh_token": token }))
            .send()
    };
    let rotated: AuthResponse = refresh(session.refresh_token.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(rotated.refresh_token, session.refresh_token);
    expect_error(
        refresh(session.refresh_token.clone()).await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    expect_error(
        refresh(rotated.refresh_token.clone()).await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    let revoked = authed(&mock, &http, &player, Method::GET, "/api/v1/auth/profile")
        .bearer_auth(&rotated.access_token)
        .send()
        .await
        .unwrap();
    expect_error(revoked, 401, "unauthorized").await;

    // Logout revokes the access token and the refresh token of that session.
    let fresh: AuthResponse = login("hunter2hunter2").await.unwrap().json().await.unwrap();
    let resp = req(&mock, &http, Method::POST, "/api/v1/auth/logout")
        .bearer_auth(&fresh.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let after = req(&mock, &http, Method::GET, "/api/v1/auth/profile")
        .bearer_auth(&fresh.access_token)
        .send()
        .await
        .unwrap();
    expect_error(after, 401, "unauthorized").await;
    expect_error(
        refresh(fresh.refresh_token).await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    assert_eq!(mock.users().len(), 1);
    mock.stop().await;
}

#[tokio::test]
async fn device_sign_in_reaches_the_same_account() {
    let mock = MockServer::start().await;
    let http = client();
    let first = device_player(&mock, &http, "device-same-001").await;
    let second = device_player(&mock, &http, "device-same-001").await;
    assert_eq!(first.user_id, second.user_id);
    assert_ne!(first.access_token, second.access_token);
    let other = device_player(&mock, &http, "device-other-01").await;
    assert_ne!(other.user_id, first.user_id);
    let short = req(&mock, &http, Method::POST, "/api/v1/auth/device")
        .json(&json!({"device_id": "x"}))
        .send()
        .await
        .unwrap();
    expect_error(short, 400, "invalid_request").await;
    mock.stop().await;
}

#[tokio::test]
async fn requests_need_the_client_key_and_valid_json() {
    let mock = MockServer::start().await;
    let http = client();
    let no_key = http
        .post(format!("{}/api/v1/auth/device", mock.url()))
        .json(&json!({"device_id": "device-nokey-01"}))
        .send()
        .await
        .unwrap();
    expect_error(no_key, 401, "unauthorized").await;
    let wrong_key = http
        .post(format!("{}/api/v1/auth/device", mock.url()))
        .header("X-AeThex-Key", "ck_wrong")
        .json(&json!({"device_id": "device-nokey-01"}))
        .send()
        .await
        .unwrap();
    expect_error(wrong_key, 401, "unauthorized").await;
    let garbage = req(&mock, &http, Method::POST, "/api/v1/auth/device")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    expect_error(garbage, 400, "invalid_request").await;
    let no_token = req(&mock, &http, Method::GET, "/api/v1/saves/me")
        .send()
        .await
        .unwrap();
    expect_error(no_token, 401, "unauthorized").await;
    let unknown = req(&mock, &http, Method::GET, "/api/v1/nothing-here")
        .send()
        .await
        .unwrap();
    expect_error(unknown, 404, "not_found").await;
    mock.stop().await;
}

#[tokio::test]
async fn save_load_etag_list_history_restore_delete() {
    let mock = MockServer::start().await;
    let http = client();
    let player = device_player(&mock, &http, "device-saves-01").await;
    let v1: SaveSlotInfo = write_save(&mock, &http, &player, "slot1", json!({"level": 1}), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v1.version, 1);
    assert_eq!(v1.metadata, json!({}));
    let resp = authed(&mock, &http, &player, Method::POST, "/api/v1/saves/me")
        .json(&json!({"slot": "slot1", "data": {"level": 2}, "metadata": {"hero": "ann"}, "base_version": 1}))
        .send()
        .await
        .unwrap();
    let v2: SaveSlotInfo = resp.json().await.unwrap();
    assert_eq!(
        (v2.version, v2.metadata.clone()),
        (2, json!({"hero": "ann"}))
    );

    // A stale base version conflicts and overwrites nothing.
    let stale = write_save(&mock, &http, &player, "slot1", json!({"level": 9}), Some(1)).await;
    let envelope = expect_error(stale, 409, "save_conflict").await;
    assert_eq!(envelope.error.details.unwrap()["current"]["version"], 2);

    let path = format!("/api/v1/saves/{}/slot1", player.user_id);
    let resp = authed(&mock, &http, &player, Method::GET, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["etag"], "\"2\"");
    let loaded: SaveData = resp.json().await.unwrap();
    assert_eq!(loaded.data, json!({"level": 2}));
    assert_eq!(loaded.info, v2);
    let cached = authed(&mock, &http, &player, Method::GET, &path)
        .header("If-None-Match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    let changed = authed(&mock, &http, &player, Method::GET, &path)
        .header("If-None-Match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);

    write_save(&mock, &http, &player, "slot2", json!([1, 2, 3]), None).await;
    let list: SaveList = authed(&mock, &http, &player, Method::GET, "/api/v1/saves/me")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<_> = list.slots.iter().map(|s| s.slot.as_str()).collect();
    assert_eq!(names, vec!["slot1", "slot2"]);
    assert_eq!(list.used_bytes, v1.size + v2.size + list.slots[1].size);
    assert_eq!(list.quota_bytes, 1024 * 1024 * 1024);

    let restored: SaveSlotInfo = authed(
        &mock,
        &http,
        &player,
        Method::POST,
        "/api/v1/saves/me/slot1/restore",
    )
    .json(&json!({"version": 1}))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(restored.version, 3);
    assert_eq!(restored.checksum, v1.checksum);
    let missing = authed(
        &mock,
        &http,
        &player,
        Method::POST,
        "/api/v1/saves/me/slot1/restore",
    )
    .json(&json!({"version": 42}))
    .send()
    .await
    .unwrap();
    expect_error(missing, 404, "not_found").await;

    let deleted = authed(
        &mock,
        &http,
        &player,
        Method::DELETE,
        "/api/v1/saves/me/slot1",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(deleted.status(), 204);
    let gone = authed(&mock, &http, &player, Method::GET, "/api/v1/saves/me/slot1")
        .send()
        .await
        .unwrap();
    expect_error(gone, 404, "not_found").await;

    let history: SaveHistory = authed(
        &mock,
        &http,
        &player,
        Method::GET,
        "/api/v1/saves/me/history?slot=slot1",
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let kinds: Vec<_> = history
        .versions
        .iter()
        .map(|v| (v.version, v.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![(4, "delete"), (3, "restore"), (2, "write"), (1, "write")]
    );
    let all: SaveHistory = authed(
        &mock,
        &http,
        &player,
        Method::GET,
        "/api/v1/saves/me/history",
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(all.versions.len(), 5);
    // Writing a deleted slot again starts from "does not exist" and keeps counting versions.
    let again: SaveSlotInfo =
        write_save(&mock, &http, &player, "slot1", json!({"new": true}), None)
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(again.version, 5);
    mock.stop().await;
}

#[tokio::test]
async fn players_cannot_touch_each_others_saves() {
    let mock = MockServer::start().await;
    let http = client();
    let ann = device_player(&mock, &http, "device-ann-0001").await;
    let bob = device_player(&mock, &http, "device-bob-0001").await;
    write_save(&mock, &http, &ann, "slot1", json!({"mine": true}), None).await;
    for (method, path) in [
        (Method::GET, format!("/api/v1/saves/{}", ann.user_id)),
        (Method::GET, format!("/api/v1/saves/{}/slot1", ann.user_id)),
        (
            Method::DELETE,
            format!("/api/v1/saves/{}/slot1", ann.user_id),
        ),
        (
            Method::GET,
            format!("/api/v1/saves/{}/history", ann.user_id),
        ),
    ] {
        let resp = authed(&mock, &http, &bob, method, &path)
            .send()
            .await
            .unwrap();
        expect_error(resp, 403, "forbidden").await;
    }
    let resp = authed(
        &mock,
        &http,
        &bob,
        Method::POST,
        &format!("/api/v1/saves/{}", ann.user_id),
    )
    .json(&json!({"slot": "slot1", "data": 1, "base_version": 1}))
    .send()
    .await
    .unwrap();
    expect_error(resp, 403, "forbidden").await;
    assert_eq!(mock.versions(&ann.user_id, "slot1").len(), 1);
    mock.stop().await;
}

#[tokio::test]
async fn oversize_saves_and_quota_are_413() {
    let mock = MockServer::builder()
        .max_slot_bytes(100)
        .user_quota_bytes(150)
        .start()
        .await
        .unwrap();
    let http = client();
    let player = device_player(&mock, &http, "device-quota-01").await;
    let big = write_save(&mock, &http, &player, "s", json!("x".repeat(200)), None).await;
    expect_error(big, 413, "payload_too_large").await;
    let ok = write_save(&mock, &http, &player, "a", json!("x".repeat(80)), None).await;
    assert_eq!(ok.status(), 200);
    let over = write_save(&mock, &http, &player, "b", json!("x".repeat(80)), None).await;
    expect_error(over, 413, "quota_exceeded").await;
    assert!(mock.versions(&player.user_id, "b").is_empty());
    mock.stop().await;
}

#[tokio::test]
async fn zstd_request_bodies_are_accepted_and_zstd_answers_served() {
    let mock = MockServer::start().await;
    let http = client();
    let player = device_player(&mock, &http, "device-zstd-001").await;
    let data = json!({"map": "x".repeat(10_000)});
    let body = serde_json::to_vec(&json!({"slot": "z", "data": data})).unwrap();
    let compressed = zstd::encode_all(&body[..], 3).unwrap();
    assert!(compressed.len() < body.len() / 10);
    let resp = authed(&mock, &http, &player, Method::POST, "/api/v1/saves/me")
        .header("content-type", "application/json")
        .header("content-encoding", "zstd")
        .body(compressed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let entry = mock.requests_matching("POST /api/v1/saves/me").remove(0);
    assert_eq!(entry.content_encoding(), Some("zstd"));
    assert_eq!(mock.save(&player.user_id, "z").unwrap().data, data);

    let resp = authed(&mock, &http, &player, Method::GET, "/api/v1/saves/me/z")
        .header("accept-encoding", "zstd")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "zstd");
    let raw = resp.bytes().await.unwrap();
    let mut plain = Vec::new();
    zstd::Decoder::new(&raw[..])
        .unwrap()
        .read_to_end(&mut plain)
        .unwrap();
    let loaded: SaveData = serde_json::from_slice(&plain).unwrap();
    assert_eq!(loaded.data, data);

    let broken = authed(&mock, &http, &player, Method::POST, "/api/v1/saves/me")
        .header("content-type", "application/json")
        .header("content-encoding", "zstd")
        .body("definitely not zstd")
        .send()
        .await
        .unwrap();
    expect_error(broken, 400, "invalid_request").await;
    mock.stop().await;
}

#[tokio::test]
async fn linking_verification_and_password_reset() {
    let mock = MockServer::start().await;
    let http = client();
    let anon = device_player(&mock, &http, "device-link-001").await;
    let other = device_player(&mock, &http, "device-link-002").await;

    let linked: User = authed(
        &mock,
        &http,
        &anon,
        Method::POST,
        "/api/v1/auth/link/device",
    )
    .json(&json!({"device_id": "device-link-003"}))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(linked.id, anon.user_id);
    assert_eq!(
        device_player(&mock, &http, "device-link-003").await.user_id,
        anon.user_id
    );
    let taken = authed(
        &mock,
        &http,
        &other,
        Method::POST,
        "/api/v1/auth/link/device",
    )
    .json(&json!({"device_id": "device-link-001"}))
    .send()
    .await
    .unwrap();
    expect_error(taken, 409, "conflict").await;

    let upgraded: User = authed(&mock, &http, &anon, Method::POST, "/api/v1/auth/link/email")
        .json(&json!({"email": "cat@example.com", "password": "correct-horse"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        upgraded.linked,
        vec!["device".to_owned(), "email".to_owned()]
    );
    assert!(!upgraded.email_verified);
    let twice = authed(
        &mock,
        &http,
        &other,
        Method::POST,
        "/api/v1/auth/link/email",
    )
    .json(&json!({"email": "CAT@example.com", "password": "correct-horse"}))
    .send()
    .await
    .unwrap();
    expect_error(twice, 409, "conflict").await;

    let verify_token = mock.outbox()[0].token.clone();
    assert_eq!(mock.outbox()[0].kind, "verify_email");
    let verified: User = req(&mock, &http, Method::POST, "/api/v1/auth/email/verify")
        .json(&json!({ "token": verify_token }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(verified.email_verified);
    let reused = req(&mock, &http, Method::POST, "/api/v1/auth/email/verify")
        .json(&json!({ "token": verify_token }))
        .send()
        .await
        .unwrap();
    expect_error(reused, 404, "not_found").await;

    // The server writes the reset mail after answering (its timing must not reveal whether the
    // account exists), so wait for it; the unknown address is asked first so its (absent) mail
    // would be written before the known one's.
    for email in ["nobody@example.com", "cat@example.com"] {
        let resp = req(&mock, &http, Method::POST, "/api/v1/auth/password/forgot")
            .json(&json!({ "email": email }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
    }
    let asked = std::time::Instant::now();
    let mails = loop {
        let mails = mock.outbox();
        if mails.len() >= 2 || asked.elapsed() > std::time::Duration::from_secs(5) {
            break mails;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(mails.len(), 2, "no mail for an unknown address: {mails:?}");
    assert_eq!(mails[1].kind, "password_reset");
    let resp = req(&mock, &http, Method::POST, "/api/v1/auth/password/reset")
        .json(&json!({"token": mails[1].token, "new_password": "battery-staple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let login = req(&mock, &http, Method::POST, "/api/v1/auth/login")
        .json(&json!({"email": "cat@example.com", "password": "battery-staple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let old = req(&mock, &http, Method::POST, "/api/v1/auth/login")
        .json(&json!({"email": "cat@example.com", "password": "correct-horse"}))
        .send()
        .await
        .unwrap();
    expect_error(old, 401, "invalid_credentials").await;
    mock.stop().await;
}

#[tokio::test]
async fn save_preconditions_old_versions_and_validation() {
    let mock = MockServer::builder()
        .history_versions(3)
        .start()
        .await
        .unwrap();
    let http = client();
    let player = device_player(&mock, &http, "device-precond1").await;
    for bad in [
        json!({"slot": "history", "data": 1}),
        json!({"slot": ".hidden", "data": 1}),
        json!({"slot": "has space", "data": 1}),
        json!({"slot": "s", "data": 1, "metadata": [1]}),
        json!({"slot": "s", "data": 1, "base_version": -1}),
        json!({"slot": "s", "data": 1, "metadata": {"big": "x".repeat(5000)}}),
    ] {
        let resp = authed(&mock, &http, &player, Method::POST, "/api/v1/saves/me")
            .json(&bad)
            .send()
            .await
            .unwrap();
        expect_error(resp, 400, "invalid_request").await;
    }
    let first = write_save(&mock, &http, &player, "s", json!({"v": 1}), None).await;
    assert_eq!(first.headers()["etag"], "\"1\"");
    write_save(&mock, &http, &player, "s", json!({"v": 2}), Some(1)).await;

    let old: SaveData = authed(
        &mock,
        &http,
        &player,
        Method::GET,
        "/api/v1/saves/me/s?version=1",
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(old.data, json!({"v": 1}));

    let wrong_if_match = authed(&mock, &http, &player, Method::DELETE, "/api/v1/saves/me/s")
        .header("If-Match", "\"1\"")
        .send()
        .await
        .unwrap();
    expect_error(wrong_if_match, 409, "save_conflict").await;
    let deleted = authed(&mock, &http, &player, Method::DELETE, "/api/v1/saves/me/s")
        .header("If-Match", "\"2\"")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let again = authed(&mock, &http, &player, Method::DELETE, "/api/v1/saves/me/s")
        .send()
        .await
        .unwrap();
    expect_error(again, 404, "not_found").await;

    // On a deleted slot a stale base conflicts with current = null, current_version = 3.
    let stale = write_save(&mock, &http, &player, "s", json!({"v": 9}), Some(2)).await;
    let details = expect_error(stale, 409, "save_conflict")
        .await
        .error
        .details
        .unwrap();
    assert_eq!(details, json!({"current": null, "current_version": 3}));

    let from_delete = authed(
        &mock,
        &http,
        &player,
        Method::POST,
        "/api/v1/saves/me/s/restore",
    )
    .json(&json!({"version": 3}))
    .send()
    .await
    .unwrap();
    expect_error(from_delete, 400, "invalid_request").await;
    let conditional = authed(
        &mock,
        &http,
        &player,
        Method::POST,
        "/api/v1/saves/me/s/restore",
    )
    .json(&json!({"version": 1, "base_version": 2}))
    .send()
    .await
    .unwrap();
    expect_error(conditional, 409, "save_conflict").await;
    let restored = authed(
        &mock,
        &http,
        &player,
        Method::POST,
        "/api/v1/saves/me/s/restore",
    )
    .json(&json!({"version": 1, "base_version": 0}))
    .send()
    .await
    .unwrap();
    assert_eq!(restored.headers()["etag"], "\"4\"");
    let history: Value = authed(
        &mock,
        &http,
        &player,
        Method::GET,
        "/api/v1/saves/me/history",
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    // Three kept versions per slot: version 1 was pruned by the restore.
    let kept: Vec<_> = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap(),
                v["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kept,
        vec![
            (4, "restore".to_owned()),
            (3, "delete".to_owned()),
            (2, "write".to_owned())
        ]
    );
    assert_eq!(history["versions"][0]["restored_from"], 1);
    assert!(history["versions"][1].get("restored_from").is_none());
    let pruned = authed(
        &mock,
        &http,
        &player,
        Method::GET,
        "/api/v1/saves/me/s?version=1",
    )
    .send()
    .await
    .unwrap();
    expect_error(pruned, 404, "not_found").await;
    let list: SaveList = authed(&mock, &http, &player, Method::GET, "/api/v1/saves/me")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sizes: i64 = mock
        .versions(&player.user_id, "s")
        .iter()
        .map(|v| v.size)
        .sum();
    assert_eq!(list.used_bytes, sizes);
    mock.stop().await;
}
