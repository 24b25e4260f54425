//! Streaming responses: frames are forwarded to the client as they arrive, usage is taken
//! from the final usage chunk (and hidden from clients that did not ask for it), and the
//! request is logged when the stream ends, however it ends: completed, failed, or the client
//! went away (dropping the body drops the upstream response, which cancels the upstream call).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use super::{AnswerHeaders, Exchange};
use crate::config::CircuitConfig;
use crate::dialect::StreamEncoder;
use crate::error::GatewayError;
use crate::policy::budget::Budget;
use crate::policy::pricing::Price;
use crate::policy::tokens;
use crate::providers::Usage;
use crate::providers::{Frame, FrameStream, IDLE};
use crate::routing::Target;
use crate::routing::health::InFlight;
use crate::snapshot::Snapshot;
use crate::state::AppState;

/// The upstream side of a stream that has started.
pub struct Upstream {
    /// Already received (it decided that this target answers).
    pub first: Frame,
    pub rest: FrameStream,
    pub target: Arc<Target>,
    /// Held to the end of the stream: the target counts it as busy until then.
    pub in_flight: InFlight,
    pub circuit: CircuitConfig,
}

/// Writes the log record, and settles the reservation, when dropped.
struct StreamLog {
    exchange: Exchange,
    /// Taken when the stream ends.
    budget: Option<Budget>,
    /// Limits apply: the output is counted as it streams.
    counts: bool,
    price: Option<Price>,
    usage: Option<Usage>,
    /// The text streamed so far, kept only when payload logging is on.
    logged_text: Option<String>,
    /// Tokens of the output streamed so far, counted only while a limit applies and the
    /// upstream's own usage has not arrived: what a client that leaves early is charged.
    generated_tokens: u64,
    /// Chat chunks whose text is not counted yet: counted only if the stream ends without
    /// the upstream's usage (or once they hold [`UNCOUNTED_MAX`] bytes), so a stream that
    /// reports its usage never tokenizes its output.
    uncounted: Vec<Bytes>,
    uncounted_bytes: usize,
    /// A failure after the start still counts against the target's circuit.
    in_flight: InFlight,
    circuit: CircuitConfig,
    state: Arc<AppState>,
    snapshot: Arc<Snapshot>,
    first_token: Option<Instant>,
    /// The stream reached its end (or a final error) rather than being cut by the client.
    ended: bool,
}

impl StreamLog {
    fn fail(&mut self, error: &GatewayError) {
        self.exchange.fail(error);
        self.in_flight.fail(&self.circuit, error.code(), None);
        self.mark_ended();
    }

    fn sent(&mut self, bytes: usize) {
        self.exchange.record.response_bytes += bytes as u64;
    }

    fn mark_ended(&mut self) {
        self.ended = true;
    }

    /// Takes note of what a frame says: usage, first token, end, upstream error.
    fn observe(&mut self, frame: &Frame, provider: &str) {
        if let Some(usage) = &frame.usage {
            self.exchange.record.set_usage(usage);
            self.usage = Some(*usage);
            self.uncounted = Vec::new();
        }
        if let Some(text) = &mut self.logged_text {
            text.push_str(&frame.generated_text());
        }
        if self.counts && self.usage.is_none() {
            if frame.text_in_chat_chunk {
                self.uncounted_bytes += frame.data.len();
                if self.uncounted.capacity() == 0 {
                    self.uncounted.reserve(32);
                }
                self.uncounted.push(frame.data.clone());
                if self.uncounted_bytes > UNCOUNTED_MAX {
                    self.count_uncounted();
                }
            } else if !frame.text.is_empty() {
                self.generated_tokens += tokens::count(&frame.text);
            }
        }
        if frame.has_output && self.first_token.is_none() {
            self.first_token = Some(Instant::now());
        }
        if let Some(message) = &frame.error {
            self.fail(&GatewayError::UpstreamProtocol {
                provider: provider.to_owned(),
                detail: message.clone(),
            });
        }
        if frame.is_done() {
            self.mark_ended();
        }
    }
}

/// What an event's data is framed with at most, when passed through (`data: `, `\n\n`).
const SSE_FRAMING: usize = 8;

/// Most bytes of chat chunks held uncounted.
const UNCOUNTED_MAX: usize = 256 << 10;

impl StreamLog {
    fn count_uncounted(&mut self) {
        for data in self.uncounted.drain(..) {
            self.generated_tokens += tokens::count(&crate::providers::openai::chunk_text(&data));
        }
        self.uncounted_bytes = 0;
    }

    /// Settles the budget to what the stream used; the log and the metrics show what the
    /// limits were charged.
    fn settle(&mut self) {
        let Some(budget) = self.budget.take() else {
            return;
        };
        if self.usage.is_none() {
            self.count_uncounted();
        }
        let charged = budget.settle_stream(self.usage, self.generated_tokens, self.price);
        if let Some(usage) = &charged.usage {
            self.exchange.record.set_usage(usage);
        }
        self.exchange.record.usage_estimated = charged.estimated;
        self.exchange.record.cost_usd = charged.cost_usd;
    }
}

