//! P2P transport of the SDK's `MultiplayerPeer` over loopback: two clients signal through the real
//! server and open WebRTC data channels (host candidates), then through a real coturn with the
//! TURN credentials the server issued (relay-only ICE), and expired credentials are refused by
//! coturn; when ICE cannot connect the members fall back to the socket relay, unseen by the game.
//!
//! The coturn tests need Debian's `coturn` package (`.ci/run` installs it) and skip with a note
//! without it. Signaling and links are in memory on the server: SQLite only.

mod common;

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aethex_sdk::{
    LinkPath, MultiplayerPeer, P2pConfig, PeerEvent, PeerTransport, TransferMode, Value,
};
use common::*;
use tokio::io::{AsyncBufReadExt, BufReader};

const MP: &str = "multiplayer";
const SECRET: &str = "p2p-test-secret";

/// TURN attempts get long enough for ICE, DTLS and SCTP through coturn on a busy 2-core machine.
const TURN_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts meant to fail are cut short.
const FAILING_TURN_TIMEOUT: Duration = Duration::from_secs(3);

fn p2p_config(relay_only_ice: bool, turn_timeout: Duration) -> P2pConfig {
    P2pConfig {
        mesh_size: 8,
        direct_timeout: Duration::from_secs(10),
        turn_timeout,
        relay_only_ice,
        // Loopback: what two clients on one machine reach each other on (the default binds
        // every interface but loopback).
        bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
    }
}

async fn p2p_player(
    server: &RealServer,
    device: &str,
    p2p: P2pConfig,
    dir: &Path,
) -> (Probe, String) {
    let mut config = test_config(&server.url, &server.client_key, dir);
    config.realtime.p2p = p2p;
    let mut probe = Probe::new(config);
    let signed_in = probe.login_device(device).await;
    (probe, user_id(&signed_in))
}

/// Two P2P peers of one room, each polled until it sees the other connected; with the
/// `peer_connection_changed` that settled each side.
struct Pair {
    a: Probe,
    b: Probe,
    a_id: String,
    b_id: String,
    pa: MultiplayerPeer,
    pb: MultiplayerPeer,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn pair(server: &RealServer, tag: &str, p2p: P2pConfig) -> Pair {
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut a, a_id) = p2p_player(server, &format!("{tag}-a"), p2p, dirs.0.path()).await;
    let (mut b, b_id) = p2p_player(server, &format!("{tag}-b"), p2p, dirs.1.path()).await;
    let room_id = room_with(&mut a, &mut [&mut b]).await;
    // b joined last: it knows a; a learns of b through `player_joined`.
    let pb = b
        .client
        .multiplayer()
        .create_peer_with(Some(room_id.clone()), PeerTransport::P2p)
        .unwrap();
    a.signal(MP, "player_joined").await;
    let pa = a
        .client
        .multiplayer()
        .create_peer_with(Some(room_id), PeerTransport::P2p)
        .unwrap();
    Pair {
        a,
        b,
        a_id,
        b_id,
        pa,
        pb,
        _dirs: dirs,
    }
}

/// Polls both peers until each reported the other connected.
async fn until_connected(p: &mut Pair) {
    let mut events = Vec::new();
    poll_until(&mut p.pa, &mut events, |_, e| !e.is_empty()).await;
    assert_eq!(
        events,
        vec![PeerEvent::PeerConnected(p.pa.peer_id_of(&p.b_id).unwrap())]
    );
    let mut events = Vec::new();
    poll_until(&mut p.pb, &mut events, |_, e| !e.is_empty()).await;
    assert_eq!(events, vec![PeerEvent::PeerConnected(1)]);
}

/// The `peer_connection_changed` signals of `probe` about `user` (those about other members are
/// passed over), until one says `connected`: `(state, path, rtt_ms)` each.
async fn settled(probe: &mut Probe, user: &str) -> Vec<(String, String, f64)> {
    let mut seen = Vec::new();
    loop {
        let args = probe.signal(MP, "peer_connection_changed").await;
        let (Value::String(who), Value::String(state), Value::String(path), Value::Float(rtt)) =
            (&args[0], &args[1], &args[2], &args[3])
        else {
            panic!("unexpected arguments {args:?}");
        };
        if who != user {
            continue;
        }
        seen.push((state.clone(), path.clone(), *rtt));
        if state == "connected" {
            return seen;
        }
    }
}

