//! The SDK's realtime client against the real server on loopback, several clients at once, on
//! SQLite and (with `AETHEX_TEST_DATABASE_URL`) PostgreSQL: rooms, state relay with Godot types,
//! targeted sends, host migration, token refresh on a live socket, reconnect after a drop.

mod common;

use std::f64::consts::FRAC_1_SQRT_2;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aethex_protocol::ErrorCode;
use aethex_sdk::{
    ConnectionState, ConnectionStatus, PeerEvent, RealtimeEncoding, TransferMode, Value,
};
use common::*;
use tokio::net::{TcpListener, TcpStream};

const MP: &str = "multiplayer";

fn member_ids(room: &Value) -> Vec<String> {
    list(room, "members")
        .iter()
        .map(|m| string(m, "user_id"))
        .collect()
}

/// A state with Godot types, keys sorted (the server's JSON map sorts object keys).
fn godot_state(health: i64) -> Value {
    Value::dict([
        ("color", Value::Color([0.25, 0.5, 0.75, 1.0])),
        ("health", Value::Int(health)),
        (
            "path",
            Value::PackedVector3Array(vec![[1.0, 2.0, 3.0], [-4.5, 0.0, 1e-3]]),
        ),
        ("position", Value::Vector2([12.5, -3.25])),
        (
            "rotation",
            Value::Quaternion([0.0, FRAC_1_SQRT_2, 0.0, FRAC_1_SQRT_2]),
        ),
        (
            "transform",
            Value::Transform3D([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 5.0, 6.0, 7.0]),
        ),
    ])
}

/// Waits for the next `player_state_received` and returns `(player_id, state)`.
async fn next_state(p: &mut Probe) -> (String, Value) {
    let args = p.signal(MP, "player_state_received").await;
    let Value::String(from) = &args[0] else {
        panic!("player id is {:?}", args[0])
    };
    (from.clone(), args[1].clone())
}

#[tokio::test]
async fn rooms_are_created_joined_listed_and_left_with_signals() {
    for backend in backends() {
        let server = RealServer::start_on(backend, |_| {}).await;
        let url = server.url.clone();
        let (mut a, a_id, _da) = player(&server, &url, "rt-rooms-a").await;
        let (mut b, b_id, _db) = player(&server, &url, "rt-rooms-b").await;
        assert_eq!(
            a.client.multiplayer().connection_state(),
            ConnectionState::Disconnected,
            "the socket opens on demand"
        );

        let props = Value::dict([
            ("labels", Value::Array(vec![text("ranked")])),
            ("max_players", Value::Int(4)),
            ("metadata", Value::dict([("map", text("dust"))])),
        ]);
        let id = a.client.multiplayer().create_room(props);
        let room = a.ok(id).await;
        let room_id = string(&room, "room_id");
        assert_eq!(string(&room, "host"), a_id);
        assert_eq!(member_ids(&room), vec![a_id.clone()]);
        assert_eq!(a.signal(MP, "room_joined").await, vec![room.clone()]);
        assert_eq!(
            a.take_signals(MP, "connection_state_changed"),
            vec![vec![text("connecting")], vec![text("connected")]]
        );
        assert_eq!(
            a.client.multiplayer().current_room().as_deref(),
            Some(room_id.as_str())
        );

        let id = b.client.multiplayer().list_rooms(Some("ranked".into()));
        let rooms = list(&b.ok(id).await, "rooms");
        assert_eq!(rooms.len(), 1);
        assert_eq!(string(&rooms[0], "room_id"), room_id);
        assert_eq!(
            rooms[0].get("metadata"),
            Some(&Value::dict([("map", text("dust"))]))
        );
        let id = b.client.multiplayer().list_rooms(Some("casual".into()));
        assert!(list(&b.ok(id).await, "rooms").is_empty());

        let id = b.client.multiplayer().join_room(room_id.clone());
        let joined = b.ok(id).await;
        assert_eq!(member_ids(&joined), vec![a_id.clone(), b_id.clone()]);
        let args = a.signal(MP, "player_joined").await;
        assert_eq!(args[0], text(&room_id));
        assert_eq!(string(&args[1], "user_id"), b_id);
        assert_eq!(
            member_ids(&a.client.multiplayer().room(&room_id).unwrap()),
            vec![a_id.clone(), b_id.clone()],
            "the local view follows membership events"
        );

        // Private rooms: joined with their code only.
        let id = a
            .client
            .multiplayer()
            .create_room(Value::dict([("private", Value::Bool(true))]));
        let private = a.ok(id).await;
        let code = string(&private, "join_code");
        let private_id = string(&private, "room_id");
        assert_eq!(
            a.client.multiplayer().current_room().as_deref(),
            Some(private_id.as_str()),
            "the room joined last is current"
        );
        let id = b.client.multiplayer().join_room(private_id.clone());
        assert_eq!(b.err(id).await.code, ErrorCode::NotFound);
        let id = b.client.multiplayer().join_room(code.to_lowercase());
        assert_eq!(string(&b.ok(id).await, "room_id"), private_id);

        let id = b.client.multiplayer().leave_room(Some(room_id.clone()));
        assert_eq!(string(&b.ok(id).await, "room_id"), room_id);
        assert_eq!(b.take_signals(MP, "room_left"), vec![vec![text(&room_id)]]);
        let args = a.signal(MP, "player_left").await;
        assert_eq!(args, vec![text(&room_id), text(&b_id)]);
        // Current room: the private room is now b's only room.
        let id = b.client.multiplayer().leave_room(None);
        assert_eq!(string(&b.ok(id).await, "room_id"), private_id);
        let id = b.client.multiplayer().leave_room(None);
        assert_eq!(b.err(id).await.code, ErrorCode::NotFound);
        let id = b.client.multiplayer().send_state(Value::Int(1), None);
        assert_eq!(b.err(id).await.code, ErrorCode::NotFound);

        let id = a
            .client
            .multiplayer()
            .create_room(Value::dict([("bogus", Value::Int(1))]));
        assert_eq!(a.err(id).await.code, ErrorCode::InvalidRequest);
        drop((a, b));
        server.finish().await;
    }
}

