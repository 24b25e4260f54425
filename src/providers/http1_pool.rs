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
//! A connection has no task of its own: whoever uses it drives it (sending a request waits on
//! it, reading the body polls it). A task per connection cost a task switch for every chunk
//! of a streamed answer (hyper hands a body over one chunk at a time), and more than the
//! chunk's own work; driven by the reader, everything the socket holds is read in one poll.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::http::{Request, Response};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

type Sender = SendRequest<Full<Bytes>>;
type Connection = http1::Connection<TokioIo<tokio::net::TcpStream>, Full<Bytes>>;

/// An idle connection older than this is closed rather than used: the upstream may be about
/// to close it (servers' keep-alive timeouts are commonly 60–120 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The most idle connections a thread keeps to one upstream; the oldest go first.
const MAX_IDLE: usize = 256;
/// How often idle connections are looked at: those the upstream closed are closed on our side
/// too (not left half-closed until the next request), expired ones are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

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
    conn: Box<Conn>,
    since: Instant,
}

/// One connection: the handle requests are sent on, and the connection's I/O state machine
/// (hyper's `Connection`), polled by whoever uses the connection.
struct Conn {
    sender: Sender,
    /// `None` once the connection has ended (closed by the upstream, or broken).
    io: Option<Connection>,
}

impl Conn {
    /// Lets the connection read and write what it can; false once it has ended.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(io) = &mut self.io else {
            return false;
        };
        match Pin::new(io).poll(cx) {
            Poll::Pending => true,
            Poll::Ready(ended) => {
                if let Err(error) = ended {
                    tracing::debug!(%error, "upstream connection ended");
                }
                self.io = None;
                false
            }
        }
    }

    /// Waits for `work` (a request in flight on this connection) while driving the connection.
    async fn drive<F: Future>(&mut self, work: F) -> F::Output {
        let mut work = pin!(work);
        poll_fn(|cx| {
            self.poll_io(cx);
            work.as_mut().poll(cx)
        })
        .await
    }

    /// Whether an idle connection can take a request: driving it lets it notice that the
    /// upstream closed it meanwhile, and say that it wants the next request.
    async fn ready(&mut self) -> bool {
        poll_fn(|cx| {
            let open = self.poll_io(cx);
            match self.sender.poll_ready(cx) {
                Poll::Ready(result) => Poll::Ready(result.is_ok()),
                Poll::Pending if open => Poll::Pending,
                Poll::Pending => Poll::Ready(false),
            }
        })
        .await
    }
}

/// A connection in use: its response body drives it ([`Lease::poll_io`]), and it returns to
/// its pool when that body has been read to its end ([`Lease::release`]); dropped before
/// that, it closes (HTTP/1 cannot reuse a connection whose answer was not read).
pub struct Lease {
    /// Boxed: hyper's connection state is large, and a lease travels inside responses.
    conn: Box<Conn>,
    pool: Arc<Pool>,
}

impl Lease {
    fn new(conn: Box<Conn>, pool: &Arc<Pool>) -> Self {
        Self {
            conn,
            pool: pool.clone(),
        }
    }

    /// Drives the connection (reads what the upstream sent); false once it has ended.
    pub fn poll_io(&mut self, cx: &mut Context<'_>) -> bool {
        self.conn.poll_io(cx)
    }

    pub fn release(self) {
        self.pool.put(self.conn);
    }
}

/// Why a request could not be sent or answered. A connect that timed out is an I/O error of
/// kind `TimedOut`, as hyper-util's connector reports it (`transport_error` reads both alike).
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect")]
    Connect(#[source] std::io::Error),
    #[error("upstream connection")]
    Http(#[from] hyper::Error),
}

impl Pool {
    /// The most recently used idle connection; expired ones met on the way are dropped.
    /// Whether it is still open is for the caller to find out ([`Conn::ready`]).
    fn take(&self) -> Option<Box<Conn>> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some(Idle { conn, since }) = idle.pop_back() {
            if since.elapsed() < IDLE_TIMEOUT {
                return Some(conn);
            }
        }
        None
    }

    /// Closes the idle connections the upstream has closed, and the expired ones. An idle
    /// connection has no task to notice a close: it is polled here once, without a waker
    /// (whoever takes it next polls it with theirs).
    fn sweep(&self) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut cx = Context::from_waker(Waker::noop());
        idle.retain_mut(|Idle { conn, since }| {
            since.elapsed() < IDLE_TIMEOUT && conn.poll_io(&mut cx)
        });
    }

    fn put(&self, conn: Box<Conn>) {
        if conn.io.is_none() || conn.sender.is_closed() {
            return;
        }
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

    /// Sends `request` (origin-form URI, `Host` set) on an idle connection of the calling
    /// thread's pool, or on a new one. A pooled connection that turns out closed before the
    /// request was written (the upstream dropped it while idle) costs a retry on a fresh
    /// connection, not an error.
    pub async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        let slot = crate::server::workers::current_slot();
        let pool = &self.pools[slot.min(self.pools.len() - 1)];
        while let Some(mut conn) = pool.take() {
            if !conn.ready().await {
                continue;
            }
            let sent = conn.sender.try_send_request(request);
            match conn.drive(sent).await {
                Ok(response) => return Ok((response, Lease::new(conn, pool))),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(failed.into_error().into()),
                },
            }
        }
        // Boxed: connecting (a TCP connect and hyper's handshake) is rare on a warm pool, and
        // its state would otherwise widen every request's future, moved by value above.
        let mut conn = Box::pin(self.connect()).await?;
        let sent = conn.sender.send_request(request);
        let response = conn.drive(sent).await?;
        Ok((response, Lease::new(conn, pool)))
    }

    /// A new connection (driven by its user, see the module's notes).
    async fn connect(&self) -> Result<Box<Conn>, SendError> {
        let stream = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| SendError::Connect(std::io::ErrorKind::TimedOut.into()))?
        .map_err(SendError::Connect)?;
        stream.set_nodelay(true).map_err(SendError::Connect)?;
        let (sender, io) = http1::handshake(TokioIo::new(stream)).await?;
        Ok(Box::new(Conn {
            sender,
            io: Some(io),
        }))
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    fn idle_count(pools: &Http1Pools) -> usize {
        pools.pools[0]
            .idle
            .lock()
            .map(|idle| idle.len())
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn a_sweep_closes_what_the_upstream_closed_and_keeps_the_rest() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (close, closed) = tokio::sync::oneshot::channel::<()>();
        let upstream = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                head.extend_from_slice(&buf[..n]);
            }
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            closed.await.unwrap();
            drop(socket);
        });

        let pools = Http1Pools::new("127.0.0.1", port, Duration::from_secs(1));
        let request = Request::builder()
            .method("POST")
            .uri("/v1/chat/completions")
            .header("host", "upstream")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (response, mut lease) = pools.send(request).await.unwrap();
        let body = lease.conn.drive(response.into_body().collect()).await;
        assert_eq!(body.unwrap().to_bytes(), "ok");
        lease.release();
        assert_eq!(idle_count(&pools), 1);

        pools.pools[0].sweep();
        assert_eq!(idle_count(&pools), 1, "an open idle connection stays");

        close.send(()).unwrap();
        upstream.await.unwrap();
        // The close reaches our socket a moment later.
        for _ in 0..100 {
            pools.pools[0].sweep();
            if idle_count(&pools) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("a connection the upstream closed was kept");
    }
}
