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
    solve_while(challenge, difficulty, || true)
        .expect("a nonce below 2^64 meets any difficulty up to 64 bits in practice")
}

/// [`solve`] that asks `keep_going` every few thousand hashes and gives up (`None`) once it says
/// no: a client shutting down must not leave a thread hashing for seconds (a thread alive when
/// Godot unloads the library crashes the game's exit).
pub fn solve_while(
    challenge: &str,
    difficulty: u32,
    keep_going: impl Fn() -> bool,
) -> Option<String> {
    const CHECK_EVERY: u64 = 4096;
    (0u64..)
        .take_while(|n| n % CHECK_EVERY != 0 || keep_going())
        .map(|n| n.to_string())
        .find(|nonce| leading_zero_bits(challenge, nonce) >= difficulty)
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

    #[test]
    fn solving_stops_when_told_to() {
        let asked = std::cell::Cell::new(0);
        // 60 bits is out of reach: only `keep_going` can end the search.
        let found = solve_while("challenge", 60, || {
            asked.set(asked.get() + 1);
            asked.get() < 3
        });
        assert_eq!(found, None);
        assert_eq!(asked.get(), 3);
    }
}
