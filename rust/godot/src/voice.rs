//! `AeThexCloud.multiplayer.voice`: the SDK's voice chat (`aethex_sdk::multiplayer::voice`),
//! plus the audio plumbing only Godot can do. Once per frame, on the main thread, from the hub's
//! drain: what the microphone bus's `AudioEffectCapture` captured is handed to the SDK (which
//! encodes, encrypts and queues it: no network wait), and each speaker's `AudioStreamGenerator`
//! is topped up with the 20 ms frames the SDK decoded.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use godot::builtin::{GString, PackedVector2Array, VarDictionary, Vector2};
use godot::classes::{
    AudioEffectCapture, AudioServer, AudioStreamGenerator, AudioStreamGeneratorPlayback,
    AudioStreamMicrophone, AudioStreamPlayer, AudioStreamPlayer3D, Engine, Node, Node3D,
    RefCounted, SceneTree,
};
use godot::global::godot_error;
use godot::obj::{Base, Gd, NewAlloc, NewGd, Singleton};
use godot::register::{godot_api, GodotClass};

use crate::convert;
use crate::hub::Hub;
use crate::sdk::multiplayer::voice::codec::{Resampler, FRAME_SAMPLES, SAMPLE_RATE};
use crate::sdk::Client;

/// The bus the microphone is captured on (muted: you do not hear yourself).
const CAPTURE_BUS: &str = "AeThexVoice";
/// Seconds of audio each speaker's generator holds: enough for a frame's hitch, little delay.
const GENERATOR_SECONDS: f32 = 0.1;

/// Voice chat in the current room, end-to-end encrypted. Reach it as
/// `AeThexCloud.multiplayer.voice`.
/// ```gdscript
/// AeThexCloud.multiplayer.voice.start_microphone()   # needs audio/driver/enable_input
/// AeThexCloud.multiplayer.voice.enable(true)
/// AeThexCloud.multiplayer.voice.mute_player(player_id, true)
/// AeThexCloud.multiplayer.voice.player_speaking.connect(func(id, speaking): print(id, speaking))
/// ```
#[derive(GodotClass)]
#[class(no_init, base = RefCounted)]
pub struct AeThexVoice {
    hub: Rc<Hub>,
    audio: Rc<RefCell<VoiceAudio>>,
    base: Base<RefCounted>,
}

#[derive(Default)]
struct VoiceAudio {
    capture: Option<Gd<AudioEffectCapture>>,
    microphone: Option<Gd<AudioStreamPlayer>>,
    resampler: Option<Resampler>,
    outputs: HashMap<String, Output>,
    /// Characters whose speaker plays their voice in 3D.
    anchors: HashMap<String, Gd<Node3D>>,
    mono: Vec<f32>,
    resampled: Vec<f32>,
}

struct Output {
    node: Gd<Node>,
    playback: Gd<AudioStreamGeneratorPlayback>,
}

#[godot_api]
impl AeThexVoice {
    /// A speaker's voice started (`true`) or stopped playing; your own user id when your
    /// microphone starts or stops sending.
    #[signal]
    fn player_speaking(player_id: GString, speaking: bool);

    /// `state` is `{enabled, room_id, push_to_talk, transmitting, secure_peers, epoch}`:
    /// `secure_peers` are the members whose keys you hold (whom you can hear).
    #[signal]
    fn voice_state_changed(state: VarDictionary);

    /// Voice on or off, in the current room (and whichever room is current later).
    #[func]
    fn enable(&self, on: bool) {
        self.hub.with_client(|c| c.multiplayer().voice().enable(on));
    }

    #[func]
    fn is_enabled(&self) -> bool {
        self.hub
            .with_client(|c| c.multiplayer().voice().is_enabled())
            .unwrap_or(false)
    }

    /// Your mute of `player_id`: their voice is dropped before it is decrypted or decoded.
    #[func]
    fn mute_player(&self, player_id: GString, muted: bool) {
        let id = player_id.to_string();
        self.hub
            .with_client(|c| c.multiplayer().voice().mute_player(&id, muted));
    }

    #[func]
    fn is_muted(&self, player_id: GString) -> bool {
        let id = player_id.to_string();
        self.hub
            .with_client(|c| c.multiplayer().voice().is_muted(&id))
            .unwrap_or(false)
    }

