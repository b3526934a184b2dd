//! End-to-end encryption of voice on the socket relay, so the server forwards only ciphertext.
//!
//! Sender keys: each member of a room encrypts its own frames with a random 256-bit AES-GCM key
//! of its own (its *sender key*) and hands that key to every other member, wrapped for each one
//! with an X25519 agreement between the two members' per-session keys. Every member thereby
//! holds the room's keys without anyone electing a leader, and a member that joins or leaves
//! makes everyone start a new key (a new *epoch*) wrapped only for the members of the moment:
//! someone who left cannot read what is said after, someone who joined cannot read what was said
//! before. Per-session Ed25519 keys sign every key message, binding it to the room and to the
//! sender's user id as the server names it.
//!
//! Wire layouts (all integers big-endian), carried opaquely by `voice_key` / `voice_frame`:
//! - hello: `1, flags, ed25519 public (32), x25519 public (32), signature (64)`; flag bit 0 marks
//!   an answer to a hello (never answered again).
//! - sender keys: `2, epoch (u32), count (u8), count x [to length (u8), to, nonce (12), wrapped
//!   key (48)], signature (64)`.
//! - frame: `1, epoch (u32), seq (u32), AES-256-GCM ciphertext and tag`; nonce = the first 4
//!   bytes of SHA-256(sender id), epoch, seq; the room id, sender id and header are the AAD.
//!
//! What this protects against, and what not, is in docs/sdk.md ("Voice: threat model").

use std::collections::{HashMap, VecDeque};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use hkdf::Hkdf;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use x25519_dalek::{PublicKey, StaticSecret};

const HELLO: u8 = 1;
const SENDER_KEYS: u8 = 2;
const FRAME_VERSION: u8 = 1;
const HELLO_ANSWER: u8 = 1;
const FRAME_HEADER: usize = 9;
const WRAPPED: usize = 32 + 16;
const SIGNATURE: usize = 64;
/// Epochs of each peer kept: the current one and the one before, for frames that were on their
/// way when it rotated.
const EPOCHS_KEPT: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum E2eeError {
    /// Not a message or frame of this format.
    Malformed,
    /// A bad signature or a frame that does not authenticate: forged, altered or not ours.
    Forged,
    /// A key message or frame of a member whose hello has not arrived.
    UnknownSender,
    /// A frame under a key this member never handed us (we joined later, or it left us out).
    NoKey,
}

impl std::fmt::Display for E2eeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed voice message",
            Self::Forged => "voice message failed authentication",
            Self::UnknownSender => "voice message from a member without keys",
            Self::NoKey => "voice frame under a key we do not hold",
        })
    }
}

impl std::error::Error for E2eeError {}

/// A key message to send: `targets` `None` is every other member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMessage {
    pub data: Vec<u8>,
    pub targets: Option<Vec<String>>,
}

struct Peer {
    verifying: VerifyingKey,
    agreement: PublicKey,
    /// Oldest first.
    keys: VecDeque<(u32, Aes256Gcm)>,
}

/// One member's voice keys in one room.
pub struct VoiceSession {
    room_id: String,
    user_id: String,
    signing: SigningKey,
    agreement: StaticSecret,
    epoch: u32,
    cipher: Aes256Gcm,
    raw_key: [u8; 32],
    seq: u32,
    nonce_prefix: [u8; 4],
    peers: HashMap<String, Peer>,
}

impl VoiceSession {
    /// Fresh session keys and a first sender key.
    pub fn new(room_id: impl Into<String>, user_id: impl Into<String>) -> Self {
        let user_id = user_id.into();
        let raw_key = random_key();
        Self {
            room_id: room_id.into(),
            nonce_prefix: nonce_prefix(&user_id),
            user_id,
            signing: SigningKey::generate(&mut OsRng),
            agreement: StaticSecret::random_from_rng(OsRng),
            epoch: 1,
            cipher: Aes256Gcm::new(&raw_key.into()),
            raw_key,
            seq: 0,
            peers: HashMap::new(),
        }
    }

    pub fn room_id(&self) -> &str {
        &self.room_id
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Members whose current sender key we hold.
    pub fn secure_peers(&self) -> Vec<String> {
        let mut peers: Vec<String> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.keys.is_empty())
            .map(|(id, _)| id.clone())
            .collect();
        peers.sort();
        peers
    }

