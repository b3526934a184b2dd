//! The logic of Godot's `MultiplayerPeer` over one room of the relay, in plain Rust: the binding's
//! `AeThexMultiplayerPeer` (a `MultiplayerPeerExtension`) forwards each virtual method to the
//! method of the same name here (`_get_unique_id` -> [`MultiplayerPeer::unique_id`], `_poll` ->
//! [`MultiplayerPeer::poll`], ...).
//!
//! # Peer ids
//! Every member has a server-assigned `peer_id` (2 and up, stable in the room, never reused).
//! The room's host is shown as peer **1** on every client (its own `peer_id` is hidden), so
//! `is_server()` is true on the host and Godot's default authority (1) is the host.
//!
//! # Packets
//! `put_packet` relays to the target set with `set_target_peer`: 0 = every other member, `n > 0`
//! = that peer, `n < 0` = every other member but `-n`. Each packet carries a one-byte header
//! (the transfer mode) ahead of the game's bytes so the receiver reports the sender's mode.
//! On the relay, `reliable` goes as `reliable: true`; `unreliable` and `unreliable_ordered` ride
//! the same ordered socket as `reliable: false`. With the P2P transport ([`PeerTransport::P2p`],
//! module `p2p`) a member whose WebRTC link is open gets `reliable` packets on the
//! reliable-ordered data channel and the others on the unreliable-unordered one; members without
//! a link (and packets above 16 KiB) take the relay. An `unreliable_ordered` packet older than
//! the newest one already received from the same peer on the same channel (and path) is
//! dropped, as Godot's ENet peer does.
//!
//! # P2P links
//! With [`PeerTransport::P2p`] a member becomes a connected peer (`peer_connected`) only once its
//! link has settled on a path (direct, TURN or the relay, see `p2p`); packets it sent meanwhile
//! wait and are delivered after `peer_connected`.
//!
//! # Relay topology
//! `is_server_relay_supported()` is **false**: the AeThex server already relays between any two
//! members, so every client sees every member as a connected peer (`peer_connected` for each) and
//! targets any peer directly; Godot's `SceneMultiplayer` must not add its own relay through
//! peer 1 on top.
//!
//! # Host migration
//! When the host leaves, every client's peer emits `peer_disconnected(1)` and closes
//! (`connection_status()` becomes `Disconnected`, `close_reason()` is `"host_left"`): Godot's
//! `SceneMultiplayer` reports `server_disconnected`, exactly as when an ENet server goes away.
//! The room itself lives on with its new host (`host_changed` on the `multiplayer` service); the
//! game continues by assigning a new peer, `create_peer(room_id)`, in which the new host is
//! peer 1. Why not swap ids in place: `SceneMultiplayer` assumes a peer's unique id never changes
//! while its peer is assigned (node authority, spawner and synchronizer state, the path cache are
//! keyed by peer id), so the new host's id turning into 1 under it would leave nodes owned by a
//! peer id that no longer exists. A fresh peer gives Godot a clean, consistent start.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use aethex_protocol::realtime::{ClientMessage, Member, RoomInfo};
use aethex_protocol::ErrorCode;
use crossbeam_queue::SegQueue;
use tokio::sync::mpsc;

use super::p2p::{LinkStatus, Mesh, MeshInput, PeerTransport};
use super::socket::Realtime;
use crate::SdkError;

/// Godot's `MultiplayerPeer.TransferMode`, same numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferMode {
    Unreliable = 0,
    UnreliableOrdered = 1,
    Reliable = 2,
}

impl TransferMode {
    pub fn from_godot(mode: i64) -> Option<Self> {
        match mode {
            0 => Some(Self::Unreliable),
            1 => Some(Self::UnreliableOrdered),
            2 => Some(Self::Reliable),
            _ => None,
        }
    }

    pub fn as_godot(self) -> i64 {
        self as i64
    }
}

/// Godot's `MultiplayerPeer.ConnectionStatus`, same numbering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionStatus {
    Disconnected = 0,
    Connecting = 1,
    Connected = 2,
}

/// What `poll` reports, for the binding to emit as the peer's signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    PeerConnected(i32),
    PeerDisconnected(i32),
}

