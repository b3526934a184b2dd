//! WebRTC signaling over the realtime socket and the ICE settings endpoint, over loopback: a
//! signal reaches the one member it is for and nobody else, a non-member is refused, and the
//! TURN credentials are coturn's shared-secret REST credentials for the asking player.

mod common;

use aethex_server::clock::Clock;
use base64::Engine as _;
use common::socket::{Encoding, Socket};
use common::{backends, expect_error, expect_status, TestServer};
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const ICE: &str = "/api/v1/realtime/ice";

async fn player(s: &TestServer, encoding: Encoding) -> Socket {
    let e = s.endpoint();
    e.connect(&e.device_player().await, encoding).await
}

async fn join(socket: &mut Socket, room: &str) {
    socket
        .send(json!({"type": "join_room", "room_id": room}))
        .await;
    socket.recv_type("room_joined").await;
}

fn offer(room: &str, to: &str, sdp: &str) -> Value {
    json!({"type": "signal", "room_id": room, "to": to, "signal": {"kind": "offer", "sdp": sdp}})
}

#[tokio::test]
async fn signals_reach_only_the_addressed_member_of_the_same_room() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let mut a = player(&s, Encoding::Json).await;
        // MessagePack sockets get the same signals.
        let mut b = player(&s, Encoding::MsgpackHeader).await;
        let mut c = player(&s, Encoding::Json).await;
        let mut outsider = player(&s, Encoding::Json).await;
        let room = a.create_room().await;
        join(&mut b, &room).await;
        join(&mut c, &room).await;
        a.recv_type("player_joined").await;
        a.recv_type("player_joined").await;
        b.recv_type("player_joined").await;

        a.send(offer(&room, &b.id, "v=0 offer")).await;
        let got = b.recv_type("signal").await;
        assert_eq!(
            got,
            json!({"type": "signal", "room_id": room, "from": a.id,
                "signal": {"kind": "offer", "sdp": "v=0 offer"}})
        );
        b.send(json!({"type": "signal", "room_id": room, "to": a.id,
            "signal": {"kind": "candidate", "candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
                "sdp_mid": "0", "sdp_mline_index": 0}}))
            .await;
        let got = a.recv_type("signal").await;
        assert_eq!(got["from"], b.id.as_str());
        assert_eq!(got["signal"]["kind"], "candidate");
        assert_eq!(got["signal"]["sdp_mline_index"], 0);
        assert!(
            got.get("seq").is_none(),
            "signals are not room events: {got}"
        );
        // Nobody else heard either signal.
        c.nothing_pending().await;
        outsider.nothing_pending().await;

        // A player outside the room may not signal into it, even to a member.
        outsider
            .send(
                json!({"type": "signal", "cid": 1, "room_id": room, "to": a.id,
                "signal": {"kind": "offer", "sdp": "x"}}),
            )
            .await;
        let refused = outsider.recv_type("error").await;
        assert_eq!(
            (refused["cid"].clone(), refused["error"]["code"].clone()),
            (json!(1), json!("forbidden"))
        );
        // A member may not reach a player outside the room through it ...
        a.send(
            json!({"type": "signal", "cid": 2, "room_id": room, "to": outsider.id,
            "signal": {"kind": "fallback"}}),
        )
        .await;
        let refused = a.recv_type("error").await;
        assert_eq!(refused["error"]["code"], "not_found", "{refused}");
        // ... nor signal itself, and a malformed signal is a typed error too.
        a.send(
            json!({"type": "signal", "cid": 3, "room_id": room, "to": a.id,
            "signal": {"kind": "fallback"}}),
        )
        .await;
        assert_eq!(
            a.recv_type("error").await["error"]["code"],
            "invalid_request"
        );
        a.send(
            json!({"type": "signal", "cid": 4, "room_id": room, "to": b.id,
            "signal": {"kind": "offer"}}),
        )
        .await;
        assert_eq!(
            a.recv_type("error").await["error"]["code"],
            "invalid_request"
        );
        outsider.nothing_pending().await;
        b.nothing_pending().await;

        // After leaving, a former member is an outsider.
        c.leave_room(&room).await;
        c.send(json!({"type": "signal", "room_id": room, "to": a.id,
            "signal": {"kind": "offer", "sdp": "late"}}))
            .await;
        assert_eq!(c.recv_type("error").await["error"]["code"], "forbidden");
        a.recv_type("player_left").await;
        a.nothing_pending().await;
        s.stop().await;
    }
}

fn hmac_sha1_base64(secret: &str, text: &str) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn ice_settings_carry_turn_credentials_for_the_asking_player() {
    let backend = backends().remove(0);
    let s = TestServer::start_with(backend, |config| {
        config.ice.stun_urls = vec!["stun:127.0.0.1:3478".into()];
        config.ice.turn_urls = vec![
            "turn:127.0.0.1:3478?transport=udp".into(),
            "turn:127.0.0.1:3478?transport=tcp".into(),
        ];
        config.ice.turn_secret = Some("shared-secret".into());
        config.ice.turn_credential_ttl_secs = 600;
    })
    .await;
    let auth = s.device_player().await;
    let (token, user_id) = (
        auth["access_token"].as_str().unwrap(),
        auth["user"]["id"].as_str().unwrap(),
    );
    let before = s.clock.now_ms() / 1000;
    let ice = expect_status(
        s.player(Method::GET, ICE, token).send().await.unwrap(),
        StatusCode::OK,
    )
    .await;
    let expires_at = ice["expires_at"].as_i64().unwrap();
    assert!((before + 600..=before + 602).contains(&expires_at), "{ice}");
    let username = format!("{expires_at}:{user_id}");
    assert_eq!(
        ice["ice_servers"],
        json!([
            {"urls": ["stun:127.0.0.1:3478"]},
            {"urls": ["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"],
             "username": username,
             "credential": hmac_sha1_base64("shared-secret", &username)}
        ])
    );

    // Players only: no token, a bad token, a server key.
    expect_error(
        s.req(Method::GET, ICE).send().await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    expect_error(
        s.player(Method::GET, ICE, "not-a-jwt")
            .send()
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    expect_error(
        s.admin(Method::GET, ICE).send().await.unwrap(),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    s.stop().await;

    // Without TURN settings: no servers, no expiry (peers use host candidates).
    let s = TestServer::start(backends().remove(0)).await;
    let auth = s.device_player().await;
    let ice = expect_status(
        s.player(Method::GET, ICE, auth["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(ice, json!({"ice_servers": []}));
    s.stop().await;
}
