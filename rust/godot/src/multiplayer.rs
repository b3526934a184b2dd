//! `AeThexCloud.multiplayer` (rooms and state relay on the realtime socket) and
//! `AeThexCloud.multiplayer.matchmaking`, on the SDK's `multiplayer` module through the same
//! request/result/signal machinery as the other services.
//! The SDK owns the socket; these objects only convert arguments and start calls.

use std::rc::Rc;

use aethex_protocol::ErrorCode;
use godot::builtin::{GString, PackedByteArray, PackedStringArray, Signal, VarDictionary, Variant};
use godot::classes::RefCounted;
use godot::global::godot_error;
use godot::obj::{Base, Gd};
use godot::register::{godot_api, GodotClass};

use crate::sdk::multiplayer as mp;

use crate::convert;
use crate::hub::{binding_error, call_with, optional, Hub};
use crate::peer::AeThexMultiplayerPeer;
use crate::voice::AeThexVoice;

/// Realtime multiplayer: rooms, state relay and Godot's high-level multiplayer over AeThex
/// Cloud. Reach it as `AeThexCloud.multiplayer`.
///
/// The SDK opens one realtime socket after sign-in (on the first call here), reconnects with
/// backoff and takes the player's seats back after a drop; [signal connection_state_changed]
/// tells where it stands. Every method returning a [Signal] is asynchronous: `await` it for an
/// [AeThexResult].
/// ```gdscript
/// AeThexCloud.multiplayer.matchmaking.join_queue({"mode": "deathmatch", "region": "us-east", "skill_range": [1000, 1500]})
/// AeThexCloud.multiplayer.matchmaking.match_found.connect(func(match_info):
///     AeThexCloud.multiplayer.join_room(match_info.room_id))
/// AeThexCloud.multiplayer.send_state({"position": player.position, "rotation": player.rotation, "health": player.health})
/// AeThexCloud.multiplayer.player_state_received.connect(func(player_id, state): print(player_id, state))
/// ```
/// For `@rpc`, MultiplayerSpawner and MultiplayerSynchronizer:
/// `multiplayer.multiplayer_peer = AeThexCloud.multiplayer.create_peer(room_id)`.
#[derive(GodotClass)]
#[class(no_init, base = RefCounted)]
pub struct AeThexMultiplayer {
    /// Matchmaking queues and tickets ([AeThexMatchmaking]).
    #[var(no_set)]
    matchmaking: Gd<AeThexMatchmaking>,
    /// Voice chat.
    #[var(no_set)]
    voice: Gd<AeThexVoice>,
    hub: Rc<Hub>,
    base: Base<RefCounted>,
}

#[godot_api]
impl AeThexMultiplayer {
    /// You are in a room (after [method create_room] or [method join_room]). `room`:
    /// `{room_id, host, members: [{user_id, peer_id, joined_at}], properties, seq}` plus
    /// `join_code` for a private room.
    #[signal]
    fn room_joined(room: VarDictionary);

    /// You are out of `room_id`: after [method leave_room], or when the seat was lost while the
    /// connection was down for longer than the server's grace period.
    #[signal]
    fn room_left(room_id: GString);

    /// Someone joined one of your rooms; `member` is `{user_id, peer_id, joined_at}`.
    #[signal]
    fn player_joined(room_id: GString, member: VarDictionary);

    /// Someone left one of your rooms (or dropped and did not come back in time).
    #[signal]
    fn player_left(room_id: GString, user_id: GString);

    /// The host left; `host` (a user id) hosts the room now.
    #[signal]
    fn host_changed(room_id: GString, host: GString);

    /// Another member's [method send_state]; Godot types in `state` arrive intact.
    #[signal]
    fn player_state_received(player_id: GString, state: Variant);

    /// Another member's [method send_packet], for rooms without an [AeThexMultiplayerPeer].
    #[signal]
    fn packet_received(
        room_id: GString,
        from_user_id: GString,
        data: PackedByteArray,
        channel: i64,
        reliable: bool,
    );

