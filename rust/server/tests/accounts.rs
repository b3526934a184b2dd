//! Account hardening over real HTTP on both databases: generated usernames never fail a sign-in,
//! look-alike usernames are one name, lockout cannot be used to keep an owner out, data files are
//! private, and orphaned save blobs are reclaimed.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{backends, expect_error, expect_status, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;

const PASSWORD: &str = "correct horse battery";

async fn register(s: &TestServer, email: &str, username: &str) -> reqwest::Response {
    s.req(Method::POST, "/api/v1/auth/register")
        .json(&json!({"email": email, "password": PASSWORD, "username": username}))
        .send()
        .await
        .unwrap()
}

async fn device(s: &TestServer, device_id: &str, username: Option<&str>) -> reqwest::Response {
    let mut body = json!({ "device_id": device_id });
    if let Some(name) = username {
        body["username"] = json!(name);
    }
    s.req(Method::POST, "/api/v1/auth/device")
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn generated_usernames_are_long_and_retried_when_taken() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        // Generated names carry 80 random bits (20 hex digits), not 32.
        let auth = s.device_player().await;
        let name = auth["user"]["username"].as_str().unwrap().to_owned();
        let hex = name.strip_prefix("player_").expect("generated name");
        assert_eq!(hex.len(), 20, "{name}");
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{name}");

        // Occupy the names the generator will produce first: the name itself, and a look-alike
        // (Cyrillic `а`) of another account's name.
        expect_status(
            register(&s, "taken@example.com", "player_taken").await,
            StatusCode::CREATED,
        )
        .await;
        let script = ["player_taken", "pl\u{0430}yer_taken", "player_free"];
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        s.state.auth.username_generator.replace(move || {
            let i = counter.fetch_add(1, Ordering::SeqCst);
            script[i.min(script.len() - 1)].to_owned()
        });
        let auth = expect_status(device(&s, "device-collides-1", None).await, StatusCode::OK).await;
        assert_eq!(auth["user"]["username"], "player_free");
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        // A requested name that is taken is still the player's 409.
        expect_error(
            device(&s, "device-collides-2", Some("player_taken")).await,
            StatusCode::CONFLICT,
            "conflict",
        )
        .await;

        // The retry is bounded: a generator that only yields taken names ends in an error, not
        // a loop.
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        s.state.auth.username_generator.replace(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            "player_taken".to_owned()
        });
        let resp = device(&s, "device-collides-3", None).await;
        assert_eq!(resp.status(), StatusCode::CONFLICT);
        assert_eq!(calls.load(Ordering::SeqCst), 8);
        s.stop().await;
    }
}

#[tokio::test]
async fn many_concurrent_device_sign_ins_all_succeed() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let results = futures::future::join_all((0..200).map(|i| {
            let s = &s;
            async move {
                device(s, &format!("device-many-{i:04}"), None)
                    .await
                    .status()
            }
        }))
        .await;
        assert!(
            results.iter().all(|st| *st == StatusCode::OK),
            "{results:?}"
        );
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&s.state.db.read)
            .await
            .unwrap();
        assert_eq!(count, 200);
        s.stop().await;
    }
}

