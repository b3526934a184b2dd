//! Resume after a drop (grace period, replay buffer), heartbeats, the MessagePack encoding and
//! `relay_packet`, over real loopback WebSockets on every backend.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use aethex_protocol::realtime::{ClientFrame, ClientMessage};
use common::socket::{Encoding, Socket, WAIT};
use common::{backends, TestServer};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

async fn player_with(s: &TestServer, encoding: Encoding) -> Socket {
    let e = s.endpoint();
    e.connect(&e.device_player().await, encoding).await
}

async fn player(s: &TestServer) -> Socket {
    player_with(s, Encoding::Json).await
}

/// The room side of a player's socket.
trait Rooms {
    /// Creates a room with `properties`; its id.
    async fn create(&mut self, properties: Value) -> String;
    /// Joins `room_id`; the room.
    async fn join(&mut self, room_id: &str) -> Value;
    /// Sends `resume` for `rooms` (from what this socket saw): the replayed frames, then
    /// `resumed`.
    async fn resume(&mut self, rooms: &[&str]) -> (Vec<Value>, Value);
}

impl Rooms for Socket {
    async fn create(&mut self, properties: Value) -> String {
        self.send(json!({"type": "create_room", "properties": properties}))
            .await;
        self.recv_type("room_joined").await["room"]["room_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn join(&mut self, room_id: &str) -> Value {
        self.send(json!({"type": "join_room", "room_id": room_id}))
            .await;
        self.recv_type("room_joined").await["room"].clone()
    }

    async fn resume(&mut self, rooms: &[&str]) -> (Vec<Value>, Value) {
        let rooms: BTreeMap<&str, u64> = rooms
            .iter()
            .map(|r| (*r, self.seen.get(*r).copied().unwrap_or(0)))
            .collect();
        self.send(json!({"type": "resume", "cid": "r", "rooms": rooms}))
            .await;
        let mut replayed = vec![];
        loop {
            let frame = self.recv().await;
            if frame["type"] == "resumed" {
                assert_eq!(frame["cid"], "r");
                return (replayed, frame);
            }
            replayed.push(frame);
        }
    }
}

/// A room created by `members[0]` and joined by the others, every join announcement read.
async fn room_of(members: &mut [&mut Socket], properties: Value) -> String {
    let room_id = members[0].create(properties).await;
    for i in 1..members.len() {
        members[i].join(&room_id).await;
        for earlier in members[..i].iter_mut() {
            earlier.recv_type("player_joined").await;
        }
    }
    room_id
}

fn state(room_id: &str, value: Value) -> Value {
    json!({"type": "player_state_update", "room_id": room_id, "state": value})
}

fn packet(room_id: &str, data: &[u8], reliable: bool) -> ClientFrame {
    ClientFrame {
        cid: None,
        message: ClientMessage::RelayPacket {
            room_id: room_id.into(),
            data: data.to_vec(),
            targets: None,
            channel: 3,
            reliable,
        },
    }
}

/// Moves the server clock past the grace period until `watcher` sees a frame (the server may
/// notice the drop after a first jump, and then counts the grace from there).
async fn expire_grace(s: &TestServer, watcher: &mut Socket) -> Value {
    for _ in 0..20 {
        s.clock.advance_ms(31_000);
        if let Some(frame) = watcher.try_recv(Duration::from_millis(500)).await {
            return frame;
        }
    }
    panic!("the grace period never ran out");
}

#[tokio::test]
async fn a_dropped_host_resumes_its_seats_and_gets_exactly_the_frames_it_missed() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let mut a = player(&s).await;
        let mut b = player(&s).await;
        let mut c = player(&s).await;
        let room = room_of(&mut [&mut a, &mut b, &mut c], json!({})).await;
        let ticked = room_of(&mut [&mut a, &mut b], json!({"tick_rate": 20})).await;
        a.send(state(&room, json!({"before": true}))).await;
        b.recv_type("state_update").await;
        c.recv_type("state_update").await;

