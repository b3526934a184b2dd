//! `AeThexMultiplayerPeer`: Godot's `MultiplayerPeerExtension` over one room of the relay. Every
//! virtual forwards to the SDK's `MultiplayerPeer` (peer ids, packet queue, transfer modes, host
//! migration live there and are tested in plain Rust); this file only converts types and emits
//! `peer_connected` / `peer_disconnected` for the events `_poll` and `_close` report.
//!
//! Signals are emitted through `base_mut()`, which lets `SceneMultiplayer`'s handlers call back
//! into this peer (e.g. `_put_packet` for the spawns a new peer gets) while the signal is out.

use aethex_protocol::ErrorCode;
use godot::builtin::{GString, PackedByteArray, VarDictionary};
use godot::classes::multiplayer_peer::{ConnectionStatus, TransferMode};
use godot::classes::{IMultiplayerPeerExtension, MultiplayerPeerExtension};
use godot::global::{godot_error, Error};
use godot::meta::ToGodot;
use godot::obj::{Base, EngineEnum, Gd, WithBaseField};
use godot::register::{godot_api, GodotClass};

use crate::sdk::multiplayer::{self as mp, PeerEvent};

/// The relay's packets are base64 inside a JSON frame the server caps at 64 KiB by default;
/// 32 KiB of game bytes leave room for the encoding and the frame's other fields.
const MAX_PACKET_SIZE: i32 = 32 * 1024;

/// Godot's high-level multiplayer (`@rpc`, MultiplayerSpawner, MultiplayerSynchronizer) relayed
/// through an AeThex Cloud room. Make one with [method AeThexMultiplayer.create_peer]:
/// ```gdscript
/// multiplayer.multiplayer_peer = AeThexCloud.multiplayer.create_peer(room_id)
/// ```
/// - The room's host is peer 1 ([method MultiplayerPeer.get_unique_id] is 1 and
///   `multiplayer.is_server()` true on the host); every other member keeps the `peer_id` the
///   room gave it. Every member sees every other as a connected peer: the server relays between
///   any two, so `peer_connected` fires for each member present and each one joining.
/// - Reliable packets are ordered; unreliable ones ride the same connection for now, and an
///   `unreliable_ordered` packet older than one already received is dropped. Channels are kept.
/// - When the host leaves, the peer emits `peer_disconnected(1)` and closes: Godot reports
///   `server_disconnected`. The room goes on with a new host
///   ([signal AeThexMultiplayer.host_changed]); call `create_peer` again to continue, the new
///   host being peer 1.
/// - [method MultiplayerPeer.close] gives the room's traffic back to the
///   [signal AeThexMultiplayer.packet_received] signal but keeps your seat: leave with
///   [method AeThexMultiplayer.leave_room].
/// - Packets of the room that arrive after `create_peer` wait in the peer until it is polled, so
///   a peer made when the room is joined and assigned later misses nothing.
#[derive(GodotClass)]
// `tool`: gdext requires it for virtual extension bases; the editor runs every class of this
// extension anyway (see lib.rs).
#[class(tool, no_init, base = MultiplayerPeerExtension)]
pub struct AeThexMultiplayerPeer {
    peer: mp::MultiplayerPeer,
    base: Base<MultiplayerPeerExtension>,
}

#[godot_api]
impl AeThexMultiplayerPeer {
    /// The room this peer relays through.
    #[func]
    fn get_room_id(&self) -> GString {
        GString::from(self.peer.room_id())
    }

    /// The user id behind a peer id (`""` when no member has it).
    #[func]
    fn get_user_id(&self, peer_id: i32) -> GString {
        self.peer
            .user_id_of(peer_id)
            .map(|id| GString::from(id.as_str()))
            .unwrap_or_default()
    }

    /// The peer id of a member's user id (0 when not a member).
    #[func]
    fn get_peer_id(&self, user_id: GString) -> i32 {
        self.peer.peer_id_of(&user_id.to_string()).unwrap_or(0)
    }

    /// Why the peer closed: `"host_left"`, `"room_left"`, `"signed_out"`, `"replaced"` (another
    /// peer took the room) or `"closed"`; `""` while open.
    #[func]
    fn get_close_reason(&self) -> GString {
        GString::from(self.peer.close_reason().unwrap_or_default())
    }

    /// The peer-to-peer link to `peer_id` as [signal AeThexMultiplayer.peer_connection_changed]
    /// last reported it: `{state, path, rtt_ms}`; empty for a `"relay"` peer or an unknown id.
    #[func]
    fn get_peer_connection(&self, peer_id: i32) -> VarDictionary {
        let mut link = VarDictionary::new();
        if let Some(status) = self.peer.link_status(peer_id) {
            link.set(&"state".to_variant(), &status.state.to_variant());
            link.set(&"path".to_variant(), &status.path.as_str().to_variant());
            let rtt_ms = status.rtt_ms.unwrap_or(-1.0);
            link.set(&"rtt_ms".to_variant(), &rtt_ms.to_variant());
        }
        link
    }
}

