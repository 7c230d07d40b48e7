//! The usage chunk a client did not ask for, kept from it.
//!
//! The gateway asks a streaming chat-completions call for its usage
//! (`stream_options.include_usage`) when the client did not, so that the
//! tokens are counted. The upstream then sends one more event, with
//! `"choices": []` and the `usage`, which a client that never asked for
//! it does not expect: the most common streaming loop, `chunk.choices[0]`,
//! fails on it. [`UnaskedUsage`] passes the stream on event by event and
//! leaves that one out (after the usage scan has read it).

/// Passes an event stream through, without the usage-only events.
#[derive(Default)]
pub(super) struct UnaskedUsage {
    /// The event being read, up to its blank line.
    event: Vec<u8>,
    /// Bytes of the current line so far (to spot the blank one).
    line_len: usize,
}

/// The longest event held back; a longer one passes as it comes.
const MAX_EVENT: usize = 1 << 20;

impl UnaskedUsage {
    /// The bytes of `chunk` to forward: every event it completes, except a
    /// usage-only one. An incomplete event waits for the next chunk.
    pub(super) fn pass(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len());
        for &b in chunk {
            self.event.push(b);
            if b == b'\n' {
                // A blank line ("\n" or "\r\n") ends the event.
                let blank = self.line_len == 0 || (self.line_len == 1 && self.ends_with_cr());
                self.line_len = 0;
                if blank {
                    self.complete(&mut out);
                }
            } else {
                self.line_len += 1;
            }
        }
        if self.event.len() > MAX_EVENT {
            out.append(&mut self.event);
        }
        out
    }

    /// What is left at the stream's end (an event without its blank line).
    pub(super) fn rest(&mut self) -> Vec<u8> {
        self.line_len = 0;
        let mut out = Vec::new();
        if !self.event.is_empty() && !usage_only(&self.event) {
            out.append(&mut self.event);
        }
        self.event.clear();
        out
    }

    fn ends_with_cr(&self) -> bool {
        self.event.len() >= 2 && self.event[self.event.len() - 2] == b'\r'
    }

    fn complete(&mut self, out: &mut Vec<u8>) {
        if !usage_only(&self.event) {
            out.extend_from_slice(&self.event);
        }
        self.event.clear();
    }
}

/// An event whose data is a chat-completions chunk with no choices and a
/// usage: the one the gateway asked for.
fn usage_only(event: &[u8]) -> bool {
    let mut data = Vec::new();
    for line in event.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(d) = line.strip_prefix(b"data:") {
            if !data.is_empty() {
                data.push(b'\n');
            }
            data.extend_from_slice(d.strip_prefix(b" ").unwrap_or(d));
        }
    }
    let Ok(serde_json::Value::Object(v)) = serde_json::from_slice(&data) else {
        return false;
    };
    v.get("choices")
        .and_then(serde_json::Value::as_array)
        .is_some_and(Vec::is_empty)
        && v.get("usage").is_some_and(serde_json::Value::is_object)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n\
                          data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n\
                          data: [DONE]\n\n";

    fn through(stream: &str, piece: usize) -> String {
        let mut f = UnaskedUsage::default();
        let mut out = Vec::new();
        for chunk in stream.as_bytes().chunks(piece) {
            out.extend(f.pass(chunk));
        }
        out.extend(f.rest());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_usage_only_event_is_left_out_however_the_stream_is_cut() {
        let want = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n";
        for piece in [1, 2, 7, 64, 4096] {
            assert_eq!(through(STREAM, piece), want, "pieces of {piece}");
            let crlf = STREAM.replace('\n', "\r\n");
            assert_eq!(through(&crlf, piece), want.replace('\n', "\r\n"));
        }
    }

    #[test]
    fn everything_else_passes_unchanged() {
        for stream in [
            // Usage beside choices (another API's shape), comments, a last
            // event without its blank line, non-JSON data.
            "data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":1}}\n\n: ping\n\ndata: x\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":4}}\n\n",
            "data: {\"choices\":[]}\n\ndata: [DONE]",
        ] {
            for piece in [1, 3, 4096] {
                assert_eq!(through(stream, piece), stream);
            }
        }
        // A usage-only event cut off at the end is left out too.
        assert_eq!(
            through("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3}}", 5),
            ""
        );
    }
}
