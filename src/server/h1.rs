//! HTTP/1.1 for client connections, plain or TLS: the request head parsed with `httparse`, its
//! body handed to the app as it arrives (or whole, when it came with the head), the answer's
//! head and body written straight to the socket. HTTP/2 (by ALPN, or with prior knowledge on
//! a plain connection) is served by hyper (see [`super::conn`]).
//!
//! Why not hyper's server here: a proxied request was about 66k instructions, and hyper's
//! connection (its dispatcher, buffers, header encoding and the IO wrapper its timers needed)
//! ~14k of them, with code enough to evict the rest from the instruction cache. Owning the
//! loop also puts the client timers where they belong: the idle wait and the head's read, with
//! one timer a connection moved forward (cheap in tokio) rather than re-armed.
//!
//! What a client gets, as from hyper: keep-alive and pipelining, `Connection: close`,
//! HTTP/1.0, `Content-Length` and `chunked` request bodies (a request that could be smuggled,
//! with both or with a coding other than a final `chunked`, is refused), `Expect:
//! 100-continue`, a `date` header, `chunked` or length-delimited answers (close-delimited for
//! HTTP/1.0), and a client gone before its answer drops the request (logged as 499). A
//! connection whose request body was not read to its end is closed after the answer, its
//! unread bytes drained for a moment first so that the answer is not lost to a reset.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};
use bytes::{Bytes, BytesMut};
use http_body::{Body as _, Frame};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::Sleep;

use super::conn::{App, ConnLimits, Shutdown, Stop, StopWatch};
use crate::providers::http1_wire::{self, BodyDecoder, Decoded, Framing};
use crate::proxy::AnswerHeaders;

/// The most header fields in a request head (hyper's default).
const MAX_HEADERS: usize = 100;
/// What one read asks for at least.
const READ_SIZE: usize = 8 * 1024;
/// An answer's bytes gathered before they are written (a whole answer up to this goes out
/// in one write with its head).
const WRITE_GATHER: usize = 64 * 1024;
/// The most room a connection's buffers keep between requests.
const KEPT_ROOM: usize = 64 * 1024;
/// How long, and how many bytes of, an unread request body are drained before a close.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1024 * 1024;

/// The read half of a connection (`OwnedReadHalf` of a plain one, `ReadHalf` of TLS).
pub trait ReadIo: AsyncRead + Unpin + Send + 'static {}
impl<R: AsyncRead + Unpin + Send + 'static> ReadIo for R {}
/// The write half of a connection.
pub trait WriteIo: AsyncWrite + Unpin + Send + 'static {}
impl<W: AsyncWrite + Unpin + Send + 'static> WriteIo for W {}

/// Serves one HTTP/1.x connection, given as its two halves, until it closes, times out or the
/// shutdown ends it. A TLS connection's verified client certificate goes with each request.
pub async fn serve<A: App, R: ReadIo, W: WriteIo>(
    (half, write): (R, W),
    app: A,
    limits: ConnLimits,
    shutdown: &Shutdown,
    client_cert: Option<Arc<crate::auth::ClientCertificate>>,
) {
    let first_wait = limits.header_read.min(limits.keepalive_idle);
    let mut conn = Connection {
        app,
        read: Some(ReadSide {
            half,
            buf: BytesMut::new(),
        }),
        write,
        limits,
        timer: Box::pin(tokio::time::sleep(first_wait)),
        stop: StopWatch::new(shutdown),
        out: Vec::new(),
        client_cert,
    };
    conn.run().await;
}

/// The read half of a connection and the bytes read but not yet used. A request body that
/// did not come whole with its head takes it (see [`ConnBody`]) and gives it back.
struct ReadSide<R> {
    half: R,
    buf: BytesMut,
}

impl<R: ReadIo> ReadSide<R> {
    fn poll_fill(&mut self, cx: &mut Context<'_>, at_least: usize) -> Poll<io::Result<usize>> {
        self.buf.reserve(at_least.max(READ_SIZE));
        tokio_util::io::poll_read_buf(Pin::new(&mut self.half), cx, &mut self.buf)
    }
}

struct Connection<A, R, W> {
    app: A,
    /// `None` while a request body holds it.
    read: Option<ReadSide<R>>,
    write: W,
    limits: ConnLimits,
    /// The client timer: the idle wait, then the head's read.
    timer: Pin<Box<Sleep>>,
    stop: StopWatch,
    /// The answer's bytes on their way out (kept between requests for its room).
    out: Vec<u8>,
    client_cert: Option<Arc<crate::auth::ClientCertificate>>,
}

