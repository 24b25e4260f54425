//! OpenAI-compatible upstreams: OpenAI, Ollama, vLLM, llama.cpp, and the presets that speak
//! the same wire format (Azure OpenAI, Mistral, Groq, DeepSeek, OpenRouter). The request body
//! is passed through with minimal edits (model name, usage for streams), so fields the gateway
//! does not know survive; responses are passed through byte for byte, peeking only at usage.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use super::translate::StreamTranslator;
use super::upstream::{HttpUpstream, build_url, parse_base};
use super::{CallOptions, ChatReply, Complete, Frame, Usage, WireUsage};
use crate::body::JsonBody;
use crate::config::{AzureProviderConfig, OpenAiPreset, OpenAiProviderConfig};
use crate::error::GatewayError;
use crate::telemetry::redact::{Found, SecretRedactor};

#[derive(Debug)]
pub struct OpenAiProvider {
    http: HttpUpstream,
    base_url: url::Url,
    /// Built once: the endpoints of a plain (non-Azure) server.
    chat_url: url::Url,
    embeddings_url: url::Url,
    /// Azure puts the deployment (our upstream model) and the API version in the URL.
    azure_api_version: Option<String>,
    /// Whether to ask for `stream_options.include_usage` (servers that reject it send usage
    /// unasked).
    stream_usage: bool,
    /// `/responses`, for servers that serve OpenAI's Responses API (then Responses requests
    /// pass through).
    responses_url: Option<url::Url>,
}

impl OpenAiProvider {
    pub fn new(
        name: &str,
        preset: OpenAiPreset,
        config: &OpenAiProviderConfig,
    ) -> Result<Self, String> {
        let mut http = HttpUpstream::new(name, &config.timeouts, &config.headers, &config.tls)?;
        if let Some(key) = config.api_key.as_deref().filter(|k| !k.is_empty()) {
            http = http.with_secret_header("authorization", format!("Bearer {key}"), key)?;
        }
        let base_url = parse_base(
            config
                .base_url
                .as_deref()
                .unwrap_or(preset.default_base_url()),
        )?;
        // OpenAI's own API serves Responses; other servers say so in their config.
        let is_openai = preset == OpenAiPreset::OpenAi
            && base_url.host_str().is_some_and(|h| h == "api.openai.com");
        let responses_url = match config.responses.unwrap_or(is_openai) {
            true => Some(endpoint(&base_url, &["responses"])?),
            false => None,
        };
        Ok(Self {
            http,
            chat_url: endpoint(&base_url, &["chat", "completions"])?,
            embeddings_url: endpoint(&base_url, &["embeddings"])?,
            base_url,
            azure_api_version: None,
            stream_usage: config
                .stream_usage
                .unwrap_or(preset.accepts_stream_options()),
            responses_url,
        })
    }

    pub fn azure(name: &str, config: &AzureProviderConfig) -> Result<Self, String> {
        let mut http = HttpUpstream::new(name, &config.timeouts, &config.headers, &config.tls)?;
        if let Some(key) = config.api_key.as_deref().filter(|k| !k.is_empty()) {
            http = http.with_secret_header("api-key", key.to_owned(), key)?;
        }
        let base_url = parse_base(&config.base_url)?;
        Ok(Self {
            http,
            chat_url: base_url.clone(),
            embeddings_url: base_url.clone(),
            // Azure's v1 API: the deployment is the body's `model`.
            responses_url: Some(endpoint(&base_url, &["openai", "v1", "responses"])?),
            base_url,
            azure_api_version: Some(config.api_version.clone()),
            stream_usage: true,
        })
    }

