//! Server-Sent Events: an incremental decoder for upstream streams and the framing we write.
//!
//! The decoder is fed network chunks of any size and split anywhere (inside a line, inside a
//! multi-byte UTF-8 character, between `\r` and `\n`) and yields complete events as soon as
//! their terminating blank line arrives. It buffers at most one event, and refuses events
//! larger than its limit, so a hostile or broken upstream cannot make it grow without bound.

use bytes::{Buf, Bytes, BytesMut};

/// One decoded event. `data` is the event's data lines joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: Option<String>,
    pub data: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an upstream event exceeded {limit} bytes")]
    EventTooLarge { limit: usize },
}

/// Incremental SSE decoder (WHATWG "event stream interpretation", minus `id`/`retry`, which
/// no LLM provider relies on).
#[derive(Debug)]
pub struct SseDecoder {
    buf: BytesMut,
    /// Bytes of `buf` already scanned for a line end, so a long line is not rescanned.
    scanned: usize,
    event: Option<String>,
    data: BytesMut,
    has_data: bool,
    /// A `\r` ended the previous chunk: a `\n` at the start of the next one belongs to it.
    pending_cr: bool,
    limit: usize,
}

impl SseDecoder {
    pub fn new(limit: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            scanned: 0,
            event: None,
            data: BytesMut::new(),
            has_data: false,
            pending_cr: false,
            limit,
        }
    }

    /// Feeds one chunk; complete events are appended to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let mut chunk = chunk;
        if self.pending_cr {
            self.pending_cr = false;
            if chunk.first() == Some(&b'\n') {
                chunk = &chunk[1..];
            }
        }
        self.buf.extend_from_slice(chunk);
        loop {
            let Some(rel) = self.buf[self.scanned..]
                .iter()
                .position(|b| *b == b'\n' || *b == b'\r')
            else {
                self.scanned = self.buf.len();
                if self.buffered() > self.limit {
                    return Err(self.overflow());
                }
                return Ok(());
            };
            let end = self.scanned + rel;
            let terminator = self.buf[end];
            let line = self.buf.split_to(end).freeze();
            self.buf.advance(1);
            self.scanned = 0;
            if terminator == b'\r' {
                match self.buf.first() {
                    Some(b'\n') => self.buf.advance(1),
                    None => self.pending_cr = true,
                    Some(_) => {}
                }
            }
            self.line(line, out)?;
        }
    }

    /// Signals end of input: an event not yet terminated by a blank line is dispatched, as
    /// servers that close right after their last `data:` line expect.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if !self.buf.is_empty() {
            let line = self.buf.split().freeze();
            self.line(line, out)?;
        }
        self.dispatch(out);
        Ok(())
    }

    /// Bytes held between calls: never more than the limit after [`Self::feed`] returns.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.data.len() + self.event.as_ref().map_or(0, String::len)
    }

    fn overflow(&mut self) -> SseError {
        self.buf.clear();
        self.data.clear();
        self.event = None;
        self.has_data = false;
        self.scanned = 0;
        self.pending_cr = false;
        SseError::EventTooLarge { limit: self.limit }
    }

    fn line(&mut self, line: Bytes, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(()); // comment / keep-alive
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let v = if line.get(i + 1) == Some(&b' ') {
                    i + 2
                } else {
                    i + 1
                };
                (line.slice(..i), line.slice(v..))
            }
            None => (line.clone(), Bytes::new()),
        };
        match &field[..] {
            b"data" => {
                if self.has_data {
                    self.data.extend_from_slice(b"\n");
                }
                self.data.extend_from_slice(&value);
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(&value).into_owned()),
            _ => {} // id, retry, unknown fields: ignored per spec
        }
        if self.buffered() > self.limit {
            return Err(self.overflow());
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.has_data {
            out.push(SseEvent {
                event: self.event.take(),
                data: self.data.split().freeze(),
            });
        } else {
            self.event = None;
        }
        self.has_data = false;
    }
}

/// Appends `payload` as `data:` lines: one line, or one per line of a payload that has
/// newlines (an upstream may send multi-line data; each line must be its own field).
fn push_data(b: &mut BytesMut, payload: &[u8]) {
    for line in payload.split(|c| *c == b'\n') {
        b.extend_from_slice(b"data: ");
        b.extend_from_slice(line);
        b.extend_from_slice(b"\n");
    }
}