/// A request's head, parsed.
struct Head {
    request: Request<()>,
    framing: Framing,
    keep_alive: bool,
    expects_continue: bool,
}

/// Why a head was not read.
#[derive(Debug)]
enum HeadEnd {
    /// The client closed, went quiet, or the gateway is stopping: close without an answer.
    Close,
    /// The head is not HTTP/1.x as it must be: answered with this status, then closed.
    Refuse(StatusCode, &'static str),
}

/// Whether the connection goes on after an answer.
enum After {
    KeepAlive,
    Close,
}

impl<A: App, R: ReadIo, W: WriteIo> Connection<A, R, W> {
    async fn run(&mut self) {
        let mut idle = self.limits.header_read.min(self.limits.keepalive_idle);
        loop {
            self.timer
                .as_mut()
                .reset(tokio::time::Instant::now() + idle);
            let head = match self.read_head().await {
                Ok(head) => head,
                Err(HeadEnd::Close) => return,
                Err(HeadEnd::Refuse(status, message)) => {
                    self.refuse(status, message).await;
                    return;
                }
            };
            match self.answer(head).await {
                After::KeepAlive => idle = self.limits.keepalive_idle,
                After::Close => return,
            }
        }
    }

    /// Reads until a whole head is in the buffer: within the idle wait for its first byte,
    /// within `header_read` of it for the rest.
    async fn read_head(&mut self) -> Result<Head, HeadEnd> {
        let Some(read) = self.read.as_mut() else {
            return Err(HeadEnd::Close);
        };
        if read.buf.is_empty() && read.buf.capacity() > KEPT_ROOM {
            // A large body's room is not kept for the heads that follow.
            read.buf = BytesMut::new();
        }
        let mut scanned = 0;
        let mut head_timer = false;
        loop {
            if head_may_end(&read.buf, scanned) {
                if let Some(head) = parse_head(&mut read.buf)? {
                    return Ok(head);
                }
            }
            if read.buf.len() > self.limits.max_head {
                return Err(HeadEnd::Refuse(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "the request head is too large",
                ));
            }
            scanned = read.buf.len().saturating_sub(3);
            if !read.buf.is_empty() && !head_timer {
                // A head has begun: it must be whole within `header_read` of now.
                head_timer = true;
                let deadline = tokio::time::Instant::now() + self.limits.header_read;
                self.timer.as_mut().reset(deadline);
            }
            let (timer, stop) = (&mut self.timer, &mut self.stop);
            let idle = read.buf.is_empty();
            let filled = std::future::poll_fn(|cx| {
                match stop.poll(cx) {
                    Stop::Hard => return Poll::Ready(Err(HeadEnd::Close)),
                    // Between requests a stopping gateway closes at once; a head under
                    // way is answered (with `connection: close`).
                    Stop::Graceful if idle => return Poll::Ready(Err(HeadEnd::Close)),
                    _ => {}
                }
                if let Poll::Ready(filled) = read.poll_fill(cx, READ_SIZE) {
                    return Poll::Ready(match filled {
                        Ok(0) | Err(_) => Err(HeadEnd::Close),
                        Ok(n) => Ok(n),
                    });
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(HeadEnd::Close));
                }
                Poll::Pending
            })
            .await;
            filled?;
        }
    }

    /// Calls the app with the request and writes its answer.
    async fn answer(&mut self, head: Head) -> After {
        let Head {
            request,
            framing,
            keep_alive,
            expects_continue,
        } = head;
        let Some(read) = self.read.as_mut() else {
            return After::Close;
        };
        // The body: whole from the buffer when it came with the head (the common case),
        // else read as the app asks for it.
        let mut returning = None;
        let body = match framing {
            Framing::Length(0) => Body::empty(),
            Framing::Length(n) if n <= read.buf.len() as u64 => {
                Body::from(read.buf.split_to(n as usize).freeze())
            }
            framing => {
                if expects_continue
                    && self
                        .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                        .await
                        .is_err()
                {
                    return After::Close;
                }
                let (give_back, taken_back) = oneshot::channel();
                returning = Some(taken_back);
                Body::new(ConnBody {
                    read: self.read.take(),
                    decoder: BodyDecoder::new(framing),
                    give_back: Some(give_back),
                })
            }
        };
        let (mut parts, ()) = request.into_parts();
        if let Some(cert) = &self.client_cert {
            parts.extensions.insert(cert.clone());
        }
        self.respond(Request::from_parts(parts, body), keep_alive, returning)
            .await
    }