    /// The realtime connection's state: `"connecting"`, `"connected"`, `"reconnecting"` or
    /// `"disconnected"`.
    #[signal]
    fn connection_state_changed(state: GString);

    /// The peer-to-peer link to `player_id` (a user id) of a `"p2p"` / `"auto"` peer changed:
    /// `state` `"connecting"` (with `path` the attempt under way, `"direct"` or `"turn"`) or
    /// `"connected"` (`path` `"direct"`, `"turn"` or `"relay"`: the server relays for this
    /// player). `rtt_ms`: the round trip over the data channel, -1 until measured and on the
    /// relay; signaled again when it moves by 10% or more.
    #[signal]
    fn peer_connection_changed(player_id: GString, state: GString, path: GString, rtt_ms: f64);

    /// The server refused a message nothing waits on any more (a [method send_state] already
    /// completed, or a message over the rate limit). `error` is `{code, message, status}`.
    #[signal]
    fn error(error: VarDictionary);

    /// Creates a room and joins it as its host. `properties` (all optional): `metadata` (any
    /// value, shown in the room list), `max_players`, `private` (not listed; joined with the
    /// `join_code` of the result), `labels` (Array of String, what [method list_rooms] filters
    /// on), `tick_rate` (state updates batched per tick). Result: the room (see
    /// [signal room_joined]). Pass `{}` for the defaults.
    #[func]
    fn create_room(&self, properties: VarDictionary) -> Signal {
        call_with(
            &self.hub,
            &Variant::from(properties),
            "properties",
            |c, properties| c.multiplayer().create_room(properties),
        )
    }

    /// Joins a public room by id (e.g. `match_info.room_id`), or any room by its six-character
    /// join code. Result: the room (see [signal room_joined]); `not_found`, or `conflict` when
    /// the room is full.
    #[func]
    fn join_room(&self, room_id_or_code: GString) -> Signal {
        self.hub
            .call(|c| c.multiplayer().join_room(room_id_or_code.to_string()))
    }

    /// Leaves `room_id`, or the current room (the one joined last) when empty. Result:
    /// `{room_id}`.
    #[func]
    fn leave_room(&self, #[opt(default = "")] room_id: GString) -> Signal {
        let room_id = optional(&room_id);
        self.hub.call(|c| c.multiplayer().leave_room(room_id))
    }

    /// Public rooms, only those with `label` when given. Result: `{rooms: [{room_id, host,
    /// players, max_players, labels, metadata}]}`; iterating it visits the rooms.
    #[func]
    fn list_rooms(&self, #[opt(default = "")] label: GString) -> Signal {
        let label = optional(&label);
        self.hub.call(|c| c.multiplayer().list_rooms(label))
    }

    /// Relays `state` (any value: Godot types survive) to the other members of the current
    /// room, or only to the user ids in `targets`. Never echoed back to you. Result: `{}` once
    /// sent; a later refusal by the server is [signal error].
    #[func]
    fn send_state(
        &self,
        state: Variant,
        #[opt(default = &PackedStringArray::new())] targets: PackedStringArray,
    ) -> Signal {
        let targets = target_list(&targets);
        call_with(&self.hub, &state, "state", |c, state| {
            c.multiplayer().send_state(state, targets)
        })
    }

    /// [method send_state] to a given room; `echo` also sends it back to you.
    #[func]
    fn send_state_to_room(
        &self,
        room_id: GString,
        state: Variant,
        #[opt(default = &PackedStringArray::new())] targets: PackedStringArray,
        #[opt(default = false)] echo: bool,
    ) -> Signal {
        let targets = target_list(&targets);
        call_with(&self.hub, &state, "state", |c, state| {
            c.multiplayer()
                .send_state_to(room_id.to_string(), state, targets, echo)
        })
    }