/// Sends one packet each way in each mode and checks it arrives with its mode and channel.
async fn exchange(p: &mut Pair) {
    let b_peer = p.pa.peer_id_of(&p.b_id).unwrap();
    for (mode, channel) in [
        (TransferMode::Reliable, 0),
        (TransferMode::Unreliable, 2),
        (TransferMode::UnreliableOrdered, 3),
    ] {
        let body = format!("a->b {mode:?}").into_bytes();
        p.pa.set_transfer_mode(mode);
        p.pa.set_transfer_channel(channel);
        p.pa.put_packet(&body).unwrap();
        assert_eq!(next_packet(&mut p.pb).await, (1, channel, mode, body));
        let body = format!("b->a {mode:?}").into_bytes();
        p.pb.set_transfer_mode(mode);
        p.pb.set_transfer_channel(channel);
        p.pb.set_target_peer(1);
        p.pb.put_packet(&body).unwrap();
        assert_eq!(next_packet(&mut p.pa).await, (b_peer, channel, mode, body));
    }
}

#[tokio::test]
async fn two_clients_exchange_packets_over_direct_data_channels() {
    let mut server = RealServer::start().await;
    let mut p = pair(&server, "p2p-direct", p2p_config(false, TURN_TIMEOUT)).await;
    let (a_id, b_id) = (p.a_id.clone(), p.b_id.clone());
    let a_seen = settled(&mut p.a, &b_id).await;
    assert_eq!(
        a_seen.last().map(|s| (s.0.as_str(), s.1.as_str())),
        Some(("connected", "direct")),
        "{a_seen:?}"
    );
    let b_seen = settled(&mut p.b, &a_id).await;
    assert_eq!(b_seen.last().unwrap().1, "direct", "{b_seen:?}");
    until_connected(&mut p).await;
    let link = p.pa.link_status(p.pa.peer_id_of(&b_id).unwrap()).unwrap();
    assert_eq!((link.state, link.path), ("connected", LinkPath::Direct));
    exchange(&mut p).await;

    // The round trip is measured over the data channel.
    let end = Instant::now() + DEADLINE;
    loop {
        let rtt = p.a.signal(MP, "peer_connection_changed").await;
        if let Value::Float(ms) = rtt[3] {
            if ms >= 0.0 {
                assert!(ms < 2000.0, "loopback round trip of {ms} ms");
                break;
            }
        }
        assert!(Instant::now() < end, "no round trip measured");
    }

    // With the server gone the links still carry every mode: nothing went through the relay.
    server.stop().await;
    exchange(&mut p).await;

    drop(p);
    server.finish().await;
}

#[tokio::test]
async fn without_a_working_ice_path_the_members_fall_back_to_the_socket_relay() {
    // Relay-only ICE towards a TURN server that does not answer (a closed loopback port): no
    // candidate pair can form, so after the TURN attempt's timeout both sides use the relay.
    let closed_port = free_udp_port();
    let server = RealServer::start_with(move |config| {
        config.ice.turn_urls = vec![format!("turn:127.0.0.1:{closed_port}?transport=udp")];
        config.ice.turn_secret = Some(SECRET.into());
    })
    .await;
    let started = Instant::now();
    let mut p = pair(
        &server,
        "p2p-blocked",
        p2p_config(true, FAILING_TURN_TIMEOUT),
    )
    .await;
    let b_id = p.b_id.clone();
    let a_id = p.a_id.clone();
    let a_seen = settled(&mut p.a, &b_id).await;
    let b_seen = settled(&mut p.b, &a_id).await;
    // The offerer (the lower user id) tried TURN, the other answered its offer, both gave up.
    for seen in [&a_seen, &b_seen] {
        assert_eq!(
            seen,
            &vec![
                ("connecting".to_owned(), "turn".to_owned(), -1.0),
                ("connected".to_owned(), "relay".to_owned(), -1.0)
            ]
        );
    }
    assert!(
        started.elapsed() >= FAILING_TURN_TIMEOUT,
        "the relay came before the TURN attempt timed out"
    );
    until_connected(&mut p).await;
    // Invisible to the game: the same packets, modes and channels, through the server.
    exchange(&mut p).await;
    let link = p.pb.link_status(1).unwrap();
    assert_eq!(link.path, LinkPath::Relay);
    drop(p);
    server.finish().await;
}

#[tokio::test]
async fn larger_rooms_than_the_mesh_stay_on_the_relay() {
    let server = RealServer::start().await;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut probes = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        let mut config = test_config(&server.url, &server.client_key, dir.path());
        config.realtime.p2p = P2pConfig {
            mesh_size: 2,
            ..p2p_config(false, TURN_TIMEOUT)
        };
        let mut probe = Probe::new(config);
        let id = user_id(&probe.login_device(&format!("p2p-mesh-{i}")).await);
        probes.push((probe, id));
    }
    let [(host, host_id), (second, _), (third, _)] = &mut probes[..] else {
        unreachable!()
    };
    let room_id = room_with(host, &mut [second, &mut *third]).await;
    let mut peer = third
        .client
        .multiplayer()
        .create_peer_with(Some(room_id), PeerTransport::P2p)
        .unwrap();
    // Three members, a mesh of two: no WebRTC attempt, the relay at once.
    let seen = settled(third, host_id).await;
    assert_eq!(seen, vec![("connected".into(), "relay".into(), -1.0)]);
    let events = peer_events(&mut peer, 2).await;
    assert!(events.contains(&PeerEvent::PeerConnected(1)), "{events:?}");
    drop(peer);
    drop(probes);
    server.finish().await;
}

