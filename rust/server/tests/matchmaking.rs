//! Matchmaking over real loopback WebSockets, on every backend: queue -> `match_found` -> the
//! reserved room -> relayed state -> leave; parties; widening and timeouts on the injectable
//! clock; mode rules over HTTP with the server key; typed errors; one ticket per player under
//! concurrent submissions.

mod common;

use common::socket::{Encoding, Player, Socket};
use common::{backends, expect_error, expect_status, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The seed's example, byte for byte.
const SEED_QUEUE: &str =
    r#"{"type":"join_queue","mode":"deathmatch","region":"us-east","skill_range":[1000,1500]}"#;

async fn sign_in(s: &TestServer) -> (String, String) {
    let body = s.device_player().await;
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["user"]["id"].as_str().unwrap().to_owned(),
    )
}

async fn connect(s: &TestServer, player: &Player) -> Socket {
    let mut socket = s.endpoint().connect(player, Encoding::Json).await;
    // Befriending party members pushes social events these tests do not follow.
    socket.ignored = &["friends_updated", "presence_changed"];
    socket
}

async fn player(s: &TestServer) -> Socket {
    connect(s, &s.endpoint().device_player().await).await
}

/// The matchmaking side of a player's socket.
trait Queuing {
    /// The error answering the frame with `cid`.
    async fn error(&mut self, cid: &str) -> String;
    /// `(user id, token)`.
    fn who(&self) -> (&str, &str);
    /// Joins the queue with `request`; the ticket.
    async fn queue(&mut self, request: Value) -> Value;
}

impl Queuing for Socket {
    async fn error(&mut self, cid: &str) -> String {
        let frame = self.recv_type("error").await;
        assert_eq!(frame["cid"], cid, "{frame}");
        frame["error"]["code"].as_str().unwrap().to_owned()
    }

    fn who(&self) -> (&str, &str) {
        (&self.id, &self.token)
    }

    async fn queue(&mut self, request: Value) -> Value {
        let mut frame = request;
        frame["type"] = json!("join_queue");
        frame["cid"] = json!("q");
        self.send(frame).await;
        let joined = self.recv_type("queue_joined").await;
        assert_eq!(joined["cid"], "q");
        joined["ticket"].clone()
    }
}

