//! Decoding a server-sent event stream (the WHATWG rules: `\n`, `\r\n` or `\r` line ends,
//! `field: value` lines, `data` lines joined by `\n`, a blank line dispatching the event,
//! `:` comments). Each byte is looked at once, so the work is linear in what the upstream
//! sends however it splits it, and one line or one event may not grow past a bound: an
//! upstream that sends an endless line gets a clear error instead of a quadratic re-scan.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, or `message` when none was sent.
    pub event: String,
    pub data: String,
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
    /// The line being received (its end not seen yet).
    line: Vec<u8>,
    /// The last byte was a `\r`: a `\n` right after it ends nothing more.
    after_cr: bool,
    event: String,
    data: String,
    has_data: bool,
    max: usize,
}

impl SseDecoder {
    /// `max`: the longest line, and the longest event data, accepted.
    pub fn new(max: usize) -> Self {
        Self {
            line: Vec::new(),
            after_cr: false,
            event: String::new(),
            data: String::new(),
            has_data: false,
            max,
        }
    }

    /// Takes the next bytes of the stream; complete events are pushed to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        while !chunk.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if chunk[0] == b'\n' {
                    chunk = &chunk[1..];
                    continue;
                }
            }
            let Some(end) = memchr::memchr2(b'\n', b'\r', chunk) else {
                self.grow_line(chunk)?;
                return Ok(());
            };
            self.grow_line(&chunk[..end])?;
            self.after_cr = chunk[end] == b'\r';
            chunk = &chunk[end + 1..];
            self.end_line(out)?;
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

    fn end_line(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.line.is_empty() {
            if self.has_data {
                out.push(SseEvent {
                    event: if self.event.is_empty() {
                        "message".to_owned()
                    } else {
                        std::mem::take(&mut self.event)
                    },
                    data: std::mem::take(&mut self.data),
                });
            }
            self.event.clear();
            self.has_data = false;
            return Ok(());
        }
        let line = std::str::from_utf8(&self.line).map_err(|_| SseError::Utf8)?;
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "" => {} // a comment (keep-alive)
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                if self.data.len() + value.len() > self.max {
                    return Err(SseError::TooLong(self.max));
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => {
                self.event.clear();
                self.event.push_str(value);
            }
            _ => {} // id, retry and unknown fields mean nothing to the gateway
        }
        self.line.clear();
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
            decoder.feed(chunk, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn events_survive_every_split_and_every_line_ending() {
        let input = "event: message_start\ndata: {\"a\":1}\n\n: keep-alive\r\n\r\ndata: x\r\ndata: y\r\n\r\nid: 7\rdata: héllo ✓\r\r";
        let expected = vec![
            SseEvent {
                event: "message_start".into(),
                data: "{\"a\":1}".into(),
            },
            SseEvent {
                event: "message".into(),
                data: "x\ny".into(),
            },
            SseEvent {
                event: "message".into(),
                data: "héllo ✓".into(),
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
            result = decoder.feed(&[b'a'; 64], &mut out);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(SseError::TooLong(1000)));
        // And an event made of many data lines is bounded too.
        let mut decoder = SseDecoder::new(1000);
        let many = "data: 0123456789\n".repeat(200);
        assert_eq!(
            decoder.feed(many.as_bytes(), &mut out),
            Err(SseError::TooLong(1000))
        );
    }

    #[test]
    fn a_long_line_in_small_chunks_is_kept_once() {
        // 8 MiB without a line end in 1 KiB chunks (a re-scan would read ~32 GiB).
        let mut decoder = SseDecoder::new(16 << 20);
        let mut out = Vec::new();
        let chunk = [b'x'; 1024];
        for _ in 0..8192 {
            decoder.feed(&chunk, &mut out).unwrap();
        }
        assert!(out.is_empty());
        assert_eq!(decoder.line.len(), 8 << 20);
    }
}