#[tokio::test]
async fn state_reaches_the_others_only_with_godot_types_and_targets_are_honoured() {
    for backend in backends() {
        let server = RealServer::start_on(backend, |_| {}).await;
        let url = server.url.clone();
        let (mut a, a_id, _da) = player(&server, &url, "rt-state-a").await;
        let (mut b, b_id, _db) = player(&server, &url, "rt-state-b").await;
        let (mut c, c_id, _dc) = player(&server, &url, "rt-state-c").await;
        let room_id = room_with(&mut a, &mut [&mut b, &mut c]).await;

        let id = a.client.multiplayer().send_state(godot_state(100), None);
        a.ok(id).await;
        for p in [&mut b, &mut c] {
            assert_eq!(next_state(p).await, (a_id.clone(), godot_state(100)));
        }

        // Targeted: only c; then a broadcast from b as a marker everyone else sees after it.
        let id = a
            .client
            .multiplayer()
            .send_state(godot_state(50), Some(vec![c_id.clone()]));
        a.ok(id).await;
        assert_eq!(next_state(&mut c).await, (a_id.clone(), godot_state(50)));
        let id = b.client.multiplayer().send_state(Value::Int(7), None);
        b.ok(id).await;
        assert_eq!(next_state(&mut c).await, (b_id.clone(), Value::Int(7)));
        assert_eq!(next_state(&mut a).await, (b_id.clone(), Value::Int(7)));
        assert!(
            a.take_signals(MP, "player_state_received").is_empty(),
            "the sender never gets its own state"
        );
        assert!(
            b.take_signals(MP, "player_state_received").is_empty(),
            "b was not a target and never hears its own state"
        );

        // Echo on request, to a named room.
        let id =
            a.client
                .multiplayer()
                .send_state_to(room_id.clone(), Value::Bool(true), None, true);
        a.ok(id).await;
        assert_eq!(next_state(&mut a).await, (a_id.clone(), Value::Bool(true)));

        // A refused relay completes at once (written) and reports the refusal as `error`.
        let id =
            a.client
                .multiplayer()
                .send_state_to("no-such-room".into(), Value::Int(1), None, false);
        a.ok(id).await;
        let error = a.signal(MP, "error").await;
        assert_eq!(string(&error[0], "code"), "forbidden");
        drop((a, b, c));
        server.finish().await;
    }
}

