//! The `aethex-server` binary as an operator uses it: `--help`, `project create`, first start on
//! an empty data dir, and a project's key working against the running server.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_aethex-server");

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the server on `data_dir` and waits until it prints its listening line.
fn start(data_dir: &std::path::Path, port: u16) -> (Running, Vec<String>) {
    let mut child = Command::new(BIN)
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env_remove("AETHEX_DATABASE_URL")
        .env_remove("AETHEX_BLOB_STORE")
        .env_remove("AETHEX_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Owned by the guard from here on: killed and reaped whatever happens below.
    let running = Running(child);
    let mut lines = BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let line = lines.next().expect("server exited").unwrap();
        let listening = line.contains("listening on");
        seen.push(line);
        if listening {
            return (running, seen);
        }
    }
    panic!("server did not start: {seen:?}");
}

#[test]
fn help_documents_every_setting() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--listen",
        "--data-dir",
        "--database-url",
        "--blob-store",
        "--config",
        "AETHEX_LISTEN",
        "AETHEX_DATA_DIR",
        "AETHEX_DATABASE_URL",
        "AETHEX_BLOB_STORE",
        "project",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[tokio::test]
async fn first_start_and_project_create_give_working_keys() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (server, printed) = start(dir.path(), port);
    let default_key = std::fs::read_to_string(dir.path().join("default-project-key")).unwrap();
    let default_key = default_key.trim().to_owned();
    assert!(
        printed.iter().any(|l| l.contains(&default_key)),
        "first start does not print the default key: {printed:?}"
    );

    // A second project, created while the server runs (another process, same database).
    let out = Command::new(BIN)
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args(["project", "create", "Space Game"])
        .env_remove("AETHEX_DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let key_of = |label: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label} in {text}"))
            .trim()
            .to_owned()
    };
    let client_key = key_of("client key:");
    let server_key = key_of("server key:");
    assert_ne!(client_key, default_key);

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let device = |key: String| {
        http.post(format!("{base}/api/v1/auth/device"))
            .header("X-AeThex-Key", key)
            .json(&serde_json::json!({"device_id": "cli-test-device-1"}))
            .send()
    };
    let in_default: serde_json::Value = device(default_key).await.unwrap().json().await.unwrap();
    let in_new: serde_json::Value = device(client_key).await.unwrap().json().await.unwrap();
    // The same device id is a different player in each game.
    assert_ne!(in_default["user"]["id"], in_new["user"]["id"]);
    assert!(in_new["access_token"].is_string());

    // The new project's server key is accepted for admin access, an invented one is not.
    let admin = |key: &str| {
        http.get(format!(
            "{base}/api/v1/saves/{}",
            in_new["user"]["id"].as_str().unwrap()
        ))
        .header("Authorization", format!("ServerKey {key}"))
        .send()
    };
    assert_eq!(admin(&server_key).await.unwrap().status(), 200);
    assert_eq!(admin("sk_invented").await.unwrap().status(), 401);

    // A duplicate name is refused with a clear message.
    let dup = Command::new(BIN)
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .args(["project", "create", "Space Game"])
        .env_remove("AETHEX_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
    drop(server);
}
