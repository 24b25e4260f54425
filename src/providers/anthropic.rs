//! Anthropic's Messages API (`POST /v1/messages`), translated both ways: OpenAI chat requests
//! become Messages requests (system prompt, alternating turns, images, tools, tool results),
//! and Messages answers (whole, or the SSE events `message_start` … `message_stop`) become
//! OpenAI completions and `chat.completion.chunk`s with usage, cache tokens included.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::translate::{
    self, ChatRequest, ChunkWriter, Image, Part, StreamTranslator, ToolChoice, arguments_object,
    invalid, text_only,
};
use super::upstream::{HttpUpstream, build_url};
use super::{CallOptions, ChatReply, Complete, Frame, Usage};
use crate::config::{AnthropicProviderConfig, Timeouts};
use crate::error::GatewayError;

const TARGET: &str = "Anthropic";

#[derive(Debug)]
pub struct AnthropicProvider {
    http: HttpUpstream,
    url: String,
    default_max_tokens: u64,
}

impl AnthropicProvider {
    pub fn new(name: &str, config: &AnthropicProviderConfig) -> Result<Self, String> {
        let key = config.api_key.as_deref().unwrap_or_default();
        let mut http = HttpUpstream::new(name, &config.timeouts, &config.headers)?
            .with_secret_header("x-api-key", key.to_owned(), key)?;
        http.add_header("anthropic-version", &config.version)?;
        let url =
            build_url(&config.base_url, &["v1", "messages"], &[]).map_err(|e| e.to_string())?;
        Ok(Self {
            http,
            url,
            default_max_tokens: config.default_max_tokens,
        })
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.http.timeouts
    }

    pub async fn chat(
        &self,
        body: Map<String, Value>,
        stream: bool,
        opts: CallOptions<'_>,
    ) -> Result<ChatReply, GatewayError> {
        let request = ChatRequest::parse(body)?;
        let wire = to_anthropic(
            &request,
            opts.upstream_model,
            self.default_max_tokens,
            stream,
        )?;
        let response = self.http.post_json(&self.url, &wire).await?;
        if stream {
            return self
                .http
                .event_stream(response, AnthropicStream::new(&self.http.name))
                .map(ChatReply::Stream);
        }
        let message: Value = self.http.read_json(response, opts.max_response).await?;
        from_anthropic(&message)
            .map(ChatReply::Complete)
            .map_err(|detail| self.http.protocol_error(detail))
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
