//! The realtime socket through the mock, with a real tokio-tungstenite client: the server's own
//! socket behind it (rooms, relay, authentication by the mock's clock, its close codes), and each
//! scripted fault: refused upgrades, delayed and dropped frames, forced disconnects, going
//! offline. Scripted from Rust and over the `/__mock/` admin API.

mod common;

use std::time::{Duration, Instant};

use aethex_mock::{Direction, Disconnect, FrameAction, FrameFilter, MockServer, Times};
use common::*;
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request as WsRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const WAIT: Duration = Duration::from_secs(5);

struct Socket {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

fn ws_request(mock: &MockServer, token: &str) -> WsRequest {
    let mut req = mock.realtime_url().into_client_request().unwrap();
    let headers = req.headers_mut();
    headers.insert(
        "X-AeThex-Key",
        HeaderValue::from_str(mock.client_key()).unwrap(),
    );
    headers.insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    req
}

async fn connect(mock: &MockServer, player: &Player) -> Socket {
    let (ws, resp) = tokio_tungstenite::connect_async(ws_request(mock, &player.access_token))
        .await
        .expect("upgrade through the mock");
    assert_eq!(resp.status(), 101);
    Socket { ws }
}

/// The status and JSON body of a refused upgrade.
async fn refused(req: WsRequest) -> (u16, Value) {
    match tokio_tungstenite::connect_async(req).await {
        Err(WsError::Http(resp)) => (
            resp.status().as_u16(),
            serde_json::from_slice(resp.body().as_deref().unwrap_or_default())
                .expect("a JSON error body"),
        ),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

impl Socket {
    async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
    }

    async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("socket open")
                .expect("no socket error");
            match msg {
                Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
                Message::Close(frame) => panic!("closed: {frame:?}"),
                _ => continue,
            }
        }
    }

    async fn recv_type(&mut self, kind: &str) -> Value {
        let frame = self.recv().await;
        assert_eq!(frame["type"], kind, "{frame}");
        frame
    }

    async fn ping(&mut self, cid: &str) {
        self.send(json!({"type": "ping", "cid": cid})).await;
        assert_eq!(self.recv().await, json!({"type": "pong", "cid": cid}));
    }

    /// The types of the frames that arrive before the pong to a fresh ping.
    async fn before_pong(&mut self, cid: &str) -> Vec<String> {
        self.send(json!({"type": "ping", "cid": cid})).await;
        let mut before = Vec::new();
        loop {
            let frame = self.recv().await;
            if frame == json!({"type": "pong", "cid": cid}) {
                return before;
            }
            before.push(frame["type"].as_str().unwrap_or_default().to_owned());
        }
    }

    /// Nothing arrives within `within`.
    async fn silent(&mut self, within: Duration) {
        if let Ok(frame) = tokio::time::timeout(within, self.ws.next()).await {
            panic!("expected nothing, got {frame:?}");
        }
    }

    /// How the socket ended: `Some(code)` after a close frame, `None` when the connection just
    /// went away.
    async fn end(&mut self) -> Option<(u16, String)> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("the socket ends in time")
            {
                Some(Ok(Message::Close(frame))) => {
                    return frame.map(|f| (f.code.into(), f.reason.to_string()))
                }
                Some(Ok(_)) => continue,
                Some(Err(WsError::Protocol(_) | WsError::Io(_))) | None => return None,
                Some(Err(e)) => panic!("unexpected socket error {e}"),
            }
        }
    }
}