impl Drop for StreamLog {
    fn drop(&mut self) {
        self.state.metrics.active_streams.dec();
        self.settle();
        if let Some(text) = self.logged_text.take() {
            let mut body = serde_json::json!({"streamed_text": text});
            crate::telemetry::redact::redact(&mut body);
            self.exchange.record.response_body = Some(body);
        }
        let record = &mut self.exchange.record;
        record.status = StatusCode::OK.as_u16();
        record.latency_ms = self.exchange.started.elapsed().as_secs_f64() * 1000.0;
        record.ttft_ms = self
            .first_token
            .map(|t| t.duration_since(self.exchange.started).as_secs_f64() * 1000.0);
        if !self.ended && self.state.is_cutting() {
            // Not the client: the gateway cut it at the end of the shutdown grace period.
            let cut = GatewayError::ShutdownCut;
            record.error = Some(cut.code());
            record.error_message = Some(cut.to_string());
        } else {
            record.client_disconnected = !self.ended;
        }
        self.state.log(&self.snapshot, std::mem::take(record));
    }
}

const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

pub fn sse_response(
    upstream: Upstream,
    budget: Budget,
    mut encoder: Box<dyn StreamEncoder>,
    exchange: Exchange,
    state: Arc<AppState>,
    snapshot: Arc<Snapshot>,
) -> Response {
    let Upstream {
        first,
        rest,
        target,
        in_flight,
        circuit,
    } = upstream;
    let idle = target.timeouts.idle;
    let exchange_logs_response = exchange.log_response;
    let provider = target.provider_name.to_string();
    let mut log = StreamLog {
        exchange,
        counts: budget.counts(),
        budget: Some(budget),
        price: target.price,
        usage: None,
        logged_text: exchange_logs_response.then(String::new),
        generated_tokens: 0,
        uncounted: Vec::new(),
        uncounted_bytes: 0,
        in_flight,
        circuit,
        state,
        snapshot,
        first_token: None,
        ended: false,
    };
    log.state.metrics.active_streams.inc();
    // Frames that came in one burst go out in one write (see `Batches`).
    let frames = futures_util::stream::once(std::future::ready(Ok(first))).chain(rest);
    let mut batches = super::batches::Batches::new(frames);
    let body = async_stream::stream! {
        // One idle timer, moved forward at each batch (a new timer per batch costs more than
        // the batch's own work).
        let idle_timer = tokio::time::sleep(idle);
        tokio::pin!(idle_timer);
        loop {
            let next = tokio::select! {
                biased;
                batch = batches.next() => Ok(batch),
                () = &mut idle_timer => Err(()),
            };
            idle_timer.as_mut().reset(tokio::time::Instant::now() + idle);
            let batch = match next {
                Ok(Some(batch)) => batch,
                Ok(None) => {
                    log.mark_ended();
                    let mut out = BytesMut::new();
                    encoder.finish(&mut out);
                    if let Some(pending) = encoder.pending() {
                        pending.work.await;
                        out.extend_from_slice(&pending.then);
                    }
                    if !out.is_empty() {
                        log.sent(out.len());
                        yield Ok::<Bytes, Infallible>(out.freeze());
                    }
                    break;
                }
                Err(_) => vec![Err(GatewayError::UpstreamTimeout { provider: provider.clone(), phase: IDLE })],
            };
            // Sized for the batch as passed through (a translation may still grow it).
            let mut out = BytesMut::with_capacity(
                batch.iter().map(|item| item.as_ref().map_or(0, |f| f.data.len() + SSE_FRAMING)).sum(),
            );
            let mut failed = false;
            for item in batch {
                match item {
                    Ok(frame) => {
                        log.observe(&frame, &provider);
                        encoder.frame(&frame, &mut out);
                    }
                    Err(error) => {
                        // Headers are gone already: the error travels as an event.
                        log.fail(&error);
                        encoder.error(&error, &mut out);
                        failed = true;
                        break;
                    }
                }
            }
            // Bytes held back (a stored response's final event) go once their work is done.
            if let Some(pending) = encoder.pending() {
                if !out.is_empty() {
                    log.sent(out.len());
                    yield Ok::<Bytes, Infallible>(out.split().freeze());
                }
                pending.work.await;
                out.extend_from_slice(&pending.then);
            }
            if !out.is_empty() {
                log.sent(out.len());
                yield Ok::<Bytes, Infallible>(out.freeze());
            }
            if failed {
                break;
            }
        }
    };
    let mut response = Response::new(Body::from_stream(body));
    // In the answer's list, not its map (see `AnswerHeaders`): the stream's head goes out on
    // the way to its first byte.
    AnswerHeaders::of(&mut response).extend([
        (CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        // Tell nginx-style proxies in front of us not to buffer the stream.
        (X_ACCEL_BUFFERING, HeaderValue::from_static("no")),
    ]);
    response
}
