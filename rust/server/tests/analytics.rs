//! Analytics over real HTTP on every backend: consent gating, idempotent (and concurrent)
//! ingestion, zstd bodies, validation, clock-skew correction, COPPA and the active-players query.

mod common;

use aethex_server::clock::Clock;
use common::{backends, expect_error, expect_status, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const DAY_MS: i64 = 86_400_000;

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

async fn consent(s: &TestServer, p: &Player, body: Value) -> Value {
    let resp = s
        .player(Method::PUT, "/api/v1/analytics/consent", &p.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await
}

fn event(id: &str, name: &str, client_time: i64) -> Value {
    json!({
        "id": id,
        "kind": "event",
        "name": name,
        "properties": {"level": 5, "time": 120.5},
        "session_id": "session-0001",
        "seq": 0,
        "client_time": client_time,
    })
}

/// `n` events with fresh ids, `ms` apart before `sent_at`.
fn batch(n: usize, sent_at: i64) -> Value {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            let mut e = event(
                &uuid::Uuid::now_v7().to_string(),
                "level_completed",
                sent_at - 1000 * (n - i) as i64,
            );
            e["seq"] = json!(i);
            e
        })
        .collect();
    json!({ "sent_at": sent_at, "events": events })
}

async fn send(s: &TestServer, p: &Player, body: &Value) -> reqwest::Response {
    s.player(Method::POST, "/api/v1/analytics/events", &p.token)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn count(s: &TestServer, sql: &str, bind: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(bind.to_owned())
        .fetch_one(&s.state.db.read)
        .await
        .unwrap()
}

async fn stored_events(s: &TestServer, p: &Player) -> i64 {
    count(
        s,
        "SELECT COUNT(*) FROM analytics_events WHERE user_id = $1",
        &p.id,
    )
    .await
}

/// Events per player in the daily rollup (summed over days).
async fn rolled_up_events(s: &TestServer, p: &Player) -> i64 {
    count(
        s,
        "SELECT CAST(COALESCE(SUM(events), 0) AS BIGINT) FROM analytics_daily_players \
         WHERE user_id = $1",
        &p.id,
    )
    .await
}

#[tokio::test]
async fn events_are_refused_without_consent_and_after_revocation() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let p = player(&s).await;
        let now = s.clock.now_ms();

        let initial = expect_status(
            s.player(Method::GET, "/api/v1/analytics/consent", &p.token)
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(
            initial,
            json!({"granted": false, "under_13": false, "updated_at": null})
        );
        expect_error(
            send(&s, &p, &batch(3, now)).await,
            StatusCode::FORBIDDEN,
            "consent_required",
        )
        .await;
        assert_eq!(stored_events(&s, &p).await, 0);

        let granted = consent(&s, &p, json!({})).await;
        assert_eq!(granted["granted"], true);
        let granted_at = granted["updated_at"].as_i64().unwrap();
        assert!((now..=s.clock.now_ms()).contains(&granted_at));
        let ok = expect_status(send(&s, &p, &batch(3, now)).await, StatusCode::OK).await;
        assert_eq!(ok, json!({"accepted": 3, "duplicates": 0}));

        s.clock.advance_ms(60_000);
        let revoked = expect_status(
            s.player(Method::DELETE, "/api/v1/analytics/consent", &p.token)
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(revoked["granted"], false);
        assert!(revoked["updated_at"].as_i64().unwrap() >= granted_at + 60_000);
        let read_back = expect_status(
            s.player(Method::GET, "/api/v1/analytics/consent", &p.token)
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(read_back, revoked);
        expect_error(
            send(&s, &p, &batch(2, now)).await,
            StatusCode::FORBIDDEN,
            "consent_required",
        )
        .await;
        assert_eq!(stored_events(&s, &p).await, 3);

        // Consent belongs to players: the server key cannot give it for them.
        let resp = s
            .admin(Method::PUT, "/api/v1/analytics/consent")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
        s.stop().await;
    }
}

#[tokio::test]
async fn a_resent_zstd_batch_is_stored_once() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let p = player(&s).await;
        consent(&s, &p, json!({})).await;
        let body = batch(50, s.clock.now_ms());
        let compressed = zstd::encode_all(body.to_string().as_bytes(), 3).unwrap();
        let post = || {
            s.player(Method::POST, "/api/v1/analytics/events", &p.token)
                .header("Content-Type", "application/json")
                .header("Content-Encoding", "zstd")
                .body(compressed.clone())
                .send()
        };
        let first = expect_status(post().await.unwrap(), StatusCode::OK).await;
        assert_eq!(first, json!({"accepted": 50, "duplicates": 0}));
        let again = expect_status(post().await.unwrap(), StatusCode::OK).await;
        assert_eq!(again, json!({"accepted": 0, "duplicates": 50}));
        assert_eq!(stored_events(&s, &p).await, 50);
        assert_eq!(rolled_up_events(&s, &p).await, 50);
        let counted = count(
            &s,
            "SELECT CAST(SUM(events) AS BIGINT) FROM analytics_daily_counts WHERE name = $1",
            "level_completed",
        )
        .await;
        assert_eq!(counted, 50);
        s.stop().await;
    }
}

