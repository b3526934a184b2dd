//! Voice chat in a room: Opus-encoded, end-to-end encrypted frames over a pluggable transport
//! (the socket relay now; WebRTC audio tracks once P2P lands), played out through a jitter
//! buffer per speaker. No audio device here: the binding hands captured PCM in
//! ([`Voice::push_capture`]) and takes each speaker's PCM out ([`Voice::pull_playback`]), 48 kHz
//! mono floats.
//!
//! # API (reached as `client.multiplayer().voice()`)
//! `enable`, `mute_player`, `set_player_volume`, `set_push_to_talk`, `transmit`,
//! `set_vad_threshold`, `set_bitrate`, `push_capture`, `pull_playback`, `speakers`, `state`.
//! None of them waits on the network: sends are queued on the socket.
//!
//! # Signals (service `"multiplayer.voice"`)
//! - `player_speaking(player_id: String, speaking: bool)`: a remote speaker's playout started or
//!   stopped, or the local player's microphone started or stopped transmitting (own user id).
//! - `voice_state_changed(state: Dictionary)`: `{enabled, room_id, push_to_talk, transmitting,
//!   secure_peers: PackedStringArray, epoch}` whenever one of them changes.
//!
//! # Behaviour
//! - Voice runs in the current room (the room joined last) while enabled, following room
//!   changes. Enabling announces this session's keys; every member with voice on answers with
//!   its own and its sender key (`e2ee`). Joins and leaves rotate every member's sender key.
//! - Sending: with push-to-talk off, frames whose level (RMS) passes the VAD threshold open the
//!   microphone for at least 300 ms; `transmit(false)` mutes oneself. With push-to-talk on,
//!   exactly the frames captured while `transmit(true)` are sent.
//! - Receiving: a muted player's frames are dropped before they are decrypted or decoded;
//!   frames that fail authentication are dropped.

pub mod codec;
pub mod e2ee;
pub mod jitter;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use aethex_protocol::realtime::ClientMessage;

use self::codec::{VoiceEncoder, DEFAULT_BITRATE, FRAME_SAMPLES};
use self::e2ee::{KeyMessage, VoiceSession};
use self::jitter::{JitterBuffer, PlayoutStats, DEFAULT_TARGET_DEPTH};
use super::{invalid, lock, Realtime};
use crate::client::Shared;
use crate::{SdkError, Value};

/// Service the voice signals are emitted on.
pub(crate) const VOICE: &str = "multiplayer.voice";
/// Frames the microphone stays open after the level drops below the threshold: keeps word
/// endings and short pauses.
const VAD_HANG_FRAMES: u32 = 15;
/// Default VAD threshold: RMS of a quiet voice at a normal microphone gain (about -40 dBFS).
pub const DEFAULT_VAD_THRESHOLD: f32 = 0.01;
/// Highest per-player volume (a gain).
pub const MAX_PLAYER_VOLUME: f32 = 4.0;

/// Carries voice between members. Both calls must return at once (queue, never wait).
pub trait VoiceTransport: Send + Sync {
    /// One encrypted frame to every other member of `room_id`.
    fn send_frame(&self, room_id: &str, frame: Vec<u8>) -> Result<(), SdkError>;
    /// A key-agreement message to `message.targets` (or every other member).
    fn send_key(&self, room_id: &str, message: KeyMessage) -> Result<(), SdkError>;
}

/// Voice over the realtime socket (`voice_frame` / `voice_key`).
pub struct RelayTransport {
    realtime: Arc<Realtime>,
}

impl VoiceTransport for RelayTransport {
    fn send_frame(&self, room_id: &str, frame: Vec<u8>) -> Result<(), SdkError> {
        self.realtime.send_untracked(ClientMessage::VoiceFrame {
            room_id: room_id.to_owned(),
            data: frame,
            targets: None,
        })
    }

    fn send_key(&self, room_id: &str, message: KeyMessage) -> Result<(), SdkError> {
        self.realtime.send_untracked(ClientMessage::VoiceKey {
            room_id: room_id.to_owned(),
            data: message.data,
            targets: message.targets,
        })
    }
}

/// Reached as `client.multiplayer().voice()`.
#[derive(Clone)]
pub struct Voice {
    engine: Arc<Engine>,
}

