//! OpenAI's Responses API as a client dialect (`POST {route}/v1/responses`, with
//! `input_tokens`, `GET`/`DELETE /v1/responses/{id}`): what Codex and the Agents SDK speak.
//! To a target that serves the Responses API the client's body passes through (and a chain
//! stays on the target that made its first answer); to any other it is read into the
//! canonical chat request ([`request`]) and the answer written back ([`answer`]), with the
//! conversation kept in a [`store`] for `previous_response_id`.

pub mod answer;
pub mod request;
pub mod store;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde_json::Value;

use self::answer::{ResponseShape, ResponsesEncoder};
use self::store::{ResponseStore, StoredResponse};
use crate::dialect::{Pending, StreamEncoder};
use crate::error::GatewayError;
use crate::providers::Frame;

/// Which of a model's targets may answer a request (a chain must stay where its id is known).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TargetFilter {
    #[default]
    Any,
    /// Only targets that serve the Responses API themselves (an id the gateway does not know).
    NativeOnly,
    /// Only translated targets (the gateway holds the conversation).
    TranslatedOnly,
    /// Only this provider's targets (it made the response being continued).
    Provider(String),
}

/// What the gateway knows of the response a request continues, loaded before decoding.
#[derive(Debug, Default)]
pub struct Continued {
    /// The conversation so far, as canonical messages (translated chains).
    pub history: Vec<Value>,
    pub filter: TargetFilter,
}

/// Loads what `previous_response_id` continues, for `consumer`: the stored conversation of a
/// translated chain, or the provider a native chain is pinned to. An id the store does not
/// know can only be continued by a target that serves the Responses API itself.
pub async fn continued(
    previous: Option<&str>,
    store: Option<&ResponseStore>,
    consumer: &str,
    has_native_targets: bool,
) -> Result<Continued, GatewayError> {
    let Some(id) = previous else {
        return Ok(Continued::default());
    };
    let found = match store {
        Some(store) => store
            .get(id, consumer)
            .await
            .map_err(|e| GatewayError::ProviderUnavailable(format!("{e}; try again shortly")))?,
        None => None,
    };
    match found {
        Some(StoredResponse {
            provider: Some(provider),
            ..
        }) => Ok(Continued {
            history: Vec::new(),
            filter: TargetFilter::Provider(provider),
        }),
        Some(entry) => Ok(Continued {
            history: entry.messages,
            filter: TargetFilter::TranslatedOnly,
        }),
        None if has_native_targets => Ok(Continued {
            history: Vec::new(),
            filter: TargetFilter::NativeOnly,
        }),
        None if store.is_some() => Err(GatewayError::InvalidRequest(format!(
            "previous_response_id {id:?} was not found (it may have expired); send the whole conversation instead"
        ))),
        None => Err(GatewayError::InvalidRequest(
            "previous_response_id needs a response store on this gateway for this model (dialects.responses.store); send the whole conversation instead".into(),
        )),
    }
}

/// One Responses turn on a translated path: the response being built and what storing it
/// needs.
#[derive(Debug, Clone)]
pub struct Turn {
    pub shape: ResponseShape,
    /// The conversation before this answer (earlier turns and this input), as canonical
    /// messages.
    pub conversation: Vec<Value>,
}

/// Where a finished answer goes: the store (when configured and the client did not say
/// `store: false`), under the consumer that made it.
#[derive(Debug, Clone, Default)]
pub struct Keeper {
    pub store: Option<Arc<ResponseStore>>,
    pub consumer: String,
}

impl Keeper {
    /// Stores a translated answer: its response object and the conversation up to it.
    pub async fn keep(&self, turn: &Turn, finished: &answer::Finished) {
        let Some(store) = self.store.as_ref().filter(|_| turn.shape.store) else {
            return;
        };
        let mut messages = turn.conversation.clone();
        messages.extend(finished.output_messages.iter().cloned());
        let entry = StoredResponse {
            consumer: self.consumer.clone(),
            response: Some(finished.response.clone()),
            messages,
            provider: None,
        };
        if let Err(e) = store.put(&turn.shape.id, &entry).await {
            tracing::warn!(error = %e, "a response could not be stored; chaining to it will fail");
        }
    }

    /// Pins a native target's response to its provider, so a chain stays there.
    pub async fn pin(&self, response_id: &str, provider: &str) {
        let Some(store) = &self.store else {
            return;
        };
        let entry = StoredResponse {
            consumer: self.consumer.clone(),
            response: None,
            messages: Vec::new(),
            provider: Some(provider.to_owned()),
        };
        if let Err(e) = store.put(response_id, &entry).await {
            tracing::warn!(error = %e, "a response's target could not be recorded");
        }
    }
}

/// The id of a Responses answer (a whole `response` object, or a `response.*` event).
pub fn response_id(data: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Peek {
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        response: Option<Box<Peek>>,
    }
    let peek: Peek = serde_json::from_slice(data).ok()?;
    peek.response.and_then(|r| r.id).or(peek.id)
}

/// A translated stream: canonical chunks as Responses events; the finished response is
/// stored before `response.completed` goes out, so a chained request made right after it
/// finds it.
pub struct TranslatedStream {
    pub encoder: ResponsesEncoder,
    pub turn: Turn,
    pub keeper: Keeper,
}

impl StreamEncoder for TranslatedStream {
    fn frame(&mut self, frame: &Frame, out: &mut BytesMut) {
        self.encoder.frame(frame, out);
    }

    fn error(&mut self, error: &GatewayError, out: &mut BytesMut) {
        self.encoder.error(error, out);
    }

    fn finish(&mut self, out: &mut BytesMut) {
        self.encoder.finish(out);
    }

    fn pending(&mut self) -> Option<Pending> {
        let finished = self.encoder.take_finished()?;
        let then = self.encoder.take_final_event().unwrap_or_default();
        let (keeper, turn) = (self.keeper.clone(), self.turn.clone());
        Some(Pending {
            work: Box::pin(async move { keeper.keep(&turn, &finished).await }),
            then,
        })
    }
}

/// A native target's Responses stream, relayed as it came; its final event waits until the
/// response is pinned to the target.
pub struct NativeStream {
    pub keeper: Keeper,
    pub provider: String,
    held: Option<(String, Bytes)>,
}

impl NativeStream {
    pub fn new(keeper: Keeper, provider: &str) -> Self {
        Self {
            keeper,
            provider: provider.to_owned(),
            held: None,
        }
    }
}

impl StreamEncoder for NativeStream {
    fn frame(&mut self, frame: &Frame, out: &mut BytesMut) {
        if frame.last
            && self.keeper.store.is_some()
            && let Some(id) = response_id(&frame.data)
        {
            let mut bytes = BytesMut::new();
            frame.write_sse(&mut bytes);
            self.held = Some((id, bytes.freeze()));
            return;
        }
        frame.write_sse(out);
    }

    fn error(&mut self, error: &GatewayError, out: &mut BytesMut) {
        let body = serde_json::json!({
            "type": "error", "code": error.code(), "message": error.to_string(), "param": null,
        });
        crate::providers::write_sse_event(Some(b"error"), body.to_string().as_bytes(), out);
    }

    fn finish(&mut self, _out: &mut BytesMut) {}

    fn pending(&mut self) -> Option<Pending> {
        let (id, then) = self.held.take()?;
        let (keeper, provider) = (self.keeper.clone(), self.provider.clone());
        Some(Pending {
            work: Box::pin(async move { keeper.pin(&id, &provider).await }),
            then,
        })
    }
}

#[cfg(test)]
mod tests;
