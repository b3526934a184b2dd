//! Opus as voice uses it: 48 kHz mono, 20 ms frames, in-band FEC on.

use opus::{Application, Bitrate, Channels, Decoder, Encoder};

use crate::SdkError;

pub const SAMPLE_RATE: u32 = 48_000;
/// Samples in one 20 ms frame at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;
/// Largest Opus packet we produce (libopus's recommended buffer for one frame).
const MAX_PACKET: usize = 1275;
/// Default encoder bitrate: clear speech with room for the FEC copy.
pub const DEFAULT_BITRATE: u32 = 32_000;
/// Loss the encoder plans its FEC for: Opus only adds the redundant copy when told to expect
/// loss, and 10% is what the receive side is built (and tested) to conceal.
const EXPECTED_LOSS_PERCENT: i32 = 10;

/// Smallest and largest bitrate accepted (Opus's own range for mono speech).
pub const BITRATE_RANGE: std::ops::RangeInclusive<u32> = 6_000..=128_000;

pub struct VoiceEncoder {
    inner: Encoder,
    packet: Vec<u8>,
}

impl VoiceEncoder {
    pub fn new(bitrate: u32) -> Result<Self, SdkError> {
        let mut inner =
            Encoder::new(SAMPLE_RATE, Channels::Mono, Application::Voip).map_err(opus_error)?;
        inner.set_inband_fec(true).map_err(opus_error)?;
        inner
            .set_packet_loss_perc(EXPECTED_LOSS_PERCENT)
            .map_err(opus_error)?;
        let mut encoder = Self {
            inner,
            packet: vec![0; MAX_PACKET],
        };
        encoder.set_bitrate(bitrate)?;
        Ok(encoder)
    }

    pub fn set_bitrate(&mut self, bitrate: u32) -> Result<(), SdkError> {
        if !BITRATE_RANGE.contains(&bitrate) {
            return Err(super::super::invalid(format!(
                "voice bitrate must be between {} and {} bits/s",
                BITRATE_RANGE.start(),
                BITRATE_RANGE.end()
            )));
        }
        self.inner
            .set_bitrate(Bitrate::Bits(bitrate as i32))
            .map_err(opus_error)
    }

    /// One packet for exactly one 20 ms frame of samples in -1.0..=1.0.
    pub fn encode(&mut self, frame: &[f32]) -> Result<Vec<u8>, SdkError> {
        debug_assert_eq!(frame.len(), FRAME_SAMPLES);
        let len = self
            .inner
            .encode_float(frame, &mut self.packet)
            .map_err(opus_error)?;
        Ok(self.packet[..len].to_vec())
    }
}

pub struct VoiceDecoder {
    inner: Decoder,
}

impl VoiceDecoder {
    pub fn new() -> Result<Self, SdkError> {
        Ok(Self {
            inner: Decoder::new(SAMPLE_RATE, Channels::Mono).map_err(opus_error)?,
        })
    }

    /// Decodes `packet` into one frame.
    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<f32>, SdkError> {
        self.run(packet, false)
    }

    /// The frame before `next_packet`, rebuilt from the FEC copy `next_packet` carries (Opus
    /// falls back to concealment when it carries none).
    pub fn recover(&mut self, next_packet: &[u8]) -> Result<Vec<f32>, SdkError> {
        self.run(next_packet, true)
    }

    /// A frame of packet-loss concealment: Opus extrapolates from what it decoded last.
    pub fn conceal(&mut self) -> Result<Vec<f32>, SdkError> {
        self.run(&[], false)
    }

    fn run(&mut self, packet: &[u8], fec: bool) -> Result<Vec<f32>, SdkError> {
        let mut out = vec![0.0; FRAME_SAMPLES];
        let n = self
            .inner
            .decode_float(packet, &mut out, fec)
            .map_err(opus_error)?;
        out.truncate(n);
        out.resize(FRAME_SAMPLES, 0.0);
        Ok(out)
    }
}

/// Brings a microphone's rate (Godot's mix rate, often 44.1 kHz) to the 48 kHz voice runs at,
/// by linear interpolation: no lookahead, so no added delay, and nothing audible lost for speech
/// that Opus band-limits anyway.
pub struct Resampler {
    /// Input samples per output sample.
    step: f64,
    /// The next output's position in the coming input (-1.0 is the previous call's last sample).
    pos: f64,
    last: f32,
}

impl Resampler {
    pub fn new(from_rate: u32) -> Self {
        Self {
            step: f64::from(from_rate.max(1)) / f64::from(SAMPLE_RATE),
            pos: 0.0,
            last: 0.0,
        }
    }

    /// Appends the 48 kHz samples `input` makes to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        let Some(&newest) = input.last() else {
            return;
        };
        let at = |i: isize| if i < 0 { self.last } else { input[i as usize] };
        let end = (input.len() - 1) as f64;
        while self.pos < end {
            let floor = self.pos.floor();
            let frac = (self.pos - floor) as f32;
            let i = floor as isize;
            out.push(at(i) + (at(i + 1) - at(i)) * frac);
            self.pos += self.step;
        }
        self.pos -= input.len() as f64;
        self.last = newest;
    }
}

fn opus_error(e: opus::Error) -> SdkError {
    SdkError::new(aethex_protocol::ErrorCode::Internal, format!("opus: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampling_keeps_the_waveform_across_calls() {
        let sine = |rate: f64, n: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (2.0 * std::f64::consts::PI * 440.0 * i as f64 / rate).sin() as f32)
                .collect()
        };
        let input = sine(44_100.0, 44_100);
        let mut resampler = Resampler::new(44_100);
        let mut out = Vec::new();
        // Uneven chunks, as a capture buffer hands them over.
        for chunk in input.chunks(1234) {
            resampler.process(chunk, &mut out);
        }
        assert!((47_995..=48_000).contains(&out.len()), "{}", out.len());
        let expected = sine(48_000.0, out.len());
        let worst = out
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 0.01, "off by {worst}");
        let mut same = Resampler::new(48_000);
        let mut copy = Vec::new();
        same.process(&[0.1, 0.2, 0.3], &mut copy);
        same.process(&[0.4], &mut copy);
        assert_eq!(copy, [0.1, 0.2, 0.3]);
    }
}
