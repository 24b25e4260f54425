//! Where request-log records go besides the caller-chosen sink: a file (reopened on SIGUSR1,
//! for logrotate) and an HTTP endpoint (batched POSTs of JSON arrays, retried with backoff).
//! Every sink has a bounded queue: when it is full the record is dropped and counted, so a
//! slow disk or a dead endpoint never grows memory or slows requests.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use super::request_log::LogEntry;
use crate::config::HttpSinkConfig;
use prometheus_client::encoding::EncodeLabelSet;

/// The `sink` label of the log sinks' metrics (queue depth, records dropped).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

/// One sink's queue of records, serialised by the sink's writer.
pub struct SinkQueue {
    pub name: &'static str,
    tx: mpsc::Sender<Arc<LogEntry>>,
    dropped: Counter,
}

impl SinkQueue {
    fn new(
        name: &'static str,
        capacity: usize,
        dropped: &Family<SinkLabel, Counter>,
    ) -> (Self, mpsc::Receiver<Arc<LogEntry>>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let dropped = dropped
            .get_or_create(&SinkLabel {
                sink: name.to_owned(),
            })
            .clone();
        (Self { name, tx, dropped }, rx)
    }

    pub fn push(&self, entry: Arc<LogEntry>) {
        if self.tx.try_send(entry).is_err() {
            self.dropped.inc();
        }
    }

    /// Records waiting.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

const FILE_QUEUE: usize = 8192;

/// How long lines are gathered after the first one before they are written together: one
/// write per batch, not per line.
const GATHER: Duration = Duration::from_millis(10);

/// JSON lines on standard output.
pub fn stdout(writers: &TaskTracker, dropped: &Family<SinkLabel, Counter>) -> SinkQueue {
    let (queue, rx) = SinkQueue::new("stdout", FILE_QUEUE, dropped);
    spawn_writer(
        writers,
        "tollgate-log-out",
        move |batches| {
            let out = std::io::stdout();
            while let Some((batch, _)) = batches.next_batch() {
                let mut out = out.lock();
                if out.write_all(batch).and_then(|()| out.flush()).is_err() {
                    // Standard output is gone: the queue closes with this thread, and further
                    // records are counted as dropped.
                    return;
                }
            }
        },
        rx,
    );
    queue
}

/// Appends to `path`; SIGUSR1 makes it close and reopen the file (after logrotate moved it).
pub fn file(
    writers: &TaskTracker,
    path: PathBuf,
    dropped: &Family<SinkLabel, Counter>,
) -> SinkQueue {
    let (queue, rx) = SinkQueue::new("file", FILE_QUEUE, dropped);
    let lost = queue.dropped.clone();
    let reopen = Arc::new(AtomicBool::new(false));
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
                reopen.store(true, Ordering::Relaxed);
            }
        });
    }
    spawn_writer(
        writers,
        "tollgate-log-file",
        move |batches| {
            let mut file = None;
            while let Some((batch, lines)) = batches.next_batch() {
                if reopen.swap(false, Ordering::Relaxed) && file.take().is_some() {
                    tracing::info!(path = %path.display(), "reopening the request log file");
                }
                let out = match &mut file {
                    Some(out) => out,
                    None => match std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                    {
                        Ok(opened) => file.insert(opened),
                        Err(e) => {
                            // This batch is lost (and counted); the next one tries again.
                            tracing::error!(path = %path.display(), error = %e, "cannot open the request log file");
                            lost.inc_by(lines as u64);
                            std::thread::sleep(Duration::from_secs(1));
                            continue;
                        }
                    },
                };
                if let Err(e) = out.write_all(batch) {
                    tracing::error!(path = %path.display(), error = %e, "cannot write the request log file");
                    lost.inc_by(lines as u64);
                    file = None; // reopen and carry on
                }
            }
        },
        rx,
    );
    queue
}

/// A sink's queue as its writer thread sees it: batches of newline-terminated lines.
struct Batches {
    rx: mpsc::Receiver<Arc<LogEntry>>,
    buf: Vec<u8>,
}

impl Batches {
    /// Waits for a line, gathers what else arrives within [`GATHER`] (not when the queue is
    /// closing), and returns them all with their count; `None` once the queue is closed and
    /// empty.
    fn next_batch(&mut self) -> Option<(&[u8], usize)> {
        let first = self.rx.blocking_recv()?;
        if !self.rx.is_closed() {
            std::thread::sleep(GATHER);
        }
        // The buffer is kept between batches, unless a burst made it large.
        if self.buf.capacity() > 4 << 20 {
            self.buf = Vec::new();
        }
        self.buf.clear();
        first.write_line(&mut self.buf);
        self.buf.push(b'\n');
        drop(first);
        let mut lines = 1;
        while let Ok(entry) = self.rx.try_recv() {
            entry.write_line(&mut self.buf);
            self.buf.push(b'\n');
            lines += 1;
        }
        Some((&self.buf, lines))
    }
}

/// Runs `write` on a thread of its own: writes to stdout and files block, and on tokio's
/// blocking pool every batch was a hand-off between threads plus a copy into tokio's buffer.
/// The tracker sees the writer as one task, done when the thread ends (its queue closed and
/// drained). If the thread cannot be started, the sink's records are counted as dropped.
fn spawn_writer(
    writers: &TaskTracker,
    name: &str,
    write: impl FnOnce(&mut Batches) + Send + 'static,
    rx: mpsc::Receiver<Arc<LogEntry>>,
) {
    let (done, finished) = oneshot::channel::<()>();
    let started = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let _done = done; // dropped when the thread ends, however it ends
            let mut batches = Batches {
                rx,
                buf: Vec::new(),
            };
            write(&mut batches);
        });
    if let Err(e) = started {
        tracing::error!(error = %e, "cannot start the request log writer thread");
        return;
    }
    writers.spawn(async move {
        let _ = finished.await;
    });
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
            // Serialised off the async workers: with payload logging on, a record holds whole
            // prompts and answers.
            let count = batch.len() as u64;
            let Ok(body) = tokio::task::spawn_blocking(move || json_array(&batch)).await else {
                dropped.inc_by(count);
                continue;
            };
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
                dropped.inc_by(count);
            }
        }
    });
    Ok(queue)
}

fn json_array(entries: &[Arc<LogEntry>]) -> Bytes {
    let mut out = Vec::with_capacity(entries.len() * 1024 + 2);
    out.push(b'[');
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        entry.write_line(&mut out);
    }
    out.push(b']');
    Bytes::from(out)
}