    async fn respond(
        &mut self,
        request: Request<Body>,
        keep_alive: bool,
        mut returning: Option<oneshot::Receiver<(ReadSide<R>, bool)>>,
    ) -> After {
        let head_only = request.method() == Method::HEAD;
        let version = request.version();
        let mut body_done = returning.is_none();
        if std::future::poll_fn(|cx| self.app.poll_ready(cx))
            .await
            .is_err()
        {
            return After::Close;
        }
        let mut call = pin!(self.app.call(request));
        let (read, stop, max_head) = (&mut self.read, &mut self.stop, self.limits.max_head);
        // The answer, unless the client goes away first (the call is then dropped: the
        // pipeline logs it as abandoned) or the gateway stops now.
        let answered = std::future::poll_fn(|cx| {
            if let Stop::Hard = stop.poll(cx) {
                return Poll::Ready(None);
            }
            if let Poll::Ready(Ok(response)) = call.as_mut().poll(cx) {
                return Poll::Ready(Some(response));
            }
            if let Some(taken_back) = returning.as_mut() {
                if let Poll::Ready(given) = Pin::new(taken_back).poll(cx) {
                    returning = None;
                    if let Ok((side, done)) = given {
                        *read = Some(side);
                        body_done = done;
                    }
                }
            }
            // With the body read, the connection is watched for the client's close.
            if let (Some(side), true) = (read.as_mut(), body_done) {
                while side.buf.len() <= max_head {
                    match side.poll_fill(cx, READ_SIZE) {
                        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                        Poll::Ready(Ok(_)) => continue,
                        Poll::Pending => break,
                    }
                }
            }
            Poll::Pending
        })
        .await;
        let Some(response) = answered else {
            return After::Close;
        };
        // The body's reader comes back when the request is dropped, if it had not yet.
        if let Some(mut taken_back) = returning.take() {
            if let Ok((side, done)) = taken_back.try_recv() {
                self.read = Some(side);
                body_done = done;
            }
        }
        // `body_done` means the reader is back too (it comes back with the news).
        let keep_alive = keep_alive
            && body_done
            && !self.stop.stopping()
            && !has_token(response.headers(), "close");
        let closing = self
            .write_response(response, version, head_only, keep_alive)
            .await;
        match closing {
            Ok(After::KeepAlive) => After::KeepAlive,
            Ok(After::Close) => {
                let _ = self.write.shutdown().await;
                if !body_done {
                    if let Some(side) = self.read.take() {
                        linger(side).await;
                    }
                }
                After::Close
            }
            Err(_) => After::Close,
        }
    }

