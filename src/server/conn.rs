//! Accepting client connections so that no client can hold the gateway: a request head must
//! arrive within `header_read_timeout` of its first byte, an idle keep-alive connection is
//! closed after `keepalive_idle`, each listener has its own cap on open connections (past it a
//! new connection gets a 503 and is closed), accept failures are logged (rate-limited) and
//! backed off, and the process's file-descriptor limit is raised to the hard limit at start.
//!
//! HTTP/1.x connections, plain or TLS, are served by the gateway's own loop ([`super::h1`]);
//! HTTP/2 (by ALPN or with prior knowledge) and TLS without ALPN by hyper. hyper's own header timer also runs
//! between keep-alive requests, so it cannot tell "slow head" from "idle"; for hyper the
//! timers live in an IO wrapper that knows, from a per-connection request count, whether a
//! request is being answered (then no client timer runs: the body timeout is the handler's,
//! the stream's are the upstream's).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;
use tower_service::Service;

use super::workers::{LiveConnection, Placed};

/// The client-facing timeouts and the connection cap of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub header_read: Duration,
    pub keepalive_idle: Duration,
    /// A write that makes no progress for this long closes the connection.
    pub send: Duration,
    pub max_connections: usize,
    /// The most bytes a request head may take before it is refused (431) unread.
    pub max_head: usize,
}

/// A listener's limits and its count of open connections, shared by every thread that
/// accepts on it (the cap is the listener's, not each thread's).
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    pub conn: ConnLimits,
    open: Arc<Semaphore>,
}

impl ListenerLimits {
    pub fn new(conn: ConnLimits) -> Self {
        let open = Arc::new(Semaphore::new(conn.max_connections.max(1)));
        Self { conn, open }
    }
}

/// How the serving of one listener ends: `graceful` stops accepting and lets requests in
/// flight finish; `hard` closes every connection now (dropping their responses, so streams
/// in flight are logged and settled as cut).
#[derive(Clone)]
pub struct Shutdown {
    pub graceful: CancellationToken,
    pub hard: CancellationToken,
}

/// Raises the soft limit on open files to the hard limit, so that a flood of connections
/// meets the connection cap (a clear 503) long before the process runs out of descriptors.
pub fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

type AppRequest = hyper::Request<Body>;
type AppResponse = hyper::Response<Body>;
type Never = std::convert::Infallible;

/// What a listener serves: a router (status, admin), or the proxy's one handler. (A trait
/// alias: the blanket impl below names the same bounds.)
pub trait App:
    Service<AppRequest, Response = AppResponse, Error = Never, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<A> App for A where
    A: Service<AppRequest, Response = AppResponse, Error = Never, Future: Send + 'static>
        + Clone
        + Send
        + 'static
{
}

