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

/// Every `/api/v1` operation of the served OpenAPI document, as (method, path, operation).
fn api_operations(doc: &serde_json::Value) -> Vec<(String, String, serde_json::Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if path.starts_with("/api/v1/") {
                ops.push((method.clone(), path.clone(), op.clone()));
            }
        }
    }
    assert!(ops.len() >= 50, "only {} operations", ops.len());
    ops
}

#[tokio::test]
async fn openapi_declares_path_parameters_only_for_the_path_template() {
    let s = TestServer::start(common::Backend::Sqlite).await;
    let doc = s.openapi_document().await;
    let mut wrong = Vec::new();
    for (method, path, op) in api_operations(&doc) {
        let template: std::collections::BTreeSet<&str> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let in_path: std::collections::BTreeSet<&str> = params
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        if in_path != template {
            wrong.push(format!("{method} {path}: path parameters {in_path:?}"));
        }
        // A header is text or absent; a client sending the word `null` is wrong.
        for p in params.iter().filter(|p| p["in"] == "header") {
            if p["schema"]["type"] != "string" {
                wrong.push(format!(
                    "{method} {path}: header {} is {}",
                    p["name"], p["schema"]
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // A documented query parameter is read from the query.
    let query = |op: &str, name: &str| {
        doc["paths"][op]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == name && p["in"] == "query")
    };
    assert!(query("/api/v1/groups", "limit"));
    assert!(query("/api/v1/leaderboards/{id}", "cursor"));
    s.stop().await;
}

#[tokio::test]
async fn openapi_lists_every_error_an_operation_can_give() {
    let s = TestServer::start(common::Backend::Sqlite).await;
    let doc = s.openapi_document().await;
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    let mut wrong = Vec::new();
    for (method, path, op) in api_operations(&doc) {
        let label = format!("{method} {path}");
        let security = op["security"].as_array().cloned().unwrap_or_default();
        if security.is_empty() {
            wrong.push(format!("{label}: no security requirement"));
        }
        for requirement in &security {
            for name in requirement.as_object().unwrap().keys() {
                if !schemes.contains_key(name) {
                    wrong.push(format!("{label}: undeclared scheme {name}"));
                }
            }
        }
        let server_key = security.iter().any(|r| r.get("server_key").is_some());
        let mut expected = vec!["400", "401", "503"];
        if path.starts_with("/api/v1/auth/") {
            expected.push("429");
        }
        if op.get("requestBody").is_some() {
            expected.push("413");
        }
        if server_key {
            expected.push("403");
        }
        let responses = op["responses"].as_object().unwrap();
        for status in expected {
            if !responses.contains_key(status) {
                wrong.push(format!("{label}: no {status}"));
            }
        }
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                if schema != "#/components/schemas/ErrorEnvelope" {
                    wrong.push(format!("{label}: {status} is not an ErrorEnvelope"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    s.stop().await;
}

/// The schemas carry the constraints the server enforces, and the server takes what they allow.
#[tokio::test]
async fn openapi_schemas_state_the_validation_the_server_does() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let doc = s.openapi_document().await;
        let schemas = &doc["components"]["schemas"];
        let device_id = &schemas["DeviceAuthRequest"]["properties"]["device_id"];
        assert_eq!(device_id["minLength"], 8, "{device_id}");
        assert_eq!(device_id["maxLength"], 128, "{device_id}");
        assert!(device_id["pattern"].is_string(), "{device_id}");
        for (schema, field) in [
            ("RegisterRequest", "email"),
            ("RegisterRequest", "username"),
            ("RegisterRequest", "password"),
            ("WriteSaveRequest", "slot"),
            ("AchievementDefinition", "name"),
        ] {
            let property = &schemas[schema]["properties"][field];
            assert!(
                property["maxLength"].is_u64(),
                "{schema}.{field} has no maxLength: {property}"
            );
        }
        assert!(schemas["CreateGroupRequest"]["properties"]["name"]["pattern"].is_string());
        let max_members = &schemas["CreateGroupRequest"]["properties"]["max_members"];
        assert_eq!(max_members["type"], "integer");
        assert_eq!(max_members["minimum"], 1, "{max_members}");
        assert_eq!(max_members["maximum"], 10_000, "{max_members}");

        // The shortest and longest device ids the schema allows sign in.
        for id in ["12345678", &"d".repeat(128)] {
            let resp = s
                .req(Method::POST, "/api/v1/auth/device")
                .json(&json!({ "device_id": id }))
                .send()
                .await
                .unwrap();
            expect_status(resp, StatusCode::OK).await;
        }

        // A JSON body that is not an object is refused, also where every field is optional.
        let player = s.device_player().await;
        let token = player["access_token"].as_str().unwrap();
        expect_status(
            s.admin(Method::PUT, "/api/v1/achievements/first")
                .json(&json!({"name": "First"}))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        for (method, path) in [
            (Method::POST, "/api/v1/achievements/first/unlock"),
            (Method::POST, "/api/v1/friends/heartbeat"),
            (Method::PUT, "/api/v1/auth/profile"),
            (Method::POST, "/api/v1/stats/me"),
        ] {
            let resp = s
                .player(method.clone(), path, token)
                .header("content-type", "application/json")
                .body("[]")
                .send()
                .await
                .unwrap();
            expect_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
        }
        let achievements = expect_status(
            s.player(Method::GET, "/api/v1/achievements", token)
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(achievements["achievements"][0]["unlocked"], false);
        s.stop().await;
    }
}

/// Requests the OpenAPI document allows are not refused as malformed: 400 is only for input
/// the schema forbids.
#[tokio::test]
async fn schema_valid_requests_are_not_refused_as_invalid() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let player = s.device_player().await;
        let token = player["access_token"].as_str().unwrap();
        let me = player["user"]["id"].as_str().unwrap();
        let send = |req: reqwest::RequestBuilder| async move { req.send().await.unwrap() };

        // JSON Schema counts 3.0 as an integer.
        expect_status(
            send(
                s.admin(Method::PUT, "/api/v1/leaderboards/hs")
                    .json(&json!({"min_score": -1000.0, "max_score": 1e6})),
            )
            .await,
            StatusCode::OK,
        )
        .await;
        let submitted = expect_status(
            send(
                s.player(Method::POST, "/api/v1/leaderboards/hs/scores", token)
                    .json(&json!({"score": 42.0})),
            )
            .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(submitted["entry"]["score"], 42);
        let stats = expect_status(
            send(
                s.player(Method::POST, "/api/v1/stats/me", token)
                    .json(&json!({"set": {"kills": 2.0}, "increment": {}})),
            )
            .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(stats["stats"][0]["value"], 2);
        let empty = expect_status(
            send(
                s.player(Method::POST, "/api/v1/stats/me", token)
                    .json(&json!({"set": {}, "increment": {}})),
            )
            .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(empty["stats"], json!([]));
        // A limit above the range's maximum is cut to it.
        let page = expect_status(
            send(s.player(Method::GET, "/api/v1/leaderboards/hs?limit=1000", token)).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(page["entries"].as_array().unwrap().len(), 1);
        // Any cursor the pattern allows is one: out-of-range numbers saturate.
        let beyond = expect_status(
            send(s.player(
                Method::GET,
                "/api/v1/leaderboards/hs?cursor=-9999999999999999999_0_0",
                token,
            ))
            .await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(beyond["entries"].as_array().unwrap().len(), 1);

        // Well-formed requests this caller may not make, or naming nothing that exists.
        for (resp, status, code) in [
            (
                send(s.player(
                    Method::POST,
                    &format!("/api/v1/friends/{me}/request"),
                    token,
                ))
                .await,
                StatusCode::FORBIDDEN,
                "forbidden",
            ),
            (
                send(
                    s.req(Method::POST, "/api/v1/auth/email/verify")
                        .json(&json!({"token": "mt_unknown"})),
                )
                .await,
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                send(s.admin(Method::GET, "/api/v1/saves/me")).await,
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            (
                send(s.player(
                    Method::GET,
                    "/api/v1/leaderboards/hs?period=previous",
                    token,
                ))
                .await,
                StatusCode::NOT_FOUND,
                "not_found",
            ),
            // Each field valid, together contradictory.
            (
                send(
                    s.admin(Method::PUT, "/api/v1/leaderboards/bad")
                        .json(&json!({"min_score": 5, "max_score": 1})),
                )
                .await,
                StatusCode::CONFLICT,
                "conflict",
            ),
            (
                send(
                    s.player(Method::POST, "/api/v1/stats/me", token)
                        .json(&json!({"set": {"kills": 1}, "increment": {"kills": 1}})),
                )
                .await,
                StatusCode::CONFLICT,
                "conflict",
            ),
        ] {
            expect_error(resp, status, code).await;
        }
        s.stop().await;
    }
}