/// Two players in one room: `(a, b, room id)`.
async fn room_of_two(mock: &MockServer) -> (Player, Socket, Player, Socket, String) {
    let http = client();
    let pa = device_player(mock, &http, &format!("rt-{}", uuid())).await;
    let pb = device_player(mock, &http, &format!("rt-{}", uuid())).await;
    let mut a = connect(mock, &pa).await;
    let mut b = connect(mock, &pb).await;
    a.send(json!({"type": "create_room", "cid": 1})).await;
    let room = a.recv_type("room_joined").await["room"]["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    b.send(json!({"type": "join_room", "cid": 2, "room_id": room}))
        .await;
    b.recv_type("room_joined").await;
    assert_eq!(
        a.recv_type("player_joined").await["member"]["user_id"],
        pb.user_id.as_str()
    );
    (pa, a, pb, b, room)
}

fn uuid() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

fn update(room: &str, n: u32) -> Value {
    json!({"type": "player_state_update", "room_id": room, "state": {"n": n}})
}

async fn received_update(socket: &mut Socket) -> u64 {
    let frame = socket.recv_type("state_update").await;
    frame["updates"][0]["state"]["n"].as_u64().unwrap()
}

#[tokio::test]
async fn the_server_socket_works_through_the_mock() {
    let mock = MockServer::start().await;
    let (pa, mut a, pb, mut b, room) = room_of_two(&mock).await;
    a.send(update(&room, 1)).await;
    let frame = b.recv_type("state_update").await;
    assert_eq!(frame["updates"][0]["from"], pa.user_id.as_str());
    assert_eq!(frame["updates"][0]["state"], json!({"n": 1}));
    // The server's typed errors, unchanged.
    b.send(json!({"type": "leave_room", "cid": 9, "room_id": "nope"}))
        .await;
    let err = b.recv_type("error").await;
    assert_eq!(
        (err["cid"].as_i64(), err["error"]["code"].as_str()),
        (Some(9), Some("not_found"))
    );

    let sockets = mock.sockets();
    let users: Vec<_> = sockets.iter().map(|s| s.user_id.as_str()).collect();
    assert_eq!(users, vec![pa.user_id.as_str(), pb.user_id.as_str()]);
    // a: create_room + update; b: join_room + leave_room.
    assert_eq!(sockets[0].to_server.frames, 2);
    assert_eq!(sockets[1].to_server.frames, 2);
    let upgrade = &mock.requests_matching("GET /api/v1/realtime")[0];
    assert_eq!(upgrade.status, Some(101));

    // A refusal is the server's own answer, as it sent it.
    let (status, body) = refused(ws_request(&mock, "not-a-jwt")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );

    // A close from the client reaches the server: b's seat waits out the resume grace period,
    // which runs on the mock's clock.
    b.ws.close(None).await.unwrap();
    b.end().await;
    a.silent(Duration::from_millis(300)).await;
    mock.advance_clock(Duration::from_secs(31));
    assert_eq!(
        a.recv_type("player_left").await["user_id"],
        pb.user_id.as_str()
    );
    mock.stop().await;
}

#[tokio::test]
async fn the_upgrade_and_the_socket_follow_the_mock_clock() {
    let mock = MockServer::start().await;
    let http = client();
    let player = device_player(&mock, &http, "rt-clock-0001").await;
    let mut socket = connect(&mock, &player).await;
    assert_eq!(mock.expire_access_tokens(), 1);

    let (status, body) = refused(ws_request(&mock, &player.access_token)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("token_expired"))
    );
    // The live socket asks for a new token instead of being cut.
    socket.send(json!({"type": "list_rooms", "cid": "l"})).await;
    assert_eq!(
        socket.recv_type("error").await["error"]["code"],
        "token_expired"
    );

    let resp = req(&mock, &http, Method::POST, "/api/v1/auth/refresh")
        .json(&json!({"refresh_token": player.refresh_token}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let fresh: Value = resp.json().await.unwrap();
    let fresh_token = fresh["access_token"].as_str().unwrap();
    socket
        .send(json!({"type": "refresh_session", "cid": 1, "access_token": fresh_token}))
        .await;
    socket.recv_type("session_refreshed").await;
    socket
        .send(json!({"type": "list_rooms", "cid": "l2"}))
        .await;
    assert_eq!(socket.recv_type("room_list").await["cid"], "l2");
    let (ws, _) = tokio_tungstenite::connect_async(ws_request(&mock, fresh_token))
        .await
        .expect("a fresh token is accepted");
    drop(ws);
    mock.stop().await;
}

#[tokio::test]
async fn upgrades_are_refused_the_scripted_number_of_times() {
    let mock = MockServer::start().await;
    let http = client();
    let player = device_player(&mock, &http, "rt-refuse-0001").await;
    mock.refuse_upgrades(2);
    for _ in 0..2 {
        let (status, body) = refused(ws_request(&mock, &player.access_token)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("unavailable"))
        );
    }
    let mut socket = connect(&mock, &player).await;
    socket.ping("after").await;
    let statuses: Vec<_> = mock
        .requests_matching("GET /api/v1/realtime")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![Some(503), Some(503), Some(101)]);

    // Any route fault applies to the handshake: here the TCP connection drops before it.
    mock.drop_connection(
        "GET /api/v1/realtime",
        aethex_mock::DropWhen::BeforeHandling,
        1,
    );
    let err = tokio_tungstenite::connect_async(ws_request(&mock, &player.access_token))
        .await
        .expect_err("the connection drops");
    assert!(!matches!(err, WsError::Http(_)), "{err:?}");
    assert_eq!(mock.sockets().len(), 1);
    mock.stop().await;
}

