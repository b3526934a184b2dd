//! Every social call of the SDK (leaderboards, achievements, stats, friends, groups) against the
//! real reference server on loopback (SQLite in a temp dir).

mod common;

use aethex_protocol::ErrorCode;
use aethex_sdk::Value;
use common::*;

/// Defines boards and achievements the way a game's backend does: with the server key.
async fn define(server: &RealServer, path: &str, body: serde_json::Value) {
    let key = std::fs::read_to_string(server.data_dir.path().join("default-server-key"))
        .expect("the server wrote its default server key");
    let resp = reqwest::Client::new()
        .put(format!("{}/api/v1/{path}", server.url))
        .header("Authorization", format!("ServerKey {}", key.trim()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
}

/// A signed-in player with a chosen username; returns the probe, its temp dir and the user id.
async fn player(server: &RealServer, name: &str) -> (Probe, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Probe::new(server.config(dir.path()));
    let id = user_id(&p.login_device(&format!("device-{name}-0001")).await);
    let rename = p
        .client
        .auth()
        .update_profile(Value::dict([("username", Value::String(name.into()))]));
    p.ok(rename).await;
    (p, dir, id)
}

fn opts(pairs: &[(&str, Value)]) -> Value {
    Value::dict(pairs.iter().map(|(k, v)| (*k, v.clone())))
}

fn s(text: &str) -> Value {
    Value::String(text.into())
}

/// `(username, score, rank)` of each entry, in order.
fn ranking(page: &Value) -> Vec<(String, i64, i64)> {
    list(page, "entries")
        .iter()
        .map(|e| (string(e, "username"), int(e, "score"), int(e, "rank")))
        .collect()
}

fn first_key(v: &Value) -> String {
    match v {
        Value::Dictionary(pairs) => match &pairs[0].0 {
            Value::String(k) => k.clone(),
            other => panic!("key {other:?}"),
        },
        other => panic!("not a dictionary: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaderboards_submit_pages_around_me_friends_and_rank() {
    let server = RealServer::start().await;
    define(
        &server,
        "leaderboards/high_scores",
        serde_json::json!({"sort_order": "desc", "operator": "best", "max_score": 1_000_000}),
    )
    .await;
    let (mut ada, _d1, ada_id) = player(&server, "ada").await;
    let (mut bob, _d2, bob_id) = player(&server, "bob").await;
    let (mut cyd, _d3, _) = player(&server, "cyd").await;
    let (mut dan, _d4, _) = player(&server, "dan").await;

    // Submit: the answer is the caller's entry with its exact rank, and score_submitted fires.
    let metadata = Value::dict([("car", s("red")), ("spot", Value::Vector2([1.5, -2.0]))]);
    let id = ada.client.social().leaderboards().submit_score(
        "high_scores".into(),
        1000,
        Some(metadata.clone()),
    );
    let submitted = ada.ok(id).await;
    assert_eq!(string(&submitted, "leaderboard_id"), "high_scores");
    let entry = submitted.get("entry").unwrap();
    assert_eq!(
        (int(entry, "rank"), int(entry, "score")),
        (1, 1000),
        "{entry:?}"
    );
    assert_eq!(string(entry, "user_id"), ada_id);
    assert_eq!(string(entry, "username"), "ada");
    assert_eq!(
        entry.get("metadata"),
        Some(&metadata),
        "Godot types survive"
    );
    let signal = ada.signal("social.leaderboards", "score_submitted").await;
    assert_eq!(signal, vec![s("high_scores"), entry.clone()]);

    for (p, score) in [(&mut bob, 500), (&mut cyd, 800), (&mut dan, 1200)] {
        let id = p
            .client
            .social()
            .leaderboards()
            .submit_score("high_scores".into(), score, None);
        p.ok(id).await;
    }
    // An unimproved `best` submission keeps the score; out of bounds is a typed 409.
    let id = ada
        .client
        .social()
        .leaderboards()
        .submit_score("high_scores".into(), 10, None);
    assert_eq!(int(ada.ok(id).await.get("entry").unwrap(), "score"), 1000);
    let id = ada
        .client
        .social()
        .leaderboards()
        .submit_score("high_scores".into(), 2_000_000, None);
    let e = ada.err(id).await;
    assert_eq!((e.code, e.status), (ErrorCode::Conflict, 409));

    // Global, paginated with the cursor: no entry skipped or repeated.
    let lb = ada.client.social().leaderboards().clone();
    let id = lb.get(
        "high_scores".into(),
        opts(&[("range", s("global")), ("limit", Value::Int(2))]),
    );
    let page1 = ada.ok(id).await;
    assert_eq!(first_key(&page1), "entries", "the list the result iterates");
    assert_eq!(
        ranking(&page1),
        vec![("dan".into(), 1200, 1), ("ada".into(), 1000, 2)]
    );
    assert_eq!(int(&page1, "total"), 4);
    assert_eq!(int(page1.get("me").unwrap(), "rank"), 2);
    let cursor = string(&page1, "next_cursor");
    let id = lb.get(
        "high_scores".into(),
        opts(&[("limit", Value::Float(2.0)), ("cursor", s(&cursor))]),
    );
    let page2 = ada.ok(id).await;
    assert_eq!(
        ranking(&page2),
        vec![("cyd".into(), 800, 3), ("bob".into(), 500, 4)]
    );
    assert_eq!(page2.get("next_cursor"), Some(&Value::Nil));

    // Defaults (Nil options) read the top 10.
    let id = lb.get("high_scores".into(), Value::Nil);
    assert_eq!(ranking(&ada.ok(id).await).len(), 4);

    // Around the caller: one above and one below.
    let id = cyd.client.social().leaderboards().get(
        "high_scores".into(),
        opts(&[
            ("range", Value::StringName("around_me".into())),
            ("limit", Value::Int(1)),
        ]),
    );
    assert_eq!(
        ranking(&cyd.ok(id).await),
        vec![
            ("ada".into(), 1000, 2),
            ("cyd".into(), 800, 3),
            ("bob".into(), 500, 4)
        ]
    );

    // Friends range: the caller and accepted friends only, with their global ranks.
    let id = ada.client.social().friends().send_request(bob_id.clone());
    ada.ok(id).await;
    let id = bob.client.social().friends().accept(ada_id.clone());
    bob.ok(id).await;
    let id = lb.get("high_scores".into(), opts(&[("range", s("friends"))]));
    assert_eq!(
        ranking(&ada.ok(id).await),
        vec![("ada".into(), 1000, 2), ("bob".into(), 500, 4)]
    );

    // One player's rank: mine, someone else's, and nobody's.
    let id = bob
        .client
        .social()
        .leaderboards()
        .get_rank("high_scores".into(), None, None);
    assert_eq!(int(&bob.ok(id).await, "rank"), 4);
    let id = bob.client.social().leaderboards().get_rank(
        "high_scores".into(),
        Some(ada_id.clone()),
        Some("current".into()),
    );
    let ada_rank = bob.ok(id).await;
    assert_eq!(
        (int(&ada_rank, "rank"), string(&ada_rank, "username")),
        (2, "ada".into())
    );

    // Definitions, typed errors for bad options and unknown boards.
    let id = lb.list();
    let boards = ada.ok(id).await;
    assert_eq!(first_key(&boards), "leaderboards");
    assert_eq!(
        string(&list(&boards, "leaderboards")[0], "id"),
        "high_scores"
    );
    let id = lb.get("high_scores".into(), opts(&[("ranges", s("global"))]));
    let e = ada.err(id).await;
    assert_eq!((e.code, e.status), (ErrorCode::InvalidRequest, 0));
    assert!(e.message.contains("`ranges`"), "{}", e.message);
    let id = lb.get("high_scores".into(), opts(&[("limit", s("ten"))]));
    assert_eq!(ada.err(id).await.code, ErrorCode::InvalidRequest);
    let id = lb.get("high_scores".into(), opts(&[("range", s("everyone"))]));
    assert_eq!(
        ada.err(id).await.status,
        400,
        "the server rejects the range"
    );
    let id = lb.get("no_such/board?x".into(), Value::Nil);
    assert_eq!(ada.err(id).await.code, ErrorCode::NotFound);

    // Signed out: a typed error, no request.
    let dir = tempfile::tempdir().unwrap();
    let mut anon = Probe::new(server.config(dir.path()));
    let id = anon
        .client
        .social()
        .leaderboards()
        .get("high_scores".into(), Value::Nil);
    assert_eq!(anon.err(id).await.code, ErrorCode::Unauthorized);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn achievements_and_stats_signal_each_unlock_exactly_once() {
    let server = RealServer::start().await;
    define(
        &server,
        "achievements/first_kill",
        serde_json::json!({"name": "First blood", "description": "Win a fight"}),
    )
    .await;
    define(
        &server,
        "achievements/collector",
        serde_json::json!({"name": "Collector", "goal": 10}),
    )
    .await;
    define(
        &server,
        "achievements/kill_100_enemies",
        serde_json::json!({"name": "Centurion", "goal": 100, "stat": "enemies_killed"}),
    )
    .await;
    define(
        &server,
        "leaderboards/kills",
        serde_json::json!({"operator": "sum", "stat": "enemies_killed"}),
    )
    .await;
    let (mut p, _dir, _) = player(&server, "eve").await;
    let ach = p.client.social().achievements().clone();
    let stats = p.client.social().stats().clone();

    let id = ach.unlock("first_kill".into());
    let unlocked = p.ok(id).await;
    let a = unlocked.get("achievement").unwrap();
    assert_eq!(
        (string(a, "name"), a.get("unlocked")),
        ("First blood".into(), Some(&Value::Bool(true)))
    );
    assert_eq!(list(&unlocked, "newly_unlocked"), vec![s("first_kill")]);
    let signal = p
        .signal("social.achievements", "achievement_unlocked")
        .await;
    assert_eq!(signal, vec![a.clone()]);
    let id = ach.unlock("first_kill".into());
    assert_eq!(list(&p.ok(id).await, "newly_unlocked"), Vec::<Value>::new());

    // Progress: monotonic, capped; the goal unlocks once.
    let id = ach.set_progress("collector".into(), 4);
    let progressed = p.ok(id).await;
    let a = progressed.get("achievement").unwrap();
    assert_eq!((int(a, "progress"), int(a, "goal")), (4, 10));
    assert_eq!(a.get("unlocked"), Some(&Value::Bool(false)));
    let id = ach.set_progress("collector".into(), 2);
    assert_eq!(
        int(p.ok(id).await.get("achievement").unwrap(), "progress"),
        4
    );
    let id = ach.set_progress("collector".into(), 10);
    assert_eq!(
        list(&p.ok(id).await, "newly_unlocked"),
        vec![s("collector")]
    );
    let signal = p
        .signal("social.achievements", "achievement_unlocked")
        .await;
    assert_eq!(string(&signal[0], "name"), "Collector");
    let id = ach.set_progress("collector".into(), 12);
    assert_eq!(
        int(p.ok(id).await.get("achievement").unwrap(), "progress"),
        10
    );
    // A stat-tied achievement moves only with its stat.
    let id = ach.set_progress("kill_100_enemies".into(), 45);
    assert_eq!(p.err(id).await.code, ErrorCode::Forbidden);

    // Stats: increments feed the tied achievement and the `sum` board; the unlock signal carries
    // the full achievement even though the stat answer names only its id.
    let id = stats.increment("enemies_killed".into(), 60);
    let after = p.ok(id).await;
    assert_eq!(first_key(&after), "stats");
    assert_eq!(int(after.get("values").unwrap(), "enemies_killed"), 60);
    let id = stats.increment("enemies_killed".into(), 45);
    let after = p.ok(id).await;
    assert_eq!(list(&after, "newly_unlocked"), vec![s("kill_100_enemies")]);
    let signal = p
        .signal("social.achievements", "achievement_unlocked")
        .await;
    assert_eq!(string(&signal[0], "name"), "Centurion");
    assert_eq!(signal[0].get("unlocked"), Some(&Value::Bool(true)));
    let id = stats.set("level".into(), 7);
    assert_eq!(int(p.ok(id).await.get("values").unwrap(), "level"), 7);
    let id = stats.update(
        Value::dict([("gold", Value::Int(900))]),
        Value::dict([("enemies_killed", Value::Int(1))]),
    );
    let both = p.ok(id).await;
    assert_eq!(int(both.get("values").unwrap(), "gold"), 900);
    assert_eq!(int(both.get("values").unwrap(), "enemies_killed"), 106);
    let id = stats.update(Value::dict([("gold", s("lots"))]), Value::Nil);
    assert_eq!(p.err(id).await.code, ErrorCode::InvalidRequest);
    let id = stats.get();
    let all = p.ok(id).await;
    let values = all.get("values").unwrap();
    assert_eq!(
        (
            int(values, "enemies_killed"),
            int(values, "level"),
            int(values, "gold")
        ),
        (106, 7, 900)
    );
    let id = p
        .client
        .social()
        .leaderboards()
        .get_rank("kills".into(), None, None);
    assert_eq!(int(&p.ok(id).await, "score"), 106, "the stat fed the board");

    // get_all: the list first, every documented field.
    let id = ach.get_all();
    let all = p.ok(id).await;
    assert_eq!(first_key(&all), "achievements");
    let by_id = |id: &str| {
        list(&all, "achievements")
            .into_iter()
            .find(|a| string(a, "id") == id)
            .unwrap()
    };
    let centurion = by_id("kill_100_enemies");
    assert_eq!(
        (int(&centurion, "progress"), int(&centurion, "goal")),
        (100, 100)
    );
    assert!(matches!(centurion.get("unlocked_at"), Some(Value::Int(_))));
    assert_eq!(string(&by_id("first_kill"), "description"), "Win a fight");
    let id = ach.get_percentages();
    let rates = p.ok(id).await;
    assert_eq!(first_key(&rates), "achievements");
    assert_eq!(int(&rates, "total_players"), 1);

    // Exactly one signal per achievement: none beyond the three taken above.
    let rest = p.take_signals("social.achievements", "achievement_unlocked");
    assert!(rest.is_empty(), "{rest:?}");

    let id = ach.unlock("no_such_achievement".into());
    assert_eq!(p.err(id).await.code, ErrorCode::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friends_lifecycle_search_presence_and_block() {
    let server = RealServer::start().await;
    let (mut ada, _d1, ada_id) = player(&server, "ada").await;
    let (mut bob, _d2, bob_id) = player(&server, "bob").await;
    let (mut abe, _d3, abe_id) = player(&server, "abe").await;
    let fa = ada.client.social().friends().clone();
    let fb = bob.client.social().friends().clone();

    let state = |v: &Value| v.get("state").cloned().unwrap();
    let id = fa.send_request(bob_id.clone());
    let sent = ada.ok(id).await;
    assert_eq!(
        (string(&sent, "user_id"), state(&sent)),
        (bob_id.clone(), s("sent"))
    );
    assert_eq!(
        ada.signal("social.friends", "friends_updated").await,
        vec![sent]
    );
    let id = fb.list(Some("received".into()));
    let received = list(&bob.ok(id).await, "friends");
    assert_eq!(received.len(), 1);
    assert_eq!(string(&received[0], "username"), "ada");
    let id = fb.decline(ada_id.clone());
    assert_eq!(state(&bob.ok(id).await), Value::Nil);
    let id = fa.send_request(bob_id.clone());
    ada.ok(id).await;
    let id = fa.cancel(bob_id.clone());
    assert_eq!(state(&ada.ok(id).await), Value::Nil);
    let id = fb.accept(ada_id.clone());
    assert_eq!(bob.err(id).await.code, ErrorCode::NotFound);
    let id = fa.send_request(bob_id.clone());
    ada.ok(id).await;
    let id = fb.accept(ada_id.clone());
    assert_eq!(state(&bob.ok(id).await), s("friend"));

    // Presence: bob's heartbeat shows him in a match to his friend.
    let id = fb.heartbeat(true);
    assert_eq!(bob.ok(id).await, Value::Dictionary(Vec::new()));
    let id = fa.list(None);
    let friends = ada.ok(id).await;
    assert_eq!(first_key(&friends), "friends");
    let bob_entry = &list(&friends, "friends")[0];
    assert_eq!(
        (string(bob_entry, "username"), state(bob_entry)),
        ("bob".into(), s("friend"))
    );
    assert_eq!(string(bob_entry, "presence"), "in_match");
    assert!(matches!(bob_entry.get("last_seen"), Some(Value::Int(_))));

    // Search by prefix (never finds the caller), paginated.
    let id = fb.search("A".into(), Some(1), None);
    let page = bob.ok(id).await;
    assert_eq!(first_key(&page), "players");
    let mut found: Vec<String> = list(&page, "players")
        .iter()
        .map(|p| string(p, "username"))
        .collect();
    let cursor = string(&page, "next_cursor");
    let id = fb.search("a".into(), Some(1), Some(cursor));
    let page = bob.ok(id).await;
    found.extend(list(&page, "players").iter().map(|p| string(p, "username")));
    found.sort();
    assert_eq!(found, vec!["abe".to_owned(), "ada".to_owned()]);

    // Remove, then block: the blocker disappears from the blocked player's search.
    let id = fa.remove(bob_id.clone());
    assert_eq!(state(&ada.ok(id).await), Value::Nil);
    let id = fa.list(Some("friend".into()));
    assert!(list(&ada.ok(id).await, "friends").is_empty());
    let id = fa.block(abe_id.clone());
    assert_eq!(state(&ada.ok(id).await), s("blocked"));
    let fe = abe.client.social().friends().clone();
    let id = fe.search("ad".into(), None, None);
    assert!(list(&abe.ok(id).await, "players").is_empty());
    let id = fe.send_request(ada_id.clone());
    assert_eq!(abe.err(id).await.code, ErrorCode::Forbidden);
    let id = fa.unblock(abe_id.clone());
    assert_eq!(state(&ada.ok(id).await), Value::Nil);
    let id = fe.search("ad".into(), None, None);
    assert_eq!(list(&abe.ok(id).await, "players").len(), 1);
    let updates = ada.take_signals("social.friends", "friends_updated");
    assert_eq!(
        updates.len(),
        6,
        "one per later change ada made: {updates:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_create_join_roles_invite_and_leave() {
    let server = RealServer::start().await;
    let (mut ada, _d1, _) = player(&server, "ada").await;
    let (mut bob, _d2, bob_id) = player(&server, "bob").await;
    let (mut cyd, _d3, cyd_id) = player(&server, "cyd").await;
    let ga = ada.client.social().groups().clone();
    let gb = bob.client.social().groups().clone();
    let gc = cyd.client.social().groups().clone();

    let id = ga.create(
        "Night Owls".into(),
        Value::dict([
            ("description", s("late raids")),
            ("open", Value::Bool(false)),
            ("max_members", Value::Int(10)),
        ]),
    );
    let group = ada.ok(id).await;
    let gid = string(&group, "id");
    assert_eq!(
        (string(&group, "my_role"), group.get("open")),
        ("owner".into(), Some(&Value::Bool(false)))
    );
    let id = gb.create("night owls".into(), Value::Nil);
    assert_eq!(bob.err(id).await.status, 409);
    let id = gb.create("x".into(), Value::dict([("open", s("yes"))]));
    assert_eq!(bob.err(id).await.code, ErrorCode::InvalidRequest);

    // Closed group: a request, accepted by the owner; then promote and demote.
    let id = gb.join(gid.clone());
    assert_eq!(string(&bob.ok(id).await, "my_role"), "requested");
    let id = ga.accept_request(gid.clone(), bob_id.clone());
    assert_eq!(string(&ada.ok(id).await, "role"), "member");
    let id = ga.promote(gid.clone(), bob_id.clone());
    assert_eq!(string(&ada.ok(id).await, "role"), "admin");
    // Admins invite; joining accepts the invite.
    let id = gb.invite(gid.clone(), cyd_id.clone());
    assert_eq!(string(&bob.ok(id).await, "role"), "invited");
    let id = gc.list();
    let mine = cyd.ok(id).await;
    assert_eq!(first_key(&mine), "groups");
    assert_eq!(string(&list(&mine, "groups")[0], "my_role"), "invited");
    let id = gc.join(gid.clone());
    assert_eq!(string(&cyd.ok(id).await, "my_role"), "member");
    let id = ga.demote(gid.clone(), bob_id.clone());
    assert_eq!(string(&ada.ok(id).await, "role"), "member");

    let id = ga.members(gid.clone());
    let members = ada.ok(id).await;
    assert_eq!(first_key(&members), "members");
    let mut names: Vec<(String, String)> = list(&members, "members")
        .iter()
        .map(|m| (string(m, "username"), string(m, "role")))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("ada".into(), "owner".into()),
            ("bob".into(), "member".into()),
            ("cyd".into(), "member".into())
        ]
    );
    let id = ga.get_group(gid.clone());
    assert_eq!(int(&ada.ok(id).await, "member_count"), 3);
    let id = gc.search(Some("night".into()), Some(5));
    assert_eq!(list(&cyd.ok(id).await, "groups").len(), 1);
    let id = gc.search(None, None);
    assert_eq!(list(&cyd.ok(id).await, "groups").len(), 1);

    // Kick, leave; the owner cannot leave while others remain.
    let id = ga.kick(gid.clone(), cyd_id.clone());
    ada.ok(id).await;
    let id = gb.kick(gid.clone(), cyd_id.clone());
    assert!(bob.err(id).await.status >= 400);
    let id = ga.leave(gid.clone());
    assert_eq!(ada.err(id).await.status, 409);
    let id = gb.leave(gid.clone());
    assert_eq!(bob.ok(id).await, Value::Dictionary(Vec::new()));
    let id = ga.leave(gid.clone());
    ada.ok(id).await;
    let id = ga.get_group(gid);
    assert_eq!(ada.err(id).await.code, ErrorCode::NotFound);
}