        // The host's connection dies without a close frame, mid-game.
        a.reconnect(&s.endpoint()).await;
        let mut expected_room = vec![];
        // Broadcast state: A gets the very frame C gets.
        b.send(state(&room, json!({"n": 1}))).await;
        expected_room.push(c.recv_type("state_update").await);
        // Targeted at A only.
        c.send(json!({"type": "player_state_update", "room_id": room, "state": {"to": "a"}, "targets": [a.id]}))
            .await;
        // Targeted at B only: never A's.
        c.send(json!({"type": "player_state_update", "room_id": room, "state": {"to": "b"}, "targets": [b.id]}))
            .await;
        b.recv_type("state_update").await;
        // A reliable packet is replayed, an unreliable one is not.
        c.send_typed(packet(&room, &[0, 1, 255], true)).await;
        expected_room.push(json!("targeted"));
        expected_room.push(b.recv_type("packet_received").await);
        c.send_typed(packet(&room, &[9], false)).await;
        b.recv_type("packet_received").await;
        // The ticked room: entries, in order (B's own are not echoed to B).
        for n in 0..3 {
            b.send(state(&ticked, json!({"t": n}))).await;
        }
        b.nothing_pending().await;

        let (replayed, resumed) = a.resume(&[&room, &ticked]).await;
        let (in_room, in_ticked): (Vec<Value>, Vec<Value>) = replayed
            .into_iter()
            .partition(|f| f["room_id"] == room.as_str());
        assert_eq!(in_room.len(), 3, "{in_room:?}");
        assert_eq!(in_room[0], expected_room[0]);
        assert_eq!(in_room[1]["updates"][0]["state"], json!({"to": "a"}));
        assert_eq!(in_room[1]["updates"][0]["from"], c.id.as_str());
        assert_eq!(in_room[2], expected_room[2]);
        assert_eq!(in_room[2]["data"], "AAH/");
        // Ticked entries come back one per frame, as recorded, in seq order.
        let seqs: Vec<Value> = in_ticked
            .iter()
            .map(|f| {
                assert_eq!(f["type"], "state_update");
                assert_eq!(f["updates"].as_array().unwrap().len(), 1);
                f["updates"][0]["seq"].clone()
            })
            .collect();
        assert!(seqs.windows(2).all(|w| w[0].as_u64() < w[1].as_u64()));
        assert_eq!(seqs.len(), 3);
        assert_eq!(
            in_ticked
                .iter()
                .map(|f| f["updates"][0]["state"]["t"].clone())
                .collect::<Vec<_>>(),
            [json!(0), json!(1), json!(2)]
        );

        // Both seats are back, the host unchanged, nothing lost.
        assert_eq!(resumed["lost"], json!([]));
        let rooms = resumed["rooms"].as_array().unwrap();
        assert_eq!(rooms.len(), 2);
        for r in rooms {
            assert_eq!(r["complete"], true);
            assert_eq!(r["room"]["host"], a.id.as_str());
        }
        // The others never saw A leave.
        b.nothing_pending().await;
        c.nothing_pending().await;
        // Live traffic flows to the new socket again, and from it.
        b.send(state(&room, json!({"n": 2}))).await;
        assert_eq!(
            a.recv_type("state_update").await["updates"][0]["state"],
            json!({"n": 2})
        );
        c.recv_type("state_update").await;
        a.send(state(&room, json!({"back": true}))).await;
        b.recv_type("state_update").await;
        c.recv_type("state_update").await;
        // The grace period of the dead socket ending changes nothing now.
        s.clock.advance_ms(60_000);
        tokio::time::sleep(Duration::from_millis(600)).await;
        b.nothing_pending().await;
        a.nothing_pending().await;
        s.stop().await;
    }
}

#[tokio::test]
async fn after_the_grace_period_the_others_see_the_host_leave_and_resume_finds_nothing() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let mut a = player(&s).await;
        let mut b = player(&s).await;
        let mut c = player(&s).await;
        let room = room_of(&mut [&mut a, &mut b, &mut c], json!({})).await;
        // A clean close counts as a drop too.
        a.ws.close(None).await.unwrap();
        b.send(state(&room, json!({"while": "away"}))).await;
        c.recv_type("state_update").await;
        c.nothing_pending().await;

        let left = expire_grace(&s, &mut b).await;
        assert_eq!(left["type"], "player_left");
        assert_eq!(left["user_id"], a.id.as_str());
        assert_eq!(b.recv_type("host_changed").await["host"], b.id.as_str());
        assert_eq!(c.recv_type("player_left").await["user_id"], a.id.as_str());
        assert_eq!(c.recv_type("host_changed").await["host"], b.id.as_str());

        // The token was issued before the clock moved: sign the device in again.
        let again = s.endpoint().device(&a.device).await;
        assert_eq!(again.id, a.id);
        a.token = again.token;
        a.reconnect(&s.endpoint()).await;
        let (replayed, resumed) = a.resume(&[&room]).await;
        assert!(replayed.is_empty(), "{replayed:?}");
        assert_eq!(resumed["rooms"], json!([]));
        assert_eq!(resumed["lost"], json!([room]));
        a.send(state(&room, json!({}))).await;
        assert_eq!(a.recv_type("error").await["error"]["code"], "forbidden");
        b.nothing_pending().await;
        s.stop().await;
    }
}