    /// Relays raw bytes to the other members of `room_id` (the current room when empty) or only
    /// to `targets`; they arrive as [signal packet_received]. Result: `{}` once sent.
    #[func]
    fn send_packet(
        &self,
        data: PackedByteArray,
        #[opt(default = "")] room_id: GString,
        #[opt(default = &PackedStringArray::new())] targets: PackedStringArray,
        #[opt(default = 0)] channel: i64,
        #[opt(default = true)] reliable: bool,
    ) -> Signal {
        let Ok(channel) = u32::try_from(channel) else {
            return self.hub.refuse(binding_error(
                ErrorCode::InvalidRequest,
                format!("channel must be between 0 and {}, got {channel}", u32::MAX),
            ));
        };
        let (room_id, targets, data) = (optional(&room_id), target_list(&targets), data.to_vec());
        self.hub.call(|c| {
            c.multiplayer()
                .send_packet(room_id, data, targets, channel, reliable)
        })
    }

    /// Opens the realtime connection now instead of on the first call (signed in only).
    /// Result: `{}` once connected.
    #[func]
    fn connect_realtime(&self) -> Signal {
        self.hub.call(|c| c.multiplayer().connect())
    }

    /// A round trip to the server. Result: `{}`.
    #[func]
    fn ping(&self) -> Signal {
        self.hub.call(|c| c.multiplayer().ping())
    }

    /// As [signal connection_state_changed] last reported it. Synchronous.
    #[func]
    fn get_connection_state(&self) -> GString {
        self.hub
            .with_client(|c| c.multiplayer().connection_state().as_str())
            .map(GString::from)
            .unwrap_or_else(|| GString::from("disconnected"))
    }

    /// The room calls without a room id use (the one joined last), or `""`. Synchronous.
    #[func]
    fn get_current_room(&self) -> GString {
        self.hub
            .with_client(|c| c.multiplayer().current_room())
            .flatten()
            .map(|id| GString::from(id.as_str()))
            .unwrap_or_default()
    }

    /// The ids of the rooms you are in, oldest join first. Synchronous.
    #[func]
    fn get_joined_rooms(&self) -> PackedStringArray {
        self.hub
            .with_client(|c| c.multiplayer().joined_rooms())
            .unwrap_or_default()
            .iter()
            .map(|id| GString::from(id.as_str()))
            .collect()
    }

    /// One of your rooms as you see it now (shaped as in [signal room_joined], members and host
    /// kept current), or `null` when you are not in it. Synchronous.
    #[func]
    fn get_room(&self, room_id: GString) -> Variant {
        self.hub
            .with_client(|c| c.multiplayer().room(&room_id.to_string()))
            .flatten()
            .map(|room| convert::to_variant(&room))
            .unwrap_or_default()
    }

    /// A [MultiplayerPeer] carrying Godot's high-level multiplayer through `room_id` (the
    /// current room when empty), which you must have joined:
    /// `multiplayer.multiplayer_peer = AeThexCloud.multiplayer.create_peer(room_id)`. The host is
    /// peer 1; the others keep the `peer_id` the room gave them. `transport`: `"relay"` (the
    /// default: everything through the server), or `"p2p"` / `"auto"`: WebRTC data channels to
    /// each member (reliable packets on an ordered channel, the others on an unordered one),
    /// TURN when a direct path fails, the server relay when WebRTC fails altogether or the room
    /// is larger than the mesh; see [signal peer_connection_changed]:
    /// `create_peer(room_id, "p2p")`. `null` (and an error printed) when you are not in the room
    /// or `transport` is unknown.
    #[func]
    fn create_peer(
        &self,
        #[opt(default = "")] room_id: GString,
        // A String rather than an options Dictionary: `#[opt]` defaults must be immutable types,
        // and a required Dictionary would break `create_peer(room_id)`.
        #[opt(default = "relay")] transport: GString,
    ) -> Option<Gd<AeThexMultiplayerPeer>> {
        let room_id = optional(&room_id);
        let transport = mp::PeerTransport::parse(&transport.to_string()).map_err(|e| e.message);
        let transport = match transport {
            Ok(transport) => transport,
            Err(message) => {
                godot_error!("AeThexCloud.multiplayer.create_peer: {message}");
                return None;
            }
        };
        // Only the message is printed; keeping the whole error would make a large Result.
        let peer = self.hub.with_client(|c| {
            c.multiplayer()
                .create_peer_with(room_id, transport)
                .map_err(|error| error.message)
        })?;
        match peer {
            Ok(peer) => Some(AeThexMultiplayerPeer::create(peer)),
            Err(message) => {
                godot_error!("AeThexCloud.multiplayer.create_peer: {message}");
                None
            }
        }
    }
}

