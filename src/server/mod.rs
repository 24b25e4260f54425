//! Listeners and their lifecycle: the proxy listener, the status listener (`/health`,
//! `/ready`), config hot reload, and graceful shutdown that lets streams in flight finish.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub mod conn;
mod h1;
pub mod tls;
pub mod workers;

pub use crate::state::AppState;

use crate::config::{self, ConfigErrors};
use crate::snapshot::{ConfigSource, Snapshot};
use crate::store::sync::StoreSync;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::request_log::{LogSink, RequestLogger};
use crate::telemetry::traces::Traces;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("store {url}: {source}")]
    Store {
        url: String,
        source: crate::store::StoreError,
    },
}

/// A gateway whose listeners are bound, ready to [`run`](Gateway::run).
pub struct Gateway {
    state: Arc<AppState>,
    proxy: TcpListener,
    status: TcpListener,
    /// The admin API, when `listen.admin` is set.
    admin: Option<TcpListener>,
    /// HTTPS, when `listen.tls` is set.
    tls: Option<Arc<tls::TlsServer>>,
    /// Stops the reload watchers (and the servers) at shutdown.
    stop: CancellationToken,
    /// Watching from the moment the config is loaded, so no edit falls in between.
    watcher: crate::reload::ReloadWatcher,
}

