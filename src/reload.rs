//! Hot reload: on SIGHUP, and when the config file changes on disk. Either way the new file is
//! validated and compiled first; only a good config is swapped in, and requests in flight keep
//! the snapshot they started with.

use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Editors and config-map updates write a file in several steps: wait for them to settle.
const SETTLE: Duration = Duration::from_millis(200);

/// Keeps the file watcher alive; dropping it stops watching.
pub struct ReloadWatcher {
    _watcher: Option<notify::RecommendedWatcher>,
    /// The directories of the TLS files (outside the config's directory).
    _tls_watchers: Vec<notify::RecommendedWatcher>,
}

pub fn spawn(state: Arc<AppState>, stop: CancellationToken) -> ReloadWatcher {
    let (tx, mut rx) = mpsc::channel::<Trigger>(16);

    let watch = state.snapshot().reload.watch_file;
    let watcher = watch.then(|| watch_dir(&state, tx.clone())).flatten();
    let tls_watchers: Vec<_> = if watch {
        tls_dirs(&state)
            .into_iter()
            .filter_map(|dir| watch_path(dir, tx.clone()))
            .collect()
    } else {
        Vec::new()
    };

    #[cfg(unix)]
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                tracing::warn!("cannot listen for SIGHUP");
                return;
            };
            loop {
                tokio::select! {
                    _ = hup.recv() => { let _ = tx.send(Trigger::Signal).await; }
                    () = stop.cancelled() => return,
                }
            }
        });
    }

    // The baseline is the file as it is now, taken before anything can change it unseen.
    let mut last_digest = file_digest(&state);
    let mut last_tls = tls_digest(&state);
    tokio::spawn(async move {
        loop {
            let trigger = tokio::select! {
                t = rx.recv() => match t { Some(t) => t, None => return },
                () = stop.cancelled() => return,
            };
            // Let the burst of events from one save settle, then reload once.
            tokio::time::sleep(SETTLE).await;
            let mut forced = trigger == Trigger::Signal;
            while let Ok(t) = rx.try_recv() {
                forced |= t == Trigger::Signal;
            }
            // Certificates first: cert-manager rotates them in place, often without any
            // config change.
            let tls = tls_digest(&state);
            if let Some(server) = &state.tls
                && (forced || tls != last_tls)
            {
                last_tls = tls;
                match server.reload() {
                    Ok(()) => tracing::info!(?trigger, "TLS certificate reloaded"),
                    Err(e) => tracing::error!(
                        field = e.field,
                        error = %e,
                        "TLS certificate NOT reloaded: the one in force keeps serving"
                    ),
                }
            }
            let digest = file_digest(&state);
            if !forced && digest == last_digest {
                continue; // another file in the directory changed, or the content is the same
            }
            last_digest = digest;
            match state.reload().await {
                Ok(()) => {
                    tracing::info!(path = %state.config_path().display(), ?trigger, "configuration reloaded")
                }
                Err(errors) => {
                    for e in &errors.0 {
                        tracing::error!("{e}");
                    }
                    tracing::error!(
                        ?trigger,
                        "configuration NOT reloaded: the running configuration stays in force"
                    );
                }
            }
        }
    });

    ReloadWatcher {
        _watcher: watcher,
        _tls_watchers: tls_watchers,
    }
}

/// Watches the config file's directory, not the file: editors and Kubernetes replace the file
/// (rename or symlink swap), which a watch on the file itself would miss.
fn watch_dir(state: &AppState, tx: mpsc::Sender<Trigger>) -> Option<notify::RecommendedWatcher> {
    watch_path(parent_of(state.config_path()), tx)
}

fn parent_of(path: &std::path::Path) -> std::path::PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| ".".into())
}

/// The directories of the TLS files that the config's own watch does not cover.
fn tls_dirs(state: &AppState) -> Vec<std::path::PathBuf> {
    let Some(tls) = &state.tls else {
        return Vec::new();
    };
    let config_dir = parent_of(state.config_path());
    let settings = tls.settings();
    let mut dirs: Vec<std::path::PathBuf> = [
        Some(&settings.cert),
        Some(&settings.key),
        settings.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| parent_of(p))
    .filter(|d| *d != config_dir)
    .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

fn watch_path(
    dir: std::path::PathBuf,
    tx: mpsc::Sender<Trigger>,
) -> Option<notify::RecommendedWatcher> {
    notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            let _ = tx.try_send(Trigger::FileChanged);
        }
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w))
    .inspect_err(|e| tracing::warn!(error = %e, "cannot watch the config file; reload with SIGHUP"))
    .ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Signal,
    FileChanged,
}

/// The TLS files' contents, to tell a rotation from an unrelated change.
fn tls_digest(state: &AppState) -> Option<[u8; 32]> {
    let settings = state.tls.as_ref()?.settings();
    let mut hasher = Sha256::new();
    for path in [
        Some(&settings.cert),
        Some(&settings.key),
        settings.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        hasher.update(std::fs::read(path).unwrap_or_default());
    }
    Some(hasher.finalize().into())
}

fn file_digest(state: &AppState) -> Option<[u8; 32]> {
    std::fs::read(state.config_path())
        .ok()
        .map(|bytes| Sha256::digest(&bytes).into())
}
