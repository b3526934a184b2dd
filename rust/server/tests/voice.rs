//! Voice over the relay (`voice_frame`, `voice_key`) over real loopback WebSockets, on every
//! backend: who gets the frames, that they pass through untouched, their own rate limit, and
//! that only members may send them.

mod common;

use common::socket::{Encoding, Socket};
use common::{backends, TestServer};
use serde_json::{json, Value};

async fn player(s: &TestServer, encoding: Encoding) -> Socket {
    let e = s.endpoint();
    let mut socket = e.connect(&e.device_player().await, encoding).await;
    socket.nothing_pending().await;
    socket
}

/// A received frame's `data` (base64 in JSON, and so once a MessagePack frame is read as JSON).
fn bytes_of(frame: &Value) -> Vec<u8> {
    use base64::Engine as _;
    let text = frame["data"].as_str().unwrap_or_else(|| panic!("{frame}"));
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

async fn join(socket: &mut Socket, room: &str) {
    socket
        .send(json!({"type": "join_room", "room_id": room}))
        .await;
    socket.recv_type("room_joined").await;
}

#[tokio::test]
async fn voice_frames_reach_the_other_members_only_as_sent() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let mut a = player(&s, Encoding::MsgpackHeader).await;
        let mut b = player(&s, Encoding::MsgpackHeader).await;
        let mut c = player(&s, Encoding::Json).await;
        let mut outsider = player(&s, Encoding::Json).await;
        let room = a.create_room().await;
        join(&mut b, &room).await;
        join(&mut c, &room).await;
        a.recv_type("player_joined").await;
        a.recv_type("player_joined").await;
        b.recv_type("player_joined").await;
        let seq_before = a.seen[&room];

        // Arbitrary bytes (a ciphertext looks like noise), every value of a byte.
        let data: Vec<u8> = (0..=255u8).rev().collect();
        a.send(json!({"type": "voice_frame", "room_id": room, "data": data}))
            .await;
        for member in [&mut b, &mut c] {
            let got = member.recv_type("voice_received").await;
            assert_eq!(got["from"], a.id.as_str());
            assert_eq!(got["room_id"], room.as_str());
            assert!(got.get("seq").is_none(), "voice frames take no seq: {got}");
            assert_eq!(bytes_of(&got), data);
        }
        a.nothing_pending().await;
        outsider.nothing_pending().await;

        // Targets narrow the audience.
        a.send(json!({"type": "voice_frame", "room_id": room, "data": [1], "targets": [c.id]}))
            .await;
        assert_eq!(c.recv_type("voice_received").await["from"], a.id.as_str());
        b.nothing_pending().await;

        // Key messages are room events: a seq each, to targets only.
        b.send(json!({"type": "voice_key", "room_id": room, "data": [9, 9], "targets": [a.id]}))
            .await;
        let key = a.recv_type("voice_key_received").await;
        assert_eq!(key["from"], b.id.as_str());
        assert!(key["seq"].as_u64().unwrap() > seq_before, "{key}");
        c.nothing_pending().await;

        // Non-members are refused, typed.
        for kind in ["voice_frame", "voice_key"] {
            outsider
                .send(json!({"type": kind, "cid": 7, "room_id": room, "data": "AQ=="}))
                .await;
            let refused = outsider.recv_type("error").await;
            assert_eq!(refused["cid"], 7);
            assert_eq!(refused["error"]["code"], "forbidden");
        }
        a.nothing_pending().await;
        b.nothing_pending().await;
    }
}

#[tokio::test]
async fn voice_frames_have_their_own_rate_apart_from_messages() {
    for backend in backends() {
        let s = TestServer::start_with(backend, |config| {
            config.realtime.messages_per_second = 5;
            config.realtime.message_burst = 5;
            config.realtime.voice_frames_per_second = 50;
            config.realtime.voice_frame_burst = 40;
        })
        .await;
        let mut a = player(&s, Encoding::MsgpackHeader).await;
        let mut b = player(&s, Encoding::MsgpackHeader).await;
        let room = a.create_room().await;
        join(&mut b, &room).await;
        a.recv_type("player_joined").await;

        // 30 frames at once: far over the message rate, within the voice burst.
        for i in 0..30u8 {
            a.send(json!({"type": "voice_frame", "room_id": room, "data": [i]}))
                .await;
        }
        for i in 0..30u8 {
            let got = b.recv_type("voice_received").await;
            assert_eq!(bytes_of(&got), [i], "frames in order, none refused");
        }
        a.nothing_pending().await;

        // Past the voice burst, frames are refused like any other over the rate.
        for i in 0..40u8 {
            a.send(json!({"type": "voice_frame", "room_id": room, "data": [i]}))
                .await;
        }
        let refused = a.recv_type("error").await;
        assert_eq!(refused["error"]["code"], "rate_limited");
    }
}