pub(crate) struct Engine {
    shared: Arc<Shared>,
    realtime: Arc<Realtime>,
    transport: Mutex<Arc<dyn VoiceTransport>>,
    settings: Mutex<Settings>,
    // Lock order: capture, then session, then speakers.
    capture: Mutex<Capture>,
    session: Mutex<Option<VoiceSession>>,
    speakers: Mutex<HashMap<String, Speaker>>,
}

struct Settings {
    enabled: bool,
    push_to_talk: bool,
    transmitting: bool,
    vad_threshold: f32,
    bitrate: u32,
    jitter_depth: usize,
    muted: HashSet<String>,
    volumes: HashMap<String, f32>,
}

#[derive(Default)]
struct Capture {
    pending: Vec<f32>,
    encoder: Option<VoiceEncoder>,
    hang: u32,
    sending: bool,
}

struct Speaker {
    jitter: JitterBuffer,
    speaking: bool,
}

impl Voice {
    pub(crate) fn new(shared: Arc<Shared>, realtime: Arc<Realtime>) -> Self {
        let transport: Arc<dyn VoiceTransport> = Arc::new(RelayTransport {
            realtime: realtime.clone(),
        });
        let engine = Arc::new(Engine {
            shared,
            realtime: realtime.clone(),
            transport: Mutex::new(transport),
            settings: Mutex::new(Settings {
                enabled: false,
                push_to_talk: false,
                transmitting: true,
                vad_threshold: DEFAULT_VAD_THRESHOLD,
                bitrate: DEFAULT_BITRATE,
                jitter_depth: DEFAULT_TARGET_DEPTH,
                muted: HashSet::new(),
                volumes: HashMap::new(),
            }),
            capture: Mutex::new(Capture::default()),
            session: Mutex::new(None),
            speakers: Mutex::new(HashMap::new()),
        });
        realtime.attach_voice(Arc::downgrade(&engine));
        Self { engine }
    }

    /// Turns voice on or off (in the current room, and in whichever room is current later).
    pub fn enable(&self, on: bool) {
        let changed = {
            let mut settings = lock(&self.engine.settings);
            std::mem::replace(&mut settings.enabled, on) != on
        };
        if !changed {
            return;
        }
        if on {
            if let Some(room) = self.engine.realtime.rooms().current() {
                self.engine.start_session(&room);
            }
        } else {
            self.engine.stop_session();
        }
        self.engine.state_changed();
    }

    pub fn is_enabled(&self) -> bool {
        lock(&self.engine.settings).enabled
    }

    /// Mutes (or unmutes) a player for this client: their frames are dropped unread.
    pub fn mute_player(&self, player_id: &str, muted: bool) {
        let mut settings = lock(&self.engine.settings);
        if muted {
            settings.muted.insert(player_id.to_owned());
        } else {
            settings.muted.remove(player_id);
        }
        drop(settings);
        if muted {
            self.engine.drop_speaker(player_id);
        }
    }

    pub fn is_muted(&self, player_id: &str) -> bool {
        lock(&self.engine.settings).muted.contains(player_id)
    }

    /// A player's playback gain, 0.0 (silent) to 4.0; 1.0 by default.
    pub fn set_player_volume(&self, player_id: &str, volume: f32) -> Result<(), SdkError> {
        if !(0.0..=MAX_PLAYER_VOLUME).contains(&volume) {
            return Err(invalid(format!(
                "volume must be between 0.0 and {MAX_PLAYER_VOLUME}"
            )));
        }
        lock(&self.engine.settings)
            .volumes
            .insert(player_id.to_owned(), volume);
        Ok(())
    }

    pub fn player_volume(&self, player_id: &str) -> f32 {
        lock(&self.engine.settings)
            .volumes
            .get(player_id)
            .copied()
            .unwrap_or(1.0)
    }

    /// Push-to-talk on: only frames captured while `transmit(true)` are sent (and it starts
    /// released). Off: voice activity decides, and the microphone starts open.
    pub fn set_push_to_talk(&self, on: bool) {
        {
            let mut settings = lock(&self.engine.settings);
            settings.push_to_talk = on;
            settings.transmitting = !on;
        }
        self.engine.state_changed();
    }

    /// With push-to-talk: the talk key is held (true) or released. Without: false mutes the
    /// local microphone, true opens it again.
    pub fn transmit(&self, on: bool) {
        let changed = std::mem::replace(&mut lock(&self.engine.settings).transmitting, on) != on;
        if changed {
            self.engine.state_changed();
        }
    }