impl Gateway {
    /// Loads the config file, binds the listeners it names and starts the request log.
    pub async fn bind(config_path: &Path, sink: LogSink) -> Result<Gateway, StartError> {
        conn::raise_fd_limit();
        let source = ConfigSource::read(config_path)?;
        // Before compiling: each upstream gets a client per proxy thread.
        workers::reserve_slots(source.config.listen.proxy_threads());
        let snapshot = Snapshot::compile_from(&source.config, None, &source.origin())?;
        let config = &source.config;
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let proxy = bind(snapshot.listen.proxy).await?;
        let status = bind(snapshot.listen.status).await?;
        let admin = match snapshot.listen.admin {
            Some(addr) => {
                if !addr.ip().is_loopback() {
                    tracing::warn!(%addr, "the admin API listens beyond this machine: keep that address internal");
                }
                Some(bind(addr).await?)
            }
            None => None,
        };
        // Checked by the compile above; read again here for the listeners.
        let tls = match config.listen.tls() {
            Some(settings) => Some(Arc::new(tls::TlsServer::new(settings).map_err(|e| {
                StartError::Config(ConfigErrors(vec![config::ConfigError {
                    file: config_path.display().to_string(),
                    location: None,
                    path: Some(
                        config::FieldPath::root()
                            .key("listen")
                            .key("tls")
                            .key(e.field),
                    ),
                    message: e.message,
                }]))
            })?)),
            None => None,
        };
        let store = match store_config(config, config_path) {
            Some(store_config) => {
                let store =
                    crate::store::Store::open(&store_config.url)
                        .await
                        .map_err(|source| StartError::Store {
                            url: crate::store::redact_url(&store_config.url),
                            source,
                        })?;
                Some(Arc::new(StoreSync::new(store, store_config.poll_interval)))
            }
            None => None,
        };
        let metrics = Metrics::new();
        let logger = RequestLogger::start(sink, &snapshot.log, &metrics.sink_dropped).map_err(
            |message| {
                StartError::Config(ConfigErrors(vec![config::ConfigError {
                    file: config_path.display().to_string(),
                    location: None,
                    path: Some(config::FieldPath::root().key("log")),
                    message,
                }]))
            },
        )?;
        let traces = match &config.traces {
            Some(t) => Some(Traces::start(t).map_err(|message| {
                StartError::Config(ConfigErrors(vec![config::ConfigError {
                    file: config_path.display().to_string(),
                    location: None,
                    path: Some(config::FieldPath::root().key("traces")),
                    message,
                }]))
            })?),
            None => None,
        };
        let state = Arc::new(AppState {
            snapshot: ArcSwap::from_pointee(snapshot),
            logger,
            metrics,
            traces,
            traces_config: config.traces.clone(),
            config_path: config::absolute(config_path),
            ready: AtomicBool::new(false),
            cutting: AtomicBool::new(false),
            store: store.clone(),
            recent: admin
                .is_some()
                .then(crate::telemetry::recent::RecentRequests::default),
            console_sessions: Default::default(),
            tls: tls.clone(),
            sources: std::sync::Mutex::new(crate::state::Sources {
                file: source,
                store: Default::default(),
            }),
        });
        let stop = CancellationToken::new();
        if let Some(sync) = store {
            // Start with the store's contents compiled in: keys it holds work from the start.
            sync.catch_up(&state)
                .await
                .map_err(|source| StartError::Store {
                    url: sync.store.display_url().to_owned(),
                    source,
                })?;
            crate::store::sync::spawn(state.clone(), sync, stop.clone());
        }
        let watcher = crate::reload::spawn(state.clone(), stop.clone());
        Ok(Gateway {
            state,
            proxy,
            status,
            admin,
            tls,
            stop,
            watcher,
        })
    }

    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy
            .local_addr()
            .unwrap_or(self.state.snapshot().listen.proxy)
    }

    pub fn status_addr(&self) -> SocketAddr {
        self.status
            .local_addr()
            .unwrap_or(self.state.snapshot().listen.status)
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting and waits up to the configured
    /// grace period for requests and streams in flight. Those still running then are cut: their
    /// records are logged and their reservations settled before this returns, and the log
    /// sinks are flushed.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state;
        let stop = self.stop;
        let watcher = self.watcher;

        let proxy_app = crate::proxy::ProxyService(state.clone());
        let status_app = Router::new()
            .route(
                "/health",
                get(|| async { axum::Json(json!({"status": "ok"})) }),
            )
            .route("/ready", get(ready))
            .route("/targets", get(targets))
            .route("/metrics", get(metrics))
            .with_state(state.clone());

        tracing::info!(proxy = %self.proxy.local_addr()?, status = %self.status.local_addr()?, "tollgate is listening");
        let limits = state.snapshot().limits.clone();
        let proxy_limits = conn::ConnLimits {
            header_read: limits.header_read_timeout,
            keepalive_idle: limits.keepalive_idle,
            send: limits.send_timeout,
            max_connections: limits.max_connections,
            // The pipeline answers heads over `max_headers` itself (logged, in the client's
            // error shape); far over it, the connection refuses them unread.
            max_head: (limits.max_headers.as_u64() as usize)
                .saturating_mul(2)
                .max(16 * 1024),
        };
        // Probes and scrapes need few connections, and a flood on the proxy port never
        // takes theirs.
        let status_limits = conn::ConnLimits {
            max_connections: STATUS_CONNECTIONS,
            ..proxy_limits
        };
        let connections = TaskTracker::new();
        let cut = conn::Shutdown {
            graceful: stop.clone(),
            hard: CancellationToken::new(),
        };
        let tls_for = |listener: config::ListenerName| {
            self.tls
                .as_ref()
                .filter(|t| t.settings().covers(listener))
                .cloned()
        };
        let admin = self.admin.map(|listener| {
            let app = crate::admin::router(state.clone());
            conn::serve(
                "admin",
                listener,
                app,
                conn::ListenerLimits::new(status_limits),
                cut.clone(),
                connections.clone(),
                tls_for(config::ListenerName::Admin),
                None,
            )
        });
        let proxy_threads = {
            let (cut, connections) = (cut.clone(), connections.clone());
            let tls = tls_for(config::ListenerName::Proxy);
            let count = state.snapshot().listen.proxy_threads();
            let limits = conn::ListenerLimits::new(proxy_limits);
            workers::ProxyThreads::start(
                count,
                self.proxy.into_std()?,
                move |listener, handoff| {
                    let (app, limits, cut, connections, tls) = (
                        proxy_app.clone(),
                        limits.clone(),
                        cut.clone(),
                        connections.clone(),
                        tls.clone(),
                    );
                    conn::serve(
                        "proxy",
                        listener,
                        app,
                        limits,
                        cut,
                        connections,
                        tls,
                        Some(handoff),
                    )
                },
            )?
        };
        let accepting = async {
            let admin = async {
                if let Some(admin) = admin {
                    admin.await;
                }
            };
            tokio::join!(
                admin,
                conn::serve(
                    "status",
                    self.status,
                    status_app,
                    conn::ListenerLimits::new(status_limits),
                    cut.clone(),
                    connections.clone(),
                    tls_for(config::ListenerName::Status),
                    None,
                ),
            )
        };
        state.ready.store(true, Ordering::SeqCst);
        tokio::select! {
            _ = accepting => {}
            () = shutdown => {}
        }

        let grace = state.snapshot().limits.shutdown_grace;
        tracing::info!(?grace, "shutting down: waiting for requests in flight");
        state.ready.store(false, Ordering::SeqCst);
        stop.cancel();
        connections.close();
        if tokio::time::timeout(grace, connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = connections.len(),
                "grace period over: closing the remaining connections"
            );
            state.cutting.store(true, Ordering::SeqCst);
            cut.hard.cancel();
            // Dropping their responses logs and settles the streams they carried.
            let _ = tokio::time::timeout(CUT_WAIT, connections.wait()).await;
        }
        drop(watcher);
        state
            .snapshot()
            .rate_limits
            .limiter
            .finish_settling(CUT_WAIT)
            .await;
        state.logger.flush(CUT_WAIT).await;
        if let Some(traces) = &state.traces {
            traces.shutdown().await;
        }
        proxy_threads.stop().await;
        Ok(())
    }
}

