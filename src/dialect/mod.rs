//! Client dialects: each chat-like endpoint is a small definition on the one pipeline in
//! `proxy/`. A dialect says how its request becomes the canonical (OpenAI chat) request, which
//! targets speak it natively (then the client's body passes through), how a canonical answer
//! and stream are written back in it, and its error envelope. The pipeline itself (route, auth,
//! ACL, model access, guard, budget, failover, provider, log and metrics) knows no dialect.

pub mod canonical;
pub mod messages;
pub mod responses;
mod text_or_list;

pub(crate) use text_or_list::TextOrList;

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};

use crate::body::JsonBody;
use crate::config::{DialectsConfig, PromptDecoratorConfig};
use crate::error::GatewayError;
use crate::providers::{CallOptions, ChatReply, Complete, Frame, Provider};

/// An object of `members`, the values moved in (`json!` serialises what it is given: a copy
/// of every prompt's and answer's text).
pub(crate) fn object<const N: usize>(members: [(&str, serde_json::Value); N]) -> serde_json::Value {
    serde_json::Value::Object(
        members
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect(),
    )
}

/// A chat-like endpoint's dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI Chat Completions (`/v1/chat/completions`): the canonical form itself.
    Chat,
    /// Anthropic Messages (`/v1/messages`).
    Messages,
    /// OpenAI Responses (`/v1/responses`).
    Responses,
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
    /// A Responses turn on translated paths: the response being built and its conversation.
    pub turn: Option<responses::Turn>,
    /// Which targets may answer (a Responses chain stays where its id is known).
    pub filter: responses::TargetFilter,
}

/// What writing an answer back needs to know.
#[derive(Debug, Clone)]
pub struct AnswerContext {
    /// The model as the client named it.
    pub model: String,
    /// The gateway's prompt estimate, for dialects that report input tokens up front
    /// (translated Messages streams; zero where no one reads it).
    pub prompt_estimate: u64,
    pub client_wants_usage: bool,
    /// The provider that answers.
    pub provider: String,
    /// Responses: the turn being answered and where its answer is kept.
    pub turn: Option<responses::Turn>,
    pub keeper: Option<responses::Keeper>,
}

/// Writes an answer's frames to the client in its dialect.
pub trait StreamEncoder: Send + 'static {
    /// One upstream frame (already read for usage and accounting).
    fn frame(&mut self, frame: &Frame, out: &mut BytesMut);
    /// An error after the answer's head was sent: it travels as an event.
    fn error(&mut self, error: &GatewayError, out: &mut BytesMut);
    /// The upstream's stream ended: whatever the client is still owed.
    fn finish(&mut self, out: &mut BytesMut);
    /// Bytes held back until some work is done (a response store's write, so that a chained
    /// request made right after the final event finds the response).
    fn pending(&mut self) -> Option<Pending> {
        None
    }
}

/// Work to finish before `then` is sent.
pub struct Pending {
    pub work: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
    pub then: Bytes,
}

