//! No thread of the SDK or of its dependencies outlives the library, as Godot needs when it
//! unloads the GDExtension at exit: `dylib-host` loads the probe cdylib, signs in through it with
//! the OS credential store path, unloads it and counts its threads, round after round. The real
//! server runs in this process on loopback; the host is a separate process so that only threads
//! started by the library show up in its count.
//!
//! A private D-Bus session bus (dbus-daemon) runs for the host, so a Secret Service backend gets
//! as far as talking to a bus; no Secret Service answers on it, so the SDK falls back to the file.

#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use aethex_server::{Config, Server};

const ROUNDS: usize = 25;

/// The probe cdylib cargo built next to this test's dependencies.
fn probe_library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let name = "libaethex_sdk_dylib_probe.so";
    [deps.join(name), deps.parent().unwrap().join(name)]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} not built next to {}", deps.display()))
}

/// A session bus of our own; killed on drop.
struct SessionBus {
    daemon: Child,
    address: String,
}

impl SessionBus {
    fn start() -> Self {
        let mut daemon = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (Debian package `dbus-daemon`, installed by .ci/run)");
        let mut address = String::new();
        BufReader::new(daemon.stdout.take().unwrap())
            .read_line(&mut address)
            .unwrap();
        assert!(!address.trim().is_empty(), "dbus-daemon printed no address");
        Self {
            daemon,
            address: address.trim().to_owned(),
        }
    }
}

impl Drop for SessionBus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_leaves_no_thread_behind_when_its_library_is_unloaded() {
    let server_dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: server_dir.path().to_path_buf(),
        ..Config::default()
    };
    config.rate_limit.enabled = false;
    let server = Server::build(config).await.expect("server builds");
    let key = server
        .created_default_project
        .as_ref()
        .expect("first start creates the default project")
        .client_key
        .clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        server
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
    });

    let bus = SessionBus::start();
    let client_dir = tempfile::tempdir().unwrap();
    let mut host = Command::new(env!("CARGO_BIN_EXE_dylib-host"));
    host.arg(probe_library())
        .args([&url, &key])
        .arg(client_dir.path())
        .arg(ROUNDS.to_string())
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address);
    let host = tokio::task::spawn_blocking(move || host.output())
        .await
        .unwrap()
        .expect("dylib-host runs");
    let _ = stop.send(());
    serving.await.unwrap();
    assert!(
        host.status.success(),
        "dylib-host failed ({}):\n{}{}",
        host.status,
        String::from_utf8_lossy(&host.stdout),
        String::from_utf8_lossy(&host.stderr)
    );
    // The keyring path ran and fell back: no Secret Service on the bus, so the token is in the file.
    let token_files = std::fs::read_dir(client_dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("session-") && name.ends_with(".token"))
        .count();
    assert_eq!(
        token_files, 1,
        "the session fell back to the encrypted file"
    );
}