    fn url_for(
        &self,
        endpoint: &[&str],
        upstream_model: &str,
    ) -> Result<Cow<'_, url::Url>, GatewayError> {
        match &self.azure_api_version {
            None if endpoint == ["embeddings"] => Ok(Cow::Borrowed(&self.embeddings_url)),
            None => Ok(Cow::Borrowed(&self.chat_url)),
            Some(version) => {
                let segments: Vec<&str> = ["openai", "deployments", upstream_model]
                    .into_iter()
                    .chain(endpoint.iter().copied())
                    .collect();
                build_url(&self.base_url, &segments, &[("api-version", version)]).map(Cow::Owned)
            }
        }
    }

    /// The client's body goes through as it came, but for `model` and `stream_options`.
    pub async fn chat(
        &self,
        mut body: JsonBody,
        stream: bool,
        opts: CallOptions<'_>,
    ) -> Result<ChatReply, GatewayError> {
        body.set_str("model", opts.upstream_model);
        if !self.stream_usage {
            // Such servers (Mistral) refuse the field with a 422, even from the client, and
            // report stream usage unasked.
            body.remove("stream_options");
        } else if stream {
            // Always ask for the final usage chunk so tokens can be accounted; the proxy hides
            // it again from clients that did not ask for it.
            match body.get::<Map<String, Value>>("stream_options") {
                Some(Ok(mut options)) => {
                    options.insert("include_usage".into(), Value::Bool(true));
                    body.set("stream_options", &options);
                }
                // Most clients send none: the member is written as it will always read.
                _ => body.set_raw(
                    "stream_options",
                    bytes::Bytes::from_static(br#"{"include_usage":true}"#),
                ),
            }
        }
        let response = self
            .http
            .post_bytes(
                &*self.url_for(&["chat", "completions"], opts.upstream_model)?,
                body.to_bytes(),
                opts.timeouts,
            )
            .await?;
        if stream {
            self.http
                .event_stream(response, PassThrough)
                .map(ChatReply::Stream)
        } else {
            self.complete(response, opts.max_response, opts.timeouts.idle)
                .await
                .map(ChatReply::Complete)
        }
    }

    /// Whether this server serves the Responses API.
    pub fn serves_responses(&self) -> bool {
        self.responses_url.is_some()
    }

    /// A client's own Responses request, passed through with the model name and the key
    /// changed (`previous_response_id` and everything else unchanged); usage is read from
    /// the answer (`response.completed` for a stream).
    pub async fn responses(
        &self,
        mut body: JsonBody,
        stream: bool,
        opts: CallOptions<'_>,
    ) -> Result<ChatReply, GatewayError> {
        let url = self
            .responses_url
            .as_ref()
            .ok_or_else(|| GatewayError::Internal("no Responses API on this provider".into()))?;
        body.set_str("model", opts.upstream_model);
        let response = self
            .http
            .post_bytes(url, body.to_bytes(), opts.timeouts)
            .await?;
        if stream {
            return self
                .http
                .event_stream(
                    response,
                    NativeResponses {
                        provider: self.http.name.clone(),
                        ended: false,
                    },
                )
                .map(ChatReply::Stream);
        }
        let bytes = self
            .http
            .read_body(response, opts.max_response, opts.timeouts.idle)
            .await?;
        #[derive(Deserialize)]
        struct UsagePeek {
            usage: Option<ResponsesUsage>,
        }
        let peek: UsagePeek = serde_json::from_slice(&bytes)
            .map_err(|_| self.http.protocol_error("the answer is not JSON"))?;
        Ok(ChatReply::Complete(Complete {
            body: bytes,
            usage: peek.usage.map(Usage::from),
        }))
    }

    /// `POST /responses/input_tokens`, passed through.
    pub async fn responses_input_tokens(
        &self,
        mut body: JsonBody,
        opts: CallOptions<'_>,
    ) -> Result<Complete, GatewayError> {
        let mut url = self
            .responses_url
            .clone()
            .ok_or_else(|| GatewayError::Internal("no Responses API on this provider".into()))?;
        url.path_segments_mut()
            .map_err(|()| self.http.protocol_error("the base URL cannot take a path"))?
            .push("input_tokens");
        body.set_str("model", opts.upstream_model);
        let response = self
            .http
            .post_bytes(&url, body.to_bytes(), opts.timeouts)
            .await?;
        let body = self
            .http
            .read_body(response, opts.max_response, opts.timeouts.idle)
            .await?;
        Ok(Complete { body, usage: None })
    }

    pub async fn embeddings(
        &self,
        mut body: JsonBody,
        opts: CallOptions<'_>,
    ) -> Result<Complete, GatewayError> {
        body.set_str("model", opts.upstream_model);
        let response = self
            .http
            .post_bytes(
                &*self.url_for(&["embeddings"], opts.upstream_model)?,
                body.to_bytes(),
                opts.timeouts,
            )
            .await?;
        self.complete(response, opts.max_response, opts.timeouts.idle)
            .await
    }

    async fn complete(
        &self,
        response: super::upstream::UpstreamResponse,
        limit: u64,
        idle: std::time::Duration,
    ) -> Result<Complete, GatewayError> {
        let body = self.http.read_body(response, limit, idle).await?;
        let usage = answer_usage(&body)
            .ok_or_else(|| self.http.protocol_error("the response is not JSON"))?;
        Ok(Complete {
            body,
            usage: usage.map(Usage::from),
        })
    }
}

/// The usage of a whole chat answer. It stands last in the answers of OpenAI, vLLM, Ollama and
/// llama.cpp, so it is read where the last `"usage":` stands (those bytes cannot occur inside
/// a JSON string, where the quotes would be escaped) and the rest is passed through unparsed.
/// An answer written another way, or without usage, is parsed whole, which also refuses one
/// that is not JSON (`None`).
fn answer_usage(body: &[u8]) -> Option<Option<WireUsage>> {
    let looks_like_object = body.trim_ascii().first() == Some(&b'{');
    if looks_like_object
        && let Some(after) = after_last_usage_key(body)
        && let Some(Some(usage)) = WireUsage::read(&body[after..])
    {
        return Some(Some(usage));
    }
    #[derive(Deserialize)]
    struct UsagePeek {
        usage: Option<WireUsage>,
    }
    serde_json::from_slice::<UsagePeek>(body)
        .ok()
        .map(|peek| peek.usage)
}

