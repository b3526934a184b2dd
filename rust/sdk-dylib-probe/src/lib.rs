//! The SDK built as a cdylib, for `tests/unload.rs`: one exported call signs a client in with the
//! OS credential store selected, opens the realtime socket (a room), then shuts it down the way
//! the Godot binding does at deinit.

use std::ffi::{c_char, c_int, CStr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aethex_sdk::{Client, ClientConfig, CredentialStore, Event, RequestId, Value};

/// Signs in with device id `device` against `api_url`, creates a room on the realtime socket,
/// then `shutdown_and_wait`s. Returns 0 on success, 1 when a call failed, 2 on a timeout, 3 for
/// bad arguments.
///
/// # Safety
/// Every argument is a NUL-terminated string that stays valid for the call.
#[no_mangle]
pub unsafe extern "C" fn aethex_probe_sign_in(
    api_url: *const c_char,
    client_key: *const c_char,
    data_dir: *const c_char,
    device: *const c_char,
) -> c_int {
    // SAFETY: the caller passes NUL-terminated strings (see above).
    let text = |p: *const c_char| unsafe { CStr::from_ptr(p) }.to_str().ok();
    let (Some(api_url), Some(client_key), Some(data_dir), Some(device)) = (
        text(api_url),
        text(client_key),
        text(data_dir),
        text(device),
    ) else {
        return 3;
    };
    let mut config = ClientConfig::new(api_url, client_key, PathBuf::from(data_dir));
    // The path under test: the OS store first (it fails without a Secret Service daemon and the
    // SDK falls back to the file), as games configure it.
    config.credential_store = CredentialStore::Keyring {
        service: "aethex-dylib-probe".into(),
    };
    let Ok(client) = Client::new(config) else {
        return 1;
    };
    let mut outcome = wait(&client, client.auth().login_device(Some(device.to_owned())));
    if outcome == 0 {
        outcome = wait(&client, client.multiplayer().create_room(Value::Nil));
    }
    client.shutdown_and_wait(Duration::from_secs(5));
    outcome
}

/// 0 when `request` succeeded, 1 when it failed, 2 when it did not complete in time.
fn wait(client: &Client, request: RequestId) -> c_int {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut events = Vec::new();
    loop {
        client.drain_events(&mut events, 64);
        let done = events.iter().find_map(|e| match e {
            Event::Completed {
                request: r,
                outcome,
            } if *r == request => Some(outcome.is_ok()),
            _ => None,
        });
        match done {
            Some(true) => return 0,
            Some(false) => return 1,
            None if Instant::now() > deadline => return 2,
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}
