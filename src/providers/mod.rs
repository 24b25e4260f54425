//! Provider adapters: each turns an OpenAI-shaped request into its upstream's wire format and
//! the upstream's answer (whole, or streamed as SSE) back into OpenAI shape, with usage.

pub mod anthropic;
mod event_stream;
pub mod gemini;
mod http1_pool;
pub(crate) mod http1_wire;
pub mod mock;
pub mod openai;
pub mod sse;
pub mod translate;
mod upstream;
mod usage_scan;

pub use upstream::IDLE;

use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;
use serde::Deserialize;

use crate::body::JsonBody;
use crate::config::{ProviderConfig, Timeouts};
use crate::error::GatewayError;

/// Token counts of one exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// Prompt tokens read from the provider's prompt cache (included in `prompt_tokens`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// Prompt tokens written to the provider's prompt cache (Anthropic; included in `prompt_tokens`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
}

/// OpenAI's `usage` object as it appears on the wire.
#[derive(Debug, Deserialize)]
pub struct WireUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Debug, Deserialize)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct CompletionDetails {
    reasoning_tokens: Option<u64>,
}

impl WireUsage {
    /// The usage object (or `null`) at the start of `value`, which may go on past it; `None`
    /// if it is not one. Compactly written ones are read by a byte walk, others by serde.
    pub fn read(value: &[u8]) -> Option<Option<Self>> {
        if value.starts_with(b"null") {
            return Some(None);
        }
        if let Some(usage) = usage_scan::compact(value) {
            return Some(Some(usage));
        }
        let mut de = serde_json::Deserializer::from_slice(value);
        <Option<Self> as Deserialize>::deserialize(&mut de).ok()
    }
}

impl From<WireUsage> for Usage {
    fn from(w: WireUsage) -> Self {
        Usage {
            prompt_tokens: w.prompt_tokens,
            completion_tokens: w.completion_tokens,
            total_tokens: w
                .total_tokens
                .unwrap_or(w.prompt_tokens + w.completion_tokens),
            cached_tokens: w.prompt_tokens_details.and_then(|d| d.cached_tokens),
            cache_write_tokens: None,
            reasoning_tokens: w.completion_tokens_details.and_then(|d| d.reasoning_tokens),
        }
    }
}

/// One SSE event of an answer, with what the gateway needs to know about it: an OpenAI
/// `chat.completion.chunk` (or the closing `[DONE]`), or, where a client's dialect is passed
/// through to a target that speaks it, that dialect's own event (with its `event:` name).
#[derive(Debug, Clone, Default)]
pub struct Frame {
    /// The `event:` name, for dialects that name their events (Anthropic's Messages).
    pub event: Option<Bytes>,
    /// The `data:` payload.
    pub data: Bytes,
    /// The answer's last event (`[DONE]`, `message_stop`): the stream ended as it should.
    pub last: bool,
    pub usage: Option<Usage>,
    /// A chunk with no choices that only carries usage (sent because the gateway asked).
    pub usage_only: bool,
    /// Carries generated content (text, tool call or reasoning): marks time to first token.
    pub has_output: bool,
    /// An error event from the upstream; the stream ends after it.
    pub error: Option<String>,
    /// The text it generates (content, reasoning, tool arguments where known), to charge an
    /// abandoned stream for what it produced.
    pub text: String,
    /// The text is not in `text` but in `data`, an OpenAI chat chunk, to be read from it only
    /// if needed ([`Frame::generated_text`]).
    pub text_in_chat_chunk: bool,
    /// An OpenAI chat chunk's one `content` string (quotes included), where it is the chunk's
    /// only output: a translator reads it there ([`Frame::chat_text_delta`]). Two `u32`s: a
    /// frame is moved several times an event, and every byte of it with it.
    pub text_span: Option<(u32, u32)>,
}

impl Frame {
    pub fn new(data: String, has_output: bool) -> Frame {
        Frame {
            data: Bytes::from(data),
            has_output,
            ..Frame::default()
        }
    }

    /// The text this frame generates.
    pub fn generated_text(&self) -> std::borrow::Cow<'_, str> {
        if self.text_in_chat_chunk {
            std::borrow::Cow::Owned(openai::chunk_text(&self.data))
        } else {
            std::borrow::Cow::Borrowed(&self.text)
        }
    }

    /// The text of a chat chunk that carries a text token and nothing else (no reasoning,
    /// tool call, finish or error): read where it stands instead of parsing the chunk.
    /// `None`: the chunk is to be parsed whole.
    pub fn chat_text_delta(&self) -> Option<std::borrow::Cow<'_, str>> {
        let (start, end) = self.text_span?;
        openai::text_delta(&self.data, start as usize..end as usize)
    }

    pub fn done() -> Frame {
        Frame {
            data: Bytes::from_static(b"[DONE]"),
            last: true,
            ..Frame::default()
        }
    }

    /// A named event passed through as it came (a dialect's own event from a target that
    /// speaks it); `kind` is the event's `type`, else its SSE `event:` name.
    pub fn named(kind: &str, event: &str, data: &str) -> Frame {
        let name = if kind.is_empty() { event } else { kind };
        Frame {
            event: Some(Bytes::copy_from_slice(name.as_bytes())),
            data: Bytes::copy_from_slice(data.as_bytes()),
            ..Frame::default()
        }
    }

    /// The event's name (for named frames).
    pub fn event_name(&self) -> &str {
        self.event
            .as_deref()
            .and_then(|e| std::str::from_utf8(e).ok())
            .unwrap_or("")
    }

    pub fn is_done(&self) -> bool {
        self.last
    }

    /// Appends the SSE wire form (`event: ...` where named, `data: ...` and a blank line).
    pub fn write_sse(&self, out: &mut bytes::BytesMut) {
        write_sse_event(self.event.as_deref(), &self.data, out);
    }
}