#[tokio::test]
async fn a_replay_that_no_longer_fits_the_buffer_says_so() {
    for backend in backends() {
        let s = TestServer::start_with(backend, |c| c.realtime.replay_buffer = 4).await;
        let mut a = player(&s).await;
        let mut b = player(&s).await;
        let room = room_of(&mut [&mut a, &mut b], json!({})).await;
        b.reconnect(&s.endpoint()).await;
        for n in 0..10 {
            a.send(state(&room, json!({"n": n}))).await;
        }
        a.nothing_pending().await;
        let (replayed, resumed) = b.resume(&[&room]).await;
        let got: Vec<Value> = replayed
            .iter()
            .map(|f| f["updates"][0]["state"]["n"].clone())
            .collect();
        assert_eq!(got, [json!(6), json!(7), json!(8), json!(9)]);
        assert_eq!(resumed["rooms"][0]["complete"], false);
        assert_eq!(resumed["rooms"][0]["room"]["seq"], b.seen[&room]);
        // Resuming again from where it is now misses nothing.
        b.reconnect(&s.endpoint()).await;
        let (replayed, resumed) = b.resume(&[&room]).await;
        assert!(replayed.is_empty());
        assert_eq!(resumed["rooms"][0]["complete"], true);
        s.stop().await;
    }
}

#[tokio::test]
async fn resume_takes_no_seat_that_is_not_the_players_and_leaks_nothing() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let mut a = player(&s).await;
        let mut b = player(&s).await;
        let mut stranger = player(&s).await;
        let public = room_of(&mut [&mut a, &mut b], json!({})).await;
        let private = a.create(json!({"private": true})).await;
        a.send(state(&public, json!({"secret": 1}))).await;
        b.recv_type("state_update").await;
        let (replayed, resumed) = stranger.resume(&[&public, &private, "no-such-room"]).await;
        assert!(replayed.is_empty(), "{replayed:?}");
        assert_eq!(resumed["rooms"], json!([]));
        let mut lost: Vec<&str> = vec![&public, &private, "no-such-room"];
        lost.sort();
        assert_eq!(resumed["lost"], json!(lost));
        // Still not a member of anything.
        stranger.send(state(&public, json!({}))).await;
        assert_eq!(
            stranger.recv_type("error").await["error"]["code"],
            "forbidden"
        );
        a.nothing_pending().await;
        b.nothing_pending().await;
        s.stop().await;
    }
}

#[tokio::test]
async fn a_half_open_old_socket_loses_its_seat_to_the_resuming_one() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let mut a = player(&s).await;
        let mut b = player(&s).await;
        let room = room_of(&mut [&mut a, &mut b], json!({})).await;
        // B's first connection stays open (the server cannot tell it is gone).
        let mut old = s.endpoint().connect(&b.player(), Encoding::Json).await;
        old.seen = b.seen.clone();
        std::mem::swap(&mut old.ws, &mut b.ws);
        a.send(state(&room, json!({"n": 1}))).await;
        let (replayed, resumed) = b.resume(&[&room]).await;
        assert_eq!(replayed.len(), 1);
        assert_eq!(resumed["rooms"][0]["complete"], true);
        // The old socket got that update live, and nothing after the takeover.
        assert_eq!(old.recv_type("state_update").await, replayed[0]);
        a.send(state(&room, json!({"n": 2}))).await;
        b.recv_type("state_update").await;
        old.send(state(&room, json!({}))).await;
        assert_eq!(old.recv_type("error").await["error"]["code"], "forbidden");
        // The old socket closing does not touch the seat.
        drop(old);
        s.clock.advance_ms(60_000);
        tokio::time::sleep(Duration::from_millis(600)).await;
        a.nothing_pending().await;
        b.send(state(&room, json!({"n": 3}))).await;
        a.recv_type("state_update").await;
        s.stop().await;
    }
}

