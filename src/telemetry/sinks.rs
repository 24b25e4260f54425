//! Where request-log records go besides the caller-chosen sink: a file (reopened on SIGUSR1,
//! for logrotate) and an HTTP endpoint (batched POSTs of JSON arrays, retried with backoff).
//! Every sink has a bounded queue: when it is full the record is dropped and counted, so a
//! slow disk or a dead endpoint never grows memory or slows requests.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::io::AsyncWriteExt;
use tokio::sync::{Notify, mpsc};
use tokio_util::task::TaskTracker;

use crate::config::HttpSinkConfig;
use prometheus_client::encoding::EncodeLabelSet;

/// The `sink` label of the log sinks' metrics (queue depth, records dropped).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

/// One sink's queue of serialized records (one JSON object each, no newline).
pub struct SinkQueue {
    pub name: &'static str,
    tx: mpsc::Sender<Bytes>,
    dropped: Counter,
}

impl SinkQueue {
    fn new(
        name: &'static str,
        capacity: usize,
        dropped: &Family<SinkLabel, Counter>,
    ) -> (Self, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let dropped = dropped
            .get_or_create(&SinkLabel {
                sink: name.to_owned(),
            })
            .clone();
        (Self { name, tx, dropped }, rx)
    }

    pub fn push(&self, line: Bytes) {
        if self.tx.try_send(line).is_err() {
            self.dropped.inc();
        }
    }

    /// Records waiting.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

const FILE_QUEUE: usize = 8192;

pub fn stdout(writers: &TaskTracker, dropped: &Family<SinkLabel, Counter>) -> SinkQueue {
    let (queue, rx) = SinkQueue::new("stdout", FILE_QUEUE, dropped);
    writers.spawn(async move {
        let mut out = tokio::io::stdout();
        write_lines(rx, &mut out).await;
    });
    queue
}

/// Appends to `path`; SIGUSR1 makes it close and reopen the file (after logrotate moved it).
pub fn file(
    writers: &TaskTracker,
    path: PathBuf,
    dropped: &Family<SinkLabel, Counter>,
) -> SinkQueue {
    let (queue, rx) = SinkQueue::new("file", FILE_QUEUE, dropped);
    let reopen = Arc::new(Notify::new());
    #[cfg(unix)]
    {
        let reopen = reopen.clone();
        tokio::spawn(async move {
            let Ok(mut usr1) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
            else {
                return;
            };
            while usr1.recv().await.is_some() {
                reopen.notify_one();
            }
        });
    }
    writers.spawn(async move {
        let mut rx = rx;
        loop {
            let mut file = match tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .await
            {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot open the request log file");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    continue;
                }
            };
            if !write_lines_until(&mut rx, &mut file, &reopen).await {
                return;
            }
            tracing::info!(path = %path.display(), "reopening the request log file");
        }
    });
    queue
}

/// Writes until the channel closes (false) or `reopen` fires (true).
async fn write_lines_until(
    rx: &mut mpsc::Receiver<Bytes>,
    out: &mut tokio::fs::File,
    reopen: &Notify,
) -> bool {
    loop {
        tokio::select! {
            () = reopen.notified() => {
                let _ = out.flush().await;
                return true;
            }
            line = rx.recv() => {
                let Some(line) = line else { return false };
                if write_batch(rx, out, line).await.is_err() {
                    return true; // reopen and carry on
                }
            }
        }
    }
}

async fn write_lines<W: tokio::io::AsyncWrite + Unpin>(mut rx: mpsc::Receiver<Bytes>, out: &mut W) {
    while let Some(line) = rx.recv().await {
        if write_batch(&mut rx, out, line).await.is_err() {
            return;
        }
    }
}

/// How long lines are gathered after the first one before they are written together. tokio
/// writes stdout and files on its blocking pool: each write is a hand-off to another thread
/// (futex calls, context switches), which per line cost more than the request itself.
const GATHER: Duration = Duration::from_millis(10);

/// Writes `first` and whatever else is queued within [`GATHER`], then flushes once.
async fn write_batch<W: tokio::io::AsyncWrite + Unpin>(
    rx: &mut mpsc::Receiver<Bytes>,
    out: &mut W,
    first: Bytes,
) -> std::io::Result<()> {
    if !rx.is_closed() {
        tokio::time::sleep(GATHER).await;
    }
    let mut buf = Vec::with_capacity((first.len() + 1) * (rx.len() + 1));
    buf.extend_from_slice(&first);
    buf.push(b'\n');
    while let Ok(line) = rx.try_recv() {
        buf.extend_from_slice(&line);
        buf.push(b'\n');
    }
    out.write_all(&buf).await?;
    out.flush().await
}

/// POSTs batches (JSON arrays) to the endpoint; a batch that still fails after the retries is
/// dropped and counted.
pub fn http(
    writers: &TaskTracker,
    config: HttpSinkConfig,
    dropped: &Family<SinkLabel, Counter>,
) -> Result<SinkQueue, String> {
    let (queue, mut rx) = SinkQueue::new("http", config.queue, dropped);
    let dropped = queue.dropped.clone();
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in &config.headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| format!("log.http.headers.{k}: {e}"))?;
        let mut value = reqwest::header::HeaderValue::from_str(v)
            .map_err(|e| format!("log.http.headers.{k}: {e}"))?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .default_headers(headers)
        .build()
        .map_err(|e| format!("cannot build the log HTTP client: {e}"))?;
    writers.spawn(async move {
        while let Some(first) = rx.recv().await {
            // Fill the batch up to its size, waiting at most the flush interval.
            let mut batch = vec![first];
            let deadline = tokio::time::Instant::now() + config.flush_interval;
            while batch.len() < config.batch_size {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(line)) => batch.push(line),
                    Ok(None) | Err(_) => break,
                }
            }
            let body = json_array(&batch);
            let mut delay = Duration::from_millis(100);
            let mut delivered = false;
            for attempt in 0..=config.retries {
                let sent = client
                    .post(&config.url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        delivered = true;
                        break;
                    }
                    Ok(r) => {
                        tracing::warn!(status = %r.status(), attempt, "the log endpoint refused a batch")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, attempt, "the log endpoint is unreachable")
                    }
                }
                if attempt < config.retries {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
            if !delivered {
                dropped.inc_by(batch.len() as u64);
            }
        }
    });
    Ok(queue)
}

fn json_array(lines: &[Bytes]) -> Bytes {
    let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum::<usize>() + 2);
    out.push(b'[');
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(line);
    }
    out.push(b']');
    Bytes::from(out)
}
