//! Client dialects: each chat-like endpoint is a small definition on the one pipeline in
//! `proxy/`. A dialect says how its request becomes the canonical (OpenAI chat) request, which
//! targets speak it natively (then the client's body passes through), how a canonical answer
//! and stream are written back in it, and its error envelope. The pipeline itself (route, auth,
//! ACL, model access, guard, budget, failover, provider, log and metrics) knows no dialect.

pub mod messages;

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};

use crate::body::JsonBody;
use crate::config::{DialectsConfig, PromptDecoratorConfig};
use crate::error::GatewayError;
use crate::providers::{CallOptions, ChatReply, Complete, Frame, Provider};

/// A chat-like endpoint's dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI Chat Completions (`/v1/chat/completions`): the canonical form itself.
    Chat,
    /// Anthropic Messages (`/v1/messages`).
    Messages,
}

/// A client's request read for the pipeline.
pub struct Decoded {
    /// The canonical (OpenAI chat) request: what the guard reads, the estimate counts, and
    /// targets that do not speak the dialect get.
    pub canonical: JsonBody,
    /// The client's own body, for targets that speak its dialect (none for chat, whose
    /// canonical body is the client's).
    pub native: Option<JsonBody>,
    pub stream: bool,
    /// The client asked for the final usage chunk (chat's `stream_options.include_usage`).
    pub client_wants_usage: bool,
    /// What the canonical request leaves out, named in the request log.
    pub dropped: Vec<String>,
}

/// What writing an answer back needs to know.
#[derive(Debug, Clone)]
pub struct AnswerContext {
    /// The model as the client named it.
    pub model: String,
    /// The gateway's prompt estimate, for dialects that report input tokens up front.
    pub prompt_estimate: u64,
    pub client_wants_usage: bool,
}

/// Writes an answer's frames to the client in its dialect.
pub trait StreamEncoder: Send + 'static {
    /// One upstream frame (already read for usage and accounting).
    fn frame(&mut self, frame: &Frame, out: &mut BytesMut);
    /// An error after the answer's head was sent: it travels as an event.
    fn error(&mut self, error: &GatewayError, out: &mut BytesMut);
    /// The upstream's stream ended: whatever the client is still owed.
    fn finish(&mut self, out: &mut BytesMut);
}

