//! Presence from the realtime socket and friend-list pushes, over real loopback sockets on every
//! backend: `online` with a socket, `in_match` with a room seat, `offline` when the last socket
//! is gone; friends are told, `GET /api/v1/friends` agrees, friend actions push
//! `friends_updated`.

mod common;

use common::socket::{Endpoint, Player, Socket};
use common::{backends, TestServer};
use reqwest::Method;

fn endpoint(s: &TestServer) -> Endpoint {
    Endpoint::new(s.base.clone(), s.client_key.clone())
}

/// Waits until the server has ended the player's sockets (and started the grace period of their
/// seats on its clock), so a clock moved afterwards ends it.
async fn wait_released(s: &TestServer, player: &Player) {
    let project = s.state.projects.by_name("default").await.unwrap().unwrap();
    for _ in 0..500 {
        if !s.state.realtime.users.is_online(&project.id, &player.id) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the server never saw the socket close");
}

/// Makes `a` and `b` friends while `b` is connected (`b` went online before it had friends, so
/// no late push of its own status can reach `a`'s sockets opened afterwards).
async fn befriend(e: &Endpoint, a: &Player, b: &Player, b_socket: &mut Socket) {
    e.befriend(a, b).await;
    b_socket.recv_type("friends_updated").await;
    b_socket.recv_type("friends_updated").await;
}

#[tokio::test]
async fn friends_see_online_in_match_and_offline() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let e = endpoint(&s);
        let (a, b, stranger) = (
            e.device_player().await,
            e.device_player().await,
            e.device_player().await,
        );
        let mut b_socket = e.socket(&b).await;
        let mut stranger_socket = e.socket(&stranger).await;
        befriend(&e, &a, &b, &mut b_socket).await;

        let mut a_socket = e.socket(&a).await;
        assert_eq!(b_socket.presence_changed(&a.id).await, "online");
        assert_eq!(e.presence_of(&b, &a).await, "online");

        let room = a_socket.create_room().await;
        assert_eq!(b_socket.presence_changed(&a.id).await, "in_match");
        assert_eq!(e.presence_of(&b, &a).await, "in_match");

        a_socket.leave_room(&room).await;
        assert_eq!(b_socket.presence_changed(&a.id).await, "online");

        // A socket closed while seated keeps its seat away for the resume grace period: still
        // in_match (no flapping on a short drop), offline once the grace period is over.
        a_socket.create_room().await;
        assert_eq!(b_socket.presence_changed(&a.id).await, "in_match");
        a_socket.close().await;
        wait_released(&s, &a).await;
        b_socket.nothing_pending().await;
        assert_eq!(e.presence_of(&b, &a).await, "in_match");
        s.clock
            .advance_ms(s.state.config.realtime.resume_grace_secs as i64 * 1000 + 1000);
        assert_eq!(b_socket.presence_changed(&a.id).await, "offline");
        assert_eq!(e.presence_of(&b, &a).await, "offline");

        // Without a seat, closing the last socket is offline at once.
        let a_socket = e.socket(&a).await;
        assert_eq!(b_socket.presence_changed(&a.id).await, "online");
        a_socket.close().await;
        assert_eq!(b_socket.presence_changed(&a.id).await, "offline");

        // Only friends are told; B's view of A is up to date, so the stranger had its chance.
        stranger_socket.nothing_pending().await;
        b_socket.nothing_pending().await;
        s.stop().await;
    }
}

#[tokio::test]
async fn a_player_on_two_devices_is_online_until_both_are_gone() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let e = endpoint(&s);
        let (a, b) = (e.device_player().await, e.device_player().await);
        let mut b_socket = e.socket(&b).await;
        befriend(&e, &a, &b, &mut b_socket).await;
        let phone = e.socket(&a).await;
        assert_eq!(b_socket.presence_changed(&a.id).await, "online");
        let mut laptop = e.socket(&a).await;
        phone.close().await;
        // The laptop's pong comes after anything the phone's close queued for B.
        laptop.nothing_pending().await;
        b_socket.nothing_pending().await;
        assert_eq!(e.presence_of(&b, &a).await, "online");
        laptop.close().await;
        assert_eq!(b_socket.presence_changed(&a.id).await, "offline");
        s.stop().await;
    }
}

#[tokio::test]
async fn friend_actions_push_friends_updated_to_both_players() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let e = endpoint(&s);
        let (a, b) = (e.device_player().await, e.device_player().await);
        let mut a_socket = e.socket(&a).await;
        let mut b_socket = e.socket(&b).await;
        for (actor, other, action, state) in [
            (&a, &b, "request", "sent"),
            (&b, &a, "decline", "null"),
            (&a, &b, "request", "sent"),
            (&b, &a, "accept", "friend"),
            (&a, &b, "remove", "null"),
            (&a, &b, "block", "blocked"),
            (&a, &b, "unblock", "null"),
        ] {
            assert_eq!(
                e.friend_action(actor, other, action).await.to_string(),
                if state == "null" {
                    state.to_owned()
                } else {
                    format!("\"{state}\"")
                },
                "{action}"
            );
            a_socket.recv_type("friends_updated").await;
            b_socket.recv_type("friends_updated").await;
        }
        // Asking again for what is already asked changes nothing and pushes nothing.
        e.friend_action(&a, &b, "request").await;
        a_socket.recv_type("friends_updated").await;
        b_socket.recv_type("friends_updated").await;
        e.friend_action(&a, &b, "request").await;
        a_socket.nothing_pending().await;
        b_socket.nothing_pending().await;
        s.stop().await;
    }
}

#[tokio::test]
async fn new_friends_read_each_others_socket_presence() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let e = endpoint(&s);
        let (a, b) = (e.device_player().await, e.device_player().await);
        let mut a_socket = e.socket(&a).await;
        a_socket.create_room().await;
        e.befriend(&a, &b).await;
        // Friends from now on: the list shows what A's socket says, and the heartbeat's own
        // flag does not override it.
        assert_eq!(e.presence_of(&b, &a).await, "in_match");
        let resp = e
            .player(Method::POST, "/api/v1/friends/heartbeat", &a)
            .json(&serde_json::json!({"in_match": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
        assert_eq!(e.presence_of(&b, &a).await, "in_match");
        a_socket.close().await;
        wait_released(&s, &a).await;
        s.clock
            .advance_ms(s.state.config.realtime.resume_grace_secs as i64 * 1000 + 1000);
        // The grace period ends in the server's own time; B's list follows without a push to B.
        let mut offline = false;
        for _ in 0..100 {
            if e.presence_of(&b, &a).await == "offline" {
                offline = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(offline, "A never showed offline after closing its socket");
        s.stop().await;
    }
}