#[tokio::test]
async fn the_host_leaving_moves_the_host_and_every_client_hears_it() {
    for backend in backends() {
        let server = RealServer::start_on(backend, |_| {}).await;
        let url = server.url.clone();
        let (mut a, a_id, _da) = player(&server, &url, "rt-host-a").await;
        let (mut b, b_id, _db) = player(&server, &url, "rt-host-b").await;
        let (mut c, _c_id, _dc) = player(&server, &url, "rt-host-c").await;
        let room_id = room_with(&mut a, &mut [&mut b, &mut c]).await;
        let id = a.client.multiplayer().leave_room(None);
        a.ok(id).await;
        for p in [&mut b, &mut c] {
            assert_eq!(
                p.signal(MP, "player_left").await,
                vec![text(&room_id), text(&a_id)]
            );
            assert_eq!(
                p.signal(MP, "host_changed").await,
                vec![text(&room_id), text(&b_id)]
            );
            let room = p.client.multiplayer().room(&room_id).unwrap();
            assert_eq!(string(&room, "host"), b_id);
        }
        drop((a, b, c));
        server.finish().await;
    }
}

#[tokio::test]
async fn an_expired_token_is_refreshed_on_the_live_socket_without_reconnecting() {
    for backend in backends() {
        let server = RealServer::start_on(backend, |_| {}).await;
        let url = server.url.clone();
        let (mut a, _a_id, _da) = player(&server, &url, "rt-token-a").await;
        let id = a.client.multiplayer().create_room(Value::Nil);
        a.ok(id).await;
        a.take_signals(MP, "connection_state_changed");

        // The server's clock passes the socket token's expiry: the next call is refused with
        // `token_expired`, the SDK refreshes the session, sends `refresh_session` on the same
        // socket and sends the call again.
        server.clock.advance_ms(16 * 60 * 1000);
        let id = a.client.multiplayer().list_rooms(None);
        assert_eq!(list(&a.ok(id).await, "rooms").len(), 1);

        // Again, this time the HTTP layer refreshes first (a profile fetch): the socket gets the
        // new token from it.
        server.clock.advance_ms(16 * 60 * 1000);
        let id = a.client.auth().fetch_profile();
        a.ok(id).await;
        let id = a.client.multiplayer().list_rooms(None);
        assert_eq!(list(&a.ok(id).await, "rooms").len(), 1);
        assert!(
            a.take_signals(MP, "connection_state_changed").is_empty(),
            "the socket never dropped"
        );
        assert!(a.take_signals(MP, "room_left").is_empty());
        drop(a);
        server.finish().await;
    }
}

/// A TCP forwarder whose connections the test can cut, as a network failure would.
struct Proxy {
    addr: SocketAddr,
    links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// While set, new connections are closed at once (the server looks down).
    refusing: Arc<AtomicBool>,
    /// Connections closed at once while refusing.
    refused: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let refusing = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicUsize::new(0));
        let accept = {
            let (links, refusing, refused) = (links.clone(), refusing.clone(), refused.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if refusing.load(Ordering::SeqCst) {
                        refused.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    let link = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    links.lock().unwrap().push(link);
                }
            })
        };
        Self {
            addr,
            links,
            refusing,
            refused,
            accept,
        }
    }

    /// Cuts every open connection (both sockets are dropped).
    fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