/// What the socket task hands a peer, in the room's event order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RoomEvent {
    Joined(Member),
    Left(String),
    HostChanged(String),
    Packet {
        from: String,
        /// The room's `seq` on the relay; the sender's own count on a data channel.
        seq: u64,
        data: Vec<u8>,
        channel: u32,
        reliable: bool,
        /// Came over a P2P data channel.
        direct: bool,
    },
    /// The P2P link to this member settled on a path: the game may see the member.
    LinkSettled(String),
    /// The room is gone for this client (left, lost after a drop, signed out).
    Closed(&'static str),
}

/// A peer's mailbox; the socket task pushes, `poll` drains on the game's thread.
#[derive(Default)]
pub(crate) struct PeerInbox {
    pub queue: SegQueue<RoomEvent>,
}

#[derive(Debug, Clone, PartialEq)]
struct Incoming {
    from: i32,
    channel: i32,
    mode: TransferMode,
    data: Vec<u8>,
}

/// A packet ready for `relay_packet`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outgoing {
    /// `None`: every other member.
    pub targets: Option<Vec<String>>,
    pub channel: u32,
    pub reliable: bool,
    /// Header byte (the mode) then the game's bytes.
    pub data: Vec<u8>,
}

/// The peer's state machine, without the socket: unit-testable.
#[derive(Debug)]
pub(crate) struct PeerCore {
    room_id: String,
    self_user: String,
    host: String,
    /// Every member, the caller included.
    members: Vec<Member>,
    incoming: VecDeque<Incoming>,
    /// Newest `seq` of `unreliable_ordered` packets per (peer, channel, came direct).
    ordered: HashMap<(i32, i32, bool), u64>,
    /// P2P: members whose link has not settled yet (not connected peers for the game).
    unsettled: HashSet<String>,
    /// Packets of unsettled members, delivered once they settle.
    held: Vec<RoomEvent>,
    /// Whether members wait for their link to settle (the P2P transport).
    gated: bool,
    target: i32,
    mode: TransferMode,
    channel: i32,
    status: ConnectionStatus,
    close_reason: Option<&'static str>,
    /// `peer_connected` for the members present at creation is reported by the first poll.
    announced: bool,
}

impl PeerCore {
    /// `gated`: members count as connected only once their P2P link settled.
    pub fn with_links(self_user: String, room: &RoomInfo, gated: bool) -> Self {
        let unsettled = if gated {
            room.members
                .iter()
                .map(|m| m.user_id.clone())
                .filter(|u| *u != self_user)
                .collect()
        } else {
            HashSet::new()
        };
        Self {
            unsettled,
            held: Vec::new(),
            gated,
            room_id: room.room_id.clone(),
            self_user,
            host: room.host.clone(),
            members: room.members.clone(),
            incoming: VecDeque::new(),
            ordered: HashMap::new(),
            target: 0,
            mode: TransferMode::Reliable,
            channel: 0,
            status: ConnectionStatus::Connected,
            close_reason: None,
            announced: false,
        }
    }

    /// The Godot peer id of a member: 1 for the host, else the server-assigned `peer_id`.
    pub fn peer_of(&self, user_id: &str) -> Option<i32> {
        if user_id == self.host {
            return Some(1);
        }
        self.members
            .iter()
            .find(|m| m.user_id == user_id)
            .map(|m| m.peer_id as i32)
    }

    /// The member behind a Godot peer id.
    pub fn user_of(&self, peer: i32) -> Option<&str> {
        if peer == 1 {
            return Some(&self.host);
        }
        self.members
            .iter()
            .find(|m| m.peer_id as i32 == peer && m.user_id != self.host)
            .map(|m| m.user_id.as_str())
    }

    pub fn unique_id(&self) -> i32 {
        self.peer_of(&self.self_user).unwrap_or(0)
    }

