//! Plain-HTTP upstreams (local models: Ollama, vLLM, llama.cpp, an in-cluster service) over
//! HTTP/1.1 connections kept in one pool per proxy thread.
//!
//! hyper-util's pooled client serves every other upstream (TLS, HTTP/2, egress proxies). For a
//! plain-HTTP upstream it did per request what a proxy thread needs none of: a pool lookup
//! under a shared lock by a hashed (scheme, authority) key, the URI rewritten to origin form,
//! and a task spawned only to wait for the connection to become idle again. Here a connection
//! goes back to its thread's pool when its response body ends, and a request takes the most
//! recently used idle one.
//!
//! A connection has no task of its own: the request is written and its head read by the
//! request's own future, and the body is read from the socket by whoever polls it
//! ([`Http1Body`]), everything the socket holds in one poll. The bytes on the wire are
//! [`super::http1_wire`]'s.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::{Method, Response};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::http1_wire::{self, BodyDecoder, Decoded, Head, RequestHead, WireError};

/// An idle connection older than this is closed rather than used: the upstream may be about
/// to close it (servers' keep-alive timeouts are commonly 60–120 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The most idle connections a thread keeps to one upstream; the oldest go first.
const MAX_IDLE: usize = 256;
/// How often idle connections are looked at: those the upstream closed are closed on our side
/// too (not left half-closed until the next request), expired ones are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// The first read of a response asks for this much; a body that fills every read doubles it,
/// up to [`MAX_READ`] (a long answer is read in few calls, a token's chunk in one small one).
const FIRST_READ: usize = 16 * 1024;
const MAX_READ: usize = 512 * 1024;

/// The connections of one upstream `host:port`, one pool per proxy thread.
pub struct Http1Pools {
    host: String,
    port: u16,
    connect_timeout: Duration,
    pools: Box<[Arc<Pool>]>,
}

