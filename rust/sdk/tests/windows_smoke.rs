//! The SDK's Windows build against the real server: `rust/sdk-smoke` cross-built for
//! x86_64-pc-windows-gnu and run under wine signs in, saves, resumes its session from the
//! Credential Manager and loads the save back, over loopback.
//!
//! Runs when `AETHEX_TEST_WINDOWS_SMOKE` names the smoke .exe (scripts/test sets it after the
//! Windows build); without it there is no Windows binary to run and the test says so.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_smoke_binary_signs_in_saves_and_resumes_under_wine() {
    let Some(exe) = std::env::var_os("AETHEX_TEST_WINDOWS_SMOKE").filter(|v| !v.is_empty()) else {
        eprintln!("AETHEX_TEST_WINDOWS_SMOKE unset: no Windows smoke binary to run");
        return;
    };
    let server = RealServer::start().await;
    // A prefix of our own: wine creates it on first use, and nothing of the machine's is touched.
    let prefix = tempfile::tempdir().unwrap();
    let mut run = tokio::process::Command::new("wine");
    run.arg(&exe)
        .arg(&server.url)
        .arg(&server.client_key)
        .env("WINEPREFIX", prefix.path())
        .env("WINEDEBUG", "-all")
        // No display here: keep wine from looking for one or offering to install Mono/Gecko.
        .env("DISPLAY", "")
        .env("WINEDLLOVERRIDES", "mscoree,mshtml=")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // The first run also builds the prefix (wineboot), which takes a while on a busy machine.
    let out = tokio::time::timeout(Duration::from_secs(300), run.output())
        .await
        .expect("the smoke binary finishes within 300 s")
        .expect("wine runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("smoke ok"),
        "smoke under wine: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );

    // The session went to the Credential Manager, which wine keeps in the prefix's registry.
    let creds = tokio::process::Command::new("wine")
        .args([
            "reg",
            "query",
            r"HKCU\Software\Wine\Credential Manager",
            "/s",
        ])
        .env("WINEPREFIX", prefix.path())
        .env("WINEDEBUG", "-all")
        .env("DISPLAY", "")
        .output()
        .await
        .expect("wine reg runs");
    let listing = String::from_utf8_lossy(&creds.stdout);
    assert!(
        listing.contains("aethex-smoke"),
        "no aethex-smoke credential in wine's Credential Manager:\n{listing}"
    );

    // Wine's server outlives the programs it ran; end this prefix's one before removing it.
    let _ = tokio::process::Command::new("wineserver")
        .arg("-k")
        .env("WINEPREFIX", prefix.path())
        .status()
        .await;
    server.finish().await;
}
