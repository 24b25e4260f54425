//! The proxy listener is served by `listen.proxy_threads` threads, each running its own
//! single-threaded event loop, as nginx's workers do: a connection stays on the thread that
//! accepted it, and so do the upstream connections its requests use (each thread has its own
//! pools, see [`current_slot`]). A request then goes from client to upstream and back without
//! waking another thread; on tokio's shared work-stealing pool every request paid for several
//! cross-thread wake-ups (futex calls) and lost its caches. Everything else (status, admin,
//! reloads, log writers, the store) runs on the main runtime.
//!
//! Whichever thread wakes first for a new connection accepts it, and one that drains the
//! accept queue took a burst of connections whole: under a load of 16 keep-alive clients one
//! thread often served all 16 and the other none. So a thread that accepts a connection while
//! another serves fewer hands it over ([`Handoff`]): connections stay spread within one of
//! each other, at the price of one cross-thread wake-up per handed-over connection (never
//! per request).

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

thread_local! {
    /// 0 on every thread but the proxy threads, which are numbered from 1.
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// How many upstream connection pools each upstream keeps: one per proxy thread and one for
/// every other thread. Raised (never lowered) before the config is compiled.
static SLOTS: AtomicUsize = AtomicUsize::new(1);

/// Makes room for `proxy_threads` proxy threads in the upstream clients compiled from now on.
pub fn reserve_slots(proxy_threads: usize) {
    SLOTS.fetch_max(proxy_threads + 1, Ordering::Relaxed);
}

/// How many per-thread clients an upstream built now holds.
pub fn slot_count() -> usize {
    SLOTS.load(Ordering::Relaxed)
}

/// The calling thread's pool index: its proxy thread number, or 0.
pub fn current_slot() -> usize {
    SLOT.with(Cell::get)
}

/// The live connections of each proxy thread, and the way to hand one to another thread.
#[derive(Debug)]
struct Balancer {
    live: Box<[AtomicUsize]>,
    inboxes: Box<[mpsc::UnboundedSender<(std::net::TcpStream, LiveConnection)>]>,
}

impl Balancer {
    /// Counts a connection on thread `index` until the returned guard drops.
    fn claim(self: &Arc<Self>, index: usize) -> LiveConnection {
        self.live[index].fetch_add(1, Ordering::Relaxed);
        LiveConnection {
            balancer: self.clone(),
            index,
        }
    }

    /// The thread that serves fewest connections, `own` on a tie.
    fn least_busy(&self, own: usize) -> usize {
        let load = |i: usize| self.live[i].load(Ordering::Relaxed);
        (0..self.live.len()).fold(own, |best, i| if load(i) < load(best) { i } else { best })
    }
}

/// One connection counted against the thread serving it; uncounted when dropped.
#[derive(Debug)]
pub struct LiveConnection {
    balancer: Arc<Balancer>,
    index: usize,
}

impl Drop for LiveConnection {
    fn drop(&mut self) {
        self.balancer.live[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

/// A proxy thread's side of the balancing: the connections other threads handed to it, and
/// the others' counts.
#[derive(Debug)]
pub struct Handoff {
    balancer: Arc<Balancer>,
    index: usize,
    inbox: mpsc::UnboundedReceiver<(std::net::TcpStream, LiveConnection)>,
}

/// Where a connection this thread accepted is served.
pub enum Placed {
    /// Here, counted.
    Here(tokio::net::TcpStream, LiveConnection),
    /// Not by this thread: handed to one serving fewer (or closed, in the rare case the
    /// socket could not leave this event loop).
    Away,
}

impl Handoff {
    /// Keeps `stream` or hands it to the thread serving fewest connections.
    pub fn place(&self, stream: tokio::net::TcpStream) -> Placed {
        let target = self.balancer.least_busy(self.index);
        if target == self.index {
            return Placed::Here(stream, self.balancer.claim(self.index));
        }
        // Off this thread's event loop; the target registers it with its own.
        let Ok(std_stream) = stream.into_std() else {
            return Placed::Away;
        };
        match self.balancer.inboxes[target].send((std_stream, self.balancer.claim(target))) {
            Ok(()) => Placed::Away,
            // The target has stopped (shutting down): serve it here after all.
            Err(mpsc::error::SendError((std_stream, _))) => {
                match tokio::net::TcpStream::from_std(std_stream) {
                    Ok(stream) => Placed::Here(stream, self.balancer.claim(self.index)),
                    Err(_) => Placed::Away,
                }
            }
        }
    }

    /// The next connection another thread handed over, on this thread's event loop.
    pub async fn next(&mut self) -> Option<(tokio::net::TcpStream, LiveConnection)> {
        loop {
            let (std_stream, counted) = self.inbox.recv().await?;
            // Fails only if the descriptor cannot join this event loop; the client sees a
            // closed connection, as for a failed accept.
            if let Ok(stream) = tokio::net::TcpStream::from_std(std_stream) {
                return Some((stream, counted));
            }
        }
    }
}

/// The proxy threads: each accepts on its own clone of the listening socket and drives
/// `serve(listener, handoff)` (its accept loop and the connections it accepts), then keeps
/// running what its connections left (streams finishing, settlements) until
/// [`ProxyThreads::stop`].
pub struct ProxyThreads {
    threads: Vec<JoinHandle<()>>,
    done: CancellationToken,
}

impl ProxyThreads {
    pub fn start<F, Fut>(
        count: usize,
        listener: std::net::TcpListener,
        serve: F,
    ) -> std::io::Result<Self>
    where
        F: Fn(tokio::net::TcpListener, Handoff) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        listener.set_nonblocking(true)?;
        let done = CancellationToken::new();
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..count).map(|_| mpsc::unbounded_channel()).unzip();
        let balancer = Arc::new(Balancer {
            live: (0..count).map(|_| AtomicUsize::new(0)).collect(),
            inboxes: senders.into_boxed_slice(),
        });
        let mut threads = Vec::with_capacity(count);
        for (i, inbox) in receivers.into_iter().enumerate() {
            // Cloned here, so a failure stops the start rather than leaving a thread deaf.
            let listener = listener.try_clone()?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let serve = serve.clone();
            let done = done.clone();
            let handoff = Handoff {
                balancer: balancer.clone(),
                index: i,
                inbox,
            };
            let thread = std::thread::Builder::new()
                .name(format!("tollgate-proxy-{i}"))
                .spawn(move || {
                    SLOT.with(|slot| slot.set(i + 1));
                    runtime.block_on(async move {
                        let serving = async {
                            match tokio::net::TcpListener::from_std(listener) {
                                Ok(listener) => serve(listener, handoff).await,
                                Err(error) => {
                                    tracing::error!(%error, "a proxy thread cannot listen")
                                }
                            }
                            std::future::pending::<()>().await
                        };
                        // `done` also ends a thread whose gateway was dropped while serving.
                        tokio::select! {
                            () = serving => {}
                            () = done.cancelled() => {}
                        }
                    });
                })?;
            threads.push(thread);
        }
        Ok(Self { threads, done })
    }

    /// Ends the threads' event loops (tasks still on them are dropped) and waits for them.
    pub async fn stop(mut self) {
        self.done.cancel();
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// A gateway dropped while serving (its `run` future dropped) closes its listener too.
impl Drop for ProxyThreads {
    fn drop(&mut self) {
        self.done.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::conn::{self, ConnLimits, ListenerLimits, Shutdown};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::task::TaskTracker;

    /// A request on `stream`; the answer's body names the proxy thread that served it.
    async fn serving_thread(stream: &mut tokio::net::TcpStream) -> usize {
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !answer.ends_with(b"\r\n\r\n1") && !answer.ends_with(b"\r\n\r\n2") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&answer));
            answer.extend_from_slice(&buf[..n]);
        }
        (answer[answer.len() - 1] - b'0') as usize
    }

    #[tokio::test]
    async fn connections_are_spread_over_the_threads_whichever_accepts_them() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown {
            graceful: tokio_util::sync::CancellationToken::new(),
            hard: tokio_util::sync::CancellationToken::new(),
        };
        let limits = ListenerLimits::new(ConnLimits {
            header_read: Duration::from_secs(5),
            keepalive_idle: Duration::from_secs(60),
            send: Duration::from_secs(60),
            max_connections: 100,
            max_head: 64 * 1024,
        });
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(|| async { current_slot().to_string() }),
        );
        let graceful = shutdown.graceful.clone();
        let threads = ProxyThreads::start(2, listener, move |listener, handoff| {
            let (app, limits, shutdown) = (app.clone(), limits.clone(), shutdown.clone());
            conn::serve(
                "proxy",
                listener,
                app,
                limits,
                shutdown,
                TaskTracker::new(),
                None,
                Some(handoff),
            )
        })
        .unwrap();
        // Each connection opens once the one before is served (and counted): whichever
        // thread wakes for it, it goes to the thread serving fewer.
        let mut open = Vec::new();
        let mut served = [0usize; 3];
        for _ in 0..8 {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            served[serving_thread(&mut stream).await] += 1;
            open.push(stream);
        }
        assert_eq!(served, [0, 4, 4], "connections served by thread 1 and 2");
        // A handed-over connection keeps its thread for its next requests.
        for stream in &mut open {
            let first = serving_thread(stream).await;
            assert_eq!(serving_thread(stream).await, first);
        }
        graceful.cancel();
        threads.stop().await;
    }
}