    fn others(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.user_id != self.self_user)
    }

    /// The other members the game sees as connected peers.
    fn settled(&self) -> impl Iterator<Item = &Member> {
        self.others()
            .filter(|m| !self.unsettled.contains(&m.user_id))
    }

    /// Applies one room event; reports the peer signals it causes into `out`.
    pub fn apply(&mut self, event: RoomEvent, out: &mut Vec<PeerEvent>) {
        self.announce(out);
        if self.status == ConnectionStatus::Disconnected {
            return;
        }
        if let RoomEvent::Packet { from, .. } = &event {
            if self.unsettled.contains(from) {
                self.held.push(event);
                return;
            }
        }
        match event {
            RoomEvent::Joined(member) => {
                if self.members.iter().any(|m| m.user_id == member.user_id) {
                    return;
                }
                self.members.push(member.clone());
                if self.gated {
                    self.unsettled.insert(member.user_id);
                } else if let Some(peer) = self.peer_of(&member.user_id) {
                    out.push(PeerEvent::PeerConnected(peer));
                }
            }
            RoomEvent::Left(user_id) => {
                let Some(peer) = self.peer_of(&user_id) else {
                    return;
                };
                self.members.retain(|m| m.user_id != user_id);
                if self.unsettled.remove(&user_id) {
                    // Never seen by the game: nothing to disconnect.
                    self.held.retain(
                        |p| !matches!(p, RoomEvent::Packet { from, .. } if *from == user_id),
                    );
                } else if user_id == self.self_user {
                    self.close("room_left", out);
                } else if peer == 1 {
                    out.push(PeerEvent::PeerDisconnected(1));
                    self.close("host_left", out);
                } else {
                    out.push(PeerEvent::PeerDisconnected(peer));
                }
            }
            RoomEvent::HostChanged(host) => {
                // Reached only when the host changed without leaving (a replay gap): the same
                // rule as a departure applies, peer 1 is no longer who it was.
                if host != self.host {
                    out.push(PeerEvent::PeerDisconnected(1));
                    self.close("host_left", out);
                }
            }
            RoomEvent::Packet {
                from,
                seq,
                data,
                channel,
                reliable,
                direct,
            } => self.receive(&from, seq, data, channel, reliable, direct),
            RoomEvent::LinkSettled(user_id) => {
                if !self.unsettled.remove(&user_id) {
                    return;
                }
                // Before the first poll the member is announced with the others.
                if self.announced {
                    if let Some(peer) = self.peer_of(&user_id) {
                        out.push(PeerEvent::PeerConnected(peer));
                    }
                }
                let (theirs, others) = std::mem::take(&mut self.held)
                    .into_iter()
                    .partition(|p| matches!(p, RoomEvent::Packet { from, .. } if *from == user_id));
                self.held = others;
                for packet in theirs {
                    self.apply(packet, out);
                }
            }
            RoomEvent::Closed(reason) => self.close(reason, out),
        }
    }

    /// The first poll reports the members already present.
    fn announce(&mut self, out: &mut Vec<PeerEvent>) {
        if self.announced {
            return;
        }
        self.announced = true;
        let peers: Vec<i32> = self
            .settled()
            .filter_map(|m| self.peer_of(&m.user_id))
            .collect();
        out.extend(peers.into_iter().map(PeerEvent::PeerConnected));
    }

    pub fn poll(&mut self, out: &mut Vec<PeerEvent>) {
        self.announce(out);
    }

    fn receive(
        &mut self,
        from: &str,
        seq: u64,
        data: Vec<u8>,
        channel: u32,
        reliable: bool,
        direct: bool,
    ) {
        let Some(peer) = self.peer_of(from) else {
            return;
        };
        let Some((&header, _)) = data.split_first() else {
            return;
        };
        let mode = match TransferMode::from_godot(i64::from(header)) {
            Some(mode) => mode,
            // Not from a peer (a plain `send_packet`): its reliability flag decides.
            None if reliable => TransferMode::Reliable,
            None => TransferMode::Unreliable,
        };
        let channel = i32::try_from(channel).unwrap_or(i32::MAX);
        if mode == TransferMode::UnreliableOrdered {
            let newest = self.ordered.entry((peer, channel, direct)).or_insert(0);
            if seq <= *newest {
                return;
            }
            *newest = seq;
        }
        let mut data = data;
        data.remove(0);
        self.incoming.push_back(Incoming {
            from: peer,
            channel,
            mode,
            data,
        });
    }

    fn close(&mut self, reason: &'static str, out: &mut Vec<PeerEvent>) {
        if self.status == ConnectionStatus::Disconnected {
            return;
        }
        // Godot expects every connected peer to disconnect before the peer goes down.
        let gone: Vec<i32> = self
            .settled()
            .filter_map(|m| self.peer_of(&m.user_id))
            .filter(|p| !out.contains(&PeerEvent::PeerDisconnected(*p)))
            .collect();
        out.extend(gone.into_iter().map(PeerEvent::PeerDisconnected));
        self.status = ConnectionStatus::Disconnected;
        self.close_reason = Some(reason);
        self.incoming.clear();
        self.held.clear();
    }

    /// Resolves the current target and mode for `data`.
    pub fn outgoing(&self, data: &[u8]) -> Result<Outgoing, SdkError> {
        if self.status != ConnectionStatus::Connected {
            return Err(SdkError::new(
                ErrorCode::Unavailable,
                "the peer is closed; create a new one",
            ));
        }
        let targets = match self.target {
            0 if self.unsettled.is_empty() => None,
            0 => Some(self.settled().map(|m| m.user_id.clone()).collect()),
            peer if peer > 0 => {
                let user = self.user_of(peer).ok_or_else(|| {
                    SdkError::new(ErrorCode::NotFound, format!("no peer {peer} in the room"))
                })?;
                Some(vec![user.to_owned()])
            }
            excluded => {
                let excluded = self.user_of(-excluded).map(str::to_owned);
                Some(
                    self.settled()
                        .filter(|m| Some(&m.user_id) != excluded.as_ref())
                        .map(|m| m.user_id.clone())
                        .collect(),
                )
            }
        };
        let mut framed = Vec::with_capacity(data.len() + 1);
        framed.push(self.mode as u8);
        framed.extend_from_slice(data);
        Ok(Outgoing {
            targets,
            channel: u32::try_from(self.channel).unwrap_or(0),
            reliable: self.mode == TransferMode::Reliable,
            data: framed,
        })
    }
}