fn user_ids(players: &Value) -> Vec<String> {
    let mut ids: Vec<String> = players
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["user_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    ids.sort();
    ids
}

/// `(user id, token)` of each side.
async fn befriend(s: &TestServer, a: (&str, &str), b: (&str, &str)) {
    let resp = s
        .player(
            Method::POST,
            &format!("/api/v1/friends/{}/request", b.0),
            a.1,
        )
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await;
    let resp = s
        .player(
            Method::POST,
            &format!("/api/v1/friends/{}/accept", a.0),
            b.1,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(expect_status(resp, StatusCode::OK).await["state"], "friend");
}

async fn put_mode(s: &TestServer, mode: &str, rules: Value) -> Value {
    let resp = s
        .admin(Method::PUT, &format!("/api/v1/matchmaking/modes/{mode}"))
        .json(&rules)
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await
}

#[tokio::test]
async fn seed_queue_matches_into_a_reserved_room_that_relays_to_the_others_only() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let mut a = player(&s).await;
        let mut b = player(&s).await;
        let mut outsider = player(&s).await;

        a.send_text(SEED_QUEUE).await;
        let joined = a.recv_type("queue_joined").await;
        let ticket_a = joined["ticket"]["ticket_id"].as_str().unwrap().to_owned();
        assert_eq!(joined["ticket"]["players"], json!([a.id]));
        assert_eq!(joined["ticket"]["skill_range"], json!([1000.0, 1500.0]));
        a.send(json!({"type": "queue_status", "cid": "st", "ticket_id": ticket_a}))
            .await;
        let status = a.recv_type("ticket_status").await;
        assert_eq!(status["ticket"]["ticket_id"], ticket_a.as_str());
        // Nobody else may read the ticket.
        outsider
            .send(json!({"type": "queue_status", "cid": "x", "ticket_id": ticket_a}))
            .await;
        assert_eq!(outsider.error("x").await, "not_found");

        b.send_text(SEED_QUEUE).await;
        let ticket_b = b.recv_type("queue_joined").await["ticket"]["ticket_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let found_a = a.recv_type("match_found").await;
        let found_b = b.recv_type("match_found").await;
        assert_eq!(found_a["ticket_id"], ticket_a.as_str());
        assert_eq!(found_b["ticket_id"], ticket_b.as_str());
        assert_eq!(found_a["room_id"], found_b["room_id"]);
        assert_eq!(
            (found_a["mode"].as_str(), found_a["region"].as_str()),
            (Some("deathmatch"), Some("us-east"))
        );
        assert_eq!(user_ids(&found_a["players"]), sorted(&[&a.id, &b.id]));
        assert_eq!(found_a["players"], found_b["players"]);
        let room_id = found_a["room_id"].as_str().unwrap().to_owned();
        // The ticket is gone once matched.
        a.send(json!({"type": "queue_status", "cid": "gone", "ticket_id": ticket_a}))
            .await;
        assert_eq!(a.error("gone").await, "not_found");

        // The room is not listed and only its players may join it.
        outsider
            .send(json!({"type": "list_rooms", "cid": "l"}))
            .await;
        assert_eq!(outsider.recv_type("room_list").await["rooms"], json!([]));
        outsider
            .send(json!({"type": "join_room", "cid": "j", "room_id": room_id}))
            .await;
        assert_eq!(outsider.error("j").await, "not_found");

        a.send(json!({"type": "join_room", "cid": 1, "room_id": room_id}))
            .await;
        let room = a.recv_type("room_joined").await["room"].clone();
        assert_eq!(room["host"], a.id.as_str());
        assert_eq!(room["properties"]["max_players"], 2);
        b.send(json!({"type": "join_room", "cid": 2, "room_id": room_id}))
            .await;
        let room = b.recv_type("room_joined").await["room"].clone();
        assert_eq!(room["members"].as_array().unwrap().len(), 2);
        assert_eq!(
            a.recv_type("player_joined").await["member"]["user_id"],
            b.id.as_str()
        );

        a.send(json!({"type": "player_state_update", "room_id": room_id, "state": {"x": 1}}))
            .await;
        let update = b.recv_type("state_update").await;
        assert_eq!(update["updates"][0]["from"], a.id.as_str());
        assert_eq!(update["updates"][0]["state"], json!({"x": 1}));
        a.nothing_pending().await;
        outsider.nothing_pending().await;

        b.send(json!({"type": "leave_room", "cid": "bye", "room_id": room_id}))
            .await;
        assert_eq!(b.recv_type("room_left").await["cid"], "bye");
        assert_eq!(a.recv_type("player_left").await["user_id"], b.id.as_str());
        s.stop().await;
    }
}

#[tokio::test]
async fn parties_are_queued_together_and_matched_whole() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        put_mode(
            &s,
            "squad",
            json!({"min_players": 4, "max_players": 4, "timeout_secs": 120}),
        )
        .await;
        let mut p1 = player(&s).await;
        let mut p2 = player(&s).await;
        let mut p3 = player(&s).await;
        let mut p4 = player(&s).await;
        befriend(&s, p1.who(), p2.who()).await;
        befriend(&s, p3.who(), p4.who()).await;

        let t1 = p1
            .queue(
                json!({"mode": "squad", "region": "eu", "skill_range": [10, 20],
                          "party": [p2.id], "properties": {"role": "tank"}}),
            )
            .await;
        assert_eq!(t1["players"], json!([p1.id, p2.id]));
        // The party member is told, without a cid.
        let told = p2.recv_type("queue_joined").await;
        assert!(told.get("cid").is_none(), "{told}");
        assert_eq!(told["ticket"]["ticket_id"], t1["ticket_id"]);
        // A party member is on that ticket: they cannot queue alone, nor be in another party.
        p2.send(json!({"type": "join_queue", "cid": "again", "mode": "squad", "region": "eu", "skill_range": [0, 1]}))
            .await;
        assert_eq!(p2.error("again").await, "conflict");

        // Two players of four: no match yet.
        s.state.realtime.matchmaking.run_once(&s.state);
        p1.nothing_pending().await;

        let t3 = p3
            .queue(
                json!({"mode": "squad", "region": "eu", "skill_range": [15, 30], "party": [p4.id]}),
            )
            .await;
        p4.recv_type("queue_joined").await;
        let party_one = [p1.id.clone(), p2.id.clone()];
        let mut rooms = Vec::new();
        for (p, ticket) in [
            (&mut p1, &t1),
            (&mut p2, &t1),
            (&mut p3, &t3),
            (&mut p4, &t3),
        ] {
            let found = p.recv_type("match_found").await;
            assert_eq!(found["ticket_id"], ticket["ticket_id"]);
            assert_eq!(found["players"].as_array().unwrap().len(), 4);
            rooms.push(found["room_id"].clone());
            let props: Vec<&Value> = found["players"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| party_one.iter().any(|id| m["user_id"] == id.as_str()))
                .map(|m| &m["properties"])
                .collect();
            assert_eq!(props, vec![&json!({"role": "tank"}); 2]);
        }
        assert!(rooms.iter().all(|r| *r == rooms[0]));
        s.stop().await;
    }
}