#[tokio::test]
async fn look_alike_usernames_are_one_name_on_every_path() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let admin = expect_status(
            register(&s, "admin@example.com", "admin").await,
            StatusCode::CREATED,
        )
        .await;
        assert_eq!(admin["user"]["username"], "admin");
        expect_status(
            register(&s, "user1@example.com", "user1").await,
            StatusCode::CREATED,
        )
        .await;
        expect_status(
            register(&s, "adm@example.com", "Adm").await,
            StatusCode::CREATED,
        )
        .await;

        let look_alikes = [
            "\u{0430}dmin",                             // Cyrillic а
            "ADMIN",                                    // case
            "\u{ff41}\u{ff44}\u{ff4d}\u{ff49}\u{ff4e}", // fullwidth ａｄｍｉｎ
            "\u{ff55}\u{ff53}\u{ff45}\u{ff52}\u{ff11}", // fullwidth ｕｓｅｒ１
            "userl",                                    // l for 1
            "\u{1d56c}\u{1d589}\u{1d592}",              // 𝕬𝖉𝖒
        ];
        for (i, name) in look_alikes.iter().enumerate() {
            let body = expect_error(
                register(&s, &format!("la{i}@example.com"), name).await,
                StatusCode::CONFLICT,
                "conflict",
            )
            .await;
            assert!(
                body["error"]["message"].as_str().unwrap().contains("taken"),
                "{name}: {body}"
            );
            expect_error(
                device(&s, &format!("device-look-alike-{i}"), Some(name)).await,
                StatusCode::CONFLICT,
                "conflict",
            )
            .await;
        }

        // Profile updates: a look-alike of someone else's name is refused, of one's own is fine.
        let player = s.device_player().await;
        let token = player["access_token"].as_str().unwrap();
        let update = |name: &'static str| {
            s.player(Method::PUT, "/api/v1/auth/profile", token)
                .json(&json!({ "username": name }))
                .send()
        };
        expect_error(
            update("\u{0430}dmin").await.unwrap(),
            StatusCode::CONFLICT,
            "conflict",
        )
        .await;
        let admin_token = admin["access_token"].as_str().unwrap();
        let renamed = expect_status(
            s.player(Method::PUT, "/api/v1/auth/profile", admin_token)
                .json(&json!({ "username": "Admin" }))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(renamed["username"], "Admin");

        // Names are stored in NFKC: a fullwidth name that is free becomes plain letters.
        let fresh = expect_status(
            device(
                &s,
                "device-fullwidth",
                Some("\u{ff55}\u{ff53}\u{ff45}\u{ff52}\u{ff12}"),
            )
            .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(fresh["user"]["username"], "user2");
        // Distinct names stay distinct.
        expect_status(
            register(&s, "admiral@example.com", "admiral").await,
            StatusCode::CREATED,
        )
        .await;
        s.stop().await;
    }
}

#[tokio::test]
async fn concurrent_look_alike_registrations_have_one_winner() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let names = [
            "gamer",
            "GAMER",
            "g\u{0430}mer",
            "gam\u{0435}r",
            "\u{ff47}\u{ff41}\u{ff4d}\u{ff45}\u{ff52}",
            "Gamer",
            "g\u{0430}m\u{0435}r",
            "gAmEr",
        ];
        let via_register = names.iter().enumerate().map(|(i, name)| {
            let s = &s;
            async move { register(s, &format!("g{i}@example.com"), name).await }
        });
        let via_device = names.iter().enumerate().map(|(i, name)| {
            let s = &s;
            async move { device(s, &format!("device-gamer-{i}"), Some(name)).await }
        });
        let (a, b) = futures::future::join(
            futures::future::join_all(via_register),
            futures::future::join_all(via_device),
        )
        .await;
        let mut winners = 0;
        for resp in a.into_iter().chain(b) {
            match resp.status() {
                StatusCode::CREATED | StatusCode::OK => {
                    winners += 1;
                    resp.bytes().await.unwrap();
                }
                _ => {
                    expect_error(resp, StatusCode::CONFLICT, "conflict").await;
                }
            }
        }
        assert_eq!(winners, 1);
        s.stop().await;
    }
}

#[tokio::test]
async fn existing_accounts_get_their_skeleton_at_start() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        expect_status(
            register(&s, "old@example.com", "oldtimer").await,
            StatusCode::CREATED,
        )
        .await;
        // As rows written before the skeleton column existed.
        sqlx::query("UPDATE users SET username_skeleton = NULL")
            .execute(&s.state.db.write)
            .await
            .unwrap();
        let s = s.restart().await;
        let skeleton: Option<String> =
            sqlx::query_scalar("SELECT username_skeleton FROM users WHERE username = 'oldtimer'")
                .fetch_one(&s.state.db.read)
                .await
                .unwrap();
        // The skeleton maps `m` to `rn`, like every look-alike of it.
        assert_eq!(skeleton.as_deref(), Some("oldtirner"));
        expect_error(
            register(&s, "new@example.com", "\u{043e}ldtimer").await,
            StatusCode::CONFLICT,
            "conflict",
        )
        .await;
        s.stop().await;
    }
}

