//! Voice: CPU per stream and mouth-to-ear latency over loopback. Not a test: run
//! `cargo bench -p aethex-sdk --bench voice` and read the figures.
//!
//! - CPU: one 20 ms frame through the whole pipeline (Opus encode, AES-GCM seal, open, jitter
//!   buffer, Opus decode) beside bare Opus encode + decode measured in the same run; streams per
//!   core = 20 ms / the pipeline's time per frame.
//! - Latency: from `push_capture` of the first frame of a talkspurt to the moment the listener's
//!   `pull_playback` returns it, through the real server's relay on loopback (two clients in one
//!   process), beside a same-size unencrypted `send_packet` through the same relay. Mouth-to-ear
//!   adds what the device path and the playout add: the 20 ms of a frame being captured and the
//!   jitter buffer's depth (printed).

use std::time::{Duration, Instant};

use aethex_sdk::multiplayer::voice::codec::{VoiceDecoder, VoiceEncoder, FRAME_SAMPLES};
use aethex_sdk::multiplayer::voice::e2ee::VoiceSession;
use aethex_sdk::multiplayer::voice::jitter::{JitterBuffer, DEFAULT_TARGET_DEPTH};
use aethex_sdk::{Client, ClientConfig, CredentialStore, Event, Value};

const FRAMES: usize = 2_000;

fn tone(i: usize) -> Vec<f32> {
    (0..FRAME_SAMPLES)
        .map(|s| {
            let t = (i * FRAME_SAMPLES + s) as f32 / 48_000.0;
            0.4 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()
                + 0.1 * (2.0 * std::f32::consts::PI * 1330.0 * t).sin()
        })
        .collect()
}

fn stats(name: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    println!(
        "{name:<52} n={:<5} median={:>9.2?} p99={:>9.2?} max={:>9.2?}",
        samples.len(),
        at(0.5),
        at(0.99),
        samples[samples.len() - 1]
    );
    at(0.5)
}

fn cpu() {
    let frames: Vec<Vec<f32>> = (0..FRAMES).map(tone).collect();

    let mut encoder = VoiceEncoder::new(32_000).unwrap();
    let mut decoder = VoiceDecoder::new().unwrap();
    let start = Instant::now();
    for frame in &frames {
        let packet = encoder.encode(frame).unwrap();
        std::hint::black_box(decoder.decode(&packet).unwrap());
    }
    let bare = start.elapsed() / FRAMES as u32;

    // Sender and receiver sessions that agreed keys, as two members would.
    let mut speaker = VoiceSession::new("room", "speaker");
    let mut listener = VoiceSession::new("room", "listener");
    for reply in listener.receive("speaker", &speaker.hello().data).unwrap() {
        speaker.receive("listener", &reply.data).unwrap();
    }
    let rotated = speaker.rotate().unwrap();
    listener.receive("speaker", &rotated.data).unwrap();

    let mut encoder = VoiceEncoder::new(32_000).unwrap();
    let mut jitter = JitterBuffer::new(DEFAULT_TARGET_DEPTH).unwrap();
    let start = Instant::now();
    for frame in &frames {
        let packet = encoder.encode(frame).unwrap();
        let sealed = speaker.seal(&packet);
        let (seq, opened) = listener.open("speaker", &sealed).unwrap();
        jitter.push(seq, opened);
        std::hint::black_box(jitter.pull().unwrap());
    }
    let full = start.elapsed() / FRAMES as u32;
    let frame_time = Duration::from_millis(20);
    println!("voice CPU per 20 ms frame, {FRAMES} frames, 32 kbit/s, FEC on:");
    println!(
        "  baseline: bare Opus encode + decode            {bare:>9.2?}  ({:.0} streams/core)",
        frame_time.as_secs_f64() / bare.as_secs_f64()
    );
    println!(
        "  pipeline: encode + seal + open + jitter + decode {full:>9.2?}  ({:.0} streams/core, {:.2}x baseline)",
        frame_time.as_secs_f64() / full.as_secs_f64(),
        full.as_secs_f64() / bare.as_secs_f64()
    );
}

fn signed_in_client(url: &str, key: &str, dir: &std::path::Path, device: &str) -> Client {
    let mut config = ClientConfig::new(url, key, dir);
    config.credential_store = CredentialStore::FileOnly;
    let client = Client::new(config).unwrap();
    let id = client.auth().login_device(Some(device.into()));
    wait_for(&client, id);
    client
}

