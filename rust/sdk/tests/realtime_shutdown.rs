//! A client with a live realtime socket leaves no SDK thread after `shutdown_and_wait`. Its own
//! test binary: it counts the process's threads, which other tests' clients would disturb.

mod common;

use std::time::Duration;

use aethex_sdk::{ConnectionState, Value};
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

#[cfg(target_os = "linux")]
#[tokio::test]
async fn shutdown_ends_the_socket_and_every_thread() {
    let server = RealServer::start().await;
    let before = sdk_threads();
    let dir = tempfile::tempdir().unwrap();
    let mut a = Probe::new(server.config(dir.path()));
    a.login_device("rt-shutdown-a").await;
    let id = a.client.multiplayer().create_room(Value::Nil);
    a.ok(id).await;
    let mut peer = a.client.multiplayer().create_peer(None).unwrap();
    assert_eq!(
        a.client.multiplayer().connection_state(),
        ConnectionState::Connected
    );
    assert!(sdk_threads() > before);
    let client = a.client.clone();
    tokio::task::spawn_blocking(move || client.shutdown_and_wait(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(
        sdk_threads(),
        before,
        "SDK threads outlived shutdown_and_wait"
    );
    // Calls after shutdown complete at once with `unavailable`; the peer refuses to send.
    let id = a.client.multiplayer().list_rooms(None);
    assert_eq!(
        a.err(id).await.code,
        aethex_protocol::ErrorCode::Unavailable
    );
    assert!(peer.put_packet(b"x").is_err());
    peer.poll();
    drop(a);
    server.finish().await;
}
