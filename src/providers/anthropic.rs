//! Anthropic's Messages API (`POST /v1/messages`), translated both ways: OpenAI chat requests
//! become Messages requests (system prompt, alternating turns, images, tools, tool results),
//! and Messages answers (whole, or the SSE events `message_start` … `message_stop`) become
//! OpenAI completions and `chat.completion.chunk`s with usage, cache tokens included.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::translate::{
    self, ChatRequest, ChunkWriter, Image, Part, StreamTranslator, ToolChoice, arguments_object,
    invalid, text_only,
};
use super::upstream::{HttpUpstream, build_url, parse_base};
use super::{CallOptions, ChatReply, Complete, Frame, Usage};
use crate::body::JsonBody;
use crate::config::AnthropicProviderConfig;
use crate::error::GatewayError;

const TARGET: &str = "Anthropic";

#[derive(Debug)]
pub struct AnthropicProvider {
    http: HttpUpstream,
    url: url::Url,
    default_max_tokens: u64,
}

impl AnthropicProvider {
    pub fn new(name: &str, config: &AnthropicProviderConfig) -> Result<Self, String> {
        let key = config.api_key.as_deref().unwrap_or_default();
        let mut http = HttpUpstream::new(name, &config.timeouts, &config.headers, &config.tls)?
            .with_secret_header("x-api-key", key.to_owned(), key)?;
        http.add_header("anthropic-version", &config.version)?;
        let url = build_url(&parse_base(&config.base_url)?, &["v1", "messages"], &[])
            .map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            url,
            default_max_tokens: config.default_max_tokens,
        })
    }

    pub async fn chat(
        &self,
        body: JsonBody,
        stream: bool,
        opts: CallOptions<'_>,
    ) -> Result<ChatReply, GatewayError> {
        let request = ChatRequest::parse(&body)?;
        let wire = to_anthropic(
            &request,
            opts.upstream_model,
            self.default_max_tokens,
            stream,
        )?;
        let response = self.http.post_json(&self.url, &wire, opts.timeouts).await?;
        if stream {
            return self
                .http
                .event_stream(response, AnthropicStream::new(&self.http.name))
                .map(ChatReply::Stream);
        }
        let message: Value = self
            .http
            .read_json(response, opts.max_response, opts.timeouts.idle)
            .await?;
        from_anthropic(&message)
            .map(ChatReply::Complete)
            .map_err(|detail| self.http.protocol_error(detail))
    }
}

/// Client headers a Messages pass-through forwards: the API version the client was written
/// for and the betas it asks for.
const FORWARDED_HEADERS: [&str; 2] = ["anthropic-version", "anthropic-beta"];

impl AnthropicProvider {
    /// A client's own Messages request, passed through: the model name is the target's, the key
    /// the gateway's, `anthropic-version`/`anthropic-beta` the client's. The answer comes back
    /// as Anthropic sent it (whole, or its events one by one), with its usage read on the way.
    pub async fn messages(
        &self,
        mut body: JsonBody,
        stream: bool,
        opts: CallOptions<'_>,
        client_headers: &axum::http::HeaderMap,
    ) -> Result<ChatReply, GatewayError> {
        body.set_str("model", opts.upstream_model);
        let response = self
            .http
            .post_bytes_with(
                &self.url,
                body.to_bytes(),
                opts.timeouts,
                forwarded(client_headers),
            )
            .await?;
        if stream {
            return self
                .http
                .event_stream(response, NativeStream::new(&self.http.name))
                .map(ChatReply::Stream);
        }
        let bytes = self
            .http
            .read_body(response, opts.max_response, opts.timeouts.idle)
            .await?;
        #[derive(serde::Deserialize)]
        struct UsagePeek {
            usage: Option<Value>,
        }
        let peek: UsagePeek = serde_json::from_slice(&bytes)
            .map_err(|_| self.http.protocol_error("the answer is not JSON"))?;
        let usage = peek.usage.map(|u| {
            let mut usage = Usage::default();
            usage_of(&u, &mut usage);
            usage
        });
        Ok(ChatReply::Complete(Complete { body: bytes, usage }))
    }