    /// Writes the head and the body: gathered and written when the body has nothing more
    /// ready (a whole answer goes in one write; a stream's events go as they come).
    async fn write_response(
        &mut self,
        response: axum::http::Response<Body>,
        version: Version,
        head_only: bool,
        keep_alive: bool,
    ) -> io::Result<After> {
        let (parts, mut body) = response.into_parts();
        let status = parts.status;
        let no_body = head_only
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
        for (name, value) in &parts.headers {
            if name == TRANSFER_ENCODING || name == CONNECTION {
                continue; // the connection's own, written below
            }
            push_field(&mut out, name, value);
        }
        if let Some(AnswerHeaders(list)) = parts.extensions.get::<AnswerHeaders>() {
            for (name, value) in list {
                push_field(&mut out, name, value);
            }
        }
        if !parts.headers.contains_key(DATE) {
            out.extend_from_slice(b"date: ");
            write_date(&mut out);
            out.extend_from_slice(b"\r\n");
        }
        let length = match parts.headers.get(CONTENT_LENGTH) {
            Some(length) => length.to_str().ok().and_then(|l| l.parse::<u64>().ok()),
            None => body.size_hint().exact().inspect(|&n| {
                if !no_body || head_only {
                    out.extend_from_slice(b"content-length: ");
                    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
            }),
        };
        let chunked = !no_body && length.is_none() && version == Version::HTTP_11;
        // HTTP/1.0 without a length: the close ends the body.
        let keep_alive = keep_alive && (no_body || length.is_some() || chunked);
        if chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        match (keep_alive, version) {
            (false, _) => out.extend_from_slice(b"connection: close\r\n"),
            (true, Version::HTTP_10) => out.extend_from_slice(b"connection: keep-alive\r\n"),
            _ => {}
        }
        out.extend_from_slice(b"\r\n");
        let result = if no_body {
            self.write_all(&out).await
        } else {
            self.write_body(&mut body, &mut out, chunked).await
        };
        out.clear();
        // A connection keeps its write room between answers, but not a stream's worth.
        if out.capacity() <= KEPT_ROOM {
            self.out = out;
        }
        result.map(|()| {
            if keep_alive {
                After::KeepAlive
            } else {
                After::Close
            }
        })
    }

    async fn write_body(
        &mut self,
        body: &mut Body,
        out: &mut Vec<u8>,
        chunked: bool,
    ) -> io::Result<()> {
        loop {
            let stop = &mut self.stop;
            let next = std::future::poll_fn(|cx| {
                if let Stop::Hard = stop.poll(cx) {
                    return Poll::Ready(Next::Stopped);
                }
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => Poll::Ready(Next::Frame(frame)),
                    Poll::Ready(Some(Err(_))) => Poll::Ready(Next::Failed),
                    Poll::Ready(None) => Poll::Ready(Next::End),
                    // Nothing more ready: what is gathered goes out now.
                    Poll::Pending if !out.is_empty() => Poll::Ready(Next::Flush),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            match next {
                Next::Frame(frame) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers: not forwarded
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if chunked {
                        push_chunk_size(out, data.len());
                    }
                    if out.len() + data.len() <= WRITE_GATHER {
                        out.extend_from_slice(&data);
                    } else {
                        self.write_all(out).await?;
                        out.clear();
                        self.write_all(&data).await?;
                    }
                    if chunked {
                        out.extend_from_slice(b"\r\n");
                    }
                    if out.len() >= WRITE_GATHER {
                        self.write_all(out).await?;
                        out.clear();
                    }
                }
                Next::Flush => {
                    self.write_all(out).await?;
                    out.clear();
                }
                Next::End => {
                    if chunked {
                        out.extend_from_slice(b"0\r\n\r\n");
                    }
                    return self.write_all(out).await;
                }
                // The body broke off: the client sees an unfinished answer (no last chunk,
                // or fewer bytes than announced) and the connection closes.
                Next::Failed | Next::Stopped => {
                    let _ = self.write_all(out).await;
                    return Err(io::Error::other("the answer's body broke off"));
                }
            }
        }
    }

    /// Writes all of `bytes`; a client that takes none of them for `send` is cut off (the
    /// connection's timer, idle while an answer is written, keeps that time).
    async fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let (write, timer, send) = (&mut self.write, &mut self.timer, self.limits.send);
        let mut armed = false;
        std::future::poll_fn(|cx| {
            while !bytes.is_empty() {
                match Pin::new(&mut *write).poll_write(cx, bytes) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        bytes = &bytes[n..];
                        armed = false;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        if !armed {
                            armed = true;
                            let deadline = tokio::time::Instant::now() + send;
                            timer.as_mut().reset(deadline);
                        }
                        if timer.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "the client stopped reading",
                            )));
                        }
                        return Poll::Pending;
                    }
                }
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// The answer to a head that is not HTTP/1.x as it must be, in OpenAI's error shape.
    async fn refuse(&mut self, status: StatusCode, message: &str) {
        let body = serde_json::json!({"error": {
            "message": message,
            "type": "invalid_request_error",
            "param": null,
            "code": match status {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
                _ => "bad_request",
            },
        }})
        .to_string();
        let mut response = axum::http::Response::new(Body::from(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let _ = self
            .write_response(response, Version::HTTP_11, false, false)
            .await;
        let _ = self.write.shutdown().await;
        if let Some(side) = self.read.take() {
            linger(side).await;
        }
    }
}

/// What the answer's body gave.
enum Next {
    Frame(Frame<Bytes>),
    Flush,
    End,
    Failed,
    Stopped,
}

/// Whether the bytes past `from` may end a head (an empty line): `httparse` is run only
/// then, so that a head arriving in many pieces is not parsed again for each.
fn head_may_end(buf: &[u8], from: usize) -> bool {
    let from = from.min(buf.len());
    memchr::memchr_iter(b'\n', &buf[from..]).any(|at| {
        let rest = &buf[from + at + 1..];
        rest.starts_with(b"\n") || rest.starts_with(b"\r\n")
    })
}

/// Parses the head at the start of `buf` and takes its bytes out; `None` when it is not
/// all there yet. Header values are cut from the head's bytes, not copied.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, HeadEnd> {
    let bad = |message| HeadEnd::Refuse(StatusCode::BAD_REQUEST, message);
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadEnd::Refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many request headers",
            ));
        }
        Err(_) => return Err(bad("the request head is not valid HTTP/1.1")),
    };
    let method = Method::from_bytes(parsed.method.unwrap_or("").as_bytes())
        .map_err(|_| bad("invalid method"))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let target = parsed.path.unwrap_or("");
    let target_at = target.as_ptr() as usize - buf.as_ptr() as usize;
    let target = target_at..target_at + target.len();
    let spans = http1_wire::field_spans(buf, parsed.headers);
    let head = buf.split_to(len).freeze();
    let uri =
        Uri::from_maybe_shared(head.slice(target)).map_err(|_| bad("invalid request target"))?;
    let headers = http1_wire::header_map(&head, &spans).map_err(bad)?;
    let framing = request_framing(&headers, version).map_err(bad)?;
    let keep_alive = match version {
        Version::HTTP_10 => has_token(&headers, "keep-alive"),
        _ => !has_token(&headers, "close"),
    };
    let expects_continue = version == Version::HTTP_11
        && headers
            .get(EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some(Head {
        request,
        framing,
        keep_alive,
        expects_continue,
    }))
}