/// Where the last `"usage":` of `body` ends. Found by its `u`, searched for backwards with
/// SIMD: what follows a usage object is numbers and token counts' names, nearly without a
/// `u` (a reverse substring search stepped through those bytes at ~4 instructions each).
fn after_last_usage_key(body: &[u8]) -> Option<usize> {
    const KEY: &[u8] = b"\"usage\":";
    let mut end = body.len();
    while let Some(u) = memchr::memrchr(b'u', &body[..end]) {
        if u > 0 && body[u - 1..].starts_with(KEY) {
            return Some(u - 1 + KEY.len());
        }
        end = u;
    }
    None
}

fn endpoint(base: &url::Url, segments: &[&str]) -> Result<url::Url, String> {
    build_url(base, segments, &[]).map_err(|e| e.to_string())
}

/// OpenAI chunks go through as they are; the gateway only peeks at them.
pub(crate) struct PassThrough;

impl StreamTranslator for PassThrough {
    fn on_event(&mut self, _event: &str, data: &str) -> Result<Vec<Frame>, GatewayError> {
        Ok(vec![peek_chunk(bytes::Bytes::copy_from_slice(
            data.as_bytes(),
        ))])
    }

    /// The chunk goes on as the bytes it came in.
    fn push_event_frames(
        &mut self,
        _event: &str,
        data: bytes::Bytes,
        secrets: &SecretRedactor,
        out: &mut std::collections::VecDeque<Frame>,
    ) -> Result<(), GatewayError> {
        out.push_back(peek_chunk_redacting(data, secrets));
        Ok(())
    }

    fn finish(&mut self) -> Result<Vec<Frame>, GatewayError> {
        Ok(Vec::new())
    }
}

/// The Responses API's usage object.
#[derive(Debug, Deserialize)]
pub struct ResponsesUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<PromptDetailsPeek>,
    #[serde(default)]
    output_tokens_details: Option<OutputDetailsPeek>,
}

#[derive(Debug, Deserialize)]
struct PromptDetailsPeek {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct OutputDetailsPeek {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl From<ResponsesUsage> for Usage {
    fn from(u: ResponsesUsage) -> Self {
        Usage {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            total_tokens: u.input_tokens + u.output_tokens,
            cached_tokens: u.input_tokens_details.and_then(|d| d.cached_tokens),
            cache_write_tokens: None,
            reasoning_tokens: u.output_tokens_details.and_then(|d| d.reasoning_tokens),
        }
    }
}

/// A Responses event stream passed through to a Responses client: every event goes out as
/// it came; the generated text is noted (for charging a stream cut short), usage is read from
/// the final event, and `response.failed` or `error` end it as failed.
pub struct NativeResponses {
    provider: String,
    ended: bool,
}

#[derive(Deserialize)]
struct ResponsesEventPeek {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    delta: Option<Value>,
    #[serde(default)]
    response: Option<ResponsePeek>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct ResponsePeek {
    #[serde(default)]
    usage: Option<ResponsesUsage>,
    #[serde(default)]
    error: Option<Value>,
}

impl StreamTranslator for NativeResponses {
    fn on_event(&mut self, event: &str, data: &str) -> Result<Vec<Frame>, GatewayError> {
        let peek: ResponsesEventPeek = super::translate::parse_event(&self.provider, data)?;
        let mut frame = Frame::named(&peek.kind, event, data);
        // A handle on the name's bytes (no copy), so the frame can be filled in below.
        let name = frame.event.clone().unwrap_or_default();
        let kind = std::str::from_utf8(&name).unwrap_or_default();
        if kind.ends_with(".delta")
            && let Some(Value::String(delta)) = peek.delta
        {
            frame.has_output = true;
            frame.text = delta;
        }
        match kind {
            "response.completed" | "response.incomplete" => {
                self.ended = true;
                frame.last = true;
                frame.usage = peek.response.and_then(|r| r.usage).map(Usage::from);
            }
            "response.failed" => {
                self.ended = true;
                let response = peek.response;
                frame.usage = None;
                frame.error = Some(
                    response
                        .and_then(|r| r.error)
                        .and_then(|e| e.get("message").and_then(Value::as_str).map(str::to_owned))
                        .unwrap_or_else(|| "the response failed".into()),
                );
            }
            "error" => {
                self.ended = true;
                frame.error = Some(peek.message.unwrap_or_else(|| "error".into()));
            }
            _ => {}
        }
        Ok(vec![frame])
    }

