//! The proxy listener is served by `listen.proxy_threads` threads, each running its own
//! single-threaded event loop, as nginx's workers do: a connection stays on the thread that
//! accepted it, and so do the upstream connections its requests use (each thread has its own
//! pools, see [`current_slot`]). A request then goes from client to upstream and back without
//! waking another thread; on tokio's shared work-stealing pool every request paid for several
//! cross-thread wake-ups (futex calls) and lost its caches. Everything else (status, admin,
//! reloads, log writers, the store) runs on the main runtime.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

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

/// The proxy threads: each accepts on its own clone of the listening socket and drives
/// `serve(listener)` (its accept loop and the connections it accepts), then keeps running
/// what its connections left (streams finishing, settlements) until [`ProxyThreads::stop`].
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
        F: Fn(tokio::net::TcpListener) -> Fut + Send + Clone + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        listener.set_nonblocking(true)?;
        let done = CancellationToken::new();
        let mut threads = Vec::with_capacity(count);
        for i in 0..count {
            // Cloned here, so a failure stops the start rather than leaving a thread deaf.
            let listener = listener.try_clone()?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let serve = serve.clone();
            let done = done.clone();
            let thread = std::thread::Builder::new()
                .name(format!("tollgate-proxy-{i}"))
                .spawn(move || {
                    SLOT.with(|slot| slot.set(i + 1));
                    runtime.block_on(async move {
                        let serving = async {
                            match tokio::net::TcpListener::from_std(listener) {
                                Ok(listener) => serve(listener).await,
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