/// How a request's body ends (RFC 9112 §6.3): a final `chunked` coding, a `Content-Length`
/// (repeats must agree), or no body. A request with both, or with another coding last, could
/// be read differently by a proxy in front: refused.
fn request_framing(headers: &HeaderMap, version: Version) -> Result<Framing, &'static str> {
    if headers.contains_key(TRANSFER_ENCODING) {
        if headers.contains_key(CONTENT_LENGTH) {
            return Err("both transfer-encoding and content-length");
        }
        if version == Version::HTTP_10 {
            return Err("transfer-encoding in an HTTP/1.0 request");
        }
        return if http1_wire::ends_chunked(headers) {
            Ok(Framing::Chunked)
        } else {
            Err("a transfer-encoding other than a final chunked")
        };
    }
    let length = http1_wire::content_length(headers)?;
    Ok(Framing::Length(length.unwrap_or(0)))
}

/// Whether a `Connection` header lists `token`.
fn has_token(headers: &HeaderMap, token: &str) -> bool {
    http1_wire::has_token(headers, &CONNECTION, token)
}

/// A header field's line: `name: value` and CRLF (names and values cannot hold CR or LF).
fn push_field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A chunk's size line: the size in hex, then CRLF.
fn push_chunk_size(out: &mut Vec<u8>, n: usize) {
    let digits = (usize::BITS - n.leading_zeros()).div_ceil(4).max(1);
    for shift in (0..digits).rev() {
        out.push(b"0123456789abcdef"[(n >> (shift * 4)) & 0xF]);
    }
    out.extend_from_slice(b"\r\n");
}

/// The `date` header's value, made once a second per thread.
fn write_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: std::cell::Cell<(u64, [u8; 29])> = const { std::cell::Cell::new((0, [0; 29])) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (made, mut text) = DATE.get();
    if made != second {
        let fresh = httpdate::fmt_http_date(now);
        if fresh.len() == text.len() {
            text.copy_from_slice(fresh.as_bytes());
            DATE.set((second, text));
        }
    }
    out.extend_from_slice(&text);
}