#[tokio::test]
async fn bad_tickets_get_typed_errors_and_nothing_is_queued() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let mut a = player(&s).await;
        let mut friend = player(&s).await;
        let stranger = player(&s).await;
        befriend(&s, a.who(), friend.who()).await;
        let base = json!({"type": "join_queue", "mode": "duel", "region": "us-east"});
        let with = |cid: &str, extra: Value| {
            let mut frame = base.clone();
            frame["cid"] = json!(cid);
            for (k, v) in extra.as_object().unwrap() {
                frame[k] = v.clone();
            }
            frame
        };

        a.send(with("inverted", json!({"skill_range": [1500, 1000]})))
            .await;
        assert_eq!(a.error("inverted").await, "invalid_request");
        // JSON has no NaN or infinity; an out-of-range number is a malformed frame.
        a.send_text(
            r#"{"type":"join_queue","mode":"duel","region":"us-east","skill_range":[1e999,2]}"#,
        )
        .await;
        let err = a.recv_type("error").await;
        assert_eq!(err["error"]["code"], "invalid_request");
        a.send(with("nan", json!({"skill_range": ["NaN", 2]})))
            .await;
        assert_eq!(
            a.recv_type("error").await["error"]["code"],
            "invalid_request"
        );
        a.send(with("mode", json!({"mode": "", "skill_range": [1, 2]})))
            .await;
        assert_eq!(a.error("mode").await, "invalid_request");
        a.send(with(
            "props",
            json!({"skill_range": [1, 2], "properties": [1]}),
        ))
        .await;
        assert_eq!(a.error("props").await, "invalid_request");
        a.send(with(
            "unknown",
            json!({"skill_range": [1, 2], "party": [uuid::Uuid::new_v4().to_string()]}),
        ))
        .await;
        assert_eq!(a.error("unknown").await, "forbidden");
        a.send(with(
            "stranger",
            json!({"skill_range": [1, 2], "party": [stranger.id]}),
        ))
        .await;
        assert_eq!(a.error("stranger").await, "forbidden");
        a.send(with(
            "self",
            json!({"skill_range": [1, 2], "party": [a.id]}),
        ))
        .await;
        assert_eq!(a.error("self").await, "invalid_request");
        // The default mode takes two players: a party of three does not fit.
        let third = player(&s).await;
        befriend(&s, a.who(), third.who()).await;
        a.send(with(
            "big",
            json!({"skill_range": [1, 2], "party": [friend.id, third.id]}),
        ))
        .await;
        assert_eq!(a.error("big").await, "invalid_request");
        drop(third);
        // A friend who is not connected cannot be queued.
        let (offline_token, offline_id) = sign_in(&s).await;
        befriend(&s, (&a.id, &a.token), (&offline_id, &offline_token)).await;
        a.send(with(
            "away",
            json!({"skill_range": [1, 2], "party": [offline_id]}),
        ))
        .await;
        assert_eq!(a.error("away").await, "conflict");
        assert_eq!(s.state.realtime.matchmaking.queued(), 0);

        a.send(json!({"type": "leave_queue", "cid": "lq", "ticket_id": "nope"}))
            .await;
        assert_eq!(a.error("lq").await, "not_found");
        a.send(json!({"type": "leave_queue", "cid": "none"})).await;
        let left = a.recv_type("queue_left").await;
        assert_eq!(left["ticket_ids"], json!([]));
        friend.nothing_pending().await;
        s.stop().await;
    }
}

