//! Decoding a server-sent event stream (the WHATWG rules: `\n`, `\r\n` or `\r` line ends,
//! `field: value` lines, `data` lines joined by `\n`, a blank line dispatching the event,
//! `:` comments). Each byte is looked at once, so the work is linear in what the upstream
//! sends however it splits it, and one line or one event may not grow past a bound: an
//! upstream that sends an endless line gets a clear error instead of a quadratic re-scan.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, or `message` when none was sent (then not allocated: OpenAI-style
    /// streams name no event).
    pub event: Cow<'static, str>,
    /// The `data` lines joined by `\n`, as bytes: an event whose one data line arrived whole
    /// in one chunk shares that chunk's memory (no copy). Not checked as UTF-8 here: a
    /// translator that reads the data checks them, one that passes them on does not need to.
    pub data: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event-stream line or event is longer than {0} bytes")]
    TooLong(usize),
    #[error("the event stream is not valid UTF-8")]
    Utf8,
}

#[derive(Debug)]
pub struct SseDecoder {
    /// The line being received across chunks (its end not seen yet).
    line: BytesMut,
    /// The last byte was a `\r`: a `\n` right after it ends nothing more.
    after_cr: bool,
    event: String,
    /// The first data line of the event (a slice of its chunk where it came whole).
    data: Option<Bytes>,
    /// Further data lines, joined (only events with several data lines copy).
    joined: BytesMut,
    max: usize,
}

impl SseDecoder {
    /// `max`: the longest line, and the longest event data, accepted.
    pub fn new(max: usize) -> Self {
        Self {
            line: BytesMut::new(),
            after_cr: false,
            event: String::new(),
            data: None,
            joined: BytesMut::new(),
            max,
        }
    }

    /// Takes the next bytes of the stream; complete events are pushed to `out`.
    pub fn feed(&mut self, chunk: &Bytes, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let mut pos = 0;
        while pos < chunk.len() {
            if self.after_cr {
                self.after_cr = false;
                if chunk[pos] == b'\n' {
                    pos += 1;
                    continue;
                }
            }
            let rest = &chunk[pos..];
            let Some(end) = memchr::memchr2(b'\n', b'\r', rest) else {
                self.grow_line(rest)?;
                return Ok(());
            };
            // A line that came whole is a slice of the chunk; one that spans chunks is
            // put together in `line`.
            let line = if self.line.is_empty() {
                if end > self.max {
                    return Err(SseError::TooLong(self.max));
                }
                chunk.slice(pos..pos + end)
            } else {
                self.grow_line(&rest[..end])?;
                // Copied out, so `line` keeps its allocation for the next one.
                let whole = Bytes::copy_from_slice(&self.line);
                self.line.clear();
                whole
            };
            self.after_cr = rest[end] == b'\r';
            pos += end + 1;
            self.end_line(line, out)?;
        }
        Ok(())
    }

    fn grow_line(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + bytes.len() > self.max {
            return Err(SseError::TooLong(self.max));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn end_line(&mut self, line: Bytes, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            if let Some(first) = self.data.take() {
                let data = if self.joined.is_empty() {
                    first
                } else {
                    self.joined.split().freeze()
                };
                out.push(SseEvent {
                    event: if self.event.is_empty() {
                        Cow::Borrowed("message")
                    } else {
                        Cow::Owned(std::mem::take(&mut self.event))
                    },
                    data,
                });
            }
            self.event.clear();
            return Ok(());
        }
        // Only the field name (and an `event:` value) is read here; data stays bytes.
        let (field, value_at) = match memchr::memchr(b':', &line) {
            Some(colon) => {
                let after = colon + 1;
                let skip_space = usize::from(line.get(after) == Some(&b' '));
                (&line[..colon], after + skip_space)
            }
            None => (&line[..], line.len()),
        };
        match field {
            b"" => {} // a comment (keep-alive)
            b"data" => {
                let value = line.slice(value_at..);
                match &self.data {
                    None => self.data = Some(value),
                    Some(first) => {
                        if self.joined.is_empty() {
                            self.joined.extend_from_slice(first);
                        }
                        if self.joined.len() + 1 + value.len() > self.max {
                            return Err(SseError::TooLong(self.max));
                        }
                        self.joined.extend_from_slice(b"\n");
                        self.joined.extend_from_slice(&value);
                    }
                }
            }
            b"event" => {
                let name = std::str::from_utf8(&line[value_at..]).map_err(|_| SseError::Utf8)?;
                self.event.clear();
                self.event.push_str(name);
            }
            _ => {} // id, retry and unknown fields mean nothing to the gateway
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(input: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::new(1 << 20);
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            decoder
                .feed(&Bytes::copy_from_slice(chunk), &mut out)
                .unwrap();
        }
        out
    }

    #[test]
    fn events_survive_every_split_and_every_line_ending() {
        let input = "event: message_start\ndata: {\"a\":1}\n\n: keep-alive\r\n\r\ndata: x\r\ndata: y\r\n\r\nid: 7\rdata: héllo ✓\r\r";
        let expected = vec![
            SseEvent {
                event: "message_start".into(),
                data: Bytes::from_static(b"{\"a\":1}"),
            },
            SseEvent {
                event: "message".into(),
                data: Bytes::from_static(b"x\ny"),
            },
            SseEvent {
                event: "message".into(),
                data: Bytes::from("héllo ✓"),
            },
        ];
        for piece in 1..input.len() {
            assert_eq!(
                decode_in_pieces(input.as_bytes(), piece),
                expected,
                "piece {piece}"
            );
        }
    }

    #[test]
    fn an_endless_line_is_refused_at_the_bound() {
        let mut decoder = SseDecoder::new(1000);
        let mut out = Vec::new();
        let mut result = Ok(());
        for _ in 0..100 {
            result = decoder.feed(&Bytes::from_static(&[b'a'; 64]), &mut out);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(SseError::TooLong(1000)));
        // And an event made of many data lines is bounded too.
        let mut decoder = SseDecoder::new(1000);
        let many = "data: 0123456789\n".repeat(200);
        assert_eq!(
            decoder.feed(&Bytes::from(many), &mut out),
            Err(SseError::TooLong(1000))
        );
    }

    #[test]
    fn a_long_line_in_small_chunks_is_kept_once() {
        // 8 MiB without a line end in 1 KiB chunks (a re-scan would read ~32 GiB).
        let mut decoder = SseDecoder::new(16 << 20);
        let mut out = Vec::new();
        let chunk = Bytes::from_static(&[b'x'; 1024]);
        for _ in 0..8192 {
            decoder.feed(&chunk, &mut out).unwrap();
        }
        assert!(out.is_empty());
        assert_eq!(decoder.line.len(), 8 << 20);
    }
}