#[derive(Default)]
struct Pool {
    /// Most recently returned last. Locked only by its own thread (slot 0 aside), and never
    /// across an await.
    idle: Mutex<VecDeque<Idle>>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// One connection, and the bytes read from it and not yet taken.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

/// Why a request could not be sent or answered. A connect that timed out is an I/O error of
/// kind `TimedOut`, as hyper-util's connector reports it (`transport_error` reads both alike).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect")]
    Connect(#[source] io::Error),
    #[error("upstream connection")]
    Io(#[from] io::Error),
    #[error("upstream closed the connection before answering")]
    Closed,
    #[error(transparent)]
    Wire(#[from] WireError),
}

impl Conn {
    /// Whether an idle connection is still open. The reactor marks a socket readable when the
    /// upstream closes it (or sends what it should not); unmarked, nothing is read.
    fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Writes the request (head and body in one vectored write where the socket takes it)
    /// and reads the response's head. A write that fails may still be followed by an answer
    /// (an upstream that refuses a large body answers and closes before reading it all).
    async fn exchange(
        &mut self,
        head: &Bytes,
        body: &Bytes,
        method: &Method,
    ) -> Result<Head, (SendError, Written)> {
        let mut request = head.clone().chain(body.clone());
        let written = self.stream.write_all_buf(&mut request).await;
        match (written, self.read_head(method).await) {
            (Ok(()), Ok(head)) => Ok(head),
            (Ok(()), Err(error)) => Err((error, Written::Yes)),
            (Err(_), Ok(mut head)) => {
                head.reusable = false;
                Ok(head)
            }
            (Err(error), Err(_)) => Err((error.into(), Written::No)),
        }
    }

    async fn read_head(&mut self, method: &Method) -> Result<Head, SendError> {
        loop {
            if !self.buf.is_empty()
                && let Some(head) = http1_wire::parse_head(&mut self.buf, method)?
            {
                return Ok(head);
            }
            self.buf.reserve(FIRST_READ);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(SendError::Closed);
            }
        }
    }
}

/// Whether a request that failed had been written whole.
enum Written {
    Yes,
    No,
}

/// A plain-HTTP response's body, read from its connection as it is polled. The connection
/// goes back to its pool when the body has been read to its end (and the upstream let it stay
/// open); dropped before that, it closes (HTTP/1 cannot reuse a connection whose answer was
/// not read).
pub struct Http1Body {
    /// `None` once the body has ended (the connection back in its pool, or closed).
    conn: Option<Conn>,
    decoder: BodyDecoder,
    reusable: bool,
    read_size: usize,
    pool: Arc<Pool>,
}

/// Why a body broke off.
#[derive(Debug, thiserror::Error)]
pub enum BodyReadError {
    #[error("upstream connection")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
}

impl Http1Body {
    pub fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    /// The next piece of the body: decoded from what was read, reading the socket when that
    /// is not enough.
    pub fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, BodyReadError>>> {
        let Some(conn) = &mut self.conn else {
            return Poll::Ready(None);
        };
        loop {
            match self.decoder.decode(&mut conn.buf) {
                Ok(Decoded::Data(data)) => {
                    if self.decoder.is_done() {
                        // Back to the pool with the last bytes, not a poll later.
                        self.end();
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Ok(Decoded::End) => {
                    self.end();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {}
                Err(error) => return Poll::Ready(Some(Err(self.fail(error.into())))),
            }
            conn.buf.reserve(self.read_size);
            let spare = conn.buf.capacity() - conn.buf.len();
            match tokio_util::io::poll_read_buf(Pin::new(&mut conn.stream), cx, &mut conn.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    return match self.decoder.at_eof() {
                        Ok(()) => {
                            self.reusable = false;
                            self.end();
                            Poll::Ready(None)
                        }
                        Err(error) => Poll::Ready(Some(Err(self.fail(error.into())))),
                    };
                }
                Poll::Ready(Ok(read)) => {
                    if read >= spare && self.read_size < MAX_READ {
                        self.read_size *= 2;
                    }
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Some(Err(self.fail(error.into())))),
            }
        }
    }

    /// The body has ended: the connection goes back to its pool if it can carry another
    /// request (nothing read past this answer).
    fn end(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.reusable
            && conn.buf.is_empty()
        {
            self.pool.put(conn);
        }
    }

    fn fail(&mut self, error: BodyReadError) -> BodyReadError {
        tracing::debug!(%error, "upstream response body broke off");
        self.conn = None;
        error
    }
}

impl Pool {
    /// The most recently used idle connection that is still open; expired and closed ones
    /// met on the way are dropped.
    fn take(&self) -> Option<Conn> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some(Idle { conn, since }) = idle.pop_back() {
            if since.elapsed() < IDLE_TIMEOUT && conn.is_open() {
                return Some(conn);
            }
        }
        None
    }

    /// Closes the idle connections the upstream has closed, and the expired ones.
    fn sweep(&self) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        idle.retain(|Idle { conn, since }| since.elapsed() < IDLE_TIMEOUT && conn.is_open());
    }

    fn put(&self, conn: Conn) {
        let now = Instant::now();
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The oldest go when there are too many, or when they have idled too long (a burst's
        // extra connections do not stay open for as long as the upstream allows).
        while idle.len() >= MAX_IDLE
            || idle
                .front()
                .is_some_and(|oldest| now.duration_since(oldest.since) >= IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        idle.push_back(Idle { conn, since: now });
    }
}

impl Http1Pools {
    pub fn new(host: &str, port: u16, connect_timeout: Duration) -> Self {
        let pools: Box<[Arc<Pool>]> = (0..crate::server::workers::slot_count())
            .map(|_| Arc::new(Pool::default()))
            .collect();
        let swept: Vec<Weak<Pool>> = pools.iter().map(Arc::downgrade).collect();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            // Ends with the pools (a reload that drops this upstream).
            runtime.spawn(async move {
                let mut every = tokio::time::interval(SWEEP_EVERY);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                every.tick().await;
                loop {
                    every.tick().await;
                    for pool in &swept {
                        let Some(pool) = pool.upgrade() else {
                            return;
                        };
                        pool.sweep();
                    }
                }
            });
        }
        Self {
            host: host.to_owned(),
            port,
            connect_timeout,
            pools,
        }
    }

    /// Sends a request on an idle connection of the calling thread's pool, or on a new one,
    /// and reads its response's head. A pooled connection that turns out closed before the
    /// request was written (the upstream dropped it while idle) costs a retry on a fresh
    /// connection, not an error; once written, a request is not sent again (it may have been
    /// acted on).
    pub async fn send(
        &self,
        request: RequestHead<'_>,
        body: Bytes,
    ) -> Result<Response<Http1Body>, SendError> {
        let slot = crate::server::workers::current_slot();
        let pool = &self.pools[slot.min(self.pools.len() - 1)];
        let method = request.method;
        let mut head = Vec::with_capacity(256 + 32 * request.headers.len());
        request.write(&mut head, body.len());
        let head = Bytes::from(head);
        while let Some(mut conn) = pool.take() {
            match conn.exchange(&head, &body, method).await {
                Ok(answer) => return Ok(Self::answer(conn, answer, pool)),
                Err((_, Written::No)) => continue,
                Err((error, Written::Yes)) => return Err(error),
            }
        }
        // Boxed: connecting is rare on a warm pool, and its state would otherwise widen every
        // request's future.
        let mut conn = Box::pin(self.connect()).await?;
        match conn.exchange(&head, &body, method).await {
            Ok(answer) => Ok(Self::answer(conn, answer, pool)),
            Err((error, _)) => Err(error),
        }
    }

    fn answer(conn: Conn, head: Head, pool: &Arc<Pool>) -> Response<Http1Body> {
        let mut body = Http1Body {
            conn: Some(conn),
            decoder: BodyDecoder::new(head.framing),
            reusable: head.reusable,
            read_size: FIRST_READ,
            pool: pool.clone(),
        };
        if body.decoder.is_done() {
            // No body (or an empty one): the connection is free now.
            body.end();
        }
        head.response.map(|()| body)
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let stream = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| SendError::Connect(io::ErrorKind::TimedOut.into()))?
        .map_err(SendError::Connect)?;
        stream.set_nodelay(true).map_err(SendError::Connect)?;
        Ok(Conn {
            stream,
            buf: BytesMut::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};
    use tokio::net::TcpListener;

    use super::*;

    fn idle_count(pools: &Http1Pools) -> usize {
        pools.pools[0]
            .idle
            .lock()
            .map(|idle| idle.len())
            .unwrap_or(0)
    }

    async fn read_body(response: Response<Http1Body>) -> Result<Vec<u8>, BodyReadError> {
        let mut body = response.into_body();
        let mut out = Vec::new();
        while let Some(data) = std::future::poll_fn(|cx| body.poll_data(cx)).await {
            out.extend_from_slice(&data?);
        }
        Ok(out)
    }

    /// Reads one request (head and `content-length` body) off `socket`; `None` at its close.
    async fn read_request(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(buf[..end].to_vec()).unwrap();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |n| n.parse().unwrap());
                while buf.len() < end + 4 + length {
                    let mut more = [0u8; 65536];
                    let n = socket.read(&mut more).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    buf.extend_from_slice(&more[..n]);
                }
                let body = buf[end + 4..end + 4 + length].to_vec();
                buf.drain(..end + 4 + length);
                return Some((head, body));
            }
            let mut more = [0u8; 4096];
            let n = socket.read(&mut more).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&more[..n]);
        }
    }