#[tokio::test]
async fn ranges_widen_and_tickets_time_out_on_the_servers_clock() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        put_mode(
            &s,
            "wide",
            json!({"min_players": 2, "max_players": 2, "timeout_secs": 30,
                   "widen_per_sec": 10.0, "max_widen": 100.0}),
        )
        .await;
        let mut a = player(&s).await;
        let mut b = player(&s).await;
        let mut c = player(&s).await;
        // 150 apart: each side must widen by 75, 7.5 s of waiting.
        let ta = a
            .queue(json!({"mode": "wide", "region": "r", "skill_range": [0, 100]}))
            .await;
        b.queue(json!({"mode": "wide", "region": "r", "skill_range": [250, 300]}))
            .await;
        // Far from both: never in range (the cap is 100 a side).
        let tc = c
            .queue(json!({"mode": "wide", "region": "r", "skill_range": [1000, 1100]}))
            .await;
        assert_eq!(
            ta["expires_at"].as_i64().unwrap() - ta["created_at"].as_i64().unwrap(),
            30_000
        );
        s.state.realtime.matchmaking.run_once(&s.state);
        a.nothing_pending().await;

        s.clock.advance_ms(5_000);
        a.send(json!({"type": "queue_status", "cid": "s", "ticket_id": ta["ticket_id"]}))
            .await;
        let status = a.recv_type("ticket_status").await;
        let range = &status["ticket"]["effective_range"];
        assert!((range[0].as_f64().unwrap() + 50.0).abs() < 1.0, "{status}");
        assert!((range[1].as_f64().unwrap() - 150.0).abs() < 1.0, "{status}");
        s.state.realtime.matchmaking.run_once(&s.state);
        a.nothing_pending().await;

        s.clock.advance_ms(3_000);
        s.state.realtime.matchmaking.run_once(&s.state);
        let found = a.recv_type("match_found").await;
        assert_eq!(user_ids(&found["players"]), sorted(&[&a.id, &b.id]));
        b.recv_type("match_found").await;

        s.clock.advance_ms(22_000);
        s.state.realtime.matchmaking.run_once(&s.state);
        let timeout = c.recv_type("matchmaking_timeout").await;
        assert_eq!(timeout["ticket_id"], tc["ticket_id"]);
        assert!(timeout.get("cid").is_none());
        c.send(json!({"type": "queue_status", "cid": "t", "ticket_id": tc["ticket_id"]}))
            .await;
        assert_eq!(c.error("t").await, "not_found");
        // The player may queue again.
        c.queue(json!({"mode": "wide", "region": "r", "skill_range": [0, 1]}))
            .await;
        s.stop().await;
    }
}

