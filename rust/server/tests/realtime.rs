//! The realtime socket over real loopback WebSockets, on every backend: authentication before
//! the upgrade, rooms, the relay, tick batching, host migration and the limits.

mod common;

use aethex_server::clock::Clock;
use common::socket::{Encoding, Socket, WAIT};
use common::{backends, TestServer};
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

fn request(s: &TestServer, token: Option<&str>) -> Request {
    s.endpoint().socket_request(token, Encoding::Json)
}

/// The status and JSON body of a refused upgrade.
async fn refused(req: Request) -> (u16, Value) {
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            serde_json::from_slice(resp.body().as_deref().unwrap_or_default())
                .expect("a JSON error body"),
        ),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

async fn player(s: &TestServer) -> Socket {
    let e = s.endpoint();
    e.connect(&e.device_player().await, Encoding::Json).await
}

/// Creates a room with `properties`; the room.
async fn create(c: &mut Socket, properties: Value) -> Value {
    c.send(json!({"type": "create_room", "properties": properties}))
        .await;
    c.recv_type("room_joined").await["room"].clone()
}

fn ids(members: &Value) -> Vec<String> {
    members
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn upgrade_is_refused_before_the_handshake_without_a_valid_token() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let (status, body) = refused(request(&s, None)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthorized"))
        );
        let (status, body) = refused(request(&s, Some("not-a-jwt"))).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthorized"))
        );
        let mut req = request(&s, Some("x"));
        req.headers_mut().remove("X-AeThex-Key");
        req.headers_mut().remove("Authorization");
        let (status, _) = refused(req).await;
        assert_eq!(status, 401);
        let mut req = request(&s, None);
        req.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("ServerKey {}", s.server_key)).unwrap(),
        );
        let (status, body) = refused(req).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("forbidden"))
        );

        let token = s.endpoint().device("expiring").await.token;
        s.clock.advance_ms(16 * 60 * 1000);
        let (status, body) = refused(request(&s, Some(&token))).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("token_expired"))
        );

        // Query parameters for clients that cannot set headers.
        let token = s.endpoint().device("browser-client").await.token;
        let url = format!(
            "ws://{}/api/v1/realtime?key={}&token={}",
            s.addr, s.client_key, token
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        ws.send(Message::text(r#"{"type":"ping","cid":1}"#))
            .await
            .unwrap();
        let Some(Ok(Message::Text(pong))) = ws.next().await else {
            panic!("no pong")
        };
        assert_eq!(pong.as_str(), r#"{"cid":1,"type":"pong"}"#);

        // A plain GET with a valid token is a typed error too, not a bare 4xx.
        let resp = s
            .player(Method::GET, "/api/v1/realtime", &token)
            .send()
            .await
            .unwrap();
        common::expect_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
        s.stop().await;
    }
}

#[tokio::test]
async fn refresh_session_replaces_an_expired_token_on_a_live_socket() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let e = s.endpoint();
        let mut a = e
            .connect(&e.device("refresher").await, Encoding::Json)
            .await;
        s.clock.advance_ms(16 * 60 * 1000);
        a.send(json!({"type": "list_rooms", "cid": "l"})).await;
        let err = a.recv_type("error").await;
        assert_eq!(
            (err["cid"].as_str(), err["error"]["code"].as_str()),
            (Some("l"), Some("token_expired"))
        );

        let other = s.endpoint().device("someone-else").await.token;
        a.send(json!({"type": "refresh_session", "cid": 1, "access_token": other}))
            .await;
        let err = a.recv_type("error").await;
        assert_eq!(err["error"]["code"], "forbidden");
        a.send(json!({"type": "refresh_session", "cid": 2, "access_token": "garbage"}))
            .await;
        assert_eq!(a.recv_type("error").await["error"]["code"], "unauthorized");

        let fresh = s.endpoint().device("refresher").await.token;
        a.send(json!({"type": "refresh_session", "cid": 3, "access_token": fresh}))
            .await;
        let ok = a.recv_type("session_refreshed").await;
        assert_eq!(ok["cid"], 3);
        assert!(ok["expires_at"].as_i64().unwrap() * 1000 > s.clock.now_ms());
        a.send(json!({"type": "list_rooms", "cid": "l2"})).await;
        assert_eq!(a.recv_type("room_list").await["cid"], "l2");

        // Signing the session out silences the socket until a token of a new session arrives.
        let resp = s
            .player(Method::POST, "/api/v1/auth/logout", &fresh)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        a.send(json!({"type": "create_room", "cid": "c"})).await;
        let err = a.recv_type("error").await;
        assert_eq!(
            (err["cid"].as_str(), err["error"]["code"].as_str()),
            (Some("c"), Some("unauthorized"))
        );
        a.send(json!({"type": "refresh_session", "access_token": fresh}))
            .await;
        assert_eq!(a.recv_type("error").await["error"]["code"], "unauthorized");
        let new_session = s.endpoint().device("refresher").await.token;
        a.send(json!({"type": "refresh_session", "access_token": new_session}))
            .await;
        a.recv_type("session_refreshed").await;
        create(&mut a, json!({})).await;
        s.stop().await;
    }
}