    /// `POST /v1/messages/count_tokens`, passed through like [`Self::messages`].
    pub async fn count_tokens(
        &self,
        mut body: JsonBody,
        opts: CallOptions<'_>,
        client_headers: &axum::http::HeaderMap,
    ) -> Result<Complete, GatewayError> {
        body.set_str("model", opts.upstream_model);
        let mut url = self.url.clone();
        url.path_segments_mut()
            .map_err(|()| self.http.protocol_error("the base URL cannot take a path"))?
            .push("count_tokens");
        let response = self
            .http
            .post_bytes_with(
                &url,
                body.to_bytes(),
                opts.timeouts,
                forwarded(client_headers),
            )
            .await?;
        let bytes = self
            .http
            .read_body(response, opts.max_response, opts.timeouts.idle)
            .await?;
        Ok(Complete {
            body: bytes,
            usage: None,
        })
    }
}

fn forwarded(client: &axum::http::HeaderMap) -> axum::http::HeaderMap {
    let mut headers = axum::http::HeaderMap::new();
    for name in FORWARDED_HEADERS {
        for value in client.get_all(name) {
            headers.append(name, value.clone());
        }
    }
    headers
}

/// A Messages event stream passed through to a Messages client: every event goes out as it
/// came; usage is read from `message_start` (input) and `message_delta` (output, cumulative),
/// the generated text is noted for charging a stream cut short, and `error` events end it.
pub struct NativeStream {
    provider: String,
    usage: Usage,
    stopped: bool,
}

impl NativeStream {
    pub fn new(provider: &str) -> Self {
        Self {
            provider: provider.to_owned(),
            usage: Usage::default(),
            stopped: false,
        }
    }
}

/// The parts of a Messages event the gateway reads; the rest is skipped unparsed.
#[derive(serde::Deserialize)]
struct EventPeek {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: Option<MessagePeek>,
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    delta: Option<DeltaPeek>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(serde::Deserialize)]
struct MessagePeek {
    #[serde(default)]
    usage: Option<Value>,
}

#[derive(serde::Deserialize)]
struct DeltaPeek {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    partial_json: Option<String>,
}

impl StreamTranslator for NativeStream {
    fn on_event(&mut self, event: &str, data: &str) -> Result<Vec<Frame>, GatewayError> {
        let peek: EventPeek = translate::parse_event(&self.provider, data)?;
        let mut frame = Frame::named(&peek.kind, event, data);
        match frame.event_name() {
            "message_start" => {
                if let Some(u) = peek.message.and_then(|m| m.usage) {
                    usage_of(&u, &mut self.usage);
                }
            }
            "content_block_delta" => {
                if let Some(d) = peek.delta {
                    frame.text = [d.text, d.thinking, d.partial_json]
                        .into_iter()
                        .flatten()
                        .collect();
                    frame.has_output = true;
                }
            }
            "message_delta" => {
                if let Some(u) = peek.usage {
                    usage_of(&u, &mut self.usage);
                }
                // Output tokens are cumulative here: from now on the usage is the real one.
                frame.usage = Some(self.usage);
            }
            "message_stop" => {
                self.stopped = true;
                frame.last = true;
            }
            "error" => {
                let error = peek.error.unwrap_or_default();
                frame.error = Some(format!(
                    "{}: {}",
                    error
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("api_error"),
                    error
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("error")
                ));
            }
            _ => {}
        }
        Ok(vec![frame])
    }

    fn finish(&mut self) -> Result<Vec<Frame>, GatewayError> {
        if self.stopped {
            Ok(Vec::new())
        } else {
            Err(GatewayError::UpstreamProtocol {
                provider: self.provider.clone(),
                detail: "the event stream ended before message_stop".into(),
            })
        }
    }
}

