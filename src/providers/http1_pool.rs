//! Plain-HTTP upstreams (local models: Ollama, vLLM, llama.cpp, an in-cluster service) over
//! HTTP/1.1 connections kept in one pool per proxy thread.
//!
//! hyper-util's pooled client serves every other upstream (TLS, HTTP/2, egress proxies). For a
//! plain-HTTP upstream it did per request what a proxy thread needs none of: a pool lookup
//! under a shared lock by a hashed (scheme, authority) key, the URI rewritten to origin form,
//! and a task spawned only to wait for the connection to become idle again. Here a connection
//! goes back to its thread's pool when its response body ends, and a request takes the most
//! recently used idle one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{Request, Response};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

type Sender = SendRequest<Full<Bytes>>;

/// An idle connection older than this is closed rather than used: the upstream may be about
/// to close it (servers' keep-alive timeouts are commonly 60–120 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The most idle connections a thread keeps to one upstream; the oldest go first.
const MAX_IDLE: usize = 256;

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
    sender: Sender,
    since: Instant,
}

/// A connection in use: it returns to its pool when the response body has been read to its
/// end ([`Lease::release`]); dropped before that, it closes (HTTP/1 cannot reuse a connection
/// whose answer was not read).
pub struct Lease {
    sender: Sender,
    pool: Arc<Pool>,
}

impl Lease {
    fn new(sender: Sender, pool: &Arc<Pool>) -> Self {
        Self {
            sender,
            pool: pool.clone(),
        }
    }

    pub fn release(self) {
        self.pool.put(self.sender);
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
    /// The most recently used idle connection that is ready for a request; closed and
    /// expired ones met on the way are dropped.
    fn take(&self) -> Option<Sender> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some(Idle { sender, since }) = idle.pop_back() {
            if sender.is_ready() && since.elapsed() < IDLE_TIMEOUT {
                return Some(sender);
            }
            // Not ready: closed, or (rarely) its connection has not yet taken in the end of
            // the last answer; either way it is not worth waiting for.
        }
        None
    }

    fn put(&self, sender: Sender) {
        if sender.is_closed() {
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
        idle.push_back(Idle { sender, since: now });
    }
}

impl Http1Pools {
    pub fn new(host: &str, port: u16, connect_timeout: Duration) -> Self {
        let pools = (0..crate::server::workers::slot_count())
            .map(|_| Arc::new(Pool::default()))
            .collect();
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
        while let Some(mut sender) = pool.take() {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, Lease::new(sender, pool))),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(failed.into_error().into()),
                },
            }
        }
        let mut sender = self.connect().await?;
        let response = sender.send_request(request).await?;
        Ok((response, Lease::new(sender, pool)))
    }

    /// A new connection, driven by a task on the calling thread.
    async fn connect(&self) -> Result<Sender, SendError> {
        let stream = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| SendError::Connect(std::io::ErrorKind::TimedOut.into()))?
        .map_err(SendError::Connect)?;
        stream.set_nodelay(true).map_err(SendError::Connect)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}
