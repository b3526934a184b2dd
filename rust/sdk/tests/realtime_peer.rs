//! The SDK's `MultiplayerPeer` (what the Godot binding's `AeThexMultiplayerPeer` forwards every
//! virtual to) between several clients through the real server on loopback, on SQLite and (with
//! `AETHEX_TEST_DATABASE_URL`) PostgreSQL: peer ids follow the room with the host as peer 1,
//! packets keep their sender, channel and transfer mode, targets are honoured, packets wait in a
//! peer until it is polled, the host leaving closes every peer and a new peer makes the new host
//! peer 1, and a peer's room traffic goes back to `packet_received` once it is closed.

mod common;

use std::time::Instant;

use aethex_protocol::ErrorCode;
use aethex_sdk::{ConnectionStatus, MultiplayerPeer, PeerEvent, TransferMode, Value};
use common::*;

const MP: &str = "multiplayer";

async fn player(
    server: &RealServer,
    url: &str,
    device: &str,
) -> (Probe, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut probe = Probe::new(test_config(url, &server.client_key, dir.path()));
    let signed_in = probe.login_device(device).await;
    (probe, user_id(&signed_in), dir)
}

/// A room of `host` that every guest has joined; returns the room id.
async fn room_with(host: &mut Probe, guests: &mut [&mut Probe]) -> String {
    let id = host.client.multiplayer().create_room(Value::Nil);
    let room_id = string(&host.ok(id).await, "room_id");
    for guest in guests.iter_mut() {
        let id = guest.client.multiplayer().join_room(room_id.clone());
        guest.ok(id).await;
    }
    room_id
}

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