    /// The RMS level (0.0 to 1.0 of full scale) above which a frame counts as speech.
    pub fn set_vad_threshold(&self, threshold: f32) -> Result<(), SdkError> {
        if !(0.0..=1.0).contains(&threshold) {
            return Err(invalid("the VAD threshold is an RMS level from 0.0 to 1.0"));
        }
        lock(&self.engine.settings).vad_threshold = threshold;
        Ok(())
    }

    pub fn vad_threshold(&self) -> f32 {
        lock(&self.engine.settings).vad_threshold
    }

    /// The Opus bitrate in bits per second (6000 to 128000; 32000 by default).
    pub fn set_bitrate(&self, bitrate: u32) -> Result<(), SdkError> {
        if !codec::BITRATE_RANGE.contains(&bitrate) {
            return Err(invalid(format!(
                "voice bitrate must be between {} and {} bits/s",
                codec::BITRATE_RANGE.start(),
                codec::BITRATE_RANGE.end()
            )));
        }
        lock(&self.engine.settings).bitrate = bitrate;
        if let Some(encoder) = &mut lock(&self.engine.capture).encoder {
            encoder.set_bitrate(bitrate)?;
        }
        Ok(())
    }

    /// Frames each speaker buffers before playing (1 to 10; 2, 40 ms, by default): more rides
    /// out a worse network at the cost of delay. Applies to talkspurts that start afterwards.
    pub fn set_jitter_frames(&self, frames: usize) -> Result<(), SdkError> {
        if !(1..=10).contains(&frames) {
            return Err(invalid("the jitter buffer holds 1 to 10 frames"));
        }
        lock(&self.engine.settings).jitter_depth = frames;
        Ok(())
    }

    /// Replaces how frames and keys travel (the relay by default).
    pub fn set_transport(&self, transport: Arc<dyn VoiceTransport>) {
        *lock(&self.engine.transport) = transport;
    }

    /// The socket relay transport (to restore it, or to wrap it).
    pub fn relay_transport(&self) -> Arc<dyn VoiceTransport> {
        Arc::new(RelayTransport {
            realtime: self.engine.realtime.clone(),
        })
    }

    /// Microphone samples: 48 kHz mono, -1.0 to 1.0, any count (cut into 20 ms frames here).
    /// Encodes, encrypts and queues what is to be sent; never waits on the network.
    pub fn push_capture(&self, samples: &[f32]) -> Result<(), SdkError> {
        self.engine.push_capture(samples)
    }

    /// The next 20 ms (960 samples) of `player_id`'s voice, at their volume; `None` while they
    /// are silent (or muted, or not heard yet).
    pub fn pull_playback(&self, player_id: &str) -> Option<Vec<f32>> {
        self.engine.pull_playback(player_id)
    }

    /// Players with voice waiting to be pulled or playing, sorted.
    pub fn speakers(&self) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.engine.speakers).keys().cloned().collect();
        ids.sort();
        ids
    }

    /// How `player_id`'s frames were played out so far.
    pub fn playout_stats(&self, player_id: &str) -> Option<PlayoutStats> {
        lock(&self.engine.speakers)
            .get(player_id)
            .map(|s| s.jitter.stats())
    }

    /// This session's key fingerprint (for players to compare), while voice runs in a room.
    pub fn fingerprint(&self) -> Option<String> {
        lock(&self.engine.session).as_ref().map(|s| s.fingerprint())
    }

    /// The state `voice_state_changed` reports.
    pub fn state(&self) -> Value {
        self.engine.state_value()
    }
}

impl Engine {
    fn emit(&self, name: &'static str, args: Vec<Value>) {
        self.shared.emit(VOICE, name, args);
    }

    fn transport(&self) -> Arc<dyn VoiceTransport> {
        lock(&self.transport).clone()
    }

    fn send_keys(&self, room_id: &str, messages: impl IntoIterator<Item = KeyMessage>) {
        let transport = self.transport();
        for message in messages {
            if let Err(e) = transport.send_key(room_id, message) {
                tracing::debug!(error = %e, "sending a voice key message");
            }
        }
    }