#[godot_api]
impl IMultiplayerPeerExtension for AeThexMultiplayerPeer {
    fn get_available_packet_count(&self) -> i32 {
        i32::try_from(self.peer.available_packet_count()).unwrap_or(i32::MAX)
    }

    fn get_max_packet_size(&self) -> i32 {
        MAX_PACKET_SIZE
    }

    fn get_packet_script(&mut self) -> PackedByteArray {
        self.peer
            .get_packet()
            .map(|data| PackedByteArray::from(data.as_slice()))
            .unwrap_or_default()
    }

    fn put_packet_script(&mut self, buffer: PackedByteArray) -> Error {
        if buffer.len() > MAX_PACKET_SIZE as usize {
            godot_error!(
                "AeThexMultiplayerPeer: a packet of {} bytes is over the {MAX_PACKET_SIZE} byte limit",
                buffer.len()
            );
            return Error::ERR_INVALID_PARAMETER;
        }
        match self.peer.put_packet(buffer.as_slice()) {
            Ok(()) => Error::OK,
            Err(error) => match error.code {
                ErrorCode::Unavailable => Error::ERR_UNCONFIGURED,
                ErrorCode::NotFound => Error::ERR_INVALID_PARAMETER,
                ErrorCode::RateLimited => Error::ERR_BUSY,
                _ => Error::FAILED,
            },
        }
    }

    fn get_packet_channel(&self) -> i32 {
        self.peer.packet_channel()
    }

    fn get_packet_mode(&self) -> TransferMode {
        godot_mode(self.peer.packet_mode())
    }

    fn set_transfer_channel(&mut self, channel: i32) {
        self.peer.set_transfer_channel(channel);
    }

    fn get_transfer_channel(&self) -> i32 {
        self.peer.transfer_channel()
    }

    fn set_transfer_mode(&mut self, mode: TransferMode) {
        // Godot has no other modes; an unknown one keeps the current mode.
        if let Some(mode) = mp::TransferMode::from_godot(i64::from(mode.ord())) {
            self.peer.set_transfer_mode(mode);
        }
    }

    fn get_transfer_mode(&self) -> TransferMode {
        godot_mode(self.peer.transfer_mode())
    }

    fn set_target_peer(&mut self, peer: i32) {
        self.peer.set_target_peer(peer);
    }

    fn get_packet_peer(&self) -> i32 {
        self.peer.packet_peer()
    }

    fn is_server(&self) -> bool {
        self.peer.is_server()
    }

    fn is_server_relay_supported(&self) -> bool {
        self.peer.is_server_relay_supported()
    }

    fn poll(&mut self) {
        let events = self.peer.poll();
        self.emit(events);
    }

    fn close(&mut self) {
        let events = self.peer.close();
        self.emit(events);
    }

    fn disconnect_peer(&mut self, peer: i32, _force: bool) {
        match self.peer.disconnect_peer(peer) {
            Ok(events) => self.emit(events),
            Err(error) => godot_error!(
                "AeThexMultiplayerPeer.disconnect_peer({peer}): {}",
                error.message
            ),
        }
    }

    fn get_unique_id(&self) -> i32 {
        self.peer.unique_id()
    }

    fn get_connection_status(&self) -> ConnectionStatus {
        match self.peer.connection_status() {
            mp::ConnectionStatus::Disconnected => ConnectionStatus::DISCONNECTED,
            mp::ConnectionStatus::Connecting => ConnectionStatus::CONNECTING,
            mp::ConnectionStatus::Connected => ConnectionStatus::CONNECTED,
        }
    }
}

impl AeThexMultiplayerPeer {
    pub fn create(peer: mp::MultiplayerPeer) -> Gd<Self> {
        Gd::from_init_fn(|base| Self { peer, base })
    }

    /// Emits the peer signals for `events`, in order.
    fn emit(&mut self, events: Vec<PeerEvent>) {
        for event in events {
            let (signal, peer) = match event {
                PeerEvent::PeerConnected(peer) => ("peer_connected", peer),
                PeerEvent::PeerDisconnected(peer) => ("peer_disconnected", peer),
            };
            self.base_mut()
                .emit_signal(signal, &[i64::from(peer).to_variant()]);
        }
    }
}

fn godot_mode(mode: mp::TransferMode) -> TransferMode {
    match mode {
        mp::TransferMode::Unreliable => TransferMode::UNRELIABLE,
        mp::TransferMode::UnreliableOrdered => TransferMode::UNRELIABLE_ORDERED,
        mp::TransferMode::Reliable => TransferMode::RELIABLE,
    }
}