#[tokio::test]
async fn the_lobby_pages_with_a_cursor() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let mut a = player(&s).await;
        for _ in 0..3 {
            create(&mut a, json!({})).await;
        }
        a.send(json!({"type": "list_rooms"})).await;
        let all = a.recv_type("room_list").await;
        assert_eq!(all["rooms"].as_array().unwrap().len(), 3, "{all}");
        assert!(all.get("next_cursor").is_none(), "{all}");

        a.send(json!({"type": "list_rooms", "limit": 2})).await;
        let first = a.recv_type("room_list").await;
        assert_eq!(first["rooms"], json!(all["rooms"].as_array().unwrap()[..2]));
        let cursor = first["next_cursor"].as_str().unwrap();
        let token = s.endpoint().device("lobby-pager").await.token;
        let resp = s
            .player(
                Method::GET,
                &format!("/api/v1/rooms?limit=2&cursor={cursor}"),
                &token,
            )
            .send()
            .await
            .unwrap();
        let second = common::expect_status(resp, StatusCode::OK).await;
        assert_eq!(
            second["rooms"],
            json!(all["rooms"].as_array().unwrap()[2..])
        );
        assert!(second.get("next_cursor").is_none(), "{second}");

        for bad in ["limit=0", "limit=101", "cursor=nonsense"] {
            let resp = s
                .player(Method::GET, &format!("/api/v1/rooms?{bad}"), &token)
                .send()
                .await
                .unwrap();
            common::expect_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
        }
        a.send(json!({"type": "list_rooms", "cid": 1, "cursor": "7"}))
            .await;
        let refused = a.recv_type("error").await;
        assert_eq!(refused["error"]["code"], "invalid_request", "{refused}");
        s.stop().await;
    }
}