impl Dialect {
    /// The endpoint's name in logs and metrics.
    pub fn endpoint(self) -> &'static str {
        match self {
            Dialect::Chat => "chat",
            Dialect::Messages => "messages",
            Dialect::Responses => "responses",
        }
    }

    /// The dialect whose error envelope a path's errors use (before its body is read:
    /// authentication failures included).
    pub fn for_path(endpoint: &str) -> Dialect {
        if endpoint.starts_with("/v1/messages") {
            Dialect::Messages
        } else if endpoint.starts_with("/v1/responses") {
            Dialect::Responses
        } else {
            Dialect::Chat
        }
    }

    /// Reads the client's body. Grows with the body: run it off the async workers when large.
    /// `betas`: the client's `anthropic-beta` values (named as dropped on translated paths);
    /// `continued`: what a Responses request's `previous_response_id` continues.
    pub fn decode(
        self,
        body: JsonBody,
        options: &DialectsConfig,
        betas: Option<String>,
        continued: responses::Continued,
    ) -> Result<Decoded, GatewayError> {
        match self {
            Dialect::Chat => decode_chat(body),
            Dialect::Responses => {
                let raw = body.to_bytes();
                let c = responses::request::to_canonical(&raw, &continued.history)?;
                let model = body
                    .get::<String>("model")
                    .and_then(Result::ok)
                    .unwrap_or_default();
                let mut shape = responses::answer::ResponseShape::new(&model);
                shape.instructions = c.instructions;
                shape.previous_response_id = c.previous_response_id;
                shape.store = c.store;
                shape.custom_tools = c.custom_tools;
                let mut conversation = continued.history;
                conversation.extend(c.input_messages);
                Ok(Decoded {
                    canonical: JsonBody::from_value(&c.body)?,
                    native: Some(body),
                    stream: c.stream,
                    client_wants_usage: false,
                    dropped: c.dropped,
                    turn: Some(responses::Turn {
                        shape,
                        conversation,
                    }),
                    filter: continued.filter,
                })
            }
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
                    turn: None,
                    filter: responses::TargetFilter::Any,
                })
            }
        }
    }

    /// Whether `provider` speaks this dialect, so that the client's body passes through.
    pub fn native_to(self, provider: &Provider) -> bool {
        match (self, provider) {
            (Dialect::Messages, Provider::Anthropic(_)) => true,
            (Dialect::Responses, Provider::OpenAi(p)) => p.serves_responses(),
            _ => false,
        }
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
            (Dialect::Responses, Provider::OpenAi(p)) => p.responses(body, stream, opts).await,
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

    /// A whole answer in this dialect: a canonical one translated, a native one as it came.
    /// A Responses answer is kept (translated) or pinned to its target (native) first.
    pub async fn encode_whole(
        self,
        complete: Complete,
        native: bool,
        ctx: &AnswerContext,
    ) -> Result<Complete, String> {
        match (self, native) {
            (Dialect::Chat, _) | (Dialect::Messages, true) => Ok(complete),
            (Dialect::Messages, false) => {
                let usage = complete.usage.unwrap_or_default();
                Ok(Complete {
                    body: messages::answer::whole(&complete.body, &usage, &ctx.model)?,
                    usage: complete.usage,
                })
            }
            (Dialect::Responses, true) => {
                if let (Some(keeper), Some(id)) =
                    (&ctx.keeper, responses::response_id(&complete.body))
                {
                    keeper.pin(&id, &ctx.provider).await;
                }
                Ok(complete)
            }
            (Dialect::Responses, false) => {
                let usage = complete.usage.unwrap_or_default();
                let turn = ctx.turn.as_ref().ok_or("no Responses turn")?;
                let finished = responses::answer::whole(&complete.body, &usage, &turn.shape)?;
                if let Some(keeper) = &ctx.keeper {
                    keeper.keep(turn, &finished).await;
                }
                Ok(Complete {
                    body: Bytes::from(crate::json_out::to_vec(&finished.response)),
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
            (Dialect::Responses, true) => Box::new(responses::NativeStream::new(
                ctx.keeper.clone().unwrap_or_default(),
                &ctx.provider,
            )),
            (Dialect::Responses, false) => {
                let turn = ctx.turn.clone().unwrap_or_else(|| responses::Turn {
                    shape: responses::answer::ResponseShape::new(&ctx.model),
                    conversation: Vec::new(),
                });
                Box::new(responses::TranslatedStream {
                    encoder: responses::answer::ResponsesEncoder::new(turn.shape.clone()),
                    turn,
                    keeper: ctx.keeper.clone().unwrap_or_default(),
                })
            }
        }
    }

    /// The error as a response in this dialect's envelope.
    pub fn error_response(self, error: GatewayError) -> Response {
        match self {
            Dialect::Chat | Dialect::Responses => error.into_response(),
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
        turn: None,
        filter: responses::TargetFilter::Any,
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

/// A written event stream as (event name, data) pairs, for the dialects' golden tests.
#[cfg(test)]
pub(crate) fn test_events(bytes: &[u8]) -> Vec<(String, serde_json::Value)> {
    let text = std::str::from_utf8(bytes).unwrap_or_default();
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .filter_map(|e| {
            let (name, data) = e.split_once('\n')?;
            Some((
                name.strip_prefix("event: ")?.to_owned(),
                serde_json::from_str(data.strip_prefix("data: ")?).ok()?,
            ))
        })
        .collect()
}