/// Godot's `MultiplayerPeer` over one joined room. Made by `Multiplayer::create_peer`; see the
/// module documentation for peer ids, packets, relay topology and host migration.
pub struct MultiplayerPeer {
    realtime: Arc<Realtime>,
    inbox: Arc<PeerInbox>,
    core: PeerCore,
    /// The P2P links and their input (the P2P transport only).
    mesh: Option<(Arc<Mesh>, mpsc::UnboundedSender<MeshInput>)>,
}

impl MultiplayerPeer {
    pub(crate) fn attach(
        realtime: Arc<Realtime>,
        room_id: Option<String>,
        transport: PeerTransport,
    ) -> Result<Self, SdkError> {
        let not_joined = || SdkError::new(ErrorCode::NotFound, "not in that room (join it first)");
        let room_id = match room_id {
            Some(id) => id,
            None => realtime.rooms().current().ok_or_else(not_joined)?,
        };
        realtime.rooms().info(&room_id).ok_or_else(not_joined)?;
        let self_user = realtime
            .user_id()
            .ok_or_else(|| SdkError::new(ErrorCode::Unauthorized, "not signed in"))?;
        let inbox = Arc::new(PeerInbox::default());
        // The inbox is attached before the room is read: a join or leave between the two then
        // reaches the inbox too (the core ignores what the snapshot already holds) instead of
        // being lost between the read and the attach.
        realtime.attach_peer(&room_id, inbox.clone());
        let Some(info) = realtime.rooms().info(&room_id) else {
            realtime.detach_peer(&room_id, &inbox);
            return Err(not_joined());
        };
        let mesh = (transport == PeerTransport::P2p).then(|| {
            let members = info.members.iter().map(|m| m.user_id.clone()).collect();
            let (mesh, input) = Mesh::start(
                realtime.shared().clone(),
                realtime.clone(),
                inbox.clone(),
                room_id.clone(),
                self_user.clone(),
                members,
            );
            // Membership changes after the snapshot reach the mesh too (it ignores members it
            // already has), as for the inbox above.
            realtime.attach_mesh(&room_id, input.clone());
            (mesh, input)
        });
        Ok(Self {
            core: PeerCore::with_links(self_user, &info, mesh.is_some()),
            realtime,
            inbox,
            mesh,
        })
    }

    pub fn room_id(&self) -> &str {
        &self.core.room_id
    }

    /// `_poll`: takes the room events that arrived since the last call; returns the
    /// `peer_connected` / `peer_disconnected` signals to emit, in order.
    pub fn poll(&mut self) -> Vec<PeerEvent> {
        let mut out = Vec::new();
        self.core.poll(&mut out);
        while let Some(event) = self.inbox.queue.pop() {
            self.core.apply(event, &mut out);
        }
        out
    }

