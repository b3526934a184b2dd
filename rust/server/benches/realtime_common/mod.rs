//! Shared by the realtime benches: the server under test as a child process (`aethex-server` on
//! SQLite, or the bare tokio-tungstenite baseline: this bench binary re-executed with
//! `--baseline-server`), its CPU time and memory from /proc, device sign-ins, and WebSocket
//! clients. Children are separate processes so the server's CPU and RSS are its own, not the
//! load generator's.
#![allow(dead_code)] // each bench uses its own part

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// Quick smoke mode: `-- --quick` or `AETHEX_BENCH_QUICK=1`.
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
        || std::env::var("AETHEX_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `--baseline-server`: this process is the baseline server child, not the bench.
pub fn is_baseline_child() -> bool {
    std::env::args().any(|a| a == "--baseline-server")
}

pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Socket buffers of the baseline: the read buffer the server's sockets use (tungstenite's
/// default is 128 KiB), so the comparison is of everything else.
pub fn server_like_ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(aethex_server::realtime::socket::READ_BUFFER_BYTES)
}

/// Client sockets: small buffers, frames written at once.
pub fn client_ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

/// Raises this process's open-file limit (inherited by children spawned after) to `needed`.
/// Root may raise the hard limit too; otherwise the soft limit goes up to the hard one.
pub fn raise_fd_limit(needed: u64) -> u64 {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
    if soft >= needed {
        return soft;
    }
    if rlimit::setrlimit(rlimit::Resource::NOFILE, needed, needed.max(hard)).is_ok() {
        return needed;
    }
    rlimit::increase_nofile_limit(needed).unwrap_or(soft)
}

/// A server under test, killed when dropped.
pub struct ChildServer {
    pub child: Child,
    pub addr: SocketAddr,
    /// Client key (`aethex-server` only).
    pub client_key: String,
    _data_dir: Option<tempfile::TempDir>,
}

impl ChildServer {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Seconds of CPU (user + system, all threads) the process has used.
    pub fn cpu_secs(&self) -> f64 {
        proc_cpu_secs(&format!("/proc/{}/stat", self.pid()))
    }

    /// Resident memory in bytes (VmRSS).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read the child's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS in /proc status")
            * 1024
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds of the process whose `stat` file is `path` (`/proc/self/stat` for this one).
pub fn proc_cpu_secs(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).expect("read /proc stat");
    // The command name may hold spaces; the fields after its closing parenthesis are fixed.
    let after = &stat[stat.rfind(')').expect("stat has (comm)") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after (comm).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// Reads the child's stdout until a line starting with `marker`; answers the rest of that line.
fn wait_for_line(child: &mut Child, marker: &str) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let found = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(rest) = line.strip_prefix(marker) {
                    break rest.trim().to_owned();
                }
            }
            _ => panic!("the server child exited before printing {marker:?}"),
        }
    };
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    found
}

/// Starts `aethex-server` (the release binary cargo built beside this bench) on a fresh SQLite
/// data dir, auth rate limits off (the bench signs in thousands of devices from one address).
pub fn start_aethex_server() -> ChildServer {
    start_aethex_server_on(None)
}

/// `start_aethex_server` on `database_url` instead of SQLite when given.
pub fn start_aethex_server_on(database_url: Option<&str>) -> ChildServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("bench.toml");
    std::fs::write(&config, "[rate_limit]\nenabled = false\n").expect("write the config");
    let mut command = Command::new(env!("CARGO_BIN_EXE_aethex-server"));
    command
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stdin(Stdio::null());
    if let Some(url) = database_url {
        command.arg("--database-url").arg(url);
    }
    let mut child = command.spawn().expect("spawn aethex-server");
    let url = wait_for_line(&mut child, "AeThex Cloud listening on http://");
    let addr: SocketAddr = url.parse().expect("listen address");
    let client_key = std::fs::read_to_string(dir.path().join("data/default-project-key"))
        .expect("the default project's client key")
        .trim()
        .to_owned();
    ChildServer {
        child,
        addr,
        client_key,
        _data_dir: Some(dir),
    }
}

/// Starts this bench binary again as the bare baseline server.
pub fn start_baseline_server() -> ChildServer {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .arg("--baseline-server")
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn the baseline server");
    let addr: SocketAddr = wait_for_line(&mut child, "LISTENING ")
        .parse()
        .expect("listen address");
    ChildServer {
        child,
        addr,
        client_key: String::new(),
        _data_dir: None,
    }
}