/// Serves `app` on `listener` until `shutdown.graceful`; connection tasks go on `tracker`.
/// A proxy thread passes its `handoff`: it then serves the connections other threads hand it
/// too, and hands over those it accepts while another thread serves fewer.
#[allow(clippy::too_many_arguments)]
pub async fn serve<A: App>(
    name: &'static str,
    listener: TcpListener,
    app: A,
    limits: ListenerLimits,
    shutdown: Shutdown,
    tracker: TaskTracker,
    tls: Option<Arc<super::tls::TlsServer>>,
    mut handoff: Option<super::workers::Handoff>,
) {
    let (slots, limits) = (limits.open, limits.conn);
    let mut warn_accept = RateLimitedWarning::default();
    let mut warn_full = RateLimitedWarning::default();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The head timer is ours (see the module docs); h2 pings keep idle peers honest.
    builder.http1().header_read_timeout(None).keep_alive(true);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    loop {
        let next = tokio::select! {
            accepted = listener.accept() => Next::Accepted(accepted.map(|(stream, _peer)| stream)),
            Some((stream, counted)) = async {
                match handoff.as_mut() {
                    Some(handoff) => handoff.next().await,
                    None => std::future::pending().await,
                }
            } => Next::HandedOver(stream, counted),
            () = shutdown.graceful.cancelled() => return,
        };
        let (stream, counted) = match next {
            Next::HandedOver(stream, counted) => (stream, Some(counted)),
            Next::Accepted(Ok(stream)) => match &handoff {
                None => (stream, None),
                Some(handoff) => match handoff.place(stream) {
                    Placed::Here(stream, counted) => (stream, Some(counted)),
                    Placed::Away => continue,
                },
            },
            Next::Accepted(Err(error)) => {
                warn_accept.warn(|suppressed| {
                    tracing::error!(listener = name, %error, suppressed, "cannot accept a connection");
                });
                // Out of descriptors or memory: give the connections in flight time to finish.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        // Streams are many small writes: without TCP_NODELAY, Nagle's algorithm and delayed
        // ACKs hold chunks back for up to 40 ms each.
        let _ = stream.set_nodelay(true);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn_full.warn(|suppressed| {
                tracing::warn!(
                    listener = name,
                    max_connections = limits.max_connections,
                    suppressed,
                    "connection limit reached: new connections get 503"
                );
            });
            tracker.spawn(refuse(stream));
            continue;
        };
        let app = app.clone();
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let tls = tls.clone();
        tracker.spawn(async move {
            let hyper_service = |stream, app| {
                let activity = Arc::new(Activity::default());
                let io = TimedIo::new(stream, limits, activity.clone());
                let service = CountingService {
                    app,
                    activity,
                    client_cert: None,
                };
                (io, service)
            };
            match tls {
                None => match protocol(&stream, limits, &shutdown).await {
                    Some(Protocol::Http1) => {
                        super::h1::serve(stream.into_split(), app, limits, &shutdown, None).await
                    }
                    Some(Protocol::Http2) => {
                        let (io, service) = hyper_service(stream, app);
                        serve_io(&builder, TokioIo::new(io), service, &shutdown).await
                    }
                    None => {}
                },
                Some(tls) => {
                    let (io, mut service) = hyper_service(stream, app);
                    // The handshake gets the time a request head gets; the config in force
                    // now serves this connection to its end.
                    let accepted =
                        tokio::time::timeout(limits.header_read, tls.acceptor().accept(io)).await;
                    match accepted {
                        Ok(Ok(mut stream)) => {
                            // Verified by the handshake against listen.tls.client_ca.
                            let client_cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .map(|leaf| {
                                    Arc::new(crate::auth::ClientCertificate::from_der(leaf))
                                });
                            // HTTP/1.1 by ALPN is served like a plain connection (with its own
                            // timers: the wrapper's step aside); HTTP/2, or no ALPN, by hyper.
                            if stream.get_ref().1.alpn_protocol() == Some(b"http/1.1") {
                                stream.get_mut().0.step_aside();
                                let halves = tokio::io::split(stream);
                                super::h1::serve(
                                    halves,
                                    service.app,
                                    limits,
                                    &shutdown,
                                    client_cert,
                                )
                                .await
                            } else {
                                service.client_cert = client_cert;
                                serve_io(&builder, TokioIo::new(stream), service, &shutdown).await
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(listener = name, error = %e, "TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(listener = name, "TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
            drop(counted);
        });
    }
}

/// Which HTTP a plain connection speaks, from its first bytes (looked at, not taken):
/// HTTP/2 with prior knowledge opens with its preface. `None` when the client closed or sent
/// nothing in time.
async fn protocol(stream: &TcpStream, limits: ConnLimits, shutdown: &Shutdown) -> Option<Protocol> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0";
    let mut first = [0u8; PREFACE.len()];
    let wait = limits.header_read.min(limits.keepalive_idle);
    let peeked = tokio::select! {
        peeked = tokio::time::timeout(wait, stream.peek(&mut first)) => peeked,
        // A stopping gateway does not wait for a connection that has said nothing yet.
        () = shutdown.graceful.cancelled() => return None,
    };
    match peeked {
        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => None,
        // A short first read that could still be the preface goes to hyper, which serves
        // both.
        Ok(Ok(n)) if PREFACE.starts_with(&first[..n]) => Some(Protocol::Http2),
        Ok(Ok(_)) => Some(Protocol::Http1),
    }
}

enum Protocol {
    Http1,
    Http2,
}

/// What the accept loop woke for.
enum Next {
    Accepted(io::Result<TcpStream>),
    HandedOver(TcpStream, LiveConnection),
}

/// One connection, plain or TLS, until it ends or the shutdown cuts it.
async fn serve_io<I, A: App>(
    builder: &auto::Builder<TokioExecutor>,
    io: TokioIo<I>,
    service: CountingService<A>,
    shutdown: &Shutdown,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder.serve_connection(io, hyper_util::service::TowerToHyperService::new(service));
    tokio::pin!(conn);
    let mut stop = StopWatch::new(shutdown);
    let mut draining = false;
    std::future::poll_fn(|cx| {
        match stop.poll(cx) {
            Stop::Hard => return Poll::Ready(()),
            Stop::Graceful if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            _ => {}
        }
        conn.as_mut().poll(cx).map(|_| ())
    })
    .await
}

/// What the shutdown asks of a connection.
pub(super) enum Stop {
    Running,
    /// Finish the request under way, take no other.
    Graceful,
    /// Close now.
    Hard,
}

/// The shutdown tokens, looked at only when one of them fired: a connection's task wakes for
/// every event of a stream, and polling both tokens each time cost ~700 instructions.
pub(super) struct StopWatch {
    signal: Arc<ShutdownSignal>,
    graceful: Pin<Box<WaitForCancellationFutureOwned>>,
    hard: Pin<Box<WaitForCancellationFutureOwned>>,
    seen: Stop,
}

impl StopWatch {
    pub(super) fn new(shutdown: &Shutdown) -> Self {
        Self {
            signal: Arc::new(ShutdownSignal {
                // Look at the tokens on the first poll.
                fired: AtomicBool::new(true),
                task: AtomicWaker::new(),
            }),
            graceful: Box::pin(shutdown.graceful.clone().cancelled_owned()),
            hard: Box::pin(shutdown.hard.clone().cancelled_owned()),
            seen: Stop::Running,
        }
    }

    /// What the shutdown asks now; the task is woken when that changes.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) -> &Stop {
        self.signal.task.register(cx.waker());
        if self.signal.fired.swap(false, Ordering::AcqRel) {
            let waker = futures_util::task::waker_ref(&self.signal);
            let mut tokens = Context::from_waker(&waker);
            if self.hard.as_mut().poll(&mut tokens).is_ready() {
                self.seen = Stop::Hard;
            } else if self.graceful.as_mut().poll(&mut tokens).is_ready() {
                self.seen = Stop::Graceful;
            }
        }
        &self.seen
    }

    /// Whether a shutdown has begun (as of the last poll).
    pub(super) fn stopping(&self) -> bool {
        !matches!(self.seen, Stop::Running)
    }
}

/// Wakes a connection's task when a shutdown token fires, and remembers that it did.
struct ShutdownSignal {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl futures_util::task::ArcWake for ShutdownSignal {
    fn wake_by_ref(this: &Arc<Self>) {
        this.fired.store(true, Ordering::Release);
        this.task.wake();
    }
}

/// The answer to a connection over the cap: a 503 in OpenAI's error shape, then close.
async fn refuse(mut stream: TcpStream) {
    const BODY: &str = r#"{"error":{"message":"the gateway has too many open connections; try again shortly","type":"api_error","param":null,"code":"too_many_connections"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Logs at most once a second, saying how many were left out in between.
#[derive(Default)]
struct RateLimitedWarning {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedWarning {
    fn warn(&mut self, log: impl FnOnce(u64)) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return;
        }
        log(self.suppressed);
        self.suppressed = 0;
        self.last = Some(now);
    }
}

/// What a connection's IO needs to know of its requests.
#[derive(Default)]
struct Activity {
    /// Requests being answered (their response bodies not yet done).
    in_flight: AtomicUsize,
    /// Requests answered: a change means the connection went back to waiting.
    answered: AtomicU64,
    /// The connection's reader, parked while a request was in flight: woken when the last
    /// one ends, so that the idle timer is armed (hyper reads before it writes the end).
    reader: AtomicWaker,
}

/// Counts a connection's requests in flight, from head to the end of the response body.
#[derive(Clone)]
struct CountingService<A> {
    app: A,
    activity: Arc<Activity>,
    /// The verified client certificate of a TLS connection, given to each of its requests.
    client_cert: Option<Arc<crate::auth::ClientCertificate>>,
}

impl<A: App> Service<hyper::Request<Incoming>> for CountingService<A> {
    type Response = AppResponse;
    type Error = Never;
    type Future = Counted<A::Future>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: hyper::Request<Incoming>) -> Self::Future {
        self.activity.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlightGuard(self.activity.clone());
        let mut request = request.map(Body::new);
        if let Some(cert) = &self.client_cert {
            request.extensions_mut().insert(cert.clone());
        }
        Counted {
            call: self.app.call(request),
            guard: Some(guard),
        }
    }
}

pin_project_lite::pin_project! {
    /// The app's answer, its body carrying the request's count (a named future rather than
    /// a boxed `async` block: one allocation and one move less a request).
    struct Counted<F> {
        #[pin]
        call: F,
        guard: Option<InFlightGuard>,
    }
}

impl<F> Future for Counted<F>
where
    F: Future<Output = Result<AppResponse, Never>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = ready!(this.call.poll(cx));
        // hyper writes the header map only.
        crate::proxy::AnswerHeaders::merge(&mut response);
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|body| {
            Body::new(TrackedBody {
                body,
                _guard: guard,
            })
        })))
    }
}