/// The same events sent by many requests at once (a client retrying while the first upload is
/// still in flight, from several threads) are stored and counted once in all.
#[tokio::test]
async fn concurrent_resends_ingest_each_event_once() {
    for backend in backends() {
        let s = std::sync::Arc::new(TestServer::start(backend).await);
        let p = std::sync::Arc::new(player(&s).await);
        consent(&s, &p, json!({})).await;
        let now = s.clock.now_ms();
        // Three overlapping batches: 0..40, 20..60, 40..80 of one pool of 80 events.
        let all = batch(80, now)["events"].as_array().unwrap().clone();
        let bodies: Vec<Value> = (0..3)
            .map(|k| json!({"sent_at": now, "events": &all[k * 20..k * 20 + 40]}))
            .collect();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            for body in &bodies {
                let (s, p, body) = (s.clone(), p.clone(), body.clone());
                tasks.push(tokio::spawn(async move {
                    expect_status(send(&s, &p, &body).await, StatusCode::OK).await
                }));
            }
        }
        let mut accepted = 0;
        for task in tasks {
            let answer = task.await.unwrap();
            assert_eq!(
                answer["accepted"].as_i64().unwrap() + answer["duplicates"].as_i64().unwrap(),
                40
            );
            accepted += answer["accepted"].as_i64().unwrap();
        }
        assert_eq!(accepted, 80, "each event accepted by exactly one request");
        assert_eq!(stored_events(&s, &p).await, 80);
        assert_eq!(rolled_up_events(&s, &p).await, 80);
        let s = std::sync::Arc::into_inner(s).expect("tasks done");
        s.stop().await;
    }
}

#[tokio::test]
async fn malformed_events_are_typed_errors_and_store_nothing() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let p = player(&s).await;
        consent(&s, &p, json!({})).await;
        let now = s.clock.now_ms();
        let cases: Vec<(Value, StatusCode, &str, &str)> = vec![
            (
                json!({"name": "bad name"}),
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "name",
            ),
            (
                json!({"id": "short"}),
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "id",
            ),
            (
                json!({"properties": {"a": {"b": [{"c": [1]}]}}}),
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "properties",
            ),
            (
                json!({"properties": {"blob": "x".repeat(9 * 1024)}}),
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "properties",
            ),
        ];
        for (change, status, code, field) in cases {
            let mut body = batch(4, now);
            for (key, value) in change.as_object().unwrap() {
                body["events"][2][key] = value.clone();
            }
            let error = expect_error(send(&s, &p, &body).await, status, code).await;
            assert_eq!(error["error"]["details"]["index"], 2, "{error}");
            assert_eq!(error["error"]["details"]["field"], field, "{error}");
        }
        // Four levels of nesting are fine.
        let mut body = batch(1, now);
        body["events"][0]["properties"] = json!({"a": {"b": [{"c": 1}]}});
        expect_status(send(&s, &p, &body).await, StatusCode::OK).await;
        assert_eq!(
            stored_events(&s, &p).await,
            1,
            "refused batches stored nothing"
        );

        let empty = json!({"sent_at": now, "events": []});
        expect_error(
            send(&s, &p, &empty).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .await;
        let too_many = batch(501, now);
        expect_error(
            send(&s, &p, &too_many).await,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .await;
        s.stop().await;
    }
}

