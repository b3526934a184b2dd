//! Helpers shared by the mock's integration tests: a plain reqwest client speaking to the mock.
#![allow(dead_code)]

use aethex_mock::MockServer;
use aethex_protocol::auth::AuthResponse;
use aethex_protocol::ErrorEnvelope;
use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::{json, Value};

pub struct Player {
    pub user_id: String,
    pub access_token: String,
    pub refresh_token: String,
}

/// A pooled client, like the SDK's: faults must also hit reused keep-alive connections.
/// Automatic decompression is off: tests look at the encoding on the wire, and another crate of
/// the workspace enables reqwest's zstd feature (features unify in a workspace build).
pub fn client() -> Client {
    Client::builder()
        .no_zstd()
        .no_gzip()
        .build()
        .expect("reqwest client")
}

pub fn req(mock: &MockServer, client: &Client, method: Method, path: &str) -> RequestBuilder {
    client
        .request(method, format!("{}{path}", mock.url()))
        .header("X-AeThex-Key", mock.client_key())
}

pub fn authed(
    mock: &MockServer,
    client: &Client,
    player: &Player,
    method: Method,
    path: &str,
) -> RequestBuilder {
    req(mock, client, method, path).bearer_auth(&player.access_token)
}

pub async fn device_player(mock: &MockServer, client: &Client, device_id: &str) -> Player {
    let resp = req(mock, client, Method::POST, "/api/v1/auth/device")
        .json(&json!({ "device_id": device_id }))
        .send()
        .await
        .expect("device sign-in");
    assert_eq!(resp.status(), 200);
    let auth: AuthResponse = resp.json().await.expect("auth response");
    Player {
        user_id: auth.user.id,
        access_token: auth.access_token,
        refresh_token: auth.refresh_token,
    }
}

/// Asserts the status and the error envelope's code; returns the envelope.
pub async fn expect_error(resp: Response, status: u16, code: &str) -> ErrorEnvelope {
    assert_eq!(resp.status().as_u16(), status, "status");
    let envelope: ErrorEnvelope = resp.json().await.expect("error envelope");
    assert_eq!(envelope.error.code.as_str(), code, "{envelope:?}");
    envelope
}

pub async fn write_save(
    mock: &MockServer,
    client: &Client,
    player: &Player,
    slot: &str,
    data: Value,
    base_version: Option<i64>,
) -> Response {
    authed(mock, client, player, Method::POST, "/api/v1/saves/me")
        .json(&json!({ "slot": slot, "data": data, "base_version": base_version }))
        .send()
        .await
        .expect("write request")
}
