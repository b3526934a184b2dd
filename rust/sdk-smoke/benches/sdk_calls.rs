//! What a GDScript call costs on the Rust side of the binding, in the profile this bench is built
//! with: the two calls issue 13 timed inside Godot (`auth.is_logged_in()`, `saves.save(slot,
//! dict)`) plus `auth.current_user()` and `saves.sync_status()`, each as the SDK call the binding
//! makes. Godot's Variant conversion is not included (Godot types need the engine).
//!
//!     cargo bench -p aethex-sdk-smoke --bench sdk_calls --profile godot-debug    # the `debug` library
//!     cargo bench -p aethex-sdk-smoke --bench sdk_calls --profile godot-release  # the `release` one
//!     cargo bench -p aethex-sdk-smoke --bench sdk_calls --profile dev            # an unoptimized build
//!
//! Baseline in the same run: one clone of the save data (the copy the binding's Variant -> Value
//! conversion makes anyway). No server: the calls only queue work for the SDK's runtime threads,
//! which fail to connect to a closed loopback port in the background and keep the saves queued.

use std::hint::black_box;
use std::time::{Duration, Instant};

use aethex_sdk::{Client, ClientConfig, CredentialStore, Value};

const CALLS: usize = 2_000;

fn measure(name: &str, baseline: Option<Duration>, mut call: impl FnMut(usize)) -> Duration {
    let mut samples: Vec<Duration> = (0..CALLS)
        .map(|i| {
            let t = Instant::now();
            call(i);
            t.elapsed()
        })
        .collect();
    samples.sort();
    let median = samples[CALLS / 2];
    let p99 = samples[CALLS * 99 / 100];
    let ratio = baseline.map_or(String::new(), |b| {
        format!(" = {:.3}x baseline", median.as_secs_f64() / b.as_secs_f64())
    });
    println!("{name:<36} median={median:>9.2?} p99={p99:>9.2?}{ratio}");
    median
}

fn main() {
    println!(
        "debug assertions: {}",
        if cfg!(debug_assertions) { "on" } else { "off" }
    );
    // A port just released: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("loopback port")
        .port();
    let dir = tempfile_dir();
    let mut config = ClientConfig::new(format!("http://127.0.0.1:{port}"), "bench-key", &dir);
    config.credential_store = CredentialStore::FileOnly;
    let client = Client::new(config).expect("client starts");

    let save = Value::dict([
        ("level", Value::Int(5)),
        ("position", Value::Vector3([10.0, 0.0, 20.0])),
        ("name", Value::String("hero".into())),
        (
            "inventory",
            Value::PackedStringArray((0..32).map(|i| format!("item{i}")).collect()),
        ),
    ]);

    let baseline = measure("baseline: clone of the save data", None, |_| {
        black_box(save.clone());
    });
    measure("auth().is_logged_in()", Some(baseline), |_| {
        black_box(client.auth().is_logged_in());
    });
    measure("auth().current_user()", Some(baseline), |_| {
        black_box(client.auth().current_user());
    });
    measure("saves().save(slot, data, None)", Some(baseline), |i| {
        black_box(
            client
                .saves()
                .save(format!("slot{}", i % 8), save.clone(), None),
        );
    });
    measure("saves().sync_status()", Some(baseline), |_| {
        black_box(client.saves().sync_status());
    });
    client.shutdown_and_wait(Duration::from_secs(2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh folder for the client's files (no tempfile: this crate has no dev-dependencies, so
/// the bench builds from the addon's own dependency tree).
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("aethex-godot-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
