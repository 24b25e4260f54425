//! HTTP/1.1 on the wire to a plain-HTTP upstream: the request's head written out, the
//! response's head parsed (`httparse`), and its body framed (RFC 9112 §6.3: no body, a
//! `Content-Length`, `chunked`, or up to the close). Pure functions over buffers, so that
//! every split of the bytes can be tested; the connection's I/O is in [`super::http1_pool`].
//!
//! Why not hyper's client connection: it hands each body chunk from its dispatcher to the
//! body through a channel, and reads a chunk's size line a byte at a time (a call and a
//! buffer split per byte). A streamed answer is almost all small chunks, and that was ~35 %
//! of a forwarded stream's instructions. Here a chunk's data is cut from the read buffer
//! where it lies and handed over as it is.

use axum::http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};
use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};

/// The most bytes a response head may take (hyper's default is ~400 KB; an upstream's heads
/// are a few hundred bytes).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header fields in a response head (hyper's default).
const MAX_HEADERS: usize = 100;
/// The most bytes a chunk-size line (with extensions) or the trailer section may take.
const MAX_LINE_BYTES: usize = 16 * 1024;

/// What the upstream sent that is not HTTP/1.1 as it must be.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("response head: {0}")]
    Head(httparse::Error),
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("response head: {0}")]
    Invalid(&'static str),
    #[error("chunked body: {0}")]
    Chunked(&'static str),
    #[error("body ended before its end")]
    Incomplete,
}

/// The parts of a request's head: `headers` are sent but for those `overrides` has (a
/// request's own headers replace an upstream's defaults), `host` first.
pub struct RequestHead<'a> {
    pub method: &'a Method,
    /// Origin form: `/path?query`.
    pub target: &'a str,
    pub host: &'a HeaderValue,
    pub headers: &'a HeaderMap,
    pub overrides: &'a HeaderMap,
}

impl RequestHead<'_> {
    /// Writes the head: `method target HTTP/1.1`, the headers, and the body's
    /// `content-length` (any length, coding or host among the headers is left out: the body's
    /// own length is the truth). Header names and values cannot hold CR or LF (`http` refuses
    /// them), so nothing a header carries can end the head early. Written straight from the
    /// maps: merging them into one cost more than writing the head.
    pub fn write(&self, out: &mut Vec<u8>, body_len: usize) {
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        out.extend_from_slice(self.host.as_bytes());
        out.extend_from_slice(b"\r\n");
        let defaults = self
            .headers
            .iter()
            .filter(|(name, _)| self.overrides.is_empty() || !self.overrides.contains_key(*name));
        for (name, value) in defaults.chain(self.overrides) {
            if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == HOST {
                continue;
            }
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
    }
}

/// A response head, and how its body is framed.
#[derive(Debug)]
pub struct Head {
    pub response: Response<()>,
    pub framing: Framing,
    /// Whether the connection may carry another request once this body has been read.
    pub reusable: bool,
}

/// Parses the response head at the start of `buf`, taking its bytes out; `None` when the head
/// is not all there yet. Interim (1xx) responses before it are skipped.
pub fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, WireError> {
    loop {
        // Left uninitialised: zeroing room for every field cost more than parsing the head.
        let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut parsed, buf, &mut fields)
            .map_err(WireError::Head)?
        {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial if buf.len() > MAX_HEAD_BYTES => {
                return Err(WireError::HeadTooLarge);
            }
            httparse::Status::Partial => return Ok(None),
        };
        let code = parsed.code.ok_or(WireError::Invalid("no status"))?;
        let status =
            StatusCode::from_u16(code).map_err(|_| WireError::Invalid("status out of range"))?;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(WireError::Invalid("an upgrade that was not asked for"));
        }
        if status.is_informational() {
            buf.advance(len);
            continue;
        }
        let version = match parsed.version {
            Some(1) => Version::HTTP_11,
            _ => Version::HTTP_10,
        };
        let mut spans = field_spans(buf, parsed.headers);
        spans.retain(|&(start, end, ..)| is_read(&buf[start..end]));
        let head = buf.split_to(len).freeze();
        let headers = header_map(&head, &spans).map_err(WireError::Invalid)?;
        let framing = framing(status, method, &headers)?;
        // A length beside `chunked` may be an attempt to smuggle a response: that
        // connection is not used again.
        let smuggling =
            headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH);
        let reusable = version == Version::HTTP_11
            && framing != Framing::UntilClose
            && !has_token(&headers, &CONNECTION, "close")
            && !smuggling;
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        return Ok(Some(Head {
            response,
            framing,
            reusable,
        }));
    }
}