#[tokio::test]
async fn mode_rules_are_set_with_the_server_key_only() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let (token, _) = sign_in(&s).await;
        let rules = json!({"min_players": 3, "max_players": 3, "timeout_secs": 90,
                           "widen_per_sec": 1.5, "max_widen": 40.0, "tick_rate": 20,
                           "metadata": {"map": "dust"}});
        let resp = s
            .player(Method::PUT, "/api/v1/matchmaking/modes/trio", &token)
            .json(&rules)
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
        let saved = put_mode(&s, "trio", rules.clone()).await;
        let mut expected = rules.clone();
        expected["mode"] = json!("trio");
        assert_eq!(saved, expected);
        let resp = s
            .player(Method::GET, "/api/v1/matchmaking/modes/trio", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(expect_status(resp, StatusCode::OK).await, expected);
        let resp = s
            .admin(Method::GET, "/api/v1/matchmaking/modes")
            .send()
            .await
            .unwrap();
        assert_eq!(
            expect_status(resp, StatusCode::OK).await,
            json!({"modes": [expected]})
        );
        let resp = s
            .admin(Method::GET, "/api/v1/matchmaking/modes/unset")
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::NOT_FOUND, "not_found").await;
        for (body, status, code) in [
            (
                json!({"min_players": 0, "max_players": 2, "timeout_secs": 5}),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                json!({"min_players": 2, "max_players": 101, "timeout_secs": 5}),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                json!({"min_players": 2, "max_players": 2, "timeout_secs": 0}),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                json!({"min_players": 2, "max_players": 2, "timeout_secs": 5, "widen_per_sec": -1}),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                json!({"min_players": 2, "max_players": 2, "timeout_secs": 5, "metadata": [1]}),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                json!({"min_players": 3, "max_players": 2, "timeout_secs": 5}),
                StatusCode::CONFLICT,
                "conflict",
            ),
            (
                json!({"min_players": 2, "max_players": 2, "timeout_secs": 5, "tick_rate": 500}),
                StatusCode::CONFLICT,
                "conflict",
            ),
        ] {
            let resp = s
                .admin(Method::PUT, "/api/v1/matchmaking/modes/bad")
                .json(&body)
                .send()
                .await
                .unwrap();
            expect_error(resp, status, code).await;
        }
        // JSON Schema counts 2.0 as an integer; so does the server.
        let integral = put_mode(
            &s,
            "floats",
            json!({"min_players": 2.0, "max_players": 4e0, "timeout_secs": 30.0, "tick_rate": 10.0}),
        )
        .await;
        assert_eq!(
            (
                integral["min_players"].as_i64(),
                integral["max_players"].as_i64()
            ),
            (Some(2), Some(4))
        );
        assert_eq!(integral["widen_per_sec"], 0.0);
        let resp = s
            .admin(Method::PUT, "/api/v1/matchmaking/modes/not%20ok")
            .json(&rules)
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;

        // The rules apply: three players of "trio" make one match, in a room with its settings.
        let mut players = Vec::new();
        for _ in 0..3 {
            let mut p = player(&s).await;
            p.queue(json!({"mode": "trio", "region": "r", "skill_range": [0, 10]}))
                .await;
            players.push(p);
        }
        let mut room = Value::Null;
        for p in &mut players {
            let found = p.recv_type("match_found").await;
            assert_eq!(found["players"].as_array().unwrap().len(), 3);
            room = found["room_id"].clone();
        }
        players[0]
            .send(json!({"type": "join_room", "cid": 1, "room_id": room}))
            .await;
        let joined = players[0].recv_type("room_joined").await;
        assert_eq!(joined["room"]["properties"]["tick_rate"], 20);
        assert_eq!(
            joined["room"]["properties"]["metadata"],
            json!({"map": "dust"})
        );
        assert_eq!(joined["room"]["properties"]["labels"], json!(["trio"]));

        let resp = s
            .player(Method::DELETE, "/api/v1/matchmaking/modes/trio", &token)
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::FORBIDDEN, "forbidden").await;
        let resp = s
            .admin(Method::DELETE, "/api/v1/matchmaking/modes/trio")
            .send()
            .await
            .unwrap();
        expect_status(resp, StatusCode::NO_CONTENT).await;
        for method in [Method::GET, Method::DELETE] {
            let resp = s
                .admin(method, "/api/v1/matchmaking/modes/trio")
                .send()
                .await
                .unwrap();
            expect_error(resp, StatusCode::NOT_FOUND, "not_found").await;
        }
        // Unconfigured again: the defaults (two players) apply.
        let mut a = player(&s).await;
        let mut b = player(&s).await;
        a.queue(json!({"mode": "trio", "region": "r", "skill_range": [0, 10]}))
            .await;
        b.queue(json!({"mode": "trio", "region": "r", "skill_range": [0, 10]}))
            .await;
        a.recv_type("match_found").await;
        b.recv_type("match_found").await;
        s.stop().await;
    }
}