#[tokio::test]
async fn a_silent_socket_is_pinged_then_declared_dead() {
    for backend in backends() {
        let s = TestServer::start_with(backend, |c| {
            c.realtime.heartbeat_secs = 1;
            c.realtime.resume_grace_secs = 0;
        })
        .await;
        let mut a = player(&s).await;
        let mut silent = player(&s).await;
        let room = room_of(&mut [&mut a, &mut silent], json!({})).await;
        // The silent client holds its connection and never reads (so never answers a ping);
        // A reads, and its WebSocket library answers the pings.
        let mut pings = 0;
        let left = loop {
            let msg = tokio::time::timeout(WAIT, a.ws.next())
                .await
                .expect("dead within two heartbeats and a bit")
                .unwrap()
                .unwrap();
            match msg {
                Message::Ping(_) => pings += 1,
                Message::Text(text) => break serde_json::from_str::<Value>(text.as_str()).unwrap(),
                other => panic!("{other:?}"),
            }
        };
        assert!(pings >= 1);
        assert_eq!(left["type"], "player_left");
        assert_eq!(left["room_id"], room.as_str());
        assert_eq!(left["user_id"], silent.id.as_str());
        // A, which reads and so answers, outlives several heartbeats.
        let until = tokio::time::Instant::now() + Duration::from_secs(3);
        while let Ok(msg) = tokio::time::timeout_at(until, a.ws.next()).await {
            assert!(matches!(msg, Some(Ok(Message::Ping(_)))), "{msg:?}");
            pings += 1;
        }
        assert!(pings >= 3, "{pings}");
        a.nothing_pending().await;
        drop(silent);
        s.stop().await;
    }
}

