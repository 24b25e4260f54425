//! An upstream's event stream read through a [`StreamTranslator`]: each upstream chunk is
//! decoded into events, each event (redacted of provider keys) into frames, given one at a
//! time. Hand-written rather than an `async_stream` generator: it runs once per chunk and
//! once per frame, and a generator's yield moved every frame through two extra slots.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use futures_util::Stream;
use http_body::Body;

use super::Frame;
use super::sse::{SseDecoder, SseEvent};
use super::translate::StreamTranslator;
use super::upstream::{UpstreamBody, body_error};
use crate::error::GatewayError;
use crate::telemetry::redact;

pub struct EventStream<T> {
    body: UpstreamBody,
    decoder: SseDecoder,
    translator: T,
    provider: String,
    /// Decoded events not yet translated, last first (taken with `pop`).
    events: Vec<SseEvent>,
    /// Frames translated and not yet given (kept for the stream: no allocation an event).
    frames: VecDeque<Frame>,
    /// The body ended (its last frames are in `frames`), or the stream failed.
    ended: bool,
    /// The provider keys masked in every event, loaded once for the stream.
    secrets: Arc<redact::SecretRedactor>,
}

impl<T: StreamTranslator> EventStream<T> {
    pub fn new(body: UpstreamBody, translator: T, provider: String, max_event: usize) -> Self {
        Self {
            body,
            decoder: SseDecoder::new(max_event),
            translator,
            provider,
            events: Vec::new(),
            frames: VecDeque::new(),
            ended: false,
            secrets: redact::provider_secret_redactor(),
        }
    }

    fn protocol_error(&self, detail: String) -> GatewayError {
        GatewayError::UpstreamProtocol {
            provider: self.provider.clone(),
            detail,
        }
    }

    /// The frames of one event, without the provider keys (see
    /// [`StreamTranslator::push_event_frames`]). The data are searched as bytes: a translator
    /// that reads them checks them as UTF-8 itself, one that passes them on passes them as
    /// they came (as a whole answer is).
    fn translate(&mut self, event: SseEvent) -> Result<(), GatewayError> {
        self.translator
            .push_event_frames(&event.event, event.data, &self.secrets, &mut self.frames)
    }

    /// Gives `error` as the stream's last item.
    fn fail(&mut self, error: GatewayError) -> Poll<Option<Result<Frame, GatewayError>>> {
        self.ended = true;
        self.events.clear();
        self.frames.clear();
        Poll::Ready(Some(Err(error)))
    }
}

// No field is ever pinned: the translator is only called through `&mut`.
impl<T> Unpin for EventStream<T> {}

impl<T: StreamTranslator> Stream for EventStream<T> {
    type Item = Result<Frame, GatewayError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(frame) = this.frames.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if let Some(event) = this.events.pop() {
                if let Err(error) = this.translate(event) {
                    return this.fail(error);
                }
                continue;
            }
            if this.ended {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Some(chunk) = frame.data_ref() else {
                        continue;
                    };
                    if let Err(e) = this.decoder.feed(chunk, &mut this.events) {
                        let error = this.protocol_error(e.to_string());
                        return this.fail(error);
                    }
                    this.events.reverse();
                }
                Some(Err(e)) => {
                    let error = body_error(&this.provider, e);
                    return this.fail(error);
                }
                None => {
                    this.ended = true;
                    match this.translator.finish() {
                        Ok(frames) => this.frames.extend(frames),
                        Err(error) => return this.fail(error),
                    }
                }
            }
        }
    }
}