/// Appends one SSE event: `event: NAME` (when named), `data: DATA` and a blank line.
pub fn write_sse_event(event: Option<&[u8]>, data: &[u8], out: &mut bytes::BytesMut) {
    out.reserve(data.len() + event.map_or(0, |e| e.len() + 8) + 8);
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event);
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

pub type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame, GatewayError>> + Send>>;

/// A whole (non-streamed) OpenAI-shaped JSON answer.
#[derive(Debug)]
pub struct Complete {
    pub body: Bytes,
    pub usage: Option<Usage>,
}

pub enum ChatReply {
    Complete(Complete),
    Stream(FrameStream),
}

/// What a call needs besides the request body.
#[derive(Debug, Clone, Copy)]
pub struct CallOptions<'a> {
    pub upstream_model: &'a str,
    /// First byte, idle and total timeouts for this call (the target's).
    pub timeouts: &'a Timeouts,
    /// Largest whole response body read into memory.
    pub max_response: u64,
}

#[derive(Debug)]
pub enum Provider {
    /// Boxed: the largest by far (its endpoints are parsed once, up front).
    OpenAi(Box<openai::OpenAiProvider>),
    Anthropic(anthropic::AnthropicProvider),
    Gemini(gemini::GeminiProvider),
    Mock(mock::MockProvider),
    /// Configured but unusable (no API key): its models are not listed, and asking for one
    /// says why.
    Disabled(String),
}

impl Provider {
    pub fn from_config(name: &str, config: &ProviderConfig) -> Result<Provider, String> {
        let missing_key = |key: &Option<String>| key.as_deref().is_none_or(str::is_empty);
        let disabled =
            || Provider::Disabled(format!("provider {name:?} has no API key configured"));
        Ok(match config {
            ProviderConfig::Azure(c) if missing_key(&c.api_key) => disabled(),
            ProviderConfig::Azure(c) => {
                Provider::OpenAi(Box::new(openai::OpenAiProvider::azure(name, c)?))
            }
            ProviderConfig::Anthropic(c) if missing_key(&c.api_key) => disabled(),
            ProviderConfig::Anthropic(c) => {
                Provider::Anthropic(anthropic::AnthropicProvider::new(name, c)?)
            }
            ProviderConfig::Gemini(c) if missing_key(&c.api_key) => disabled(),
            ProviderConfig::Gemini(c) => Provider::Gemini(gemini::GeminiProvider::new(name, c)?),
            ProviderConfig::Mock(c) => Provider::Mock(mock::MockProvider::new(c)),
            other => match other.openai_preset() {
                Some((preset, c))
                    if preset.needs_key(c.base_url.is_some()) && missing_key(&c.api_key) =>
                {
                    disabled()
                }
                Some((preset, c)) => {
                    Provider::OpenAi(Box::new(openai::OpenAiProvider::new(name, preset, c)?))
                }
                None => return Err(format!("provider {name:?}: unsupported type")),
            },
        })
    }

    /// Why this provider cannot serve requests, if it cannot.
    pub fn unavailable(&self) -> Option<&str> {
        match self {
            Provider::Disabled(reason) => Some(reason),
            _ => None,
        }
    }

    /// The wire format, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Provider::OpenAi(_) => "openai",
            Provider::Anthropic(_) => "anthropic",
            Provider::Gemini(_) => "gemini",
            Provider::Mock(_) => "mock",
            Provider::Disabled(_) => "disabled",
        }
    }

    /// A chat completion; `stream` says whether the client asked for SSE.
    pub async fn chat(
        &self,
        body: JsonBody,
        stream: bool,
        opts: CallOptions<'_>,
    ) -> Result<ChatReply, GatewayError> {
        // The translating adapters' futures are boxed: the widest arm sets the size of every
        // request's future, which is moved by value on its way up (a copy of its whole size).
        match self {
            Provider::OpenAi(p) => p.chat(body, stream, opts).await,
            Provider::Anthropic(p) => Box::pin(p.chat(body, stream, opts)).await,
            Provider::Gemini(p) => Box::pin(p.chat(body, stream, opts)).await,
            Provider::Mock(p) => Box::pin(p.chat(body, stream, opts)).await,
            Provider::Disabled(reason) => Err(GatewayError::ProviderUnavailable(reason.clone())),
        }
    }

    pub async fn embeddings(
        &self,
        body: JsonBody,
        opts: CallOptions<'_>,
    ) -> Result<Complete, GatewayError> {
        match self {
            Provider::OpenAi(p) => p.embeddings(body, opts).await,
            Provider::Gemini(p) => p.embeddings(body, opts).await,
            Provider::Mock(p) => p.embeddings(body, opts).await,
            Provider::Anthropic(_) => Err(GatewayError::InvalidRequest(
                "Anthropic models do not offer embeddings".into(),
            )),
            Provider::Disabled(reason) => Err(GatewayError::ProviderUnavailable(reason.clone())),
        }
    }
}