#[tokio::test]
async fn one_ticket_per_player_even_from_two_sockets_at_once() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        // Matching would take the ticket out of the pool; this mode never matches.
        put_mode(
            &s,
            "solo-wait",
            json!({"min_players": 100, "max_players": 100, "timeout_secs": 600}),
        )
        .await;
        // Kept open: a player whose sockets close loses the ticket.
        let mut open = Vec::new();
        for round in 0..10 {
            let twice = s.endpoint().device_player().await;
            let mut one = connect(&s, &twice).await;
            let mut two = connect(&s, &twice).await;
            let frame = json!({"type": "join_queue", "cid": "c", "mode": "solo-wait",
                               "region": "r", "skill_range": [0, 1]});
            let (_, _) = tokio::join!(one.send(frame.clone()), two.send(frame.clone()));
            let (first, second) = tokio::join!(one.recv(), two.recv());
            let mut kinds = vec![
                first["type"].as_str().unwrap().to_owned(),
                second["type"].as_str().unwrap().to_owned(),
            ];
            kinds.sort();
            assert_eq!(kinds, vec!["error", "queue_joined"], "round {round}");
            let err = if first["type"] == "error" {
                &first
            } else {
                &second
            };
            assert_eq!(err["error"]["code"], "conflict");
            assert_eq!(s.state.realtime.matchmaking.queued(), round + 1);
            open.push((one, two));
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn a_player_whose_last_socket_closes_loses_their_ticket() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        put_mode(
            &s,
            "four",
            json!({"min_players": 4, "max_players": 4, "timeout_secs": 600}),
        )
        .await;
        let mut leader = player(&s).await;
        let member = player(&s).await;
        befriend(&s, leader.who(), member.who()).await;
        let ticket = leader
            .queue(
                json!({"mode": "four", "region": "r", "skill_range": [0, 1], "party": [member.id]}),
            )
            .await;
        // The member has a second socket: closing one keeps the ticket.
        let mut second = connect(&s, &member.player()).await;
        second.nothing_pending().await;
        drop(member);
        second.nothing_pending().await;
        assert_eq!(s.state.realtime.matchmaking.queued(), 1);
        drop(second);
        let left = leader.recv_type("queue_left").await;
        assert_eq!(left["ticket_ids"], json!([ticket["ticket_id"]]));
        assert_eq!(s.state.realtime.matchmaking.queued(), 0);

        // leave_queue ends the ticket for the whole party.
        let mut member = player(&s).await;
        befriend(&s, leader.who(), member.who()).await;
        let ticket = leader
            .queue(
                json!({"mode": "four", "region": "r", "skill_range": [0, 1], "party": [member.id]}),
            )
            .await;
        member.recv_type("queue_joined").await;
        member
            .send(json!({"type": "leave_queue", "cid": "out", "ticket_id": ticket["ticket_id"]}))
            .await;
        let left = member.recv_type("queue_left").await;
        assert_eq!(left["cid"], "out");
        assert_eq!(left["ticket_ids"], json!([ticket["ticket_id"]]));
        let told = leader.recv_type("queue_left").await;
        assert!(told.get("cid").is_none());
        assert_eq!(s.state.realtime.matchmaking.queued(), 0);
        s.stop().await;
    }
}

#[tokio::test]
async fn a_match_room_nobody_claims_closes() {
    for backend in backends() {
        let s = TestServer::start_with(backend, |c| c.matchmaking.room_claim_secs = 30).await;
        let mut a = player(&s).await;
        let mut b = player(&s).await;
        a.queue(json!({"mode": "m", "region": "r", "skill_range": [0, 1]}))
            .await;
        b.queue(json!({"mode": "m", "region": "r", "skill_range": [0, 1]}))
            .await;
        let room = a.recv_type("match_found").await["room_id"].clone();
        b.recv_type("match_found").await;
        s.clock.advance_ms(31_000);
        s.state.realtime.matchmaking.run_once(&s.state);
        a.send(json!({"type": "join_room", "cid": "late", "room_id": room}))
            .await;
        assert_eq!(a.error("late").await, "not_found");
        s.stop().await;
    }
}