/// The status listener's connection allowance.
const STATUS_CONNECTIONS: usize = 256;
/// How long shutdown waits for cut connections, pending settlements and the log sinks.
const CUT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

async fn ready(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, axum::Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not ready"})),
        )
    }
}

/// Prometheus metrics: OpenMetrics when the scraper asks for it, else the classic text format.
async fn metrics(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let openmetrics = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let body = state.render_metrics(openmetrics);
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    ([(axum::http::header::CONTENT_TYPE, content_type)], body)
}

/// The health of every model's targets: state of the circuit (and until when it is open),
/// requests in flight, latency estimate, recent failures.
async fn targets(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    axum::Json(targets_report(&state.snapshot()))
}

/// What `/targets` shows (and the admin API's targets view).
pub(crate) fn targets_report(snapshot: &Snapshot) -> serde_json::Value {
    let now = std::time::Instant::now();
    let models: serde_json::Map<String, serde_json::Value> = snapshot
        .models()
        .map(|model| {
            let targets: Vec<serde_json::Value> = model
                .pool
                .targets
                .iter()
                .map(|t| {
                    let mut report = t.health.report(now);
                    report["provider"] = json!(t.provider_name);
                    report["model"] = json!(t.upstream_model);
                    report["weight"] = json!(t.weight);
                    if let Some(reason) = t.provider.unavailable() {
                        report["state"] = json!("unavailable");
                        report["reason"] = json!(reason);
                    }
                    report
                })
                .collect();
            let strategy = serde_json::to_value(model.pool.strategy).unwrap_or_default();
            (
                model.name.to_string(),
                json!({"strategy": strategy, "targets": targets}),
            )
        })
        .collect();
    json!({ "models": models })
}

/// The store to follow: the one named, or with the admin API on, an SQLite file next to
/// the config. A relative SQLite path is taken from the config file's directory.
fn store_config(config: &config::Config, config_path: &Path) -> Option<config::StoreConfig> {
    let mut store = match (&config.store, config.listen.admin) {
        (Some(store), _) => store.clone(),
        (None, Some(_)) => config::StoreConfig::default_sqlite(),
        (None, None) => return None,
    };
    if let Some(path) = store.url.strip_prefix("sqlite://") {
        let file = path.split('?').next().unwrap_or(path);
        if !file.is_empty() && !file.starts_with(':') && Path::new(file).is_relative() {
            let dir = config::absolute(config_path)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            store.url = format!("sqlite://{}", dir.join(path).display());
        }
    }
    Some(store)
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}