impl AeThexMultiplayer {
    pub fn create(hub: Rc<Hub>, voice: Gd<AeThexVoice>) -> Gd<Self> {
        let matchmaking = Gd::from_init_fn(|base| AeThexMatchmaking {
            hub: hub.clone(),
            base,
        });
        hub.add_service("multiplayer.matchmaking", matchmaking.clone().upcast());
        let multiplayer = Gd::from_init_fn(|base| Self {
            matchmaking,
            voice,
            hub: hub.clone(),
            base,
        });
        hub.add_service("multiplayer", multiplayer.clone().upcast());
        multiplayer
    }
}

// ---------------------------------------------------------------------------------------------

/// Matchmaking. Reach it as `AeThexCloud.multiplayer.matchmaking`.
///
/// The server matches tickets of the same mode and region whose skill ranges overlap (widening
/// them while they wait), creates the room and holds a seat in it for every matched player:
/// join it on [signal match_found].
#[derive(GodotClass)]
#[class(no_init, base = RefCounted)]
pub struct AeThexMatchmaking {
    hub: Rc<Hub>,
    base: Base<RefCounted>,
}

#[godot_api]
impl AeThexMatchmaking {
    /// A match formed: `match_info` is `{ticket_id, room_id, mode, region, players: [{user_id,
    /// properties}]}`. Join with `AeThexCloud.multiplayer.join_room(match_info.room_id)`.
    #[signal]
    fn match_found(match_info: VarDictionary);

    /// The ticket waited its mode's whole timeout without a match and is gone.
    #[signal]
    fn matchmaking_timeout(ticket_id: GString);

    /// Another player queued you in their party: `ticket` as in [method join_queue]'s result.
    #[signal]
    fn queue_joined(ticket: VarDictionary);

    /// Another player of your ticket left the queue: the ticket is gone.
    #[signal]
    fn queue_left(ticket_ids: PackedStringArray);

    /// Queues for a match. `request`: `mode`, `region` (Strings), `skill_range` (`[low,
    /// high]`), optional `party` (user ids kept together with you) and `properties` (any value,
    /// shown to the other players in [signal match_found]). Result: `{ticket: {ticket_id, mode,
    /// region, skill_range, effective_range, players, created_at, expires_at}}`.
    #[func]
    fn join_queue(&self, request: VarDictionary) -> Signal {
        call_with(
            &self.hub,
            &Variant::from(request),
            "request",
            |c, request| c.multiplayer().matchmaking().join_queue(request),
        )
    }

    /// Leaves the ticket `ticket_id`, or all of yours when empty. Result: `{ticket_ids}`.
    #[func]
    fn leave_queue(&self, #[opt(default = "")] ticket_id: GString) -> Signal {
        let ticket_id = optional(&ticket_id);
        self.hub
            .call(|c| c.multiplayer().matchmaking().leave_queue(ticket_id))
    }

    /// A waiting ticket. Result: `{ticket}` (its `effective_range` shows the widening);
    /// `not_found` once matched, left or timed out.
    #[func]
    fn queue_status(&self, ticket_id: GString) -> Signal {
        self.hub.call(|c| {
            c.multiplayer()
                .matchmaking()
                .queue_status(ticket_id.to_string())
        })
    }
}

// ---------------------------------------------------------------------------------------------

/// `None` (everyone) for an empty list.
fn target_list(targets: &PackedStringArray) -> Option<Vec<String>> {
    (!targets.is_empty()).then(|| targets.as_slice().iter().map(GString::to_string).collect())
}