/// A UDP port free on loopback right now.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// coturn on loopback with the shared secret, its log collected; killed when dropped.
struct Coturn {
    child: tokio::process::Child,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Coturn {
    /// `None` (with a note) when coturn is not installed.
    async fn start() -> Option<Self> {
        let Ok(path) = which("turnserver") else {
            println!("skipped: coturn's `turnserver` is not installed (apt-get install coturn)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = free_udp_port();
        let relay_low = free_udp_port().clamp(20000, 60000);
        let mut child = tokio::process::Command::new(path)
            .args([
                "-n",
                "--listening-ip=127.0.0.1",
                "--relay-ip=127.0.0.1",
                &format!("--listening-port={port}"),
                &format!("--min-port={relay_low}"),
                &format!("--max-port={}", relay_low + 200),
                "--use-auth-secret",
                &format!("--static-auth-secret={SECRET}"),
                "--realm=aethex.test",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                // The clients' relayed peers are the other allocation, on loopback.
                "--allow-loopback-peers",
                "--log-file=stdout",
                "--simple-log",
                // Logs each request, which the test reads (allocations, refusals).
                "-v",
            ])
            .arg(format!("--pidfile={}", dir.path().join("pid").display()))
            .arg(format!("--userdb={}", dir.path().join("turndb").display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("turnserver starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let collected = log.clone();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("Total auth threads")
                    || line.contains("relay ports initialization done")
                {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
                collected.lock().unwrap().push(line);
            }
        });
        // Ready once it logged its startup; a little more for the listener to bind.
        let _ = tokio::time::timeout(Duration::from_secs(10), ready_rx).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        Some(Self {
            child,
            port,
            log,
            _dir: dir,
        })
    }

    fn lines_about(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|candidate| candidate.is_file())
        })
        .ok_or(())
}

#[tokio::test]
async fn relay_only_clients_exchange_through_coturn_with_server_issued_credentials() {
    let Some(turn) = Coturn::start().await else {
        return;
    };
    let port = turn.port;
    let server = RealServer::start_with(move |config| {
        config.ice.turn_urls = vec![format!("turn:127.0.0.1:{port}?transport=udp")];
        config.ice.turn_secret = Some(SECRET.into());
        config.ice.turn_credential_ttl_secs = 600;
    })
    .await;
    let mut p = pair(&server, "p2p-turn", p2p_config(true, TURN_TIMEOUT)).await;
    let (a_id, b_id) = (p.a_id.clone(), p.b_id.clone());
    let a_seen = settled(&mut p.a, &b_id).await;
    let b_seen = settled(&mut p.b, &a_id).await;
    let log = || turn.lines_about("session");
    assert_eq!(a_seen.last().unwrap().1, "turn", "{a_seen:?}\n{:#?}", log());
    assert_eq!(b_seen.last().unwrap().1, "turn", "{b_seen:?}\n{:#?}", log());
    until_connected(&mut p).await;
    exchange(&mut p).await;
    // coturn allocated for both players, under the usernames the server issued.
    for user in [&a_id, &b_id] {
        let allocated = turn
            .lines_about(&format!(":{user}>"))
            .into_iter()
            .any(|l| l.contains("ALLOCATE processed, success"));
        assert!(allocated, "no allocation for {user}: {:#?}", log());
    }
    drop(p);

    // Credentials past their expiry (issued by a server whose clock is two TTLs behind):
    // coturn refuses them, and the clients end up on the socket relay.
    server.clock.advance_ms(-1_200_000);
    let mut late = pair(
        &server,
        "p2p-expired",
        p2p_config(true, FAILING_TURN_TIMEOUT),
    )
    .await;
    let (c_id, d_id) = (late.a_id.clone(), late.b_id.clone());
    assert_eq!(settled(&mut late.a, &d_id).await.last().unwrap().1, "relay");
    assert_eq!(settled(&mut late.b, &c_id).await.last().unwrap().1, "relay");
    until_connected(&mut late).await;
    exchange(&mut late).await;
    for user in [&c_id, &d_id] {
        let lines = turn.lines_about(&format!(":{user}>"));
        assert!(
            lines.iter().any(|l| l.contains("401")),
            "coturn did not refuse {user}: {lines:#?}"
        );
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("ALLOCATE processed, success")),
            "coturn accepted expired credentials of {user}: {lines:#?}"
        );
    }
    drop(late);
    server.finish().await;
    turn.stop().await;
}