/// A player whose clock is an hour behind: the server records its own receive time and moves the
/// event's time by the batch's skew.
#[tokio::test]
async fn event_time_is_corrected_by_the_clock_skew() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let p = player(&s).await;
        consent(&s, &p, json!({})).await;
        let client_now = s.clock.now_ms() - 3_600_000;
        let body = json!({
            "sent_at": client_now,
            "events": [event(&uuid::Uuid::now_v7().to_string(), "boot", client_now - 5_000)],
        });
        expect_status(send(&s, &p, &body).await, StatusCode::OK).await;
        let (client_time, event_time, server_time): (i64, i64, i64) = sqlx::query_as(
            "SELECT client_time, event_time, server_time FROM analytics_events WHERE user_id = $1",
        )
        .bind(&p.id)
        .fetch_one(&s.state.db.read)
        .await
        .unwrap();
        assert_eq!(client_time, client_now - 5_000);
        assert_eq!(event_time, server_time - 5_000);
        assert!(server_time >= client_now + 3_600_000);
        s.stop().await;
    }
}

#[tokio::test]
async fn coppa_players_are_stored_without_identifiers_or_user_properties() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let now = s.clock.now_ms();
        let property = |value: Value| {
            json!({
                "id": uuid::Uuid::now_v7().to_string(),
                "kind": "user_property",
                "name": "vip_status",
                "properties": {"value": value},
                "session_id": "session-0001",
                "seq": 1,
                "client_time": now,
            })
        };
        let batch_with_property = || {
            let mut body = batch(2, now);
            body["events"]
                .as_array_mut()
                .unwrap()
                .push(property(json!(true)));
            body
        };

        let adult = player(&s).await;
        consent(&s, &adult, json!({})).await;
        let ok = expect_status(
            send(&s, &adult, &batch_with_property()).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(ok["accepted"], 3);
        assert_eq!(stored_events(&s, &adult).await, 3);
        let stored: String = sqlx::query_scalar(
            "SELECT value FROM analytics_user_properties WHERE user_id = $1 AND name = 'vip_status'",
        )
        .bind(&adult.id)
        .fetch_one(&s.state.db.read)
        .await
        .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&stored).unwrap()["value"],
            true
        );

        let child = player(&s).await;
        let answer = consent(&s, &child, json!({"under_13": true})).await;
        assert_eq!(answer["under_13"], true);
        let ok = expect_status(
            send(&s, &child, &batch_with_property()).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(ok["accepted"], 3);
        let anonymous = count(
            &s,
            "SELECT COUNT(*) FROM analytics_events WHERE user_id IS NULL \
             AND session_id IS NULL AND kind <> $1",
            "user_property",
        )
        .await;
        assert_eq!(anonymous, 2);
        assert_eq!(stored_events(&s, &child).await, 0);
        assert_eq!(rolled_up_events(&s, &child).await, 0);
        let properties = count(
            &s,
            "SELECT COUNT(*) FROM analytics_user_properties WHERE user_id = $1",
            &child.id,
        )
        .await;
        assert_eq!(properties, 0);

        // The project setting makes every player anonymous, adults included.
        let resp = s
            .player(Method::PUT, "/api/v1/analytics/settings", &adult.token)
            .json(&json!({"coppa": true}))
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
        let resp = s
            .admin(Method::PUT, "/api/v1/analytics/settings")
            .json(&json!({"coppa": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            expect_status(resp, StatusCode::OK).await,
            json!({"coppa": true})
        );
        let resp = s
            .admin(Method::GET, "/api/v1/analytics/settings")
            .send()
            .await
            .unwrap();
        assert_eq!(
            expect_status(resp, StatusCode::OK).await,
            json!({"coppa": true})
        );
        expect_status(
            send(&s, &adult, &batch_with_property()).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(
            stored_events(&s, &adult).await,
            3,
            "no new identified events"
        );
        s.stop().await;
    }
}

/// Players active on known days; DAU/WAU/MAU over the last three days.
#[tokio::test]
async fn active_players_per_day_week_and_month() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let now = s.clock.now_ms();
        // Days back from today each player was active.
        let activity: [&[i64]; 4] = [&[0, 1, 2], &[0, 10], &[20], &[40]];
        for days_back in activity {
            let p = player(&s).await;
            consent(&s, &p, json!({})).await;
            let events: Vec<Value> = days_back
                .iter()
                .flat_map(|back| {
                    // Two events a day: the rollup counts the player once.
                    (0..2).map(move |_| {
                        event(
                            &uuid::Uuid::now_v7().to_string(),
                            "play",
                            now - back * DAY_MS,
                        )
                    })
                })
                .collect();
            let body = json!({"sent_at": now, "events": events});
            expect_status(send(&s, &p, &body).await, StatusCode::OK).await;
        }
        let today = now.div_euclid(DAY_MS);
        let date = |day: i64| {
            chrono::DateTime::from_timestamp_millis(day * DAY_MS)
                .unwrap()
                .format("%Y-%m-%d")
                .to_string()
        };
        let resp = s
            .admin(
                Method::GET,
                &format!("/api/v1/analytics/query/active?to={}&days=3", date(today)),
            )
            .send()
            .await
            .unwrap();
        let answer = expect_status(resp, StatusCode::OK).await;
        assert_eq!(
            answer,
            json!({"days": [
                {"day": date(today - 2), "dau": 1, "wau": 1, "mau": 3},
                {"day": date(today - 1), "dau": 1, "wau": 1, "mau": 3},
                {"day": date(today), "dau": 2, "wau": 2, "mau": 3},
            ]})
        );
        // Ten days back: B that day and week; B and C (day 20) in the 30 days ending there, not
        // D (day 40) nor A (active later).
        let resp = s
            .admin(
                Method::GET,
                &format!(
                    "/api/v1/analytics/query/active?to={}&days=1",
                    date(today - 10)
                ),
            )
            .send()
            .await
            .unwrap();
        let answer = expect_status(resp, StatusCode::OK).await;
        assert_eq!(
            answer["days"],
            json!([{"day": date(today - 10), "dau": 1, "wau": 1, "mau": 2}])
        );

        let p = player(&s).await;
        let resp = s
            .player(Method::GET, "/api/v1/analytics/query/active", &p.token)
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
        let resp = s
            .admin(Method::GET, "/api/v1/analytics/query/active?days=400")
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
        let resp = s
            .admin(Method::GET, "/api/v1/analytics/query/active?to=2026-02-30")
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
        s.stop().await;
    }
}

