//! Crash safety: `kill -9` of the real server binary in the middle of a stream of saves loses no
//! acknowledged save and leaves no version without its data, on every backend.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{backends, Backend};
use rand::Rng;
use serde_json::{json, Value};
use sha2::Digest;
use tokio::process::{Child, Command};

const ROUNDS: usize = 4;
const SLOTS: [&str; 2] = ["alpha", "beta"];

/// One acknowledged write: what the server promised to keep.
#[derive(Debug, Clone)]
struct Ack {
    slot: &'static str,
    version: i64,
    data: Value,
    checksum: String,
}

struct RunningServer {
    child: Child,
    base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_server(data_dir: &Path, database_url: Option<&str>) -> RunningServer {
    // The free port can be taken between probing and binding: then the server exits at once and
    // another port is tried.
    for _ in 0..5 {
        let port = free_port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("server.log"))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aethex-server"));
        cmd.arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--config")
            .arg(data_dir.join("aethex.toml"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        if let Some(url) = database_url {
            cmd.arg("--database-url").arg(url);
        }
        let mut child = cmd.spawn().expect("spawn aethex-server");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let http = reqwest::Client::new();
        loop {
            if let Ok(resp) = http.get(format!("{base}/readyz")).send().await {
                if resp.status().is_success() {
                    return RunningServer { child, base };
                }
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "server did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let log = std::fs::read_to_string(data_dir.join("server.log")).unwrap_or_default();
    panic!("aethex-server kept exiting at start; log:\n{log}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes `slot` back to back, each write based on the previous acknowledged version, until the
/// server stops answering.
async fn stream_writes(
    client: Client,
    slot: &'static str,
    mut version: i64,
    round: usize,
    acks: Arc<Mutex<Vec<Ack>>>,
) {
    for seq in 0.. {
        // Sizes from tiny to a few hundred KiB, with incompressible padding, so the kill lands in
        // every phase: request upload, blob write, commit, response.
        let pad_len = match seq % 4 {
            0 => 16,
            1 => 4_000,
            2 => 60_000,
            _ => 300_000,
        };
        let pad: String = {
            let mut rng = rand::thread_rng();
            (0..pad_len / 2)
                .map(|_| format!("{:02x}", rng.gen::<u8>()))
                .collect()
        };
        let data = json!({"round": round, "seq": seq, "pad": pad});
        let sent = client
            .http
            .post(format!("{}/api/v1/saves/me", client.base))
            .header("X-AeThex-Key", &client.key)
            .bearer_auth(&client.token)
            .json(&json!({"slot": slot, "data": data, "base_version": version}))
            .send()
            .await;
        let Ok(resp) = sent else { return };
        let status = resp.status();
        let Ok(body) = resp.json::<Value>().await else {
            return;
        };
        assert_eq!(status, 200, "write failed while the server was up: {body}");
        let checksum = body["checksum"].as_str().unwrap().to_owned();
        assert_eq!(checksum, sha256_hex(&serde_json::to_vec(&data).unwrap()));
        version = body["version"].as_i64().unwrap();
        acks.lock().unwrap().push(Ack {
            slot,
            version,
            data,
            checksum,
        });
    }
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
    token: String,
}

impl Client {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .header("X-AeThex-Key", &self.key)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    async fn get_json(&self, path: &str) -> Value {
        let resp = self.get(path).await;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }
}

/// Checks the restarted server against everything acknowledged so far; returns each slot's
/// current version.
async fn verify(client: &Client, acks: &[Ack]) -> Vec<i64> {
    let mut currents = Vec::new();
    for slot in SLOTS {
        let history = client
            .get_json(&format!("/api/v1/saves/me/history?slot={slot}"))
            .await;
        let visible: Vec<(i64, String)> = history["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["version"].as_i64().unwrap(),
                    v["checksum"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        // Every visible version has a readable blob matching its checksum.
        for (version, checksum) in &visible {
            let body = client
                .get_json(&format!("/api/v1/saves/me/{slot}?version={version}"))
                .await;
            assert_eq!(&body["checksum"], checksum);
            let data = serde_json::to_vec(&body["data"]).unwrap();
            assert_eq!(&sha256_hex(&data), checksum, "{slot} v{version} data");
        }
        // Every acknowledged version is there with its exact data.
        let slot_acks: Vec<&Ack> = acks.iter().filter(|a| a.slot == slot).collect();
        for ack in &slot_acks {
            assert!(
                visible
                    .iter()
                    .any(|(v, c)| *v == ack.version && *c == ack.checksum),
                "acknowledged {slot} v{} is missing after kill -9",
                ack.version
            );
            let body = client
                .get_json(&format!("/api/v1/saves/me/{slot}?version={}", ack.version))
                .await;
            assert_eq!(
                body["data"], ack.data,
                "{slot} v{} data changed",
                ack.version
            );
        }
        let current = client.get_json(&format!("/api/v1/saves/me/{slot}")).await;
        let current_version = current["version"].as_i64().unwrap();
        if let Some(last) = slot_acks.last() {
            assert!(current_version >= last.version);
        }
        currents.push(current_version);
    }
    currents
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_loses_no_acknowledged_save() {
    for backend in backends() {
        let dir = tempfile::tempdir().unwrap();
        // Keep every version so every acknowledged one can be checked.
        std::fs::write(
            dir.path().join("aethex.toml"),
            "[saves]\nhistory_versions = 1000000\n",
        )
        .unwrap();
        let pg = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(common::fresh_pg_schema().await),
        };
        let database_url = pg.as_ref().map(|(url, _)| url.as_str());
        let mut server = start_server(dir.path(), database_url).await;
        let key = std::fs::read_to_string(dir.path().join("default-project-key"))
            .unwrap()
            .trim()
            .to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let auth: Value = http
            .post(format!("{}/api/v1/auth/device", server.base))
            .header("X-AeThex-Key", &key)
            .json(&json!({"device_id": "crash-test-device"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = auth["access_token"].as_str().unwrap().to_owned();

        let mut client = Client {
            http: http.clone(),
            base: server.base.clone(),
            key: key.clone(),
            token,
        };
        let acks = Arc::new(Mutex::new(Vec::new()));
        let mut bases = vec![0i64; SLOTS.len()];
        let mut acked_before = 0;
        for round in 0..ROUNDS {
            let streams: Vec<_> = SLOTS
                .iter()
                .zip(&bases)
                .map(|(slot, base)| {
                    tokio::spawn(stream_writes(
                        client.clone(),
                        slot,
                        *base,
                        round,
                        acks.clone(),
                    ))
                })
                .collect();
            let kill_after = rand::thread_rng().gen_range(300..1500);
            tokio::time::sleep(Duration::from_millis(kill_after)).await;
            server.child.start_kill().expect("SIGKILL");
            server.child.wait().await.unwrap();
            for stream in streams {
                stream.await.unwrap();
            }
            let acked = acks.lock().unwrap().clone();
            assert!(
                acked.len() > acked_before,
                "round {round} acknowledged no write before the kill"
            );
            eprintln!(
                "{backend:?} round {round}: killed after {kill_after} ms, {} writes acknowledged",
                acked.len() - acked_before
            );
            acked_before = acked.len();

            server = start_server(dir.path(), database_url).await;
            client.base = server.base.clone();
            bases = verify(&client, &acked).await;
        }
        server.child.start_kill().unwrap();
        server.child.wait().await.unwrap();
        if let Some((_, schema)) = pg {
            common::drop_pg_schema(&schema).await;
        }
    }
}