    fn finish(&mut self) -> Result<Vec<Frame>, GatewayError> {
        if self.ended {
            Ok(Vec::new())
        } else {
            Err(GatewayError::UpstreamProtocol {
                provider: self.provider.clone(),
                detail: "the event stream ended before response.completed".into(),
            })
        }
    }
}

/// Only the parts of a chunk the gateway looks at; everything else is skipped unparsed.
#[derive(Deserialize)]
struct ChunkPeek<'a> {
    #[serde(default, borrow)]
    choices: Option<Vec<ChoicePeek<'a>>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChoicePeek<'a> {
    #[serde(default, borrow)]
    delta: Option<DeltaPeek<'a>>,
}

impl<'a> ChunkPeek<'a> {
    /// Reads the three members the gateway needs where they stand (`"choices":`, `"usage":`,
    /// `"error":`), skipping the rest of the chunk unparsed: a chunk is mostly ids, names and
    /// timestamps. The key bytes cannot occur inside a JSON string (its quotes would be
    /// escaped). A chunk written another way (a space before a colon) is parsed whole.
    fn read(data: &'a [u8]) -> Option<Self> {
        use memchr::memmem::Finder;
        use std::sync::LazyLock;
        // Built once: a searcher costs more to build than to run over a chunk.
        static CHOICES: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"choices\":"));
        static USAGE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\":"));
        static ERROR: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"error\":"));
        fn value_at<'d, T: serde::Deserialize<'d>>(data: &'d [u8], at: usize) -> Option<T> {
            let mut de = serde_json::Deserializer::from_slice(&data[at..]);
            T::deserialize(&mut de).ok()
        }
        let after = |finder: &Finder<'static>| finder.find(data).map(|i| i + finder.needle().len());
        let choices = after(&CHOICES);
        let error = after(&ERROR);
        if choices.is_none() && error.is_none() {
            return serde_json::from_slice(data).ok();
        }
        Some(ChunkPeek {
            choices: choices.and_then(|at| value_at::<Vec<ChoicePeek>>(data, at)),
            usage: after(&USAGE)
                .and_then(|at| value_at::<Option<WireUsage>>(data, at))
                .flatten(),
            error: error
                .and_then(|at| value_at::<Option<Value>>(data, at))
                .flatten(),
        })
    }
}

/// A chunk's frame as a pass-through stream makes it (for the translators' tests).
#[cfg(test)]
pub(crate) fn scanned_frame(data: &str) -> Frame {
    peek_chunk(bytes::Bytes::from(data.to_owned()))
}

/// Borrowed from the event's bytes: no allocation per chunk unless a string has escapes.
#[derive(Deserialize)]
struct DeltaPeek<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<IgnoredAny>,
    #[serde(default, alias = "reasoning", borrow)]
    reasoning_content: Option<std::borrow::Cow<'a, str>>,
}

/// [`peek_chunk`] for an upstream's chunk not yet masked: the chunk's keys and the provider
/// keys are found in one search where they can be ([`SecretRedactor::with_keys`]); a chunk
/// that holds a provider key is masked first, then read as any other.
fn peek_chunk_redacting(data: bytes::Bytes, secrets: &SecretRedactor) -> Frame {
    let scanned = secrets
        .with_keys(&CHUNK_KEY_PATTERNS, &data)
        .map(|found| CompactChunk::scan_found(&data, found));
    match scanned {
        Some(Scan::Compact(scan)) => chunk_frame(data, Some(scan)),
        Some(Scan::Whole) => chunk_frame(data, None),
        Some(Scan::Secret) | None => peek_chunk(secrets.redact_bytes(data)),
    }
}

/// What the gateway needs of a streamed chunk: output or not, usage, error. A compact chunk
/// (as OpenAI, vLLM, Ollama and llama.cpp write them) is read by byte search alone; its text
/// is read only if it is needed ([`chunk_text`]: payload logging, or charging a stream that
/// ends without usage). Anything else is parsed.
fn peek_chunk(data: bytes::Bytes) -> Frame {
    let scan = CompactChunk::scan(&data);
    chunk_frame(data, scan)
}

/// The frame of a chunk: from its compact `scan`, or (`None`) by parsing it whole.
fn chunk_frame(data: bytes::Bytes, scan: Option<CompactChunk>) -> Frame {
    if &data[..] == b"[DONE]" {
        return Frame::done();
    }
    let mut frame = Frame {
        data,
        ..Frame::default()
    };
    if let Some(scan) = scan {
        frame.has_output = scan.has_output;
        frame.text_in_chat_chunk = scan.has_output;
        frame.usage_only = scan.no_choices && scan.usage.is_some();
        frame.usage = scan.usage.map(Usage::from);
        frame.text_span = scan.text.and_then(|span| {
            Some((
                u32::try_from(span.start).ok()?,
                u32::try_from(span.end).ok()?,
            ))
        });
        return frame;
    }
    let Some(peek) = ChunkPeek::read(&frame.data) else {
        return frame;
    };
    let choices = peek.choices.unwrap_or_default();
    frame.has_output = choices.iter().filter_map(|c| c.delta.as_ref()).any(|d| {
        d.content.as_deref().is_some_and(|c| !c.is_empty())
            || d.tool_calls.is_some()
            || d.reasoning_content
                .as_deref()
                .is_some_and(|c| !c.is_empty())
    });
    frame.text = texts_of(&choices);
    frame.usage_only = choices.is_empty() && peek.usage.is_some();
    frame.usage = peek.usage.map(Usage::from);
    frame.error = peek.error.map(|e| {
        super::upstream::error_message(serde_json::json!({ "error": e }).to_string().as_bytes())
    });
    frame
}

fn texts_of(choices: &[ChoicePeek<'_>]) -> String {
    choices
        .iter()
        .filter_map(|c| c.delta.as_ref())
        .flat_map(|d| [d.content.as_deref(), d.reasoning_content.as_deref()])
        .flatten()
        .collect()
}

/// The text of a compact chat chunk whose only output is one `content` string at `span` and
/// which finishes no choice: the shape of nearly every streamed token. Read where it stands
/// (the string alone parsed) instead of the chunk parsed whole, which cost ~6k instructions a
/// token in a translated stream. `None` when the chunk is to be parsed whole.
pub fn text_delta(data: &[u8], span: std::ops::Range<usize>) -> Option<std::borrow::Cow<'_, str>> {
    if !finishes_nothing(data) {
        return None;
    }
    serde_json::from_slice(data.get(span)?).ok()
}