/// The Messages request for an OpenAI chat request.
pub fn to_anthropic(
    req: &ChatRequest,
    model: &str,
    default_max_tokens: u64,
    stream: bool,
) -> Result<Value, GatewayError> {
    req.reject_common_unsupported(TARGET)?;
    let unsupported = |what: &str| {
        Err(invalid(format!(
            "{what} is not supported by {TARGET} models"
        )))
    };
    if req.presence_penalty.is_some_and(|p| p != 0.0)
        || req.frequency_penalty.is_some_and(|p| p != 0.0)
    {
        return unsupported("presence_penalty and frequency_penalty");
    }
    if req
        .response_format
        .as_ref()
        .is_some_and(|f| f.get("type").and_then(Value::as_str) != Some("text"))
    {
        return unsupported("response_format (JSON mode)");
    }
    if req.seed.is_some() {
        return unsupported("seed");
    }
    if req.temperature.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
        return Err(invalid(format!(
            "temperature must be between 0 and 1 for {TARGET} models"
        )));
    }

    let mut system = Vec::new();
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    for m in &req.messages {
        let (role, blocks) = match m.role.as_str() {
            "system" | "developer" => {
                let text = text_only(m.content.as_ref(), "system messages", TARGET)?;
                if !text.is_empty() {
                    system.push(json!({"type": "text", "text": text}));
                }
                continue;
            }
            "user" => ("user", content_blocks(m.content.as_ref())?),
            "assistant" => {
                let mut blocks = content_blocks(m.content.as_ref())?;
                for call in m.tool_calls.iter().flatten() {
                    blocks.push(json!({
                        "type": "tool_use", "id": call.id, "name": call.function.name,
                        "input": arguments_object(&call.function.arguments)?,
                    }));
                }
                ("assistant", blocks)
            }
            "tool" => {
                let id = m
                    .tool_call_id
                    .as_deref()
                    .ok_or_else(|| invalid("a tool message needs a tool_call_id"))?;
                let text = text_only(m.content.as_ref(), "tool results", TARGET)?;
                (
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": text})],
                )
            }
            other => return Err(invalid(format!("unknown message role {other:?}"))),
        };
        if blocks.is_empty() {
            continue; // Anthropic refuses empty turns
        }
        // Turns must alternate: consecutive turns of one role (e.g. several tool results, or a
        // tool result and the user's next words) become one.
        match turns.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    if turns.is_empty() {
        return Err(invalid("the conversation has no user or assistant message"));
    }

    let mut body = json!({
        "model": model,
        "max_tokens": req.max_output_tokens().unwrap_or(default_max_tokens),
        "messages": turns.into_iter().map(|(role, content)| json!({"role": role, "content": content})).collect::<Vec<_>>(),
    });
    if !system.is_empty() {
        body["system"] = Value::Array(system);
    }
    if let Some(t) = req.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(p) = req.top_p {
        body["top_p"] = json!(p);
    }
    let stop = req.stop_sequences();
    if !stop.is_empty() {
        body["stop_sequences"] = json!(stop);
    }
    if let Some(tools) = &req.tools {
        body["tools"] = tools
            .iter()
            .map(|t| {
                let mut tool = json!({
                    "name": t.function.name,
                    "input_schema": t.function.parameters.clone().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                });
                if let Some(d) = &t.function.description {
                    tool["description"] = json!(d);
                }
                tool
            })
            .collect();
    }
    let mut choice = match req.tool_choice()? {
        None => None,
        Some(ToolChoice::Auto) => Some(json!({"type": "auto"})),
        Some(ToolChoice::None) => Some(json!({"type": "none"})),
        Some(ToolChoice::Required) => Some(json!({"type": "any"})),
        Some(ToolChoice::Function(name)) => Some(json!({"type": "tool", "name": name})),
    };
    if req.parallel_tool_calls == Some(false) && req.tools.is_some() {
        choice.get_or_insert_with(|| json!({"type": "auto"}))["disable_parallel_tool_use"] =
            json!(true);
    }
    if let Some(choice) = choice {
        body["tool_choice"] = choice;
    }
    if let Some(user) = &req.user {
        body["metadata"] = json!({"user_id": user});
    }
    if stream {
        body["stream"] = json!(true);
    }
    Ok(body)
}

fn content_blocks(content: Option<&Value>) -> Result<Vec<Value>, GatewayError> {
    Ok(translate::parts(content, TARGET)?
        .into_iter()
        .filter(|p| !matches!(p, Part::Text(t) if t.is_empty()))
        .map(|p| match p {
            Part::Text(text) => json!({"type": "text", "text": text}),
            Part::Image(Image::Inline { media_type, data }) => {
                json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}})
            }
            Part::Image(Image::Url(url)) => json!({"type": "image", "source": {"type": "url", "url": url}}),
        })
        .collect())
}

