//! The proof-of-work captcha's rule, shared by the server that checks solutions and the SDK that
//! finds them, so both count the work the same way.

use sha2::{Digest, Sha256};

/// Leading zero bits of SHA-256(challenge || nonce). A solution is accepted when they reach the
/// challenge's difficulty.
pub fn leading_zero_bits(challenge: &str, nonce: &str) -> u32 {
    let digest = Sha256::new()
        .chain_update(challenge.as_bytes())
        .chain_update(nonce.as_bytes())
        .finalize();
    let mut zeros = 0;
    for byte in digest {
        zeros += byte.leading_zeros();
        if byte != 0 {
            break;
        }
    }
    zeros
}

/// The first decimal nonce whose work reaches `difficulty`: about 2^difficulty hashes. CPU-bound,
/// so callers on an async runtime run it on a blocking thread.
pub fn solve(challenge: &str, difficulty: u32) -> String {
    (0u64..)
        .map(|n| n.to_string())
        .find(|nonce| leading_zero_bits(challenge, nonce) >= difficulty)
        .expect("a nonce below 2^64 meets any difficulty up to 64 bits in practice")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_solution_meets_its_difficulty_and_counts_whole_zero_bytes() {
        let nonce = solve("challenge", 12);
        assert!(leading_zero_bits("challenge", &nonce) >= 12);
        // SHA-256("abc") starts with 0xba: no leading zero bit.
        assert_eq!(leading_zero_bits("ab", "c"), 0);
    }
}
