//! The auth service over real HTTP on both databases: email accounts, sessions (rotation, reuse
//! detection, logout), profiles, device accounts and linking, mail through a loopback SMTP
//! server, OAuth against a loopback provider, the proof-of-work captcha and rate limits.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aethex_protocol::captcha::{leading_zero_bits, solve};
use aethex_server::clock::Clock;
use aethex_server::config::OAuthProviderConfig;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::smtp::SmtpCapture;
use common::{backends, expect_error, expect_status, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::Row;

const PASSWORD: &str = "correct horse battery";

async fn register(s: &TestServer, email: &str, username: &str, password: &str) -> Value {
    let resp = s
        .req(Method::POST, "/api/v1/auth/register")
        .json(&json!({"email": email, "password": password, "username": username}))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::CREATED).await
}

async fn login(s: &TestServer, email: &str, password: &str) -> reqwest::Response {
    s.req(Method::POST, "/api/v1/auth/login")
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

async fn refresh(s: &TestServer, refresh_token: &Value) -> reqwest::Response {
    s.req(Method::POST, "/api/v1/auth/refresh")
        .json(&json!({ "refresh_token": refresh_token }))
        .send()
        .await
        .unwrap()
}

async fn profile(s: &TestServer, token: &Value) -> reqwest::Response {
    s.player(Method::GET, "/api/v1/auth/profile", token.as_str().unwrap())
        .send()
        .await
        .unwrap()
}

fn token(auth: &Value) -> &str {
    auth["access_token"].as_str().unwrap()
}

#[tokio::test]
async fn register_login_profile_refresh_logout() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let reg = register(&s, "Ada@Example.com", "ada", PASSWORD).await;
        assert_eq!(reg["user"]["email"], "Ada@Example.com");
        assert_eq!(reg["user"]["email_verified"], false);
        assert_eq!(reg["user"]["linked"], json!(["email"]));
        assert_eq!(reg["expires_in"], 900);
        let user_id = reg["user"]["id"].clone();

        // Taken email (any case) or username: 409; invalid input: 400.
        for (email, username) in [("ada@example.COM", "ada2"), ("other@example.com", "ADA")] {
            let resp = s
                .req(Method::POST, "/api/v1/auth/register")
                .json(&json!({"email": email, "password": PASSWORD, "username": username}))
                .send()
                .await
                .unwrap();
            expect_error(resp, StatusCode::CONFLICT, "conflict").await;
        }
        for body in [
            json!({"email": "not-an-email", "password": PASSWORD, "username": "bob"}),
            json!({"email": "bob@example.com", "password": "short", "username": "bob"}),
            json!({"email": "bob@example.com", "password": PASSWORD, "username": "b"}),
            json!({"email": "bob@example.com", "password": PASSWORD}),
        ] {
            let resp = s
                .req(Method::POST, "/api/v1/auth/register")
                .json(&body)
                .send()
                .await
                .unwrap();
            expect_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
        }

        // Wrong password and unknown email get the same answer.
        let wrong = expect_error(
            login(&s, "ada@example.com", "wrong password!").await,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        )
        .await;
        let unknown = expect_error(
            login(&s, "nobody@example.com", PASSWORD).await,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        )
        .await;
        assert_eq!(wrong, unknown);

        let session = expect_status(
            login(&s, " ADA@example.com", PASSWORD).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(session["user"]["id"], user_id);

        // Profile: read, update, validation, username conflict.
        let me = expect_status(profile(&s, &session["access_token"]).await, StatusCode::OK).await;
        assert_eq!(me["username"], "ada");
        assert_eq!(me["preferences"], json!({}));
        let updated = expect_status(
            s.player(Method::PUT, "/api/v1/auth/profile", token(&session))
                .json(&json!({
                    "username": "Ada_L",
                    "avatar_url": "https://cdn.example.com/ada.png",
                    "preferences": {"volume": 0.5, "lang": "en"}
                }))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(updated["username"], "Ada_L");
        assert_eq!(updated["avatar_url"], "https://cdn.example.com/ada.png");
        assert_eq!(updated["preferences"], json!({"volume": 0.5, "lang": "en"}));
        // Absent fields stay; "" clears the avatar.
        let partial = expect_status(
            s.player(Method::PUT, "/api/v1/auth/profile", token(&session))
                .json(&json!({"avatar_url": ""}))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(partial["username"], "Ada_L");
        assert_eq!(partial["avatar_url"], Value::Null);
        assert_eq!(partial["preferences"], json!({"volume": 0.5, "lang": "en"}));
        for body in [
            json!({"preferences": [1, 2]}),
            json!({"preferences": "dark"}),
            json!({"avatar_url": "javascript:alert(1)"}),
            json!({"username": "no spaces allowed"}),
        ] {
            let resp = s
                .player(Method::PUT, "/api/v1/auth/profile", token(&session))
                .json(&body)
                .send()
                .await
                .unwrap();
            expect_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
        }
        let other = s.device_player().await;
        let taken = s
            .player(Method::PUT, "/api/v1/auth/profile", token(&other))
            .json(&json!({"username": "ada_l"}))
            .send()
            .await
            .unwrap();
        expect_error(taken, StatusCode::CONFLICT, "conflict").await;
        let unauthenticated = s
            .req(Method::GET, "/api/v1/auth/profile")
            .send()
            .await
            .unwrap();
        expect_error(unauthenticated, StatusCode::UNAUTHORIZED, "unauthorized").await;

        // Refresh rotates: each token works once and yields the next.
        let first = session["refresh_token"].clone();
        let second = expect_status(refresh(&s, &first).await, StatusCode::OK).await;
        assert_ne!(second["refresh_token"], first);
        assert_eq!(second["user"]["id"], user_id);
        expect_status(profile(&s, &second["access_token"]).await, StatusCode::OK).await;
        let third =
            expect_status(refresh(&s, &second["refresh_token"]).await, StatusCode::OK).await;
        // Presenting a spent token revokes the family: the newest token and access tokens die.
        expect_error(
            refresh(&s, &first).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
        expect_error(
            refresh(&s, &third["refresh_token"]).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
        expect_error(
            profile(&s, &third["access_token"]).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
        expect_error(
            refresh(&s, &json!("rt_made_up")).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;

        // Logout ends the session at once; other sessions of the account keep working.
        let a = expect_status(login(&s, "ada@example.com", PASSWORD).await, StatusCode::OK).await;
        let b = expect_status(login(&s, "ada@example.com", PASSWORD).await, StatusCode::OK).await;
        let out = s
            .player(Method::POST, "/api/v1/auth/logout", token(&a))
            .send()
            .await
            .unwrap();
        expect_status(out, StatusCode::NO_CONTENT).await;
        expect_error(
            profile(&s, &a["access_token"]).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
        expect_error(
            refresh(&s, &a["refresh_token"]).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
        expect_status(profile(&s, &b["access_token"]).await, StatusCode::OK).await;
        let logout_again = s
            .player(Method::POST, "/api/v1/auth/logout", token(&a))
            .send()
            .await
            .unwrap();
        expect_error(logout_again, StatusCode::UNAUTHORIZED, "unauthorized").await;
        s.stop().await;
    }
}

#[tokio::test]
async fn sessions_revoked_by_another_node_stop_working() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let player = s.device_player().await;
        expect_status(profile(&s, &player["access_token"]).await, StatusCode::OK).await;
        // Another node signs the session out: only the shared database knows.
        let claims = s
            .state
            .tokens
            .verify(token(&player), s.clock.now_ms())
            .await
            .unwrap();
        sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2")
            .bind(s.clock.now_ms())
            .bind(&claims.sid)
            .execute(&s.state.db.write)
            .await
            .unwrap();
        let mut status = StatusCode::OK;
        for _ in 0..50 {
            status = profile(&s, &player["access_token"]).await.status();
            if status == StatusCode::UNAUTHORIZED {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "revocation never reached this node"
        );
        expect_error(
            refresh(&s, &player["refresh_token"]).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
        s.stop().await;
    }
}

#[tokio::test]
async fn garbage_json_is_a_typed_400_everywhere() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let player = s.device_player().await;
        for path in [
            "/api/v1/auth/register",
            "/api/v1/auth/login",
            "/api/v1/auth/refresh",
            "/api/v1/auth/email/verify",
            "/api/v1/auth/password/forgot",
            "/api/v1/auth/password/reset",
            "/api/v1/auth/link/device",
            "/api/v1/auth/link/email",
        ] {
            let resp = s
                .player(Method::POST, path, token(&player))
                .header("content-type", "application/json")
                .body("{\"email\": ")
                .send()
                .await
                .unwrap();
            expect_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
        }
        let resp = s
            .player(Method::PUT, "/api/v1/auth/profile", token(&player))
            .header("content-type", "application/json")
            .body("[not json")
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::BAD_REQUEST, "invalid_request").await;
        s.stop().await;
    }
}

#[tokio::test]
async fn expired_tokens_are_rejected() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let player = s.device_player().await;
        expect_status(profile(&s, &player["access_token"]).await, StatusCode::OK).await;
        s.clock.advance_ms(15 * 60 * 1000 + 1000);
        expect_error(
            profile(&s, &player["access_token"]).await,
            StatusCode::UNAUTHORIZED,
            "token_expired",
        )
        .await;
        // The refresh token outlives the access token.
        let renewed =
            expect_status(refresh(&s, &player["refresh_token"]).await, StatusCode::OK).await;
        expect_status(profile(&s, &renewed["access_token"]).await, StatusCode::OK).await;
        s.clock.advance_ms(31 * 24 * 3600 * 1000);
        expect_error(
            refresh(&s, &renewed["refresh_token"]).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;
        s.stop().await;
    }
}

#[tokio::test]
async fn device_accounts_link_to_device_and_email() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let device = |id: &str| json!({ "device_id": id });
        let a = expect_status(
            s.req(Method::POST, "/api/v1/auth/device")
                .json(&device("phone-of-alice"))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        let a_id = a["user"]["id"].clone();

        // A second device reaches the same account once linked; linking twice is harmless.
        for _ in 0..2 {
            let linked = expect_status(
                s.player(Method::POST, "/api/v1/auth/link/device", token(&a))
                    .json(&device("tablet-of-alice"))
                    .send()
                    .await
                    .unwrap(),
                StatusCode::OK,
            )
            .await;
            assert_eq!(linked["linked"], json!(["device"]));
        }
        let via_tablet = expect_status(
            s.req(Method::POST, "/api/v1/auth/device")
                .json(&device("tablet-of-alice"))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(via_tablet["user"]["id"], a_id);

        // Upgrade to email: login then reaches the same account.
        let upgraded = expect_status(
            s.player(Method::POST, "/api/v1/auth/link/email", token(&a))
                .json(&json!({"email": "alice@example.com", "password": PASSWORD}))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(upgraded["linked"], json!(["device", "email"]));
        assert_eq!(upgraded["email"], "alice@example.com");
        let by_email = expect_status(
            login(&s, "alice@example.com", PASSWORD).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(by_email["user"]["id"], a_id);
        // Without SMTP the verification mail waits in the outbox.
        let outbox = sqlx::query("SELECT to_addr, subject, body, sent_at FROM mail_outbox")
            .fetch_all(&s.state.db.read)
            .await
            .unwrap();
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0].get::<String, _>("to_addr"), "alice@example.com");
        assert!(outbox[0]
            .get::<String, _>("body")
            .contains("verification token: mt_"));
        assert!(outbox[0].get::<Option<i64>, _>("sent_at").is_none());

        // Conflicts: identities of another account, a second email.
        let b = s.device_player().await;
        for (path, body) in [
            ("/api/v1/auth/link/device", device("phone-of-alice")),
            (
                "/api/v1/auth/link/email",
                json!({"email": "ALICE@example.com", "password": PASSWORD}),
            ),
        ] {
            let resp = s
                .player(Method::POST, path, token(&b))
                .json(&body)
                .send()
                .await
                .unwrap();
            expect_error(resp, StatusCode::CONFLICT, "conflict").await;
        }
        let second_email = s
            .player(Method::POST, "/api/v1/auth/link/email", token(&a))
            .json(&json!({"email": "alice2@example.com", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        expect_error(second_email, StatusCode::CONFLICT, "conflict").await;
        let register_taken = s
            .req(Method::POST, "/api/v1/auth/register")
            .json(&json!({"email": "alice@example.com", "password": PASSWORD, "username": "alice_again"}))
            .send()
            .await
            .unwrap();
        expect_error(register_taken, StatusCode::CONFLICT, "conflict").await;
        // Nothing of b changed.
        let b_profile = expect_status(profile(&s, &b["access_token"]).await, StatusCode::OK).await;
        assert_eq!(b_profile["linked"], json!(["device"]));
        assert_eq!(b_profile["email"], Value::Null);
        // Linking needs a signed-in player.
        let anonymous = s
            .req(Method::POST, "/api/v1/auth/link/device")
            .json(&device("some-device-id"))
            .send()
            .await
            .unwrap();
        expect_error(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;
        s.stop().await;
    }
}

/// First sign-ins race: concurrent requests with one new device id, batched with other devices'
/// registrations and with a contested username, so the writer's batches break and fall back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_sign_ins_of_one_device_reach_one_account() {
    for backend in backends() {
        let s = TestServer::start(backend).await;
        let sign_in = |body: Value| {
            s.req(Method::POST, "/api/v1/auth/device")
                .json(&body)
                .send()
        };
        let same_device = (0..12).map(|_| sign_in(json!({"device_id": "shared-new-device"})));
        let other_devices =
            (0..12).map(|i| sign_in(json!({"device_id": format!("solo-device-{i}")})));
        let contested_name = (0..6).map(|i| {
            sign_in(json!({"device_id": format!("racer-device-{i}"), "username": "Racer"}))
        });
        let (same, others, racers) = futures::join!(
            futures::future::join_all(same_device),
            futures::future::join_all(other_devices),
            futures::future::join_all(contested_name),
        );

        let mut shared_user = None;
        let mut sessions = std::collections::HashSet::new();
        for resp in same {
            let auth = expect_status(resp.unwrap(), StatusCode::OK).await;
            let id = auth["user"]["id"].clone();
            assert_eq!(shared_user.get_or_insert(id.clone()), &id);
            assert_eq!(auth["user"]["linked"], json!(["device"]));
            sessions.insert(auth["refresh_token"].as_str().unwrap().to_owned());
            // Every winner's and loser's session works.
            let me = expect_status(profile(&s, &auth["access_token"]).await, StatusCode::OK).await;
            assert_eq!(me["id"], id);
        }
        assert_eq!(sessions.len(), 12, "one session per sign-in");
        let shared_user = shared_user.unwrap();
        let accounts: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM identities WHERE provider = 'device' AND subject = 'shared-new-device'",
        )
        .fetch_one(&s.state.db.read)
        .await
        .unwrap()
        .get("n");
        assert_eq!(accounts, 1);
        let orphans: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM users u WHERE NOT EXISTS (SELECT 1 FROM identities i WHERE i.user_id = u.id)",
        )
        .fetch_one(&s.state.db.read)
        .await
        .unwrap()
        .get("n");
        assert_eq!(orphans, 0, "a losing sign-in left no account behind");

        let mut other_ids = std::collections::HashSet::new();
        for resp in others {
            let auth = expect_status(resp.unwrap(), StatusCode::OK).await;
            assert_ne!(auth["user"]["id"], shared_user);
            other_ids.insert(auth["user"]["id"].as_str().unwrap().to_owned());
            // The answer built without reading the account back matches the stored account.
            let stored =
                expect_status(profile(&s, &auth["access_token"]).await, StatusCode::OK).await;
            assert_eq!(auth["user"], stored);
        }
        assert_eq!(other_ids.len(), 12);

        let mut winners = 0;
        for resp in racers {
            let resp = resp.unwrap();
            if resp.status() == StatusCode::OK {
                let auth = expect_status(resp, StatusCode::OK).await;
                assert_eq!(auth["user"]["username"], "Racer");
                winners += 1;
            } else {
                expect_error(resp, StatusCode::CONFLICT, "conflict").await;
            }
        }
        assert_eq!(
            winners, 1,
            "exactly one sign-in gets the contested username"
        );
        // A taken username is refused before any write, whatever its case.
        let taken = sign_in(json!({"device_id": "late-racer-device", "username": "racer"}))
            .await
            .unwrap();
        expect_error(taken, StatusCode::CONFLICT, "conflict").await;
        s.stop().await;
    }
}

#[tokio::test]
async fn verify_email_and_reset_password_through_smtp() {
    for backend in backends() {
        let smtp = SmtpCapture::start().await;
        let smtp_url = smtp.url();
        let s = TestServer::start_with(backend, |c| c.mail.smtp_url = Some(smtp_url)).await;
        let reg = register(&s, "Grace@Example.com", "grace", PASSWORD).await;

        // Verification mail -> token -> verified; the token works once.
        let mail = smtp
            .wait_for("Grace@Example.com", "verification token:", 0)
            .await;
        let verify_token = mail.value_after("verification token:").unwrap();
        let verify = |t: &str| {
            s.req(Method::POST, "/api/v1/auth/email/verify")
                .json(&json!({ "token": t }))
                .send()
        };
        let verified = expect_status(verify(&verify_token).await.unwrap(), StatusCode::OK).await;
        assert_eq!(verified["email_verified"], true);
        assert_eq!(verified["id"], reg["user"]["id"]);
        expect_error(
            verify(&verify_token).await.unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        expect_error(
            verify("mt_forged").await.unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;

        // Forgot: the same 202 for unknown and known addresses.
        let forgot = |email: &str| {
            s.req(Method::POST, "/api/v1/auth/password/forgot")
                .json(&json!({ "email": email }))
                .send()
        };
        expect_status(
            forgot("nobody@example.com").await.unwrap(),
            StatusCode::ACCEPTED,
        )
        .await;
        expect_status(
            forgot("grace@example.com").await.unwrap(),
            StatusCode::ACCEPTED,
        )
        .await;
        let mail = smtp.wait_for("Grace@Example.com", "reset token:", 0).await;
        assert!(mail.data.contains("Subject: Reset your password"));
        let reset_token = mail.value_after("reset token:").unwrap();

        let other_session = expect_status(
            login(&s, "grace@example.com", PASSWORD).await,
            StatusCode::OK,
        )
        .await;
        let reset = |t: &str, p: &str| {
            s.req(Method::POST, "/api/v1/auth/password/reset")
                .json(&json!({ "token": t, "new_password": p }))
                .send()
        };
        expect_error(
            reset(&reset_token, "short").await.unwrap(),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        )
        .await;
        expect_error(
            reset(&verify_token, "a brand new password").await.unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        expect_status(
            reset(&reset_token, "a brand new password").await.unwrap(),
            StatusCode::NO_CONTENT,
        )
        .await;
        expect_error(
            reset(&reset_token, "yet another password").await.unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;

        // Old password fails, new works, every earlier session is gone.
        expect_error(
            login(&s, "grace@example.com", PASSWORD).await,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        )
        .await;
        expect_status(
            login(&s, "grace@example.com", "a brand new password").await,
            StatusCode::OK,
        )
        .await;
        for session in [&reg, &other_session] {
            expect_error(
                profile(&s, &session["access_token"]).await,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            )
            .await;
            expect_error(
                refresh(&s, &session["refresh_token"]).await,
                StatusCode::UNAUTHORIZED,
                "unauthorized",
            )
            .await;
        }

        // An expired reset token is refused.
        expect_status(
            forgot("grace@example.com").await.unwrap(),
            StatusCode::ACCEPTED,
        )
        .await;
        let late = smtp
            .wait_for("Grace@Example.com", "reset token:", 1)
            .await
            .value_after("reset token:")
            .unwrap();
        s.clock.advance_ms(2 * 3600 * 1000);
        expect_error(
            reset(&late, "too late password").await.unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;

        // Every mail is also in the outbox, marked sent.
        let mut sent = 0;
        for _ in 0..100 {
            sent = sqlx::query("SELECT COUNT(*) AS n FROM mail_outbox WHERE sent_at IS NOT NULL")
                .fetch_one(&s.state.db.read)
                .await
                .unwrap()
                .get::<i64, _>("n");
            if sent == 3 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(sent, 3);
        assert_eq!(smtp.mails().len(), 3, "no mail for the unknown address");
        s.stop().await;
    }
}

#[tokio::test]
async fn mail_to_an_unreachable_smtp_server_stays_in_the_outbox() {
    for backend in backends() {
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let smtp_url = format!("smtp://{}", closed.local_addr().unwrap());
        drop(closed);
        let s = TestServer::start_with(backend, |c| c.mail.smtp_url = Some(smtp_url)).await;
        // Registration does not depend on the mail server.
        register(&s, "lin@example.com", "lin", PASSWORD).await;
        let mut row = None;
        for _ in 0..100 {
            let found = sqlx::query("SELECT sent_at, error FROM mail_outbox WHERE to_addr = $1")
                .bind("lin@example.com")
                .fetch_one(&s.state.db.read)
                .await
                .unwrap();
            if found.get::<Option<String>, _>("error").is_some() {
                row = Some(found);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let row = row.expect("the failed delivery is recorded");
        assert!(row.get::<Option<i64>, _>("sent_at").is_none());
        s.stop().await;
    }
}

/// A loopback OAuth provider: authorize redirects with a code bound to the PKCE challenge, the
/// token endpoint checks client secret, redirect URI and code_verifier, userinfo answers in the
/// provider's own shape. `/{provider}/authorize?...&user=NAME` picks who signs in.
struct FakeProvider {
    base: String,
    task: tokio::task::JoinHandle<()>,
}

/// What an issued code was bound to.
struct Grant {
    code_challenge: String,
    redirect_uri: String,
    user: String,
}

#[derive(Clone, Default)]
struct FakeProviderState {
    codes: Arc<Mutex<HashMap<String, Grant>>>,
}

const CLIENT_ID: &str = "test-client";
const CLIENT_SECRET: &str = "test-secret";

impl FakeProvider {
    async fn start() -> Self {
        use axum::extract::{Path, Query, State};
        use axum::http::{HeaderMap, StatusCode as S};
        use axum::response::{IntoResponse, Redirect, Response};
        use axum::routing::{get, post};

        async fn authorize(
            State(st): State<FakeProviderState>,
            Query(q): Query<HashMap<String, String>>,
        ) -> Response {
            if q.get("client_id").map(String::as_str) != Some(CLIENT_ID)
                || q.get("code_challenge_method").map(String::as_str) != Some("S256")
                || q.get("response_type").map(String::as_str) != Some("code")
            {
                return (S::BAD_REQUEST, "bad authorize request").into_response();
            }
            let code = uuid::Uuid::new_v4().simple().to_string();
            st.codes.lock().unwrap().insert(
                code.clone(),
                Grant {
                    code_challenge: q["code_challenge"].clone(),
                    redirect_uri: q["redirect_uri"].clone(),
                    user: q["user"].clone(),
                },
            );
            Redirect::to(&format!(
                "{}?code={code}&state={}",
                q["redirect_uri"], q["state"]
            ))
            .into_response()
        }

        async fn token(
            State(st): State<FakeProviderState>,
            axum::Form(f): axum::Form<HashMap<String, String>>,
        ) -> Response {
            let grant = st.codes.lock().unwrap().remove(&f["code"]);
            let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(f["code_verifier"].as_bytes()));
            match grant {
                Some(Grant {
                    code_challenge,
                    redirect_uri,
                    user,
                }) if code_challenge == challenge
                    && redirect_uri == f["redirect_uri"]
                    && f["client_id"] == CLIENT_ID
                    && f["client_secret"] == CLIENT_SECRET
                    && f["grant_type"] == "authorization_code" =>
                {
                    axum::Json(
                        json!({"access_token": format!("at_{user}"), "token_type": "bearer"}),
                    )
                    .into_response()
                }
                _ => (
                    S::BAD_REQUEST,
                    axum::Json(json!({"error": "invalid_grant"})),
                )
                    .into_response(),
            }
        }

        async fn userinfo(Path(provider): Path<String>, headers: HeaderMap) -> Response {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let Some(user) = auth.strip_prefix("Bearer at_") else {
                return S::UNAUTHORIZED.into_response();
            };
            let body = match provider.as_str() {
                "google" => {
                    json!({"sub": format!("g-{user}"), "name": user, "email": format!("{user}@gmail.test")})
                }
                _ => json!({"id": user.len() as u64 * 1000 + 7, "login": user}),
            };
            axum::Json(body).into_response()
        }

        let app = axum::Router::new()
            .route("/{provider}/authorize", get(authorize))
            .route("/{provider}/token", post(token))
            .route("/{provider}/userinfo", get(userinfo))
            .with_state(FakeProviderState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { base, task }
    }

    fn config(&self, provider: &str) -> OAuthProviderConfig {
        OAuthProviderConfig {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            authorize_url: format!("{}/{provider}/authorize", self.base),
            token_url: format!("{}/{provider}/token", self.base),
            userinfo_url: format!("{}/{provider}/userinfo", self.base),
            scopes: vec![],
        }
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const REDIRECT_URI: &str = "http://127.0.0.1:7777/callback";

fn pkce() -> (String, String) {
    let verifier = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// Runs the browser half: start, open the authorize URL as `user`, return (code, verifier).
async fn authorize(s: &TestServer, provider: &str, user: &str) -> (String, String) {
    let (verifier, challenge) = pkce();
    let start = expect_status(
        s.req(Method::POST, &format!("/api/v1/auth/oauth/{provider}/start"))
            .json(&json!({"redirect_uri": REDIRECT_URI, "code_challenge": challenge, "state": "xyz-state"}))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let url = start["authorize_url"].as_str().unwrap();
    assert!(
        url.contains(&format!("code_challenge={challenge}")),
        "{url}"
    );
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = browser
        .get(format!("{url}&user={user}"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_redirection(), "{}", resp.status());
    let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    let params: HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(params["state"], "xyz-state");
    (params["code"].clone(), verifier)
}

fn code_body(code: &str, verifier: &str) -> Value {
    json!({"code": code, "code_verifier": verifier, "redirect_uri": REDIRECT_URI})
}

#[tokio::test]
async fn oauth_sign_in_and_linking_via_loopback_provider() {
    for backend in backends() {
        let provider = FakeProvider::start().await;
        let (google, github) = (provider.config("google"), provider.config("github"));
        let s = TestServer::start_with(backend, |c| {
            c.oauth.google = Some(google);
            c.oauth.github = Some(github);
        })
        .await;
        let sign_in = |p: &str, body: Value| {
            s.req(Method::POST, &format!("/api/v1/auth/oauth/{p}"))
                .json(&body)
                .send()
        };

        // A wrong verifier is refused by the provider (and the code is spent).
        let (code, _) = authorize(&s, "google", "lovelace").await;
        let (_, wrong_verifier) = pkce();
        expect_error(
            sign_in("google", code_body(&code, &wrong_verifier))
                .await
                .unwrap(),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        )
        .await;

        let (code, verifier) = authorize(&s, "google", "lovelace").await;
        let first = expect_status(
            sign_in("google", code_body(&code, &verifier))
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(first["user"]["linked"], json!(["google"]));
        assert_eq!(first["user"]["username"], "lovelace");
        expect_status(profile(&s, &first["access_token"]).await, StatusCode::OK).await;
        // The same provider account signs in to the same player.
        let (code, verifier) = authorize(&s, "google", "lovelace").await;
        let again = expect_status(
            sign_in("google", code_body(&code, &verifier))
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(again["user"]["id"], first["user"]["id"]);

        // Unconfigured and unknown providers, malformed PKCE values.
        expect_error(
            sign_in("discord", code_body("c", &verifier)).await.unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        let unknown = s
            .req(Method::POST, "/api/v1/auth/oauth/myspace/start")
            .json(&json!({"redirect_uri": REDIRECT_URI, "code_challenge": pkce().1, "state": "s"}))
            .send()
            .await
            .unwrap();
        expect_error(unknown, StatusCode::NOT_FOUND, "not_found").await;
        let short_challenge = s
            .req(Method::POST, "/api/v1/auth/oauth/google/start")
            .json(&json!({"redirect_uri": REDIRECT_URI, "code_challenge": "abc", "state": "s"}))
            .send()
            .await
            .unwrap();
        expect_error(short_challenge, StatusCode::BAD_REQUEST, "invalid_request").await;

        // Device account -> link GitHub -> GitHub sign-in reaches the device account.
        let device = s.device_player().await;
        let (code, verifier) = authorize(&s, "github", "octo").await;
        let linked = expect_status(
            s.player(
                Method::POST,
                "/api/v1/auth/link/oauth/github",
                token(&device),
            )
            .json(&code_body(&code, &verifier))
            .send()
            .await
            .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(linked["linked"], json!(["device", "github"]));
        let (code, verifier) = authorize(&s, "github", "octo").await;
        let via_github = expect_status(
            sign_in("github", code_body(&code, &verifier))
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        assert_eq!(via_github["user"]["id"], device["user"]["id"]);

        // Provider accounts owned by another player: 409, for GitHub and Google alike.
        let other = s.device_player().await;
        for (p, user) in [("github", "octo"), ("google", "lovelace")] {
            let (code, verifier) = authorize(&s, p, user).await;
            let resp = s
                .player(
                    Method::POST,
                    &format!("/api/v1/auth/link/oauth/{p}"),
                    token(&other),
                )
                .json(&code_body(&code, &verifier))
                .send()
                .await
                .unwrap();
            expect_error(resp, StatusCode::CONFLICT, "conflict").await;
        }
        // A wrong verifier when linking is refused too, and links nothing.
        let (code, _) = authorize(&s, "github", "fresh").await;
        let resp = s
            .player(
                Method::POST,
                "/api/v1/auth/link/oauth/github",
                token(&other),
            )
            .json(&code_body(&code, &pkce().0))
            .send()
            .await
            .unwrap();
        expect_error(resp, StatusCode::UNAUTHORIZED, "unauthorized").await;
        let other_profile =
            expect_status(profile(&s, &other["access_token"]).await, StatusCode::OK).await;
        assert_eq!(other_profile["linked"], json!(["device"]));
        s.stop().await;
    }
}

#[tokio::test]
async fn captcha_required_solved_and_replayed() {
    for backend in backends() {
        let s = TestServer::start_with(backend, |c| {
            c.auth.captcha_required = true;
            c.auth.captcha_difficulty = 10;
        })
        .await;
        let register_with = |username: &str, captcha: Value| {
            s.req(Method::POST, "/api/v1/auth/register")
                .json(&json!({
                    "email": format!("{username}@example.com"),
                    "password": PASSWORD,
                    "username": username,
                    "captcha": captcha,
                }))
                .send()
        };
        expect_error(
            register_with("nocaptcha", Value::Null).await.unwrap(),
            StatusCode::BAD_REQUEST,
            "captcha_required",
        )
        .await;

        let fetch = || async {
            expect_status(
                s.req(Method::GET, "/api/v1/auth/captcha")
                    .send()
                    .await
                    .unwrap(),
                StatusCode::OK,
            )
            .await
        };
        let challenge = fetch().await;
        assert_eq!(challenge["difficulty"], 10);
        assert!(challenge["expires_at"].as_i64().unwrap() > s.clock.now_ms());
        let text = challenge["challenge"].as_str().unwrap();
        let nonce = solve(text, 10);
        // Insufficient work, a forged challenge: refused.
        let lazy = (0u64..)
            .map(|n| n.to_string())
            .find(|n| leading_zero_bits(text, n) < 10)
            .unwrap();
        expect_error(
            register_with("lazy", json!({"challenge": text, "nonce": lazy}))
                .await
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "captcha_required",
        )
        .await;
        let forged = format!("{}x", text);
        let forged_nonce = solve(&forged, 10);
        expect_error(
            register_with(
                "forger",
                json!({"challenge": forged, "nonce": forged_nonce}),
            )
            .await
            .unwrap(),
            StatusCode::BAD_REQUEST,
            "captcha_required",
        )
        .await;

        let solved = json!({"challenge": text, "nonce": nonce});
        let ok = expect_status(
            register_with("solver", solved.clone()).await.unwrap(),
            StatusCode::CREATED,
        )
        .await;
        assert_eq!(ok["user"]["username"], "solver");
        // Each challenge works once.
        expect_error(
            register_with("replayer", solved).await.unwrap(),
            StatusCode::BAD_REQUEST,
            "captcha_required",
        )
        .await;

        // Expired challenges are refused.
        let old = fetch().await;
        let old_text = old["challenge"].as_str().unwrap();
        let old_nonce = solve(old_text, 10);
        s.clock.advance_ms(6 * 60 * 1000);
        expect_error(
            register_with(
                "latecomer",
                json!({"challenge": old_text, "nonce": old_nonce}),
            )
            .await
            .unwrap(),
            StatusCode::BAD_REQUEST,
            "captcha_required",
        )
        .await;
        s.stop().await;
    }
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    for backend in backends() {
        // Per IP, across every auth endpoint.
        let s = TestServer::start_with(backend, |c| {
            c.rate_limit.enabled = true;
            c.rate_limit.auth_per_ip_burst = 5;
            c.rate_limit.auth_per_ip_per_minute = 1;
        })
        .await;
        for i in 0..5 {
            let resp = login(&s, &format!("user{i}@example.com"), PASSWORD).await;
            expect_error(resp, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        }
        let limited = s
            .req(Method::POST, "/api/v1/auth/device")
            .json(&json!({"device_id": "device-over-limit"}))
            .send()
            .await
            .unwrap();
        let retry_after: u64 = limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        expect_error(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
        s.stop().await;

        // Per account on login and forgot, whatever the case of the address.
        let s = TestServer::start_with(backend, |c| {
            c.rate_limit.enabled = true;
            c.rate_limit.auth_per_account_burst = 3;
            c.rate_limit.auth_per_account_per_minute = 1;
        })
        .await;
        register(&s, "target@example.com", "target", PASSWORD).await;
        for _ in 0..3 {
            let resp = login(&s, "TARGET@example.com", "guess guess guess").await;
            expect_error(resp, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        }
        let limited = login(&s, "target@example.com", PASSWORD).await;
        assert!(limited.headers().contains_key("retry-after"));
        expect_error(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
        let forgot = s
            .req(Method::POST, "/api/v1/auth/password/forgot")
            .json(&json!({"email": "target@example.com"}))
            .send()
            .await
            .unwrap();
        expect_error(forgot, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
        // Other accounts are unaffected.
        expect_error(
            login(&s, "someone.else@example.com", PASSWORD).await,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        )
        .await;
        s.stop().await;
    }
}

#[tokio::test]
async fn openapi_documents_every_auth_endpoint() {
    let s = TestServer::start(common::Backend::Sqlite).await;
    let doc = s.openapi_document().await;
    for (path, method) in [
        ("/api/v1/auth/device", "post"),
        ("/api/v1/auth/register", "post"),
        ("/api/v1/auth/login", "post"),
        ("/api/v1/auth/refresh", "post"),
        ("/api/v1/auth/logout", "post"),
        ("/api/v1/auth/profile", "get"),
        ("/api/v1/auth/profile", "put"),
        ("/api/v1/auth/link/device", "post"),
        ("/api/v1/auth/link/email", "post"),
        ("/api/v1/auth/link/oauth/{provider}", "post"),
        ("/api/v1/auth/email/verify", "post"),
        ("/api/v1/auth/password/forgot", "post"),
        ("/api/v1/auth/password/reset", "post"),
        ("/api/v1/auth/oauth/{provider}/start", "post"),
        ("/api/v1/auth/oauth/{provider}", "post"),
        ("/api/v1/auth/captcha", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from OpenAPI"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    s.stop().await;
}

#[tokio::test]
async fn oauth_names_that_look_like_a_taken_one_are_replaced() {
    for backend in backends() {
        let provider = FakeProvider::start().await;
        let google = provider.config("google");
        let s = TestServer::start_with(backend, |c| c.oauth.google = Some(google)).await;
        register(&s, "marie@example.com", "marie", PASSWORD).await;
        // `rn` looks like `m`: the provider's name is refused for a generated one.
        let (code, verifier) = authorize(&s, "google", "rnarie").await;
        let signed_in = expect_status(
            s.req(Method::POST, "/api/v1/auth/oauth/google")
                .json(&code_body(&code, &verifier))
                .send()
                .await
                .unwrap(),
            StatusCode::OK,
        )
        .await;
        let name = signed_in["user"]["username"].as_str().unwrap();
        assert!(name.starts_with("player_"), "{name}");
        s.stop().await;
    }
}

/// On PostgreSQL the sign-in and save writers and the sign-in lookups keep their connections
/// between requests (no pool hand-over and its pings). When the database drops those
/// connections (a restart, an idle timeout), the next requests must still be answered: the
/// lookups retry on a fresh connection and an idle writer checks its connection first.
#[tokio::test]
async fn hot_paths_recover_when_the_database_drops_their_connections() {
    if !backends().contains(&common::Backend::Postgres) {
        return;
    }
    let application_name = format!("aethex-test-{}", uuid::Uuid::new_v4().simple());
    let s = TestServer::start_with(common::Backend::Postgres, |config| {
        config.database_url = format!(
            "{}&application_name={application_name}",
            config.database_url
        );
    })
    .await;
    let device = format!("device-{}", uuid::Uuid::new_v4());
    // Every kept connection is opened: a registration, a returning sign-in, a refresh, a save.
    device_sign_in(&s, &device).await;
    let auth = device_sign_in(&s, &device).await;
    let auth = expect_status(refresh(&s, &auth["refresh_token"]).await, StatusCode::OK).await;
    assert_eq!(save_main(&s, &auth, 0).await["version"], 1);

    let mut admin = common::pg_admin().await;
    let terminated: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&application_name)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(
        !terminated.is_empty(),
        "the server's connections are found by name"
    );
    // Longer than the writers' idle check.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;

    let auth = device_sign_in(&s, &device).await;
    let auth = expect_status(refresh(&s, &auth["refresh_token"]).await, StatusCode::OK).await;
    assert_eq!(save_main(&s, &auth, 1).await["version"], 2);
    s.stop().await;
}

async fn device_sign_in(s: &TestServer, device_id: &str) -> Value {
    let resp = s
        .req(Method::POST, "/api/v1/auth/device")
        .json(&json!({ "device_id": device_id }))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await
}

/// Writes slot `main` based on `base_version`; returns the answer.
async fn save_main(s: &TestServer, auth: &Value, base_version: i64) -> Value {
    let resp = s
        .player(Method::POST, "/api/v1/saves/me", token(auth))
        .json(&json!({"slot": "main", "data": {"v": base_version}, "base_version": base_version}))
        .send()
        .await
        .unwrap();
    expect_status(resp, StatusCode::OK).await
}