/// `stop_reason` → `finish_reason`.
fn finish_reason(stop_reason: Option<&str>) -> &'static str {
    match stop_reason {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        // end_turn, stop_sequence, pause_turn, or none given
        _ => "stop",
    }
}

/// Anthropic counts cached prompt tokens apart from `input_tokens`; OpenAI's `prompt_tokens`
/// includes them.
fn usage_of(u: &Value, into: &mut Usage) {
    let get = |k: &str| u.get(k).and_then(Value::as_u64);
    let input = get("input_tokens");
    let read = get("cache_read_input_tokens");
    let write = get("cache_creation_input_tokens");
    if input.is_some() || read.is_some() || write.is_some() {
        into.prompt_tokens = input.unwrap_or(0) + read.unwrap_or(0) + write.unwrap_or(0);
        into.cached_tokens = read.or(into.cached_tokens);
        into.cache_write_tokens = write.or(into.cache_write_tokens);
    }
    if let Some(output) = get("output_tokens") {
        into.completion_tokens = output; // cumulative in message_delta
    }
    into.total_tokens = into.prompt_tokens + into.completion_tokens;
}

/// A whole Messages answer as an OpenAI completion.
pub fn from_anthropic(message: &Value) -> Result<Complete, String> {
    let blocks = message
        .get("content")
        .and_then(Value::as_array)
        .ok_or("the answer has no content")?;
    let (mut text, mut reasoning, mut calls) = (String::new(), String::new(), Vec::new());
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(
                block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            ),
            Some("thinking") => reasoning.push_str(
                block
                    .get("thinking")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            ),
            Some("tool_use") => calls.push(translate::tool_call(
                block.get("id").and_then(Value::as_str).unwrap_or_default(),
                block
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
                &block
                    .get("input")
                    .cloned()
                    .unwrap_or_else(|| json!({}))
                    .to_string(),
            )),
            _ => {} // redacted_thinking and server-side blocks have no OpenAI equivalent
        }
    }
    let mut usage = Usage::default();
    usage_of(message.get("usage").unwrap_or(&Value::Null), &mut usage);
    let finish = finish_reason(message.get("stop_reason").and_then(Value::as_str));
    let id = message.get("id").and_then(Value::as_str).unwrap_or("msg");
    let model = message
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let body = translate::completion(
        id,
        model,
        translate::assistant_message(&text, &reasoning, calls),
        finish,
        &usage,
    );
    Ok(Complete {
        body,
        usage: Some(usage),
    })
}

/// Translates the Messages SSE events of one answer into OpenAI chunks.
pub struct AnthropicStream {
    provider: String,
    writer: Option<ChunkWriter>,
    usage: Usage,
    /// Anthropic content-block index → OpenAI tool-call index.
    tool_calls: HashMap<u64, usize>,
    stopped: bool,
}

impl AnthropicStream {
    pub fn new(provider: &str) -> Self {
        Self {
            provider: provider.to_owned(),
            writer: None,
            usage: Usage::default(),
            tool_calls: HashMap::new(),
            stopped: false,
        }
    }

    fn writer(&self) -> Result<&ChunkWriter, GatewayError> {
        self.writer
            .as_ref()
            .ok_or_else(|| self.protocol("an event came before message_start"))
    }

    fn protocol(&self, detail: &str) -> GatewayError {
        GatewayError::UpstreamProtocol {
            provider: self.provider.clone(),
            detail: detail.to_owned(),
        }
    }
}