/// The fields of an upstream's answer that the gateway reads: how its body is framed, what
/// and how long it is, and when to try again. The others (date, server, an API's own rate
/// and timing fields: a dozen or more from some providers) are never looked at, and an entry
/// in the answer's header map for each (its name parsed and hashed, its value checked) was
/// most of the work of reading an answer's head. A field read from an upstream's answer must
/// be listed here.
const ANSWER_FIELDS_READ: [&[u8]; 5] = [
    b"content-type",
    b"content-length",
    b"transfer-encoding",
    b"connection",
    b"retry-after",
];

fn is_read(name: &[u8]) -> bool {
    ANSWER_FIELDS_READ
        .iter()
        .any(|field| field.len() == name.len() && field.eq_ignore_ascii_case(name))
}

/// Where a head's field lies in the buffer it was parsed from (name start and end, value start
/// and end), so that once the head's bytes are taken out of the buffer the values are cut
/// from them, not copied.
pub type FieldSpan = (usize, usize, usize, usize);

/// The spans of `fields`, parsed from `buf`.
pub fn field_spans(buf: &[u8], fields: &[httparse::Header<'_>]) -> Vec<FieldSpan> {
    let start = buf.as_ptr() as usize;
    fields
        .iter()
        .map(|field| {
            let name = field.name.as_ptr() as usize - start;
            let value = field.value.as_ptr() as usize - start;
            (
                name,
                name + field.name.len(),
                value,
                value + field.value.len(),
            )
        })
        .collect()
}

/// The header map of a head's fields, values shared with `head`'s bytes.
pub fn header_map(head: &Bytes, spans: &[FieldSpan]) -> Result<HeaderMap, &'static str> {
    let mut headers = HeaderMap::with_capacity(spans.len());
    for &(name_start, name_end, value_start, value_end) in spans {
        let name = HeaderName::from_bytes(&head[name_start..name_end])
            .map_err(|_| "invalid header name")?;
        let value = HeaderValue::from_maybe_shared(head.slice(value_start..value_end))
            .map_err(|_| "invalid header value")?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// How a response's body ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

fn framing(status: StatusCode, method: &Method, headers: &HeaderMap) -> Result<Framing, WireError> {
    if method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(Framing::Length(0));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        // Only a final `chunked` marks the body's end; any other coding runs to the close.
        return Ok(if ends_chunked(headers) {
            Framing::Chunked
        } else {
            Framing::UntilClose
        });
    }
    let length = content_length(headers).map_err(WireError::Invalid)?;
    Ok(length.map_or(Framing::UntilClose, Framing::Length))
}

/// Whether the last transfer coding a head lists is `chunked` (RFC 9112 §6.3).
pub fn ends_chunked(headers: &HeaderMap) -> bool {
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter();
    // Nearly always one field that says just that.
    if let (Some(only), None) = (codings.next(), codings.next())
        && only.as_bytes().eq_ignore_ascii_case(b"chunked")
    {
        return true;
    }
    headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .rfind(|coding| !coding.is_empty())
        .is_some_and(|coding| coding.eq_ignore_ascii_case("chunked"))
}

/// A head's `Content-Length`, if it has one: repeated (or listed) lengths must all agree, and
/// each be digits only (no sign, no spaces inside).
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, &'static str> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            let n = (!part.is_empty() && part.len() <= 19 && part.iter().all(u8::is_ascii_digit))
                .then(|| part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
                .ok_or("invalid content-length")?;
            if length.is_some_and(|seen| seen != n) {
                return Err("content-length values differ");
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// Whether the `name` fields of a head list `token` (comma-separated, any case).
pub fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|part| part.trim().eq_ignore_ascii_case(token))
}

/// Where a body's reading stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Bytes of a `Content-Length` body still to come.
    Length(u64),
    /// At a chunk-size line.
    ChunkSize,
    /// Bytes of a chunk's data still to come.
    ChunkData(u64),
    /// At the CRLF after a chunk's data.
    ChunkEnd,
    /// After the last (zero) chunk: trailer fields up to an empty line (dropped: nothing
    /// upstream sends trailers for is forwarded).
    Trailers,
    UntilClose,
    Done,
}

/// What the buffer gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    Data(Bytes),
    /// More bytes are needed from the connection.
    NeedMore,
    /// The body has ended.
    End,
}

