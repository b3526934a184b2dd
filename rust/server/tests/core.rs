//! The spine: health, metrics, OpenAPI, JWKS, key checks, error model.

mod common;

use common::{backends, expect_error, expect_status, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn health_metrics_openapi_jwks() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let health = s.http.get(s.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), StatusCode::OK);
        let ready = s.http.get(s.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), StatusCode::OK, "{backend:?}");

        s.device_player().await;
        let metrics = s.http.get(s.url("/metrics")).send().await.unwrap();
        assert_eq!(metrics.status(), StatusCode::OK);
        let text = metrics.text().await.unwrap();
        assert!(
            text.contains("aethex_http_requests_total") && text.contains("/api/v1/auth/device"),
            "metrics lack request counters: {text}"
        );

        let doc = s.openapi_document().await;
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        assert!(doc["paths"]["/api/v1/auth/device"]["post"].is_object());

        let jwks = expect_status(
            s.http
                .get(s.url("/.well-known/jwks.json"))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        let key = &jwks["keys"][0];
        assert_eq!(key["kty"], "OKP");
        assert_eq!(key["alg"], "EdDSA");
        assert!(key["kid"].as_str().is_some_and(|k| !k.is_empty()));
        s.stop().await;
    }
}

#[tokio::test]
async fn default_project_key_files_are_written() {
    let s = TestServer::start(common::Backend::Sqlite).await;
    let client = std::fs::read_to_string(s.data_dir.path().join("default-project-key")).unwrap();
    let server = std::fs::read_to_string(s.data_dir.path().join("default-server-key")).unwrap();
    assert_eq!(client.trim(), s.client_key);
    assert_eq!(server.trim(), s.server_key);
    s.stop().await;
}

#[tokio::test]
async fn device_sign_in_is_stable_and_keyed_to_the_project() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let body = json!({"device_id": "device-abcdef-123", "username": "first_player"});
        let first = expect_status(
            s.req(Method::POST, "/api/v1/auth/device")
                .json(&body)
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(first["user"]["username"], "first_player");
        assert_eq!(first["user"]["linked"], json!(["device"]));
        assert_eq!(first["expires_in"], 900);
        assert!(first["refresh_token"].as_str().unwrap().starts_with("rt_"));
        let again = expect_status(
            s.req(Method::POST, "/api/v1/auth/device")
                .json(&body)
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(again["user"]["id"], first["user"]["id"]);
        assert_ne!(again["refresh_token"], first["refresh_token"]);

        // No key, a wrong key, garbage JSON, a bad device id, unknown routes: typed errors.
        let no_key = s
            .http
            .post(s.url("/api/v1/auth/device"))
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_error(no_key, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let wrong_key = s
            .http
            .post(s.url("/api/v1/auth/device"))
            .header("X-AeThex-Key", "pk_nope")
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_error(wrong_key, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let garbage = s
            .req(Method::POST, "/api/v1/auth/device")
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        expect_error(garbage, StatusCode::BAD_REQUEST, "invalid_request").await;
        let short = s
            .req(Method::POST, "/api/v1/auth/device")
            .json(&json!({"device_id": "x"}))
            .send()
            .await
            .unwrap();
        expect_error(short, StatusCode::BAD_REQUEST, "invalid_request").await;
        let missing = s.req(Method::GET, "/api/v1/nope").send().await.unwrap();
        expect_error(missing, StatusCode::NOT_FOUND, "not_found").await;
        s.stop().await;
    }
}