impl StreamTranslator for AnthropicStream {
    fn on_event(&mut self, event: &str, data: &str) -> Result<Vec<Frame>, GatewayError> {
        let v: Value =
            serde_json::from_str(data).map_err(|_| self.protocol("an event is not JSON"))?;
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(event);
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        Ok(match kind {
            "message_start" => {
                let message = v.get("message").cloned().unwrap_or_default();
                usage_of(
                    message.get("usage").unwrap_or(&Value::Null),
                    &mut self.usage,
                );
                let writer = ChunkWriter::new(
                    message.get("id").and_then(Value::as_str).unwrap_or("msg"),
                    message
                        .get("model")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                );
                let first = writer.delta(json!({"role": "assistant", "content": ""}), None);
                self.writer = Some(writer);
                vec![first]
            }
            "content_block_start" => {
                let block = v.get("content_block").cloned().unwrap_or_default();
                if block.get("type").and_then(Value::as_str) != Some("tool_use") {
                    return Ok(Vec::new());
                }
                let position = self.tool_calls.len();
                self.tool_calls.insert(index, position);
                let call = json!({
                    "index": position, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                });
                vec![self.writer()?.delta(json!({"tool_calls": [call]}), None)]
            }
            "content_block_delta" => {
                let delta = v.get("delta").cloned().unwrap_or_default();
                let text = |k: &str| {
                    delta
                        .get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                let out = match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => json!({"content": text("text")}),
                    Some("thinking_delta") => json!({"reasoning_content": text("thinking")}),
                    Some("input_json_delta") => {
                        let position = *self
                            .tool_calls
                            .get(&index)
                            .ok_or_else(|| self.protocol("tool input for an unknown block"))?;
                        json!({"tool_calls": [{"index": position, "function": {"arguments": text("partial_json")}}]})
                    }
                    _ => return Ok(Vec::new()), // signature_delta and the like
                };
                vec![self.writer()?.delta(out, None)]
            }
            "message_delta" => {
                usage_of(v.get("usage").unwrap_or(&Value::Null), &mut self.usage);
                let reason = finish_reason(v.pointer("/delta/stop_reason").and_then(Value::as_str));
                vec![self.writer()?.delta(json!({}), Some(reason))]
            }
            "message_stop" => {
                self.stopped = true;
                vec![self.writer()?.usage(&self.usage), Frame::done()]
            }
            "error" => {
                let kind = v
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("api_error");
                let message = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("error");
                let status = match kind {
                    "overloaded_error" => 529,
                    "rate_limit_error" => 429,
                    "invalid_request_error" => 400,
                    _ => 500,
                };
                return Err(GatewayError::UpstreamStatus {
                    provider: self.provider.clone(),
                    status,
                    message: format!("{kind}: {message}"),
                    retry_after: None,
                });
            }
            // ping, content_block_stop, and event types added later
            _ => Vec::new(),
        })
    }

    fn finish(&mut self) -> Result<Vec<Frame>, GatewayError> {
        if self.stopped {
            Ok(Vec::new())
        } else {
            Err(self.protocol("the event stream ended before message_stop"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::translate::ChatRequest;

    fn request(v: Value) -> ChatRequest {
        ChatRequest::parse(&JsonBody::parse(v.to_string().into()).unwrap()).unwrap()
    }

    fn frames_json(frames: &[Frame]) -> Vec<Value> {
        frames
            .iter()
            .filter(|f| !f.is_done())
            .map(|f| serde_json::from_slice(&f.data).unwrap())
            .collect()
    }

    #[test]
    fn request_translation_covers_system_images_tools_and_results() {
        let req = request(json!({
            "model": "claude", "max_tokens": 100, "temperature": 0.5, "stop": "END", "user": "u-1",
            "tool_choice": "required", "parallel_tool_calls": false,
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather where this is?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/x.jpg"}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "toolu_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "3C"},
                {"role": "user", "content": "Thanks"},
            ],
        }));
        let expected = json!({
            "model": "claude-3-5-haiku-latest",
            "max_tokens": 100,
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather where this is?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/x.jpg"}}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Oslo"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "3C"},
                    {"type": "text", "text": "Thanks"}]},
            ],
            "system": [{"type": "text", "text": "Be brief."}],
            "temperature": 0.5,
            "stop_sequences": ["END"],
            "tools": [{"name": "get_weather", "description": "Weather now",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "metadata": {"user_id": "u-1"},
            "stream": true,
        });
        assert_eq!(
            to_anthropic(&req, "claude-3-5-haiku-latest", 4096, true).unwrap(),
            expected
        );
    }

    #[test]
    fn max_tokens_defaults_and_what_cannot_be_expressed_is_refused() {
        let body = to_anthropic(
            &request(json!({"messages": [{"role": "user", "content": "hi"}]})),
            "m",
            4096,
            false,
        )
        .unwrap();
        assert_eq!(body["max_tokens"], 4096);
        assert!(body.get("stream").is_none());
        for bad in [
            json!({"n": 2}),
            json!({"temperature": 1.5}),
            json!({"response_format": {"type": "json_object"}}),
            json!({"logprobs": true}),
            json!({"frequency_penalty": 0.5}),
            json!({"seed": 7}),
        ] {
            let mut req = json!({"messages": [{"role": "user", "content": "hi"}]});
            req.as_object_mut()
                .unwrap()
                .extend(bad.as_object().unwrap().clone());
            let err = to_anthropic(&request(req), "m", 4096, false).unwrap_err();
            assert_eq!(err.status(), 400, "{bad}: {err}");
        }
    }

