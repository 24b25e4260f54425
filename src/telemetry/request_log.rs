//! One JSON line per request. Records go through a bounded queue to each sink's writer, which
//! serialises them there, off the request's thread (with payload logging on, a record holds
//! whole prompts), so neither a slow stdout nor a large record slows requests: when the queue
//! is full, records are dropped and counted.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use std::time::Duration;

use axum::http::Method;

use super::clock::{LogTime, with_rfc3339_millis};
use super::json_line::{JsonObject, key};
use super::sinks::{self, SinkLabel, SinkQueue};
use crate::config::{LogConfig, RequestLogTarget};
use crate::json_out::write_str;
use crate::providers::Usage;
use crate::routing::Target;

/// What one request did. No secrets, no bodies.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestRecord {
    /// When the request arrived (written RFC 3339, UTC).
    pub time: LogTime,
    pub request_id: String,
    #[serde(serialize_with = "method_str")]
    pub method: Method,
    pub path: String,
    pub route: Option<Arc<str>>,
    pub consumer: Option<Arc<str>>,
    pub custom_id: Option<String>,
    /// The id of the stored key that authenticated the request (keys from the admin API).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The end user a trusted consumer named (e.g. OpenWebUI's user email).
    pub end_user: Option<String>,
    /// The configured consumer that end user is, when the front end may act for them: whose
    /// models, limits and token metrics apply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acting_as: Option<Arc<str>>,
    /// `chat`, `embeddings`, `models`.
    pub endpoint: Option<&'static str>,
    pub model: Option<Arc<str>>,
    pub provider: Option<Arc<str>>,
    pub upstream_model: Option<Arc<str>>,
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
    /// The token counts are the gateway's own estimate (a stream cut before the upstream
    /// reported usage): what the limits were charged.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub usage_estimated: bool,
    /// What a translation to the target's format left out (e.g. `cache_control`, betas,
    /// thinking history): nothing is dropped silently.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<String>,
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
    /// With payload logging on: the request body and the answer (credentials redacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_body: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body: Option<serde_json::Value>,
    /// For traces: when the request arrived on the monotonic clock (`time` is the wall
    /// clock's), and the client's trace context.
    #[serde(skip)]
    pub started_instant: Option<std::time::Instant>,
    #[serde(skip)]
    pub traceparent: Option<String>,
}

fn method_str<S: serde::Serializer>(method: &Method, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(method.as_str())
}

/// One target considered for a request.
#[derive(Debug, Clone, Serialize)]
pub struct AttemptRecord {
    pub provider: Arc<str>,
    /// The provider's wire format (`openai`, `anthropic`, `gemini`, ...).
    pub provider_kind: &'static str,
    pub model: Arc<str>,
    /// `ok`, the error code of the failure, or why it was skipped (`circuit_open`,
    /// `provider_unavailable`).
    pub outcome: &'static str,
    pub skipped: bool,
    /// When it started, in ms after the request arrived.
    pub started_ms: Option<f64>,
    pub latency_ms: Option<f64>,
}

impl AttemptRecord {
    fn write_json(&self, out: &mut Vec<u8>) {
        JsonObject::begin(out)
            .str(key!("provider"), &self.provider)
            .str(key!("provider_kind"), self.provider_kind)
            .str(key!("model"), &self.model)
            .str(key!("outcome"), self.outcome)
            .bool(key!("skipped"), self.skipped)
            .opt_f64(key!("started_ms"), self.started_ms)
            .opt_f64(key!("latency_ms"), self.latency_ms)
            .end();
    }

    pub fn tried(
        target: &Target,
        outcome: &'static str,
        started_ms: Option<f64>,
        took: Duration,
    ) -> Self {
        Self {
            provider: target.provider_name.clone(),
            provider_kind: target.provider.kind(),
            model: target.upstream_model.clone(),
            outcome,
            skipped: false,
            started_ms,
            latency_ms: Some(took.as_secs_f64() * 1000.0),
        }
    }

    pub fn skipped(target: &Target, why: &'static str) -> Self {
        Self {
            provider: target.provider_name.clone(),
            provider_kind: target.provider.kind(),
            model: target.upstream_model.clone(),
            outcome: why,
            skipped: true,
            started_ms: None,
            latency_ms: None,
        }
    }
}

