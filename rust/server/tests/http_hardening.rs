//! Bad input and overload at the HTTP level: NUL bytes, pool exhaustion, the framework's own
//! rejections, keep-alive after early errors, content encodings and decompression bombs. Every
//! answer must be the documented JSON error, never a 500.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::time::{Duration, Instant};

use common::{backends, expect_error, expect_status, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Counts the bytes allocated on the current thread, to measure what one request costs the
/// server: `#[tokio::test]` runs the server's connection tasks on the test's own thread.
struct ThreadCounting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note_alloc(delta: isize) {
    // `try_with`: the thread-locals may be gone while a thread exits.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

unsafe impl GlobalAlloc for ThreadCounting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size() as isize);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_alloc(-(layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc(new_size as isize - layout.size() as isize);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: ThreadCounting = ThreadCounting;

/// Peak bytes allocated on this thread above the level when `f` started.
async fn peak_allocation<F: std::future::Future>(f: F) -> (F::Output, usize) {
    let base = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(base));
    let out = f.await;
    let peak = PEAK.with(|p| p.get());
    (out, (peak - base).max(0) as usize)
}

fn token(auth: &Value) -> &str {
    auth["access_token"].as_str().unwrap()
}

async fn expect_json_error(resp: reqwest::Response, status: StatusCode, code: &str) -> Value {
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = expect_error(resp, status, code).await;
    assert!(
        content_type.starts_with("application/json"),
        "{status} {code} answered as {content_type:?}"
    );
    body
}

#[tokio::test]
async fn nul_bytes_anywhere_are_invalid_request() {
    let mut wrong = Vec::new();
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let player = s.device_player().await;
        let t = token(&player).to_owned();
        let me = player["user"]["id"].as_str().unwrap().to_owned();
        let nul = "a\u{0}b";
        let json_post = |path: &str, body: Value| s.player(Method::POST, path, &t).json(&body);
        let shapes: Vec<(&str, reqwest::RequestBuilder)> = vec![
            (
                "login email",
                s.req(Method::POST, "/api/v1/auth/login")
                    .json(&json!({"email": "a\u{0}b@x.io", "password": "password1"})),
            ),
            (
                "register email",
                s.req(Method::POST, "/api/v1/auth/register").json(
                    &json!({"email": "a\u{0}b@x.io", "password": "password1", "username": "nulltest"}),
                ),
            ),
            (
                "register username",
                s.req(Method::POST, "/api/v1/auth/register").json(
                    &json!({"email": "nul@x.io", "password": "password1", "username": nul}),
                ),
            ),
            (
                "register password",
                s.req(Method::POST, "/api/v1/auth/register").json(
                    &json!({"email": "nul2@x.io", "password": "pass\u{0}word1", "username": "nulltest2"}),
                ),
            ),
            (
                "device id",
                s.req(Method::POST, "/api/v1/auth/device")
                    .json(&json!({"device_id": "device-\u{0}-0001"})),
            ),
            (
                "forgot password email",
                s.req(Method::POST, "/api/v1/auth/password/forgot")
                    .json(&json!({"email": "a\u{0}b@x.io"})),
            ),
            (
                "profile username",
                s.player(Method::PUT, "/api/v1/auth/profile", &t)
                    .json(&json!({"username": nul})),
            ),
            ("save user id", s.admin(Method::GET, "/api/v1/saves/a%00b")),
            (
                "save slot id",
                s.player(Method::GET, "/api/v1/saves/me/a%00b", &t),
            ),
            (
                "save history query",
                s.player(Method::GET, "/api/v1/saves/me/history?slot=a%00b", &t),
            ),
            (
                "friends search",
                s.player(Method::GET, "/api/v1/friends/search?q=%00", &t),
            ),
            (
                "friend request id",
                s.player(Method::POST, "/api/v1/friends/a%00b/request", &t),
            ),
            (
                "group name",
                json_post("/api/v1/groups", json!({"name": nul})),
            ),
            (
                "group search",
                s.player(Method::GET, "/api/v1/groups?q=%00", &t),
            ),
            ("group id", s.player(Method::GET, "/api/v1/groups/a%00b", &t)),
            (
                "achievement name",
                s.admin(Method::PUT, "/api/v1/achievements/ach1")
                    .json(&json!({"name": nul})),
            ),
            (
                "achievement id",
                s.admin(Method::PUT, "/api/v1/achievements/a%00b")
                    .json(&json!({"name": "fine"})),
            ),
            (
                "achievement unlock user",
                s.admin(Method::POST, "/api/v1/achievements/ach1/unlock")
                    .json(&json!({"user_id": nul})),
            ),
            (
                "stats key",
                json_post("/api/v1/stats/me", json!({"increment": {nul: 1}})),
            ),
            (
                "stats user id",
                s.admin(Method::GET, "/api/v1/stats/a%00b"),
            ),
            (
                "leaderboard id",
                s.player(Method::GET, "/api/v1/leaderboards/a%00b", &t),
            ),
            (
                "leaderboard rank user",
                s.player(
                    Method::GET,
                    &format!("/api/v1/leaderboards/a%00b/ranks/{me}"),
                    &t,
                ),
            ),
        ];
        for (what, request) in shapes {
            let resp = request.send().await.unwrap();
            let status = resp.status();
            let body = resp.text().await.unwrap();
            let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if status != StatusCode::BAD_REQUEST || parsed["error"]["code"] != "invalid_request" {
                wrong.push(format!("{backend:?} {what}: {status} {body}"));
            }
        }

        // A literal backslash before `u0000` is not a NUL: an ordinary name.
        let resp = json_post("/api/v1/groups", json!({"name": "back\\u0000slash"}))
            .send()
            .await
            .unwrap();
        let group = expect_status(resp, StatusCode::OK).await;
        assert_eq!(group["name"], "back\\u0000slash");

        // Members the server does not read are ignored, NUL or not (the schema allows them).
        let resp = json_post(
            "/api/v1/groups",
            json!({"name": "ignores junk", "junk\u{0}": {"k\u{0}": nul}}),
        )
        .send()
        .await
        .unwrap();
        expect_status(resp, StatusCode::OK).await;

        // Free-form JSON (save data, metadata) is stored as escaped JSON text: NUL is kept.
        let data = json!({"name": nul, "nested": [{"k\u{0}": "v"}]});
        let metadata = json!({"title": nul});
        let resp = json_post(
            "/api/v1/saves/me",
            json!({"slot": "nul", "data": data, "metadata": metadata}),
        )
        .send()
        .await
        .unwrap();
        expect_status(resp, StatusCode::OK).await;
        let resp = s
            .player(Method::GET, "/api/v1/saves/me/nul", &t)
            .send()
            .await
            .unwrap();
        let loaded = expect_status(resp, StatusCode::OK).await;
        assert_eq!(loaded["data"], data);
        assert_eq!(loaded["metadata"], metadata);
        let preferences = json!({"motto\u{0}": nul});
        let resp = s
            .player(Method::PUT, "/api/v1/auth/profile", &t)
            .json(&json!({"preferences": preferences}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            expect_status(resp, StatusCode::OK).await["preferences"],
            preferences
        );
        s.stop().await;
    }
    assert!(
        wrong.is_empty(),
        "not 400 invalid_request:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test]
async fn pool_exhaustion_is_503_with_retry_after() {
    for backend in backends() {
        let s = TestServer::start_with(backend, |c| {
            c.database.max_connections = 2;
            c.database.acquire_timeout_ms = 300;
        })
        .await;
        let player = s.device_player().await;
        let t = token(&player).to_owned();
        // Hold every pooled connection, as a burst of slow requests would.
        let mut held = Vec::new();
        for pool in [&s.state.db.read, &s.state.db.write] {
            // Ends with the pool's own acquire timeout once every connection is held.
            while let Ok(conn) = pool.acquire().await {
                held.push(conn);
            }
        }
        assert!(!held.is_empty());
        let started = Instant::now();
        let resp = s
            .player(Method::GET, "/api/v1/saves/me", &t)
            .send()
            .await
            .unwrap();
        let waited = started.elapsed();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        expect_json_error(resp, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
        assert!(
            retry_after.is_some_and(|v| v.parse::<u64>().is_ok_and(|n| n >= 1)),
            "{backend:?}: no Retry-After"
        );
        // The configured 300 ms, not sqlx's 30 s default: far below a client's own timeout.
        assert!(
            waited < Duration::from_secs(5),
            "{backend:?}: waited {waited:?}"
        );
        drop(held);
        let resp = s
            .player(Method::GET, "/api/v1/saves/me", &t)
            .send()
            .await
            .unwrap();
        expect_status(resp, StatusCode::OK).await;
        s.stop().await;
    }
}

#[tokio::test]
async fn framework_rejections_are_json_errors() {
    let s = TestServer::start(common::Backend::Sqlite).await;
    let player = s.device_player().await;
    let t = token(&player).to_owned();

    let resp = s
        .player(Method::DELETE, "/api/v1/saves/me/history", &t)
        .send()
        .await
        .unwrap();
    let allow = resp.headers().get("allow").cloned();
    expect_json_error(resp, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    assert!(allow.is_some(), "405 keeps its Allow header");
    let resp = s
        .req(Method::GET, "/api/v1/auth/login")
        .send()
        .await
        .unwrap();
    expect_json_error(resp, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;

    for path in [
        "/api/v1/saves/me/%FF",
        "/api/v1/groups/%FF",
        "/api/v1/stats/%FF",
        "/api/v1/achievements/%FF/unlock",
    ] {
        let method = if path.ends_with("unlock") {
            Method::POST
        } else {
            Method::GET
        };
        let resp = s.player(method, path, &t).send().await.unwrap();
        expect_json_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let resp = s
        .player(Method::GET, "/api/v1/groups?limit=many", &t)
        .send()
        .await
        .unwrap();
    expect_json_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;

    // An encoding the server does not speak, and a body that is not JSON.
    let resp = s
        .req(Method::POST, "/api/v1/auth/device")
        .header("content-type", "application/json")
        .header("content-encoding", "compress")
        .body("whatever")
        .send()
        .await
        .unwrap();
    expect_json_error(
        resp,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let resp = s
        .req(Method::POST, "/api/v1/auth/device")
        .header("content-type", "text/plain")
        .body(r#"{"device_id":"device-0000-0001"}"#)
        .send()
        .await
        .unwrap();
    expect_json_error(
        resp,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    // Corrupt gzip.
    let resp = s
        .req(Method::POST, "/api/v1/auth/device")
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body("not gzip at all")
        .send()
        .await
        .unwrap();
    expect_json_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;

    // Over the body limit, declared or not.
    let big = format!(r#"{{"device_id":"{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let resp = s
        .req(Method::POST, "/api/v1/auth/device")
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    expect_json_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    // JSON syntax and shape.
    for body in ["{\"device_id\": ", "[]", "{\"device_id\": 5}"] {
        let resp = s
            .req(Method::POST, "/api/v1/auth/device")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        expect_json_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
    }
    let resp = s.req(Method::GET, "/nope").send().await.unwrap();
    expect_json_error(resp, StatusCode::NOT_FOUND, "not_found").await;
    s.stop().await;
}

/// One HTTP/1.1 response read off a raw connection: status, lower-cased headers, body.
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (Content-Length bodies only, which is what the server sends uncompressed)
/// from `buf` + `conn`; `None` when the connection ends first.
async fn read_response(
    conn: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<RawResponse>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let status = lines
                .next()
                .unwrap()
                .split(' ')
                .nth(1)
                .unwrap()
                .parse()
                .unwrap();
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let mut chunk = [0u8; 8192];
                let n = conn.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(None);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..end + 4 + len);
            return Ok(Some(RawResponse { status, headers }));
        }
        let mut chunk = [0u8; 8192];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_survives_errors_answered_before_the_body() {
    let s = TestServer::start(common::Backend::Sqlite).await;
    let body = vec![b'x'; 48 * 1024];
    let mut lost = 0;
    let iterations = 300;
    for _ in 0..iterations {
        let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        // The bearer token is rejected (401) before the handler reads the body.
        let mut wire = format!(
            "POST /api/v1/stats/me HTTP/1.1\r\nhost: x\r\nx-aethex-key: {}\r\n\
             authorization: Bearer nope\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            s.client_key,
            body.len()
        )
        .into_bytes();
        wire.extend_from_slice(&body);
        wire.extend_from_slice(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n");
        let mut buf = Vec::new();
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            // A reset while writing is the server giving up on the connection: a loss too.
            if conn.write_all(&wire).await.is_err() {
                return None;
            }
            let first = read_response(&mut conn, &mut buf).await.ok()??;
            assert_eq!(first.status, 401);
            // A body this small is drained: the connection stays open for the next request.
            assert_eq!(first.header("connection"), None);
            let second = read_response(&mut conn, &mut buf).await.ok()??;
            Some(second.status == 200)
        })
        .await;
        if outcome != Ok(Some(true)) {
            lost += 1;
        }
    }
    assert_eq!(
        lost, 0,
        "{lost} of {iterations} second requests got no answer"
    );

    // A body far over every limit is not drained: the answer says the connection closes.
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/stats/me HTTP/1.1\r\nhost: x\r\nx-aethex-key: {}\r\n\
         authorization: Bearer nope\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        s.client_key,
        1u64 << 40
    );
    // Only the head: unread bytes in the server's socket when it closes would reset the
    // connection and could discard the answer before the test reads it.
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let first = tokio::time::timeout(Duration::from_secs(10), read_response(&mut conn, &mut buf))
        .await
        .expect("an answer")
        .unwrap()
        .expect("an answer");
    assert_eq!(first.status, 401);
    assert_eq!(first.header("connection"), Some("close"));

    // A chunked body is drained the same way.
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let mut wire = format!(
        "POST /api/v1/stats/me HTTP/1.1\r\nhost: x\r\nx-aethex-key: {}\r\n\
         authorization: Bearer nope\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n{:x}\r\n",
        s.client_key,
        body.len()
    )
    .into_bytes();
    wire.extend_from_slice(&body);
    wire.extend_from_slice(b"\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nhost: x\r\n\r\n");
    conn.write_all(&wire).await.unwrap();
    let mut buf = Vec::new();
    let (first, second) = tokio::time::timeout(Duration::from_secs(10), async {
        let first = read_response(&mut conn, &mut buf).await.unwrap().unwrap();
        let second = read_response(&mut conn, &mut buf).await.unwrap().unwrap();
        (first.status, second.status)
    })
    .await
    .expect("both answered");
    assert_eq!((first, second), (401, 200));
    s.stop().await;
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(data), &mut out).unwrap();
    out
}

fn brotli_compress(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        enc.write_all(data).unwrap();
    }
    out
}

fn brotli_decompress(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut brotli::Decompressor::new(data, 4096), &mut out).unwrap();
    out
}

#[tokio::test]
async fn gzip_br_and_zstd_each_way() {
    let s = TestServer::start(common::Backend::Sqlite).await;
    let player = s.device_player().await;
    let t = token(&player).to_owned();
    type Codec = fn(&[u8]) -> Vec<u8>;
    let codecs: [(&str, Codec, Codec); 3] = [
        ("gzip", gzip, gunzip),
        ("br", brotli_compress, brotli_decompress),
        (
            "zstd",
            |d| zstd::encode_all(d, 3).unwrap(),
            |d| zstd::decode_all(d).unwrap(),
        ),
    ];
    for (name, compress, decompress) in codecs {
        let data = json!({"level": 7, "name": name, "pad": "y".repeat(4000)});
        let body = serde_json::to_vec(&json!({"slot": name, "data": data})).unwrap();
        let resp = s
            .player(Method::POST, "/api/v1/saves/me", &t)
            .header("content-type", "application/json")
            .header("content-encoding", name)
            .body(compress(&body))
            .send()
            .await
            .unwrap();
        expect_status(resp, StatusCode::OK).await;

        let resp = s
            .player(Method::GET, &format!("/api/v1/saves/me/{name}"), &t)
            .header("accept-encoding", name)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers().get("content-encoding").unwrap(),
            name,
            "answer not in {name}"
        );
        let bytes = resp.bytes().await.unwrap();
        let answer: Value = serde_json::from_slice(&decompress(&bytes)).unwrap();
        assert_eq!(answer["data"], data, "{name}");
    }
    s.stop().await;
}

/// `size` zero bytes as one zstd frame whose header asks for a `window_log` window.
fn zstd_bomb(size: usize, window_log: u32) -> Vec<u8> {
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
    enc.set_parameter(zstd::stream::raw::CParameter::WindowLog(window_log))
        .unwrap();
    enc.set_pledged_src_size(Some(size as u64)).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        enc.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    enc.finish().unwrap()
}

#[tokio::test]
async fn zstd_bombs_are_413_without_materializing_the_expansion() {
    let s = TestServer::start(common::Backend::Sqlite).await;
    let player = s.device_player().await;
    let t = token(&player).to_owned();
    const EXPANDED: usize = 33 * 1024 * 1024;
    for window_log in [21, 25] {
        let bomb = zstd_bomb(EXPANDED, window_log);
        assert!(bomb.len() < 4096, "bomb is {} bytes", bomb.len());
        for path in ["/api/v1/auth/login", "/api/v1/stats/me"] {
            let send = s
                .player(Method::POST, path, &t)
                .header("content-type", "application/json")
                .header("content-encoding", "zstd")
                .body(bomb.clone())
                .send();
            let (resp, peak) = peak_allocation(send).await;
            expect_json_error(
                resp.unwrap(),
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
            )
            .await;
            // These endpoints take 1 MiB: decoding stops there instead of expanding 33 MiB.
            assert!(
                peak < 4 * 1024 * 1024,
                "window_log {window_log} {path}: peak {} KiB",
                peak >> 10
            );
        }
    }

    // A frame asking for a window over 8 MiB (the most RFC 9659 lets HTTP zstd encoders use) is
    // refused before decoding, even with content a slot would hold: zstd would allocate the
    // whole window for it.
    let data = "7".repeat(12 * 1024 * 1024);
    let body = serde_json::to_vec(&json!({"slot": "wide", "data": data})).unwrap();
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    enc.set_parameter(zstd::stream::raw::CParameter::WindowLog(25))
        .unwrap();
    enc.set_pledged_src_size(Some(body.len() as u64)).unwrap();
    enc.write_all(&body).unwrap();
    let wide = enc.finish().unwrap();
    let resp = s
        .player(Method::POST, "/api/v1/saves/me", &t)
        .header("content-type", "application/json")
        .header("content-encoding", "zstd")
        .body(wide)
        .send()
        .await
        .unwrap();
    expect_json_error(resp, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    // The same save with an ordinary frame is fine.
    let resp = s
        .player(Method::POST, "/api/v1/saves/me", &t)
        .header("content-type", "application/json")
        .header("content-encoding", "zstd")
        .body(zstd::encode_all(&body[..], 3).unwrap())
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await;

    // On the save route (limit ~32 MiB) the bomb costs that limit at most, not its expansion.
    let bomb = zstd_bomb(EXPANDED, 21);
    let send = s
        .player(Method::POST, "/api/v1/saves/me", &t)
        .header("content-type", "application/json")
        .header("content-encoding", "zstd")
        .body(bomb)
        .send();
    let (resp, peak) = peak_allocation(send).await;
    expect_json_error(
        resp.unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    println!("save route bomb: peak {} KiB allocated", peak >> 10);
    assert!(peak < 40 * 1024 * 1024, "peak {} KiB", peak >> 10);
    s.stop().await;
}