    /// A short hex digest of this session's signing key, for players to compare out of band
    /// (the only defence against a server that substitutes keys; see the threat model).
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&self.signing.verifying_key())
    }

    /// The fingerprint of `user_id`'s session, once their hello arrived.
    pub fn peer_fingerprint(&self, user_id: &str) -> Option<String> {
        self.peers
            .get(user_id)
            .map(|p| fingerprint_of(&p.verifying))
    }

    /// Announces this session's public keys to every other member.
    pub fn hello(&self) -> KeyMessage {
        KeyMessage {
            data: self.hello_bytes(0),
            targets: None,
        }
    }

    fn hello_bytes(&self, flags: u8) -> Vec<u8> {
        let mut body = vec![HELLO, flags];
        body.extend_from_slice(self.signing.verifying_key().as_bytes());
        body.extend_from_slice(PublicKey::from(&self.agreement).as_bytes());
        self.sign(b"hello", body)
    }

    /// Starts a new epoch: a new sender key, handed to every member we know. `None` when we
    /// know nobody (the key is handed out as hellos arrive).
    pub fn rotate(&mut self) -> Option<KeyMessage> {
        self.raw_key = random_key();
        self.cipher = Aes256Gcm::new(&self.raw_key.into());
        self.epoch = self.epoch.wrapping_add(1);
        let mut to: Vec<String> = self.peers.keys().cloned().collect();
        to.sort();
        self.sender_keys(to)
    }

    /// `user_id` left the room: forget their keys and rotate ours past them.
    pub fn peer_left(&mut self, user_id: &str) -> Option<KeyMessage> {
        self.peers.remove(user_id)?;
        self.rotate()
    }

    /// Our current sender key wrapped for each of `to`.
    fn sender_keys(&self, to: Vec<String>) -> Option<KeyMessage> {
        if to.is_empty() {
            return None;
        }
        let mut body = vec![SENDER_KEYS];
        body.extend_from_slice(&self.epoch.to_be_bytes());
        body.push(to.len().min(u8::MAX as usize) as u8);
        let mut targets = Vec::new();
        for user in to.into_iter().take(u8::MAX as usize) {
            let Some(peer) = self.peers.get(&user) else {
                continue;
            };
            let wrap = self.wrap_cipher(peer, &self.user_id, &user);
            let mut nonce = [0u8; 12];
            OsRng.fill_bytes(&mut nonce);
            let aad = self.epoch.to_be_bytes();
            let Ok(wrapped) = wrap.encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &self.raw_key,
                    aad: &aad,
                },
            ) else {
                continue;
            };
            body.push(user.len().min(u8::MAX as usize) as u8);
            body.extend_from_slice(&user.as_bytes()[..user.len().min(u8::MAX as usize)]);
            body.extend_from_slice(&nonce);
            body.extend_from_slice(&wrapped);
            targets.push(user);
        }
        body[5] = targets.len() as u8;
        Some(KeyMessage {
            data: self.sign(b"keys", body),
            targets: Some(targets),
        })
    }

    /// A key message from `from` (as the server names the sender): returns what to send back.
    pub fn receive(&mut self, from: &str, data: &[u8]) -> Result<Vec<KeyMessage>, E2eeError> {
        if from == self.user_id {
            return Ok(Vec::new());
        }
        match data.first() {
            Some(&HELLO) => self.receive_hello(from, data),
            Some(&SENDER_KEYS) => self.receive_keys(from, data).map(|()| Vec::new()),
            _ => Err(E2eeError::Malformed),
        }
    }

    fn receive_hello(&mut self, from: &str, data: &[u8]) -> Result<Vec<KeyMessage>, E2eeError> {
        if data.len() != 2 + 32 + 32 + SIGNATURE {
            return Err(E2eeError::Malformed);
        }
        let verifying = VerifyingKey::from_bytes(data[2..34].try_into().expect("32 bytes"))
            .map_err(|_| E2eeError::Malformed)?;
        self.verify(&verifying, b"hello", from, data)?;
        let agreement = PublicKey::from(<[u8; 32]>::try_from(&data[34..66]).expect("32 bytes"));
        let known = self
            .peers
            .get(from)
            .is_some_and(|p| p.verifying == verifying && p.agreement == agreement);
        if !known {
            // A new member, or one who started a new session: their old keys are void.
            self.peers.insert(
                from.to_owned(),
                Peer {
                    verifying,
                    agreement,
                    keys: VecDeque::new(),
                },
            );
        }
        let mut replies = Vec::new();
        if data[1] & HELLO_ANSWER == 0 {
            replies.push(KeyMessage {
                data: self.hello_bytes(HELLO_ANSWER),
                targets: Some(vec![from.to_owned()]),
            });
        }
        if !known {
            replies.extend(self.sender_keys(vec![from.to_owned()]));
        }
        Ok(replies)
    }

    fn receive_keys(&mut self, from: &str, data: &[u8]) -> Result<(), E2eeError> {
        let peer = self.peers.get(from).ok_or(E2eeError::UnknownSender)?;
        if data.len() < 6 + SIGNATURE {
            return Err(E2eeError::Malformed);
        }
        self.verify(&peer.verifying, b"keys", from, data)?;
        let epoch = u32::from_be_bytes(data[1..5].try_into().expect("4 bytes"));
        let count = data[5] as usize;
        let mut rest = &data[6..data.len() - SIGNATURE];
        for _ in 0..count {
            let (&len, tail) = rest.split_first().ok_or(E2eeError::Malformed)?;
            let len = len as usize;
            if tail.len() < len + 12 + WRAPPED {
                return Err(E2eeError::Malformed);
            }
            let (to, tail) = tail.split_at(len);
            let (nonce, tail) = tail.split_at(12);
            let (wrapped, tail) = tail.split_at(WRAPPED);
            rest = tail;
            if to != self.user_id.as_bytes() {
                continue;
            }
            let wrap = self.wrap_cipher(peer, from, &self.user_id);
            let key = wrap
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: wrapped,
                        aad: &epoch.to_be_bytes(),
                    },
                )
                .map_err(|_| E2eeError::Forged)?;
            let key: [u8; 32] = key.try_into().map_err(|_| E2eeError::Malformed)?;
            let peer = self.peers.get_mut(from).expect("looked up above");
            peer.keys.retain(|(e, _)| *e != epoch);
            peer.keys.push_back((epoch, Aes256Gcm::new(&key.into())));
            while peer.keys.len() > EPOCHS_KEPT {
                peer.keys.pop_front();
            }
            return Ok(());
        }
        // A rotation that left us out: we are no longer meant to hear this member.
        if let Some(peer) = self.peers.get_mut(from) {
            peer.keys.clear();
        }
        Ok(())
    }

    /// Encrypts one Opus packet under our current sender key.
    pub fn seal(&mut self, packet: &[u8]) -> Vec<u8> {
        let seq = self.seq;
        self.seq = self.seq.wrapping_add(1);
        let mut frame = Vec::with_capacity(FRAME_HEADER + packet.len() + 16);
        frame.push(FRAME_VERSION);
        frame.extend_from_slice(&self.epoch.to_be_bytes());
        frame.extend_from_slice(&seq.to_be_bytes());
        let nonce = frame_nonce(self.nonce_prefix, self.epoch, seq);
        let aad = frame_aad(&self.room_id, &self.user_id, &frame);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: packet,
                    aad: &aad,
                },
            )
            .expect("AES-GCM encrypts any packet under 64 GiB");
        frame.extend_from_slice(&sealed);
        frame
    }

    /// Decrypts a frame of `from`: its sequence number and the Opus packet.
    pub fn open(&self, from: &str, frame: &[u8]) -> Result<(u32, Vec<u8>), E2eeError> {
        let header = frame_header(frame)?;
        let peer = self.peers.get(from).ok_or(E2eeError::UnknownSender)?;
        let cipher = peer
            .keys
            .iter()
            .find(|(e, _)| *e == header.epoch)
            .map(|(_, c)| c)
            .ok_or(E2eeError::NoKey)?;
        open_with(cipher, &self.room_id, from, frame, header)
    }

    fn sign(&self, label: &[u8], mut body: Vec<u8>) -> Vec<u8> {
        let signature =
            self.signing
                .sign(&signed_bytes(label, &self.room_id, &self.user_id, &body));
        body.extend_from_slice(&signature.to_bytes());
        body
    }

    fn verify(
        &self,
        key: &VerifyingKey,
        label: &[u8],
        from: &str,
        data: &[u8],
    ) -> Result<(), E2eeError> {
        let (body, signature) = data.split_at(data.len() - SIGNATURE);
        let signature = Signature::from_bytes(signature.try_into().expect("64 bytes"));
        key.verify(&signed_bytes(label, &self.room_id, from, body), &signature)
            .map_err(|_| E2eeError::Forged)
    }

    /// The key wrapping `from`'s sender keys for `to`: both ends derive it from their agreement.
    fn wrap_cipher(&self, peer: &Peer, from: &str, to: &str) -> Aes256Gcm {
        let shared = self.agreement.diffie_hellman(&peer.agreement);
        let hkdf = Hkdf::<Sha256>::new(Some(self.room_id.as_bytes()), shared.as_bytes());
        let mut info = b"aethex voice wrap\0".to_vec();
        info.extend_from_slice(from.as_bytes());
        info.push(0);
        info.extend_from_slice(to.as_bytes());
        let mut key = [0u8; 32];
        hkdf.expand(&info, &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        Aes256Gcm::new(&key.into())
    }
}