#[tokio::test]
async fn a_dropped_socket_reconnects_resumes_and_gets_what_it_missed_once() {
    for backend in backends() {
        let server = RealServer::start_on(backend, |_| {}).await;
        let proxy = Proxy::start(server.addr).await;
        let proxied = format!("http://{}", proxy.addr);
        let (mut a, a_id, _da) = player(&server, &proxied, "rt-drop-a").await;
        let (mut b, b_id, _db) = player(&server, &server.url, "rt-drop-b").await;
        let (mut c, c_id, _dc) = player(&server, &server.url, "rt-drop-c").await;
        let id = b.client.multiplayer().create_room(Value::Nil);
        let room_id = string(&b.ok(id).await, "room_id");
        let id = a.client.multiplayer().join_room(room_id.clone());
        a.ok(id).await;
        let id = b.client.multiplayer().send_state(Value::Int(1), None);
        b.ok(id).await;
        assert_eq!(next_state(&mut a).await, (b_id.clone(), Value::Int(1)));
        a.take_signals(MP, "connection_state_changed");

        // The network fails; while `a` cannot reconnect, the room goes on.
        proxy.refusing.store(true, Ordering::SeqCst);
        proxy.cut();
        assert_eq!(
            a.signal(MP, "connection_state_changed").await,
            vec![text("reconnecting")]
        );
        for n in 2..=3 {
            let id = b.client.multiplayer().send_state(godot_state(n), None);
            b.ok(id).await;
        }
        let id = c.client.multiplayer().join_room(room_id.clone());
        c.ok(id).await;
        let id = c.client.multiplayer().send_state(Value::Int(4), None);
        c.ok(id).await;
        proxy.refusing.store(false, Ordering::SeqCst);

        assert_eq!(
            a.signal(MP, "connection_state_changed").await,
            vec![text("connected")]
        );
        // Replayed in order, each once, then live traffic.
        assert_eq!(next_state(&mut a).await, (b_id.clone(), godot_state(2)));
        assert_eq!(next_state(&mut a).await, (b_id.clone(), godot_state(3)));
        let joined = a.signal(MP, "player_joined").await;
        assert_eq!(string(&joined[1], "user_id"), c_id);
        assert_eq!(next_state(&mut a).await, (c_id.clone(), Value::Int(4)));
        let id = b.client.multiplayer().send_state(Value::Int(5), None);
        b.ok(id).await;
        assert_eq!(next_state(&mut a).await, (b_id.clone(), Value::Int(5)));
        assert!(a.take_signals(MP, "player_state_received").is_empty());
        assert!(
            a.take_signals(MP, "room_left").is_empty(),
            "the seat was kept"
        );
        assert!(
            b.take_signals(MP, "player_left").is_empty(),
            "the others never saw `a` leave"
        );
        assert_eq!(
            member_ids(&a.client.multiplayer().room(&room_id).unwrap()),
            vec![b_id.clone(), a_id.clone(), c_id.clone()]
        );
        // The resumed seat relays like before.
        let id = a.client.multiplayer().send_state(godot_state(6), None);
        a.ok(id).await;
        assert_eq!(next_state(&mut b).await, (c_id.clone(), Value::Int(4)));
        assert_eq!(next_state(&mut b).await, (a_id.clone(), godot_state(6)));
        drop((a, b, c, proxy));
        server.finish().await;
    }
}

#[tokio::test]
async fn a_seat_lost_after_the_grace_period_is_room_left() {
    let server = RealServer::start().await;
    let proxy = Proxy::start(server.addr).await;
    let proxied = format!("http://{}", proxy.addr);
    let (mut a, a_id, _da) = player(&server, &proxied, "rt-lost-a").await;
    let (mut b, _b_id, _db) = player(&server, &server.url, "rt-lost-b").await;
    let id = b.client.multiplayer().create_room(Value::Nil);
    let room_id = string(&b.ok(id).await, "room_id");
    let id = a.client.multiplayer().join_room(room_id.clone());
    a.ok(id).await;
    proxy.refusing.store(true, Ordering::SeqCst);
    proxy.cut();
    a.signal(MP, "connection_state_changed").await;
    // The server may see the cut after the client does; its grace period starts then.
    let end = Instant::now() + DEADLINE;
    let left = loop {
        server.clock.advance_ms(31_000);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let left = b.take_signals(MP, "player_left");
        if !left.is_empty() {
            break left;
        }
        assert!(Instant::now() < end, "the grace period never ended");
    };
    assert_eq!(left, vec![vec![text(&room_id), text(&a_id)]]);
    proxy.refusing.store(false, Ordering::SeqCst);
    assert_eq!(a.signal(MP, "room_left").await, vec![text(&room_id)]);
    assert_eq!(a.client.multiplayer().current_room(), None);
    drop((a, b, proxy));
    server.finish().await;
}