/// Whether every `"finish_reason":` key in a compact chunk is `null` (or there is none). The
/// key's bytes cannot stand inside a string unescaped, so a match whose quote is not escaped
/// is the key.
fn finishes_nothing(data: &[u8]) -> bool {
    const KEY: &[u8] = b"\"finish_reason\":";
    // Made once: `memmem::find_iter` builds its searcher afresh each call (~600 instructions,
    // more than the search).
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(KEY));
    FINDER
        .find_iter(data)
        .all(|at| escaped_at(data, at) || data[at + KEY.len()..].starts_with(b"null"))
}

/// Whether the quote at `at` is escaped (an odd run of backslashes before it): then it is
/// inside a string, not the start of a key.
fn escaped_at(data: &[u8], at: usize) -> bool {
    data[..at].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

/// The generated text of a chat chunk (content and reasoning of every choice).
pub fn chunk_text(data: &[u8]) -> String {
    ChunkPeek::read(data)
        .and_then(|p| p.choices)
        .map(|choices| texts_of(&choices))
        .unwrap_or_default()
}

/// A compact chunk as found by byte search.
struct CompactChunk {
    has_output: bool,
    no_choices: bool,
    usage: Option<WireUsage>,
    /// The chunk's one `content` string, where it is its only output.
    text: Option<std::ops::Range<usize>>,
}

/// The keys [`CompactChunk::scan`] looks for, as they stand in compact JSON: the quotes and
/// the colon. Those bytes cannot lie inside a string (its quotes would be escaped), so where
/// the opening quote is not escaped, they are that key.
static CHUNK_KEY_PATTERNS: [&[u8]; 7] = [
    b"\"choices\":",
    b"\"error\":",
    b"\"usage\":",
    b"\"content\":",
    b"\"reasoning_content\":",
    b"\"reasoning\":",
    b"\"tool_calls\":",
];

/// What each of [`CHUNK_KEY_PATTERNS`] stands for.
const CHUNK_KEY_KINDS: [ChunkKey; 7] = [
    ChunkKey::Choices,
    ChunkKey::Error,
    ChunkKey::Usage,
    ChunkKey::Content,
    ChunkKey::Reasoning,
    ChunkKey::Reasoning,
    ChunkKey::ToolCalls,
];

/// What a key found in a chunk stands for (by the pattern that found it: no name compared
/// again).
#[derive(Clone, Copy)]
enum ChunkKey {
    Choices,
    Error,
    Usage,
    /// Generated text: `content`.
    Content,
    /// Generated reasoning: `reasoning_content`, `reasoning`.
    Reasoning,
    ToolCalls,
}

impl CompactChunk {
    /// `None` unless the chunk is written compactly (`"choices":[`, every key found followed
    /// by its value) and carries no error; the caller then parses it whole. The keys are
    /// found by one multi-pattern search (SIMD where the CPU has it), not by walking the
    /// chunk's strings: a chunk of ~150 bytes holds a dozen strings and two or three of
    /// these keys.
    fn scan(data: &[u8]) -> Option<Self> {
        static KEYS: std::sync::LazyLock<Option<aho_corasick::packed::Searcher>> =
            std::sync::LazyLock::new(|| {
                aho_corasick::packed::Config::new()
                    .match_kind(aho_corasick::packed::MatchKind::LeftmostFirst)
                    .builder()
                    .extend(CHUNK_KEY_PATTERNS)
                    .build()
            });
        let found = KEYS.as_ref()?.find_iter(data).map(|m| Found::Key {
            index: m.pattern().as_usize(),
            start: m.start(),
            end: m.end(),
        });
        match Self::scan_found(data, found) {
            Scan::Compact(chunk) => Some(chunk),
            Scan::Whole | Scan::Secret => None,
        }
    }

    /// The chunk read from what a search `found` in it, in order. Every match is looked at,
    /// even once the chunk is known not to be compact: a provider key further on must not go
    /// unseen.
    fn scan_found(data: &[u8], found: impl Iterator<Item = Found>) -> Scan {
        let mut members = Some(Members::default());
        for found in found {
            let Found::Key { index, start, end } = found else {
                return Scan::Secret;
            };
            // An escaped quote ends a longer key's name.
            if escaped_at(data, start) {
                continue;
            }
            if let Some(read) = &mut members
                && read.note(CHUNK_KEY_KINDS[index], end, data).is_none()
            {
                members = None;
            }
        }
        match members.and_then(|m| m.finish(data)) {
            Some(chunk) => Scan::Compact(chunk),
            None => Scan::Whole,
        }
    }
}

/// What [`CompactChunk::scan_found`] makes of a chunk.
enum Scan {
    Compact(CompactChunk),
    /// Not compact, or carrying an error: to be parsed whole.
    Whole,
    /// It holds a provider key: to be masked before anything else.
    Secret,
}

/// Where the string at the start of `value` ends: the index of its closing quote (`None` if
/// it has none).
fn string_end(value: &[u8]) -> Option<usize> {
    let mut at = 1;
    loop {
        at = crate::swar::quote_or_backslash(value, at)?;
        match value[at] {
            b'"' => return Some(at),
            _ => at += 2,
        }
    }
}

/// What [`CompactChunk::scan`] learns from the keys it meets.
#[derive(Default)]
struct Members {
    choices_at: Option<usize>,
    usage_at: Option<usize>,
    has_output: bool,
    /// The last `content` string met (quotes included), and how many there were.
    content: Option<std::ops::Range<usize>>,
    contents: u8,
    /// Reasoning or tool calls: output other than text.
    other_output: bool,
}

impl Members {
    /// The member `key` whose value starts at `value_at`; `None` if the chunk must be parsed
    /// whole (an error, or `choices` that is not an array).
    fn note(&mut self, key: ChunkKey, value_at: usize, data: &[u8]) -> Option<()> {
        let value = &data[value_at..];
        match key {
            ChunkKey::Choices if value.first() == Some(&b'[') => {
                self.choices_at = Some(value_at + 1)
            }
            ChunkKey::Choices | ChunkKey::Error => return None,
            // A string value that is not empty, or tool calls that are not null.
            ChunkKey::Content | ChunkKey::Reasoning => match value.first() {
                Some(b'"') => {
                    let end = string_end(value)?;
                    self.has_output |= end > 1;
                    if matches!(key, ChunkKey::Content) {
                        self.contents = self.contents.saturating_add(1);
                        self.content = Some(value_at..value_at + end + 1);
                    } else {
                        self.other_output |= end > 1;
                    }
                }
                Some(b) if b.is_ascii_whitespace() => return None,
                _ => {}
            },
            ChunkKey::ToolCalls | ChunkKey::Usage
                if value.first().is_none_or(u8::is_ascii_whitespace) =>
            {
                return None;
            }
            ChunkKey::ToolCalls => {
                let calls = !value.starts_with(b"null");
                self.has_output |= calls;
                self.other_output |= calls;
            }
            ChunkKey::Usage => self.usage_at = Some(value_at),
        }
        Some(())
    }

    fn finish(self, data: &[u8]) -> Option<CompactChunk> {
        let choices_at = self.choices_at?;
        let usage = match self.usage_at {
            Some(at) if !data[at..].starts_with(b"null") => Some(WireUsage::read(&data[at..])??),
            _ => None,
        };
        let only_text = self.contents == 1 && !self.other_output;
        Some(CompactChunk {
            has_output: self.has_output,
            no_choices: data.get(choices_at) == Some(&b']'),
            usage,
            text: self.content.filter(|_| only_text),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usage_of_a_whole_answer_is_read_where_it_stands() {
        let answer = br#"{"id":"c1","choices":[{"message":{"content":"say \"usage\": 99"}}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#;
        let usage = answer_usage(answer).unwrap().unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (7, 3));
        // Written with spaces, or with usage first: parsed whole, same result.
        let spaced = br#"{"usage" : {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}, "choices": []}"#;
        assert_eq!(answer_usage(spaced).unwrap().unwrap().completion_tokens, 2);
        assert!(answer_usage(br#"{"choices":[]}"#).unwrap().is_none());
        assert!(answer_usage(b"<html>oops \"usage\":{}</html>").is_none());
    }

    /// The backward search for `"usage":` ends where a naive one does, wherever the `u`s,
    /// quotes and keys stand.
    #[test]
    fn the_last_usage_key_is_found_as_a_naive_search_finds_it() {
        let naive = |b: &[u8]| {
            b.windows(8)
                .rposition(|w| w == b"\"usage\":")
                .map(|at| at + 8)
        };
        let pieces: [&[u8]; 7] = [
            b"u",
            b"\"",
            b"usage",
            b"\"usage\":",
            b"sage\":",
            b"{1}",
            b"audio_tokens",
        ];
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..5000 {
            let mut body = Vec::new();
            for _ in 0..(seed % 9) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                body.extend_from_slice(pieces[(seed % 7) as usize]);
            }
            assert_eq!(
                after_last_usage_key(&body),
                naive(&body),
                "{:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    /// What a chunk's frame tells: output, usage only, total tokens, error, text.
    fn told(frame: &Frame) -> (bool, bool, Option<u64>, bool, String) {
        (
            frame.has_output,
            frame.usage_only,
            frame.usage.as_ref().map(|u| u.total_tokens),
            frame.error.is_some(),
            frame.generated_text().into_owned(),
        )
    }

    /// A token's text is read where it stands only where it is the chunk's one output and
    /// nothing finishes; it is then the text the whole parse reads.
    #[test]
    fn a_text_delta_is_read_where_it_stands_only_when_it_is_all_the_chunk_says() {
        let base = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":DELTA,"logprobs":null,"finish_reason":FINISH}]}"#;
        let cases: [(&str, &str, Option<&str>); 12] = [
            (r#"{"content":"Hi"}"#, "null", Some("Hi")),
            (
                r#"{"content":"a \"q\" \\ \u00e9 \n"}"#,
                "null",
                Some("a \"q\" \\ é \n"),
            ),
            (
                r#"{"content":"\"finish_reason\":\"stop\""}"#,
                "null",
                Some("\"finish_reason\":\"stop\""),
            ),
            (r#"{"role":"assistant","content":""}"#, "null", Some("")),
            (r#"{"content":"end"}"#, r#""stop""#, None),
            (r#"{"content":"x","reasoning_content":"why"}"#, "null", None),
            (r#"{"content":"x","reasoning":""}"#, "null", Some("x")),
            (
                r#"{"content":"x","tool_calls":[{"index":0}]}"#,
                "null",
                None,
            ),
            (r#"{"content":"x","tool_calls":null}"#, "null", Some("x")),
            (r#"{"content":null}"#, "null", None),
            (r#"{"content":"bad \x escape"}"#, "null", None),
            (r#"{}"#, r#""length""#, None),
        ];
        for (delta, finish, expected) in cases {
            let chunk = base.replace("DELTA", delta).replace("FINISH", finish);
            let frame = peek_chunk(bytes::Bytes::from(chunk.clone()));
            assert_eq!(frame.chat_text_delta().as_deref(), expected, "{chunk}");
            if let Some(text) = expected {
                let parsed: crate::dialect::canonical::Chunk =
                    serde_json::from_str(&chunk).unwrap();
                let whole = parsed.choices[0]
                    .delta
                    .as_ref()
                    .and_then(|d| d.content.clone());
                assert_eq!(whole.as_deref(), Some(text), "{chunk}");
            }
        }
        // Two choices' texts in one chunk: parsed whole.
        let two = r#"{"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}}]}"#;
        assert!(
            peek_chunk(bytes::Bytes::from(two))
                .chat_text_delta()
                .is_none()
        );
        // Not compact: parsed whole.
        let spaced = r#"{"choices": [{"delta": {"content": "a"}}]}"#;
        assert!(
            peek_chunk(bytes::Bytes::from(spaced))
                .chat_text_delta()
                .is_none()
        );
    }

    /// The key search agrees with the whole parse wherever keys, escapes and key-like text
    /// inside values fall, and whatever the chunk's spacing.
    #[test]
    fn the_key_search_agrees_with_the_whole_parse() {
        let shapes = [
            r#"{"id":"PAD","choices":[{"index":0,"delta":{"content":"a \"usage\": b"}}]}"#,
            r#"{"id":"PAD","choices":[{"delta":{"content":"x\\","tool_calls":null}}],"usage":null}"#,
            r#"{"id":"PAD","choices":[{"delta":{"content":"\\\"content\\\":\"y\""}}]}"#,
            r#"{"id":"PAD","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
            r#"{"id":"PAD","choices":[{"delta":{"reasoning":"é ✓ \"q\""}}]}"#,
            r#"{"id":"PAD", "choices":[]}"#,
            r#"{"id":"PAD","choices":[{"delta":{"content":"unterminated}]}"#,
            r#"{"id":"PAD","error":{"message":"x"}}"#,
            r#"{"id":"PAD","choices":[{"delta":{"tool_calls":[{"index":0}]}}]}"#,
            r#"{"id":"PAD","choices":[{"delta":{"content":""}}],"usage":null}"#,
            r#"{"PAD\"content":"x","choices":[{"delta":{"content":""}}]}"#,
            r#"{"id": "PAD", "choices": [{"delta": {"content": "Hi"}}], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}"#,
            r#"{"id":"PAD","choices":[{"delta":{"content": "spaced"}}]}"#,
            r#"{"id":"PAD","choices":[{"delta":{"content":"\\\\"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#,
        ];
        for shape in shapes {
            for pad in 0..17 {
                // The id shifts what follows by `pad` bytes and holds escaped quotes.
                let id = format!("{}{}", "p".repeat(pad), "\\\"".repeat(pad % 3));
                let chunk = shape.replace("PAD", &id);
                let data = bytes::Bytes::from(chunk.clone());
                // `None`: the whole parse, the path a chunk that is not compact takes.
                let whole = chunk_frame(data.clone(), None);
                assert_eq!(told(&peek_chunk(data)), told(&whole), "{chunk}");
            }
        }
        // Compact chunks are read by the search, not parsed.
        let compact =
            br#"{"id":"x","choices":[{"delta":{"content":"a \"usage\": b"}}],"usage":null}"#;
        assert!(CompactChunk::scan(compact).is_some_and(|c| c.has_output && c.usage.is_none()));
    }

    /// One search for the chunk's keys and the provider keys reads a chunk as the two
    /// searches did, and masks a provider key wherever it stands.
    #[test]
    fn keys_and_provider_keys_found_in_one_search() {
        let secret = "sk-upstream-secret-0123456789";
        let secrets = SecretRedactor::of(&[secret]);
        let chunks = [
            r#"{"id":"x","choices":[{"delta":{"content":"Hi"}}],"usage":null}"#.to_owned(),
            format!(r#"{{"id":"x","choices":[{{"delta":{{"content":"key {secret} here"}}}}]}}"#),
            format!(r#"{{"error":{{"message":"bad key {}"}}}}"#, &secret[..12]),
            format!(
                r#"{{"id": "x", "choices": [{{"delta": {{"content": "{}"}}}}]}}"#,
                &secret[secret.len() - 9..]
            ),
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#
                .to_owned(),
            "[DONE]".to_owned(),
        ];
        assert!(secrets.with_keys(&CHUNK_KEY_PATTERNS, b"{}").is_some());
        for chunk in chunks {
            let data = bytes::Bytes::from(chunk.clone());
            let one = peek_chunk_redacting(data.clone(), &secrets);
            let two = peek_chunk(secrets.redact_bytes(data));
            assert_eq!(one.data, two.data, "{chunk}");
            assert!(
                !String::from_utf8_lossy(&one.data).contains(&secret[..8]),
                "{chunk}"
            );
            assert!(!String::from_utf8_lossy(&one.data).contains(&secret[secret.len() - 8..]));
            assert_eq!(
                (
                    one.has_output,
                    one.usage_only,
                    one.last,
                    one.error.is_some()
                ),
                (
                    two.has_output,
                    two.usage_only,
                    two.last,
                    two.error.is_some()
                ),
                "{chunk}"
            );
            assert_eq!(
                one.usage.map(|u| u.total_tokens),
                two.usage.map(|u| u.total_tokens)
            );
        }
        // A secret that could hide inside a key's match, or run through one, gets the two
        // searches instead.
        for unsafe_secret in ["content", "abc\":xyz", "rea:soning"] {
            let secrets = SecretRedactor::of(&[unsafe_secret]);
            assert!(
                secrets.with_keys(&CHUNK_KEY_PATTERNS, b"{}").is_none(),
                "{unsafe_secret}"
            );
            let frame = peek_chunk_redacting(
                bytes::Bytes::from(format!(
                    r#"{{"choices":[{{"delta":{{"content":"{unsafe_secret}"}}}}]}}"#
                )),
                &secrets,
            );
            assert!(!String::from_utf8_lossy(&frame.data).contains(unsafe_secret));
        }
    }

    #[test]
    fn peeks_usage_and_output() {
        let f = peek_chunk(
            r#"{"id":"x","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#
                .into(),
        );
        assert!(!f.has_output && f.usage.is_none());
        let f =
            peek_chunk(r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}"#.into());
        assert!(f.has_output && !f.usage_only);
        let f = peek_chunk(
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#
                .into(),
        );
        assert!(f.usage_only);
        assert_eq!(f.usage.unwrap().total_tokens, 8);
        assert!(peek_chunk("[DONE]".into()).is_done());
        let f = peek_chunk(r#"{"error":{"message":"overloaded"}}"#.into());
        assert_eq!(f.error.as_deref(), Some("overloaded"));
        // Written with spaces (Python's json.dumps): parsed whole, same answer.
        let f = peek_chunk(
            r#"{"id": "x", "choices" : [{"index": 0, "delta": {"content": "Hi"}}], "usage" : {"prompt_tokens": 1, "completion_tokens": 2}}"#.into(),
        );
        assert!(f.has_output && f.generated_text() == "Hi");
        assert_eq!(f.usage.unwrap().completion_tokens, 2);
        let f = peek_chunk(
            r#"{"id": "x", "choices": [{"index": 0, "delta": {"content": "a \"quoted\" word", "reasoning": "r"}}]}"#.into(),
        );
        assert_eq!(f.generated_text(), "a \"quoted\" wordr");
        // Compact: read by search, the text only when asked for.
        let f = peek_chunk(
            r#"{"id":"x","choices":[{"index":0,"delta":{"content":"a \"b\"","reasoning_content":"r"}}],"usage":null}"#.into(),
        );
        assert!(f.has_output && f.text.is_empty() && f.text_in_chat_chunk);
        assert_eq!(f.generated_text(), "a \"b\"r");
        let f = peek_chunk(r#"{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}"#.into());
        assert!(f.has_output);
        let f = peek_chunk(r#"{"choices":[{"delta":{"content":null,"tool_calls":null}}]}"#.into());
        assert!(!f.has_output);
        // Key-like text inside a value (escaped quotes, a backslash before the closing quote)
        // is not a key.
        let f = peek_chunk(
            r#"{"choices":[{"delta":{"content":"\"usage\":{\"total_tokens\":9} \\"}}],"usage":null}"#
                .into(),
        );
        assert!(f.has_output && f.usage.is_none());
        assert_eq!(f.generated_text(), r#""usage":{"total_tokens":9} \"#);
        // A space before a colon: parsed whole, same answer.
        let f = peek_chunk(
            r#"{"choices" :[],"usage" :{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#
                .into(),
        );
        assert!(f.usage_only && f.usage.unwrap().total_tokens == 3);
        let f = peek_chunk(r#"{"choices":[{"delta":{"content":"","tool_calls":null}}],"usage":{"prompt_tokens":1,"completion_tokens":0,"total_tokens":1}}"#.into());
        assert!(!f.has_output && !f.usage_only && f.usage.unwrap().prompt_tokens == 1);
    }
}