/// Reads and drops what the client still sends (the rest of a body not read) for a moment
/// after the answer, so that closing with unread bytes does not reset the connection before
/// the client has read the answer.
async fn linger<R: ReadIo>(mut side: ReadSide<R>) {
    let _ = tokio::time::timeout(LINGER, async {
        let mut drained = 0;
        while drained < LINGER_BYTES {
            side.buf.clear();
            match std::future::poll_fn(|cx| side.poll_fill(cx, READ_SIZE)).await {
                Ok(0) | Err(_) => return,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

/// A request body that did not come whole with its head: read from the connection as the
/// app asks for it; the connection's reader goes back when it ends or is dropped.
struct ConnBody<R> {
    read: Option<ReadSide<R>>,
    decoder: BodyDecoder,
    give_back: Option<oneshot::Sender<(ReadSide<R>, bool)>>,
}

impl<R> ConnBody<R> {
    fn give_back(&mut self) {
        if let (Some(side), Some(give_back)) = (self.read.take(), self.give_back.take()) {
            let _ = give_back.send((side, self.decoder.is_done()));
        }
    }
}

impl<R> Drop for ConnBody<R> {
    fn drop(&mut self) {
        self.give_back();
    }
}

impl<R: ReadIo> http_body::Body for ConnBody<R> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            let Some(side) = this.read.as_mut() else {
                return Poll::Ready(None);
            };
            let decoded = this
                .decoder
                .decode(&mut side.buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
            match decoded {
                Ok(Decoded::Data(data)) if data.is_empty() => continue,
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Decoded::End) => {
                    this.give_back();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => match side.poll_fill(cx, READ_SIZE) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Some(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the client closed before the body's end",
                        ))));
                    }
                    Poll::Ready(Ok(_)) => continue,
                    Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                    Poll::Pending => return Poll::Pending,
                },
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(text: &str) -> Result<Option<Head>, HeadEnd> {
        parse_head(&mut BytesMut::from(text))
    }

    fn refused(text: &str) -> StatusCode {
        match head_of(text) {
            Err(HeadEnd::Refuse(status, _)) => status,
            Ok(_) => panic!("accepted: {text:?}"),
            Err(HeadEnd::Close) => panic!("closed: {text:?}"),
        }
    }

    #[test]
    fn a_head_is_parsed_with_its_framing_and_keep_alive() {
        let mut buf = BytesMut::from(
            "POST /ai/v1/chat/completions?x=1 HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello",
        );
        let head = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(head.request.method(), Method::POST);
        assert_eq!(head.request.uri().path(), "/ai/v1/chat/completions");
        assert_eq!(head.request.uri().query(), Some("x=1"));
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        let values: Vec<_> = head.request.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(&buf[..], b"hello", "the body stays in the buffer");
    }

    #[test]
    fn a_partial_head_waits_for_more() {
        assert!(matches!(head_of("GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None)));
        assert!(!head_may_end(b"GET / HTTP/1.1\r\nHost: x\r\n", 0));
        assert!(head_may_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0));
        assert!(head_may_end(b"GET / HTTP/1.1\nHost: x\n\n", 0));
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        let ka = |text: &str| head_of(text).unwrap().unwrap().keep_alive;
        assert!(!ka("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
        assert!(ka("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(ka(
            "GET / HTTP/1.1\r\nConnection: upgrade, keep-alive\r\n\r\n"
        ));
    }

    #[test]
    fn bodies_that_could_be_smuggled_are_refused() {
        let bad = StatusCode::BAD_REQUEST;
        assert_eq!(
            refused("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            bad
        );
        assert_eq!(
            refused("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            bad
        );
        assert_eq!(
            refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            bad
        );
        assert_eq!(
            refused("POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            bad
        );
        assert_eq!(
            refused("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            bad
        );
        assert_eq!(
            refused("POST / HTTP/1.1\r\nContent-Length: 3 4\r\n\r\n"),
            bad
        );
        assert_eq!(
            refused("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            bad
        );
        assert_eq!(refused("GARBAGE\r\n\r\n"), bad);
        let head = head_of("POST / HTTP/1.1\r\nContent-Length: 7, 7\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.framing, Framing::Length(7));
        let head = head_of("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(head.framing, Framing::Chunked);
    }

    #[test]
    fn too_many_headers_get_431() {
        let mut text = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            text.push_str(&format!("x-{i}: v\r\n"));
        }
        text.push_str("\r\n");
        assert_eq!(refused(&text), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn chunk_sizes_are_written_in_hex() {
        for (n, text) in [
            (0, "0"),
            (1, "1"),
            (15, "f"),
            (16, "10"),
            (255, "ff"),
            (4096, "1000"),
        ] {
            let mut out = Vec::new();
            push_chunk_size(&mut out, n);
            assert_eq!(out, format!("{text}\r\n").as_bytes());
        }
    }

    #[test]
    fn expect_continue_is_seen_on_http_1_1() {
        let head = head_of("POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.expects_continue);
    }
}
