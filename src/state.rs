//! The state every request shares: the current config snapshot (swapped atomically on
//! reload), the request log, the metrics and traces, and the gateway's lifecycle flags.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use std::sync::Mutex;

use crate::config::{self, ConfigErrors};
use crate::snapshot::{ConfigSource, Snapshot};
use crate::store::sync::StoreSync;
use crate::store::{Changes, StoreContents};
use crate::telemetry::metrics::{Metrics, SinkLabel};
use crate::telemetry::request_log::{RequestLogger, RequestRecord};
use crate::telemetry::traces::Traces;

/// State shared by every request.
pub struct AppState {
    pub(crate) snapshot: ArcSwap<Snapshot>,
    pub(crate) logger: RequestLogger,
    pub metrics: Metrics,
    /// Set up at start-up when the config has `traces` (from this config).
    pub(crate) traces: Option<Traces>,
    pub(crate) traces_config: Option<config::TracesConfig>,
    pub(crate) config_path: PathBuf,
    /// Serving: `/ready` answers 200.
    pub(crate) ready: AtomicBool,
    /// The grace period is over: what is still running is being cut by the gateway.
    pub(crate) cutting: AtomicBool,
    /// What the snapshot is compiled from: the config file and the store's contents. Held
    /// while compiling (on a blocking thread), so that a file reload and a store change
    /// never compile over each other.
    pub(crate) sources: Mutex<Sources>,
    /// The store this node follows, when the config names one.
    pub store: Option<Arc<StoreSync>>,
    /// The latest requests, for the admin API (only when it is on).
    pub recent: Option<crate::telemetry::recent::RecentRequests>,
    /// The console's browser sessions (OIDC sign-in).
    pub console_sessions: crate::admin::ConsoleSessions,
    /// HTTPS on the listeners: its certificates are reloaded with the config's watcher.
    pub tls: Option<Arc<crate::server::tls::TlsServer>>,
}

pub(crate) struct Sources {
    pub file: ConfigSource,
    pub store: StoreContents,
}

impl AppState {
    /// The current config; hold on to it for the whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Whether the gateway is cutting the requests left after the shutdown grace period.
    pub fn is_cutting(&self) -> bool {
        self.cutting.load(Ordering::SeqCst)
    }

    /// Counts a finished request in the metrics and hands its record to the log sinks.
    /// Counts, traces, keeps and writes a finished request's record (by reference: a record
    /// is ~800 bytes, and taking it out of the request's state to pass it on by value was
    /// two copies and a reset).
    pub fn log(&self, snapshot: &Snapshot, record: RequestRecord) {
        self.metrics.observe(&record, snapshot);
        if let Some(traces) = &self.traces {
            traces.record(&record);
        }
        if let Some(recent) = &self.recent {
            recent.push(&record);
        }
        self.logger.emit(record);
    }

    /// The metrics, with the log sinks' queue depths of this moment.
    pub fn render_metrics(&self, openmetrics: bool) -> String {
        for (sink, depth) in self.logger.depths() {
            self.metrics
                .sink_queue
                .get_or_create(&SinkLabel {
                    sink: sink.to_owned(),
                })
                .set(depth as i64);
        }
        self.metrics.render(&self.snapshot(), openmetrics)
    }

    /// Loads, validates and swaps in the config file. On any error the running config stays.
    /// Compiling runs on a blocking thread: a large config never stalls requests.
    pub async fn reload(self: &Arc<Self>) -> Result<(), ConfigErrors> {
        let state = self.clone();
        let result = tokio::task::spawn_blocking(move || state.try_reload())
            .await
            .unwrap_or_else(|e| {
                Err(ConfigErrors(vec![config::ConfigError {
                    file: self.config_path.display().to_string(),
                    location: None,
                    path: None,
                    message: format!("the reload did not finish: {e}"),
                }]))
            });
        self.metrics.reloaded(result.is_ok());
        result
    }

    fn try_reload(&self) -> Result<(), ConfigErrors> {
        let file = ConfigSource::read(&self.config_path)?;
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.snapshot();
        let next = Snapshot::compile_with_store(
            &file.config,
            &sources.store,
            Some(&current),
            &file.origin(),
        )?;
        if file.config.traces != self.traces_config {
            tracing::warn!("`traces` changed: the new settings take effect only after a restart");
        }
        if next.log != current.log {
            tracing::warn!("`log` changed: the new sinks take effect only after a restart");
        }
        if next.listen != current.listen {
            tracing::warn!("`listen` changed: the new addresses take effect only after a restart");
        }
        // (`admin` is compiled into the snapshot and reloads with it; the store does not.)
        if file.config.store != sources.file.config.store {
            tracing::warn!("`store` changed: the new store is used only after a restart");
        }
        sources.file = file;
        retire(self.snapshot.swap(Arc::new(next)));
        Ok(())
    }

    /// The store revision this node has read.
    pub fn store_revision(&self) -> i64 {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .store
            .revision
    }

    /// Applies what the store says changed and compiles it in, off the async workers. A
    /// change that does not compile (a record the file's config no longer allows) is
    /// reported with the record's id and the running snapshot stays.
    pub async fn apply_store_changes(self: &Arc<Self>, changes: Changes) {
        let state = self.clone();
        let compiled = tokio::task::spawn_blocking(move || {
            let mut sources = state.sources.lock().unwrap_or_else(|p| p.into_inner());
            let touched = changes.touched();
            let current = state.snapshot();
            // A few changes are taken into the current snapshot; many (the first load) are
            // compiled with everything else.
            let incremental = current.store_revision > 0 && touched.len() <= INCREMENTAL_MAX;
            let old = incremental.then(|| sources.store.subset(&touched));
            sources.store.apply(changes);
            let next = match old {
                Some(old) => Snapshot::with_store_change(
                    &current,
                    &sources.file.config,
                    &sources.store,
                    &old,
                    &touched,
                )?,
                None => Snapshot::compile_with_store(
                    &sources.file.config,
                    &sources.store,
                    Some(&current),
                    &sources.file.origin(),
                )?,
            };
            retire(state.snapshot.swap(Arc::new(next)));
            Ok::<i64, ConfigErrors>(sources.store.revision)
        })
        .await;
        match compiled {
            Ok(Ok(revision)) => tracing::debug!(revision, "store changes compiled in"),
            Ok(Err(errors)) => {
                for e in &errors.0 {
                    tracing::error!("{e}");
                }
                tracing::error!("store changes NOT applied: the running snapshot stays in force");
            }
            Err(e) => tracing::error!(error = %e, "compiling the store's changes did not finish"),
        }
    }
}

/// Past this many touched records a store change is compiled in full.
const INCREMENTAL_MAX: usize = 10_000;

/// Frees a replaced snapshot on a thread of its own once no request holds it any more: a
/// large config (100k consumers) takes a million frees, which must not land on the async
/// worker that happens to finish the last request using it.
fn retire(old: Arc<Snapshot>) {
    let spawned = std::thread::Builder::new()
        .name("tollgate-retire".into())
        .spawn(move || {
            let mut old = old;
            loop {
                match Arc::try_unwrap(old) {
                    Ok(snapshot) => return drop(snapshot),
                    Err(still_shared) => old = still_shared,
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start a thread to free the old configuration");
    }
}
