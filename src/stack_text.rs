//! [`StackText`]: text written into a buffer on the stack - header values,
//! the hot routes' JSON bodies - where a write past the buffer's room fails
//! (the caller leaves the value out or takes the slow path) instead of
//! allocating.

use std::fmt::{self, Write};

pub(crate) struct StackText<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> StackText<N> {
    pub(crate) fn new() -> Self {
        StackText {
            bytes: [0; N],
            len: 0,
        }
    }

    pub(crate) fn text(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Forgets what was written past `len` (a value that did not fit).
    pub(crate) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> fmt::Result {
        let end = self.len + b.len();
        if end > N {
            return Err(fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(b);
        self.len = end;
        Ok(())
    }

    /// A number in decimal, without `core::fmt`'s machinery (itoa).
    pub(crate) fn num(&mut self, n: u64) -> fmt::Result {
        self.write_str(itoa::Buffer::new().format(n))
    }

    /// `s` as a JSON string, quoted and escaped exactly as `serde_json`
    /// writes it: `"` and `\`, the short escapes of `\b \f \n \r \t`,
    /// other control characters as `\u00xx`; everything else as it is.
    pub(crate) fn json_str(&mut self, s: &str) -> fmt::Result {
        self.bytes(b"\"")?;
        let mut from = 0;
        for (i, &b) in s.as_bytes().iter().enumerate() {
            let short = match b {
                b'"' => b'"',
                b'\\' => b'\\',
                0x08 => b'b',
                0x0c => b'f',
                b'\n' => b'n',
                b'\r' => b'r',
                b'\t' => b't',
                0x00..=0x1f => b'u',
                _ => continue,
            };
            self.bytes(&s.as_bytes()[from..i])?;
            from = i + 1;
            if short == b'u' {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                self.bytes(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 0xf) as usize],
                ])?;
            } else {
                self.bytes(&[b'\\', short])?;
            }
        }
        self.bytes(&s.as_bytes()[from..])?;
        self.bytes(b"\"")
    }

    pub(crate) fn json_bool(&mut self, b: bool) -> fmt::Result {
        self.bytes(if b { b"true" } else { b"false" })
    }

    /// `Some(n)` as a number, `None` as `null` (serde_json's `Option<u64>`).
    pub(crate) fn json_opt_num(&mut self, n: Option<u64>) -> fmt::Result {
        match n {
            Some(n) => self.num(n),
            None => self.bytes(b"null"),
        }
    }
}

impl<const N: usize> Default for StackText<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Write for StackText<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes(s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut every_ascii: String = (0u8..=0x7f).map(char::from).collect();
        every_ascii.push_str("é ✓ 𝄞 \u{2028}");
        for s in [
            "",
            "plain",
            "quote\" back\\slash",
            "\u{0}\u{1f}\n\r\t\u{8}\u{c}",
            &every_ascii,
        ] {
            let mut w = StackText::<1024>::new();
            w.json_str(s).unwrap();
            assert_eq!(w.text(), serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn a_write_past_the_room_fails_and_keeps_what_fit() {
        let mut w = StackText::<8>::new();
        w.bytes(b"12345").unwrap();
        assert!(w.json_str("abcdef").is_err());
        w.truncate(5);
        assert_eq!(w.text(), b"12345");
        assert!(w.num(123).is_ok());
        assert!(w.num(1).is_err());
        assert_eq!(w.text(), b"12345123");
        let mut n = StackText::<16>::new();
        n.json_opt_num(None).unwrap();
        n.json_opt_num(Some(7)).unwrap();
        assert_eq!(n.text(), b"null7");
    }
}