#[derive(Clone, Copy)]
struct FrameHeader {
    epoch: u32,
    seq: u32,
}

fn frame_header(frame: &[u8]) -> Result<FrameHeader, E2eeError> {
    if frame.len() < FRAME_HEADER + 16 || frame[0] != FRAME_VERSION {
        return Err(E2eeError::Malformed);
    }
    Ok(FrameHeader {
        epoch: u32::from_be_bytes(frame[1..5].try_into().expect("4 bytes")),
        seq: u32::from_be_bytes(frame[5..9].try_into().expect("4 bytes")),
    })
}

fn open_with(
    cipher: &Aes256Gcm,
    room_id: &str,
    from: &str,
    frame: &[u8],
    header: FrameHeader,
) -> Result<(u32, Vec<u8>), E2eeError> {
    let nonce = frame_nonce(nonce_prefix(from), header.epoch, header.seq);
    let aad = frame_aad(room_id, from, &frame[..FRAME_HEADER]);
    let packet = cipher
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: &frame[FRAME_HEADER..],
                aad: &aad,
            },
        )
        .map_err(|_| E2eeError::Forged)?;
    Ok((header.seq, packet))
}

/// Decrypts a frame with a raw 32-byte sender key: what anyone holding the key (and only them)
/// can do. For tests and tools that check what a captured frame reveals.
pub fn open_with_key(
    key: &[u8; 32],
    room_id: &str,
    from: &str,
    frame: &[u8],
) -> Result<(u32, Vec<u8>), E2eeError> {
    let header = frame_header(frame)?;
    open_with(&Aes256Gcm::new(key.into()), room_id, from, frame, header)
}

