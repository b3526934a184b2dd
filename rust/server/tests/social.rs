//! Social features over real HTTP on every backend: leaderboards, achievements, stats, friends
//! and groups.

mod common;

use common::{backends, expect_error, expect_status, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

struct P {
    token: String,
    id: String,
    name: String,
}

async fn named_player(s: &TestServer, name: &str) -> P {
    let body = expect_status(
        s.req(Method::POST, "/api/v1/auth/device")
            .json(
                &json!({"device_id": format!("device-{}", uuid::Uuid::new_v4()), "username": name}),
            )
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    P {
        token: body["access_token"].as_str().unwrap().to_owned(),
        id: body["user"]["id"].as_str().unwrap().to_owned(),
        name: body["user"]["username"].as_str().unwrap().to_owned(),
    }
}

async fn anon(s: &TestServer) -> P {
    let body = s.device_player().await;
    P {
        token: body["access_token"].as_str().unwrap().to_owned(),
        id: body["user"]["id"].as_str().unwrap().to_owned(),
        name: body["user"]["username"].as_str().unwrap().to_owned(),
    }
}

async fn define_board(s: &TestServer, id: &str, def: Value) {
    expect_status(
        s.admin(Method::PUT, &format!("/api/v1/leaderboards/{id}"))
            .json(&def)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
}

async fn submit(s: &TestServer, p: &P, board: &str, score: i64) -> Value {
    expect_status(
        s.player(
            Method::POST,
            &format!("/api/v1/leaderboards/{board}/scores"),
            &p.token,
        )
        .json(&json!({"score": score}))
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await
}

async fn read(s: &TestServer, p: &P, board: &str, query: &str) -> Value {
    expect_status(
        s.player(
            Method::GET,
            &format!("/api/v1/leaderboards/{board}?{query}"),
            &p.token,
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await
}

async fn admin_read(s: &TestServer, board: &str, query: &str) -> Value {
    expect_status(
        s.admin(
            Method::GET,
            &format!("/api/v1/leaderboards/{board}?{query}"),
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await
}

async fn admin_submit(s: &TestServer, p: &P, board: &str, score: i64) -> Value {
    expect_status(
        s.admin(
            Method::POST,
            &format!("/api/v1/leaderboards/{board}/scores"),
        )
        .json(&json!({"score": score, "user_id": p.id}))
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await
}

/// (user_id, score, rank) of each entry.
fn rows(page: &Value) -> Vec<(String, i64, u64)> {
    page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["user_id"].as_str().unwrap().to_owned(),
                e["score"].as_i64().unwrap(),
                e["rank"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn leaderboard_operators_best_latest_increment_sum() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        define_board(&s, "best", json!({"operator": "best"})).await;
        define_board(
            &s,
            "best_asc",
            json!({"operator": "best", "sort_order": "asc"}),
        )
        .await;
        define_board(&s, "latest", json!({"operator": "latest"})).await;
        define_board(&s, "incr", json!({"operator": "increment"})).await;
        define_board(&s, "sum", json!({"operator": "sum"})).await;
        let a = anon(&s).await;

        for (board, scores, expected) in [
            ("best", vec![100, 50, 120, 80], 120),
            ("best_asc", vec![100, 50, 120, 80], 50),
            ("latest", vec![100, 50, 120, 80], 80),
            ("incr", vec![100, -50, 20], 70),
            ("sum", vec![100, 50, 20], 170),
        ] {
            let mut last = Value::Null;
            for score in &scores {
                last = submit(&s, &a, board, *score).await;
            }
            assert_eq!(
                last["entry"]["score"], expected,
                "{backend:?} {board}: {last}"
            );
            assert_eq!(last["entry"]["num_scores"], scores.len() as i64);
            assert_eq!(last["entry"]["rank"], 1);
            assert_eq!(last["entry"]["username"], a.name.as_str());
            let page = read(&s, &a, board, "").await;
            assert_eq!(rows(&page), vec![(a.id.clone(), expected, 1)], "{board}");
        }

        // Metadata follows the kept score: an unimproved `best` keeps the old metadata.
        let m = s
            .player(Method::POST, "/api/v1/leaderboards/best/scores", &a.token)
            .json(&json!({"score": 130, "metadata": {"car": "red"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            expect_status(m, StatusCode::OK).await["entry"]["metadata"]["car"],
            "red"
        );
        let m = s
            .player(Method::POST, "/api/v1/leaderboards/best/scores", &a.token)
            .json(&json!({"score": 1, "metadata": {"car": "blue"}}))
            .send()
            .await
            .unwrap();
        let body = expect_status(m, StatusCode::OK).await;
        assert_eq!(body["entry"]["score"], 130);
        assert_eq!(body["entry"]["metadata"]["car"], "red");

        // Sum refuses negative additions (the board's rule: 409); metadata must be an object.
        let neg = s
            .player(Method::POST, "/api/v1/leaderboards/sum/scores", &a.token)
            .json(&json!({"score": -1}))
            .send()
            .await
            .unwrap();
        expect_error(neg, StatusCode::CONFLICT, "conflict").await;
        let bad_meta = s
            .player(Method::POST, "/api/v1/leaderboards/best/scores", &a.token)
            .json(&json!({"score": 1, "metadata": [1, 2]}))
            .send()
            .await
            .unwrap();
        expect_error(bad_meta, StatusCode::BAD_REQUEST, "invalid_request").await;
        let missing = s
            .player(Method::POST, "/api/v1/leaderboards/nope/scores", &a.token)
            .json(&json!({"score": 1}))
            .send()
            .await
            .unwrap();
        expect_error(missing, StatusCode::NOT_FOUND, "not_found").await;

        let list = expect_status(
            s.player(Method::GET, "/api/v1/leaderboards", &a.token)
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        let ids: Vec<_> = list["leaderboards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, ["best", "best_asc", "incr", "latest", "sum"]);
        s.stop().await;
    }
}

#[tokio::test]
async fn leaderboard_ranges_pagination_and_ties() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        define_board(&s, "hs", json!({})).await;
        let mut players = Vec::new();
        for _ in 0..12 {
            players.push(anon(&s).await);
        }
        // Scores 1000, 990, ..., 890; players[10] ties players[3] (970) but submits later.
        for (i, p) in players.iter().enumerate().take(10) {
            submit(&s, p, "hs", 1000 - 10 * i as i64).await;
        }
        let tie = submit(&s, &players[10], "hs", 970).await;
        assert_eq!(
            tie["entry"]["rank"], 5,
            "later equal score ranks after: {tie}"
        );
        submit(&s, &players[11], "hs", 5).await;

        // Global top with cursor pagination walks every entry exactly once, in order.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let q = match &cursor {
                Some(c) => format!("limit=5&cursor={c}"),
                None => "limit=5".to_owned(),
            };
            let page = read(&s, &players[0], "hs", &q).await;
            assert_eq!(page["total"], 12);
            seen.extend(rows(&page));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        let ranks: Vec<u64> = seen.iter().map(|r| r.2).collect();
        assert_eq!(ranks, (1..=12).collect::<Vec<u64>>());
        let order: Vec<&str> = seen.iter().map(|r| r.0.as_str()).collect();
        let mut expected: Vec<&str> = players[..4].iter().map(|p| p.id.as_str()).collect();
        expected.push(&players[10].id);
        expected.extend(players[4..10].iter().map(|p| p.id.as_str()));
        expected.push(&players[11].id);
        assert_eq!(order, expected);

        // Around me: N above and below, with the caller's own entry.
        let around = read(&s, &players[6], "hs", "range=around_me&limit=2").await;
        let r: Vec<u64> = rows(&around).iter().map(|r| r.2).collect();
        assert_eq!(r, vec![6, 7, 8, 9, 10]);
        assert_eq!(around["me"]["rank"], 8);
        assert_eq!(around["me"]["user_id"], players[6].id.as_str());
        let top = read(&s, &players[0], "hs", "range=around_me&limit=2").await;
        assert_eq!(
            rows(&top).iter().map(|r| r.2).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        let outsider = anon(&s).await;
        let none = read(&s, &outsider, "hs", "range=around_me").await;
        assert!(none["entries"].as_array().unwrap().is_empty());
        assert!(none["me"].is_null());

        // Friends range: the caller plus accepted friends only, with global ranks.
        befriend(&s, &players[2], &players[9]).await;
        befriend(&s, &players[2], &players[11]).await;
        // A pending request does not count.
        expect_status(
            s.player(
                Method::POST,
                &format!("/api/v1/friends/{}/request", players[0].id),
                &players[2].token,
            )
            .send()
            .await
            .unwrap(),
            StatusCode::OK,
        )
        .await;
        let friends = read(&s, &players[2], "hs", "range=friends").await;
        assert_eq!(
            rows(&friends),
            vec![
                (players[2].id.clone(), 980, 3),
                (players[9].id.clone(), 910, 11),
                (players[11].id.clone(), 5, 12),
            ]
        );

        // One player's rank, and typed errors for bad reads.
        let rank = expect_status(
            s.player(
                Method::GET,
                &format!("/api/v1/leaderboards/hs/ranks/{}", players[10].id),
                &players[0].token,
            )
            .send()
            .await
            .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(rank["rank"], 5);
        let me = expect_status(
            s.player(
                Method::GET,
                "/api/v1/leaderboards/hs/ranks/me",
                &players[0].token,
            )
            .send()
            .await
            .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(me["rank"], 1);
        let unranked = s
            .player(
                Method::GET,
                "/api/v1/leaderboards/hs/ranks/me",
                &outsider.token,
            )
            .send()
            .await
            .unwrap();
        expect_error(unranked, StatusCode::NOT_FOUND, "not_found").await;
        for bad in [
            "range=sideways",
            "cursor=garbage",
            "limit=0",
            "limit=1001",
            "limit=ten",
            "period=soon",
        ] {
            let resp = s
                .player(
                    Method::GET,
                    &format!("/api/v1/leaderboards/hs?{bad}"),
                    &players[0].token,
                )
                .send()
                .await
                .unwrap();
            expect_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
        }
        // A server key reads around any player it names.
        let by_server = expect_status(
            s.admin(
                Method::GET,
                &format!(
                    "/api/v1/leaderboards/hs?range=around_me&limit=1&user_id={}",
                    players[11].id
                ),
            )
            .send()
            .await
            .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(
            rows(&by_server).iter().map(|r| r.2).collect::<Vec<_>>(),
            vec![11, 12]
        );
        s.stop().await;
    }
}

async fn befriend(s: &TestServer, a: &P, b: &P) {
    let sent = expect_status(
        s.player(
            Method::POST,
            &format!("/api/v1/friends/{}/request", b.id),
            &a.token,
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(sent["state"], "sent");
    let accepted = expect_status(
        s.player(
            Method::POST,
            &format!("/api/v1/friends/{}/accept", a.id),
            &b.token,
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(accepted["state"], "friend");
}

#[tokio::test]
async fn leaderboard_reset_rollover_keeps_previous_period() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        define_board(&s, "daily", json!({"reset": "daily"})).await;
        define_board(
            &s,
            "hourly",
            json!({"reset": "0 * * * *", "operator": "sum"}),
        )
        .await;
        let a = anon(&s).await;
        let b = anon(&s).await;
        submit(&s, &a, "daily", 500).await;
        submit(&s, &b, "daily", 300).await;
        submit(&s, &a, "hourly", 7).await;
        let today = read(&s, &a, "daily", "").await;
        let period = today["period"].as_i64().unwrap();
        assert_eq!(
            period % 86_400_000,
            0,
            "daily periods start at midnight UTC"
        );
        let next = today["next_reset_at"].as_i64().unwrap();
        assert_eq!(next, period + 86_400_000);

        // A day later access tokens have expired: the game's server reads and writes for them.
        s.clock.advance_ms(86_400_000);
        let fresh = admin_read(&s, "daily", "").await;
        assert_eq!(fresh["period"], next);
        assert!(fresh["entries"].as_array().unwrap().is_empty());
        assert_eq!(fresh["total"], 0);
        admin_submit(&s, &b, "daily", 100).await;

        let previous = admin_read(&s, "daily", &format!("period=previous&user_id={}", a.id)).await;
        assert_eq!(previous["period"], period);
        assert_eq!(
            rows(&previous),
            vec![(a.id.clone(), 500, 1), (b.id.clone(), 300, 2)]
        );
        assert_eq!(previous["me"]["rank"], 1);
        let by_id = admin_read(&s, "daily", &format!("period={period}")).await;
        assert_eq!(rows(&by_id), rows(&previous));
        let now = admin_read(&s, "daily", "").await;
        assert_eq!(rows(&now), vec![(b.id.clone(), 100, 1)]);
        let rank_prev = expect_status(
            s.admin(
                Method::GET,
                &format!("/api/v1/leaderboards/daily/ranks/{}?period=previous", b.id),
            )
            .send()
            .await
            .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(rank_prev["rank"], 2);
        assert_eq!(rank_prev["score"], 300);

        // The cron board rolled over too: the sum restarts.
        let hourly = admin_submit(&s, &a, "hourly", 3).await;
        assert_eq!(hourly["entry"]["score"], 3);
        assert_eq!(hourly["period"].as_i64().unwrap() % 3_600_000, 0);

        // A board that never resets has no previous period.
        define_board(&s, "forever", json!({})).await;
        let resp = s
            .admin(Method::GET, "/api/v1/leaderboards/forever?period=previous")
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::NOT_FOUND, "not_found").await;
        s.stop().await;
    }
}

#[tokio::test]
async fn leaderboard_bounds_authority_and_ownership() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        define_board(&s, "bounded", json!({"min_score": 0, "max_score": 1000})).await;
        define_board(&s, "official", json!({"server_authoritative": true})).await;
        let a = anon(&s).await;
        let b = anon(&s).await;

        for score in [-1, 1001] {
            let resp = s
                .player(
                    Method::POST,
                    "/api/v1/leaderboards/bounded/scores",
                    &a.token,
                )
                .json(&json!({"score": score}))
                .send()
                .await
                .unwrap();
            let body = expect_error(resp, StatusCode::CONFLICT, "conflict").await;
            assert_eq!(body["error"]["details"]["max_score"], 1000);
        }
        submit(&s, &a, "bounded", 1000).await;

        let resp = s
            .player(
                Method::POST,
                "/api/v1/leaderboards/official/scores",
                &a.token,
            )
            .json(&json!({"score": 5}))
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;

        // A player can never submit for someone else.
        let resp = s
            .player(
                Method::POST,
                "/api/v1/leaderboards/bounded/scores",
                &a.token,
            )
            .json(&json!({"score": 5, "user_id": b.id}))
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
        // Naming themselves is fine.
        let own = s
            .player(
                Method::POST,
                "/api/v1/leaderboards/bounded/scores",
                &b.token,
            )
            .json(&json!({"score": 5, "user_id": b.id}))
            .send()
            .await
            .unwrap();
        expect_status(own, StatusCode::OK).await;

        // The server submits for anyone of its project, and must name them.
        let by_server = expect_status(
            s.admin(Method::POST, "/api/v1/leaderboards/official/scores")
                .json(&json!({"score": 42, "user_id": b.id}))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(by_server["entry"]["user_id"], b.id.as_str());
        assert_eq!(by_server["entry"]["rank"], 1);
        let unnamed = s
            .admin(Method::POST, "/api/v1/leaderboards/official/scores")
            .json(&json!({"score": 42}))
            .send()
            .await
            .unwrap();
        expect_error(unnamed, StatusCode::NOT_FOUND, "not_found").await;
        let stranger = s
            .admin(Method::POST, "/api/v1/leaderboards/official/scores")
            .json(&json!({"score": 42, "user_id": uuid::Uuid::now_v7().to_string()}))
            .send()
            .await
            .unwrap();
        expect_error(stranger, StatusCode::NOT_FOUND, "not_found").await;

        // Only the server defines boards, and definitions are validated.
        let resp = s
            .player(Method::PUT, "/api/v1/leaderboards/mine", &a.token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
        let crossed = s
            .admin(Method::PUT, "/api/v1/leaderboards/bad")
            .json(&json!({"min_score": 10, "max_score": 1}))
            .send()
            .await
            .unwrap();
        expect_error(crossed, StatusCode::CONFLICT, "conflict").await;
        for bad in [
            json!({"reset": "every full moon"}),
            json!({"operator": "multiply"}),
        ] {
            let resp = s
                .admin(Method::PUT, "/api/v1/leaderboards/bad")
                .json(&bad)
                .send()
                .await
                .unwrap();
            expect_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
        }
        let resp = s
            .admin(Method::PUT, "/api/v1/leaderboards/bad%20id")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
        let anonymous = s
            .req(Method::GET, "/api/v1/leaderboards/bounded")
            .send()
            .await
            .unwrap();
        expect_error(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
        s.stop().await;
    }
}

#[tokio::test]
async fn leaderboard_index_is_rebuilt_after_restart() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        define_board(&s, "hs", json!({"reset": "weekly"})).await;
        define_board(
            &s,
            "asc",
            json!({"sort_order": "asc", "operator": "latest"}),
        )
        .await;
        let mut players = Vec::new();
        for i in 0..6 {
            let p = anon(&s).await;
            // Two ties (0 and 1 score 50; 2 and 3 score 40): submission order must survive.
            submit(&s, &p, "hs", [50, 50, 40, 40, 30, 20][i]).await;
            submit(&s, &p, "asc", 100 - i as i64).await;
            players.push(p);
        }
        let before_hs = read(&s, &players[0], "hs", "limit=100").await;
        let before_asc = read(&s, &players[0], "asc", "limit=100").await;
        let s = s.restart().await;
        let after_hs = read(&s, &players[0], "hs", "limit=100").await;
        let after_asc = read(&s, &players[0], "asc", "limit=100").await;
        assert_eq!(rows(&before_hs), rows(&after_hs));
        assert_eq!(rows(&before_asc), rows(&after_asc));
        assert_eq!(after_hs["period"], before_hs["period"]);
        assert_eq!(rows(&after_asc)[0].0, players[5].id);

        // Writes after the restart rank against the rebuilt index, ties included.
        let late = anon(&s).await;
        let entry = submit(&s, &late, "hs", 50).await;
        assert_eq!(entry["entry"]["rank"], 3);
        let improved = submit(&s, &players[5], "hs", 45).await;
        assert_eq!(improved["entry"]["rank"], 4);
        s.stop().await;
    }
}

async fn define_achievement(s: &TestServer, id: &str, def: Value) {
    expect_status(
        s.admin(Method::PUT, &format!("/api/v1/achievements/{id}"))
            .json(&def)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
}

async fn achievements(s: &TestServer, p: &P) -> Vec<Value> {
    expect_status(
        s.player(Method::GET, "/api/v1/achievements", &p.token)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await["achievements"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn achievements_progress_unlocks_exactly_once() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        define_achievement(
            &s,
            "first_kill",
            json!({"name": "First blood", "description": "Win a fight"}),
        )
        .await;
        define_achievement(
            &s,
            "kill_100_enemies",
            json!({"name": "Centurion", "goal": 100, "icon_url": "https://x/c.png"}),
        )
        .await;
        define_achievement(&s, "secret", json!({"name": "Secret", "hidden": true})).await;
        let a = anon(&s).await;
        let b = anon(&s).await;

        let list = achievements(&s, &a).await;
        let ids: Vec<_> = list.iter().map(|x| x["id"].as_str().unwrap()).collect();
        assert_eq!(
            ids,
            ["first_kill", "kill_100_enemies"],
            "hidden stays hidden"
        );
        assert_eq!(list[1]["goal"], 100);
        assert_eq!(list[1]["progress"], 0);
        assert_eq!(list[1]["unlocked"], false);

        let progress = |v: i64| {
            s.player(
                Method::POST,
                "/api/v1/achievements/kill_100_enemies/progress",
                &a.token,
            )
            .json(&json!({"progress": v}))
            .send()
        };
        let r = expect_status(progress(45).await.unwrap(), StatusCode::OK).await;
        assert_eq!(r["achievement"]["progress"], 45);
        assert_eq!(r["newly_unlocked"], json!([]));
        // Monotonic: lower values are ignored.
        let r = expect_status(progress(10).await.unwrap(), StatusCode::OK).await;
        assert_eq!(r["achievement"]["progress"], 45);
        let r = expect_status(progress(150).await.unwrap(), StatusCode::OK).await;
        assert_eq!(r["achievement"]["progress"], 100);
        assert_eq!(r["achievement"]["unlocked"], true);
        assert!(r["achievement"]["unlocked_at"].is_i64());
        assert_eq!(r["newly_unlocked"], json!(["kill_100_enemies"]));
        let r = expect_status(progress(200).await.unwrap(), StatusCode::OK).await;
        assert_eq!(r["newly_unlocked"], json!([]), "second time is not new");
        let neg = progress(-1).await.unwrap();
        expect_error(neg, StatusCode::BAD_REQUEST, "invalid_request").await;

        let unlock = |p: &P, id: &str| {
            s.player(
                Method::POST,
                &format!("/api/v1/achievements/{id}/unlock"),
                &p.token,
            )
            .send()
        };
        let r = expect_status(unlock(&a, "first_kill").await.unwrap(), StatusCode::OK).await;
        assert_eq!(r["newly_unlocked"], json!(["first_kill"]));
        let r = expect_status(unlock(&a, "first_kill").await.unwrap(), StatusCode::OK).await;
        assert_eq!(r["newly_unlocked"], json!([]));
        expect_status(unlock(&a, "secret").await.unwrap(), StatusCode::OK).await;
        let missing = unlock(&a, "nope").await.unwrap();
        expect_error(missing, StatusCode::NOT_FOUND, "not_found").await;

        let list = achievements(&s, &a).await;
        assert_eq!(list.len(), 3, "unlocked hidden ones show");
        assert!(list.iter().all(|x| x["unlocked"] == true));

        // A player cannot unlock for someone else; the server can.
        let other = s
            .player(
                Method::POST,
                "/api/v1/achievements/first_kill/unlock",
                &a.token,
            )
            .json(&json!({"user_id": b.id}))
            .send()
            .await
            .unwrap();
        expect_error(other, StatusCode::FORBIDDEN, "forbidden").await;
        let by_server = expect_status(
            s.admin(Method::POST, "/api/v1/achievements/first_kill/unlock")
                .json(&json!({"user_id": b.id}))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(by_server["newly_unlocked"], json!(["first_kill"]));
        let define = s
            .player(Method::PUT, "/api/v1/achievements/x", &a.token)
            .json(&json!({"name": "x"}))
            .send()
            .await
            .unwrap();
        expect_error(define, StatusCode::FORBIDDEN, "forbidden").await;

        // Percentages over all players of the project (a, b).
        let pct = expect_status(
            s.player(Method::GET, "/api/v1/achievements/percentages", &b.token)
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(pct["total_players"], 2);
        let by_id = |id: &str| {
            pct["achievements"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["id"] == id)
                .cloned()
        };
        assert_eq!(by_id("first_kill").unwrap()["percent"], 100.0);
        assert_eq!(by_id("kill_100_enemies").unwrap()["percent"], 50.0);
        assert!(
            by_id("secret").is_none(),
            "hidden percentages are for the server"
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn stats_drive_achievements_and_leaderboards() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        define_achievement(
            &s,
            "kill_100_enemies",
            json!({"name": "Centurion", "goal": 100, "stat": "enemies_killed"}),
        )
        .await;
        define_board(
            &s,
            "kills_weekly",
            json!({"operator": "sum", "reset": "weekly", "stat": "enemies_killed"}),
        )
        .await;
        define_board(&s, "level", json!({"operator": "best", "stat": "level"})).await;
        define_board(
            &s,
            "gold",
            json!({"server_authoritative": true, "stat": "gold"}),
        )
        .await;
        let a = anon(&s).await;
        let b = anon(&s).await;

        let inc = |v: i64| {
            s.player(Method::POST, "/api/v1/stats/me", &a.token)
                .json(&json!({"increment": {"enemies_killed": v}}))
                .send()
        };
        let r = expect_status(inc(60).await.unwrap(), StatusCode::OK).await;
        assert_eq!(r["stats"][0]["value"], 60);
        assert_eq!(r["newly_unlocked"], json!([]));
        let r = expect_status(inc(45).await.unwrap(), StatusCode::OK).await;
        assert_eq!(r["stats"][0]["value"], 105);
        assert_eq!(r["newly_unlocked"], json!(["kill_100_enemies"]));
        let r = expect_status(inc(1).await.unwrap(), StatusCode::OK).await;
        assert_eq!(r["newly_unlocked"], json!([]));
        let list = achievements(&s, &a).await;
        assert_eq!(list[0]["unlocked"], true);
        assert_eq!(list[0]["progress"], 100);
        // Stat-driven achievements move only with their stat.
        let direct = s
            .player(
                Method::POST,
                "/api/v1/achievements/kill_100_enemies/progress",
                &b.token,
            )
            .json(&json!({"progress": 100}))
            .send()
            .await
            .unwrap();
        expect_error(direct, StatusCode::FORBIDDEN, "forbidden").await;

        let set = expect_status(
            s.player(Method::POST, "/api/v1/stats/me", &a.token)
                .json(&json!({"set": {"level": 7}}))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(set["stats"][0]["name"], "level");
        let all = expect_status(
            s.player(Method::GET, "/api/v1/stats/me", &a.token)
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        let pairs: Vec<(String, i64)> = all["stats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["name"].as_str().unwrap().to_owned(),
                    x["value"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            pairs,
            vec![("enemies_killed".into(), 106), ("level".into(), 7)]
        );

        // The stats fed their boards: the weekly sum counts kills, `best` keeps the level.
        let kills = read(&s, &a, "kills_weekly", "").await;
        assert_eq!(rows(&kills), vec![(a.id.clone(), 106, 1)]);
        let level = read(&s, &a, "level", "").await;
        assert_eq!(rows(&level), vec![(a.id.clone(), 7, 1)]);

        // Ownership and authority on stats.
        let other = s
            .player(Method::POST, &format!("/api/v1/stats/{}", b.id), &a.token)
            .json(&json!({"set": {"level": 1}}))
            .send()
            .await
            .unwrap();
        expect_error(other, StatusCode::FORBIDDEN, "forbidden").await;
        let read_other = s
            .player(Method::GET, &format!("/api/v1/stats/{}", b.id), &a.token)
            .send()
            .await
            .unwrap();
        expect_error(read_other, StatusCode::FORBIDDEN, "forbidden").await;
        let gold = s
            .player(Method::POST, "/api/v1/stats/me", &a.token)
            .json(&json!({"set": {"gold": 1}}))
            .send()
            .await
            .unwrap();
        expect_error(gold, StatusCode::FORBIDDEN, "forbidden").await;
        let by_server = expect_status(
            s.admin(Method::POST, &format!("/api/v1/stats/{}", b.id))
                .json(&json!({"set": {"gold": 900}}))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(by_server["stats"][0]["value"], 900);
        let gold_board = read(&s, &b, "gold", "").await;
        assert_eq!(rows(&gold_board), vec![(b.id.clone(), 900, 1)]);
        let resp = s
            .player(Method::POST, "/api/v1/stats/me", &a.token)
            .json(&json!({"set": {"a b": 1}}))
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
        let resp = s
            .player(Method::POST, "/api/v1/stats/me", &a.token)
            .json(&json!({"set": {"x": 1}, "increment": {"x": 1}}))
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::CONFLICT, "conflict").await;
        s.stop().await;
    }
}

async fn friend_call(s: &TestServer, p: &P, other: &P, action: &str) -> reqwest::Response {
    s.player(
        Method::POST,
        &format!("/api/v1/friends/{}/{action}", other.id),
        &p.token,
    )
    .send()
    .await
    .unwrap()
}

async fn friend_list(s: &TestServer, p: &P) -> Vec<(String, String)> {
    let body = expect_status(
        s.player(Method::GET, "/api/v1/friends", &p.token)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    body["friends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["user_id"].as_str().unwrap().to_owned(),
                f["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn friends_request_lifecycle_and_presence() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let a = named_player(&s, "alice").await;
        let b = named_player(&s, "bob").await;
        let c = named_player(&s, "carol").await;

        // send -> decline
        let r = expect_status(friend_call(&s, &a, &b, "request").await, StatusCode::OK).await;
        assert_eq!(r["state"], "sent");
        assert_eq!(
            friend_list(&s, &a).await,
            vec![(b.id.clone(), "sent".into())]
        );
        assert_eq!(
            friend_list(&s, &b).await,
            vec![(a.id.clone(), "received".into())]
        );
        // Only the receiver accepts or declines.
        expect_error(
            friend_call(&s, &a, &b, "accept").await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        let r = expect_status(friend_call(&s, &b, &a, "decline").await, StatusCode::OK).await;
        assert!(r["state"].is_null());
        assert!(friend_list(&s, &a).await.is_empty());

        // send -> cancel
        expect_status(friend_call(&s, &a, &b, "request").await, StatusCode::OK).await;
        expect_error(
            friend_call(&s, &b, &a, "cancel").await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        expect_status(friend_call(&s, &a, &b, "cancel").await, StatusCode::OK).await;
        assert!(friend_list(&s, &b).await.is_empty());

        // send -> accept -> remove
        befriend(&s, &a, &b).await;
        assert_eq!(
            friend_list(&s, &a).await,
            vec![(b.id.clone(), "friend".into())]
        );
        assert_eq!(
            friend_list(&s, &b).await,
            vec![(a.id.clone(), "friend".into())]
        );
        // Presence: bob's requests made him online; a heartbeat marks him in a match.
        expect_status(
            s.player(Method::POST, "/api/v1/friends/heartbeat", &b.token)
                .json(&json!({"in_match": true}))
                .send()
                .await
                .unwrap(),
            StatusCode::NO_CONTENT,
        )
        .await;
        let listed = expect_status(
            s.player(Method::GET, "/api/v1/friends?state=friend", &a.token)
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(listed["friends"][0]["presence"], "in_match");
        assert_eq!(listed["friends"][0]["username"], "bob");
        assert!(listed["friends"][0]["last_seen"].is_i64());
        s.clock.advance_ms(5 * 60_000);
        let later = expect_status(
            s.player(Method::GET, "/api/v1/friends", &a.token)
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(later["friends"][0]["presence"], "offline");

        let removed = s
            .player(
                Method::DELETE,
                &format!("/api/v1/friends/{}", a.id),
                &b.token,
            )
            .send()
            .await
            .unwrap();
        expect_status(removed, StatusCode::OK).await;
        assert!(friend_list(&s, &a).await.is_empty());
        expect_error(
            friend_call(&s, &a, &b, "remove").await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;

        // Crossed requests become a friendship.
        expect_status(friend_call(&s, &a, &c, "request").await, StatusCode::OK).await;
        let r = expect_status(friend_call(&s, &c, &a, "request").await, StatusCode::OK).await;
        assert_eq!(r["state"], "friend");

        // Typed errors.
        expect_error(
            friend_call(&s, &a, &a, "request").await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        expect_error(
            friend_call(&s, &a, &b, "poke").await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .await;
        let ghost = s
            .player(
                Method::POST,
                &format!("/api/v1/friends/{}/request", uuid::Uuid::now_v7()),
                &a.token,
            )
            .send()
            .await
            .unwrap();
        expect_error(ghost, StatusCode::NOT_FOUND, "not_found").await;
        let bad_filter = s
            .player(Method::GET, "/api/v1/friends?state=enemy", &a.token)
            .send()
            .await
            .unwrap();
        expect_error(bad_filter, StatusCode::BAD_REQUEST, "invalid_request").await;
        s.stop().await;
    }
}

async fn search(s: &TestServer, p: &P, q: &str) -> Value {
    expect_status(
        s.player(
            Method::GET,
            &format!("/api/v1/friends/search?{q}"),
            &p.token,
        )
        .send()
        .await
        .unwrap(),
        StatusCode::OK,
    )
    .await
}

fn names(page: &Value) -> Vec<String> {
    page["players"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["username"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn block_hides_the_blocker_from_search_and_friend_ranges() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let me = named_player(&s, "Zed").await;
        let blocker = named_player(&s, "Zara").await;
        let friendly = named_player(&s, "Zoe").await;
        let _other = named_player(&s, "zz_top").await;
        let _wild = named_player(&s, "z_ab").await;
        let _pct = named_player(&s, "zxab").await;

        // Prefix, case-insensitive, sorted, paginated; the caller is left out.
        let page1 = search(&s, &me, "q=Z&limit=2").await;
        assert_eq!(names(&page1), vec!["z_ab", "Zara"]);
        let cursor = page1["next_cursor"].as_str().unwrap().to_owned();
        let page2 = search(&s, &me, &format!("q=z&limit=2&cursor={cursor}")).await;
        assert_eq!(names(&page2), vec!["Zoe", "zxab"]);
        let page3 = search(
            &s,
            &me,
            &format!(
                "q=z&limit=2&cursor={}",
                page2["next_cursor"].as_str().unwrap()
            ),
        )
        .await;
        assert_eq!(names(&page3), vec!["zz_top"]);
        assert!(page3["next_cursor"].is_null());
        // `_` is literal, not a wildcard.
        assert_eq!(names(&search(&s, &me, "q=z_").await), vec!["z_ab"]);
        let empty = s
            .player(Method::GET, "/api/v1/friends/search?q=", &me.token)
            .send()
            .await
            .unwrap();
        expect_error(empty, StatusCode::BAD_REQUEST, "invalid_request").await;

        define_board(&s, "hs", json!({})).await;
        for (p, score) in [(&me, 10), (&blocker, 20), (&friendly, 30)] {
            submit(&s, p, "hs", score).await;
        }
        befriend(&s, &me, &blocker).await;
        befriend(&s, &me, &friendly).await;
        let before = read(&s, &me, "hs", "range=friends").await;
        assert_eq!(rows(&before).len(), 3);

        // Zara blocks me: the friendship ends and she vanishes from my search and friend range.
        let r = expect_status(
            friend_call(&s, &blocker, &me, "block").await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(r["state"], "blocked");
        assert_eq!(names(&search(&s, &me, "q=za").await), Vec::<String>::new());
        assert_eq!(
            names(&search(&s, &blocker, "q=ze").await),
            Vec::<String>::new()
        );
        let after = read(&s, &me, "hs", "range=friends").await;
        assert_eq!(
            rows(&after),
            vec![(friendly.id.clone(), 30, 1), (me.id.clone(), 10, 3)]
        );
        assert_eq!(
            friend_list(&s, &me).await,
            vec![(friendly.id.clone(), "friend".into())]
        );
        assert_eq!(
            friend_list(&s, &blocker).await,
            vec![(me.id.clone(), "blocked".into())]
        );
        // The blocked player cannot send requests to the blocker; the blocker must unblock first.
        expect_error(
            friend_call(&s, &me, &blocker, "request").await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        expect_error(
            friend_call(&s, &blocker, &me, "request").await,
            StatusCode::CONFLICT,
            "conflict",
        )
        .await;

        // Blocking also drops pending requests.
        let pending = named_player(&s, "pat").await;
        expect_status(
            friend_call(&s, &pending, &friendly, "request").await,
            StatusCode::OK,
        )
        .await;
        expect_status(
            friend_call(&s, &friendly, &pending, "block").await,
            StatusCode::OK,
        )
        .await;
        assert!(friend_list(&s, &pending).await.is_empty());

        // Unblocking shows her again.
        expect_status(
            friend_call(&s, &blocker, &me, "unblock").await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(names(&search(&s, &me, "q=za").await), vec!["Zara"]);
        s.stop().await;
    }
}

async fn group_call(s: &TestServer, p: &P, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut req = s.player(Method::POST, path, &p.token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn groups_roles_and_membership() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let owner = named_player(&s, "owner").await;
        let admin = named_player(&s, "admin").await;
        let member = named_player(&s, "member").await;
        let outsider = named_player(&s, "outsider").await;

        let open = expect_status(
            group_call(
                &s,
                &owner,
                "/api/v1/groups",
                Some(json!({"name": "Night Owls", "description": "late"})),
            )
            .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(open["my_role"], "owner");
        assert_eq!(open["member_count"], 1);
        let gid = open["id"].as_str().unwrap().to_owned();
        let dup = group_call(
            &s,
            &admin,
            "/api/v1/groups",
            Some(json!({"name": "night owls"})),
        )
        .await;
        expect_error(dup, StatusCode::CONFLICT, "conflict").await;

        // Open group: join directly.
        for p in [&admin, &member] {
            let j = expect_status(
                group_call(&s, p, &format!("/api/v1/groups/{gid}/join"), None).await,
                StatusCode::OK,
            )
            .await;
            assert_eq!(j["my_role"], "member");
        }
        expect_error(
            group_call(&s, &member, &format!("/api/v1/groups/{gid}/join"), None).await,
            StatusCode::CONFLICT,
            "conflict",
        )
        .await;

        let act = |actor: &P, target: &P, action: &str| {
            let path = format!("/api/v1/groups/{gid}/members/{}/{action}", target.id);
            s.player(Method::POST, &path, &actor.token).send()
        };
        // Members cannot manage; the owner promotes to admin.
        expect_error(
            act(&member, &admin, "promote").await.unwrap(),
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        let p = expect_status(
            act(&owner, &admin, "promote").await.unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(p["role"], "admin");
        // Admins cannot kick the owner or each other's equals, nor hand over ownership.
        expect_error(
            act(&admin, &owner, "kick").await.unwrap(),
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        expect_error(
            act(&admin, &owner, "demote").await.unwrap(),
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;

        // Closed group: request, accepted by an admin; invites join directly.
        let closed = expect_status(
            group_call(
                &s,
                &owner,
                "/api/v1/groups",
                Some(json!({"name": "Inner Circle", "open": false})),
            )
            .await,
            StatusCode::OK,
        )
        .await;
        let cid = closed["id"].as_str().unwrap().to_owned();
        let r = expect_status(
            group_call(&s, &outsider, &format!("/api/v1/groups/{cid}/join"), None).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(r["my_role"], "requested");
        assert_eq!(r["member_count"], 1);
        let accept_path = format!("/api/v1/groups/{cid}/members/{}/accept", outsider.id);
        let accepted = expect_status(
            s.player(Method::POST, &accept_path, &owner.token)
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(accepted["role"], "member");
        let inv = expect_status(
            group_call(
                &s,
                &owner,
                &format!("/api/v1/groups/{cid}/invite"),
                Some(json!({"user_id": member.id})),
            )
            .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(inv["role"], "invited");
        let denied = group_call(
            &s,
            &outsider,
            &format!("/api/v1/groups/{cid}/invite"),
            Some(json!({"user_id": admin.id})),
        )
        .await;
        expect_error(denied, StatusCode::FORBIDDEN, "forbidden").await;
        let joined = expect_status(
            group_call(&s, &member, &format!("/api/v1/groups/{cid}/join"), None).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(joined["my_role"], "member");

        // My groups lists both for `member`.
        let mine = expect_status(
            s.player(Method::GET, "/api/v1/groups/mine", &member.token)
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        let names: Vec<_> = mine["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Inner Circle", "Night Owls"]);

        // Admin kicks a member; the owner hands over ownership, then may leave.
        let kicked =
            expect_status(act(&admin, &member, "kick").await.unwrap(), StatusCode::OK).await;
        assert_eq!(kicked["user_id"], member.id.as_str());
        let members = expect_status(
            s.player(
                Method::GET,
                &format!("/api/v1/groups/{gid}/members"),
                &owner.token,
            )
            .send()
            .await
            .unwrap(),
            StatusCode::OK,
        )
        .await;
        let roles: Vec<(String, String)> = members["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["username"].as_str().unwrap().to_owned(),
                    m["role"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            roles,
            vec![
                ("owner".into(), "owner".into()),
                ("admin".into(), "admin".into())
            ]
        );
        expect_error(
            group_call(&s, &owner, &format!("/api/v1/groups/{gid}/leave"), None).await,
            StatusCode::CONFLICT,
            "conflict",
        )
        .await;
        let handed = expect_status(
            act(&owner, &admin, "promote").await.unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(handed["role"], "owner");
        expect_status(
            group_call(&s, &owner, &format!("/api/v1/groups/{gid}/leave"), None).await,
            StatusCode::NO_CONTENT,
        )
        .await;
        let g = expect_status(
            s.player(Method::GET, &format!("/api/v1/groups/{gid}"), &admin.token)
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(g["my_role"], "owner");
        assert_eq!(g["member_count"], 1);
        // The last member leaving deletes the group.
        expect_status(
            group_call(&s, &admin, &format!("/api/v1/groups/{gid}/leave"), None).await,
            StatusCode::NO_CONTENT,
        )
        .await;
        let gone = s
            .player(Method::GET, &format!("/api/v1/groups/{gid}"), &admin.token)
            .send()
            .await
            .unwrap();
        expect_error(gone, StatusCode::NOT_FOUND, "not_found").await;

        let search = expect_status(
            s.player(Method::GET, "/api/v1/groups?q=inner", &outsider.token)
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(search["groups"][0]["my_role"], "member");
        let bad = group_call(&s, &owner, "/api/v1/groups", Some(json!({"name": "x"}))).await;
        expect_error(bad, StatusCode::BAD_REQUEST, "invalid_request").await;
        s.stop().await;
    }
}

#[tokio::test]
async fn social_endpoints_are_in_the_openapi_document() {
    let s = TestServer::start(common::Backend::Sqlite).await;
    let doc = s.openapi_document().await;
    for path in [
        "/api/v1/leaderboards/{id}/scores",
        "/api/v1/leaderboards/{id}",
        "/api/v1/achievements/{id}/progress",
        "/api/v1/stats/{user_id}",
        "/api/v1/friends/{user_id}/{action}",
        "/api/v1/groups/{id}/members/{user_id}/{action}",
    ] {
        assert!(doc["paths"][path].is_object(), "missing {path}");
    }
    assert!(doc["components"]["schemas"]["LeaderboardPage"].is_object());
    s.stop().await;
}

#[tokio::test]
async fn concurrent_unlocks_report_newly_unlocked_once_and_concurrent_submits_rank_exactly() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        define_achievement(&s, "first_kill", json!({"name": "First blood"})).await;
        define_board(&s, "hs", json!({})).await;
        let a = anon(&s).await;
        let unlocks = (0..8).map(|_| {
            s.player(
                Method::POST,
                "/api/v1/achievements/first_kill/unlock",
                &a.token,
            )
            .send()
        });
        let mut newly = 0;
        for resp in futures::future::join_all(unlocks).await {
            let body = expect_status(resp.unwrap(), StatusCode::OK).await;
            newly += body["newly_unlocked"].as_array().unwrap().len();
        }
        assert_eq!(newly, 1, "{backend:?}: exactly one call unlocks");

        let mut players = Vec::new();
        for _ in 0..20 {
            players.push(anon(&s).await);
        }
        let submits = players.iter().enumerate().map(|(i, p)| {
            s.player(Method::POST, "/api/v1/leaderboards/hs/scores", &p.token)
                .json(&json!({"score": (i % 5) as i64 * 10}))
                .send()
        });
        for resp in futures::future::join_all(submits).await {
            expect_status(resp.unwrap(), StatusCode::OK).await;
        }
        let page = read(&s, &a, "hs", "limit=100").await;
        let ranked = rows(&page);
        assert_eq!(
            ranked.iter().map(|r| r.2).collect::<Vec<_>>(),
            (1..=20).collect::<Vec<u64>>()
        );
        assert!(
            ranked.windows(2).all(|w| w[0].1 >= w[1].1),
            "sorted: {ranked:?}"
        );
        let s = s.restart().await;
        assert_eq!(rows(&read(&s, &a, "hs", "limit=100").await), ranked);
        s.stop().await;
    }
}
