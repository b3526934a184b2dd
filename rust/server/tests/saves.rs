//! Cloud saves over real HTTP on every backend: versions, conflicts, history, restore, delete,
//! access control, limits, compression and encryption at rest.

mod common;

use common::{backends, expect_error, expect_status, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

struct Player {
    token: String,
    id: String,
}

async fn player(s: &TestServer) -> Player {
    let auth = s.device_player().await;
    Player {
        token: auth["access_token"].as_str().unwrap().to_owned(),
        id: auth["user"]["id"].as_str().unwrap().to_owned(),
    }
}

async fn write(s: &TestServer, p: &Player, body: Value) -> reqwest::Response {
    s.player(Method::POST, "/api/v1/saves/me", &p.token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn write_ok(s: &TestServer, p: &Player, slot: &str, data: Value, base: i64) -> Value {
    let resp = write(
        s,
        p,
        json!({"slot": slot, "data": data, "base_version": base}),
    )
    .await;
    expect_status(resp, StatusCode::OK).await
}

async fn get(s: &TestServer, p: &Player, path: &str) -> reqwest::Response {
    s.player(Method::GET, path, &p.token).send().await.unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every blob file under the server's local blob folder.
fn blob_files(s: &TestServer) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&s.data_dir.path().join("blobs").join("saves"), &mut out);
    out
}

#[tokio::test]
async fn save_load_conflict_history_restore_delete() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let p = player(&s).await;

        let empty = expect_status(get(&s, &p, "/api/v1/saves/me").await, StatusCode::OK).await;
        assert_eq!(empty["slots"], json!([]));
        assert_eq!(empty["used_bytes"], 0);
        assert_eq!(empty["quota_bytes"], 1024 * 1024 * 1024);

        let data1 = json!({"level": 3, "gold": 120, "name": "Ünïcode ✓"});
        let resp = write(
            &s,
            &p,
            json!({"slot": "slot1", "data": data1, "metadata": {"level": 3}}),
        )
        .await;
        assert_eq!(resp.headers()["etag"], "\"1\"");
        let v1 = expect_status(resp, StatusCode::OK).await;
        let bytes1 = serde_json::to_vec(&data1).unwrap();
        assert_eq!(v1["version"], 1);
        assert_eq!(v1["slot"], "slot1");
        assert_eq!(v1["size"], bytes1.len() as i64);
        assert_eq!(v1["checksum"], sha256_hex(&bytes1));
        assert_eq!(v1["metadata"], json!({"level": 3}));

        // Load: data, ETag, then 304 for the same version.
        let resp = get(&s, &p, "/api/v1/saves/me/slot1").await;
        assert_eq!(resp.headers()["etag"], "\"1\"");
        let loaded = expect_status(resp, StatusCode::OK).await;
        assert_eq!(loaded["data"], data1);
        assert_eq!(loaded["version"], 1);
        assert_eq!(loaded["checksum"], v1["checksum"]);
        let not_modified = s
            .player(Method::GET, "/api/v1/saves/me/slot1", &p.token)
            .header("If-None-Match", "\"1\"")
            .send()
            .await
            .unwrap();
        assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
        let stale = s
            .player(Method::GET, "/api/v1/saves/me/slot1", &p.token)
            .header("If-None-Match", "\"0\"")
            .send()
            .await
            .unwrap();
        assert_eq!(stale.status(), StatusCode::OK);

        // Second write based on v1, then a conflicting write still based on v1.
        let data2 = json!({"level": 4, "gold": 10});
        let v2 = write_ok(&s, &p, "slot1", data2.clone(), 1).await;
        assert_eq!(v2["version"], 2);
        let conflict = expect_error(
            write(
                &s,
                &p,
                json!({"slot": "slot1", "data": {"level": 99}, "base_version": 1}),
            )
            .await,
            StatusCode::CONFLICT,
            "save_conflict",
        )
        .await;
        assert_eq!(conflict["error"]["details"]["current"], v2);
        assert_eq!(conflict["error"]["details"]["current_version"], 2);
        // Writing a new slot over an existing one without base_version conflicts too.
        let conflict = expect_error(
            write(&s, &p, json!({"slot": "slot1", "data": 1})).await,
            StatusCode::CONFLICT,
            "save_conflict",
        )
        .await;
        assert_eq!(
            conflict["error"]["details"]["current"]["checksum"],
            v2["checksum"]
        );
        // Nothing was lost: v2 still loads.
        let loaded =
            expect_status(get(&s, &p, "/api/v1/saves/me/slot1").await, StatusCode::OK).await;
        assert_eq!(loaded["data"], data2);
        assert_eq!(loaded["version"], 2);

        // An older kept version is readable by number.
        let old = expect_status(
            get(&s, &p, "/api/v1/saves/me/slot1?version=1").await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(old["data"], data1);

        write_ok(&s, &p, "other", json!([1, 2, 3]), 0).await;
        let list = expect_status(get(&s, &p, "/api/v1/saves/me").await, StatusCode::OK).await;
        let slots: Vec<&str> = list["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["slot"].as_str().unwrap())
            .collect();
        assert_eq!(slots, ["other", "slot1"]);
        assert_eq!(list["slots"][1], v2);
        let expected_used = bytes1.len() + serde_json::to_vec(&data2).unwrap().len() + 7;
        assert_eq!(list["used_bytes"], expected_used as i64);

        // History: newest first, one slot or all.
        let history = expect_status(
            get(&s, &p, "/api/v1/saves/me/history?slot=slot1").await,
            StatusCode::OK,
        )
        .await;
        let versions: Vec<i64> = history["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_i64().unwrap())
            .collect();
        assert_eq!(versions, [2, 1]);
        assert_eq!(history["versions"][1]["kind"], "write");
        assert_eq!(history["versions"][1]["checksum"], v1["checksum"]);
        let all = expect_status(
            get(&s, &p, "/api/v1/saves/me/history").await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(all["versions"].as_array().unwrap().len(), 3);

        // Restore v1: a new version 3 with v1's content and metadata.
        let restored = expect_status(
            s.player(Method::POST, "/api/v1/saves/me/slot1/restore", &p.token)
                .json(&json!({"version": 1}))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(restored["version"], 3);
        assert_eq!(restored["checksum"], v1["checksum"]);
        assert_eq!(restored["metadata"], json!({"level": 3}));
        let loaded =
            expect_status(get(&s, &p, "/api/v1/saves/me/slot1").await, StatusCode::OK).await;
        assert_eq!(loaded["data"], data1);
        let history = expect_status(
            get(&s, &p, "/api/v1/saves/me/history?slot=slot1").await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(history["versions"][0]["kind"], "restore");
        assert_eq!(history["versions"][0]["restored_from"], 1);
        assert_eq!(history["versions"].as_array().unwrap().len(), 3);
        // A restore conditioned on a stale base conflicts.
        expect_error(
            s.player(Method::POST, "/api/v1/saves/me/slot1/restore", &p.token)
                .json(&json!({"version": 2, "base_version": 2}))
                .send()
                .await
                .unwrap(),
            StatusCode::CONFLICT,
            "save_conflict",
        )
        .await;

        // Delete with a stale If-Match conflicts; then delete for real.
        let stale_delete = s
            .player(Method::DELETE, "/api/v1/saves/me/slot1", &p.token)
            .header("If-Match", "\"2\"")
            .send()
            .await
            .unwrap();
        expect_error(stale_delete, StatusCode::CONFLICT, "save_conflict").await;
        let deleted = s
            .player(Method::DELETE, "/api/v1/saves/me/slot1", &p.token)
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
        expect_error(
            get(&s, &p, "/api/v1/saves/me/slot1").await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        expect_error(
            s.player(Method::DELETE, "/api/v1/saves/me/slot1", &p.token)
                .send()
                .await
                .unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        let list = expect_status(get(&s, &p, "/api/v1/saves/me").await, StatusCode::OK).await;
        assert_eq!(list["slots"].as_array().unwrap().len(), 1);
        let history = expect_status(
            get(&s, &p, "/api/v1/saves/me/history?slot=slot1").await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(history["versions"][0]["kind"], "delete");
        assert_eq!(history["versions"][0]["version"], 4);
        // A write based on an old version conflicts with the deletion; details.current is null.
        let conflict = expect_error(
            write(
                &s,
                &p,
                json!({"slot": "slot1", "data": 5, "base_version": 3}),
            )
            .await,
            StatusCode::CONFLICT,
            "save_conflict",
        )
        .await;
        assert_eq!(conflict["error"]["details"]["current"], Value::Null);
        assert_eq!(conflict["error"]["details"]["current_version"], 4);
        // The deletion itself cannot be restored; a version before it can.
        expect_error(
            s.player(Method::POST, "/api/v1/saves/me/slot1/restore", &p.token)
                .json(&json!({"version": 4}))
                .send()
                .await
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .await;
        let back = expect_status(
            s.player(Method::POST, "/api/v1/saves/me/slot1/restore", &p.token)
                .json(&json!({"version": 2}))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(back["version"], 5);
        let loaded =
            expect_status(get(&s, &p, "/api/v1/saves/me/slot1").await, StatusCode::OK).await;
        assert_eq!(loaded["data"], data2);
        expect_error(
            s.player(Method::POST, "/api/v1/saves/me/slot1/restore", &p.token)
                .json(&json!({"version": 77}))
                .send()
                .await
                .unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;

        // After a delete, base_version 0 starts the slot again (versions keep counting).
        s.player(Method::DELETE, "/api/v1/saves/me/other", &p.token)
            .send()
            .await
            .unwrap();
        let again = write_ok(&s, &p, "other", json!("fresh"), 0).await;
        assert_eq!(again["version"], 3);

        // Players address themselves by id as well as by `me`.
        let by_id = expect_status(
            get(&s, &p, &format!("/api/v1/saves/{}/other", p.id)).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(by_id["data"], "fresh");
        s.stop().await;
    }
}

#[tokio::test]
async fn players_cannot_touch_other_players_saves() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let alice = player(&s).await;
        let mallory = player(&s).await;
        write_ok(&s, &alice, "main", json!({"secret": 1}), 0).await;
        let base = format!("/api/v1/saves/{}", alice.id);
        let attempts = [
            s.player(Method::GET, &base, &mallory.token),
            s.player(Method::POST, &base, &mallory.token)
                .json(&json!({"slot": "main", "data": 2, "base_version": 1})),
            s.player(Method::GET, &format!("{base}/main"), &mallory.token),
            s.player(Method::GET, &format!("{base}/history"), &mallory.token),
            s.player(Method::DELETE, &format!("{base}/main"), &mallory.token),
            s.player(
                Method::POST,
                &format!("{base}/main/restore"),
                &mallory.token,
            )
            .json(&json!({"version": 1})),
        ];
        for attempt in attempts {
            expect_error(
                attempt.send().await.unwrap(),
                StatusCode::FORBIDDEN,
                "forbidden",
            )
            .await;
        }
        // No credentials at all: 401.
        expect_error(
            s.req(Method::GET, &base).send().await.unwrap(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
        // Alice's save is untouched.
        let loaded = expect_status(
            get(&s, &alice, "/api/v1/saves/me/main").await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(loaded["data"], json!({"secret": 1}));
        assert_eq!(loaded["version"], 1);
        s.stop().await;
    }
}

#[tokio::test]
async fn server_key_reads_and_writes_a_players_saves() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let p = player(&s).await;
        write_ok(&s, &p, "main", json!({"hp": 10}), 0).await;
        let base = format!("/api/v1/saves/{}", p.id);
        let loaded = expect_status(
            s.admin(Method::GET, &format!("{base}/main"))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(loaded["data"], json!({"hp": 10}));
        let written = expect_status(
            s.admin(Method::POST, &base)
                .json(&json!({"slot": "main", "data": {"hp": 20}, "base_version": 1}))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(written["version"], 2);
        let list = expect_status(
            s.admin(Method::GET, &base).send().await.unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(list["slots"][0]["version"], 2);
        let history = expect_status(
            s.admin(Method::GET, &format!("{base}/history"))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(history["versions"].as_array().unwrap().len(), 2);
        // The player sees the server's write.
        let mine = expect_status(get(&s, &p, "/api/v1/saves/me/main").await, StatusCode::OK).await;
        assert_eq!(mine["data"], json!({"hp": 20}));
        // Unknown users are 404, `me` means nothing for a server key, a bad key is 401.
        expect_error(
            s.admin(
                Method::GET,
                "/api/v1/saves/00000000-0000-7000-8000-000000000000",
            )
            .send()
            .await
            .unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        expect_error(
            s.admin(Method::GET, "/api/v1/saves/me")
                .send()
                .await
                .unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        expect_error(
            s.http
                .get(s.url(&base))
                .header("Authorization", "ServerKey wrong")
                .send()
                .await
                .unwrap(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
        s.stop().await;
    }
}

#[tokio::test]
async fn slot_size_limit_and_big_saves() {
    for backend in backends() {
        let s = TestServer::start_with(backend, |c| c.saves.max_slot_bytes = 3 * 1024 * 1024).await;
        let p = player(&s).await;
        // 2.5 MiB: above the server's default 1 MiB body limit, within this slot limit.
        let big = "x".repeat(2_500_000);
        let saved = write_ok(&s, &p, "big", json!(big), 0).await;
        assert_eq!(saved["size"], 2_500_002);
        let loaded = expect_status(get(&s, &p, "/api/v1/saves/me/big").await, StatusCode::OK).await;
        assert_eq!(loaded["data"].as_str().unwrap().len(), 2_500_000);
        // Above the slot limit but within the body limit: measured, typed 413.
        let over = "y".repeat(3 * 1024 * 1024);
        expect_error(
            write(
                &s,
                &p,
                json!({"slot": "big", "data": over, "base_version": 1}),
            )
            .await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        )
        .await;
        // Far above the body limit: rejected while reading, same typed 413.
        let huge = "z".repeat(8 * 1024 * 1024);
        expect_error(
            write(
                &s,
                &p,
                json!({"slot": "big", "data": huge, "base_version": 1}),
            )
            .await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        )
        .await;
        // A small zstd body that inflates past the limit is stopped while decompressing.
        let bomb =
            serde_json::to_vec(&json!({"slot": "big", "data": "b".repeat(16 * 1024 * 1024)}))
                .unwrap();
        let bomb = zstd::encode_all(bomb.as_slice(), 3).unwrap();
        assert!(bomb.len() < 64 * 1024);
        expect_error(
            s.player(Method::POST, "/api/v1/saves/me", &p.token)
                .header("Content-Type", "application/json")
                .header("Content-Encoding", "zstd")
                .body(bomb)
                .send()
                .await
                .unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        )
        .await;
        let loaded = expect_status(get(&s, &p, "/api/v1/saves/me/big").await, StatusCode::OK).await;
        assert_eq!(loaded["version"], 1);
        s.stop().await;
    }
}

#[tokio::test]
async fn user_quota_counts_kept_versions() {
    for backend in backends() {
        let s = TestServer::start_with(backend, |c| {
            c.saves.user_quota_bytes = 1000;
            c.saves.history_versions = 2;
        })
        .await;
        let p = player(&s).await;
        let blob = |n: usize| json!("q".repeat(n - 2)); // serialized size n (with quotes)
        write_ok(&s, &p, "a", blob(400), 0).await;
        write_ok(&s, &p, "a", blob(400), 1).await;
        // 800 used; 300 more would exceed 1000.
        let err = expect_error(
            write(&s, &p, json!({"slot": "b", "data": blob(300)})).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "quota_exceeded",
        )
        .await;
        assert_eq!(err["error"]["details"]["used_bytes"], 800);
        // Writing slot a again prunes its oldest version (2 kept), so it fits: 400 + 500.
        write_ok(&s, &p, "a", blob(500), 2).await;
        let list = expect_status(get(&s, &p, "/api/v1/saves/me").await, StatusCode::OK).await;
        assert_eq!(list["used_bytes"], 900);
        assert_eq!(list["quota_bytes"], 1000);
        // Another player has their own quota.
        let q = player(&s).await;
        write_ok(&s, &q, "b", blob(300), 0).await;
        s.stop().await;
    }
}

#[tokio::test]
async fn invalid_input_is_a_typed_400() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let p = player(&s).await;
        let garbage = s
            .player(Method::POST, "/api/v1/saves/me", &p.token)
            .header("Content-Type", "application/json")
            .body("{\"slot\": \"a\", \"data\": ")
            .send()
            .await
            .unwrap();
        expect_error(garbage, StatusCode::BAD_REQUEST, "invalid_request").await;
        let long_name = "n".repeat(65);
        let bad_bodies = [
            json!({"data": 1}),
            json!({"slot": "", "data": 1}),
            json!({"slot": long_name, "data": 1}),
            json!({"slot": "has space", "data": 1}),
            json!({"slot": "../etc", "data": 1}),
            json!({"slot": "history", "data": 1}),
            json!({"slot": "ok", "data": 1, "metadata": [1]}),
            json!({"slot": "ok", "data": 1, "metadata": {"pad": "m".repeat(5000)}}),
            json!({"slot": "ok", "data": 1, "base_version": -1}),
            json!({"slot": "ok", "data": 1, "base_version": "one"}),
        ];
        for body in bad_bodies {
            let resp = write(&s, &p, body.clone()).await;
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
            expect_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
        }
        for path in [
            "/api/v1/saves/me/bad%20name",
            "/api/v1/saves/me/history?slot=bad%20name",
            "/api/v1/saves/me/ok?version=abc",
        ] {
            expect_error(
                get(&s, &p, path).await,
                StatusCode::BAD_REQUEST,
                "invalid_request",
            )
            .await;
        }
        expect_error(
            s.player(Method::POST, "/api/v1/saves/me/ok/restore", &p.token)
                .header("Content-Type", "application/json")
                .body("nope")
                .send()
                .await
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .await;
        expect_error(
            get(&s, &p, "/api/v1/saves/me/missing").await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        // Nothing was written by any of it.
        let list = expect_status(get(&s, &p, "/api/v1/saves/me").await, StatusCode::OK).await;
        assert_eq!(list["slots"], json!([]));
        assert!(blob_files(&s).is_empty());
        s.stop().await;
    }
}

#[tokio::test]
async fn zstd_request_and_response_bodies() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let p = player(&s).await;
        let data = json!({"map": "tile ".repeat(2000), "seed": 42});
        let body = serde_json::to_vec(&json!({"slot": "world", "data": data})).unwrap();
        let compressed = zstd::encode_all(body.as_slice(), 3).unwrap();
        assert!(compressed.len() < body.len() / 10);
        let saved = expect_status(
            s.player(Method::POST, "/api/v1/saves/me", &p.token)
                .header("Content-Type", "application/json")
                .header("Content-Encoding", "zstd")
                .body(compressed)
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(
            saved["checksum"],
            sha256_hex(&serde_json::to_vec(&data).unwrap())
        );

        let resp = s
            .player(Method::GET, "/api/v1/saves/me/world", &p.token)
            .header("Accept-Encoding", "zstd")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-encoding"], "zstd");
        assert_eq!(resp.headers()["etag"], "\"1\"");
        let raw = resp.bytes().await.unwrap();
        let decoded: Value = serde_json::from_slice(&zstd::decode_all(&raw[..]).unwrap()).unwrap();
        assert_eq!(decoded["data"], data);
        assert!(
            raw.len() < 1000,
            "response was not compressed: {} bytes",
            raw.len()
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn blobs_are_encrypted_at_rest_and_verified_on_read() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let key_file = s.data_dir.path().join("save-encryption-key");
        assert!(key_file.exists(), "no generated encryption key");
        let p = player(&s).await;
        let marker = "PLAINTEXT-MARKER-".repeat(100);
        write_ok(&s, &p, "secret", json!({"m": marker}), 0).await;
        let files = blob_files(&s);
        assert_eq!(files.len(), 1);
        let stored = std::fs::read(&files[0]).unwrap();
        assert!(!stored.windows(17).any(|w| w == b"PLAINTEXT-MARKER-"));
        assert!(
            zstd::decode_all(stored.as_slice()).is_err(),
            "blob is plain zstd"
        );
        assert!(stored.len() < marker.len(), "blob is not compressed");

        // A damaged blob is a 500, never wrong data.
        let mut damaged = stored.clone();
        let mid = damaged.len() / 2;
        damaged[mid] ^= 0x40;
        std::fs::write(&files[0], &damaged).unwrap();
        expect_error(
            get(&s, &p, "/api/v1/saves/me/secret").await,
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
        )
        .await;
        let metrics = s
            .http
            .get(s.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("aethex_save_corrupt_blobs_total"),
            "{metrics}"
        );
        std::fs::write(&files[0], &stored).unwrap();
        let loaded =
            expect_status(get(&s, &p, "/api/v1/saves/me/secret").await, StatusCode::OK).await;
        assert_eq!(loaded["data"]["m"], marker);
        s.stop().await;
    }

    // A configured key is used instead of a generated one.
    let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [9u8; 32]);
    let s = TestServer::start_with(common::Backend::Sqlite, |c| {
        c.saves.encryption_key = Some(key)
    })
    .await;
    assert!(!s.data_dir.path().join("save-encryption-key").exists());
    let p = player(&s).await;
    write_ok(&s, &p, "a", json!("configured"), 0).await;
    let loaded = expect_status(get(&s, &p, "/api/v1/saves/me/a").await, StatusCode::OK).await;
    assert_eq!(loaded["data"], "configured");
    s.stop().await;
}

#[tokio::test]
async fn retention_prunes_old_versions_and_their_blobs() {
    for backend in backends() {
        let s = TestServer::start_with(backend, |c| c.saves.history_versions = 3).await;
        let p = player(&s).await;
        for version in 1..=6 {
            write_ok(&s, &p, "slot", json!({"v": version}), version - 1).await;
        }
        let history = expect_status(
            get(&s, &p, "/api/v1/saves/me/history?slot=slot").await,
            StatusCode::OK,
        )
        .await;
        let versions: Vec<i64> = history["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_i64().unwrap())
            .collect();
        assert_eq!(versions, [6, 5, 4]);
        assert_eq!(blob_files(&s).len(), 3);
        expect_error(
            get(&s, &p, "/api/v1/saves/me/slot?version=3").await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        let v4 = expect_status(
            get(&s, &p, "/api/v1/saves/me/slot?version=4").await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(v4["data"], json!({"v": 4}));
        let list = expect_status(get(&s, &p, "/api/v1/saves/me").await, StatusCode::OK).await;
        assert_eq!(list["used_bytes"], 3 * 7); // {"v":N} is 7 bytes
        s.stop().await;
    }
}

#[tokio::test]
async fn concurrent_writers_with_the_same_base_one_wins() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let p = player(&s).await;
        write_ok(&s, &p, "race", json!(0), 0).await;
        for round in 1..=5i64 {
            let writers = (0..6).map(|i| {
                s.player(Method::POST, "/api/v1/saves/me", &p.token)
                    .json(&json!({"slot": "race", "data": {"round": round, "writer": i}, "base_version": round}))
                    .send()
            });
            let results = futures::future::join_all(writers).await;
            let mut ok = 0;
            let mut conflicts = 0;
            for resp in results {
                match resp.unwrap().status() {
                    StatusCode::OK => ok += 1,
                    StatusCode::CONFLICT => conflicts += 1,
                    other => panic!("unexpected status {other}"),
                }
            }
            assert_eq!((ok, conflicts), (1, 5), "round {round} on {backend:?}");
        }
        let loaded =
            expect_status(get(&s, &p, "/api/v1/saves/me/race").await, StatusCode::OK).await;
        assert_eq!(loaded["version"], 6);
        assert_eq!(loaded["data"]["round"], 5);
        // Losers left no blobs behind: one per kept version.
        assert_eq!(blob_files(&s).len(), 6);
        s.stop().await;
    }
}

#[tokio::test]
async fn every_save_endpoint_is_in_the_openapi_document() {
    let s = TestServer::start(common::Backend::Sqlite).await;
    let doc = s.openapi_document().await;
    let paths = &doc["paths"];
    assert!(paths["/api/v1/saves/{user_id}"]["get"].is_object());
    assert!(paths["/api/v1/saves/{user_id}"]["post"].is_object());
    assert!(paths["/api/v1/saves/{user_id}/{save_id}"]["get"].is_object());
    assert!(paths["/api/v1/saves/{user_id}/{save_id}"]["delete"].is_object());
    assert!(paths["/api/v1/saves/{user_id}/history"]["get"].is_object());
    assert!(paths["/api/v1/saves/{user_id}/{save_id}/restore"]["post"].is_object());
    assert!(doc["components"]["schemas"]["SaveConflictDetails"].is_object());
    s.stop().await;
}