struct InFlightGuard(Arc<Activity>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.answered.fetch_add(1, Ordering::SeqCst);
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.reader.wake();
        }
    }
}

/// A response body that keeps its request counted until hyper is done with it.
struct TrackedBody {
    body: Body,
    _guard: Option<InFlightGuard>,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A TCP stream with the client timers: while no request is in flight, the connection must
/// start a head within `header_read` (new connection) or `keepalive_idle` (after an answer),
/// and finish it within `header_read` of its first byte.
struct TimedIo {
    inner: TcpStream,
    limits: ConnLimits,
    activity: Arc<Activity>,
    deadline: Pin<Box<Sleep>>,
    /// `answered` when the deadline was last armed for waiting.
    seen_answered: u64,
    /// Bytes of a head have arrived since the connection last went back to waiting.
    head_started: bool,
    /// HTTP/2: frames flow without requests (pings, settings); only the idle timer applies.
    http2: bool,
    first_read: bool,
    /// Armed while a write makes no progress (see [`ConnLimits::send`]).
    write_stall: Option<Pin<Box<Sleep>>>,
    /// No timers: the connection is served by a loop that keeps its own ([`super::h1`]).
    aside: bool,
}

impl TimedIo {
    fn new(inner: TcpStream, limits: ConnLimits, activity: Arc<Activity>) -> Self {
        let first = limits.header_read.min(limits.keepalive_idle);
        Self {
            inner,
            limits,
            activity,
            deadline: Box::pin(tokio::time::sleep(first)),
            seen_answered: 0,
            head_started: false,
            http2: false,
            first_read: true,
            write_stall: None,
            aside: false,
        }
    }

