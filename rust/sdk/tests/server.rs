//! Every SDK call against the real reference server on loopback (SQLite in a temp dir).

mod common;

use aethex_protocol::ErrorCode;
use aethex_sdk::{codec, ConflictStrategy, Value};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_account_profile_linking_and_logout() {
    let server = RealServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut p = Probe::new(server.config(dir.path()));
    assert!(!p.client.auth().is_logged_in());
    assert_eq!(p.client.auth().current_user(), None);

    let id = p.client.auth().register(
        "ada@example.com".into(),
        "correct horse battery".into(),
        "ada".into(),
    );
    let registered = p.ok(id).await;
    let user = registered.get("user").unwrap();
    assert_eq!(string(user, "username"), "ada");
    assert_eq!(string(user, "email"), "ada@example.com");
    let logged_in = p.signal("auth", "logged_in").await;
    assert_eq!(string(&logged_in[0], "id"), user_id(&registered));
    assert!(p.client.auth().is_logged_in());
    assert_eq!(
        string(&p.client.auth().current_user().unwrap(), "username"),
        "ada"
    );

    let again = p.client.auth().register(
        "ada@example.com".into(),
        "correct horse battery".into(),
        "ada2".into(),
    );
    assert_eq!(p.err(again).await.status, 409);

    let id = p.client.auth().fetch_profile();
    assert_eq!(user_id(&p.ok(id).await), user_id(&registered));

    let changes = Value::dict([
        ("username", Value::String("ada_l".into())),
        (
            "preferences",
            Value::dict([
                ("volume", Value::Float(0.5)),
                ("lang", Value::String("en".into())),
            ]),
        ),
    ]);
    let id = p.client.auth().update_profile(changes);
    let updated = p.ok(id).await;
    let user = updated.get("user").unwrap();
    assert_eq!(string(user, "username"), "ada_l");
    assert_eq!(
        user.get("preferences").unwrap().get("volume"),
        Some(&Value::Float(0.5))
    );
    let signalled = p.signal("auth", "profile_updated").await;
    assert_eq!(string(&signalled[0], "username"), "ada_l");
    assert_eq!(
        string(&p.client.auth().current_user().unwrap(), "username"),
        "ada_l"
    );

    let id = p.client.auth().link_device(Some("ada-device-0001".into()));
    let linked = p.ok(id).await;
    let methods = list(linked.get("user").unwrap(), "linked");
    assert!(
        methods.contains(&Value::String("device".into())),
        "{methods:?}"
    );

    let id = p.client.auth().logout();
    p.ok(id).await;
    p.signal("auth", "logged_out").await;
    assert!(!p.client.auth().is_logged_in());
    let id = p.client.auth().fetch_profile();
    assert_eq!(p.err(id).await.code, ErrorCode::Unauthorized);

    // The linked device reaches the same account; the password still works.
    let by_device = p.login_device("ada-device-0001").await;
    assert_eq!(user_id(&by_device), user_id(&registered));
    let id = p
        .client
        .auth()
        .login_email("ada@example.com".into(), "wrong password!".into());
    let e = p.err(id).await;
    assert_eq!((e.code, e.status), (ErrorCode::InvalidCredentials, 401));
    let by_mail = p
        .login_email("ada@example.com", "correct horse battery")
        .await;
    assert_eq!(user_id(&by_mail), user_id(&registered));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_device_upgrades_to_email_and_recovery_calls_answer() {
    let server = RealServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut p = Probe::new(server.config(dir.path()));
    let id = p.client.auth().login_device(None);
    let first = p.ok(id).await;
    let stored = std::fs::read_to_string(dir.path().join("device_id")).unwrap();
    assert!(stored.len() >= 8);

    let id = p
        .client
        .auth()
        .link_email("anon@example.com".into(), "a long password 1".into());
    let linked = p.ok(id).await;
    assert_eq!(
        string(linked.get("user").unwrap(), "email"),
        "anon@example.com"
    );

    // A second client on the same data dir uses the same default device id: same account.
    let mut q = Probe::new(server.config(dir.path()));
    let id = q.client.auth().login_device(None);
    assert_eq!(user_id(&q.ok(id).await), user_id(&first));

    let id = q
        .client
        .auth()
        .request_password_reset("anon@example.com".into());
    assert_eq!(q.ok(id).await, Value::Dictionary(vec![]));
    let id = q
        .client
        .auth()
        .reset_password("not-a-real-token".into(), "another password 2".into());
    let e = q.err(id).await;
    assert!(matches!(e.status, 400 | 401 | 404), "{e:?}");
    let id = q.client.auth().verify_email("not-a-real-token".into());
    let e = q.err(id).await;
    assert!(matches!(e.status, 400 | 401 | 404), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_email_and_password_reset_with_mailed_tokens() {
    let server = RealServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut p = Probe::new(server.config(dir.path()));
    let id = p.client.auth().register(
        "bob@example.com".into(),
        "first password 1".into(),
        "bob".into(),
    );
    p.ok(id).await;
    let token = server
        .mailed_token("bob@example.com", "verification token: ")
        .await;
    let id = p.client.auth().verify_email(token);
    assert_eq!(p.ok(id).await, Value::Dictionary(vec![]));
    let updated = p.signal("auth", "profile_updated").await;
    assert_eq!(updated[0].get("email_verified"), Some(&Value::Bool(true)));

    let id = p
        .client
        .auth()
        .request_password_reset("bob@example.com".into());
    p.ok(id).await;
    let token = server
        .mailed_token("bob@example.com", "reset token: ")
        .await;
    let id = p
        .client
        .auth()
        .reset_password(token, "second password 2".into());
    assert_eq!(p.ok(id).await, Value::Dictionary(vec![]));
    let id = p
        .client
        .auth()
        .login_email("bob@example.com".into(), "first password 1".into());
    assert_eq!(p.err(id).await.code, ErrorCode::InvalidCredentials);
    p.login_email("bob@example.com", "second password 2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_client_resumes_the_session_without_login() {
    let server = RealServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut first = Probe::new(server.config(dir.path()));
    let id = first.client.auth().resume_session();
    assert_eq!(first.err(id).await.code, ErrorCode::Unauthorized);
    let signed_in = first.login_device("resume-device-1").await;
    drop(first);

    let mut second = Probe::new(server.config(dir.path()));
    let id = second.client.auth().resume_session();
    let resumed = second.ok(id).await;
    assert_eq!(user_id(&resumed), user_id(&signed_in));
    second.signal("auth", "logged_in").await;
    let id = second.client.auth().fetch_profile();
    second.ok(id).await;
    drop(second);

    // Refresh tokens rotate: the third client resumes with the token the second one stored.
    let mut third = Probe::new(server.config(dir.path()));
    let id = third.client.auth().resume_session();
    assert_eq!(user_id(&third.ok(id).await), user_id(&signed_in));

    // After logout nothing is left to resume.
    let id = third.client.auth().logout();
    third.ok(id).await;
    let mut fourth = Probe::new(server.config(dir.path()));
    let id = fourth.client.auth().resume_session();
    assert_eq!(fourth.err(id).await.code, ErrorCode::Unauthorized);
}

/// What the binding's `reconfigure()` does when the game switches servers: a new client on the
/// same `data_dir` with another api_url and client key. Each server keeps its own session, so
/// switching back resumes instead of needing a new login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_kept_per_server_so_switching_back_resumes() {
    let mut a = RealServer::start().await;
    let b = RealServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut on_a = Probe::new(a.config(dir.path()));
    let user_a = user_id(&on_a.login_device("switch-device-a").await);
    drop(on_a);

    let mut on_b = Probe::new(b.config(dir.path()));
    let id = on_b.client.auth().resume_session();
    assert_eq!(on_b.err(id).await.code, ErrorCode::Unauthorized);
    let user_b = user_id(&on_b.login_device("switch-device-b").await);
    drop(on_b);

    let mut back_on_a = Probe::new(a.config(dir.path()));
    let id = back_on_a.client.auth().resume_session();
    assert_eq!(user_id(&back_on_a.ok(id).await), user_a);
    drop(back_on_a);

    let mut back_on_b = Probe::new(b.config(dir.path()));
    let id = back_on_b.client.auth().resume_session();
    assert_eq!(user_id(&back_on_b.ok(id).await), user_b);
    drop(back_on_b);

    // Offline resume reads the stored user of the same server, never the other one's.
    a.stop().await;
    let mut offline_a = Probe::new(a.config(dir.path()));
    let id = offline_a.client.auth().resume_session();
    let resumed = offline_a.ok(id).await;
    assert_eq!(resumed.get("offline"), Some(&Value::Bool(true)));
    assert_eq!(user_id(&resumed), user_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_access_token_is_refreshed_and_the_call_retried() {
    let server = RealServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut p = Probe::new(server.config(dir.path()));
    p.login_device("expiry-device-1").await;
    // The server now sees the access token as expired (refresh tokens live for days).
    server.clock.advance_ms(20 * 60 * 1000);
    let id = p.client.auth().fetch_profile();
    p.ok(id).await;
    assert!(p.take_signals("auth", "session_expired").is_empty());
    // And the session still resumes after the rotation.
    let mut q = Probe::new(server.config(dir.path()));
    let id = q.client.auth().resume_session();
    q.ok(id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_load_list_history_restore_delete() {
    let server = RealServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut p = Probe::new(server.config(dir.path()));
    p.login_device("saves-device-1").await;

    let data = game_save(5);
    let id = p.client.saves().save(
        "slot1".into(),
        data.clone(),
        Some(Value::dict([("chapter", Value::Int(1))])),
    );
    let saved = p.ok(id).await;
    assert_eq!(int(&saved, "version"), 1);
    assert_eq!(saved.get("queued"), Some(&Value::Bool(false)));
    // The checksum is the server's: SHA-256 of the encoded data.
    assert_eq!(string(&saved, "checksum").len(), 64);
    let completed = p.signal("saves", "save_completed").await;
    assert_eq!(completed[0], Value::String("slot1".into()));
    // A load right after an online save: the server confirms the cached version (304), so the
    // data is served from the cache (documented in docs/sdk.md).
    let mine = p.load("slot1").await.unwrap();
    assert_eq!(mine.get("data"), Some(&data));
    assert_eq!(mine.get("from_cache"), Some(&Value::Bool(true)));

    // A fresh client (empty cache) gets the Godot types back from the server.
    let other_dir = tempfile::tempdir().unwrap();
    let mut q = Probe::new(server.config(other_dir.path()));
    q.login_device("saves-device-1").await;
    let loaded = q.load("slot1").await.unwrap();
    assert_eq!(loaded.get("data"), Some(&data));
    assert_eq!(loaded.get("from_cache"), Some(&Value::Bool(false)));
    assert_eq!(int(&loaded, "version"), 1);
    assert_eq!(
        loaded.get("metadata").unwrap().get("chapter"),
        Some(&Value::Int(1))
    );
    let signalled = q.signal("saves", "load_completed").await;
    assert_eq!(signalled[1], data);
    // Loading again answers 304 from the server and serves the cache.
    let again = q.load("slot1").await.unwrap();
    assert_eq!(again.get("data"), Some(&data));
    assert_eq!(again.get("from_cache"), Some(&Value::Bool(true)));

    let v2 = p.save("slot1", game_save(6)).await.unwrap();
    assert_eq!(int(&v2, "version"), 2);
    p.save("slot2", Value::Int(7)).await.unwrap();

    let id = p.client.saves().list();
    let listed = p.ok(id).await;
    let saves = list(&listed, "saves");
    assert_eq!(saves.len(), 2);
    let slot1 = saves.iter().find(|s| string(s, "name") == "slot1").unwrap();
    assert_eq!(int(slot1, "version"), 2);
    assert!(int(slot1, "size") > 0 && int(slot1, "timestamp") > 0);
    assert!(int(&listed, "used_bytes") > 0 && int(&listed, "quota_bytes") > 0);

    let id = p.client.saves().history(Some("slot1".into()));
    let history = list(&p.ok(id).await, "versions");
    assert_eq!(history.len(), 2);
    assert!(history.iter().all(|v| string(v, "slot") == "slot1"));
    let id = p.client.saves().history(None);
    assert_eq!(list(&p.ok(id).await, "versions").len(), 3);

    let id = p.client.saves().restore("slot1".into(), 1);
    let restored = p.ok(id).await;
    assert_eq!(int(&restored, "version"), 3);
    let loaded = p.load("slot1").await.unwrap();
    assert_eq!(loaded.get("data"), Some(&data));
    // The restore became the base of the next write: no conflict.
    assert_eq!(
        int(&p.save("slot1", game_save(8)).await.unwrap(), "version"),
        4
    );

    let id = p.client.saves().delete("slot1".into());
    assert_eq!(p.ok(id).await, Value::Dictionary(vec![]));
    assert_eq!(p.load("slot1").await.unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(q.load("slot1").await.unwrap_err().code, ErrorCode::NotFound);

    let id = p.client.saves().save("../evil".into(), Value::Nil, None);
    assert_eq!(p.err(id).await.code, ErrorCode::InvalidRequest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_players_session_cannot_touch_my_saves_and_signed_out_calls_fail() {
    let server = RealServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut p = Probe::new(server.config(dir.path()));
    let id = p.client.saves().save("s".into(), Value::Int(1), None);
    assert_eq!(p.err(id).await.code, ErrorCode::Unauthorized);
    let id = p.client.saves().list();
    assert_eq!(p.err(id).await.code, ErrorCode::Unauthorized);
    p.login_device("owner-device-1").await;
    p.save("mine", Value::Int(1)).await.unwrap();

    let other_dir = tempfile::tempdir().unwrap();
    let mut q = Probe::new(server.config(other_dir.path()));
    q.login_device("other-device-1").await;
    assert_eq!(q.load("mine").await.unwrap_err().code, ErrorCode::NotFound);
}

/// Two devices of one player; the second writes without knowing the first's version.
async fn conflict_setup(
    server: &RealServer,
    strategy: ConflictStrategy,
) -> (Probe, Probe, tempfile::TempDir, tempfile::TempDir) {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Probe::new(server.config(da.path()));
    let mut config = server.config(db.path());
    config.conflict_strategy = strategy;
    let mut b = Probe::new(config);
    a.login_device("conflict-device-a").await;
    let id = a
        .client
        .auth()
        .link_device(Some("conflict-device-b".into()));
    a.ok(id).await;
    b.login_device("conflict-device-b").await;
    let first = a.save("slot1", game_save(1)).await.unwrap();
    assert_eq!(int(&first, "version"), 1);
    (a, b, da, db)
}

async fn history_checksums(p: &mut Probe) -> Vec<String> {
    let id = p.client.saves().history(Some("slot1".into()));
    list(&p.ok(id).await, "versions")
        .iter()
        .map(|v| string(v, "checksum"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_client_wins_keeps_the_server_version_in_history() {
    let server = RealServer::start().await;
    let (mut a, mut b, _da, _db) = conflict_setup(&server, ConflictStrategy::ClientWins).await;
    let mine = b.save("slot1", game_save(99)).await.unwrap();
    assert_eq!(int(&mine, "version"), 2);
    let resolved = b.signal("saves", "conflict_resolved").await;
    assert_eq!(string(&resolved[1], "winner"), "local");
    assert_eq!(
        a.load("slot1").await.unwrap().get("data"),
        Some(&game_save(99))
    );
    assert_eq!(history_checksums(&mut a).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_server_wins_keeps_the_local_version_in_history() {
    let server = RealServer::start().await;
    let (mut a, mut b, _da, _db) = conflict_setup(&server, ConflictStrategy::ServerWins).await;
    let result = b.save("slot1", game_save(99)).await.unwrap();
    // local written as v2, server's v1 restored on top as v3
    assert_eq!(int(&result, "version"), 3);
    let resolved = b.signal("saves", "conflict_resolved").await;
    assert_eq!(string(&resolved[1], "winner"), "server");
    assert_eq!(
        b.load("slot1").await.unwrap().get("data"),
        Some(&game_save(1))
    );
    assert_eq!(
        a.load("slot1").await.unwrap().get("data"),
        Some(&game_save(1))
    );
    let sums = history_checksums(&mut a).await;
    assert_eq!(sums.len(), 3);
    let id = a.client.saves().restore("slot1".into(), 2);
    a.ok(id).await;
    assert_eq!(
        a.load("slot1").await.unwrap().get("data"),
        Some(&game_save(99))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_newest_wins_compares_write_times() {
    let server = RealServer::start().await;
    let (mut a, mut b, _da, _db) = conflict_setup(&server, ConflictStrategy::NewestWins).await;
    // b's local write is newer than the server's version: b wins.
    b.save("slot1", game_save(50)).await.unwrap();
    assert_eq!(
        string(&b.signal("saves", "conflict_resolved").await[1], "winner"),
        "local"
    );
    assert_eq!(
        a.load("slot1").await.unwrap().get("data"),
        Some(&game_save(50))
    );

    // a writes "in the future" (server clock ahead); c, knowing nothing, writes now: server wins.
    server.clock.advance_ms(3_600_000);
    a.save("slot1", game_save(60)).await.unwrap();
    let dc = tempfile::tempdir().unwrap();
    let mut config = server.config(dc.path());
    config.conflict_strategy = ConflictStrategy::NewestWins;
    let mut c = Probe::new(config);
    c.login_device("conflict-device-b").await;
    c.save("slot1", game_save(70)).await.unwrap();
    assert_eq!(
        string(&c.signal("saves", "conflict_resolved").await[1], "winner"),
        "server"
    );
    assert_eq!(
        a.load("slot1").await.unwrap().get("data"),
        Some(&game_save(60))
    );
    // c's losing write is in history.
    let id = a.client.saves().history(Some("slot1".into()));
    assert_eq!(list(&a.ok(id).await, "versions").len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflict_manual_waits_for_resolve_conflict() {
    let server = RealServer::start().await;
    let (mut a, mut b, _da, _db) = conflict_setup(&server, ConflictStrategy::Manual).await;
    let e = b.save("slot1", game_save(99)).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::SaveConflict);
    let detected = b.signal("saves", "conflict_detected").await;
    assert_eq!(detected[0], Value::String("slot1".into()));
    assert_eq!(detected[1], game_save(99));
    assert_eq!(detected[2], game_save(1));
    // Nothing was overwritten meanwhile.
    assert_eq!(
        a.load("slot1").await.unwrap().get("data"),
        Some(&game_save(1))
    );

    let merged = Value::dict([("level", Value::Int(100))]);
    let id = b
        .client
        .saves()
        .resolve_conflict("slot1".into(), merged.clone());
    let resolved = b.ok(id).await;
    assert_eq!(int(&resolved, "version"), 2);
    b.signal("saves", "conflict_resolved").await;
    assert_eq!(a.load("slot1").await.unwrap().get("data"), Some(&merged));
    let id = b.client.saves().resolve_conflict("slot1".into(), merged);
    assert_eq!(b.err(id).await.code, ErrorCode::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_saves_queue_on_disk_and_flush_in_order_on_reconnect() {
    let mut server = RealServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut p = Probe::new(server.config(dir.path()));
    p.login_device("offline-device-1").await;
    p.client.saves().enable_auto_sync(true);
    assert_eq!(p.client.saves().sync_status(), "idle");

    server.stop().await;
    for level in 1..=3 {
        let queued = p.save("slot1", game_save(level)).await.unwrap();
        assert_eq!(queued.get("queued"), Some(&Value::Bool(true)));
    }
    // (The auto-sync loop keeps retrying, so the status alternates syncing/offline here.)
    assert!(matches!(
        p.client.saves().sync_status().as_str(),
        "offline" | "syncing"
    ));
    // Offline load serves the newest local write.
    let local = p.load("slot1").await.unwrap();
    assert_eq!(local.get("data"), Some(&game_save(3)));
    assert_eq!(local.get("from_cache"), Some(&Value::Bool(true)));

    server.restart().await;
    for expected in 1..=3 {
        let done = p.signal("saves", "save_completed").await;
        assert_eq!(int(&done[1], "version"), expected);
    }
    let other = tempfile::tempdir().unwrap();
    let mut q = Probe::new(server.config(other.path()));
    q.login_device("offline-device-1").await;
    assert_eq!(
        q.load("slot1").await.unwrap().get("data"),
        Some(&game_save(3))
    );
    let id = q.client.saves().history(Some("slot1".into()));
    assert_eq!(list(&q.ok(id).await, "versions").len(), 3);
    let statuses: Vec<Value> = p
        .take_signals("saves", "sync_status_changed")
        .into_iter()
        .map(|mut a| a.remove(0))
        .collect();
    assert!(
        statuses.contains(&Value::String("offline".into())),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.last(),
        Some(&Value::String("idle".into())),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_local_write_and_upload_loses_nothing() {
    let mut server = RealServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut p = Probe::new(server.config(dir.path()));
    let signed_in = p.login_device("crash-device-1").await;
    server.stop().await;
    // Auto-sync off: the save reports the network error but stays queued on disk.
    let e = p.save("slot1", game_save(42)).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Network);
    p.client.shutdown(); // the game dies here
    drop(p);

    server.restart().await;
    let mut again = Probe::new(server.config(dir.path()));
    let id = again.client.auth().resume_session();
    assert_eq!(user_id(&again.ok(id).await), user_id(&signed_in));
    let done = again.signal("saves", "save_completed").await;
    assert_eq!(done[0], Value::String("slot1".into()));
    let other = tempfile::tempdir().unwrap();
    let mut q = Probe::new(server.config(other.path()));
    q.login_device("crash-device-1").await;
    assert_eq!(
        q.load("slot1").await.unwrap().get("data"),
        Some(&game_save(42))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_now_uploads_the_queue_and_reports_counts() {
    let mut server = RealServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut p = Probe::new(server.config(dir.path()));
    p.login_device("sync-now-device").await;
    assert_eq!(p.client.saves().sync_status(), "disabled");
    server.stop().await;
    p.save("a", Value::Int(1)).await.unwrap_err();
    p.save("b", Value::Int(2)).await.unwrap_err();
    let id = p.client.saves().sync_now();
    assert_eq!(p.err(id).await.code, ErrorCode::Network);
    server.restart().await;
    let id = p.client.saves().sync_now();
    let synced = p.ok(id).await;
    assert_eq!((int(&synced, "uploaded"), int(&synced, "pending")), (2, 0));
    // The wire carries the tagged encoding.
    let loaded = p.load("b").await.unwrap();
    assert_eq!(loaded.get("data"), Some(&Value::Int(2)));
    assert_eq!(codec::encode(&Value::Int(2)), b"2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_logs_in_while_the_account_is_under_attack() {
    let server = RealServer::start_with(|c| {
        c.rate_limit.enabled = true;
        c.rate_limit.auth_per_account_burst = 3;
        c.rate_limit.auth_per_account_per_minute = 1;
        c.auth.captcha_difficulty = 12;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut p = Probe::new(server.config(dir.path()));
    let id = p.client.auth().register(
        "eve.target@example.com".into(),
        "correct horse battery".into(),
        "target".into(),
    );
    let registered = p.ok(id).await;
    let id = p.client.auth().logout();
    p.ok(id).await;

    // Wrong passwords from another address until that address is throttled.
    let attacker = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let resp = attacker
            .post(format!("{}/api/v1/auth/login", server.url))
            .header("X-AeThex-Key", &server.client_key)
            .json(
                &serde_json::json!({"email": "eve.target@example.com", "password": "guess guess"}),
            )
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429]);

    // The owner's game answers the server's captcha by itself and gets in.
    let again = p
        .login_email("eve.target@example.com", "correct horse battery")
        .await;
    assert_eq!(user_id(&again), user_id(&registered));
}
