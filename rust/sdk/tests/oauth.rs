//! OAuth sign-in and linking through the real server and a fake provider on loopback; the
//! "browser" is an HTTP client that follows the redirects.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aethex_server::config::OAuthProviderConfig;
use axum::extract::{Form, Query, State};
use axum::response::Redirect;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use common::*;
use sha2::{Digest, Sha256};

type Challenges = Arc<Mutex<HashMap<String, String>>>;

/// authorize -> redirect with a code; token checks the PKCE verifier; userinfo names the user.
async fn fake_provider() -> String {
    let challenges: Challenges = Default::default();
    let app = Router::new()
        .route(
            "/authorize",
            get(
                |State(c): State<Challenges>, Query(q): Query<HashMap<String, String>>| async move {
                    let code = format!("code-{}", c.lock().unwrap().len());
                    c.lock()
                        .unwrap()
                        .insert(code.clone(), q["code_challenge"].clone());
                    Redirect::to(&format!(
                        "{}?code={code}&state={}",
                        q["redirect_uri"], q["state"]
                    ))
                },
            ),
        )
        .route(
            "/token",
            post(
                |State(c): State<Challenges>, Form(f): Form<HashMap<String, String>>| async move {
                    let expected = c.lock().unwrap().get(&f["code"]).cloned();
                    let actual = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(Sha256::digest(f["code_verifier"].as_bytes()));
                    if expected == Some(actual) {
                        Json(serde_json::json!({"access_token": "provider-token"}))
                    } else {
                        Json(serde_json::json!({"error": "invalid_grant"}))
                    }
                },
            ),
        )
        .route(
            "/userinfo",
            get(|| async { Json(serde_json::json!({"sub": "google-123", "name": "Grace"})) }),
        )
        .with_state(challenges);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn browser() -> aethex_sdk::UrlOpener {
    Arc::new(|url: &str| {
        let url = url.to_owned();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let page = reqwest::get(&url).await.unwrap().text().await.unwrap();
                assert!(page.contains("Signed in"), "{page}");
            });
        });
        Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_sign_in_and_linking_with_pkce_and_loopback_redirect() {
    let provider = fake_provider().await;
    let server = RealServer::start_with(move |config| {
        config.oauth.google = Some(OAuthProviderConfig {
            client_id: "game-client".into(),
            client_secret: "secret".into(),
            authorize_url: format!("{provider}/authorize"),
            token_url: format!("{provider}/token"),
            userinfo_url: format!("{provider}/userinfo"),
            scopes: vec!["openid".into()],
        });
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = server.config(dir.path());
    config.url_opener = browser();
    let mut p = Probe::new(config.clone());

    let id = p.client.auth().login_oauth("google".into());
    let first = p.ok(id).await;
    p.signal("auth", "logged_in").await;
    let linked = list(first.get("user").unwrap(), "linked");
    assert!(
        linked.contains(&aethex_sdk::Value::String("google".into())),
        "{linked:?}"
    );

    // Same provider account again: same user.
    let id = p.client.auth().login_oauth("google".into());
    assert_eq!(user_id(&p.ok(id).await), user_id(&first));

    // A device account links the (already used) Google identity: a typed conflict, not a 500.
    let other = tempfile::tempdir().unwrap();
    let mut q_config = server.config(other.path());
    q_config.url_opener = browser();
    let mut q = Probe::new(q_config);
    q.login_device("oauth-linker-01").await;
    let id = q.client.auth().link_oauth("google".into());
    let e = q.err(id).await;
    assert_eq!(e.status, 409, "{e:?}");

    // An unconfigured provider is a typed error from the start call.
    let id = p.client.auth().login_oauth("github".into());
    let e = p.err(id).await;
    assert!(matches!(e.status, 400 | 404), "{e:?}");
}