    fn start_session(&self, room_id: &str) {
        let Some(user_id) = self.realtime.user_id() else {
            return;
        };
        let session = VoiceSession::new(room_id, user_id);
        let hello = session.hello();
        *lock(&self.session) = Some(session);
        lock(&self.speakers).clear();
        self.send_keys(room_id, [hello]);
    }

    fn stop_session(&self) {
        *lock(&self.session) = None;
        lock(&self.speakers).clear();
        let mut capture = lock(&self.capture);
        capture.pending.clear();
        if std::mem::take(&mut capture.sending) {
            drop(capture);
            self.local_speaking(false);
        }
    }

    fn drop_speaker(&self, player_id: &str) {
        let removed = lock(&self.speakers).remove(player_id);
        if removed.is_some_and(|s| s.speaking) {
            self.emit(
                "player_speaking",
                vec![Value::String(player_id.to_owned()), Value::Bool(false)],
            );
        }
    }

    fn local_speaking(&self, speaking: bool) {
        if let Some(me) = self.realtime.user_id() {
            self.emit(
                "player_speaking",
                vec![Value::String(me), Value::Bool(speaking)],
            );
        }
    }

    fn state_value(&self) -> Value {
        let (enabled, push_to_talk, transmitting) = {
            let s = lock(&self.settings);
            (s.enabled, s.push_to_talk, s.transmitting)
        };
        let session = lock(&self.session);
        let room = session
            .as_ref()
            .map_or(Value::Nil, |s| Value::String(s.room_id().to_owned()));
        let peers = session
            .as_ref()
            .map(|s| s.secure_peers())
            .unwrap_or_default();
        let epoch = session.as_ref().map_or(0, |s| i64::from(s.epoch()));
        let pairs = [
            ("enabled", Value::Bool(enabled)),
            ("room_id", room),
            ("push_to_talk", Value::Bool(push_to_talk)),
            ("transmitting", Value::Bool(transmitting)),
            ("secure_peers", Value::PackedStringArray(peers)),
            ("epoch", Value::Int(epoch)),
        ];
        Value::Dictionary(
            pairs
                .into_iter()
                .map(|(k, v)| (Value::String(k.to_owned()), v))
                .collect(),
        )
    }

    fn state_changed(&self) {
        let state = self.state_value();
        self.emit("voice_state_changed", vec![state]);
    }

    fn push_capture(&self, samples: &[f32]) -> Result<(), SdkError> {
        let (enabled, push_to_talk, transmitting, threshold, bitrate) = {
            let s = lock(&self.settings);
            (
                s.enabled,
                s.push_to_talk,
                s.transmitting,
                s.vad_threshold,
                s.bitrate,
            )
        };
        if !enabled {
            return Ok(());
        }
        let mut capture = lock(&self.capture);
        capture.pending.extend_from_slice(samples);
        let mut toggled = None;
        while capture.pending.len() >= FRAME_SAMPLES {
            let frame: Vec<f32> = capture.pending.drain(..FRAME_SAMPLES).collect();
            capture.hang = if rms(&frame) >= threshold {
                VAD_HANG_FRAMES
            } else {
                capture.hang.saturating_sub(1)
            };
            let send = transmitting && (push_to_talk || capture.hang > 0);
            let mut session = lock(&self.session);
            let Some(session) = session.as_mut() else {
                capture.pending.clear();
                break;
            };
            if send != capture.sending {
                capture.sending = send;
                toggled = Some(send);
            }
            if !send {
                continue;
            }
            if capture.encoder.is_none() {
                capture.encoder = Some(VoiceEncoder::new(bitrate)?);
            }
            let packet = capture
                .encoder
                .as_mut()
                .expect("created above")
                .encode(&frame)?;
            let sealed = session.seal(&packet);
            let room_id = session.room_id().to_owned();
            if let Err(e) = self.transport().send_frame(&room_id, sealed) {
                tracing::debug!(error = %e, "sending a voice frame");
            }
        }
        drop(capture);
        if let Some(speaking) = toggled {
            self.local_speaking(speaking);
        }
        Ok(())
    }

