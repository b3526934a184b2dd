//! A client with a live realtime socket and open P2P links leaves no SDK thread after
//! `shutdown_and_wait`, and WebRTC starts none of its own. Its own test binary: it counts the
//! process's threads, which other tests' clients would disturb.

mod common;

use std::time::Duration;

use aethex_sdk::{ConnectionState, P2pConfig, PeerEvent, PeerTransport};
use common::*;

/// Threads of this process named like the SDK runtime's workers (Linux: /proc/self/task).
#[cfg(target_os = "linux")]
fn sdk_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "aethex-sdk")
        .count()
}

/// Threads named like webrtc-rs's dedicated reactors, which would outlive the client.
#[cfg(target_os = "linux")]
fn webrtc_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("webrtc"))
        .count()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn shutdown_ends_the_socket_and_every_thread() {
    let server = RealServer::start().await;
    let before = sdk_threads();
    // Two clients with a P2P link, open on loopback.
    let p2p = P2pConfig {
        bind_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        ..P2pConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config_a = server.config(dir.path());
    config_a.realtime.p2p = p2p;
    let mut a = Probe::new(config_a);
    a.login_device("rt-shutdown-a").await;
    let dir_b = tempfile::tempdir().unwrap();
    let mut config_b = server.config(dir_b.path());
    config_b.realtime.p2p = p2p;
    let mut b = Probe::new(config_b);
    b.login_device("rt-shutdown-b").await;
    let room_id = room_with(&mut a, &mut [&mut b]).await;
    let mut peer_b = b
        .client
        .multiplayer()
        .create_peer_with(Some(room_id), PeerTransport::P2p)
        .unwrap();
    a.signal("multiplayer", "player_joined").await;
    let mut peer = a
        .client
        .multiplayer()
        .create_peer_with(None, PeerTransport::P2p)
        .unwrap();
    assert_eq!(
        peer_events(&mut peer_b, 1).await,
        vec![PeerEvent::PeerConnected(1)]
    );
    let link = peer_b.link_status(1).expect("a P2P link");
    assert_eq!(link.path.as_str(), "direct");
    assert_eq!(
        a.client.multiplayer().connection_state(),
        ConnectionState::Connected
    );
    assert!(sdk_threads() > before);
    for client in [a.client.clone(), b.client.clone()] {
        tokio::task::spawn_blocking(move || client.shutdown_and_wait(Duration::from_secs(5)))
            .await
            .unwrap();
    }
    assert_eq!(
        sdk_threads(),
        before,
        "SDK threads outlived shutdown_and_wait"
    );
    assert_eq!(webrtc_threads(), 0, "WebRTC started threads of its own");
    // Calls after shutdown complete at once with `unavailable`; the peer refuses to send.
    let id = a.client.multiplayer().list_rooms(None);
    assert_eq!(
        a.err(id).await.code,
        aethex_protocol::ErrorCode::Unavailable
    );
    assert!(peer.put_packet(b"x").is_err());
    peer.poll();
    drop((peer_b, b));
    drop(a);
    server.finish().await;
}