/// The baseline: a bare tokio-tungstenite fan-out server. A socket opened at `/room/<n>` joins
/// room `n`; each text frame it sends is forwarded, as is, to the room's other sockets. One task
/// per socket and a bounded queue per socket, like the real server, and nothing else.
pub fn run_baseline_server() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        println!("LISTENING {}", listener.local_addr().unwrap());
        let rooms: Rooms = Arc::default();
        let mut next_id = 0u64;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            next_id += 1;
            tokio::spawn(baseline_socket(stream, next_id, rooms.clone()));
        }
    });
}

type Rooms = Arc<Mutex<HashMap<String, Vec<(u64, mpsc::Sender<Utf8Bytes>)>>>>;

// The handshake callback's `Result` (and its large error type) is tungstenite's signature.
#[allow(clippy::result_large_err)]
async fn baseline_socket(stream: TcpStream, id: u64, rooms: Rooms) {
    let _ = stream.set_nodelay(true);
    let mut path = String::new();
    let accepted = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        |req: &Request, resp: Response| {
            path = req.uri().path().to_owned();
            Ok(resp)
        },
        Some(server_like_ws_config()),
    )
    .await;
    let Ok(mut ws) = accepted else { return };
    let room = path.strip_prefix("/room/").unwrap_or("").to_owned();
    let (tx, mut rx) = mpsc::channel::<Utf8Bytes>(1024);
    rooms
        .lock()
        .unwrap()
        .entry(room.clone())
        .or_default()
        .push((id, tx));
    loop {
        tokio::select! {
            Some(frame) = rx.recv() => if ws.send(Message::Text(frame)).await.is_err() { break },
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    for (member, tx) in rooms.lock().unwrap().get(&room).into_iter().flatten() {
                        if *member != id {
                            let _ = tx.try_send(text.clone());
                        }
                    }
                }
                Some(Ok(_)) => {}
                _ => break,
            },
        }
    }
    if let Some(members) = rooms.lock().unwrap().get_mut(&room) {
        members.retain(|(member, _)| *member != id);
    }
}

/// Signs in `count` new device accounts, `parallel` at a time: their access tokens, in order.
pub async fn sign_in_devices(
    server: &ChildServer,
    prefix: &str,
    count: usize,
    parallel: usize,
) -> Vec<String> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(parallel)
        .build()
        .unwrap();
    let url = format!("http://{}/api/v1/auth/device", server.addr);
    let key = server.client_key.clone();
    futures::stream::iter(0..count)
        .map(|i| {
            let (http, url, key) = (http.clone(), url.clone(), key.clone());
            let device = format!("{prefix}-{i:07}");
            async move {
                let resp = http
                    .post(url)
                    .header("X-AeThex-Key", key)
                    .json(&json!({ "device_id": device }))
                    .send()
                    .await
                    .expect("device sign-in");
                assert!(resp.status().is_success(), "sign-in: {}", resp.status());
                let body: Value = resp.json().await.expect("auth response");
                body["access_token"].as_str().unwrap().to_owned()
            }
        })
        .buffered(parallel)
        .collect()
        .await
}

pub type ClientSocket = WebSocketStream<TcpStream>;

/// Opens one client socket to `addr` at `path` from source address `source` (127.0.0.x: each
/// source address has its own ephemeral port range), with the access token when given.
pub async fn open_socket(
    addr: SocketAddr,
    source: Ipv4Addr,
    path: &str,
    auth: Option<(&str, &str)>,
) -> Result<ClientSocket, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    // The port is then picked at connect time for this destination, so ports in TIME_WAIT from
    // an earlier run (or used towards other destinations) do not run the address out of ports.
    let no_port: libc::c_int = 1;
    // SAFETY: a plain setsockopt with a valid int option on a socket this function owns.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&no_port as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    socket
        .bind(SocketAddr::new(IpAddr::V4(source), 0))
        .map_err(|e| format!("bind {source}: {e}"))?;
    let stream = socket.connect(addr).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let mut req = format!("ws://{addr}{path}")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    if let Some((key, token)) = auth {
        req.headers_mut()
            .insert("X-AeThex-Key", HeaderValue::from_str(key).unwrap());
        req.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
    }
    tokio_tungstenite::client_async_with_config(req, stream, Some(client_ws_config()))
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

/// Source address for the `i`th socket: 127.0.0.2, .3, ... a new one every `per_address`.
pub fn source_address(i: usize, per_address: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (i / per_address) as u8)
}

/// A line about the machine and its load, printed with the figures (2 cores are shared by the
/// load generator, the server and whatever else runs).
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "{cpus} CPUs ({model}), load average before the run {}",
        load.join(" ")
    )
}

/// Sleeps until `deadline`.
pub async fn until(deadline: Instant) {
    tokio::time::sleep_until(deadline.into()).await;
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub const SETTLE: Duration = Duration::from_secs(2);