#[tokio::test]
async fn rooms_are_created_listed_joined_by_code_and_left() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let mut a = player(&s).await;
        let mut b = player(&s).await;
        let public = create(
            &mut a,
            json!({"labels": ["ranked"], "metadata": {"map": "dust"}, "max_players": 4}),
        )
        .await;
        assert_eq!(public["host"], a.id.as_str());
        assert_eq!(ids(&public["members"]), vec![a.id.clone()]);
        assert_eq!(public["properties"]["max_players"], 4);
        assert!(public.get("join_code").is_none());
        let room_id = public["room_id"].as_str().unwrap().to_owned();
        let private = create(&mut a, json!({"private": true})).await;
        let code = private["join_code"].as_str().unwrap().to_owned();
        let private_id = private["room_id"].as_str().unwrap().to_owned();

        b.send(json!({"type": "list_rooms", "cid": 1, "label": "ranked"}))
            .await;
        let list = b.recv_type("room_list").await;
        assert_eq!(list["cid"], 1);
        let rooms = list["rooms"].as_array().unwrap();
        assert_eq!(rooms.len(), 1, "{list}");
        assert_eq!(rooms[0]["room_id"], room_id.as_str());
        assert_eq!(rooms[0]["players"], 1);
        assert_eq!(rooms[0]["metadata"], json!({"map": "dust"}));
        b.send(json!({"type": "list_rooms", "label": "casual"}))
            .await;
        assert_eq!(b.recv_type("room_list").await["rooms"], json!([]));
        // Over HTTP: the private room is not listed either.
        let token = s.endpoint().device("http-lister").await.token;
        let resp = s
            .player(Method::GET, "/api/v1/rooms", &token)
            .send()
            .await
            .unwrap();
        let listed = common::expect_status(resp, StatusCode::OK).await;
        assert_eq!(listed["rooms"].as_array().unwrap().len(), 1);
        assert_eq!(listed["rooms"][0]["room_id"], room_id.as_str());
        let resp = s
            .player(Method::GET, "/api/v1/rooms?label=casual", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            common::expect_status(resp, StatusCode::OK).await["rooms"],
            json!([])
        );
        let resp = s.req(Method::GET, "/api/v1/rooms").send().await.unwrap();
        common::expect_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;

        // A private room is reached by its code only.
        b.send(json!({"type": "join_room", "cid": "j", "room_id": private_id}))
            .await;
        let err = b.recv_type("error").await;
        assert_eq!(
            (err["cid"].as_str(), err["error"]["code"].as_str()),
            (Some("j"), Some("not_found"))
        );
        b.send(json!({"type": "join_room", "join_code": "ZZZZZZ"}))
            .await;
        assert_eq!(b.recv_type("error").await["error"]["code"], "not_found");
        b.send(json!({"type": "join_room", "cid": 9, "join_code": code.to_lowercase()}))
            .await;
        let joined = b.recv_type("room_joined").await;
        assert_eq!(joined["cid"], 9);
        assert_eq!(joined["room"]["room_id"], private_id.as_str());
        assert_eq!(joined["room"]["host"], a.id.as_str());
        assert_eq!(
            ids(&joined["room"]["members"]),
            vec![a.id.clone(), b.id.clone()]
        );
        let seq = joined["room"]["seq"].as_u64().unwrap();
        let seen = a.recv_type("player_joined").await;
        assert_eq!(seen["member"]["user_id"], b.id.as_str());
        assert_eq!(seen["seq"].as_u64(), Some(seq));
        assert!(seen.get("cid").is_none());
        b.send(json!({"type": "join_room", "join_code": code}))
            .await;
        assert_eq!(b.recv_type("error").await["error"]["code"], "conflict");

        b.send(json!({"type": "leave_room", "cid": "bye", "room_id": private_id}))
            .await;
        let left = b.recv_type("room_left").await;
        assert_eq!(
            (left["cid"].as_str(), left["room_id"].as_str()),
            (Some("bye"), Some(private_id.as_str()))
        );
        let gone = a.recv_type("player_left").await;
        assert_eq!(gone["user_id"], b.id.as_str());
        assert_eq!(gone["seq"].as_u64(), Some(seq + 1));
        b.send(json!({"type": "leave_room", "room_id": private_id}))
            .await;
        assert_eq!(b.recv_type("error").await["error"]["code"], "not_found");

        // A full room refuses; an emptied room disappears.
        b.send(json!({"type": "join_room", "room_id": room_id}))
            .await;
        b.recv_type("room_joined").await;
        a.recv_type("player_joined").await;
        a.send(json!({"type": "leave_room", "room_id": room_id}))
            .await;
        a.recv_type("room_left").await;
        b.recv_type("player_left").await;
        b.recv_type("host_changed").await;
        b.send(json!({"type": "leave_room", "room_id": room_id}))
            .await;
        b.recv_type("room_left").await;
        b.send(json!({"type": "list_rooms"})).await;
        assert_eq!(b.recv_type("room_list").await["rooms"], json!([]));
        let mut c = player(&s).await;
        let solo = create(&mut c, json!({"max_players": 1})).await;
        b.send(json!({"type": "join_room", "room_id": solo["room_id"]}))
            .await;
        assert_eq!(b.recv_type("error").await["error"]["code"], "conflict");
        s.stop().await;
    }
}