    /// `_get_unique_id`: 1 on the host, else the caller's `peer_id` in the room.
    pub fn unique_id(&self) -> i32 {
        self.core.unique_id()
    }

    /// `_put_packet`: relays `data` to the target peer(s) with the current mode and channel.
    /// Never blocks; `rate_limited` when the socket's queue is full, `unavailable` once closed.
    pub fn put_packet(&mut self, data: &[u8]) -> Result<(), SdkError> {
        // The P2P links' queues may outlive the client's runtime by a moment; refuse here.
        if self.realtime.shared().is_shut_down() {
            return Err(SdkError::new(
                ErrorCode::Unavailable,
                "the client was shut down",
            ));
        }
        let mut packet = self.core.outgoing(data)?;
        if let Some((mesh, _)) = &self.mesh {
            // Members with an open link get it over their data channel; the rest by relay.
            let all: Vec<String> = match &packet.targets {
                Some(targets) => targets.clone(),
                None => self.core.others().map(|m| m.user_id.clone()).collect(),
            };
            let mut by_relay = Vec::with_capacity(all.len());
            for user in all {
                let sent = mesh.send(
                    &user,
                    packet.reliable,
                    packet.data[0],
                    packet.channel,
                    &packet.data[1..],
                )?;
                if !sent {
                    by_relay.push(user);
                }
            }
            if by_relay.is_empty() {
                return Ok(());
            }
            packet.targets = Some(by_relay);
        }
        self.realtime.send_untracked(ClientMessage::RelayPacket {
            room_id: self.core.room_id.clone(),
            data: packet.data,
            targets: packet.targets,
            channel: packet.channel,
            reliable: packet.reliable,
        })
    }

    /// The P2P link to the member behind `peer` (`None`: the relay transport, or no such peer).
    pub fn link_status(&self, peer: i32) -> Option<LinkStatus> {
        let user = self.core.user_of(peer)?;
        self.mesh.as_ref()?.0.status(user)
    }

    /// `_get_available_packet_count`
    pub fn available_packet_count(&self) -> usize {
        self.core.incoming.len()
    }

    /// `_get_packet_peer`: sender of the next packet (0 when none).
    pub fn packet_peer(&self) -> i32 {
        self.core.incoming.front().map_or(0, |p| p.from)
    }

    /// `_get_packet_channel`: channel of the next packet.
    pub fn packet_channel(&self) -> i32 {
        self.core.incoming.front().map_or(0, |p| p.channel)
    }

    /// `_get_packet_mode`: transfer mode the next packet was sent with.
    pub fn packet_mode(&self) -> TransferMode {
        self.core
            .incoming
            .front()
            .map_or(TransferMode::Reliable, |p| p.mode)
    }

    /// `_get_packet` / `_get_packet_script`: takes the next packet's bytes.
    pub fn get_packet(&mut self) -> Option<Vec<u8>> {
        self.core.incoming.pop_front().map(|p| p.data)
    }

    /// `_set_target_peer`: 0 = all, `n > 0` = peer n, `n < 0` = all but peer -n.
    pub fn set_target_peer(&mut self, peer: i32) {
        self.core.target = peer;
    }

    /// `_set_transfer_mode`
    pub fn set_transfer_mode(&mut self, mode: TransferMode) {
        self.core.mode = mode;
    }

    /// `_get_transfer_mode`
    pub fn transfer_mode(&self) -> TransferMode {
        self.core.mode
    }

    /// `_set_transfer_channel`
    pub fn set_transfer_channel(&mut self, channel: i32) {
        self.core.channel = channel.max(0);
    }

    /// `_get_transfer_channel`
    pub fn transfer_channel(&self) -> i32 {
        self.core.channel
    }

    /// `_get_connection_status`
    pub fn connection_status(&self) -> ConnectionStatus {
        self.core.status
    }