    fn pull_playback(&self, player_id: &str) -> Option<Vec<f32>> {
        let volume = lock(&self.settings)
            .volumes
            .get(player_id)
            .copied()
            .unwrap_or(1.0);
        let mut speakers = lock(&self.speakers);
        let speaker = speakers.get_mut(player_id)?;
        let frame = speaker.jitter.pull().unwrap_or_else(|e| {
            tracing::debug!(error = %e, "decoding voice");
            None
        });
        let speaking = frame.is_some();
        if speaking != speaker.speaking {
            speaker.speaking = speaking;
            drop(speakers);
            self.emit(
                "player_speaking",
                vec![Value::String(player_id.to_owned()), Value::Bool(speaking)],
            );
        }
        frame.map(|mut samples| {
            if volume != 1.0 {
                for s in &mut samples {
                    *s = (*s * volume).clamp(-1.0, 1.0);
                }
            }
            samples
        })
    }

    /// Whether voice runs in `room_id`.
    fn in_session(&self, room_id: &str) -> bool {
        lock(&self.session)
            .as_ref()
            .is_some_and(|s| s.room_id() == room_id)
    }

    // Hooks the realtime socket calls from its task, in the order the events arrive.

    pub(crate) fn on_frame(&self, room_id: &str, from: &str, frame: &[u8]) {
        let depth = {
            let s = lock(&self.settings);
            // Muted players are dropped before anything is decrypted or decoded.
            if !s.enabled || s.muted.contains(from) {
                return;
            }
            s.jitter_depth
        };
        let opened = match lock(&self.session).as_ref() {
            Some(session) if session.room_id() == room_id => session.open(from, frame),
            _ => return,
        };
        let (seq, packet) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                tracing::debug!(error = %e, from, "voice frame dropped");
                return;
            }
        };
        let mut speakers = lock(&self.speakers);
        let speaker = match speakers.entry(from.to_owned()) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => match JitterBuffer::new(depth) {
                Ok(jitter) => entry.insert(Speaker {
                    jitter,
                    speaking: false,
                }),
                Err(e) => {
                    tracing::debug!(error = %e, "creating a voice decoder");
                    return;
                }
            },
        };
        speaker.jitter.push(seq, packet);
    }

    pub(crate) fn on_key(&self, room_id: &str, from: &str, data: &[u8]) {
        let (replies, before, after) = {
            let mut session = lock(&self.session);
            let Some(session) = session.as_mut().filter(|s| s.room_id() == room_id) else {
                return;
            };
            let before = session.secure_peers();
            let replies = match session.receive(from, data) {
                Ok(replies) => replies,
                Err(e) => {
                    tracing::debug!(error = %e, from, "voice key message dropped");
                    return;
                }
            };
            (replies, before, session.secure_peers())
        };
        self.send_keys(room_id, replies);
        if before != after {
            self.state_changed();
        }
    }

    pub(crate) fn on_member_joined(&self, room_id: &str) {
        if self.rotate(room_id, |session| session.rotate()) {
            self.state_changed();
        }
    }

    pub(crate) fn on_member_left(&self, room_id: &str, user_id: &str) {
        if self.rotate(room_id, |session| session.peer_left(user_id)) {
            self.drop_speaker(user_id);
            self.state_changed();
        }
    }

    /// Runs a rotation of the session in `room_id` and sends the new key while still holding the
    /// session, so no frame sealed under the new key can leave before the key does. False when
    /// voice does not run in that room.
    fn rotate(
        &self,
        room_id: &str,
        rotation: impl FnOnce(&mut VoiceSession) -> Option<KeyMessage>,
    ) -> bool {
        let mut session = lock(&self.session);
        let Some(session) = session.as_mut().filter(|s| s.room_id() == room_id) else {
            return false;
        };
        self.send_keys(room_id, rotation(session));
        true
    }

    pub(crate) fn on_room_joined(&self, room_id: &str) {
        if lock(&self.settings).enabled && !self.in_session(room_id) {
            self.start_session(room_id);
            self.state_changed();
        }
    }

    pub(crate) fn on_room_left(&self, room_id: &str) {
        if !self.in_session(room_id) {
            return;
        }
        self.stop_session();
        if lock(&self.settings).enabled {
            if let Some(room) = self.realtime.rooms().current() {
                self.start_session(&room);
            }
        }
        self.state_changed();
    }
}

/// Root mean square of a frame: its loudness, for voice activity detection.
fn rms(frame: &[f32]) -> f32 {
    let sum: f32 = frame.iter().map(|s| s * s).sum();
    (sum / frame.len().max(1) as f32).sqrt()
}