impl RequestRecord {
    /// The record as one JSON object, as its `Serialize` derive would write it (a test holds
    /// the two together), without escaping each key (see [`super::json_line`]).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = JsonObject::begin(out);
        with_rfc3339_millis(self.time.0, |time| {
            o.str(key!("time"), time);
        });
        o.str(key!("request_id"), &self.request_id)
            .str(key!("method"), self.method.as_str())
            .str(key!("path"), &self.path)
            .opt_str(key!("route"), self.route.as_deref())
            .opt_str(key!("consumer"), self.consumer.as_deref())
            .opt_str(key!("custom_id"), self.custom_id.as_deref());
        if let Some(key_id) = &self.key_id {
            o.str(key!("key_id"), key_id);
        }
        o.opt_str(key!("end_user"), self.end_user.as_deref());
        if let Some(acting_as) = &self.acting_as {
            o.str(key!("acting_as"), acting_as);
        }
        o.opt_str(key!("endpoint"), self.endpoint)
            .opt_str(key!("model"), self.model.as_deref())
            .opt_str(key!("provider"), self.provider.as_deref())
            .opt_str(key!("upstream_model"), self.upstream_model.as_deref())
            .bool(key!("stream"), self.stream)
            .u64(key!("status"), u64::from(self.status))
            .opt_str(key!("error"), self.error)
            .opt_str(key!("error_message"), self.error_message.as_deref())
            .opt_u64(key!("prompt_tokens"), self.prompt_tokens)
            .opt_u64(key!("completion_tokens"), self.completion_tokens)
            .opt_u64(key!("total_tokens"), self.total_tokens)
            .opt_u64(key!("cached_tokens"), self.cached_tokens)
            .opt_u64(key!("cache_write_tokens"), self.cache_write_tokens)
            .opt_u64(key!("reasoning_tokens"), self.reasoning_tokens);
        if self.usage_estimated {
            o.bool(key!("usage_estimated"), true);
        }
        if !self.dropped.is_empty() {
            o.array(key!("dropped"), &self.dropped, |out, d| write_str(out, d));
        }
        o.opt_f64(key!("cost_usd"), self.cost_usd)
            .u64(key!("request_bytes"), self.request_bytes)
            .u64(key!("response_bytes"), self.response_bytes)
            .f64(key!("latency_ms"), self.latency_ms)
            .opt_f64(key!("overhead_ms"), self.overhead_ms)
            .opt_f64(key!("upstream_latency_ms"), self.upstream_latency_ms)
            .opt_f64(key!("ttft_ms"), self.ttft_ms)
            .bool(key!("client_disconnected"), self.client_disconnected)
            .array(key!("attempts"), &self.attempts, |out, a| a.write_json(out));
        if let Some(body) = &self.request_body {
            o.value(key!("request_body"), body);
        }
        if let Some(body) = &self.response_body {
            o.value(key!("response_body"), body);
        }
        o.end();
    }

    pub fn set_usage(&mut self, usage: &Usage) {
        self.prompt_tokens = Some(usage.prompt_tokens);
        self.completion_tokens = Some(usage.completion_tokens);
        self.total_tokens = Some(usage.total_tokens);
        self.cached_tokens = usage.cached_tokens;
        self.cache_write_tokens = usage.cache_write_tokens;
        self.reasoning_tokens = usage.reasoning_tokens;
    }
}

/// A record on its way to the sinks. Each sink's writer writes its line; when several sinks
/// share the record, the first to need the line serialises it for all.
pub struct LogEntry {
    record: RequestRecord,
    line: OnceLock<Bytes>,
    shared: bool,
}

impl LogEntry {
    /// Appends the record's JSON line (no newline) to `out`.
    pub fn write_line(&self, out: &mut Vec<u8>) {
        if self.shared {
            out.extend_from_slice(self.line());
        } else {
            self.record.write_json(out);
        }
    }

    /// The record's JSON line (no newline), serialised once.
    pub fn line(&self) -> &Bytes {
        self.line.get_or_init(|| {
            // Sized for a typical record up front (a growing buffer reallocates several
            // times per record).
            let mut line = Vec::with_capacity(1536);
            self.record.write_json(&mut line);
            Bytes::from(line)
        })
    }
}

/// Where records go besides the sinks the config names (file, HTTP).
pub enum LogSink {
    /// JSON lines on standard output (unless the config says `requests: off`).
    Stdout,
    /// Handed to a channel (embedding the gateway in tests or other programs).
    Channel(mpsc::UnboundedSender<RequestRecord>),
}

/// Fans every record out to the sinks; each has its own bounded queue and writer task.
pub struct RequestLogger {
    /// Emptied at shutdown: dropping the queues' senders lets each writer drain and stop.
    sinks: ArcSwap<Vec<SinkQueue>>,
    writers: TaskTracker,
    tap: Option<mpsc::UnboundedSender<RequestRecord>>,
}

