//! A text's tokens, estimated the same way wherever Tollgate needs it
//! before an answer says (a reservation, a stream that carries no usage,
//! the echo bot).

/// A deterministic token estimate: about one token per four bytes of each
/// word, and one per punctuation mark.
pub(crate) fn count_tokens(text: &str) -> u64 {
    text.split_whitespace()
        .map(|w| {
            let punct = w.chars().filter(|c| c.is_ascii_punctuation()).count() as u64;
            let letters = w.len() as u64 - punct;
            letters.div_ceil(4) + punct
        })
        .sum()
}