#[tokio::test]
async fn calls_made_while_the_server_is_unreachable_wait_then_time_out() {
    let server = RealServer::start().await;
    let proxy = Proxy::start(server.addr).await;
    let proxied = format!("http://{}", proxy.addr);
    let (mut a, _a_id, _da) = player(&server, &proxied, "rt-down-a").await;
    let id = a.client.multiplayer().ping();
    a.ok(id).await;
    a.take_signals(MP, "connection_state_changed");
    proxy.refusing.store(true, Ordering::SeqCst);
    proxy.cut();
    assert_eq!(
        a.signal(MP, "connection_state_changed").await,
        vec![text("reconnecting")]
    );
    let started = Instant::now();
    let id = a.client.multiplayer().list_rooms(None);
    assert_eq!(a.err(id).await.code, ErrorCode::Timeout);
    // The test config's request timeout (5 s), not the reconnect loop, bounds the wait.
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    proxy.refusing.store(false, Ordering::SeqCst);
    let id = a.client.multiplayer().list_rooms(None);
    a.ok(id).await;
    assert_eq!(
        a.take_signals(MP, "connection_state_changed"),
        vec![vec![text("connected")]]
    );
    drop((a, proxy));
    server.finish().await;
}

#[tokio::test]
async fn a_call_made_while_reconnecting_connects_at_once_but_once_per_backoff_step() {
    let server = RealServer::start().await;
    let proxy = Proxy::start(server.addr).await;
    let dir = tempfile::tempdir().unwrap();
    let proxied = format!("http://{}", proxy.addr);
    let mut config = test_config(&proxied, &server.client_key, dir.path());
    // Every backoff step (10 to 20 s) outlasts the request timeout (5 s): only a call's early
    // attempt can reach the server in time.
    config.realtime.reconnect_base_delay = Duration::from_secs(20);
    config.realtime.reconnect_max_delay = Duration::from_secs(20);
    let mut a = Probe::new(config);
    a.login_device("rt-hurry-a").await;
    let id = a.client.multiplayer().ping();
    a.ok(id).await;
    a.take_signals(MP, "connection_state_changed");

    // The network comes back while the socket waits out its backoff: a call connects at once.
    proxy.cut();
    assert_eq!(
        a.signal(MP, "connection_state_changed").await,
        vec![text("reconnecting")]
    );
    let id = a.client.multiplayer().list_rooms(None);
    a.ok(id).await;
    assert_eq!(
        a.take_signals(MP, "connection_state_changed"),
        vec![vec![text("connected")]]
    );

    // Down again: the first call's early attempt is refused; a second call in the same step
    // does not try again (it would reach the server, back by then), so both time out.
    proxy.refusing.store(true, Ordering::SeqCst);
    proxy.cut();
    assert_eq!(
        a.signal(MP, "connection_state_changed").await,
        vec![text("reconnecting")]
    );
    let first = a.client.multiplayer().list_rooms(None);
    let end = Instant::now() + DEADLINE;
    while proxy.refused.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < end, "the call made no early attempt");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    proxy.refusing.store(false, Ordering::SeqCst);
    let second = a.client.multiplayer().list_rooms(None);
    assert_eq!(a.err(second).await.code, ErrorCode::Timeout);
    assert_eq!(a.err(first).await.code, ErrorCode::Timeout);
    assert_eq!(proxy.refused.load(Ordering::SeqCst), 1);
    drop((a, proxy));
    server.finish().await;
}

#[tokio::test]
async fn signing_out_closes_the_socket_and_realtime_calls_need_a_session() {
    let server = RealServer::start().await;
    let url = server.url.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut a = Probe::new(test_config(&url, &server.client_key, dir.path()));
    let id = a.client.multiplayer().ping();
    assert_eq!(a.err(id).await.code, ErrorCode::Unauthorized);
    a.login_device("rt-signout-a").await;
    let id = a.client.multiplayer().create_room(Value::Nil);
    let room_id = string(&a.ok(id).await, "room_id");
    let id = a.client.auth().logout();
    a.ok(id).await;
    assert_eq!(a.signal(MP, "room_left").await, vec![text(&room_id)]);
    let mut states = Vec::new();
    while states.last() != Some(&vec![text("disconnected")]) {
        states.push(a.signal(MP, "connection_state_changed").await);
    }
    let id = a.client.multiplayer().list_rooms(None);
    assert_eq!(a.err(id).await.code, ErrorCode::Unauthorized);
    a.login_device("rt-signout-b").await;
    let id = a.client.multiplayer().list_rooms(None);
    a.ok(id).await;
    drop(a);
    server.finish().await;
}