    /// Leaves the timers to the HTTP/1.1 loop serving this connection.
    fn step_aside(&mut self) {
        self.aside = true;
    }

    fn rearm(&mut self, after: Duration) {
        let at = tokio::time::Instant::now() + after;
        self.deadline.as_mut().reset(at);
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.aside {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let waiting = this.activity.in_flight.load(Ordering::SeqCst) == 0;
        if waiting {
            let answered = this.activity.answered.load(Ordering::SeqCst);
            if answered != this.seen_answered {
                // An answer just finished: the keep-alive wait starts now.
                this.seen_answered = answered;
                this.head_started = false;
                this.rearm(this.limits.keepalive_idle);
            }
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if this.first_read && !read.is_empty() {
                    this.first_read = false;
                    this.http2 = read.starts_with(b"PRI ");
                }
                if waiting && !read.is_empty() && !this.head_started && !this.http2 {
                    this.head_started = true;
                    this.rearm(this.limits.header_read);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if waiting {
                    ready!(this.deadline.as_mut().poll(cx));
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client timed out",
                    )));
                }
                this.activity.reader.register(cx.waker());
                if this.activity.in_flight.load(Ordering::SeqCst) == 0 {
                    // The last request ended in between: come back to arm the timer.
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
        }
    }
}

impl TimedIo {
    /// A write that made no progress: the client must take some of it within `send`.
    fn stalled<T>(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if written.is_ready() || self.aside {
            self.write_stall = None;
            return written;
        }
        let send = self.limits.send;
        let stall = self
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(send)));
        ready!(stall.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading",
        )))
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.stalled(cx, written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.stalled(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