#[tokio::test]
async fn openapi_states_the_property_limits() {
    let s = TestServer::start(common::Backend::Sqlite).await;
    let doc = s.openapi_document().await;
    let properties = &doc["components"]["schemas"]["AnalyticsEvent"]["properties"]["properties"];
    assert_eq!(properties["maxProperties"], 64, "{properties}");
    // Levels below the top object: anyOf [scalar, array, object] three times, then scalars.
    let mut level = &properties["additionalProperties"];
    for _ in 0..3 {
        let options = level["anyOf"].as_array().expect("anyOf");
        assert_eq!(options.len(), 3, "{level}");
        level = &options[2]["additionalProperties"];
    }
    assert!(level.get("anyOf").is_none(), "{level}");
    assert!(doc["paths"]["/api/v1/analytics/events"]["post"]["responses"]["403"].is_object());
    s.stop().await;
}

#[tokio::test]
async fn experiments_assign_stable_targeted_variants_and_serve_remote_config() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let definition = json!({
            "variants": [{"name": "control", "weight": 1}, {"name": "blue", "weight": 1}],
            "targeting": {"platforms": ["android"]},
            "running": true,
        });
        let resp = s
            .admin(Method::PUT, "/api/v1/analytics/experiments/button_color")
            .json(&definition)
            .send()
            .await
            .unwrap();
        let stored = expect_status(resp, StatusCode::OK).await;
        assert_eq!(stored["key"], "button_color");
        assert_eq!(stored["running"], true);
        let resp = s
            .admin(Method::PUT, "/api/v1/analytics/config/max_lives")
            .json(&json!({"value": 5}))
            .send()
            .await
            .unwrap();
        expect_status(resp, StatusCode::OK).await;

        // Two sign-ins of the same account (two devices) get the same variant.
        let first = s.device_player().await;
        let token = first["access_token"].as_str().unwrap().to_owned();
        let assigned = |token: String, query: &'static str| {
            let s = &s;
            async move {
                let resp = s
                    .player(
                        Method::GET,
                        &format!("/api/v1/analytics/assignments{query}"),
                        &token,
                    )
                    .send()
                    .await
                    .unwrap();
                expect_status(resp, StatusCode::OK).await
            }
        };
        let android = assigned(token.clone(), "?platform=android").await;
        let variant = android["variants"]["button_color"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(["control", "blue"].contains(&variant.as_str()));
        assert_eq!(android["config"], json!({"max_lives": 5}));
        let refresh = first["refresh_token"].as_str().unwrap();
        let resp = s
            .req(Method::POST, "/api/v1/auth/refresh")
            .json(&json!({"refresh_token": refresh}))
            .send()
            .await
            .unwrap();
        let again = expect_status(resp, StatusCode::OK).await;
        let other_token = again["access_token"].as_str().unwrap().to_owned();
        for _ in 0..3 {
            let answer = assigned(other_token.clone(), "?platform=android").await;
            assert_eq!(answer["variants"]["button_color"], variant.as_str());
        }
        // Not targeted: another platform, or none.
        let ios = assigned(token.clone(), "?platform=ios").await;
        assert_eq!(ios["variants"], json!({}));
        let unknown = assigned(token.clone(), "").await;
        assert_eq!(unknown["variants"], json!({}));

        // Both variants occur across players (1:1 weights, 40 players: all in one is 2^-39).
        let mut seen = std::collections::HashSet::new();
        for _ in 0..40 {
            let p = s.device_player().await;
            let answer = assigned(
                p["access_token"].as_str().unwrap().to_owned(),
                "?platform=android",
            )
            .await;
            seen.insert(
                answer["variants"]["button_color"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        assert_eq!(seen.len(), 2, "{seen:?}");

        // Stopped: nobody is assigned; the definition stays listed.
        let mut stopped = definition.clone();
        stopped["running"] = json!(false);
        let resp = s
            .admin(Method::PUT, "/api/v1/analytics/experiments/button_color")
            .json(&stopped)
            .send()
            .await
            .unwrap();
        expect_status(resp, StatusCode::OK).await;
        let answer = assigned(token.clone(), "?platform=android").await;
        assert_eq!(answer["variants"], json!({}));
        let resp = s
            .admin(Method::GET, "/api/v1/analytics/experiments")
            .send()
            .await
            .unwrap();
        let list = expect_status(resp, StatusCode::OK).await;
        assert_eq!(list["experiments"][0]["running"], false);

        // Players cannot define experiments; bad definitions are typed errors.
        let resp = s
            .player(Method::PUT, "/api/v1/analytics/experiments/x", &token)
            .json(&definition)
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
        let zero = json!({"variants": [{"name": "a", "weight": 0}], "running": true});
        let resp = s
            .admin(Method::PUT, "/api/v1/analytics/experiments/x")
            .json(&zero)
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
        let resp = s
            .admin(Method::DELETE, "/api/v1/analytics/config/max_lives")
            .send()
            .await
            .unwrap();
        expect_status(resp, StatusCode::NO_CONTENT).await;
        let answer = assigned(token.clone(), "").await;
        assert_eq!(answer["config"], json!({}));
        s.stop().await;
    }
}

/// The per-project cap of 200 experiments holds when new keys arrive concurrently.
#[tokio::test]
async fn concurrent_experiment_definitions_respect_the_cap() {
    for backend in backends() {
        let s = std::sync::Arc::new(TestServer::start(backend).await);
        let mut tasks = Vec::new();
        for n in 0..230 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.admin(Method::PUT, &format!("/api/v1/analytics/experiments/e{n}"))
                    .json(&json!({"variants": [{"name": "a", "weight": 1}], "running": true}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            }));
        }
        let mut created = 0;
        for task in tasks {
            match task.await.unwrap() {
                StatusCode::OK => created += 1,
                StatusCode::PAYLOAD_TOO_LARGE => {}
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(created, 200);
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM analytics_experiments")
            .fetch_one(&s.state.db.read)
            .await
            .unwrap();
        assert_eq!(count, 200);
        let s = std::sync::Arc::into_inner(s).expect("tasks done");
        s.stop().await;
    }
}