/// The sequence number and epoch a frame's header shows in clear (the server sees them too).
pub fn frame_position(frame: &[u8]) -> Option<(u32, u32)> {
    frame_header(frame).ok().map(|h| (h.epoch, h.seq))
}

fn signed_bytes(label: &[u8], room_id: &str, user_id: &str, body: &[u8]) -> Vec<u8> {
    let mut out = b"aethex voice ".to_vec();
    out.extend_from_slice(label);
    out.push(0);
    out.extend_from_slice(room_id.as_bytes());
    out.push(0);
    out.extend_from_slice(user_id.as_bytes());
    out.push(0);
    out.extend_from_slice(body);
    out
}

fn frame_nonce(prefix: [u8; 4], epoch: u32, seq: u32) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&prefix);
    nonce[4..8].copy_from_slice(&epoch.to_be_bytes());
    nonce[8..].copy_from_slice(&seq.to_be_bytes());
    nonce
}

fn frame_aad(room_id: &str, from: &str, header: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(room_id.len() + from.len() + 2 + header.len());
    aad.extend_from_slice(room_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(from.as_bytes());
    aad.push(0);
    aad.extend_from_slice(header);
    aad
}

fn nonce_prefix(user_id: &str) -> [u8; 4] {
    let digest = Sha256::digest(user_id.as_bytes());
    [digest[0], digest[1], digest[2], digest[3]]
}

fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    key
}

