//! Voice chat through the real server's relay on loopback: two SDK clients exchange real Opus
//! audio (sine tones; the receiver checks the dominant frequency with the Goertzel algorithm),
//! 10% loss is concealed, the relay carries only ciphertext, a muted player is not played, and
//! a member who leaves cannot decrypt what is said after.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aethex_protocol::realtime::{ClientFrame, ClientMessage, ServerFrame, ServerMessage};
use aethex_protocol::CLIENT_KEY_HEADER;
use aethex_sdk::multiplayer::voice::codec::{VoiceDecoder, FRAME_SAMPLES, SAMPLE_RATE};
use aethex_sdk::multiplayer::voice::e2ee::{frame_position, E2eeError, KeyMessage, VoiceSession};
use aethex_sdk::multiplayer::voice::VoiceTransport;
use aethex_sdk::{SdkError, Value};
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const VOICE: &str = "multiplayer.voice";
const FRAME_TIME: Duration = Duration::from_millis(20);
/// The listeners' jitter buffers: 200 ms, so a scheduling stall of the shared test machine is
/// not mistaken for the end of a talkspurt (the default 40 ms is for real networks).
const JITTER_FRAMES: usize = 10;
/// Frequencies the tone is checked against: the two sent and some in between and around.
const PROBES: [f32; 6] = [300.0, 440.0, 600.0, 800.0, 1000.0, 1400.0];

/// Frame `i` of a continuous sine tone at `freq`, amplitude 0.5.
fn tone_frame(freq: f32, i: usize) -> Vec<f32> {
    (0..FRAME_SAMPLES)
        .map(|s| {
            let t = (i * FRAME_SAMPLES + s) as f32 / SAMPLE_RATE as f32;
            0.5 * (2.0 * std::f32::consts::PI * freq * t).sin()
        })
        .collect()
}

/// Power of `freq` in `samples` (Goertzel).
fn goertzel(samples: &[f32], freq: f32) -> f64 {
    let w = 2.0 * std::f64::consts::PI * f64::from(freq) / f64::from(SAMPLE_RATE);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// The probe frequency with the most power in `samples`, and its share of the probes' power.
fn dominant(samples: &[f32]) -> (f32, f64) {
    let powers: Vec<(f32, f64)> = PROBES.iter().map(|&f| (f, goertzel(samples, f))).collect();
    let total: f64 = powers.iter().map(|p| p.1).sum();
    let best = powers
        .iter()
        .copied()
        .fold((0.0, -1.0), |a, b| if b.1 > a.1 { b } else { a });
    (best.0, if total > 0.0 { best.1 / total } else { 0.0 })
}

fn rms(samples: &[f32]) -> f32 {
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt()
}

fn dict_get<'a>(v: &'a Value, key: &str) -> &'a Value {
    let Value::Dictionary(pairs) = v else {
        panic!("not a Dictionary: {v:?}")
    };
    &pairs
        .iter()
        .find(|(k, _)| *k == Value::String(key.into()))
        .unwrap_or_else(|| panic!("no {key} in {v:?}"))
        .1
}

fn secure_peers(probe: &Probe) -> Vec<String> {
    match dict_get(&probe.client.multiplayer().voice().state(), "secure_peers") {
        Value::PackedStringArray(ids) => ids.clone(),
        other => panic!("{other:?}"),
    }
}