#[tokio::test]
async fn msgpack_and_json_clients_share_a_room() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let mut j = player(&s).await;
        let mut m = player_with(&s, Encoding::MsgpackHeader).await;
        let mut q = player_with(&s, Encoding::MsgpackQuery).await;
        let room = room_of(
            &mut [&mut m, &mut j, &mut q],
            json!({"metadata": {"map": "x"}}),
        )
        .await;

        let value = json!({"pos": [1.5, -2.0], "name": "ü \"[{\\", "big": 9_007_199_254_740_993u64, "nested": {"ok": true, "none": null}});
        j.send(state(&room, value.clone())).await;
        for other in [&mut m, &mut q] {
            let got = other.recv_type("state_update").await;
            assert_eq!(got["updates"][0]["state"], value);
            assert_eq!(got["updates"][0]["from"], j.id.as_str());
        }
        m.send(state(&room, value.clone())).await;
        for other in [&mut j, &mut q] {
            assert_eq!(
                other.recv_type("state_update").await["updates"][0]["state"],
                value
            );
        }

        // States nest at most 64 deep, whoever sends them (a receiver's parser has its limit).
        let nested = |depth: usize| (0..depth).fold(json!(1), |inner, _| json!([inner]));
        for sender in [&mut j, &mut m] {
            sender
                .send(json!({"type": "player_state_update", "cid": 5, "room_id": room, "state": nested(65)}))
                .await;
            let err = sender.recv_type("error").await;
            assert_eq!(err["error"]["code"], "invalid_request", "{err}");
        }
        j.send(state(&room, nested(64))).await;
        for other in [&mut m, &mut q] {
            assert_eq!(
                other.recv_type("state_update").await["updates"][0]["state"],
                nested(64)
            );
        }
        m.send(state(&room, nested(64))).await;
        for other in [&mut j, &mut q] {
            assert_eq!(
                other.recv_type("state_update").await["updates"][0]["state"],
                nested(64)
            );
        }
        // Errors of the fast path carry the cid too.
        j.send(json!({"type": "player_state_update", "cid": "x", "room_id": "nope", "state": {}}))
            .await;
        let err = j.recv_type("error").await;
        assert_eq!(
            (err["cid"].clone(), err["error"]["code"].clone()),
            (json!("x"), json!("forbidden"))
        );

        // Packets: raw bytes in MessagePack, base64 in JSON.
        let data: Vec<u8> = (0..=255).collect();
        m.send_typed(packet(&room, &data, true)).await;
        let got = j.recv_type("packet_received").await;
        assert_eq!(got["data"], base64(&data));
        assert_eq!(
            (got["channel"].clone(), got["reliable"].clone()),
            (json!(3), json!(true))
        );
        let raw = loop {
            match tokio::time::timeout(WAIT, q.ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
            {
                Message::Binary(bytes) => break bytes,
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("{other:?}"),
            }
        };
        // A MessagePack bin 8 of 256 bytes: 0xc5, length, the bytes as they were.
        let mut bin = vec![0xc5, 0x01, 0x00];
        bin.extend_from_slice(&data);
        assert!(raw.windows(bin.len()).any(|w| w == bin.as_slice()));
        j.send_typed(packet(&room, b"hello", false)).await;
        for other in [&mut m, &mut q] {
            let got = other.recv_type("packet_received").await;
            assert_eq!(got["data"], base64(b"hello"));
            assert_eq!(got["reliable"], false);
        }

        // Replies carry the cid in either encoding.
        m.send(json!({"type": "list_rooms", "cid": 7})).await;
        let list = m.recv_type("room_list").await;
        assert_eq!(list["cid"], 7);
        assert_eq!(list["rooms"][0]["metadata"], json!({"map": "x"}));

        // Malformed MessagePack, text on a MessagePack socket, binary on a JSON socket: typed
        // errors, and the sockets live on.
        m.ws.send(Message::binary(vec![0xc1, 0x00])).await.unwrap();
        assert_eq!(
            m.recv_type("error").await["error"]["code"],
            "invalid_request"
        );
        m.ws.send(Message::binary(
            rmp_serde::to_vec_named(&json!({"type": "nope"})).unwrap(),
        ))
        .await
        .unwrap();
        assert_eq!(
            m.recv_type("error").await["error"]["code"],
            "invalid_request"
        );
        m.ws.send(Message::text(r#"{"type":"ping"}"#))
            .await
            .unwrap();
        assert_eq!(
            m.recv_type("error").await["error"]["code"],
            "invalid_request"
        );
        j.ws.send(Message::binary(
            rmp_serde::to_vec_named(&json!({"type": "ping"})).unwrap(),
        ))
        .await
        .unwrap();
        assert_eq!(
            j.recv_type("error").await["error"]["code"],
            "invalid_request"
        );
        for c in [&mut j, &mut m, &mut q] {
            c.nothing_pending().await;
        }

        // A MessagePack socket resumes like a JSON one.
        m.reconnect(&s.endpoint()).await;
        j.send(state(&room, json!({"missed": 1}))).await;
        q.recv_type("state_update").await;
        let (replayed, resumed) = m.resume(&[&room]).await;
        assert_eq!(replayed.len(), 1);
        assert_eq!(replayed[0]["updates"][0]["state"], json!({"missed": 1}));
        assert_eq!(resumed["rooms"][0]["room"]["host"], m.id.as_str());
        s.stop().await;
    }
}

fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[tokio::test]
async fn packets_go_at_once_to_the_others_or_the_targets_and_only_to_members() {
    for backend in backends() {
        let s = TestServer::start_with(backend, |c| c.realtime.max_frame_bytes = 2048).await;
        let mut a = player(&s).await;
        let mut b = player(&s).await;
        let mut c = player(&s).await;
        let mut outsider = player(&s).await;
        // A ticked room: state waits for the tick, packets do not.
        let room = room_of(&mut [&mut a, &mut b, &mut c], json!({"tick_rate": 1})).await;
        a.send(json!({"type": "relay_packet", "room_id": room, "data": "AQID", "channel": 1, "reliable": true}))
            .await;
        for other in [&mut b, &mut c] {
            let got = other.recv_type("packet_received").await;
            assert_eq!(got["from"], a.id.as_str());
            assert_eq!(got["data"], "AQID");
            assert_eq!(got["channel"], 1);
            assert!(got["seq"].as_u64().unwrap() > 1);
        }
        a.send(json!({"type": "relay_packet", "room_id": room, "data": "BA==", "targets": [c.id]}))
            .await;
        let got = c.recv_type("packet_received").await;
        assert_eq!(
            (
                got["data"].clone(),
                got["channel"].clone(),
                got["reliable"].clone()
            ),
            (json!("BA=="), json!(0), json!(true))
        );
        b.nothing_pending().await;
        a.nothing_pending().await;

        // Not a member: forbidden. Not base64: invalid. Too big: payload_too_large.
        outsider
            .send(json!({"type": "relay_packet", "cid": 1, "room_id": room, "data": "AA=="}))
            .await;
        let err = outsider.recv_type("error").await;
        assert_eq!(
            (err["cid"].clone(), err["error"]["code"].clone()),
            (json!(1), json!("forbidden"))
        );
        a.send(json!({"type": "relay_packet", "room_id": room, "data": "%%%"}))
            .await;
        assert_eq!(
            a.recv_type("error").await["error"]["code"],
            "invalid_request"
        );
        a.send_typed(packet(&room, &[7; 1600], true)).await;
        assert_eq!(
            a.recv_type("error").await["error"]["code"],
            "payload_too_large"
        );
        a.send_typed(packet(&room, &[7; 1400], true)).await;
        assert_eq!(
            b.recv_type("packet_received").await["data"],
            base64(&[7; 1400])
        );
        c.recv_type("packet_received").await;
        s.stop().await;
    }
}