    /// `volume` is a gain from 0.0 (silent) to 4.0; 1.0 by default.
    #[func]
    fn set_player_volume(&self, player_id: GString, volume: f32) {
        let id = player_id.to_string();
        let set = self.hub.with_client(|c| {
            c.multiplayer()
                .voice()
                .set_player_volume(&id, volume)
                .map_err(|e| e.message)
        });
        if let Some(Err(e)) = set {
            godot_error!("AeThexCloud.multiplayer.voice.set_player_volume: {}", e);
        }
    }

    /// Push-to-talk on: only what is captured while [method transmit] is `true` is sent. Off:
    /// voice activity decides, and `transmit(false)` mutes your microphone.
    #[func]
    fn set_push_to_talk(&self, on: bool) {
        self.hub
            .with_client(|c| c.multiplayer().voice().set_push_to_talk(on));
    }

    /// The talk key is held (push-to-talk), or your microphone is open (without it).
    #[func]
    fn transmit(&self, on: bool) {
        self.hub
            .with_client(|c| c.multiplayer().voice().transmit(on));
    }

    /// The RMS level (0.0 to 1.0 of full scale; 0.01 by default) above which your microphone
    /// counts as speaking.
    #[func]
    fn set_vad_threshold(&self, threshold: f32) {
        let set = self.hub.with_client(|c| {
            c.multiplayer()
                .voice()
                .set_vad_threshold(threshold)
                .map_err(|e| e.message)
        });
        if let Some(Err(e)) = set {
            godot_error!("AeThexCloud.multiplayer.voice.set_vad_threshold: {}", e);
        }
    }

    #[func]
    fn get_vad_threshold(&self) -> f32 {
        self.hub
            .with_client(|c| c.multiplayer().voice().vad_threshold())
            .unwrap_or(0.0)
    }

    /// The Opus bitrate, 6000 to 128000 bits per second (32000 by default).
    #[func]
    fn set_bitrate(&self, bits_per_second: i64) {
        let bitrate = u32::try_from(bits_per_second).unwrap_or(0);
        let set = self.hub.with_client(|c| {
            c.multiplayer()
                .voice()
                .set_bitrate(bitrate)
                .map_err(|e| e.message)
        });
        if let Some(Err(e)) = set {
            godot_error!("AeThexCloud.multiplayer.voice.set_bitrate: {e}");
        }
    }

    /// `{enabled, room_id, push_to_talk, transmitting, secure_peers, epoch}`.
    #[func]
    fn get_state(&self) -> VarDictionary {
        self.hub
            .with_client(|c| convert::to_variant(&c.multiplayer().voice().state()))
            .and_then(|v| v.try_to::<VarDictionary>().ok())
            .unwrap_or_default()
    }

    /// This session's key fingerprint, for players to compare out of band; empty while voice
    /// is not running in a room.
    #[func]
    fn get_fingerprint(&self) -> GString {
        let fingerprint = self
            .hub
            .with_client(|c| c.multiplayer().voice().fingerprint())
            .flatten()
            .unwrap_or_default();
        GString::from(fingerprint.as_str())
    }

    /// Starts capturing the microphone: a muted bus `AeThexVoice` with an AudioEffectCapture,
    /// fed by an AudioStreamPlayer playing an AudioStreamMicrophone (enable
    /// `audio/driver/enable_input` in the Project Settings).
    #[func]
    fn start_microphone(&self) {
        let Some(mut root) = scene_root() else {
            godot_error!("AeThexCloud.multiplayer.voice.start_microphone: no SceneTree yet");
            return;
        };
        let mut audio = self.audio.borrow_mut();
        if audio.microphone.is_some() {
            return;
        }
        let mut server = AudioServer::singleton();
        let mut bus = server.get_bus_index(CAPTURE_BUS);
        if bus < 0 {
            server.add_bus();
            bus = server.get_bus_count() - 1;
            server.set_bus_name(bus, CAPTURE_BUS);
            server.set_bus_mute(bus, true);
        }
        let capture = (0..server.get_bus_effect_count(bus))
            .filter_map(|i| server.get_bus_effect(bus, i))
            .find_map(|effect| effect.try_cast::<AudioEffectCapture>().ok());
        let capture = capture.unwrap_or_else(|| {
            let capture = AudioEffectCapture::new_gd();
            server.add_bus_effect(bus, &capture);
            capture
        });
        let mut microphone = AudioStreamPlayer::new_alloc();
        microphone.set_stream(&AudioStreamMicrophone::new_gd());
        microphone.set_bus(CAPTURE_BUS);
        root.add_child(&microphone);
        microphone.play();
        audio.resampler = Some(Resampler::new(server.get_mix_rate() as u32));
        audio.capture = Some(capture);
        audio.microphone = Some(microphone);
    }