#[tokio::test]
async fn multiplayer_peers_exchange_packets_through_the_relay() {
    for backend in backends() {
        let server = RealServer::start_on(backend, |_| {}).await;
        let url = server.url.clone();
        let (mut h, h_id, _dh) = player(&server, &url, "rt-peer-h").await;
        let (mut a, a_id, _da) = player(&server, &url, "rt-peer-a").await;
        let (mut b, b_id, _db) = player(&server, &url, "rt-peer-b").await;
        let room_id = room_with(&mut h, &mut [&mut a, &mut b]).await;
        // h's room view holds both once their joins arrived.
        h.signal(MP, "player_joined").await;
        h.signal(MP, "player_joined").await;
        let mut host_peer = h.client.multiplayer().create_peer(None).unwrap();
        // A second peer for the room replaces the first, which closes.
        let mut host_peer_late = h.client.multiplayer().create_peer(None).unwrap();
        let (pa, pb) = (
            host_peer.peer_id_of(&a_id).unwrap(),
            host_peer.peer_id_of(&b_id).unwrap(),
        );
        assert_eq!(
            host_peer.poll(),
            vec![
                PeerEvent::PeerConnected(pa),
                PeerEvent::PeerConnected(pb),
                PeerEvent::PeerDisconnected(pa),
                PeerEvent::PeerDisconnected(pb)
            ]
        );
        assert_eq!(host_peer.close_reason(), Some("replaced"));
        assert_eq!(
            host_peer.connection_status(),
            ConnectionStatus::Disconnected
        );
        drop(host_peer);
        let host = &mut host_peer_late;
        let mut a_peer = a
            .client
            .multiplayer()
            .create_peer(Some(room_id.clone()))
            .unwrap();
        let mut b_peer = b.client.multiplayer().create_peer(None).unwrap();
        assert!(host.is_server() && !a_peer.is_server());
        assert!(!host.is_server_relay_supported());
        let a_peer_id = a_peer.unique_id();
        let b_peer_id = b_peer.unique_id();
        assert_eq!(host.peer_id_of(&a_id), Some(a_peer_id));
        assert_eq!(a_peer.peer_id_of(&h_id), Some(1));
        assert_eq!(b_peer.user_id_of(a_peer_id).as_deref(), Some(a_id.as_str()));
        let mut connected = peer_events(host, 2).await;
        connected.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(
            connected,
            vec![
                PeerEvent::PeerConnected(a_peer_id),
                PeerEvent::PeerConnected(b_peer_id)
            ]
        );
        assert_eq!(
            peer_events(&mut a_peer, 2).await,
            vec![
                PeerEvent::PeerConnected(1),
                PeerEvent::PeerConnected(b_peer_id)
            ]
        );
        peer_events(&mut b_peer, 2).await;

        // Broadcast from the host, reliable on channel 0.
        host.put_packet(b"spawn").unwrap();
        for p in [&mut a_peer, &mut b_peer] {
            assert_eq!(
                next_packet(p).await,
                (1, 0, TransferMode::Reliable, b"spawn".to_vec())
            );
        }
        // a -> b only, unreliable on channel 2.
        a_peer.set_target_peer(b_peer_id);
        a_peer.set_transfer_mode(TransferMode::Unreliable);
        a_peer.set_transfer_channel(2);
        a_peer.put_packet(b"hit").unwrap();
        assert_eq!(
            next_packet(&mut b_peer).await,
            (a_peer_id, 2, TransferMode::Unreliable, b"hit".to_vec())
        );
        // b -> everyone but a (the host only), unreliable ordered.
        b_peer.set_target_peer(-a_peer_id);
        b_peer.set_transfer_mode(TransferMode::UnreliableOrdered);
        for n in 0..3u8 {
            b_peer.put_packet(&[n]).unwrap();
        }
        for n in 0..3u8 {
            assert_eq!(
                next_packet(host).await,
                (b_peer_id, 0, TransferMode::UnreliableOrdered, vec![n])
            );
        }
        // Then a broadcast from b reaches a; nothing else was queued for a.
        b_peer.set_target_peer(0);
        b_peer.put_packet(b"all").unwrap();
        assert_eq!(next_packet(&mut a_peer).await.3, b"all".to_vec());
        assert_eq!(a_peer.available_packet_count(), 0);
        assert!(
            a.take_signals(MP, "packet_received").is_empty(),
            "a peer takes its room's packets"
        );
        a_peer.set_target_peer(99);
        assert_eq!(
            a_peer.put_packet(b"x").unwrap_err().code,
            ErrorCode::NotFound
        );

        // Host migration: the host leaves; every peer loses peer 1 and closes.
        let id = h.client.multiplayer().leave_room(None);
        h.ok(id).await;
        for p in [&mut a_peer, &mut b_peer] {
            let mut events = Vec::new();
            poll_until(p, &mut events, |p, _| {
                p.connection_status() == ConnectionStatus::Disconnected
            })
            .await;
            assert_eq!(events[0], PeerEvent::PeerDisconnected(1));
            assert_eq!(p.close_reason(), Some("host_left"));
        }
        let gone = host.poll();
        assert_eq!(host.close_reason(), Some("room_left"));
        assert_eq!(
            gone.len(),
            2,
            "both members disconnect from the leaving host: {gone:?}"
        );
        // a was the longest-present member: it hosts the new peers as peer 1.
        a.signal(MP, "host_changed").await;
        b.signal(MP, "host_changed").await;
        let mut a_peer = a.client.multiplayer().create_peer(None).unwrap();
        let mut b_peer = b.client.multiplayer().create_peer(None).unwrap();
        assert_eq!((a_peer.unique_id(), b_peer.unique_id()), (1, b_peer_id));
        assert_eq!(
            peer_events(&mut b_peer, 1).await,
            vec![PeerEvent::PeerConnected(1)]
        );
        a_peer.put_packet(b"new host").unwrap();
        assert_eq!(
            next_packet(&mut b_peer).await,
            (1, 0, TransferMode::Reliable, b"new host".to_vec())
        );
        drop((a_peer, b_peer, host_peer_late));
        drop((h, a, b));
        server.finish().await;
    }
}

