//! Streaming responses: frames are forwarded to the client as they arrive, usage is taken
//! from the final usage chunk (and hidden from clients that did not ask for it), and the
//! request is logged when the stream ends, however it ends: completed, failed, or the client
//! went away (dropping the body drops the upstream response, which cancels the upstream call).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;

use super::Exchange;
use crate::error::GatewayError;
use crate::providers::{Frame, FrameStream, IDLE};
use crate::server::AppState;
use crate::snapshot::{Model, Snapshot};

/// Writes the log record when dropped.
struct StreamLog {
    exchange: Exchange,
    state: Arc<AppState>,
    snapshot: Arc<Snapshot>,
    first_token: Option<Instant>,
    /// The stream reached its end (or a final error) rather than being cut by the client.
    ended: bool,
}

impl StreamLog {
    fn fail(&mut self, error: &GatewayError) {
        self.exchange.fail(error);
        self.mark_ended();
    }

    fn mark_ended(&mut self) {
        self.ended = true;
    }
}

impl Drop for StreamLog {
    fn drop(&mut self) {
        let record = &mut self.exchange.record;
        record.status = StatusCode::OK.as_u16();
        record.latency_ms = self.exchange.started.elapsed().as_secs_f64() * 1000.0;
        record.ttft_ms = self
            .first_token
            .map(|t| t.duration_since(self.exchange.started).as_secs_f64() * 1000.0);
        record.client_disconnected = !self.ended;
        self.state.log(&self.snapshot, std::mem::take(record));
    }
}

pub fn sse_response(
    mut frames: FrameStream,
    client_wants_usage: bool,
    model: &Model,
    exchange: Exchange,
    state: Arc<AppState>,
    snapshot: Arc<Snapshot>,
) -> Response {
    let idle = model.provider.idle_timeout();
    let provider = model.provider_name.clone();
    let mut log = StreamLog {
        exchange,
        state,
        snapshot,
        first_token: None,
        ended: false,
    };
    let body = async_stream::stream! {
        loop {
            let frame = match tokio::time::timeout(idle, frames.next()).await {
                Err(_) => Err(GatewayError::UpstreamTimeout { provider: provider.clone(), phase: IDLE }),
                Ok(None) => {
                    log.mark_ended();
                    break;
                }
                Ok(Some(frame)) => frame,
            };
            let frame = match frame {
                Ok(frame) => frame,
                Err(error) => {
                    // Headers are gone already: the error travels as an SSE event, as OpenAI does.
                    log.fail(&error);
                    yield Ok::<Bytes, Infallible>(error_event(&error));
                    break;
                }
            };
            if let Some(usage) = &frame.usage {
                log.exchange.record.set_usage(usage);
            }
            if frame.has_output && log.first_token.is_none() {
                log.first_token = Some(Instant::now());
            }
            if let Some(message) = &frame.error {
                let error = GatewayError::UpstreamProtocol { provider: provider.clone(), detail: message.clone() };
                log.fail(&error);
            }
            if frame.is_done() {
                log.mark_ended();
            }
            if frame.usage_only && !client_wants_usage {
                continue;
            }
            yield Ok(frame.to_sse());
        }
    };
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Tell nginx-style proxies in front of us not to buffer the stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn error_event(error: &GatewayError) -> Bytes {
    Frame {
        data: Bytes::from(error.body().to_string()),
        usage: None,
        usage_only: false,
        has_output: false,
        error: None,
    }
    .to_sse()
}