/// Cuts a body's data out of the read buffer as it arrives.
#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        Self { state }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Takes the next piece of data out of `buf` (as much of it as is there).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, WireError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Length(_) | State::ChunkData(_) | State::UntilClose if buf.is_empty() => {
                    return Ok(Decoded::NeedMore);
                }
                State::Length(left) => {
                    return Ok(self.take(buf, left, State::Length, State::Done));
                }
                State::UntilClose => return Ok(Decoded::Data(buf.split().freeze())),
                State::ChunkData(left) => {
                    return Ok(self.take(buf, left, State::ChunkData, State::ChunkEnd));
                }
                State::ChunkSize => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((len, size))) => {
                        buf.advance(len);
                        self.state = match size {
                            0 => State::Trailers,
                            size => State::ChunkData(size),
                        };
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_LINE_BYTES => {
                        return Err(WireError::Chunked("chunk-size line too long"));
                    }
                    Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                    Err(_) => return Err(WireError::Chunked("invalid chunk size")),
                },
                State::ChunkEnd => match buf.as_ref() {
                    [b'\r', b'\n', ..] => {
                        buf.advance(2);
                        self.state = State::ChunkSize;
                    }
                    [] | [b'\r'] => return Ok(Decoded::NeedMore),
                    _ => return Err(WireError::Chunked("no CRLF after a chunk's data")),
                },
                State::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        buf.advance(2);
                        self.state = State::Done;
                        continue;
                    }
                    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(buf, &mut fields) {
                        Ok(httparse::Status::Complete((len, _))) => {
                            buf.advance(len);
                            self.state = State::Done;
                        }
                        Ok(httparse::Status::Partial) if buf.len() > MAX_LINE_BYTES => {
                            return Err(WireError::Chunked("trailers too long"));
                        }
                        Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                        Err(_) => return Err(WireError::Chunked("invalid trailers")),
                    }
                }
            }
        }
    }

    /// Up to `left` bytes of a piece of data from the front of `buf`, without copying them;
    /// then the state is `more` of what is still to come, or `after` once it all came.
    fn take(
        &mut self,
        buf: &mut BytesMut,
        left: u64,
        more: fn(u64) -> State,
        after: State,
    ) -> Decoded {
        let n = usize::try_from(left).map_or(buf.len(), |left| left.min(buf.len()));
        let data = buf.split_to(n).freeze();
        let left = left - n as u64;
        self.state = if left == 0 { after } else { more(left) };
        Decoded::Data(data)
    }

    /// The connection has closed: the end of a body that runs to the close, else too early.
    pub fn at_eof(&mut self) -> Result<(), WireError> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(WireError::Incomplete),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_split(
        framing: Framing,
        wire: &[u8],
        step: usize,
    ) -> (Vec<u8>, Result<(), WireError>, BytesMut) {
        let mut decoder = BodyDecoder::new(framing);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf) {
                Ok(Decoded::Data(data)) => {
                    assert!(!data.is_empty());
                    body.extend_from_slice(&data);
                }
                Ok(Decoded::End) => return (body, Ok(()), buf),
                Ok(Decoded::NeedMore) if fed < wire.len() => {
                    let next = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..next]);
                    fed = next;
                }
                Ok(Decoded::NeedMore) => return (body, decoder.at_eof(), buf),
                Err(e) => return (body, Err(e), buf),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_at_every_split() {
        let wire = b"5\r\nhello\r\n1;ext=\"a b\"\r\n \r\nB\r\nworld, here\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for step in 1..=wire.len() {
            let (body, end, rest) = decode_split(Framing::Chunked, wire, step);
            assert_eq!(end, Ok(()), "step {step}");
            assert_eq!(body, b"hello world, here", "step {step}");
            // What follows the body (a pipelined answer, or garbage) is left in the buffer.
            assert!(b"NEXT".starts_with(&rest), "step {step}");
        }
    }

    #[test]
    fn length_and_close_delimited_bodies() {
        for step in 1..8 {
            let (body, end, rest) = decode_split(Framing::Length(5), b"hello!", step);
            assert_eq!((body.as_slice(), end), (&b"hello"[..], Ok(())));
            assert!(b"!".starts_with(&rest));
            let (body, end, _) = decode_split(Framing::UntilClose, b"to the end", step);
            assert_eq!((body.as_slice(), end), (&b"to the end"[..], Ok(())));
            let (_, end, _) = decode_split(Framing::Length(9), b"short", step);
            assert_eq!(end, Err(WireError::Incomplete));
            let (_, end, _) = decode_split(Framing::Chunked, b"5\r\nhello\r\n", step);
            assert_eq!(end, Err(WireError::Incomplete));
        }
    }

    #[test]
    fn broken_chunked_framing_is_refused() {
        for wire in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"fffffffffffffffffff\r\n",
        ] {
            let (_, end, _) = decode_split(Framing::Chunked, wire, 3);
            assert!(
                matches!(end, Err(WireError::Chunked(_))),
                "{wire:?}: {end:?}"
            );
        }
        let endless = [b"5;".as_slice(), &[b'x'; MAX_LINE_BYTES + 10]].concat();
        let (_, end, _) = decode_split(Framing::Chunked, &endless, 4096);
        assert_eq!(end, Err(WireError::Chunked("chunk-size line too long")));
    }

    fn parse(wire: &str) -> Result<Option<Head>, WireError> {
        parse_head(&mut BytesMut::from(wire), &Method::POST)
    }

    #[test]
    fn heads_give_status_headers_and_framing() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nDate: today\r\nRetry-After: 3\r\nretry-after: 4\r\nX-Ratelimit-Remaining: 9\r\n\r\n5\r\n",
        );
        let head = parse_head(&mut buf, &Method::POST).unwrap().unwrap();
        assert_eq!(head.response.status(), StatusCode::OK);
        // The fields the gateway reads, every one of them; no others.
        let headers = head.response.headers();
        assert_eq!(headers["content-type"], "text/event-stream");
        assert_eq!(headers.get_all("retry-after").iter().count(), 2);
        let names: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type", "transfer-encoding", "retry-after"]);
        assert_eq!(head.framing, Framing::Chunked);
        assert!(head.reusable);
        assert_eq!(&buf[..], b"5\r\n", "the body's bytes stay in the buffer");

        let framing_of = |wire: &str| parse(wire).map(|h| h.map(|h| (h.framing, h.reusable)));
        let ok = "HTTP/1.1 200 OK\r\n";
        assert_eq!(
            framing_of(&format!("{ok}content-length: 12\r\n\r\n")),
            Ok(Some((Framing::Length(12), true)))
        );
        assert_eq!(
            framing_of(&format!("{ok}content-length: 3, 3\r\n\r\n")),
            Ok(Some((Framing::Length(3), true)))
        );
        assert_eq!(
            framing_of(&format!("{ok}\r\n")),
            Ok(Some((Framing::UntilClose, false)))
        );
        assert_eq!(
            framing_of("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n"),
            Ok(Some((Framing::Length(0), true)))
        );
        assert_eq!(
            framing_of(&format!(
                "{ok}content-length: 2\r\nconnection: Close\r\n\r\n"
            )),
            Ok(Some((Framing::Length(2), false)))
        );
        assert_eq!(
            framing_of("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n"),
            Ok(Some((Framing::Length(2), false)))
        );
        assert_eq!(
            framing_of(&format!("{ok}transfer-encoding: gzip\r\n\r\n")),
            Ok(Some((Framing::UntilClose, false)))
        );
        assert_eq!(
            framing_of(&format!(
                "{ok}transfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n"
            )),
            Ok(Some((Framing::Chunked, false))),
            "chunked wins over a length, and the connection is not used again"
        );
        assert_eq!(
            framing_of(&format!(
                "{ok}content-length: 3\r\ncontent-length: 4\r\n\r\n"
            )),
            Err(WireError::Invalid("content-length values differ"))
        );
        assert_eq!(
            framing_of(&format!("{ok}content-length: -1\r\n\r\n")),
            Err(WireError::Invalid("invalid content-length"))
        );
        assert_eq!(framing_of("HTTP/1.1 200 OK\r\ncontent-le"), Ok(None));
        assert!(matches!(
            framing_of("HTTP/1.1 101 Switching Protocols\r\n\r\n"),
            Err(WireError::Invalid(_))
        ));
        assert!(matches!(
            framing_of("SMTP ready\r\n\r\n"),
            Err(WireError::Head(_))
        ));
        let huge = format!("{ok}x-big: {}", "a".repeat(MAX_HEAD_BYTES));
        assert!(matches!(framing_of(&huge), Err(WireError::HeadTooLarge)));
    }

    #[test]
    fn request_heads_carry_the_body_length_not_the_callers_and_overrides_win() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("spoofed"));
        headers.insert("content-length", HeaderValue::from_static("999"));
        headers.insert("authorization", HeaderValue::from_static("Bearer k"));
        headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        let mut overrides = HeaderMap::new();
        overrides.insert("anthropic-version", HeaderValue::from_static("2024-01-01"));
        overrides.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        let head = RequestHead {
            method: &Method::POST,
            target: "/v1/chat/completions?x=1",
            host: &HeaderValue::from_static("upstream:8080"),
            headers: &headers,
            overrides: &overrides,
        };
        let mut out = Vec::new();
        head.write(&mut out, 42);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /v1/chat/completions?x=1 HTTP/1.1\r\nhost: upstream:8080\r\nauthorization: Bearer k\r\nanthropic-version: 2024-01-01\r\ncontent-length: 42\r\n\r\n"
        );
    }
}
