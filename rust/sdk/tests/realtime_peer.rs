//! The SDK's `MultiplayerPeer` (what the Godot binding's `AeThexMultiplayerPeer` forwards every
//! virtual to) as the binding and the demo use it, through the real server on loopback, on SQLite
//! and (with `AETHEX_TEST_DATABASE_URL`) PostgreSQL: packets wait in a peer until Godot first
//! polls it, later members are announced, non-members get no peer, and a closed peer hands the
//! room's traffic back to `packet_received` while the seat stays. Ids, targets, modes, channels
//! and host migration are in `realtime.rs` (`multiplayer_peers_exchange_packets_through_the_relay`).

mod common;

use std::time::Instant;

use aethex_protocol::ErrorCode;
use aethex_sdk::{ConnectionStatus, PeerEvent, TransferMode, Value};
use common::*;

const MP: &str = "multiplayer";

/// Waits until `probe`'s view of the room holds `count` members (a join the server announced
/// may still be on its way to this client).
async fn wait_members(probe: &Probe, room_id: &str, count: usize) {
    let end = Instant::now() + DEADLINE;
    let members = || {
        let room = probe.client.multiplayer().room(room_id);
        room.map_or(0, |r| list(&r, "members").len())
    };
    while members() < count {
        assert!(Instant::now() < end, "{room_id} never had {count} members");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// The `peer_id` the room gave `user_id`, from `probe`'s view of the room.
fn room_peer_id(probe: &Probe, room_id: &str, user_id: &str) -> i32 {
    let room = probe.client.multiplayer().room(room_id).expect("joined");
    let member = list(&room, "members")
        .into_iter()
        .find(|m| string(m, "user_id") == user_id)
        .expect("a member");
    i32::try_from(int(&member, "peer_id")).unwrap()
}

#[tokio::test]
async fn a_peer_holds_what_arrives_before_its_first_poll_and_follows_later_members() {
    for backend in backends() {
        let server = RealServer::start_on(backend, |_| {}).await;
        let url = server.url.clone();
        let (mut a, a_id, _da) = player(&server, &url, "peer-relay-a").await;
        let (mut b, b_id, _db) = player(&server, &url, "peer-relay-b").await;
        let (outsider, _o_id, _do) = player(&server, &url, "peer-outsider").await;
        let room_id = room_with(&mut a, &mut [&mut b]).await;
        wait_members(&a, &room_id, 2).await;
        let b_peer_id = room_peer_id(&b, &room_id, &b_id);

        let mut pa = a.client.multiplayer().create_peer(None).unwrap();
        let mut pb = b
            .client
            .multiplayer()
            .create_peer(Some(room_id.clone()))
            .unwrap();
        assert_eq!(
            (pb.room_id(), pb.unique_id()),
            (room_id.as_str(), b_peer_id)
        );
        assert_eq!(pb.user_id_of(1), Some(a_id.clone()));
        let refused = outsider
            .client
            .multiplayer()
            .create_peer(Some(room_id.clone()))
            .err()
            .expect("a non-member gets no peer");
        assert_eq!(refused.code, ErrorCode::NotFound);

        // What the host sends before b's game first polls (the arena is still loading) waits in
        // b's peer, behind the connection of the members already there.
        for body in [&b"one"[..], b"two", b"three"] {
            pa.put_packet(body).unwrap();
        }
        let mut events = Vec::new();
        poll_until(&mut pb, &mut events, |p, _| p.available_packet_count() == 3).await;
        assert_eq!(events, vec![PeerEvent::PeerConnected(1)]);
        for expected in [&b"one"[..], b"two", b"three"] {
            assert_eq!(
                next_packet(&mut pb).await,
                (1, 0, TransferMode::Reliable, expected.to_vec())
            );
        }
        assert!(b.take_signals(MP, "packet_received").is_empty());

        // A member joining and leaving later is announced to a peer already polling.
        let (mut c, c_id, _dc) = player(&server, &url, "peer-relay-c").await;
        let id = c.client.multiplayer().join_room(room_id.clone());
        c.ok(id).await;
        let c_peer_id = room_peer_id(&c, &room_id, &c_id);
        let mut events = Vec::new();
        poll_until(&mut pb, &mut events, |_, e| {
            e.contains(&PeerEvent::PeerConnected(c_peer_id))
        })
        .await;
        let id = c.client.multiplayer().leave_room(None);
        c.ok(id).await;
        poll_until(&mut pb, &mut events, |_, e| {
            e.contains(&PeerEvent::PeerDisconnected(c_peer_id))
        })
        .await;
        assert_eq!(
            events,
            vec![
                PeerEvent::PeerConnected(c_peer_id),
                PeerEvent::PeerDisconnected(c_peer_id)
            ]
        );
        assert_eq!(pb.connection_status(), ConnectionStatus::Connected);

        drop((pa, pb));
        drop((a, b, c, outsider));
        server.finish().await;
    }
}

#[tokio::test]
async fn a_closed_peer_hands_the_room_back_to_packet_received_and_keeps_the_seat() {
    for backend in backends() {
        let server = RealServer::start_on(backend, |_| {}).await;
        let url = server.url.clone();
        let (mut a, a_id, _da) = player(&server, &url, "peer-close-a").await;
        let (mut b, _b_id, _db) = player(&server, &url, "peer-close-b").await;
        let room_id = room_with(&mut a, &mut [&mut b]).await;
        wait_members(&a, &room_id, 2).await;
        let mut pa = a.client.multiplayer().create_peer(None).unwrap();
        let mut pb = b.client.multiplayer().create_peer(None).unwrap();

        pa.put_packet(b"to the peer").unwrap();
        assert_eq!(next_packet(&mut pb).await.3, b"to the peer".to_vec());
        assert!(b.take_signals(MP, "packet_received").is_empty());

        let events = pb.close();
        assert_eq!(events, vec![PeerEvent::PeerDisconnected(1)]);
        assert_eq!(pb.connection_status(), ConnectionStatus::Disconnected);
        assert_eq!(pb.close_reason(), Some("closed"));
        assert!(pb.close().is_empty(), "closing twice reports nothing more");

        pa.put_packet(b"to the signal").unwrap();
        let args = b.signal(MP, "packet_received").await;
        assert_eq!(args[0], Value::String(room_id.clone()));
        assert_eq!(args[1], Value::String(a_id.clone()));
        // The peer's header byte (the mode) leads the bytes a plain receiver sees.
        assert_eq!(
            args[2],
            Value::PackedByteArray(
                [&[TransferMode::Reliable as u8][..], b"to the signal"].concat()
            )
        );
        assert!(b.client.multiplayer().joined_rooms().contains(&room_id));

        // Your own id closes your peer; another member cannot be removed.
        assert_eq!(
            pa.disconnect_peer(2).unwrap_err().code,
            ErrorCode::Forbidden
        );
        let events = pa.disconnect_peer(1).unwrap();
        assert!(events.contains(&PeerEvent::PeerDisconnected(pb.unique_id())));
        drop((pa, pb));
        drop((a, b));
        server.finish().await;
    }
}
