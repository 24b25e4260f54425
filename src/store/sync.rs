//! Keeps this node's snapshot in step with the store: on PostgreSQL's notification of a write,
//! on a poll of the store's revision (which also covers lost notifications and SQLite), and
//! right after this node's own admin writes. Only the rows above the revision this node has
//! are read. The database being away changes nothing for requests: the last snapshot keeps
//! serving and the node catches up when it returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use super::{CHANNEL, Store, StoreError, StoreKind};
use crate::state::AppState;

/// How long after a wake that found nothing to look once more.
const LOOK_AGAIN_AFTER: Duration = Duration::from_millis(100);

/// How often last-used times go to the store.
const LAST_USED_EVERY: Duration = Duration::from_secs(10);

/// The store as this node follows it.
pub struct StoreSync {
    pub store: Store,
    poll: Duration,
    wake: Notify,
    /// One catch-up at a time (the poll, a notification or an admin write).
    catching_up: Mutex<()>,
    /// The store was read in full once: until then the node is not ready.
    loaded: AtomicBool,
    /// The last contact with the database worked.
    reachable: AtomicBool,
}

impl StoreSync {
    pub fn new(store: Store, poll: Duration) -> Self {
        Self {
            store,
            poll,
            wake: Notify::new(),
            catching_up: Mutex::new(()),
            loaded: AtomicBool::new(false),
            reachable: AtomicBool::new(false),
        }
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::SeqCst)
    }

    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::SeqCst)
    }

    /// Reads what was written since this node's revision and compiles it in. Returns the
    /// revision the snapshot has afterwards.
    pub async fn catch_up(&self, state: &Arc<AppState>) -> Result<i64, StoreError> {
        let _one = self.catching_up.lock().await;
        let have = state.store_revision();
        let changes = self.store.changes_since(have).await;
        self.reachable.store(changes.is_ok(), Ordering::SeqCst);
        let changes = changes?;
        let head = changes.head;
        if head != have || !self.is_loaded() {
            state.apply_store_changes(changes).await;
        }
        self.loaded.store(true, Ordering::SeqCst);
        Ok(head)
    }

    /// Writes the keys' last-used times that moved since the last flush.
    async fn flush_last_used(
        &self,
        state: &AppState,
        flushed: &mut std::collections::HashMap<String, i64>,
    ) {
        let snapshot = state.snapshot();
        let used: Vec<(String, i64)> = snapshot
            .managed_keys()
            .filter_map(|k| {
                let at = k.last_used_ms.load(Ordering::Relaxed);
                (at > 0 && flushed.get(&k.id).is_none_or(|f| *f < at)).then(|| (k.id.clone(), at))
            })
            .collect();
        if used.is_empty() {
            return;
        }
        match self.store.record_last_used(&used).await {
            Ok(()) => flushed.extend(used),
            Err(e) => tracing::debug!(error = %e, "last-used times not written; retried later"),
        }
    }
}

/// Starts following the store: the poll loop and, on PostgreSQL, the notification listener.
pub fn spawn(state: Arc<AppState>, sync: Arc<StoreSync>, stop: CancellationToken) {
    if sync.store.kind() == StoreKind::Postgres {
        tokio::spawn(listen(sync.clone(), stop.clone()));
    }
    let watcher = match sync.store.kind() {
        StoreKind::Sqlite => watch_sqlite_file(&sync),
        StoreKind::Postgres => None,
    };
    tokio::spawn(async move {
        // Watching as long as following.
        let _watcher = watcher;
        let mut was_down = false;
        let mut flushed = std::collections::HashMap::new();
        let mut last_flush = tokio::time::Instant::now();
        // After a wake that found nothing new, one more look a moment later: SQLite's
        // writer touches the log file (the event) just before it publishes the commit to
        // readers (in the shared-memory index, which makes no event).
        let mut look_again = false;
        loop {
            let before = state.store_revision();
            match sync.catch_up(&state).await {
                Ok(head) if look_again && head == before => {
                    tokio::time::sleep(LOOK_AGAIN_AFTER).await;
                    look_again = false;
                    continue;
                }
                Ok(_) if was_down => {
                    was_down = false;
                    tracing::info!(
                        store = sync.store.display_url(),
                        "the store is reachable again: caught up"
                    );
                }
                Ok(_) => {}
                Err(e) if !was_down => {
                    was_down = true;
                    tracing::error!(store = sync.store.display_url(), error = %e, "the store is unreachable: serving the last snapshot, admin writes refused");
                }
                Err(_) => {}
            }
            if last_flush.elapsed() >= LAST_USED_EVERY && !was_down {
                sync.flush_last_used(&state, &mut flushed).await;
                last_flush = tokio::time::Instant::now();
            }
            look_again = false;
            tokio::select! {
                () = sync.wake.notified() => look_again = true,
                () = tokio::time::sleep(sync.poll) => {}
                () = stop.cancelled() => {
                    sync.flush_last_used(&state, &mut flushed).await;
                    return;
                }
            }
        }
    });
}

/// SQLite: a commit by another process on the same file (its write-ahead log changes) wakes
/// the poll loop at once.
fn watch_sqlite_file(sync: &Arc<StoreSync>) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let path = sync.store.sqlite_path()?;
    let dir = path.parent()?.to_path_buf();
    let name = path.file_name()?.to_os_string();
    let waker = sync.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let ours = event.is_ok_and(|e| {
            !e.kind.is_access()
                && e.paths.iter().any(|p| {
                    p.file_name()
                        .is_some_and(|f| f.to_string_lossy().starts_with(&*name.to_string_lossy()))
                })
        });
        if ours {
            waker.wake.notify_one();
        }
    })
    .inspect_err(|e| tracing::debug!(error = %e, "cannot watch the SQLite store; polling only"))
    .ok()?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .inspect_err(|e| tracing::debug!(error = %e, "cannot watch the SQLite store; polling only"))
        .ok()?;
    Some(watcher)
}

/// PostgreSQL `LISTEN`: every commit of another node wakes the poll loop at once. Reconnects
/// by itself; the poll covers whatever is missed meanwhile.
async fn listen(sync: Arc<StoreSync>, stop: CancellationToken) {
    let url = sync.store.url_with_secret();
    loop {
        let session = async {
            let mut listener = sqlx::postgres::PgListener::connect(url).await?;
            listener.listen(CHANNEL).await?;
            // Anything written while this listener was away.
            sync.wake.notify_one();
            loop {
                listener.recv().await?;
                sync.wake.notify_one();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            result = session => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "store notifications interrupted; reconnecting");
                }
            }
            () = stop.cancelled() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = stop.cancelled() => return,
        }
    }
}
