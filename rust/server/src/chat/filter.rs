//! The profanity filter (crate `rustrict`): censored words become `*`, the rest of the body is
//! kept as written.

use rustrict::CensorStr;

/// `body` with profane words starred out, character count unchanged where possible.
///
/// rustrict strips accents while it scans; its output is used only to learn which characters to
/// star, so accented text that is not profane comes back untouched.
pub fn censor(body: &str) -> String {
    let censored = body.censor();
    if censored.chars().count() != body.chars().count() {
        // Normalization removed characters (stray combining marks): positions no longer line
        // up, so the censored text itself is the answer.
        return censored;
    }
    body.chars()
        .zip(censored.chars())
        .map(|(original, filtered)| if filtered == '*' { '*' } else { original })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::censor;

    #[test]
    fn profanity_is_starred_and_the_rest_kept() {
        let out = censor("well fuck that");
        assert_eq!(out.chars().count(), "well fuck that".chars().count());
        assert!(out.starts_with("well ") && out.ends_with(" that"), "{out}");
        assert!(out.contains('*'), "{out}");
        assert_eq!(censor("café au lait, déjà vu"), "café au lait, déjà vu");
        assert_eq!(censor("gg wp"), "gg wp");
    }
}
