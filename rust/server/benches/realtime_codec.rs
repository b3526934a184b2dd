//! The relay's per-update codec cost: reading a JSON `player_state_update` and making the one
//! `state_update` frame all recipients share, by the general path (the protocol's `ClientFrame`,
//! the state parsed into a `serde_json::Value` and serialized again) against the server's fast
//! path (the state kept as validated JSON text), measured in the same run. Also the extra cost
//! when MessagePack recipients are in the room (one more serialization per update).
//!
//! `cargo bench -p aethex-server --bench realtime_codec`
//!
//! Single-threaded, in-process: no sockets, so it isolates what the fast path changes. The
//! relay's end-to-end throughput is the relay bench's business.

use std::hint::black_box;
use std::time::Instant;

use aethex_protocol::realtime::{ClientFrame, ClientMessage, ServerMessage, StateEntry};
use aethex_server::realtime::conn::{encode, RelayedState, StatePayload, StateUpdate};
use aethex_server::realtime::socket::JsonStateUpdate;

const UPDATES: u64 = 200_000;
const ROOM: &str = "01938f2e-7a9c-7d43-9b1e-6f0c2d4e8a11";
const SENDER: &str = "01938f2e-0000-7d43-9b1e-6f0c2d4e8a12";

/// Typical game states: a small transform, and a bigger one with an inventory-like array.
fn frames() -> Vec<(&'static str, String)> {
    let small = r#"{"position":{"x":12.5,"y":-3.25,"z":0.0},"rotation":1.5707963,"health":87,"anim":"run"}"#;
    let items: Vec<String> = (0..40)
        .map(|i| {
            format!(
                r#"{{"id":{i},"name":"item {i}","count":{},"pos":[{i}.5,2.25]}}"#,
                i * 3
            )
        })
        .collect();
    let large = format!(
        r#"{{"position":[1.5,2.5,3.5],"velocity":[0.1,0.0,-9.81],"inventory":[{}]}}"#,
        items.join(",")
    );
    [("small", small.to_owned()), ("large", large)]
        .into_iter()
        .map(|(name, state)| {
            (
                name,
                format!(r#"{{"type":"player_state_update","room_id":"{ROOM}","state":{state}}}"#),
            )
        })
        .collect()
}

fn general(frame: &str, seq: u64) -> usize {
    let parsed: ClientFrame = serde_json::from_str(frame).unwrap();
    let ClientMessage::PlayerStateUpdate { room_id, state, .. } = parsed.message else {
        unreachable!()
    };
    let out = encode(
        None,
        ServerMessage::StateUpdate {
            room_id,
            updates: vec![StateEntry {
                from: SENDER.into(),
                seq,
                state,
            }],
        },
    );
    out.json().len()
}

fn fast(frame: &str, seq: u64, msgpack: bool) -> usize {
    let update = JsonStateUpdate::parse(frame.as_bytes()).unwrap();
    let out = encode(
        None,
        StateUpdate {
            room_id: update.room_id,
            updates: vec![RelayedState {
                from: SENDER.into(),
                seq,
                state: StatePayload::Json(update.state),
            }],
        },
    );
    out.json().len() + if msgpack { out.msgpack().len() } else { 0 }
}

fn measure(run: impl Fn(u64) -> usize) -> f64 {
    let started = Instant::now();
    let mut bytes = 0;
    for seq in 0..UPDATES {
        bytes += run(seq);
    }
    black_box(bytes);
    started.elapsed().as_nanos() as f64 / UPDATES as f64
}

fn main() {
    println!("{UPDATES} updates per row, one thread; ns per update (updates/s)");
    for (name, frame) in frames() {
        // Same output bytes on both paths.
        assert_eq!(general(&frame, 1), fast(&frame, 1, false));
        // Warm-up.
        measure(|seq| general(&frame, seq) + fast(&frame, seq, true));
        let base = measure(|seq| general(&frame, seq));
        let quick = measure(|seq| fast(&frame, seq, false));
        let both = measure(|seq| fast(&frame, seq, true));
        let rate = |ns: f64| 1e9 / ns;
        println!(
            "{name:>5} state ({} bytes): general {base:>7.0} ns ({:>9.0}/s) | fast {quick:>7.0} ns ({:>9.0}/s), {:.1}x | fast + MessagePack recipients {both:>7.0} ns ({:>9.0}/s)",
            frame.len(),
            rate(base),
            rate(quick),
            base / quick,
            rate(both),
        );
    }
}