#[tokio::test]
async fn packets_without_a_peer_are_signals_and_message_pack_carries_everything() {
    let server = RealServer::start().await;
    let url = server.url.clone();
    let (mut a, a_id, _da) = player(&server, &url, "rt-msgpack-a").await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&url, &server.client_key, dir.path());
    config.realtime.encoding = RealtimeEncoding::MessagePack;
    let mut b = Probe::new(config);
    let b_id = user_id(&b.login_device("rt-msgpack-b").await);
    let id = a.client.multiplayer().create_room(Value::Nil);
    let room_id = string(&a.ok(id).await, "room_id");
    let id = b.client.multiplayer().join_room(room_id.clone());
    b.ok(id).await;

    // JSON -> MessagePack and back, state with Godot types and raw bytes.
    let id = a.client.multiplayer().send_state(godot_state(3), None);
    a.ok(id).await;
    assert_eq!(next_state(&mut b).await, (a_id.clone(), godot_state(3)));
    let id = b.client.multiplayer().send_state(godot_state(4), None);
    b.ok(id).await;
    assert_eq!(next_state(&mut a).await, (b_id.clone(), godot_state(4)));
    let bytes: Vec<u8> = (0..=255).collect();
    let id = b
        .client
        .multiplayer()
        .send_packet(None, bytes.clone(), None, 3, false);
    b.ok(id).await;
    assert_eq!(
        a.signal(MP, "packet_received").await,
        vec![
            text(&room_id),
            text(&b_id),
            Value::PackedByteArray(bytes),
            Value::Int(3),
            Value::Bool(false)
        ]
    );
    let id = b.client.multiplayer().list_rooms(None);
    assert_eq!(list(&b.ok(id).await, "rooms").len(), 1);
    drop((a, b));
    server.finish().await;
}