fn fingerprint_of(key: &VerifyingKey) -> String {
    Sha256::digest(key.as_bytes())[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Delivers `message` from `from` to each session it targets; collects what they answer.
    fn deliver(
        from: &str,
        message: KeyMessage,
        sessions: &mut [&mut VoiceSession],
    ) -> Vec<(String, KeyMessage)> {
        let mut answers = Vec::new();
        for s in sessions.iter_mut() {
            let to_them = message
                .targets
                .as_ref()
                .is_none_or(|t| t.contains(&s.user_id));
            if s.user_id != from && to_them {
                let me = s.user_id.clone();
                for reply in s.receive(from, &message.data).unwrap() {
                    answers.push((me.clone(), reply));
                }
            }
        }
        answers
    }

    /// Delivers in order (as the relay does) until nobody has anything left to say.
    fn settle(queue: Vec<(String, KeyMessage)>, sessions: &mut [&mut VoiceSession]) {
        let mut queue: std::collections::VecDeque<_> = queue.into();
        while let Some((from, message)) = queue.pop_front() {
            queue.extend(deliver(&from, message, sessions));
        }
    }

    #[test]
    fn members_agree_and_a_leaver_is_rotated_out() {
        let mut a = VoiceSession::new("room", "a");
        let mut b = VoiceSession::new("room", "b");
        let mut c = VoiceSession::new("room", "c");
        let hellos = vec![
            ("a".to_owned(), a.hello()),
            ("b".to_owned(), b.hello()),
            ("c".to_owned(), c.hello()),
        ];
        settle(hellos, &mut [&mut a, &mut b, &mut c]);
        assert_eq!(a.secure_peers(), ["b", "c"]);
        assert_eq!(c.secure_peers(), ["a", "b"]);

        let frame = a.seal(b"opus packet");
        assert_eq!(b.open("a", &frame).unwrap(), (0, b"opus packet".to_vec()));
        assert_eq!(c.open("a", &frame).unwrap().1, b"opus packet");
        // Relabelled as another sender, or altered: refused.
        assert_eq!(b.open("c", &frame), Err(E2eeError::Forged));
        let mut altered = frame.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(b.open("a", &altered), Err(E2eeError::Forged));

        // C leaves: A and B rotate past C.
        let rotations: Vec<(String, KeyMessage)> = [
            ("a".to_owned(), a.peer_left("c").unwrap()),
            ("b".to_owned(), b.peer_left("c").unwrap()),
        ]
        .into();
        assert!(rotations
            .iter()
            .all(|(_, m)| m.targets.as_ref().unwrap().len() == 1));
        settle(rotations, &mut [&mut a, &mut b, &mut c]);
        let after = a.seal(b"after");
        assert_eq!(b.open("a", &after).unwrap().1, b"after");
        assert_eq!(c.open("a", &after), Err(E2eeError::NoKey));
    }

    #[test]
    fn key_messages_are_bound_to_their_sender() {
        let mut a = VoiceSession::new("room", "a");
        let mut b = VoiceSession::new("room", "b");
        // A hello relabelled by the relay as someone else's does not verify.
        assert_eq!(
            b.receive("mallory", &a.hello().data),
            Err(E2eeError::Forged)
        );
        // Nor does one from another room.
        let other_room = VoiceSession::new("other", "a");
        assert_eq!(
            b.receive("a", &other_room.hello().data),
            Err(E2eeError::Forged)
        );
        let replies = b.receive("a", &a.hello().data).unwrap();
        assert_eq!(replies.len(), 2, "a hello answer and b's sender key");
        for reply in replies {
            a.receive("b", &reply.data).unwrap();
        }
        assert_eq!(a.secure_peers(), ["b"]);
        assert_eq!(a.peer_fingerprint("b").unwrap(), b.fingerprint());
        assert_eq!(b.receive("a", &[9, 9]), Err(E2eeError::Malformed));
    }
}