fn wait_for(client: &Client, request: aethex_sdk::RequestId) -> Value {
    let end = Instant::now() + Duration::from_secs(20);
    let mut events = Vec::new();
    loop {
        client.drain_events(&mut events, usize::MAX);
        for e in events.drain(..) {
            if let Event::Completed {
                request: r,
                outcome,
            } = e
            {
                if r == request {
                    return outcome.expect("call succeeds");
                }
            }
        }
        assert!(Instant::now() < end, "call timed out");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn field(v: &Value, key: &str) -> Value {
    let Value::Dictionary(pairs) = v else {
        panic!("{v:?}")
    };
    pairs
        .iter()
        .find(|(k, _)| *k == Value::String(key.into()))
        .map(|p| p.1.clone())
        .unwrap_or(Value::Nil)
}

fn latency() {
    let mock = aethex_mock::MockServer::builder()
        .start_blocking()
        .expect("server starts");
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = signed_in_client(&mock.url(), mock.client_key(), da.path(), "bench-voice-a1");
    let b = signed_in_client(&mock.url(), mock.client_key(), db.path(), "bench-voice-b1");
    let room = wait_for(&a, a.multiplayer().create_room(Value::Nil));
    let Value::String(room_id) = field(&room, "room_id") else {
        panic!("{room:?}")
    };
    wait_for(&b, b.multiplayer().join_room(room_id.clone()));
    let Value::Array(members) = field(&room, "members") else {
        panic!("{room:?}")
    };
    let Value::String(a_id) = field(&members[0], "user_id") else {
        panic!("{room:?}")
    };
    run_latency(&a, &b, &a_id);
}

fn run_latency(a: &Client, b: &Client, a_id: &str) {
    let (va, vb) = (a.multiplayer().voice(), b.multiplayer().voice());
    va.enable(true);
    vb.enable(true);
    // Play out the first frame of a talkspurt at once, to time the path itself.
    vb.set_jitter_frames(1).unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while !matches!(field(&va.state(), "secure_peers"), Value::PackedStringArray(p) if !p.is_empty())
        || !matches!(field(&vb.state(), "secure_peers"), Value::PackedStringArray(p) if !p.is_empty())
    {
        assert!(Instant::now() < end, "keys never agreed");
        std::thread::sleep(Duration::from_millis(5));
    }

    let samples = 200;
    let mut voice = Vec::new();
    let mut sink = Vec::new();
    for i in 0..samples {
        let frame = tone(i);
        let sent = Instant::now();
        va.push_capture(&frame).unwrap();
        loop {
            if vb.pull_playback(a_id).is_some() {
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(5),
                "frame {i} never played"
            );
            std::hint::spin_loop();
        }
        voice.push(sent.elapsed());
        // Silence until the VAD closes and the listener's buffer goes idle again.
        for _ in 0..20 {
            va.push_capture(&[0.0; FRAME_SAMPLES]).unwrap();
        }
        std::thread::sleep(Duration::from_millis(60));
        while vb.pull_playback(a_id).is_some() {}
        a.drain_events(&mut sink, usize::MAX);
        b.drain_events(&mut sink, usize::MAX);
        sink.clear();
    }

    // The same relay without voice: a plain packet of a voice frame's size.
    let packet = vec![0x5a; 100];
    let mut relay = Vec::new();
    for _ in 0..samples {
        let sent = Instant::now();
        a.multiplayer()
            .send_packet(None, packet.clone(), None, 0, false);
        'arrived: loop {
            b.drain_events(&mut sink, usize::MAX);
            for e in sink.drain(..) {
                if matches!(
                    e,
                    Event::Signal {
                        name: "packet_received",
                        ..
                    }
                ) {
                    break 'arrived;
                }
            }
            assert!(
                sent.elapsed() < Duration::from_secs(5),
                "packet never arrived"
            );
            std::hint::spin_loop();
        }
        relay.push(sent.elapsed());
        a.drain_events(&mut sink, usize::MAX);
        sink.clear();
    }
    println!("latency over loopback (real server router, two clients in one process):");
    let base = stats("  baseline: plain relay packet, send to arrival", relay);
    let path = stats(
        "  voice: push_capture to pull_playback (first frame)",
        voice,
    );
    println!(
        "  voice path / baseline: {:.2}x; mouth-to-ear excluding the device = 20 ms capture frame \
         + {:.2?} + {} x 20 ms waiting for the next frame to fill the jitter buffer (default \
         depth {}) = {:.1} ms",
        path.as_secs_f64() / base.as_secs_f64(),
        path,
        DEFAULT_TARGET_DEPTH - 1,
        DEFAULT_TARGET_DEPTH,
        20.0 + path.as_secs_f64() * 1000.0 + (DEFAULT_TARGET_DEPTH as f64 - 1.0) * 20.0
    );
}

fn main() {
    cpu();
    latency();
}
