//! One remote speaker's jitter buffer: holds encrypted-then-opened Opus packets by sequence
//! number and plays them out one 20 ms frame per pull, covering a missing packet with the FEC
//! copy in the packet after it, or with Opus concealment when that is missing too.

use std::collections::BTreeMap;

use super::codec::VoiceDecoder;
use crate::SdkError;

/// Frames buffered before a talkspurt starts playing: absorbs 40 ms of network jitter.
pub const DEFAULT_TARGET_DEPTH: usize = 2;
/// More buffered than the target depth plus this (a burst after a stall) and the oldest are
/// skipped, so latency does not build up.
const MAX_EXTRA_DEPTH: usize = 10;
/// Consecutive frames missing with nothing buffered after which the speaker has stopped: the
/// buffer goes idle and refills before playing again.
const IDLE_AFTER_MISSES: u32 = 5;

/// How the frames played so far were made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlayoutStats {
    pub decoded: u64,
    /// Rebuilt from the next packet's FEC copy.
    pub recovered: u64,
    /// Extrapolated by Opus packet-loss concealment.
    pub concealed: u64,
    /// Arrived after their turn (or twice) and dropped.
    pub late: u64,
}

pub struct JitterBuffer {
    packets: BTreeMap<u32, Vec<u8>>,
    /// The sequence number to play next; `None` while idle (filling).
    next: Option<u32>,
    target_depth: usize,
    misses: u32,
    decoder: VoiceDecoder,
    stats: PlayoutStats,
}

impl JitterBuffer {
    pub fn new(target_depth: usize) -> Result<Self, SdkError> {
        Ok(Self {
            packets: BTreeMap::new(),
            next: None,
            target_depth: target_depth.max(1),
            misses: 0,
            decoder: VoiceDecoder::new()?,
            stats: PlayoutStats::default(),
        })
    }

    pub fn stats(&self) -> PlayoutStats {
        self.stats
    }

    /// Whether a talkspurt is playing.
    pub fn playing(&self) -> bool {
        self.next.is_some()
    }

    pub fn push(&mut self, seq: u32, packet: Vec<u8>) {
        if self.next.is_some_and(|next| seq < next) || self.packets.contains_key(&seq) {
            self.stats.late += 1;
            return;
        }
        self.packets.insert(seq, packet);
        while self.packets.len() > self.target_depth + MAX_EXTRA_DEPTH {
            self.packets.pop_first();
            if let (Some(next), Some((&first, _))) = (self.next, self.packets.first_key_value()) {
                self.next = Some(next.max(first));
            }
        }
    }

    /// The next 20 ms frame, or `None` while idle (nothing to play yet, or the speaker stopped).
    pub fn pull(&mut self) -> Result<Option<Vec<f32>>, SdkError> {
        let next = match self.next {
            Some(next) => next,
            None if self.packets.len() >= self.target_depth => {
                *self.packets.keys().next().expect("not empty")
            }
            None => return Ok(None),
        };
        let frame = if let Some(packet) = self.packets.remove(&next) {
            self.misses = 0;
            self.stats.decoded += 1;
            self.decoder.decode(&packet)?
        } else if self.packets.is_empty() && self.misses + 1 >= IDLE_AFTER_MISSES {
            // The speaker stopped: go idle rather than conceal a silence forever.
            self.next = None;
            self.misses = 0;
            return Ok(None);
        } else {
            self.misses += 1;
            match self.packets.get(&next.wrapping_add(1)) {
                Some(following) => {
                    self.stats.recovered += 1;
                    self.decoder.recover(following)?
                }
                None => {
                    self.stats.concealed += 1;
                    self.decoder.conceal()?
                }
            }
        };
        self.next = Some(next.wrapping_add(1));
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::{VoiceEncoder, FRAME_SAMPLES};
    use super::*;

    fn tone_packets(n: usize) -> Vec<Vec<u8>> {
        let mut encoder = VoiceEncoder::new(32_000).unwrap();
        (0..n)
            .map(|i| {
                let frame: Vec<f32> = (0..FRAME_SAMPLES)
                    .map(|s| {
                        let t = (i * FRAME_SAMPLES + s) as f32 / 48_000.0;
                        0.5 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()
                    })
                    .collect();
                encoder.encode(&frame).unwrap()
            })
            .collect()
    }

    #[test]
    fn plays_in_order_recovers_a_gap_and_goes_idle_after_the_talkspurt() {
        let packets = tone_packets(20);
        let mut buffer = JitterBuffer::new(2).unwrap();
        assert!(buffer.pull().unwrap().is_none(), "idle until filled");
        // Out of order, with packet 5 lost and 3 arriving twice.
        for seq in [1u32, 0, 2, 3, 3, 4, 6, 7, 8, 9] {
            buffer.push(seq, packets[seq as usize].clone());
        }
        let mut played = 0;
        while let Some(frame) = buffer.pull().unwrap() {
            assert_eq!(frame.len(), FRAME_SAMPLES);
            played += 1;
        }
        assert_eq!(played, 10 + IDLE_AFTER_MISSES as usize - 1);
        let stats = buffer.stats();
        assert_eq!((stats.decoded, stats.recovered, stats.late), (9, 1, 1));
        assert!(!buffer.playing());
        // A packet older than what played is dropped.
        buffer.push(2, packets[2].clone());
        assert_eq!(
            buffer.stats().late,
            1,
            "idle: a new talkspurt may start anywhere"
        );
    }
}