impl Dialect {
    /// The endpoint's name in logs and metrics.
    pub fn endpoint(self) -> &'static str {
        match self {
            Dialect::Chat => "chat",
            Dialect::Messages => "messages",
        }
    }

    /// The dialect whose error envelope a path's errors use (before its body is read:
    /// authentication failures included).
    pub fn for_path(endpoint: &str) -> Dialect {
        if endpoint.starts_with("/v1/messages") {
            Dialect::Messages
        } else {
            Dialect::Chat
        }
    }

    /// Reads the client's body. Grows with the body: run it off the async workers when large.
    /// `betas`: the client's `anthropic-beta` values (named as dropped on translated paths).
    pub fn decode(
        self,
        body: JsonBody,
        options: &DialectsConfig,
        betas: Option<String>,
    ) -> Result<Decoded, GatewayError> {
        match self {
            Dialect::Chat => decode_chat(body),
            Dialect::Messages => {
                let mut canonical = messages::request::to_canonical(
                    &body.to_bytes(),
                    messages::request::DecodeOptions {
                        strip_attribution: options.messages.strip_attribution,
                        max_tokens_optional: false,
                    },
                )?;
                if let Some(betas) = betas {
                    // Betas are features of Anthropic's API; other targets have none of them.
                    canonical.dropped.push(format!("anthropic-beta: {betas}"));
                }
                Ok(Decoded {
                    canonical: JsonBody::from_value(&canonical.body)?,
                    native: Some(body),
                    stream: canonical.stream,
                    client_wants_usage: false,
                    dropped: canonical.dropped,
                })
            }
        }
    }

    /// Whether `provider` speaks this dialect, so that the client's body passes through.
    pub fn native_to(self, provider: &Provider) -> bool {
        matches!(
            (self, provider),
            (Dialect::Messages, Provider::Anthropic(_))
        )
    }

    /// Sends the client's own body to a target that speaks the dialect.
    pub async fn call_native(
        self,
        provider: &Provider,
        body: JsonBody,
        stream: bool,
        opts: CallOptions<'_>,
        headers: &HeaderMap,
    ) -> Result<ChatReply, GatewayError> {
        match (self, provider) {
            (Dialect::Messages, Provider::Anthropic(p)) => {
                p.messages(body, stream, opts, headers).await
            }
            _ => Err(GatewayError::Internal(
                "no native call for this dialect and provider".into(),
            )),
        }
    }

    /// The operator's decorator messages added to a native body.
    pub fn decorate_native(
        self,
        body: &mut JsonBody,
        route: Option<&PromptDecoratorConfig>,
        model: Option<&PromptDecoratorConfig>,
    ) {
        if self == Dialect::Messages {
            messages::decorate_native(body, route, model);
        }
    }

    /// A whole canonical answer in this dialect (native answers are already in it).
    pub fn encode_whole(self, complete: Complete, ctx: &AnswerContext) -> Result<Complete, String> {
        match self {
            Dialect::Chat => Ok(complete),
            Dialect::Messages => {
                let usage = complete.usage.unwrap_or_default();
                Ok(Complete {
                    body: messages::answer::whole(&complete.body, &usage, &ctx.model)?,
                    usage: complete.usage,
                })
            }
        }
    }

    /// The encoder of a streamed answer; `native`: the target's events are this dialect's.
    pub fn stream_encoder(self, native: bool, ctx: &AnswerContext) -> Box<dyn StreamEncoder> {
        match (self, native) {
            (Dialect::Chat, _) => Box::new(ChatEncoder {
                client_wants_usage: ctx.client_wants_usage,
            }),
            (Dialect::Messages, true) => Box::new(messages::answer::NativeEncoder),
            (Dialect::Messages, false) => Box::new(messages::answer::MessagesEncoder::new(
                &ctx.model,
                ctx.prompt_estimate,
            )),
        }
    }

    /// The error as a response in this dialect's envelope.
    pub fn error_response(self, error: GatewayError) -> Response {
        match self {
            Dialect::Chat => error.into_response(),
            Dialect::Messages => messages::error_response(error),
        }
    }
}

fn decode_chat(body: JsonBody) -> Result<Decoded, GatewayError> {
    if !has_messages(&body) {
        return Err(GatewayError::InvalidRequest(
            "`messages` must be a non-empty array".into(),
        ));
    }
    let stream = match body.get::<bool>("stream") {
        None => false,
        Some(Ok(b)) => b,
        Some(Err(_)) => {
            return Err(GatewayError::InvalidRequest(
                "`stream` must be a boolean".into(),
            ));
        }
    };
    #[derive(serde::Deserialize)]
    struct StreamOptions {
        include_usage: Option<bool>,
    }
    let client_wants_usage = body
        .get::<StreamOptions>("stream_options")
        .and_then(Result::ok)
        .and_then(|o| o.include_usage)
        == Some(true);
    Ok(Decoded {
        canonical: body,
        native: None,
        stream,
        client_wants_usage,
        dropped: Vec::new(),
    })
}

/// `messages` is a non-empty array.
fn has_messages(body: &JsonBody) -> bool {
    let Some(raw) = body.raw("messages") else {
        return false;
    };
    let mut inner = raw.iter().filter(|b| !b.is_ascii_whitespace());
    inner.next() == Some(&b'[') && inner.next().is_some_and(|b| *b != b']')
}

/// OpenAI chunks go out as they came, but for the usage chunk the gateway asked for itself.
struct ChatEncoder {
    client_wants_usage: bool,
}

impl StreamEncoder for ChatEncoder {
    fn frame(&mut self, frame: &Frame, out: &mut BytesMut) {
        if !frame.usage_only || self.client_wants_usage {
            frame.write_sse(out);
        }
    }

    fn error(&mut self, error: &GatewayError, out: &mut BytesMut) {
        // As OpenAI does: an error event with the error body.
        crate::providers::write_sse_event(None, &Bytes::from(error.body().to_string()), out);
    }

    fn finish(&mut self, _out: &mut BytesMut) {}
}