#[tokio::test]
async fn frames_are_delayed_each_way_in_order() {
    let mock = MockServer::start().await;
    let (_, mut a, _, mut b, room) = room_of_two(&mock).await;
    let delay = Duration::from_millis(300);

    mock.delay_frames(Direction::ToClient, delay, 1);
    let started = Instant::now();
    a.ping("slow").await;
    let took = started.elapsed();
    assert!(took >= delay, "{took:?}");
    // Spent after one frame.
    let started = Instant::now();
    a.ping("fast").await;
    assert!(started.elapsed() < delay);

    // Towards the server, every frame until removed; order is kept.
    let id = mock.delay_frames(Direction::ToServer, delay, Times::Always);
    let started = Instant::now();
    for n in 0..3u32 {
        a.send(update(&room, n)).await;
    }
    for n in 0..3u64 {
        assert_eq!(received_update(&mut b).await, n);
    }
    assert!(started.elapsed() >= delay);
    assert_eq!(mock.frame_faults()[0].hits, 3);
    assert!(mock.remove_fault(id));
    assert!(mock.frame_faults().is_empty());

    // Over the admin API, for one player only: b's frames are late, a's are not.
    let http = client();
    let b_id = mock.sockets()[1].user_id.clone();
    let resp = http
        .post(format!("{}/__mock/realtime/faults", mock.url()))
        .json(&json!({"kind": "delay", "ms": 300, "direction": "to_client", "user_id": b_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let started = Instant::now();
    a.ping("a").await;
    assert!(started.elapsed() < delay);
    b.ping("b").await;
    assert!(started.elapsed() >= delay);
    mock.stop().await;
}

#[tokio::test]
async fn frames_are_dropped_by_direction_and_type() {
    let mock = MockServer::start().await;
    let (_, mut a, _, mut b, room) = room_of_two(&mock).await;

    // The next two frames to the server vanish: their pongs never come.
    mock.drop_frames(Direction::ToServer, None, 2);
    a.send(json!({"type": "ping", "cid": 1})).await;
    a.send(json!({"type": "ping", "cid": 2})).await;
    a.ping("3").await;

    // Only state updates to the client, only the next one.
    mock.drop_frames(Direction::ToClient, Some("state_update"), 1);
    a.send(update(&room, 1)).await;
    b.ping("between").await;
    a.send(update(&room, 2)).await;
    assert_eq!(received_update(&mut b).await, 2);
    b.silent(Duration::from_millis(200)).await;

    let counts = &mock.sockets();
    assert_eq!(counts[0].to_server.dropped, 2);
    assert_eq!(counts[1].to_client.dropped, 1);
    assert!(mock.frame_faults().is_empty());

    // Over the admin API: drop every `pong` until the faults are cleared.
    let http = client();
    let resp = http
        .post(format!("{}/__mock/realtime/faults", mock.url()))
        .json(&json!({"kind": "drop", "direction": "to_client", "type": "pong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let listed: Value = http
        .get(format!("{}/__mock/realtime/faults", mock.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["faults"][0]["type"], "pong");
    assert_eq!(listed["faults"][0]["remaining"], Value::Null);
    a.send(json!({"type": "ping", "cid": "lost"})).await;
    a.silent(Duration::from_millis(200)).await;
    let resp = http
        .delete(format!("{}/__mock/realtime/faults", mock.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    a.ping("back").await;
    mock.stop().await;
}

#[tokio::test]
async fn a_forced_disconnect_cuts_one_player_abruptly() {
    let mock = MockServer::start().await;
    let (pa, mut a, _, mut b, room) = room_of_two(&mock).await;
    let cut = mock
        .disconnect_sockets(Some(&pa.user_id), Disconnect::Abrupt)
        .await;
    assert_eq!(cut, 1);
    assert_eq!(a.end().await, None, "no close frame");
    // b's socket is untouched; it may already hear that a (the host) left: the server's
    // business, so only errors are ruled out.
    let before = b.before_pong("still-here").await;
    assert!(!before.iter().any(|t| t == "error"), "{before:?}");
    assert_eq!(mock.sockets().len(), 1);
    b.send(update(&room, 1)).await;
    let before = b.before_pong("no-error").await;
    assert!(!before.iter().any(|t| t == "error"), "{before:?}");

    // a comes back on a new socket.
    let mut again = connect(&mock, &pa).await;
    again.ping("again").await;
    mock.stop().await;
}

#[tokio::test]
async fn a_forced_disconnect_sends_the_scripted_close_code() {
    let mock = MockServer::start().await;
    let (_, mut a, _, mut b, _) = room_of_two(&mock).await;
    let how = Disconnect::Close {
        code: 4001,
        reason: "maintenance".into(),
    };
    assert_eq!(mock.disconnect_sockets(None, how).await, 2);
    assert_eq!(a.end().await, Some((4001, "maintenance".to_owned())));
    assert_eq!(b.end().await, Some((4001, "maintenance".to_owned())));
    assert!(mock.sockets().is_empty());

    // Over the admin API; invalid codes are refused.
    let http = client();
    let pc = device_player(&mock, &http, "rt-close-0003").await;
    let mut c = connect(&mock, &pc).await;
    let url = format!("{}/__mock/realtime/disconnect", mock.url());
    for bad in [
        json!({"close_code": 1006}),
        json!({"close_code": 999}),
        json!({"reason": "x"}),
    ] {
        let resp = http.post(&url).json(&bad).send().await.unwrap();
        expect_error(resp, 400, "invalid_request").await;
    }
    let sockets: Value = http
        .get(format!("{}/__mock/realtime/sockets", mock.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sockets["sockets"][0]["user_id"], pc.user_id.as_str());
    let resp = http
        .post(&url)
        .json(&json!({"user_id": pc.user_id, "close_code": 1001, "reason": "going away"}))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, json!({"disconnected": 1}));
    assert_eq!(c.end().await, Some((1001, "going away".to_owned())));
    mock.stop().await;
}

#[tokio::test]
async fn the_server_close_codes_pass_through() {
    let mock = MockServer::start().await;
    let http = client();
    let player = device_player(&mock, &http, "rt-violator-01").await;
    let mut socket = connect(&mock, &player).await;
    // More refused frames than the server's limit (20 in its default window): 1008.
    for _ in 0..25 {
        let _ = socket.ws.send(Message::text("not json")).await;
    }
    let code = loop {
        match tokio::time::timeout(WAIT, socket.ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(code, Some(1008));
    mock.stop().await;
}

#[tokio::test]
async fn going_offline_cuts_live_sockets() {
    let mock = MockServer::start().await;
    let http = client();
    let player = device_player(&mock, &http, "rt-offline-01").await;
    let mut socket = connect(&mock, &player).await;
    socket.ping("before").await;
    mock.set_offline(true).await;
    assert_eq!(socket.end().await, None);
    assert!(mock.sockets().is_empty());
    mock.set_offline(false).await;
    let mut again = connect(&mock, &player).await;
    again.ping("after").await;

    // A reset swaps the server: its sockets go with it.
    mock.reset().unwrap();
    assert_eq!(again.end().await, None);
    mock.stop().await;
}

#[tokio::test]
async fn frame_faults_are_removed_with_the_others() {
    let mock = MockServer::start().await;
    let id = mock.add_frame_fault(
        FrameFilter::direction(Direction::Both).user("someone"),
        FrameAction::Drop,
        Times::Always,
    );
    mock.refuse_upgrades(1);
    assert_eq!(mock.frame_faults()[0].id, id);
    assert_eq!(mock.faults().len(), 1);
    let http = client();
    let resp = http
        .delete(format!("{}/__mock/faults/{id}", mock.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(mock.frame_faults().is_empty());
    mock.add_frame_fault(FrameFilter::default(), FrameAction::Drop, Times::Next(1));
    mock.clear_faults();
    assert!(mock.frame_faults().is_empty() && mock.faults().is_empty());
    let resp = http
        .post(format!("{}/__mock/realtime/faults", mock.url()))
        .json(&json!({"kind": "drop", "times": 0}))
        .send()
        .await
        .unwrap();
    expect_error(resp, 400, "invalid_request").await;
    mock.stop().await;
}