    #[test]
    fn whole_answer_translation() {
        let message = json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-20241022",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Paris"}},
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 20, "output_tokens": 12, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5},
        });
        let complete = from_anthropic(&message).unwrap();
        let body: Value = serde_json::from_slice(&complete.body).unwrap();
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["id"], "msg_01");
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], "Let me check.");
        assert_eq!(
            choice["message"]["tool_calls"],
            json!([{"id": "toolu_9", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}])
        );
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 125, "completion_tokens": 12, "total_tokens": 137, "prompt_tokens_details": {"cached_tokens": 100}})
        );
        let usage = complete.usage.unwrap();
        assert_eq!(
            (usage.cached_tokens, usage.cache_write_tokens),
            (Some(100), Some(5))
        );

        for (stop, finish) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("refusal", "content_filter"),
        ] {
            let m = json!({"id": "m", "model": "c", "content": [{"type": "text", "text": "x"}], "stop_reason": stop, "usage": {"input_tokens": 1, "output_tokens": 1}});
            let body: Value = serde_json::from_slice(&from_anthropic(&m).unwrap().body).unwrap();
            assert_eq!(body["choices"][0]["finish_reason"], finish);
        }
    }

    /// The events of a streamed answer with text then a tool call, as Anthropic sends them.
    fn tool_stream_events() -> Vec<(&'static str, Value)> {
        vec![
            (
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-3-5-haiku-20241022", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 0}}}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ),
            ("ping", json!({"type": "ping"})),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking "}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "the weather…"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_7", "name": "get_weather", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": \"Pa"}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "ris\"}"}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 1}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 42}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ]
    }

    #[test]
    fn stream_translation_with_tool_call() {
        let mut t = AnthropicStream::new("anthropic");
        let mut frames = Vec::new();
        for (event, data) in tool_stream_events() {
            frames.extend(t.on_event(event, &data.to_string()).unwrap());
        }
        frames.extend(t.finish().unwrap());
        assert!(frames.last().unwrap().is_done());
        let chunks = frames_json(&frames);
        assert_eq!(
            chunks[0]["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        assert!(
            chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == "msg_1")
        );
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Checking the weather…");
        let calls: Vec<&Value> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
            .collect();
        assert_eq!(
            calls[0],
            &json!([{"index": 0, "id": "toolu_7", "type": "function", "function": {"name": "get_weather", "arguments": ""}}])
        );
        let args: String = calls
            .iter()
            .filter_map(|c| c[0]["function"]["arguments"].as_str())
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&args).unwrap(),
            json!({"city": "Paris"})
        );
        let finish = chunks
            .iter()
            .find_map(|c| c["choices"][0]["finish_reason"].as_str())
            .unwrap();
        assert_eq!(finish, "tool_calls");
        let usage_frame = frames.iter().find(|f| f.usage_only).unwrap();
        assert_eq!(usage_frame.usage.unwrap().prompt_tokens, 25);
        assert_eq!(usage_frame.usage.unwrap().completion_tokens, 42);
        assert!(frames.iter().filter(|f| f.has_output).count() >= 3);
    }

    #[test]
    fn stream_errors_and_truncation() {
        let mut t = AnthropicStream::new("anthropic");
        let events = tool_stream_events();
        t.on_event(events[0].0, &events[0].1.to_string()).unwrap();
        let err = t
            .on_event("error", r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#)
            .unwrap_err();
        assert_eq!(err.status(), 503);
        assert!(err.to_string().contains("Overloaded"));

        let mut t = AnthropicStream::new("anthropic");
        t.on_event(events[0].0, &events[0].1.to_string()).unwrap();
        assert!(
            t.finish().is_err(),
            "a stream without message_stop is an error"
        );
        assert!(
            AnthropicStream::new("a")
                .on_event("content_block_delta", &events[3].1.to_string())
                .is_err()
        );
    }
}