#[tokio::test]
async fn state_reaches_the_others_only_or_the_targets() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let mut a = player(&s).await;
        let mut b = player(&s).await;
        let mut c = player(&s).await;
        let mut outsider = player(&s).await;
        let room = create(&mut a, json!({})).await;
        let room_id = room["room_id"].as_str().unwrap().to_owned();
        for joiner in [&mut b, &mut c] {
            joiner
                .send(json!({"type": "join_room", "room_id": room_id}))
                .await;
            joiner.recv_type("room_joined").await;
        }
        a.recv_type("player_joined").await;
        a.recv_type("player_joined").await;
        b.recv_type("player_joined").await;

        a.send(json!({"type": "player_state_update", "room_id": room_id, "state": {"x": 1.5, "hp": [1, 2]}}))
            .await;
        for other in [&mut b, &mut c] {
            let update = other.recv_type("state_update").await;
            assert_eq!(update["room_id"], room_id.as_str());
            let entries = update["updates"].as_array().unwrap();
            assert_eq!(entries.len(), 1);
            assert_eq!(entries[0]["from"], a.id.as_str());
            assert_eq!(entries[0]["state"], json!({"x": 1.5, "hp": [1, 2]}));
        }
        a.nothing_pending().await;

        // Targeted at C: B sees nothing.
        a.send(json!({"type": "player_state_update", "room_id": room_id, "state": "psst", "targets": [c.id]}))
            .await;
        assert_eq!(
            c.recv_type("state_update").await["updates"][0]["state"],
            "psst"
        );
        b.nothing_pending().await;
        a.nothing_pending().await;

        // Echo when asked.
        a.send(
            json!({"type": "player_state_update", "room_id": room_id, "state": 7, "echo": true}),
        )
        .await;
        assert_eq!(
            a.recv_type("state_update").await["updates"][0]["from"],
            a.id.as_str()
        );
        b.recv_type("state_update").await;
        c.recv_type("state_update").await;

        // A non-member is refused and nobody hears it.
        outsider
            .send(
                json!({"type": "player_state_update", "cid": "x", "room_id": room_id, "state": 1}),
            )
            .await;
        let err = outsider.recv_type("error").await;
        assert_eq!(
            (err["cid"].as_str(), err["error"]["code"].as_str()),
            (Some("x"), Some("forbidden"))
        );
        outsider
            .send(json!({"type": "player_state_update", "room_id": "no-such-room", "state": 1}))
            .await;
        assert_eq!(
            outsider.recv_type("error").await["error"]["code"],
            "forbidden"
        );
        for member in [&mut a, &mut b, &mut c] {
            member.nothing_pending().await;
        }
        s.stop().await;
    }
}