    /// Takes the next connection, reads one request off it and writes `answer`; the
    /// connection, what was read past the request, and the request's body.
    async fn accept_and_answer(
        listener: &TcpListener,
        answer: &[u8],
    ) -> (TcpStream, Vec<u8>, Vec<u8>) {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let (_, body) = read_request(&mut socket, &mut buf).await.unwrap();
        socket.write_all(answer).await.unwrap();
        (socket, buf, body)
    }

    async fn upstream() -> (TcpListener, Http1Pools) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (
            listener,
            Http1Pools::new("127.0.0.1", port, Duration::from_secs(1)),
        )
    }

    async fn post(
        pools: &Http1Pools,
        body: &'static [u8],
    ) -> Result<Response<Http1Body>, SendError> {
        let head = RequestHead {
            method: &Method::POST,
            target: "/v1/chat/completions",
            host: &HeaderValue::from_static("upstream"),
            headers: &HeaderMap::new(),
            overrides: &HeaderMap::new(),
        };
        pools.send(head, Bytes::from_static(body)).await
    }

    #[tokio::test]
    async fn a_connection_carries_request_after_request_and_streams_chunks_as_they_come() {
        let (listener, pools) = upstream().await;
        let (next, mut go) = tokio::sync::mpsc::channel::<()>(1);
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let (head, body) = read_request(&mut socket, &mut buf).await.unwrap();
            assert!(head.starts_with("POST /v1/chat/completions HTTP/1.1\r\nhost: upstream\r\n"));
            assert_eq!(body, b"first");
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\ndata: \r\n")
                .await
                .unwrap();
            go.recv().await.unwrap();
            socket.write_all(b"2\r\nhi\r\n0\r\n\r\n").await.unwrap();
            let (_, body) = read_request(&mut socket, &mut buf).await.unwrap();
            assert_eq!(body, b"second");
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            // Both requests came on this one connection.
            read_request(&mut socket, &mut buf).await
        });

        let response = post(&pools, b"first").await.unwrap();
        let mut body = response.into_body();
        let first = std::future::poll_fn(|cx| body.poll_data(cx))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            first, "data: ",
            "a chunk is handed over before the next one is sent"
        );
        next.send(()).await.unwrap();
        let rest = std::future::poll_fn(|cx| body.poll_data(cx))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rest, "hi");
        assert!(
            std::future::poll_fn(|cx| body.poll_data(cx))
                .await
                .is_none()
        );
        assert_eq!(idle_count(&pools), 1, "back in the pool at the body's end");

        let response = post(&pools, b"second").await.unwrap();
        assert_eq!(idle_count(&pools), 0);
        assert_eq!(read_body(response).await.unwrap(), b"ok");
        assert_eq!(idle_count(&pools), 1);
        drop((body, pools));
        assert!(
            server.await.unwrap().is_none(),
            "the connection closes with its pool"
        );
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_is_not_used_and_a_half_read_one_not_kept() {
        let (listener, pools) = upstream().await;
        let server = tokio::spawn(async move {
            // First connection: answers once, then closes while idle.
            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            drop(accept_and_answer(&listener, ok).await);
            // Second: a long answer whose reader stops early.
            let part = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npart";
            let (mut socket, mut buf, _) = accept_and_answer(&listener, part).await;
            let closed = read_request(&mut socket, &mut buf).await;
            (listener, closed)
        });
        assert_eq!(
            read_body(post(&pools, b"a").await.unwrap()).await.unwrap(),
            b"ok"
        );
        assert_eq!(idle_count(&pools), 1);
        // The close reaches our socket a moment later: a sweep drops the connection.
        for _ in 0..100 {
            pools.pools[0].sweep();
            if idle_count(&pools) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            idle_count(&pools),
            0,
            "a connection the upstream closed was kept"
        );

        let response = post(&pools, b"b").await.unwrap();
        let mut body = response.into_body();
        let part = std::future::poll_fn(|cx| body.poll_data(cx))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(part, "part");
        drop(body);
        assert_eq!(
            idle_count(&pools),
            0,
            "a connection with an unread answer is closed"
        );
        let (_listener, closed) = server.await.unwrap();
        assert!(closed.is_none(), "the upstream saw the close");
    }

    #[tokio::test]
    async fn a_request_on_a_connection_found_closed_at_write_goes_on_a_new_one() {
        let (listener, pools) = upstream().await;
        let server = tokio::spawn(async move {
            let first = b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n1";
            let (socket, _, _) = accept_and_answer(&listener, first).await;
            let second = b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\n2";
            let (_second, _, body) = accept_and_answer(&listener, second).await;
            drop(socket);
            body
        });
        assert_eq!(
            read_body(post(&pools, b"one").await.unwrap())
                .await
                .unwrap(),
            b"1"
        );
        // A second request while the first connection is idle and open: the upstream takes
        // it only on a new connection (the test's server reads the first no more).
        let pooled = pools.pools[0].idle.lock().unwrap().pop_back().unwrap();
        let again = post(&pools, b"two").await.unwrap();
        assert_eq!(read_body(again).await.unwrap(), b"2");
        assert_eq!(server.await.unwrap(), b"two");
        drop(pooled);
    }

    #[tokio::test]
    async fn an_upstream_that_answers_before_reading_a_large_body_is_heard() {
        let (listener, pools) = upstream().await;
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 64];
            let _ = socket.read(&mut head).await.unwrap();
            socket
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 7\r\nconnection: close\r\n\r\ntoo big")
                .await
                .unwrap();
            drop(socket);
        });
        static BIG: [u8; 8 << 20] = [b'x'; 8 << 20];
        let response = post(&pools, &BIG).await.unwrap();
        assert_eq!(response.status(), 413);
        assert_eq!(read_body(response).await.unwrap(), b"too big");
        assert_eq!(idle_count(&pools), 0);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn garbage_or_a_close_instead_of_an_answer_is_an_error() {
        let (listener, pools) = upstream().await;
        let server = tokio::spawn(async move {
            for answer in [&b"SSH-2.0-OpenSSH\r\n\r\n"[..], b""] {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = Vec::new();
                read_request(&mut socket, &mut buf).await.unwrap();
                socket.write_all(answer).await.unwrap();
            }
        });
        assert!(matches!(post(&pools, b"a").await, Err(SendError::Wire(_))));
        assert!(matches!(post(&pools, b"b").await, Err(SendError::Closed)));
        server.await.unwrap();
    }
}
