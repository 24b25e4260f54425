//! One JSON line per request. Records go through a bounded queue to a writer task, so a slow
//! stdout never slows requests: when the queue is full, records are dropped and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use std::time::Duration;

use crate::providers::Usage;
use crate::routing::Target;

/// What one request did. No secrets, no bodies.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestRecord {
    /// RFC 3339, UTC, when the request arrived.
    pub time: String,
    pub request_id: String,
    pub method: String,
    pub path: String,
    pub route: Option<String>,
    pub consumer: Option<String>,
    pub custom_id: Option<String>,
    /// The end user a trusted consumer named (e.g. OpenWebUI's user email).
    pub end_user: Option<String>,
    /// `chat`, `embeddings`, `models`.
    pub endpoint: Option<&'static str>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub upstream_model: Option<String>,
    pub stream: bool,
    pub status: u16,
    /// The error code (as in the error body), when the request failed.
    pub error: Option<&'static str>,
    pub error_message: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
    pub cached_tokens: Option<u64>,
    pub cache_write_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
    /// What the tokens cost, in USD, at the answering target's price (none if unknown).
    pub cost_usd: Option<f64>,
    /// Request body bytes received, response body bytes sent.
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// From arrival to the last byte sent (for streams: the end of the stream).
    pub latency_ms: f64,
    /// Time spent in the gateway itself: everything but waiting for the upstream (for streams,
    /// up to the response head).
    pub overhead_ms: Option<f64>,
    /// Waiting for the upstream: until the whole answer (until the response head for streams).
    pub upstream_latency_ms: Option<f64>,
    /// Streams: from arrival to the first generated token.
    pub ttft_ms: Option<f64>,
    /// The client went away before the response was complete.
    pub client_disconnected: bool,
    /// Every target considered, in order, with its outcome.
    pub attempts: Vec<AttemptRecord>,
}

/// One target considered for a request.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    pub provider: String,
    pub model: String,
    /// `ok`, the error code of the failure, or why it was skipped (`circuit_open`,
    /// `provider_unavailable`).
    pub outcome: &'static str,
    pub skipped: bool,
    pub latency_ms: Option<f64>,
}

impl AttemptRecord {
    pub fn tried(target: &Target, outcome: &'static str, took: Duration) -> Self {
        Self {
            provider: target.provider_name.clone(),
            model: target.upstream_model.clone(),
            outcome,
            skipped: false,
            latency_ms: Some(took.as_secs_f64() * 1000.0),
        }
    }

    pub fn skipped(target: &Target, why: &'static str) -> Self {
        Self {
            provider: target.provider_name.clone(),
            model: target.upstream_model.clone(),
            outcome: why,
            skipped: true,
            latency_ms: None,
        }
    }
}

impl RequestRecord {
    pub fn set_usage(&mut self, usage: &Usage) {
        self.prompt_tokens = Some(usage.prompt_tokens);
        self.completion_tokens = Some(usage.completion_tokens);
        self.total_tokens = Some(usage.total_tokens);
        self.cached_tokens = usage.cached_tokens;
        self.cache_write_tokens = usage.cache_write_tokens;
        self.reasoning_tokens = usage.reasoning_tokens;
    }
}

/// Where records go.
pub enum LogSink {
    /// JSON lines on standard output.
    Stdout,
    /// Handed to a channel (embedding the gateway in tests or other programs).
    Channel(mpsc::UnboundedSender<RequestRecord>),
}

const QUEUE: usize = 8192;

#[derive(Clone)]
pub struct RequestLogger {
    queue: Queue,
    dropped: Arc<AtomicU64>,
}

#[derive(Clone)]
enum Queue {
    Bounded(mpsc::Sender<RequestRecord>),
    Channel(mpsc::UnboundedSender<RequestRecord>),
}

impl RequestLogger {
    /// Starts the writer task (for stdout); must be called inside a tokio runtime.
    pub fn start(sink: LogSink) -> Self {
        let queue = match sink {
            LogSink::Channel(tx) => Queue::Channel(tx),
            LogSink::Stdout => {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(write_lines(rx, tokio::io::stdout()));
                Queue::Bounded(tx)
            }
        };
        Self {
            queue,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn emit(&self, record: RequestRecord) {
        let sent = match &self.queue {
            Queue::Bounded(tx) => tx.try_send(record).is_ok(),
            Queue::Channel(tx) => tx.send(record).is_ok(),
        };
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records lost because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn write_lines<W: tokio::io::AsyncWrite + Unpin>(
    mut rx: mpsc::Receiver<RequestRecord>,
    out: W,
) {
    let mut out = tokio::io::BufWriter::new(out);
    while let Some(record) = rx.recv().await {
        let mut batch = vec![record];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        for record in batch {
            if let Ok(mut line) = serde_json::to_vec(&record) {
                line.push(b'\n');
                if out.write_all(&line).await.is_err() {
                    return;
                }
            }
        }
        if out.flush().await.is_err() {
            return;
        }
    }
}