/// Waits until `probe` holds the sender keys of exactly `peers`.
async fn wait_secure(probe: &Probe, peers: &[&str]) {
    let mut want: Vec<String> = peers.iter().map(|p| p.to_string()).collect();
    want.sort();
    let end = Instant::now() + DEADLINE;
    while secure_peers(probe) != want {
        assert!(
            Instant::now() < end,
            "keys never agreed: {:?} instead of {want:?}",
            secure_peers(probe)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The relay, dropping a pseudo-random 10% of the frames (keys always go through).
struct Lossy {
    inner: Arc<dyn VoiceTransport>,
    state: AtomicU64,
    dropped: AtomicU64,
}

impl VoiceTransport for Lossy {
    fn send_frame(&self, room_id: &str, frame: Vec<u8>) -> Result<(), SdkError> {
        // xorshift: the same loss pattern every run.
        let mut x = self.state.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state.store(x, Ordering::Relaxed);
        if x.is_multiple_of(10) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        self.inner.send_frame(room_id, frame)
    }

    fn send_key(&self, room_id: &str, message: KeyMessage) -> Result<(), SdkError> {
        self.inner.send_key(room_id, message)
    }
}

/// The relay, counting the frames sent.
struct Counting {
    inner: Arc<dyn VoiceTransport>,
    frames: AtomicU64,
}

impl VoiceTransport for Counting {
    fn send_frame(&self, room_id: &str, frame: Vec<u8>) -> Result<(), SdkError> {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.inner.send_frame(room_id, frame)
    }

    fn send_key(&self, room_id: &str, message: KeyMessage) -> Result<(), SdkError> {
        self.inner.send_key(room_id, message)
    }
}

/// Speaks `frames` frames of a tone at `freq` from `speaker` in real time while `listener` pulls
/// the speaker's voice at the same pace; what the listener played, frame by frame from its
/// first (`None`: nothing to play at that pull).
async fn talk(
    speaker: &Probe,
    speaker_id: &str,
    freq: f32,
    listener: &Probe,
    frames: usize,
    start_frame: usize,
) -> Vec<Option<Vec<f32>>> {
    let mut heard = Vec::new();
    let mut tick = tokio::time::interval(FRAME_TIME);
    // A stalled test task resumes at pace instead of pushing and pulling a burst at once (two
    // clocks that stall together, unlike a real microphone and speaker).
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // After the last frame, pull until the listener's buffer has run dry (bounded).
    for i in 0..frames + 60 {
        tick.tick().await;
        if i < frames {
            speaker
                .client
                .multiplayer()
                .voice()
                .push_capture(&tone_frame(freq, start_frame + i))
                .unwrap();
        }
        let frame = listener
            .client
            .multiplayer()
            .voice()
            .pull_playback(speaker_id);
        let ran_dry = frame.is_none() && !heard.is_empty();
        if frame.is_some() || !heard.is_empty() {
            heard.push(frame);
        }
        if i >= frames && (ran_dry || (heard.is_empty() && i >= frames + JITTER_FRAMES + 8)) {
            break;
        }
    }
    heard
}

/// The played frames of a talkspurt, asserted continuous (no gap from the first frame to the
/// last), joined.
fn continuous(heard: &[Option<Vec<f32>>]) -> Vec<f32> {
    let end = heard
        .iter()
        .rposition(Option::is_some)
        .expect("something played");
    assert!(
        heard[..=end].iter().all(Option::is_some),
        "playout had gaps: {:?}",
        heard.iter().map(Option::is_some).collect::<Vec<_>>()
    );
    heard[..=end].iter().flatten().flatten().copied().collect()
}

/// Asserts `freq` dominates every 100 ms of `samples` after the first (the decoder's ramp-up).
fn assert_tone(samples: &[f32], freq: f32) {
    let window = 5 * FRAME_SAMPLES;
    let mut windows = 0;
    for chunk in samples[window..].chunks_exact(window) {
        let (found, share) = dominant(chunk);
        assert_eq!(
            found, freq,
            "window {windows}: {found} Hz dominates, not {freq}"
        );
        assert!(
            share > 0.8,
            "window {windows}: {freq} Hz is only {share:.2} of the power"
        );
        assert!(rms(chunk) > 0.1, "window {windows} is near silent");
        windows += 1;
    }
    assert!(windows >= 5, "only {windows} windows of audio");
}

async fn voice_player(server: &RealServer, device: &str) -> (Probe, String, tempfile::TempDir) {
    let (probe, id, dir) = player(server, &server.url, device).await;
    let voice = probe.client.multiplayer().voice();
    voice.set_jitter_frames(JITTER_FRAMES).unwrap();
    voice.enable(true);
    (probe, id, dir)
}

#[tokio::test]
async fn two_players_hear_each_others_tones_with_ten_percent_loss_concealed() {
    let server = RealServer::start().await;
    let (mut a, a_id, _da) = voice_player(&server, "voice-tone-a").await;
    let (mut b, b_id, _db) = voice_player(&server, "voice-tone-b").await;
    room_with(&mut a, &mut [&mut b]).await;
    wait_secure(&a, &[b_id.as_str()]).await;
    wait_secure(&b, &[a_id.as_str()]).await;
    let state = b.client.multiplayer().voice().state();
    assert_eq!(dict_get(&state, "enabled"), &Value::Bool(true));

    // A's frames lose 10% on the way.
    let lossy = Arc::new(Lossy {
        inner: a.client.multiplayer().voice().relay_transport(),
        state: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
        dropped: AtomicU64::new(0),
    });
    a.client.multiplayer().voice().set_transport(lossy.clone());

    let frames = 150;
    let heard_from_a = talk(&a, &a_id, 440.0, &b, frames, 0).await;
    let heard_from_b = talk(&b, &b_id, 1000.0, &a, frames, 0).await;

    let dropped = lossy.dropped.load(Ordering::Relaxed);
    assert!(
        (8..=25).contains(&dropped),
        "{dropped} of {frames} frames dropped, expected about 10%"
    );
    let from_a = continuous(&heard_from_a);
    assert!(
        from_a.len() >= (frames - 5) * FRAME_SAMPLES,
        "{} samples",
        from_a.len()
    );
    assert_tone(&from_a, 440.0);
    let stats = b.client.multiplayer().voice().playout_stats(&a_id).unwrap();
    assert!(
        stats.recovered + stats.concealed >= dropped.saturating_sub(2),
        "losses not covered: {stats:?} for {dropped} dropped"
    );
    assert!(stats.recovered > 0, "FEC never used: {stats:?}");

    assert_tone(&continuous(&heard_from_b), 1000.0);
    let clean = a.client.multiplayer().voice().playout_stats(&b_id).unwrap();
    assert_eq!(clean.recovered, 0, "{clean:?}");

    // Both saw the other speak, then stop.
    let speaking: Vec<Vec<Value>> = b.take_signals(VOICE, "player_speaking");
    assert!(speaking.contains(&vec![Value::String(a_id.clone()), Value::Bool(true)]));
    assert!(speaking.contains(&vec![Value::String(a_id.clone()), Value::Bool(false)]));
    assert!(
        speaking.contains(&vec![Value::String(b_id.clone()), Value::Bool(true)]),
        "the local player's own transmit shows too: {speaking:?}"
    );
    server.finish().await;
}

#[tokio::test]
async fn a_muted_player_is_not_played_and_push_to_talk_gates_sending() {
    let server = RealServer::start().await;
    let (mut a, a_id, _da) = voice_player(&server, "voice-mute-a").await;
    let (mut b, b_id, _db) = voice_player(&server, "voice-mute-b").await;
    room_with(&mut a, &mut [&mut b]).await;
    wait_secure(&a, &[b_id.as_str()]).await;
    wait_secure(&b, &[a_id.as_str()]).await;

    b.client.multiplayer().voice().mute_player(&a_id, true);
    assert!(b.client.multiplayer().voice().is_muted(&a_id));
    let heard = talk(&a, &a_id, 440.0, &b, 40, 0).await;
    assert!(heard.is_empty(), "a muted player was played");
    assert!(!b.client.multiplayer().voice().speakers().contains(&a_id));
    // Muting is one way: A still hears B.
    let back = talk(&b, &b_id, 1000.0, &a, 40, 0).await;
    assert!(!back.is_empty());

    b.client.multiplayer().voice().mute_player(&a_id, false);
    let heard = talk(&a, &a_id, 440.0, &b, 40, 40).await;
    assert!(!continuous(&heard).is_empty(), "unmuted, A is heard again");

    // Push-to-talk: nothing leaves until the key is held.
    let voice = a.client.multiplayer().voice();
    voice.set_push_to_talk(true);
    assert!(talk(&a, &a_id, 440.0, &b, 20, 80).await.is_empty());
    voice.transmit(true);
    assert!(!talk(&a, &a_id, 440.0, &b, 20, 100).await.is_empty());
    voice.transmit(false);

    // Without push-to-talk, voice activity decides: after the last loud frame the microphone
    // stays open for the hang time (15 frames, this one included), then silence is not sent.
    voice.set_push_to_talk(false);
    let counting = Arc::new(Counting {
        inner: voice.relay_transport(),
        frames: AtomicU64::new(0),
    });
    voice.set_transport(counting.clone());
    voice.push_capture(&tone_frame(440.0, 0)).unwrap();
    let silence = vec![0.0f32; FRAME_SAMPLES];
    for _ in 0..40 {
        voice.push_capture(&silence).unwrap();
    }
    assert_eq!(counting.frames.load(Ordering::Relaxed), 15);
    // Below the threshold, a tone is silence too.
    voice.set_vad_threshold(0.6).unwrap();
    for i in 0..20 {
        voice.push_capture(&tone_frame(440.0, i)).unwrap();
    }
    assert_eq!(counting.frames.load(Ordering::Relaxed), 15);
    voice.set_vad_threshold(0.01).unwrap();
    voice.push_capture(&tone_frame(440.0, 0)).unwrap();
    assert_eq!(counting.frames.load(Ordering::Relaxed), 16);
    assert!(voice.set_player_volume(&b_id, 5.0).is_err());
    assert!(voice.set_vad_threshold(2.0).is_err());
    assert!(voice.set_bitrate(1).is_err());
    server.finish().await;
}

/// A bare socket member of the room: what the server (or anyone on the relay) sees.
struct RawMember {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    user_id: String,
}

impl RawMember {
    async fn connect(server: &RealServer, device: &str) -> Self {
        let http = reqwest::Client::new();
        let signed_in: serde_json::Value = http
            .post(format!("{}/api/v1/auth/device", server.url))
            .header(CLIENT_KEY_HEADER, &server.client_key)
            .json(&serde_json::json!({"device_id": device}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let token = signed_in["access_token"].as_str().unwrap();
        let url = format!("{}/api/v1/realtime", server.url.replacen("http", "ws", 1));
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert(
            CLIENT_KEY_HEADER,
            HeaderValue::from_str(&server.client_key).unwrap(),
        );
        req.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        Self {
            ws,
            user_id: signed_in["user"]["id"].as_str().unwrap().to_owned(),
        }
    }

    async fn send(&mut self, message: ClientMessage) {
        let frame = ClientFrame { cid: None, message };
        let text = serde_json::to_string(&frame).unwrap();
        self.ws.send(Message::text(text)).await.unwrap();
    }

    async fn next(&mut self) -> ServerMessage {
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("a frame in time")
                .unwrap()
                .unwrap();
            if let Message::Text(text) = frame {
                return serde_json::from_str::<ServerFrame>(&text).unwrap().message;
            }
        }
    }

    async fn join(&mut self, room_id: &str) {
        self.send(ClientMessage::JoinRoom {
            room_id: Some(room_id.into()),
            join_code: None,
        })
        .await;
        loop {
            if let ServerMessage::RoomJoined { .. } = self.next().await {
                return;
            }
        }
    }
}

fn sorted<const N: usize>(ids: [&str; N]) -> Vec<String> {
    let mut ids: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
    ids.sort();
    ids
}

/// Runs `session`'s side of the key agreement on `member`'s socket for `wait`.
async fn pump_keys(
    member: &mut RawMember,
    session: &mut VoiceSession,
    room_id: &str,
    wait: Duration,
) {
    let end = tokio::time::Instant::now() + wait;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(end, member.ws.next()).await {
        let Message::Text(text) = message else {
            continue;
        };
        let ServerMessage::VoiceKeyReceived { from, data, .. } =
            serde_json::from_str::<ServerFrame>(&text).unwrap().message
        else {
            continue;
        };
        for reply in session.receive(&from, &data).unwrap() {
            member
                .send(ClientMessage::VoiceKey {
                    room_id: room_id.to_owned(),
                    data: reply.data,
                    targets: reply.targets,
                })
                .await;
        }
    }
}

/// Frames of `from` a raw member received over `wait`, as sent.
async fn collect_frames(member: &mut RawMember, from: &str, wait: Duration) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let end = tokio::time::Instant::now() + wait;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(end, member.ws.next()).await {
        let Message::Text(text) = message else {
            continue;
        };
        if let ServerMessage::VoiceReceived { from: f, data, .. } =
            serde_json::from_str::<ServerFrame>(&text).unwrap().message
        {
            if f == from {
                frames.push(data);
            }
        }
    }
    frames
}

/// What Opus makes of `frames` read as if they were plain packets (errors skipped).
fn decode_as_plain(frames: &[Vec<u8>]) -> Vec<f32> {
    let mut decoder = VoiceDecoder::new().unwrap();
    frames
        .iter()
        .filter_map(|f| decoder.decode(f).ok())
        .flatten()
        .collect()
}

#[tokio::test]
async fn the_relay_carries_only_ciphertext_and_a_leaver_is_rotated_out() {
    let server = RealServer::start().await;
    let (mut a, a_id, _da) = voice_player(&server, "voice-e2e-a").await;
    let (mut b, b_id, _db) = voice_player(&server, "voice-e2e-b").await;
    let room_id = room_with(&mut a, &mut [&mut b]).await;
    // L takes part in the key agreement by hand (the SDK's own session type) over a bare
    // socket; R is a bare member without voice: what the relay sees.
    let mut l = RawMember::connect(&server, "voice-e2e-leaver").await;
    l.join(&room_id).await;
    let mut r = RawMember::connect(&server, "voice-e2e-relay").await;
    r.join(&room_id).await;
    let mut session = VoiceSession::new(room_id.clone(), l.user_id.clone());
    let hello = session.hello();
    l.send(ClientMessage::VoiceKey {
        room_id: room_id.clone(),
        data: hello.data,
        targets: hello.targets,
    })
    .await;
    while session.secure_peers() != sorted([a_id.as_str(), b_id.as_str()]) {
        pump_keys(&mut l, &mut session, &room_id, Duration::from_millis(50)).await;
    }
    wait_secure(&a, &[b_id.as_str(), l.user_id.as_str()]).await;
    wait_secure(&b, &[a_id.as_str(), l.user_id.as_str()]).await;

    // A speaks; R captures what the relay carried, B listens.
    let speaker = a_id.clone();
    let capture = tokio::spawn(async move {
        let frames = collect_frames(&mut r, &speaker, Duration::from_millis(1500)).await;
        (r, frames)
    });
    let heard = talk(&a, &a_id, 440.0, &b, 50, 0).await;
    let (mut r, on_the_wire) = capture.await.unwrap();
    assert_tone(&continuous(&heard), 440.0);
    assert!(
        on_the_wire.len() >= 45,
        "{} frames captured",
        on_the_wire.len()
    );

    // On the wire: nothing Opus can turn back into the tone.
    let as_plain = decode_as_plain(&on_the_wire);
    if as_plain.len() >= FRAME_SAMPLES * 10 {
        let (found, share) = dominant(&as_plain);
        assert!(
            found != 440.0 || share < 0.5,
            "the captured frames decode to the tone: the relay saw plaintext"
        );
    }
    // With the key (a member's), the very same bytes are the tone.
    pump_keys(&mut l, &mut session, &room_id, Duration::from_millis(200)).await;
    let mut decoder = VoiceDecoder::new().unwrap();
    let mut opened = Vec::new();
    for frame in &on_the_wire {
        let (_, packet) = session.open(&a_id, frame).expect("a member opens it");
        opened.extend(decoder.decode(&packet).unwrap());
    }
    let (found, share) = dominant(&opened[FRAME_SAMPLES * 5..]);
    assert_eq!(found, 440.0);
    assert!(share > 0.8, "{share}");
    let (old_epoch, _) = frame_position(&on_the_wire[0]).unwrap();

    // L leaves: A and B rotate past it. L keeps its keys, as a malicious client would.
    l.send(ClientMessage::LeaveRoom {
        room_id: room_id.clone(),
    })
    .await;
    wait_secure(&a, &[b_id.as_str()]).await;
    wait_secure(&b, &[a_id.as_str()]).await;
    let speaker = a_id.clone();
    let capture =
        tokio::spawn(
            async move { collect_frames(&mut r, &speaker, Duration::from_millis(1200)).await },
        );
    let heard = talk(&a, &a_id, 440.0, &b, 40, 50).await;
    let after = capture.await.unwrap();
    assert_tone(&continuous(&heard), 440.0);
    assert!(!after.is_empty());
    for frame in &after {
        let (epoch, _) = frame_position(frame).unwrap();
        assert!(epoch > old_epoch, "A did not rotate: epoch {epoch}");
        assert_eq!(session.open(&a_id, frame), Err(E2eeError::NoKey));
    }
    server.finish().await;
}