#[tokio::test]
async fn a_ticked_room_batches_updates_into_one_frame_per_tick() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let mut a = player(&s).await;
        let mut b = player(&s).await;
        let room = create(&mut a, json!({"tick_rate": 1})).await;
        assert_eq!(room["properties"]["tick_rate"], 1);
        let room_id = room["room_id"].as_str().unwrap().to_owned();
        b.send(json!({"type": "join_room", "room_id": room_id}))
            .await;
        b.recv_type("room_joined").await;
        a.recv_type("player_joined").await;
        for i in 0..5 {
            a.send(json!({"type": "player_state_update", "room_id": room_id, "state": i}))
                .await;
        }
        let mut frames = 0;
        let mut states = Vec::new();
        while states.len() < 5 {
            let update = b.recv_type("state_update").await;
            frames += 1;
            for entry in update["updates"].as_array().unwrap() {
                states.push(entry["state"].as_i64().unwrap());
            }
        }
        assert_eq!(states, vec![0, 1, 2, 3, 4]);
        // Five updates sent within a millisecond span at most one tick boundary.
        assert!(frames <= 2, "{frames} frames for one tick's updates");
        a.nothing_pending().await;

        a.send(json!({"type": "create_room", "properties": {"tick_rate": 1000}}))
            .await;
        assert_eq!(
            a.recv_type("error").await["error"]["code"],
            "invalid_request"
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn the_host_migrates_to_the_longest_present_member() {
    for backend in backends() {
        // No grace period: a dropped socket leaves at once (resume: tests/realtime_resume.rs).
        let s = TestServer::start_with(backend, |c| c.realtime.resume_grace_secs = 0).await;
        let mut a = player(&s).await;
        let mut b = player(&s).await;
        let mut c = player(&s).await;
        let room = create(&mut a, json!({})).await;
        let room_id = room["room_id"].as_str().unwrap().to_owned();
        b.send(json!({"type": "join_room", "room_id": room_id}))
            .await;
        b.recv_type("room_joined").await;
        c.send(json!({"type": "join_room", "room_id": room_id}))
            .await;
        assert_eq!(
            c.recv_type("room_joined").await["room"]["host"],
            a.id.as_str()
        );
        a.recv_type("player_joined").await;
        a.recv_type("player_joined").await;
        b.recv_type("player_joined").await;

        a.send(json!({"type": "leave_room", "room_id": room_id}))
            .await;
        a.recv_type("room_left").await;
        let b_id = b.id.clone();
        for other in [&mut b, &mut c] {
            assert_eq!(
                other.recv_type("player_left").await["user_id"],
                a.id.as_str()
            );
            let host = other.recv_type("host_changed").await;
            assert_eq!(host["host"], b_id.as_str());
        }
        // A dropped socket leaves its rooms too.
        drop(b);
        assert_eq!(c.recv_type("player_left").await["user_id"], b_id.as_str());
        assert_eq!(c.recv_type("host_changed").await["host"], c.id.as_str());
        // A member who is not the host leaving changes no host.
        a.send(json!({"type": "join_room", "room_id": room_id}))
            .await;
        a.recv_type("room_joined").await;
        c.recv_type("player_joined").await;
        a.send(json!({"type": "leave_room", "room_id": room_id}))
            .await;
        a.recv_type("room_left").await;
        c.recv_type("player_left").await;
        c.nothing_pending().await;
        s.stop().await;
    }
}

async fn limited_server(backend: common::Backend) -> TestServer {
    TestServer::start_with(backend, |c| {
        c.realtime.max_frame_bytes = 1024;
        // One token a second: none refills while the test sends its burst.
        c.realtime.messages_per_second = 1;
        c.realtime.message_burst = 5;
        c.realtime.max_violations = 3;
        c.realtime.max_rooms_per_user = 1;
    })
    .await
}

#[tokio::test]
async fn limits_answer_typed_errors_then_close_the_socket() {
    for backend in backends() {
        let s = limited_server(backend).await;
        // Rooms per player.
        let mut a = player(&s).await;
        create(&mut a, json!({})).await;
        a.send(json!({"type": "create_room", "cid": 2})).await;
        let err = a.recv_type("error").await;
        assert_eq!(
            (err["cid"].as_i64(), err["error"]["code"].as_str()),
            (Some(2), Some("quota_exceeded"))
        );
        drop(a);

        // An oversized frame is refused and the socket lives on.
        let mut b = player(&s).await;
        b.send_raw(Message::text(format!(
            r#"{{"type":"ping","pad":"{}"}}"#,
            "x".repeat(2000)
        )))
        .await;
        assert_eq!(
            b.recv_type("error").await["error"]["code"],
            "payload_too_large"
        );
        b.nothing_pending().await;
        drop(b);

        // Over the rate: typed errors, then the socket is closed with 1008.
        let mut c = player(&s).await;
        for _ in 0..20 {
            c.send_raw(Message::text(r#"{"type":"ping"}"#)).await;
        }
        let mut pongs = 0;
        let mut limited = 0;
        let code = loop {
            match tokio::time::timeout(WAIT, c.ws.next()).await.unwrap() {
                Some(Ok(Message::Text(t))) => {
                    let frame: Value = serde_json::from_str(t.as_str()).unwrap();
                    match frame["type"].as_str().unwrap() {
                        "pong" => pongs += 1,
                        "error" => {
                            assert_eq!(frame["error"]["code"], "rate_limited");
                            limited += 1;
                        }
                        other => panic!("unexpected {other}"),
                    }
                }
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break None,
            }
        };
        assert_eq!(pongs, 5);
        assert_eq!(limited, 3);
        assert_eq!(code, Some(1008));

        // A frame over four times the limit ends the connection at once.
        let mut d = player(&s).await;
        d.send_raw(Message::text("y".repeat(10_000))).await;
        assert_eq!(d.close_code().await, Some(1009));
        s.stop().await;
    }
}

#[tokio::test]
async fn garbage_on_one_socket_harms_no_other() {
    for backend in backends() {
        let s = TestServer::start_with(backend, |c| c.realtime.max_frame_bytes = 4096).await;
        let mut a = player(&s).await;
        let mut b = player(&s).await;
        let mut fuzzer = player(&s).await;
        let room = create(&mut a, json!({})).await;
        let room_id = room["room_id"].as_str().unwrap().to_owned();
        for joiner in [&mut b, &mut fuzzer] {
            joiner
                .send(json!({"type": "join_room", "room_id": room_id}))
                .await;
            joiner.recv_type("room_joined").await;
        }
        a.recv_type("player_joined").await;
        a.recv_type("player_joined").await;
        b.recv_type("player_joined").await;

        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let fixed = [
            "".to_owned(),
            "null".to_owned(),
            "[]".to_owned(),
            "{}".to_owned(),
            r#"{"type":"nope"}"#.to_owned(),
            r#"{"type":"join_room","room_id":5}"#.to_owned(),
            r#"{"type":"player_state_update"}"#.to_owned(),
            format!(
                r#"{{"type":"player_state_update","room_id":"{room_id}","state":{}}}"#,
                "[".repeat(200) + &"]".repeat(200)
            ),
            "[".repeat(3000),
            r#"{"type":"create_room","properties":{"max_players":-1}}"#.to_owned(),
            r#"{"type":"ping","cid":{"nested":true}}"#.to_owned(),
            "\u{0}\u{ffff}".to_owned(),
            "z".repeat(5000),
        ];
        let fuzz = tokio::spawn(async move {
            for round in 0..300 {
                let message = match next() % 3 {
                    0 => Message::text(fixed[round % fixed.len()].clone()),
                    1 => Message::binary(
                        (0..next() % 600).map(|_| next() as u8).collect::<Vec<u8>>(),
                    ),
                    _ => Message::text(
                        (0..next() % 300)
                            .map(|_| char::from_u32((next() % 0x250) as u32).unwrap_or('?'))
                            .collect::<String>(),
                    ),
                };
                fuzzer.send_raw(message).await;
            }
            fuzzer
        });
        // The fuzzer is closed somewhere in between; its `player_left` may arrive at any point.
        let mut left = [None, None];
        async fn update(c: &mut Socket, left: &mut Option<String>) -> Value {
            loop {
                let frame = c.recv().await;
                if frame["type"] == "player_left" && left.is_none() {
                    *left = frame["user_id"].as_str().map(str::to_owned);
                    continue;
                }
                assert_eq!(frame["type"], "state_update", "{frame}");
                return frame;
            }
        }
        for i in 0..50 {
            a.send(json!({"type": "player_state_update", "room_id": room_id, "state": {"i": i}}))
                .await;
            let got = update(&mut b, &mut left[1]).await;
            assert_eq!(got["updates"][0]["state"]["i"], i);
            b.send(json!({"type": "player_state_update", "room_id": room_id, "state": {"j": i}, "targets": [a.id]}))
                .await;
            let got = update(&mut a, &mut left[0]).await;
            assert_eq!(got["updates"][0]["state"]["j"], i);
        }
        let mut fuzzer = fuzz.await.unwrap();
        // The fuzzer broke the limits often enough to be closed, and left the room on the way.
        assert_eq!(fuzzer.close_code().await, Some(1008));
        for (member, left) in [&mut a, &mut b].into_iter().zip(left) {
            let left = match left {
                Some(id) => id,
                None => member.recv_type("player_left").await["user_id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            };
            assert_eq!(left, fuzzer.id);
        }
        a.nothing_pending().await;
        b.nothing_pending().await;
        let mut late = player(&s).await;
        late.nothing_pending().await;
        s.stop().await;
    }
}

#[tokio::test]
async fn a_slow_reader_is_disconnected_without_holding_up_the_room() {
    for backend in backends() {
        let s = TestServer::start_with(backend, |c| {
            c.realtime.outbound_queue = 16;
            c.realtime.messages_per_second = 10_000;
            c.realtime.message_burst = 10_000;
            c.realtime.resume_grace_secs = 0;
        })
        .await;
        let mut a = player(&s).await;
        let mut b = player(&s).await;
        let mut slow = player(&s).await;
        let room = create(&mut a, json!({})).await;
        let room_id = room["room_id"].as_str().unwrap().to_owned();
        for joiner in [&mut b, &mut slow] {
            joiner
                .send(json!({"type": "join_room", "room_id": room_id}))
                .await;
            joiner.recv_type("room_joined").await;
        }
        a.recv_type("player_joined").await;
        a.recv_type("player_joined").await;
        b.recv_type("player_joined").await;

        // 400 updates of 32 KiB: far more than the socket buffers of a reader that never reads.
        // B reads each one before the next is sent, so only the slow socket's queue grows.
        const UPDATES: usize = 400;
        let blob = "s".repeat(32 * 1024);
        let mut slow_left = false;
        for i in 0..UPDATES {
            a.send(json!({"type": "player_state_update", "room_id": room_id, "state": {"i": i, "blob": blob}}))
                .await;
            loop {
                let frame = b.recv().await;
                if frame["type"] == "player_left" {
                    assert_eq!(frame["user_id"], slow.id.as_str());
                    slow_left = true;
                    continue;
                }
                assert_eq!(frame["updates"][0]["state"]["i"], i);
                break;
            }
        }
        if !slow_left {
            assert_eq!(
                b.recv_type("player_left").await["user_id"],
                slow.id.as_str()
            );
        }
        b.nothing_pending().await;
        // The slow socket got part of the stream, then was cut off.
        let mut updates = 0;
        let end = loop {
            match tokio::time::timeout(WAIT, slow.ws.next()).await.unwrap() {
                Some(Ok(Message::Text(_))) => updates += 1,
                Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break None,
            }
        };
        assert!(updates < UPDATES, "{updates}");
        assert!(matches!(end, None | Some(4008)), "{end:?}");
        s.stop().await;
    }
}