impl RequestLogger {
    /// Starts the sinks' writer tasks; must be called inside a tokio runtime. The sinks are
    /// fixed at start-up (a reload that changes `log` takes effect on restart).
    pub fn start(
        sink: LogSink,
        config: &LogConfig,
        dropped: &Family<SinkLabel, Counter>,
    ) -> Result<Self, String> {
        let mut sinks = Vec::new();
        let writers = TaskTracker::new();
        let tap = match sink {
            LogSink::Stdout if config.requests == RequestLogTarget::Stdout => {
                sinks.push(sinks::stdout(&writers, dropped));
                None
            }
            LogSink::Stdout => None,
            LogSink::Channel(tx) => Some(tx),
        };
        if let Some(file) = &config.file {
            sinks.push(sinks::file(&writers, file.path.clone(), dropped));
        }
        if let Some(http) = &config.http {
            sinks.push(sinks::http(&writers, http.clone(), dropped)?);
        }
        writers.close();
        Ok(Self {
            sinks: ArcSwap::from_pointee(sinks),
            writers,
            tap,
        })
    }

    /// Closes the sinks and waits (at most `wait`) for them to write what they hold.
    pub async fn flush(&self, wait: Duration) {
        self.sinks.store(Arc::new(Vec::new()));
        if tokio::time::timeout(wait, self.writers.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown: the request-log sinks did not finish writing in time");
        }
    }

    /// Hands `record` to every sink. Its line is written by the sinks' writers, off the
    /// request's thread: serialising it here (~4k instructions) was a tenth of a request's
    /// work, and in the writer it is done for a whole batch at once, its code warm. One writer
    /// thread so serialises several hundred thousand records a second, far above what a node
    /// sees of LLM calls; past that its queue fills and records are dropped and counted.
    pub fn emit(&self, record: RequestRecord) {
        let sinks = self.sinks.load();
        let record = match &self.tap {
            Some(tap) if sinks.is_empty() => {
                let _ = tap.send(record);
                return;
            }
            Some(tap) => {
                let _ = tap.send(record.clone());
                record
            }
            None => record,
        };
        if sinks.is_empty() {
            return;
        }
        let entry = Arc::new(LogEntry {
            record,
            line: OnceLock::new(),
            shared: sinks.len() > 1,
        });
        for sink in sinks.iter() {
            sink.push(entry.clone());
        }
    }

    /// Records waiting in each sink's queue.
    pub fn depths(&self) -> impl Iterator<Item = (&'static str, usize)> + '_ {
        self.sinks
            .load()
            .iter()
            .map(|s| (s.name, s.depth()))
            .collect::<Vec<_>>()
            .into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(outcome: &'static str, skipped: bool) -> AttemptRecord {
        AttemptRecord {
            provider: "anthropic \"eu\"".into(),
            provider_kind: "anthropic",
            model: "claude-sonnet-4".into(),
            outcome,
            skipped,
            started_ms: (!skipped).then_some(0.25),
            latency_ms: (!skipped).then_some(812.125),
        }
    }

    /// The hand-written line and the `Serialize` derive (what the fields document) agree, with
    /// every optional field set and with none.
    #[test]
    fn the_line_is_what_serde_writes() {
        let full = RequestRecord {
            time: LogTime(std::time::UNIX_EPOCH + Duration::from_millis(1_764_873_912_123)),
            request_id: "0f9e\u{1}id".into(),
            method: Method::POST,
            path: "/ai/v1/chat/completions?x=\"y\"\\".into(),
            route: Some("ai".into()),
            consumer: Some("team-a".into()),
            custom_id: Some("c-42".into()),
            key_id: Some("key_01".into()),
            end_user: Some("ada@example.com".into()),
            acting_as: Some("ada".into()),
            endpoint: Some("chat"),
            model: Some("smart".into()),
            provider: Some("anthropic".into()),
            upstream_model: Some("claude-sonnet-4".into()),
            stream: true,
            status: 429,
            error: Some("rate_limited"),
            error_message: Some("tokens per minute\nexceeded".into()),
            prompt_tokens: Some(12),
            completion_tokens: Some(34),
            total_tokens: Some(46),
            cached_tokens: Some(3),
            cache_write_tokens: Some(4),
            reasoning_tokens: Some(5),
            usage_estimated: true,
            dropped: vec!["cache_control".into(), "thinking".into()],
            cost_usd: Some(0.000_123_4),
            request_bytes: 1234,
            response_bytes: 5678,
            latency_ms: 815.5,
            overhead_ms: Some(0.333),
            upstream_latency_ms: Some(815.167),
            ttft_ms: Some(f64::NAN),
            client_disconnected: true,
            attempts: vec![attempt("circuit_open", true), attempt("ok", false)],
            request_body: Some(
                serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}),
            ),
            response_body: Some(serde_json::json!({"choices": []})),
            ..RequestRecord::default()
        };
        for record in [full, RequestRecord::default()] {
            let mut line = Vec::new();
            record.write_json(&mut line);
            assert_eq!(
                String::from_utf8(line).unwrap(),
                serde_json::to_string(&record).unwrap()
            );
        }
    }
}