/// A client whose connections come from `ip` (any 127.x.y.z works on Linux loopback).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn login_from(
    s: &TestServer,
    client: &reqwest::Client,
    email: &str,
    password: &str,
    captcha: Option<serde_json::Value>,
) -> reqwest::Response {
    let mut body = json!({"email": email, "password": password});
    if let Some(captcha) = captcha {
        body["captcha"] = captcha;
    }
    client
        .post(s.url("/api/v1/auth/login"))
        .header("X-AeThex-Key", &s.client_key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Fetches a challenge and solves it.
async fn solved_captcha(s: &TestServer, client: &reqwest::Client) -> serde_json::Value {
    let challenge = expect_status(
        client
            .get(s.url("/api/v1/auth/captcha"))
            .header("X-AeThex-Key", &s.client_key)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let text = challenge["challenge"].as_str().unwrap().to_owned();
    let difficulty = challenge["difficulty"].as_u64().unwrap() as u32;
    let nonce = aethex_protocol::captcha::solve(&text, difficulty);
    json!({"challenge": text, "nonce": nonce})
}

#[tokio::test]
async fn wrong_passwords_from_elsewhere_do_not_lock_the_owner_out() {
    for backend in backends() {
        let s = TestServer::start_with(backend, |c| {
            c.rate_limit.enabled = true;
            c.rate_limit.auth_per_account_burst = 3;
            c.rate_limit.auth_per_account_per_minute = 1;
            c.auth.captcha_difficulty = 8;
        })
        .await;
        let email = "owner@example.com";
        expect_status(register(&s, email, "owner").await, StatusCode::CREATED).await;
        let attacker = client_from("127.0.0.2");
        let owner = client_from("127.0.0.3");

        // One address guessing: throttled for that address (429), for that account only.
        for _ in 0..3 {
            expect_error(
                login_from(&s, &attacker, email, "wrong guess 1", None).await,
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
            )
            .await;
        }
        let limited = login_from(&s, &attacker, email, PASSWORD, None).await;
        assert!(limited.headers().contains_key("retry-after"));
        expect_error(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
        expect_error(
            login_from(&s, &attacker, "nobody@example.com", PASSWORD, None).await,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        )
        .await;

        // The account is under attack: from any other address a login needs a solved captcha
        // (not a 429), and with one the owner gets in.
        expect_error(
            login_from(&s, &owner, email, PASSWORD, None).await,
            StatusCode::BAD_REQUEST,
            "captcha_required",
        )
        .await;
        let captcha = solved_captcha(&s, &owner).await;
        let signed_in = expect_status(
            login_from(&s, &owner, email, PASSWORD, Some(captcha.clone())).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(signed_in["user"]["username"], "owner");
        // A solved challenge works once.
        expect_error(
            login_from(&s, &owner, email, PASSWORD, Some(captcha)).await,
            StatusCode::BAD_REQUEST,
            "captcha_required",
        )
        .await;

        // A botnet of further addresses pays a captcha per guess and still gets nowhere.
        for i in 4..8 {
            let bot = client_from(&format!("127.0.0.{i}"));
            expect_error(
                login_from(&s, &bot, email, "wrong guess 2", None).await,
                StatusCode::BAD_REQUEST,
                "captcha_required",
            )
            .await;
            let captcha = solved_captcha(&s, &bot).await;
            expect_error(
                login_from(&s, &bot, email, "wrong guess 3", Some(captcha)).await,
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
            )
            .await;
        }
        // The attacking address stays throttled even with a captcha.
        let captcha = solved_captcha(&s, &attacker).await;
        expect_error(
            login_from(&s, &attacker, email, PASSWORD, Some(captcha)).await,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
        )
        .await;
        // Other accounts are not under attack.
        expect_status(
            register(&s, "other@example.com", "other").await,
            StatusCode::CREATED,
        )
        .await;
        expect_status(
            login_from(&s, &owner, "other@example.com", PASSWORD, None).await,
            StatusCode::OK,
        )
        .await;
        s.stop().await;
    }
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// What the embedded default keeps on disk, with the mode each must have.
#[cfg(unix)]
fn private_paths(data_dir: &std::path::Path) -> Vec<(std::path::PathBuf, u32)> {
    let mut paths = vec![
        (data_dir.to_path_buf(), 0o700),
        (data_dir.join("blobs"), 0o700),
        (data_dir.join("aethex.db"), 0o600),
        (data_dir.join("default-project-key"), 0o600),
        (data_dir.join("default-server-key"), 0o600),
        (data_dir.join("save-encryption-key"), 0o600),
    ];
    // Present while the database is open.
    for suffix in ["-wal", "-shm"] {
        paths.push((data_dir.join(format!("aethex.db{suffix}")), 0o600));
    }
    paths
}

#[cfg(unix)]
#[tokio::test]
async fn data_files_are_private_on_fresh_and_existing_installs() {
    use std::os::unix::fs::PermissionsExt;
    let s = TestServer::start(common::Backend::Sqlite).await;
    // A write creates the blob tree and fills the WAL.
    let player = s.device_player().await;
    let (id, token) = (
        player["user"]["id"].as_str().unwrap().to_owned(),
        player["access_token"].as_str().unwrap().to_owned(),
    );
    expect_status(
        s.player(Method::POST, &format!("/api/v1/saves/{id}"), &token)
            .json(&json!({"slot": "main", "data": {"level": 3}, "base_version": 0}))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let dir = s.data_dir.path().to_path_buf();
    for (path, want) in private_paths(&dir) {
        assert_eq!(mode(&path), want, "fresh start: {}", path.display());
    }

    // An install from before: everything world-readable. A start makes it private again.
    for (path, want) in private_paths(&dir) {
        let open = if want == 0o700 { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(open)).unwrap();
    }
    let s = s.restart().await;
    for (path, want) in private_paths(&dir) {
        assert_eq!(mode(&path), want, "restart: {}", path.display());
    }
    s.stop().await;
}

/// Backdates a blob of the local blob folder by `secs`.
fn age_blob(s: &TestServer, key: &str, secs: u64) {
    let file = std::fs::File::options()
        .write(true)
        .open(s.data_dir.path().join("blobs").join(key))
        .unwrap();
    file.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(secs))
        .unwrap();
}

async fn blob_exists(s: &TestServer, key: &str) -> bool {
    match s.state.blobs.get(key).await {
        Ok(_) => true,
        Err(object_store::Error::NotFound { .. }) => false,
        Err(e) => panic!("{key}: {e}"),
    }
}

#[tokio::test]
async fn orphaned_save_blobs_are_swept_after_a_grace_period() {
    use aethex_server::saves::sweep;
    for backend in backends() {
        let s = TestServer::start(backend).await;
        // No blob folder for saves yet: nothing to do, no error.
        let swept = sweep::sweep_orphans(&s.state.db, &s.state.blobs, sweep::ORPHAN_GRACE).await;
        assert_eq!(swept.unwrap(), 0);
        let player = s.device_player().await;
        let (id, token) = (
            player["user"]["id"].as_str().unwrap().to_owned(),
            player["access_token"].as_str().unwrap().to_owned(),
        );
        expect_status(
            s.player(Method::POST, "/api/v1/saves/me", &token)
                .json(&json!({"slot": "main", "data": {"level": 3}, "base_version": 0}))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        let referenced: String =
            sqlx::query_scalar("SELECT blob_key FROM save_versions WHERE user_id = $1")
                .bind(&id)
                .fetch_one(&s.state.db.read)
                .await
                .unwrap();
        // As a write that died between storing its blob and committing its row, long ago and
        // just now; and an orphan of a player without any save row.
        let old_orphan = format!("saves/{id}/{}", uuid::Uuid::now_v7());
        let fresh_orphan = format!("saves/{id}/{}", uuid::Uuid::now_v7());
        let stray_orphan = format!("saves/{}/{}", uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        for key in [&old_orphan, &fresh_orphan, &stray_orphan] {
            s.state
                .blobs
                .put(key, bytes::Bytes::from_static(b"AXS1 partial"))
                .await
                .unwrap();
        }
        let two_hours = 2 * 3600;
        age_blob(&s, &referenced, two_hours);
        age_blob(&s, &old_orphan, two_hours);
        age_blob(&s, &stray_orphan, two_hours);

        let swept = sweep::sweep_orphans(&s.state.db, &s.state.blobs, sweep::ORPHAN_GRACE)
            .await
            .unwrap();
        assert_eq!(swept, 2);
        assert!(!blob_exists(&s, &old_orphan).await);
        assert!(!blob_exists(&s, &stray_orphan).await);
        assert!(
            blob_exists(&s, &fresh_orphan).await,
            "in-flight write swept"
        );
        assert!(blob_exists(&s, &referenced).await, "referenced blob swept");
        let read = expect_status(
            s.player(Method::GET, "/api/v1/saves/me/main", &token)
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(read["data"]["level"], 3);

        // A start sweeps too.
        age_blob(&s, &fresh_orphan, two_hours);
        let s = s.restart().await;
        let mut gone = false;
        for _ in 0..100 {
            if !blob_exists(&s, &fresh_orphan).await {
                gone = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(gone, "the sweep at start left an old orphan");
        assert!(blob_exists(&s, &referenced).await);
        s.stop().await;
    }
}