/// Frames one `data:` event.
pub fn data_frame(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 8);
    push_data(&mut b, payload);
    b.extend_from_slice(b"\n");
    b.freeze()
}

/// Frames a named event, for dialects that use `event:` lines (Anthropic, `/llm/stream`).
pub fn named_frame(event: &str, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + event.len() + 16);
    b.extend_from_slice(b"event: ");
    b.extend_from_slice(event.as_bytes());
    b.extend_from_slice(b"\n");
    push_data(&mut b, payload);
    b.extend_from_slice(b"\n");
    b.freeze()
}

pub const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], split_every: usize) -> Vec<SseEvent> {
        let mut d = SseDecoder::new(1 << 20);
        let mut out = Vec::new();
        for piece in input.chunks(split_every.max(1)) {
            d.feed(piece, &mut out).unwrap();
        }
        d.finish(&mut out).unwrap();
        out
    }

    const SAMPLE: &str = ": keep-alive\n\nevent: message_start\ndata: {\"a\":1}\n\ndata: line1\ndata: line2\n\nid: 7\nretry: 10\ndata: é漢字🙂\n\ndata: [DONE]\n\n";

    #[test]
    fn frames_round_trip_multi_line_data() {
        let mut d = SseDecoder::new(1 << 20);
        let mut out = Vec::new();
        d.feed(&named_frame("x", b"a\nb"), &mut out).unwrap();
        d.feed(&data_frame(b"{}"), &mut out).unwrap();
        assert_eq!(out[0].event.as_deref(), Some("x"));
        assert_eq!(&out[0].data[..], b"a\nb");
        assert_eq!(&data_frame(b"{}")[..], b"data: {}\n\n");
        assert_eq!(&out[1].data[..], b"{}");
    }

    #[test]
    fn every_split_gives_the_same_events() {
        let whole = decode_all(SAMPLE.as_bytes(), usize::MAX);
        assert_eq!(whole.len(), 4);
        assert_eq!(whole[0].event.as_deref(), Some("message_start"));
        assert_eq!(&whole[1].data[..], b"line1\nline2");
        assert_eq!(std::str::from_utf8(&whole[2].data).unwrap(), "é漢字🙂");
        assert_eq!(&whole[3].data[..], b"[DONE]");
        for n in 1..SAMPLE.len() {
            assert_eq!(decode_all(SAMPLE.as_bytes(), n), whole, "split every {n}");
        }
    }

    #[test]
    fn crlf_and_cr_line_endings() {
        let crlf = SAMPLE.replace('\n', "\r\n");
        let cr = SAMPLE.replace('\n', "\r");
        let whole = decode_all(SAMPLE.as_bytes(), usize::MAX);
        for n in 1..crlf.len() {
            assert_eq!(decode_all(crlf.as_bytes(), n), whole, "crlf split {n}");
        }
        for n in 1..cr.len() {
            assert_eq!(decode_all(cr.as_bytes(), n), whole, "cr split {n}");
        }
    }

    #[test]
    fn unterminated_last_event_is_dispatched_at_finish() {
        let out = decode_all(b"data: {\"x\":1}", 3);
        assert_eq!(out.len(), 1);
        assert_eq!(&out[0].data[..], b"{\"x\":1}");
    }

    #[test]
    fn oversized_event_is_refused_not_buffered() {
        let mut d = SseDecoder::new(64);
        let mut out = Vec::new();
        let big = vec![b'x'; 100];
        assert!(d.feed(b"data: ", &mut out).is_ok());
        assert_eq!(
            d.feed(&big, &mut out),
            Err(SseError::EventTooLarge { limit: 64 })
        );
        let mut d = SseDecoder::new(64);
        let mut many = Vec::new();
        for _ in 0..10 {
            many.extend_from_slice(b"data: 0123456789\n");
        }
        assert!(d.feed(&many, &mut out).is_err());
    }

    #[test]
    fn frames() {
        assert_eq!(&data_frame(b"{}")[..], b"data: {}\n\n");
        assert_eq!(
            &named_frame("ping", b"{}")[..],
            b"event: ping\ndata: {}\n\n"
        );
    }
}
