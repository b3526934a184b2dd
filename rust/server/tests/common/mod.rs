//! Test harness: a real server on a loopback port, on a fresh SQLite file or (when
//! `AETHEX_TEST_DATABASE_URL` is set) a fresh PostgreSQL schema, plus a reqwest client.
//!
//! `backends()` lists the databases to run each test on; tests loop over it so every behaviour is
//! checked on both.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod smtp;
pub mod socket;

use std::net::SocketAddr;
use std::sync::Arc;

use aethex_server::clock::OffsetClock;
use aethex_server::{AppState, Config, Server};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// SQLite always; PostgreSQL too when `AETHEX_TEST_DATABASE_URL` is set.
pub fn backends() -> Vec<Backend> {
    let mut list = vec![Backend::Sqlite];
    if std::env::var("AETHEX_TEST_DATABASE_URL").is_ok_and(|u| !u.is_empty()) {
        list.push(Backend::Postgres);
    }
    list
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub base: String,
    pub client_key: String,
    pub server_key: String,
    pub state: AppState,
    pub clock: Arc<OffsetClock>,
    pub http: reqwest::Client,
    pub backend: Backend,
    pub data_dir: tempfile::TempDir,
    pg_schema: Option<String>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts a server after `adjust` has changed its configuration. Rate limits are off unless
    /// `adjust` turns them on, so tests making many calls are not throttled by accident.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.path().to_path_buf(),
            ..Config::default()
        };
        config.rate_limit.enabled = false;
        let pg_schema = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let (url, schema) = fresh_pg_schema().await;
                config.database_url = url;
                Some(schema)
            }
        };
        adjust(&mut config);
        Self::start_config(backend, config, data_dir, pg_schema).await
    }

    async fn start_config(
        backend: Backend,
        config: Config,
        data_dir: tempfile::TempDir,
        pg_schema: Option<String>,
    ) -> Self {
        let clock = OffsetClock::new();
        let server = Server::build_with_clock(config, clock.clone())
            .await
            .expect("server builds");
        let created = server
            .created_default_project
            .clone()
            .expect("fresh data dir creates the default project");
        let state = server.state.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve(listener, async {
                    let _ = rx.await;
                })
                .await
                .expect("server runs");
        });
        Self {
            addr,
            base: format!("http://{addr}"),
            client_key: created.client_key,
            server_key: created.server_key,
            state,
            clock,
            // No automatic decompression: tests check the encoding on the wire, and the SDK
            // enables reqwest's zstd feature in workspace builds (features unify).
            http: reqwest::Client::builder()
                .no_zstd()
                .no_gzip()
                .build()
                .expect("reqwest client"),
            backend,
            data_dir,
            pg_schema,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// This server for the realtime socket client.
    pub fn endpoint(&self) -> socket::Endpoint {
        socket::Endpoint::new(self.base.clone(), self.client_key.clone())
    }

    /// A request carrying the client key (as a game would send before sign-in).
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("X-AeThex-Key", &self.client_key)
    }

    /// A request as the signed-in player owning `token`.
    pub fn player(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.req(method, path).bearer_auth(token)
    }

    /// A request as the game's trusted server.
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("Authorization", format!("ServerKey {}", self.server_key))
    }

    /// Signs in a fresh anonymous player; returns the whole auth response.
    pub async fn device_player(&self) -> Value {
        let device_id = format!("device-{}", uuid::Uuid::new_v4());
        let resp = self
            .req(Method::POST, "/api/v1/auth/device")
            .json(&json!({ "device_id": device_id }))
            .send()
            .await
            .unwrap();
        expect_status(resp, StatusCode::OK).await
    }

    /// Stops this server and starts a new one on the same data dir and database, with the same
    /// keys and clock: what survives is what the server keeps in storage.
    pub async fn restart(mut self) -> Self {
        self.shutdown_now().await;
        let mut config = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: self.data_dir.path().to_path_buf(),
            ..Config::default()
        };
        config.rate_limit.enabled = false;
        if let Some(schema) = &self.pg_schema {
            config.database_url = pg_schema_url(schema);
        }
        let server = Server::build_with_clock(config, self.clock.clone())
            .await
            .expect("server rebuilds");
        let state = server.state.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .serve(listener, async {
                    let _ = rx.await;
                })
                .await
                .expect("server runs");
        });
        Self {
            addr,
            base: format!("http://{addr}"),
            state,
            shutdown: Some(tx),
            task: Some(task),
            ..self
        }
    }

    /// The served OpenAPI document.
    pub async fn openapi_document(&self) -> Value {
        let resp = self
            .http
            .get(self.url("/api/v1/openapi.json"))
            .send()
            .await
            .unwrap();
        expect_status(resp, StatusCode::OK).await
    }

    /// Stops the server and drops its PostgreSQL schema.
    pub async fn stop(mut self) {
        self.shutdown_now().await;
        if let Some(schema) = self.pg_schema.take() {
            drop_pg_schema(&schema).await;
        }
    }

    async fn shutdown_now(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Asserts the status (printing the body when it differs) and returns the JSON body.
pub async fn expect_status(resp: Response, status: StatusCode) -> Value {
    let got = resp.status();
    let text = resp.text().await.unwrap_or_default();
    assert_eq!(got, status, "unexpected status; body: {text}");
    if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}

/// Asserts a typed error: status plus stable code.
pub async fn expect_error(resp: Response, status: StatusCode, code: &str) -> Value {
    let body = expect_status(resp, status).await;
    assert_eq!(body["error"]["code"], code, "unexpected error body: {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without message: {body}"
    );
    body
}

fn pg_base_url() -> String {
    std::env::var("AETHEX_TEST_DATABASE_URL").expect("AETHEX_TEST_DATABASE_URL")
}

pub async fn pg_admin() -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(&pg_base_url())
        .await
        .expect("connect to AETHEX_TEST_DATABASE_URL")
}

/// A new schema, and a URL whose connections use it, so tests never see each other's rows.
pub async fn fresh_pg_schema() -> (String, String) {
    use sqlx::Executor;
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = pg_admin().await;
    conn.execute(format!("CREATE SCHEMA {schema}").as_str())
        .await
        .expect("create schema");
    (pg_schema_url(&schema), schema)
}

fn pg_schema_url(schema: &str) -> String {
    let base = pg_base_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

pub async fn drop_pg_schema(schema: &str) {
    use sqlx::Executor;
    let mut conn = pg_admin().await;
    let _ = conn
        .execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
        .await;
}