    /// Why the peer closed: `"host_left"`, `"room_left"` (left, or the seat was lost after a
    /// drop), `"signed_out"`, `"replaced"` (another peer took the room), `"closed"` (`close`).
    pub fn close_reason(&self) -> Option<&'static str> {
        self.core.close_reason
    }

    /// `_is_server`: whether this client hosts the room.
    pub fn is_server(&self) -> bool {
        self.unique_id() == 1
    }

    /// `_is_server_relay_supported`: false, the AeThex server relays between all members.
    pub fn is_server_relay_supported(&self) -> bool {
        false
    }

    /// `_close`: detaches from the room (its packets become `packet_received` signals again)
    /// and returns the `peer_disconnected` signals to emit. The seat stays: `leave_room` gives
    /// it up.
    pub fn close(&mut self) -> Vec<PeerEvent> {
        let mut out = Vec::new();
        self.core.close("closed", &mut out);
        self.detach();
        out
    }

    /// Gives the room's packets back to the socket and ends the P2P links.
    fn detach(&mut self) {
        self.realtime.detach_peer(&self.core.room_id, &self.inbox);
        if let Some((_, input)) = self.mesh.take() {
            self.realtime.detach_mesh(&self.core.room_id, &input);
        }
    }

    /// `_disconnect_peer`: only the caller's own id (which closes the peer); the relay cannot
    /// remove other members (`forbidden`).
    pub fn disconnect_peer(&mut self, peer: i32) -> Result<Vec<PeerEvent>, SdkError> {
        if peer == self.unique_id() {
            return Ok(self.close());
        }
        Err(SdkError::new(
            ErrorCode::Forbidden,
            "a member cannot disconnect another one from the room",
        ))
    }

    /// The user id behind a Godot peer id.
    pub fn user_id_of(&self, peer: i32) -> Option<String> {
        self.core.user_of(peer).map(str::to_owned)
    }

    /// The Godot peer id of a member.
    pub fn peer_id_of(&self, user_id: &str) -> Option<i32> {
        self.core.peer_of(user_id)
    }
}

