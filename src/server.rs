//! Listeners and their lifecycle: the proxy listener, the status listener (`/health`,
//! `/ready`), config hot reload, and graceful shutdown that lets streams in flight finish.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::ListenerExt;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{self, ConfigErrors};
use crate::snapshot::Snapshot;
use crate::telemetry::metrics::{Metrics, SinkLabel};
use crate::telemetry::request_log::{LogSink, RequestLogger, RequestRecord};
use crate::telemetry::traces::Traces;

/// State shared by every request.
pub struct AppState {
    snapshot: ArcSwap<Snapshot>,
    logger: RequestLogger,
    pub metrics: Metrics,
    /// Set up at start-up when the config has `traces` (from this config).
    traces: Option<Traces>,
    traces_config: Option<config::TracesConfig>,
    config_path: PathBuf,
    ready: AtomicBool,
}

impl AppState {
    /// The current config; hold on to it for the whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Counts a finished request in the metrics and hands its record to the log sinks.
    pub fn log(&self, snapshot: &Snapshot, record: RequestRecord) {
        self.metrics.observe(&record, snapshot);
        if let Some(traces) = &self.traces {
            traces.record(&record);
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
    pub fn reload(&self) -> Result<(), ConfigErrors> {
        let result = self.try_reload();
        self.metrics.reloaded(result.is_ok());
        result
    }

    fn try_reload(&self) -> Result<(), ConfigErrors> {
        let config = config::load_file(&self.config_path)?;
        let current = self.snapshot();
        let next = Snapshot::compile(&config, Some(&current))
            .map_err(|e| with_file(e, &self.config_path))?;
        if config.traces != self.traces_config {
            tracing::warn!("`traces` changed: the new settings take effect only after a restart");
        }
        if next.log != current.log {
            tracing::warn!("`log` changed: the new sinks take effect only after a restart");
        }
        if next.listen != current.listen {
            tracing::warn!("`listen` changed: the new addresses take effect only after a restart");
        }
        self.snapshot.store(Arc::new(next));
        Ok(())
    }
}

fn with_file(mut errors: ConfigErrors, path: &Path) -> ConfigErrors {
    for e in &mut errors.0 {
        e.file = path.display().to_string();
    }
    errors
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A gateway whose listeners are bound, ready to [`run`](Gateway::run).
pub struct Gateway {
    state: Arc<AppState>,
    proxy: TcpListener,
    status: TcpListener,
    /// Stops the reload watchers (and the servers) at shutdown.
    stop: CancellationToken,
    /// Watching from the moment the config is loaded, so no edit falls in between.
    watcher: crate::reload::ReloadWatcher,
}

impl Gateway {
    /// Loads the config file, binds the listeners it names and starts the request log.
    pub async fn bind(config_path: &Path, sink: LogSink) -> Result<Gateway, StartError> {
        let config = config::load_file(config_path)?;
        let snapshot = Snapshot::compile(&config, None).map_err(|e| with_file(e, config_path))?;
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let proxy = bind(snapshot.listen.proxy).await?;
        let status = bind(snapshot.listen.status).await?;
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
        });
        let stop = CancellationToken::new();
        let watcher = crate::reload::spawn(state.clone(), stop.clone());
        Ok(Gateway {
            state,
            proxy,
            status,
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

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting and waits up to the configured
    /// grace period for requests and streams in flight.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state;
        let stop = self.stop;
        let watcher = self.watcher;

        let proxy_app = Router::new()
            .fallback(crate::proxy::handle)
            .with_state(state.clone());
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
        // Streams are many small writes: without TCP_NODELAY, Nagle's algorithm and delayed
        // ACKs hold chunks back for up to 40 ms each.
        let nodelay = |tcp: &mut tokio::net::TcpStream| {
            let _ = tcp.set_nodelay(true);
        };
        let proxy = axum::serve(self.proxy.tap_io(nodelay), proxy_app)
            .with_graceful_shutdown(stop.clone().cancelled_owned());
        let status = axum::serve(self.status, status_app)
            .with_graceful_shutdown(stop.clone().cancelled_owned());
        let servers =
            async move { tokio::try_join!(proxy.into_future(), status.into_future()).map(|_| ()) };
        tokio::pin!(servers);
        state.ready.store(true, Ordering::SeqCst);

        let result = tokio::select! {
            result = &mut servers => result,
            () = shutdown => {
                let grace = state.snapshot().limits.shutdown_grace;
                tracing::info!(?grace, "shutting down: waiting for requests in flight");
                state.ready.store(false, Ordering::SeqCst);
                stop.cancel();
                match tokio::time::timeout(grace, servers).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!("grace period over: closing the remaining connections");
                        Ok(())
                    }
                }
            }
        };
        stop.cancel();
        drop(watcher);
        if let Some(traces) = &state.traces {
            traces.shutdown().await;
        }
        result
    }
}

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
    let snapshot = state.snapshot();
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
                model.name.clone(),
                json!({"strategy": strategy, "targets": targets}),
            )
        })
        .collect();
    axum::Json(json!({ "models": models }))
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