/// Polls `peer` as `_poll` does, collecting its events, until `done` holds (or the deadline).
async fn poll_until(
    peer: &mut MultiplayerPeer,
    events: &mut Vec<PeerEvent>,
    done: impl Fn(&MultiplayerPeer, &[PeerEvent]) -> bool,
) {
    let end = Instant::now() + DEADLINE;
    loop {
        events.extend(peer.poll());
        if done(peer, events) {
            return;
        }
        assert!(Instant::now() < end, "peer never got there: {events:?}");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// The next packet as Godot reads it: `(peer, channel, mode, bytes)`.
async fn next_packet(peer: &mut MultiplayerPeer) -> (i32, i32, TransferMode, Vec<u8>) {
    let mut events = Vec::new();
    poll_until(peer, &mut events, |p, _| p.available_packet_count() > 0).await;
    let header = (
        peer.packet_peer(),
        peer.packet_channel(),
        peer.packet_mode(),
    );
    let data = peer.get_packet().expect("a packet");
    (header.0, header.1, header.2, data)
}

#[tokio::test]
async fn peers_follow_the_room_and_packets_keep_sender_channel_mode_and_targets() {
    for backend in backends() {
        let server = RealServer::start_on(backend, |_| {}).await;
        let url = server.url.clone();
        let (mut a, a_id, _da) = player(&server, &url, "peer-relay-a").await;
        let (mut b, b_id, _db) = player(&server, &url, "peer-relay-b").await;
        let (mut c, c_id, _dc) = player(&server, &url, "peer-relay-c").await;
        let (outsider, _o_id, _do) = player(&server, &url, "peer-outsider").await;
        let room_id = room_with(&mut a, &mut [&mut b, &mut c]).await;
        let b_peer_id = room_peer_id(&b, &room_id, &b_id);
        let c_peer_id = room_peer_id(&c, &room_id, &c_id);
        assert!(b_peer_id >= 2 && c_peer_id >= 2 && b_peer_id != c_peer_id);
        for p in [&a, &b, &c] {
            wait_members(p, &room_id, 3).await;
        }

        let mut pa = a
            .client
            .multiplayer()
            .create_peer(Some(room_id.clone()))
            .unwrap();
        let mut pb = b
            .client
            .multiplayer()
            .create_peer(Some(room_id.clone()))
            .unwrap();
        // No room id: the current room, the one joined last.
        let mut pc = c.client.multiplayer().create_peer(None).unwrap();
        assert_eq!(pc.room_id(), room_id);
        assert_eq!((pa.unique_id(), pa.is_server()), (1, true));
        assert_eq!((pb.unique_id(), pb.is_server()), (b_peer_id, false));
        assert_eq!(pc.unique_id(), c_peer_id);
        assert!(!pa.is_server_relay_supported());
        assert_eq!(pb.connection_status(), ConnectionStatus::Connected);
        assert_eq!(pb.user_id_of(1), Some(a_id.clone()));
        assert_eq!(pb.peer_id_of(&c_id), Some(c_peer_id));
        let refused = outsider
            .client
            .multiplayer()
            .create_peer(Some(room_id.clone()))
            .err()
            .expect("a non-member gets no peer");
        assert_eq!(refused.code, ErrorCode::NotFound);

        // Packets sent before the receivers first poll wait in their peers.
        pa.set_transfer_mode(TransferMode::Reliable);
        pa.set_target_peer(0);
        for body in [&b"one"[..], b"two", b"three"] {
            pa.put_packet(body).unwrap();
        }
        // The first poll connects every member present; nobody sees itself.
        let mut events = Vec::new();
        poll_until(&mut pb, &mut events, |p, _| p.available_packet_count() == 3).await;
        assert_eq!(
            events,
            vec![
                PeerEvent::PeerConnected(1),
                PeerEvent::PeerConnected(c_peer_id)
            ]
        );
        for expected in [&b"one"[..], b"two", b"three"] {
            assert_eq!(
                next_packet(&mut pb).await,
                (1, 0, TransferMode::Reliable, expected.to_vec())
            );
        }
        let mut c_events = Vec::new();
        poll_until(&mut pc, &mut c_events, |p, _| {
            p.available_packet_count() == 3
        })
        .await;
        assert!(c_events.contains(&PeerEvent::PeerConnected(b_peer_id)));
        while pc.get_packet().is_some() {}

        // Targeted, unreliable ordered, on a channel: only the host gets it, with all three.
        pb.set_transfer_mode(TransferMode::UnreliableOrdered);
        pb.set_transfer_channel(3);
        pb.set_target_peer(1);
        assert_eq!(
            (pb.transfer_mode(), pb.transfer_channel()),
            (TransferMode::UnreliableOrdered, 3)
        );
        pb.put_packet(b"to host").unwrap();
        assert_eq!(
            next_packet(&mut pa).await,
            (
                b_peer_id,
                3,
                TransferMode::UnreliableOrdered,
                b"to host".to_vec()
            )
        );

        // Everyone but one: c excludes b, so only the host hears c.
        pc.set_transfer_mode(TransferMode::Unreliable);
        pc.set_target_peer(-b_peer_id);
        pc.put_packet(b"not for b").unwrap();
        assert_eq!(
            next_packet(&mut pa).await,
            (
                c_peer_id,
                0,
                TransferMode::Unreliable,
                b"not for b".to_vec()
            )
        );
        // A marker from the host to everyone: b gets it as the next packet, so c's never came.
        pa.put_packet(b"marker").unwrap();
        assert_eq!(next_packet(&mut pb).await.3, b"marker".to_vec());
        assert_eq!(pb.available_packet_count(), 0);

        // A target that is no member is refused; nothing is sent.
        pa.set_target_peer(9999);
        assert_eq!(pa.put_packet(b"x").unwrap_err().code, ErrorCode::NotFound);

        // A member joining later is announced to the peers already polling.
        let (mut d, d_id, _dd) = player(&server, &url, "peer-relay-d").await;
        let id = d.client.multiplayer().join_room(room_id.clone());
        d.ok(id).await;
        let d_peer_id = room_peer_id(&d, &room_id, &d_id);
        let mut events = Vec::new();
        poll_until(&mut pb, &mut events, |_, e| {
            e.contains(&PeerEvent::PeerConnected(d_peer_id))
        })
        .await;
        let id = d.client.multiplayer().leave_room(None);
        d.ok(id).await;
        poll_until(&mut pb, &mut events, |_, e| {
            e.contains(&PeerEvent::PeerDisconnected(d_peer_id))
        })
        .await;
        assert_eq!(pb.connection_status(), ConnectionStatus::Connected);

        drop((pa, pb, pc));
        drop((a, b, c, d, outsider));
        server.finish().await;
    }
}

#[tokio::test]
async fn the_host_leaving_closes_every_peer_and_a_new_peer_makes_the_new_host_peer_one() {
    for backend in backends() {
        let server = RealServer::start_on(backend, |_| {}).await;
        let url = server.url.clone();
        let (mut a, _a_id, _da) = player(&server, &url, "peer-mig-a").await;
        let (mut b, b_id, _db) = player(&server, &url, "peer-mig-b").await;
        let (mut c, c_id, _dc) = player(&server, &url, "peer-mig-c").await;
        let room_id = room_with(&mut a, &mut [&mut b, &mut c]).await;
        let c_peer_id = room_peer_id(&c, &room_id, &c_id);
        for p in [&a, &b, &c] {
            wait_members(p, &room_id, 3).await;
        }
        let _pa = a.client.multiplayer().create_peer(None).unwrap();
        let mut pb = b.client.multiplayer().create_peer(None).unwrap();
        let mut pc = c.client.multiplayer().create_peer(None).unwrap();

        let id = a.client.multiplayer().leave_room(None);
        a.ok(id).await;
        for peer in [&mut pb, &mut pc] {
            let mut events = Vec::new();
            poll_until(peer, &mut events, |p, _| {
                p.connection_status() == ConnectionStatus::Disconnected
            })
            .await;
            // Godot hears every peer go, the host first, then `server_disconnected`.
            assert_eq!(events.first(), Some(&PeerEvent::PeerConnected(1)));
            let gone: Vec<_> = events
                .iter()
                .filter(|e| matches!(e, PeerEvent::PeerDisconnected(_)))
                .collect();
            assert_eq!(gone.first(), Some(&&PeerEvent::PeerDisconnected(1)));
            assert_eq!(gone.len(), 2, "the host and the other guest: {events:?}");
            assert_eq!(peer.close_reason(), Some("host_left"));
            assert_eq!(
                peer.put_packet(b"x").unwrap_err().code,
                ErrorCode::Unavailable
            );
        }

        // The room lives on with b (the longest present) as host: in new peers b is peer 1.
        assert_eq!(
            b.signal(MP, "host_changed").await[1],
            Value::String(b_id.clone())
        );
        c.signal(MP, "host_changed").await;
        let mut pb = b.client.multiplayer().create_peer(None).unwrap();
        let mut pc = c.client.multiplayer().create_peer(None).unwrap();
        assert_eq!((pb.unique_id(), pb.is_server()), (1, true));
        assert_eq!((pc.unique_id(), pc.peer_id_of(&b_id)), (c_peer_id, Some(1)));
        pc.set_target_peer(1);
        pc.put_packet(b"new host").unwrap();
        assert_eq!(
            next_packet(&mut pb).await,
            (c_peer_id, 0, TransferMode::Reliable, b"new host".to_vec())
        );
        drop((pb, pc));
        drop((a, b, c));
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
