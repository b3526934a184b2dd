//! Races over real HTTP on every backend: N requests released at once against one counter, cap,
//! unique row or version, then the invariant. SQLite serializes writers, so these mostly guard
//! PostgreSQL, where a read-then-write loses updates unless the write is atomic or the rows are
//! locked.

mod common;

use std::sync::Arc;

use common::{backends, expect_status, TestServer};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};

struct P {
    token: String,
    id: String,
    refresh: String,
}

async fn player(s: &TestServer) -> P {
    let body = s.device_player().await;
    P {
        token: body["access_token"].as_str().unwrap().to_owned(),
        id: body["user"]["id"].as_str().unwrap().to_owned(),
        refresh: body["refresh_token"].as_str().unwrap().to_owned(),
    }
}

/// Sends every request at the same moment (a barrier releases them together) and returns each
/// answer's status and JSON body, in request order.
async fn fire(requests: Vec<RequestBuilder>) -> Vec<(StatusCode, Value)> {
    let barrier = Arc::new(tokio::sync::Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let request = request.build().unwrap();
                barrier.wait().await;
                let client = reqwest::Client::new();
                let resp = client.execute(request).await.unwrap();
                let status = resp.status();
                let text = resp.text().await.unwrap();
                let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
                (status, body)
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

/// How many answers have `status`; asserts that none is a 5xx.
fn count(answers: &[(StatusCode, Value)], status: StatusCode) -> usize {
    for (got, body) in answers {
        assert!(!got.is_server_error(), "a racing request got {got}: {body}");
    }
    answers.iter().filter(|(got, _)| *got == status).count()
}

fn errors_with_code<'a>(answers: &'a [(StatusCode, Value)], code: &str) -> Vec<&'a Value> {
    answers
        .iter()
        .filter(|(_, body)| body["error"]["code"] == code)
        .map(|(_, body)| body)
        .collect()
}

async fn get(s: &TestServer, path: &str, token: &str) -> Value {
    expect_status(
        s.player(Method::GET, path, token).send().await.unwrap(),
        StatusCode::OK,
    )
    .await
}

