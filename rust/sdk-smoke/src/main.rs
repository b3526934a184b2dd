//! A player's first minute, as a standalone program: sign in with a device id, save a slot, then a
//! second client (a game restarted) resumes the stored session and loads the slot back.
//!
//! `aethex-sdk-smoke <server url> <client key>`; prints `smoke ok ...` and exits 0, or prints what failed
//! and exits 1. Built for Windows (scripts/test) and run under wine against the Linux server by
//! `rust/sdk/tests/windows_smoke.rs`, so the SDK's Windows build (WinSock, rustls, the Credential
//! Manager keyring, the file store) is exercised end to end. The session stays in the credential
//! store (service `aethex-smoke-<nonce>`) so the test can find it there: run it in a throwaway
//! wine prefix or Windows account.

use std::time::{Duration, Instant};

use aethex_sdk::{Client, ClientConfig, CredentialStore, Event, RequestId, Value};

const DEADLINE: Duration = Duration::from_secs(30);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, key] = args.as_slice() else {
        eprintln!("usage: aethex-sdk-smoke <server url> <client key>");
        std::process::exit(2);
    };
    match run(url, key) {
        Ok(summary) => println!("smoke ok: {summary}"),
        Err(failure) => {
            eprintln!("smoke failed: {failure}");
            std::process::exit(1);
        }
    }
}

fn run(url: &str, key: &str) -> Result<String, String> {
    // A fresh folder per run: a session left by an earlier run must not make resume pass.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("aethex-smoke-{nonce}"));
    let config = || {
        let mut config = ClientConfig::new(url, key, &dir);
        // The store games get by default: the OS credential store (Credential Manager on
        // Windows), the encrypted file only as a fallback.
        config.credential_store = CredentialStore::Keyring {
            service: format!("aethex-smoke-{nonce}"),
        };
        config
    };
    let data = Value::dict([
        ("level", Value::Int(7)),
        ("name", Value::String("Ünïcode hero".into())),
        (
            "position",
            Value::Array(vec![Value::Float(1.5), Value::Float(-2.25)]),
        ),
    ]);

    let first = Client::new(config()).map_err(|e| format!("client: {e:?}"))?;
    let id = first
        .auth()
        .login_device(Some(format!("windows-smoke-{nonce}")));
    let login = wait(&first, id).map_err(|e| format!("login_device: {e}"))?;
    let user_id = login
        .get("user")
        .and_then(|u| u.get("id"))
        .cloned()
        .ok_or("login_device answered without user.id")?;
    let id = first.saves().save("smoke".into(), data.clone(), None);
    wait(&first, id).map_err(|e| format!("save: {e}"))?;
    first.shutdown_and_wait(Duration::from_secs(2));
    drop(first);

    let second = Client::new(config()).map_err(|e| format!("client: {e:?}"))?;
    let id = second.auth().resume_session();
    let resumed = wait(&second, id).map_err(|e| format!("resume_session: {e}"))?;
    let resumed_id = resumed.get("user").and_then(|u| u.get("id"));
    if resumed_id != Some(&user_id) {
        return Err(format!(
            "resumed as {resumed_id:?}, signed in as {user_id:?}"
        ));
    }
    let id = second.saves().load("smoke".into());
    let loaded = wait(&second, id).map_err(|e| format!("load: {e}"))?;
    if loaded.get("data") != Some(&data) {
        return Err(format!("loaded {:?}, saved {data:?}", loaded.get("data")));
    }
    second.shutdown_and_wait(Duration::from_secs(2));
    drop(second);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(format!(
        "user {user_id:?} signed in, saved, resumed and loaded"
    ))
}

/// Drains `client`'s events until `request` completes (other events are dropped).
fn wait(client: &Client, request: RequestId) -> Result<Value, String> {
    let end = Instant::now() + DEADLINE;
    let mut events = Vec::new();
    loop {
        client.drain_events(&mut events, usize::MAX);
        for event in events.drain(..) {
            if let Event::Completed {
                request: r,
                outcome,
            } = event
            {
                if r == request {
                    return outcome.map_err(|e| format!("{e:?}"));
                }
            }
        }
        if Instant::now() > end {
            return Err(format!("no answer within {DEADLINE:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