impl Drop for MultiplayerPeer {
    fn drop(&mut self) {
        self.detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aethex_protocol::realtime::RoomProperties;

    fn member(user: &str, peer_id: u32) -> Member {
        Member {
            user_id: user.into(),
            peer_id,
            joined_at: 0,
        }
    }

    /// Host `h` (peer_id 2), `a` (3), `b` (4); seen from `me`.
    fn core(me: &str) -> PeerCore {
        let room = RoomInfo {
            room_id: "r".into(),
            join_code: None,
            host: "h".into(),
            members: vec![member("h", 2), member("a", 3), member("b", 4)],
            properties: RoomProperties::default(),
            seq: 3,
        };
        PeerCore::with_links(me.into(), &room, false)
    }

    fn packet(from: &str, seq: u64, mode: TransferMode, channel: u32, body: &[u8]) -> RoomEvent {
        let mut data = vec![mode as u8];
        data.extend_from_slice(body);
        RoomEvent::Packet {
            from: from.into(),
            seq,
            data,
            channel,
            reliable: mode == TransferMode::Reliable,
            direct: false,
        }
    }

    #[test]
    fn the_host_is_peer_one_and_others_keep_their_server_ids() {
        let host = core("h");
        assert_eq!(host.unique_id(), 1);
        let a = core("a");
        assert_eq!(a.unique_id(), 3);
        assert_eq!(a.peer_of("h"), Some(1));
        assert_eq!(a.peer_of("b"), Some(4));
        assert_eq!(a.user_of(1), Some("h"));
        assert_eq!(a.user_of(2), None, "the host's own peer_id is hidden");
        assert_eq!(a.user_of(4), Some("b"));
        assert_eq!(a.peer_of("stranger"), None);
    }

    #[test]
    fn the_first_poll_connects_the_members_present_then_follows_the_room() {
        let mut a = core("a");
        let mut out = Vec::new();
        a.poll(&mut out);
        assert_eq!(
            out,
            vec![PeerEvent::PeerConnected(1), PeerEvent::PeerConnected(4)]
        );
        out.clear();
        a.poll(&mut out);
        assert!(out.is_empty());
        a.apply(RoomEvent::Joined(member("c", 5)), &mut out);
        a.apply(RoomEvent::Joined(member("c", 5)), &mut out);
        a.apply(RoomEvent::Left("b".into()), &mut out);
        assert_eq!(
            out,
            vec![PeerEvent::PeerConnected(5), PeerEvent::PeerDisconnected(4)]
        );
        assert_eq!(a.connection_status(), ConnectionStatus::Connected);
    }

    impl PeerCore {
        fn connection_status(&self) -> ConnectionStatus {
            self.status
        }
    }

    #[test]
    fn packets_queue_with_sender_channel_and_mode() {
        let mut a = core("a");
        let mut out = Vec::new();
        a.apply(packet("h", 4, TransferMode::Reliable, 0, b"one"), &mut out);
        a.apply(
            packet("b", 5, TransferMode::Unreliable, 3, b"two"),
            &mut out,
        );
        a.apply(
            packet("stranger", 6, TransferMode::Reliable, 0, b"x"),
            &mut out,
        );
        a.apply(
            RoomEvent::Packet {
                from: "b".into(),
                seq: 7,
                data: vec![],
                channel: 0,
                reliable: true,
                direct: false,
            },
            &mut out,
        );
        assert_eq!(
            a.incoming.len(),
            2,
            "strangers and empty frames are dropped"
        );
        let first = a.incoming.pop_front().unwrap();
        assert_eq!(
            (first.from, first.channel, first.mode, first.data.as_slice()),
            (1, 0, TransferMode::Reliable, &b"one"[..])
        );
        let second = a.incoming.pop_front().unwrap();
        assert_eq!(
            (
                second.from,
                second.channel,
                second.mode,
                second.data.as_slice()
            ),
            (4, 3, TransferMode::Unreliable, &b"two"[..])
        );
    }

    #[test]
    fn stale_unreliable_ordered_packets_are_dropped_per_peer_and_channel() {
        let mut a = core("a");
        let mut out = Vec::new();
        let ordered = TransferMode::UnreliableOrdered;
        a.apply(packet("h", 10, ordered, 1, b"10"), &mut out);
        a.apply(packet("h", 8, ordered, 1, b"8"), &mut out);
        a.apply(packet("h", 9, ordered, 2, b"9 other channel"), &mut out);
        a.apply(packet("b", 7, ordered, 1, b"7 other peer"), &mut out);
        a.apply(
            packet("h", 5, TransferMode::Reliable, 1, b"5 reliable"),
            &mut out,
        );
        a.apply(packet("h", 11, ordered, 1, b"11"), &mut out);
        let got: Vec<Vec<u8>> = a.incoming.iter().map(|p| p.data.clone()).collect();
        assert_eq!(
            got,
            vec![
                b"10".to_vec(),
                b"9 other channel".to_vec(),
                b"7 other peer".to_vec(),
                b"5 reliable".to_vec(),
                b"11".to_vec()
            ]
        );
    }

    #[test]
    fn targets_resolve_to_user_ids() {
        let mut a = core("a");
        assert_eq!(a.outgoing(b"x").unwrap().targets, None);
        a.target = 1;
        assert_eq!(a.outgoing(b"x").unwrap().targets, Some(vec!["h".into()]));
        a.target = 4;
        assert_eq!(a.outgoing(b"x").unwrap().targets, Some(vec!["b".into()]));
        a.target = -1;
        assert_eq!(a.outgoing(b"x").unwrap().targets, Some(vec!["b".into()]));
        a.target = -4;
        assert_eq!(a.outgoing(b"x").unwrap().targets, Some(vec!["h".into()]));
        a.target = 2;
        assert_eq!(
            a.outgoing(b"x").unwrap_err().code,
            ErrorCode::NotFound,
            "the host's own peer_id is not a target"
        );
        a.target = 9;
        assert_eq!(a.outgoing(b"x").unwrap_err().code, ErrorCode::NotFound);
    }

    #[test]
    fn transfer_modes_set_reliability_channel_and_header() {
        let mut a = core("a");
        let reliable = a.outgoing(b"p").unwrap();
        assert!(reliable.reliable);
        assert_eq!(reliable.data, vec![2, b'p']);
        a.mode = TransferMode::Unreliable;
        a.channel = 3;
        let unreliable = a.outgoing(b"p").unwrap();
        assert!(!unreliable.reliable);
        assert_eq!((unreliable.channel, unreliable.data[0]), (3, 0));
        a.mode = TransferMode::UnreliableOrdered;
        let ordered = a.outgoing(b"p").unwrap();
        assert!(!ordered.reliable);
        assert_eq!(ordered.data[0], 1);
        assert_eq!(TransferMode::from_godot(2), Some(TransferMode::Reliable));
        assert_eq!(TransferMode::from_godot(3), None);
    }

    #[test]
    fn the_host_leaving_disconnects_peer_one_and_closes_the_peer() {
        let mut a = core("a");
        let mut out = Vec::new();
        a.poll(&mut out);
        out.clear();
        a.apply(packet("h", 4, TransferMode::Reliable, 0, b"late"), &mut out);
        a.apply(RoomEvent::Left("h".into()), &mut out);
        a.apply(RoomEvent::HostChanged("a".into()), &mut out);
        assert_eq!(
            out,
            vec![
                PeerEvent::PeerDisconnected(1),
                PeerEvent::PeerDisconnected(4)
            ]
        );
        assert_eq!(a.connection_status(), ConnectionStatus::Disconnected);
        assert_eq!(a.close_reason, Some("host_left"));
        assert_eq!(a.incoming.len(), 0, "a closed peer holds no packets");
        assert_eq!(a.outgoing(b"x").unwrap_err().code, ErrorCode::Unavailable);

        // The game makes a new peer: the new host is peer 1 everywhere.
        let after = RoomInfo {
            room_id: "r".into(),
            join_code: None,
            host: "a".into(),
            members: vec![member("a", 3), member("b", 4)],
            properties: RoomProperties::default(),
            seq: 6,
        };
        let new_host = PeerCore::with_links("a".into(), &after, false);
        assert_eq!(new_host.unique_id(), 1);
        let b = PeerCore::with_links("b".into(), &after, false);
        assert_eq!((b.unique_id(), b.peer_of("a")), (4, Some(1)));
    }

    #[test]
    fn with_p2p_links_members_connect_once_their_link_settled() {
        let room = RoomInfo {
            room_id: "r".into(),
            join_code: None,
            host: "h".into(),
            members: vec![member("h", 2), member("a", 3), member("b", 4)],
            properties: RoomProperties::default(),
            seq: 3,
        };
        let mut a = PeerCore::with_links("a".into(), &room, true);
        let mut out = Vec::new();
        a.poll(&mut out);
        assert!(out.is_empty(), "no link settled yet: {out:?}");
        // What the host sends before its link settled waits, then follows peer_connected.
        a.apply(
            packet("h", 1, TransferMode::Reliable, 0, b"early"),
            &mut out,
        );
        assert_eq!(a.incoming.len(), 0);
        assert_eq!(a.outgoing(b"x").unwrap().targets, Some(vec![]));
        a.apply(RoomEvent::LinkSettled("h".into()), &mut out);
        assert_eq!(out, vec![PeerEvent::PeerConnected(1)]);
        assert_eq!(
            a.incoming.front().map(|p| p.data.clone()),
            Some(b"early".to_vec())
        );
        assert_eq!(
            a.outgoing(b"x").unwrap().targets,
            Some(vec!["h".into()]),
            "broadcasts reach the settled members only"
        );
        // A member leaving before its link settled was never seen: nothing to disconnect.
        out.clear();
        a.apply(packet("b", 2, TransferMode::Reliable, 0, b"lost"), &mut out);
        a.apply(RoomEvent::Left("b".into()), &mut out);
        a.apply(RoomEvent::LinkSettled("b".into()), &mut out);
        assert!(out.is_empty(), "{out:?}");
        // A later member too waits for its link.
        a.apply(RoomEvent::Joined(member("c", 5)), &mut out);
        assert!(out.is_empty());
        a.apply(RoomEvent::LinkSettled("c".into()), &mut out);
        assert_eq!(out, vec![PeerEvent::PeerConnected(5)]);
        assert_eq!(a.incoming.len(), 1, "b's held packet went with b");
    }

    #[test]
    fn leaving_or_losing_the_room_closes_with_its_reason() {
        let mut a = core("a");
        let mut out = Vec::new();
        a.apply(RoomEvent::Closed("room_left"), &mut out);
        assert_eq!(a.close_reason, Some("room_left"));
        assert!(out.contains(&PeerEvent::PeerDisconnected(1)));
        out.clear();
        a.apply(RoomEvent::Joined(member("c", 5)), &mut out);
        assert!(out.is_empty(), "a closed peer reports nothing more");
    }
}