    /// Stops capturing the microphone.
    #[func]
    fn stop_microphone(&self) {
        let mut audio = self.audio.borrow_mut();
        if let Some(mut microphone) = audio.microphone.take() {
            microphone.queue_free();
        }
        audio.capture = None;
    }

    /// Plays `player_id`'s voice from `node` (their character) in 3D, instead of flat.
    #[func]
    fn set_player_node(&self, player_id: GString, node: Gd<Node3D>) {
        let id = player_id.to_string();
        let mut audio = self.audio.borrow_mut();
        if let Some(mut old) = audio.outputs.remove(&id) {
            old.node.queue_free();
        }
        audio.anchors.insert(id, node);
    }
}

impl AeThexVoice {
    pub fn create(hub: Rc<Hub>) -> Gd<Self> {
        let audio = Rc::new(RefCell::new(VoiceAudio::default()));
        let pump = audio.clone();
        hub.on_frame(Box::new(move |client: &Client| {
            pump.borrow_mut().pump(client)
        }));
        Gd::from_init_fn(|base| Self { hub, audio, base })
    }
}

impl VoiceAudio {
    /// Once per frame: microphone to the SDK, the SDK to the speakers.
    fn pump(&mut self, client: &Client) {
        let voice = client.multiplayer().voice();
        if let Some(capture) = self.capture.as_mut() {
            let available = capture.get_frames_available();
            if available > 0 {
                let stereo = capture.get_buffer(available);
                self.mono.clear();
                self.mono
                    .extend(stereo.as_slice().iter().map(|f| (f.x + f.y) * 0.5));
                self.resampled.clear();
                if let Some(resampler) = self.resampler.as_mut() {
                    resampler.process(&self.mono, &mut self.resampled);
                }
                if let Err(e) = voice.push_capture(&self.resampled) {
                    godot_error!("AeThexCloud voice capture: {}", e.message);
                }
            }
        }
        let speakers = voice.speakers();
        self.outputs.retain(|id, output| {
            let keep = speakers.contains(id);
            if !keep {
                output.node.queue_free();
            }
            keep
        });
        for id in speakers {
            if !self.outputs.contains_key(&id) {
                let Some(output) = self.output_for(&id) else {
                    continue;
                };
                self.outputs.insert(id.clone(), output);
            }
            let output = self.outputs.get_mut(&id).expect("inserted above");
            while output.playback.get_frames_available() >= FRAME_SAMPLES as i32 {
                let Some(frame) = voice.pull_playback(&id) else {
                    break;
                };
                let stereo: PackedVector2Array =
                    frame.iter().map(|&s| Vector2::new(s, s)).collect();
                output.playback.push_buffer(&stereo);
            }
        }
    }

    /// A playing generator for `player_id`: under their character in 3D when one was given.
    fn output_for(&self, player_id: &str) -> Option<Output> {
        let mut generator = AudioStreamGenerator::new_gd();
        generator.set_mix_rate(SAMPLE_RATE as f32);
        generator.set_buffer_length(GENERATOR_SECONDS);
        let (node, playback) = match self.anchors.get(player_id) {
            Some(anchor) if anchor.is_instance_valid() => {
                let mut player = AudioStreamPlayer3D::new_alloc();
                player.set_stream(&generator);
                anchor.clone().add_child(&player);
                player.play();
                let playback = player.get_stream_playback()?;
                (player.upcast::<Node>(), playback)
            }
            _ => {
                let mut player = AudioStreamPlayer::new_alloc();
                player.set_stream(&generator);
                scene_root()?.add_child(&player);
                player.play();
                let playback = player.get_stream_playback()?;
                (player.upcast::<Node>(), playback)
            }
        };
        let playback = playback.try_cast::<AudioStreamGeneratorPlayback>().ok()?;
        Some(Output { node, playback })
    }
}

fn scene_root() -> Option<Gd<Node>> {
    let tree = Engine::singleton()
        .get_main_loop()?
        .try_cast::<SceneTree>()
        .ok()?;
    tree.get_root().map(|w| w.upcast())
}