async fn admin_put(s: &TestServer, path: &str, body: Value) {
    expect_status(
        s.admin(Method::PUT, path).json(&body).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
}

fn stat(stats: &Value, name: &str) -> i64 {
    stats["stats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .map_or(0, |s| s["value"].as_i64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stat_increments_all_count() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let p = player(&s).await;
        admin_put(
            &s,
            "/api/v1/leaderboards/kills_total",
            json!({"operator": "increment", "stat": "kills"}),
        )
        .await;
        admin_put(
            &s,
            "/api/v1/achievements/killer",
            json!({"name": "Killer", "goal": 20, "stat": "kills"}),
        )
        .await;
        let n = 40;
        let answers = fire(
            (0..n)
                .map(|_| {
                    s.player(Method::POST, "/api/v1/stats/me", &p.token)
                        .json(&json!({"increment": {"kills": 1}}))
                })
                .collect(),
        )
        .await;
        assert_eq!(count(&answers, StatusCode::OK), n, "{backend:?}");
        // Each answer reports a distinct running total: no two increments read the same value.
        let mut totals: Vec<i64> = answers.iter().map(|(_, b)| stat(b, "kills")).collect();
        totals.sort_unstable();
        assert_eq!(totals, (1..=n as i64).collect::<Vec<_>>(), "{backend:?}");
        let stats = get(&s, "/api/v1/stats/me", &p.token).await;
        assert_eq!(
            stat(&stats, "kills"),
            n as i64,
            "{backend:?}: lost increments"
        );
        let unlocks = answers
            .iter()
            .filter(|(_, b)| b["newly_unlocked"] == json!(["killer"]))
            .count();
        assert_eq!(
            unlocks, 1,
            "{backend:?}: the stat unlocks its achievement once"
        );
        let rank = get(&s, "/api/v1/leaderboards/kills_total/ranks/me", &p.token).await;
        assert_eq!(
            rank["score"], n as i64,
            "{backend:?}: the fed board adds every change"
        );
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stat_sets_and_increments_on_several_stats_stay_consistent() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let p = player(&s).await;
        // Updates touching the same stats in different combinations: locks are taken in one
        // order, so none deadlocks, and every increment lands.
        let n = 32;
        let answers = fire(
            (0..n)
                .map(|i| {
                    let body = if i % 2 == 0 {
                        json!({"increment": {"a": 1, "b": 1}, "set": {"c": i}})
                    } else {
                        json!({"increment": {"b": 1}, "set": {"a_set": i}})
                    };
                    s.player(Method::POST, "/api/v1/stats/me", &p.token)
                        .json(&body)
                })
                .collect(),
        )
        .await;
        assert_eq!(count(&answers, StatusCode::OK), n, "{backend:?}");
        let stats = get(&s, "/api/v1/stats/me", &p.token).await;
        assert_eq!(stat(&stats, "a"), n as i64 / 2, "{backend:?}");
        assert_eq!(stat(&stats, "b"), n as i64, "{backend:?}");
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_leaderboard_submissions_add_up() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let p = player(&s).await;
        admin_put(
            &s,
            "/api/v1/leaderboards/inc",
            json!({"operator": "increment"}),
        )
        .await;
        admin_put(&s, "/api/v1/leaderboards/sum", json!({"operator": "sum"})).await;
        admin_put(&s, "/api/v1/leaderboards/best", json!({"operator": "best"})).await;
        let n = 40;
        let mut requests = Vec::new();
        for i in 1..=n {
            for board in ["inc", "sum"] {
                requests.push(
                    s.player(
                        Method::POST,
                        &format!("/api/v1/leaderboards/{board}/scores"),
                        &p.token,
                    )
                    .json(&json!({"score": 1})),
                );
            }
            requests.push(
                s.player(Method::POST, "/api/v1/leaderboards/best/scores", &p.token)
                    .json(&json!({"score": i})),
            );
        }
        let answers = fire(requests).await;
        assert_eq!(
            count(&answers, StatusCode::OK),
            3 * n as usize,
            "{backend:?}"
        );
        for (board, score) in [("inc", n), ("sum", n), ("best", n)] {
            let rank = get(
                &s,
                &format!("/api/v1/leaderboards/{board}/ranks/me"),
                &p.token,
            )
            .await;
            assert_eq!(rank["score"], score, "{backend:?} {board}: {rank}");
            assert_eq!(rank["num_scores"], n, "{backend:?} {board}: {rank}");
        }
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_achievement_unlocks_report_newly_unlocked_once() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let p = player(&s).await;
        admin_put(&s, "/api/v1/achievements/first", json!({"name": "First"})).await;
        admin_put(
            &s,
            "/api/v1/achievements/climb",
            json!({"name": "Climb", "goal": 16}),
        )
        .await;
        let n = 16;
        let mut requests: Vec<_> = (0..n)
            .map(|_| s.player(Method::POST, "/api/v1/achievements/first/unlock", &p.token))
            .collect();
        requests.extend((1..=n).map(|v| {
            s.player(
                Method::POST,
                "/api/v1/achievements/climb/progress",
                &p.token,
            )
            .json(&json!({"progress": v}))
        }));
        let answers = fire(requests).await;
        assert_eq!(count(&answers, StatusCode::OK), 2 * n, "{backend:?}");
        for id in ["first", "climb"] {
            let newly = answers
                .iter()
                .filter(|(_, b)| b["newly_unlocked"] == json!([id]))
                .count();
            assert_eq!(newly, 1, "{backend:?}: {id} unlocked once");
        }
        let list = get(&s, "/api/v1/achievements", &p.token).await;
        let climb = list["achievements"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == "climb")
            .unwrap()
            .clone();
        assert_eq!(climb["progress"], n, "{backend:?}: progress only rises");
        assert_eq!(climb["unlocked"], true, "{backend:?}");
        s.stop().await;
    }
}

async fn create_group(s: &TestServer, owner: &P, name: &str, max_members: i64) -> String {
    let group = expect_status(
        s.player(Method::POST, "/api/v1/groups", &owner.token)
            .json(&json!({"name": name, "open": true, "max_members": max_members}))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    group["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_joins_never_exceed_max_members() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let owner = player(&s).await;
        let group = create_group(&s, &owner, "Tiny clan", 3).await;
        let mut joiners = Vec::new();
        for _ in 0..16 {
            joiners.push(player(&s).await);
        }
        let answers = fire(
            joiners
                .iter()
                .map(|p| {
                    s.player(
                        Method::POST,
                        &format!("/api/v1/groups/{group}/join"),
                        &p.token,
                    )
                })
                .collect(),
        )
        .await;
        // The owner is one of the three.
        assert_eq!(count(&answers, StatusCode::OK), 2, "{backend:?}");
        assert_eq!(count(&answers, StatusCode::CONFLICT), 14, "{backend:?}");
        assert_eq!(
            errors_with_code(&answers, "conflict").len(),
            14,
            "{backend:?}"
        );
        let g = get(&s, &format!("/api/v1/groups/{group}"), &owner.token).await;
        assert_eq!(g["member_count"], 3, "{backend:?}: {g}");
        let members = get(&s, &format!("/api/v1/groups/{group}/members"), &owner.token).await;
        assert_eq!(
            members["members"].as_array().unwrap().len(),
            3,
            "{backend:?}"
        );

        // One player joining many times at once joins once.
        let roomy = create_group(&s, &owner, "Roomy clan", 100).await;
        let p = &joiners[0];
        let answers = fire(
            (0..16)
                .map(|_| {
                    s.player(
                        Method::POST,
                        &format!("/api/v1/groups/{roomy}/join"),
                        &p.token,
                    )
                })
                .collect(),
        )
        .await;
        assert_eq!(count(&answers, StatusCode::OK), 1, "{backend:?}");
        assert_eq!(count(&answers, StatusCode::CONFLICT), 15, "{backend:?}");
        let g = get(&s, &format!("/api/v1/groups/{roomy}"), &owner.token).await;
        assert_eq!(g["member_count"], 2, "{backend:?}: {g}");
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn owner_leaving_while_players_join_never_leaves_an_ownerless_group() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        for round in 0..4 {
            let owner = player(&s).await;
            let group = create_group(&s, &owner, &format!("Fleeting {round}"), 100).await;
            let mut joiners = Vec::new();
            for _ in 0..15 {
                joiners.push(player(&s).await);
            }
            let mut requests = vec![s.player(
                Method::POST,
                &format!("/api/v1/groups/{group}/leave"),
                &owner.token,
            )];
            requests.extend(joiners.iter().map(|p| {
                s.player(
                    Method::POST,
                    &format!("/api/v1/groups/{group}/join"),
                    &p.token,
                )
            }));
            let answers = fire(requests).await;
            count(&answers, StatusCode::OK);
            let joined = answers[1..]
                .iter()
                .filter(|(status, _)| *status == StatusCode::OK)
                .count();
            let (left, _) = &answers[0];
            if *left == StatusCode::NO_CONTENT {
                // The group was deleted before anyone joined; every join found no group.
                assert_eq!(joined, 0, "{backend:?}: joined a deleted group");
            } else {
                assert_eq!(*left, StatusCode::CONFLICT, "{backend:?}");
                let members =
                    get(&s, &format!("/api/v1/groups/{group}/members"), &owner.token).await;
                let roles: Vec<&Value> = members["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| &m["role"])
                    .collect();
                assert_eq!(roles.len(), joined + 1, "{backend:?}");
                assert!(roles.contains(&&json!("owner")), "{backend:?}: {roles:?}");
            }
            // A deleted group has no members left behind either way.
            let mine = get(&s, "/api/v1/groups/mine", &joiners[0].token).await;
            for g in mine["groups"].as_array().unwrap() {
                assert_eq!(g["id"], group.as_str());
                assert!(
                    *left != StatusCode::NO_CONTENT,
                    "{backend:?}: orphan member"
                );
            }
        }
        s.stop().await;
    }
}

fn friend_state(list: &Value, other: &P) -> Value {
    list["friends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["user_id"] == other.id.as_str())
        .map_or(Value::Null, |f| f["state"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_and_duplicate_friend_requests_settle_consistently() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        // Pairs asking each other at the same moment become friends (asking back accepts).
        let mut pairs = Vec::new();
        for _ in 0..12 {
            pairs.push((player(&s).await, player(&s).await));
        }
        let mut requests = Vec::new();
        for (a, b) in &pairs {
            requests.push(s.player(
                Method::POST,
                &format!("/api/v1/friends/{}/request", b.id),
                &a.token,
            ));
            requests.push(s.player(
                Method::POST,
                &format!("/api/v1/friends/{}/request", a.id),
                &b.token,
            ));
        }
        let answers = fire(requests).await;
        assert_eq!(count(&answers, StatusCode::OK), 24, "{backend:?}");
        for (a, b) in &pairs {
            let of_a = get(&s, "/api/v1/friends", &a.token).await;
            let of_b = get(&s, "/api/v1/friends", &b.token).await;
            assert_eq!(friend_state(&of_a, b), "friend", "{backend:?}: {of_a}");
            assert_eq!(friend_state(&of_b, a), "friend", "{backend:?}: {of_b}");
        }

        // The same request sent many times at once is one request.
        let (a, b) = (player(&s).await, player(&s).await);
        let answers = fire(
            (0..16)
                .map(|_| {
                    s.player(
                        Method::POST,
                        &format!("/api/v1/friends/{}/request", b.id),
                        &a.token,
                    )
                })
                .collect(),
        )
        .await;
        assert_eq!(count(&answers, StatusCode::OK), 16, "{backend:?}");
        let of_a = get(&s, "/api/v1/friends", &a.token).await;
        let of_b = get(&s, "/api/v1/friends", &b.token).await;
        assert_eq!(of_a["friends"].as_array().unwrap().len(), 1, "{backend:?}");
        assert_eq!(friend_state(&of_a, &b), "sent", "{backend:?}");
        assert_eq!(friend_state(&of_b, &a), "received", "{backend:?}");

        // A block racing a request: whichever comes first, the blocked player holds no edge.
        for _ in 0..8 {
            let (a, b) = (player(&s).await, player(&s).await);
            let answers = fire(vec![
                s.player(
                    Method::POST,
                    &format!("/api/v1/friends/{}/request", b.id),
                    &a.token,
                ),
                s.player(
                    Method::POST,
                    &format!("/api/v1/friends/{}/block", a.id),
                    &b.token,
                ),
            ])
            .await;
            count(&answers, StatusCode::OK);
            let of_a = get(&s, "/api/v1/friends", &a.token).await;
            let of_b = get(&s, "/api/v1/friends", &b.token).await;
            assert_eq!(friend_state(&of_b, &a), "blocked", "{backend:?}");
            assert_eq!(friend_state(&of_a, &b), Value::Null, "{backend:?}: {of_a}");
        }
        s.stop().await;
    }
}

async fn write_save(s: &TestServer, p: &P, body: Value) -> Value {
    expect_status(
        s.player(Method::POST, "/api/v1/saves/me", &p.token)
            .json(&body)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_of_one_version_get_one_success_and_save_conflicts() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let p = player(&s).await;
        let n = 16;
        // base 1 on an existing slot, then base 0 on a player's very first slot.
        write_save(&s, &p, json!({"slot": "main", "data": {"v": 0}})).await;
        let fresh = player(&s).await;
        for (who, base, winner_version) in [(&p, 1, 2), (&fresh, 0, 1)] {
            let answers = fire(
                (0..n)
                    .map(|i| {
                        s.player(Method::POST, "/api/v1/saves/me", &who.token).json(
                            &json!({"slot": "main", "data": {"writer": i}, "base_version": base}),
                        )
                    })
                    .collect(),
            )
            .await;
            assert_eq!(
                count(&answers, StatusCode::OK),
                1,
                "{backend:?} base {base}"
            );
            let conflicts = errors_with_code(&answers, "save_conflict");
            assert_eq!(conflicts.len(), n - 1, "{backend:?} base {base}");
            let (_, won) = answers
                .iter()
                .find(|(status, _)| *status == StatusCode::OK)
                .unwrap();
            assert_eq!(won["version"], winner_version, "{backend:?}");
            for c in conflicts {
                let details = &c["error"]["details"];
                assert_eq!(
                    details["current_version"], winner_version,
                    "{backend:?}: {c}"
                );
                assert_eq!(
                    details["current"]["checksum"], won["checksum"],
                    "{backend:?}: {c}"
                );
            }
        }
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_never_exceed_the_quota() {
    for backend in backends() {
        let quota = 1000;
        let s = TestServer::start_with(backend, |c| c.saves.user_quota_bytes = quota).await;
        let p = player(&s).await;
        // 16 slots of 92 bytes each (the JSON string): at most 10 fit.
        let filler = "x".repeat(90);
        let answers = fire(
            (0..16)
                .map(|i| {
                    s.player(Method::POST, "/api/v1/saves/me", &p.token)
                        .json(&json!({"slot": format!("slot{i}"), "data": filler}))
                })
                .collect(),
        )
        .await;
        let ok = count(&answers, StatusCode::OK);
        let refused = errors_with_code(&answers, "quota_exceeded").len();
        assert_eq!(ok + refused, 16, "{backend:?}");
        let list = get(&s, "/api/v1/saves/me", &p.token).await;
        let used = list["used_bytes"].as_i64().unwrap();
        let sizes: i64 = list["slots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|slot| slot["size"].as_i64().unwrap())
            .sum();
        assert_eq!(list["slots"].as_array().unwrap().len(), ok, "{backend:?}");
        assert_eq!(
            used, sizes,
            "{backend:?}: usage matches the stored versions"
        );
        assert!(
            used <= quota,
            "{backend:?}: {used} bytes over a {quota}-byte quota"
        );
        assert!(
            ok >= 1 && refused >= 1,
            "{backend:?}: {ok} stored, {refused} refused"
        );
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_refresh_token_used_concurrently_rotates_once() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let p = player(&s).await;
        let n = 16;
        let answers = fire(
            (0..n)
                .map(|_| {
                    s.req(Method::POST, "/api/v1/auth/refresh")
                        .json(&json!({"refresh_token": p.refresh}))
                })
                .collect(),
        )
        .await;
        assert_eq!(count(&answers, StatusCode::OK), 1, "{backend:?}");
        assert_eq!(
            errors_with_code(&answers, "unauthorized").len(),
            n - 1,
            "{backend:?}"
        );
        // The losers presented a spent token: reuse detection ended the session, so the
        // winner's next token is refused too.
        let (_, won) = answers
            .iter()
            .find(|(status, _)| *status == StatusCode::OK)
            .unwrap();
        let next = won["refresh_token"].as_str().unwrap();
        let resp = s
            .req(Method::POST, "/api/v1/auth/refresh")
            .json(&json!({"refresh_token": next}))
            .send()
            .await
            .unwrap();
        common::expect_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let resp = s
            .player(Method::GET, "/api/v1/stats/me", &p.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{backend:?}");
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refreshes_of_many_sessions_at_once_rotate_each_and_reuse_ends_only_its_session() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let mut players = Vec::new();
        for _ in 0..24 {
            players.push(player(&s).await);
        }
        let refresh = |token: &str| {
            s.req(Method::POST, "/api/v1/auth/refresh")
                .json(&json!({ "refresh_token": token }))
        };
        // Rotations are written in batches: player 0's token twice among everyone's.
        let mut requests: Vec<_> = players.iter().map(|p| refresh(&p.refresh)).collect();
        requests.push(refresh(&players[0].refresh));
        let answers = fire(requests).await;
        assert_eq!(
            count(&answers, StatusCode::OK),
            players.len(),
            "{backend:?}"
        );
        assert_eq!(
            errors_with_code(&answers, "unauthorized").len(),
            1,
            "{backend:?}"
        );
        // Player 0's two answers: one rotated, one was reuse and ended the session.
        let (first, again) = (&answers[0], &answers[players.len()]);
        let won = if first.0 == StatusCode::OK {
            first
        } else {
            again
        };
        let next: Vec<String> = std::iter::once(won)
            .chain(&answers[1..players.len()])
            .map(|(_, body)| body["refresh_token"].as_str().unwrap().to_owned())
            .collect();

        let answers = fire(next.iter().map(|token| refresh(token)).collect()).await;
        assert_eq!(answers[0].0, StatusCode::UNAUTHORIZED, "{backend:?}");
        for (status, body) in &answers[1..] {
            assert_eq!(*status, StatusCode::OK, "{backend:?}: {body}");
            get(
                &s,
                "/api/v1/auth/profile",
                body["access_token"].as_str().unwrap(),
            )
            .await;
        }
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_email_links_leave_one_email_on_the_account() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let p = player(&s).await;
        let n = 8;
        let emails: Vec<String> = (0..n).map(|i| format!("racer{i}@example.com")).collect();
        let answers = fire(
            emails
                .iter()
                .map(|email| {
                    s.player(Method::POST, "/api/v1/auth/link/email", &p.token)
                        .json(&json!({"email": email, "password": "correct horse"}))
                })
                .collect(),
        )
        .await;
        assert_eq!(count(&answers, StatusCode::OK), 1, "{backend:?}");
        assert_eq!(
            errors_with_code(&answers, "conflict").len(),
            n - 1,
            "{backend:?}"
        );
        // Only the winning address is linked: a loser's identity must not point at the account.
        let (_, won) = answers
            .iter()
            .find(|(status, _)| *status == StatusCode::OK)
            .unwrap();
        let linked: Vec<String> = sqlx::query_scalar(
            "SELECT subject FROM identities WHERE user_id = $1 AND provider = 'email'",
        )
        .bind(&p.id)
        .fetch_all(&s.state.db.read)
        .await
        .unwrap();
        assert_eq!(
            linked,
            vec![won["email"].as_str().unwrap().to_owned()],
            "{backend:?}"
        );
        let resp = s
            .req(Method::POST, "/api/v1/auth/login")
            .json(&json!({"email": won["email"], "password": "correct horse"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{backend:?}");
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_collisions_become_typed_errors() {
    use aethex_protocol::ErrorCode;
    use aethex_server::ApiError;
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let db = &s.state.db;
        let (p, q) = (player(&s).await, player(&s).await);
        // A real duplicate a handler did not expect: 409 `conflict`, not 500.
        let duplicate = sqlx::query(
            "INSERT INTO sessions (id, project_id, user_id, created_at) \
             SELECT id, project_id, user_id, created_at FROM sessions WHERE user_id = $1",
        )
        .bind(&p.id)
        .execute(&db.write)
        .await
        .unwrap_err();
        let mapped = ApiError::from(duplicate);
        assert_eq!(mapped.code, ErrorCode::Conflict, "{backend:?}: {mapped}");
        if backend == common::Backend::Postgres {
            // A real deadlock: two transactions lock two rows in opposite orders. The one
            // PostgreSQL aborts is a retryable 503 with Retry-After.
            let touch = "UPDATE users SET updated_at = updated_at + 1 WHERE id = $1";
            let mut a = db.write.begin().await.unwrap();
            let mut b = db.write.begin().await.unwrap();
            sqlx::query(touch)
                .bind(&p.id)
                .execute(&mut *a)
                .await
                .unwrap();
            sqlx::query(touch)
                .bind(&q.id)
                .execute(&mut *b)
                .await
                .unwrap();
            let second = |mut tx: sqlx::Transaction<'static, sqlx::Any>, id: String| async move {
                let result = sqlx::query(touch).bind(&id).execute(&mut *tx).await;
                let _ = tx.rollback().await;
                result.err()
            };
            let (ea, eb) = tokio::join!(second(a, q.id.clone()), second(b, p.id.clone()));
            let aborted = ea.or(eb).expect("PostgreSQL aborts one side of a deadlock");
            let mapped = ApiError::from(aborted);
            assert_eq!(mapped.code, ErrorCode::Unavailable, "{mapped}");
            assert_eq!(mapped.retry_after, Some(1));
        }
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_ownership_handovers_leave_exactly_one_owner() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let owner = player(&s).await;
        let group = create_group(&s, &owner, "Handover clan", 100).await;
        let mut admins = Vec::new();
        for _ in 0..8 {
            let p = player(&s).await;
            expect_status(
                s.player(
                    Method::POST,
                    &format!("/api/v1/groups/{group}/join"),
                    &p.token,
                )
                .send()
                .await
                .unwrap(),
                StatusCode::OK,
            )
            .await;
            expect_status(
                s.player(
                    Method::POST,
                    &format!("/api/v1/groups/{group}/members/{}/promote", p.id),
                    &owner.token,
                )
                .send()
                .await
                .unwrap(),
                StatusCode::OK,
            )
            .await;
            admins.push(p);
        }
        // The owner hands the group to every admin at once: the first wins, after which the old
        // owner is an admin and may not hand over anything.
        let answers = fire(
            admins
                .iter()
                .map(|a| {
                    s.player(
                        Method::POST,
                        &format!("/api/v1/groups/{group}/members/{}/promote", a.id),
                        &owner.token,
                    )
                })
                .collect(),
        )
        .await;
        assert_eq!(count(&answers, StatusCode::OK), 1, "{backend:?}");
        assert_eq!(
            errors_with_code(&answers, "forbidden").len(),
            7,
            "{backend:?}"
        );
        let members = get(&s, &format!("/api/v1/groups/{group}/members"), &owner.token).await;
        let owners = members["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "owner")
            .count();
        assert_eq!(owners, 1, "{backend:?}: {members}");
        s.stop().await;
    }
}
