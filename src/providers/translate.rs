//! What the adapters for non-OpenAI wire formats share: a typed view of the OpenAI chat
//! request, the checks for parameters a target cannot express, builders for OpenAI-shaped
//! answers and chunks, and the [`StreamTranslator`] that turns upstream SSE events into frames.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Frame, Usage};
use crate::body::JsonBody;
use crate::error::GatewayError;

/// Turns one upstream's SSE events into OpenAI `chat.completion.chunk` frames.
pub trait StreamTranslator: Send + 'static {
    /// One SSE event (its `event:` name, empty when absent, and its `data:`).
    fn on_event(&mut self, event: &str, data: &str) -> Result<Vec<Frame>, GatewayError>;
    /// The same, with the data as the bytes it came in (valid UTF-8): a translator that
    /// forwards the data as it is can keep them without a copy.
    fn on_event_bytes(&mut self, event: &str, data: Bytes) -> Result<Vec<Frame>, GatewayError> {
        match std::str::from_utf8(&data) {
            Ok(text) => self.on_event(event, text),
            Err(_) => Err(GatewayError::UpstreamProtocol {
                provider: String::new(),
                detail: "the event stream is not valid UTF-8".into(),
            }),
        }
    }
    /// One upstream event as it came, its frames added to `out`. Whatever an upstream says (an
    /// error event quoting its key included) reaches clients and logs only without the
    /// provider keys: by default the data are masked with `secrets` and translated by
    /// [`StreamTranslator::on_event_bytes`]. A translator that overrides this (one frame an
    /// event spares the stream an allocation an event) masks them itself.
    fn push_event_frames(
        &mut self,
        event: &str,
        data: Bytes,
        secrets: &crate::telemetry::redact::SecretRedactor,
        out: &mut std::collections::VecDeque<Frame>,
    ) -> Result<(), GatewayError> {
        out.extend(self.on_event_bytes(event, secrets.redact_bytes(data))?);
        Ok(())
    }
    /// The upstream closed the stream cleanly: whatever is still owed (finish, usage, `[DONE]`).
    fn finish(&mut self) -> Result<Vec<Frame>, GatewayError>;
}

/// The OpenAI chat request, as far as translators need to understand it. Fields it does not
/// name are not forwarded to non-OpenAI targets.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub tools: Option<Vec<Tool>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub n: Option<u64>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub response_format: Option<Value>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u64>,
    #[serde(default)]
    pub logit_bias: Option<Map<String, Value>>,
    #[serde(default)]
    pub modalities: Option<Vec<String>>,
    #[serde(default)]
    pub audio: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Value>,
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default)]
    pub tool_call_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub function: FunctionCall,
}

#[derive(Debug, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

#[derive(Debug, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

#[derive(Debug, Deserialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
}

/// One part of a message's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Image(Image),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Image {
    /// From a `data:` URL.
    Inline {
        media_type: String,
        data: String,
    },
    Url(String),
}

/// What a tool choice asks of the model, whatever the target calls it.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    Auto,
    None,
    /// Some tool must be called.
    Required,
    /// This tool must be called.
    Function(String),
}

/// An upstream event's JSON, read as `T` (the members a translator peeks at).
pub fn parse_event<'d, T: Deserialize<'d>>(
    provider: &str,
    data: &'d str,
) -> Result<T, GatewayError> {
    serde_json::from_str(data).map_err(|_| GatewayError::UpstreamProtocol {
        provider: provider.to_owned(),
        detail: "an event is not JSON".into(),
    })
}

pub fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::InvalidRequest(message.into())
}

impl ChatRequest {
    /// The typed request, straight from the body's bytes (no JSON tree in between).
    pub fn parse(body: &JsonBody) -> Result<Self, GatewayError> {
        body.parse_as()
            .map_err(|e| invalid(format!("invalid chat request: {e}")))
    }

    pub fn max_output_tokens(&self) -> Option<u64> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    pub fn stop_sequences(&self) -> Vec<String> {
        match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        }
    }

    pub fn tool_choice(&self) -> Result<Option<ToolChoice>, GatewayError> {
        Ok(match &self.tool_choice {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(match s.as_str() {
                "auto" => ToolChoice::Auto,
                "none" => ToolChoice::None,
                "required" => ToolChoice::Required,
                other => return Err(invalid(format!("unknown tool_choice {other:?}"))),
            }),
            Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
                Some(name) => Some(ToolChoice::Function(name.to_owned())),
                None => {
                    return Err(invalid(
                        "tool_choice must be \"auto\", \"none\", \"required\" or name a function",
                    ));
                }
            },
        })
    }

    /// Refuses what no non-OpenAI target here can express; `target` names it in the message.
    pub fn reject_common_unsupported(&self, target: &str) -> Result<(), GatewayError> {
        let unsupported = |what: &str| {
            Err(invalid(format!(
                "{what} is not supported by {target} models"
            )))
        };
        if self.n.is_some_and(|n| n > 1) {
            return unsupported("n > 1");
        }
        if self.logprobs == Some(true) || self.top_logprobs.is_some() {
            return unsupported("logprobs");
        }
        if self.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
            return unsupported("logit_bias");
        }
        if self.audio.is_some()
            || self
                .modalities
                .as_ref()
                .is_some_and(|m| m.iter().any(|m| m != "text"))
        {
            return unsupported("audio output");
        }
        if let Some(tools) = &self.tools
            && let Some(t) = tools.iter().find(|t| t.kind != "function")
        {
            return Err(invalid(format!(
                "tools of type {:?} are not supported by {target} models",
                t.kind
            )));
        }
        Ok(())
    }

    /// The function name of the tool call with this id, from the conversation's assistant turns
    /// (formats that key tool results by name rather than by id need it).
    pub fn tool_name_for(&self, call_id: &str) -> Option<&str> {
        self.messages
            .iter()
            .filter_map(|m| m.tool_calls.as_ref())
            .flatten()
            .find(|c| c.id == call_id)
            .map(|c| c.function.name.as_str())
    }
}

/// A message's content as parts: a string is one text part; arrays hold `text` and
/// `image_url` parts. Anything else is refused by name.
pub fn parts(content: Option<&Value>, target: &str) -> Result<Vec<Part>, GatewayError> {
    match content {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![Part::Text(s.clone())]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => Ok(Part::Text(
                    p.get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                )),
                Some("image_url") => {
                    let url = p
                        .pointer("/image_url/url")
                        .or_else(|| p.get("image_url").filter(|u| u.is_string()))
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid("an image_url part needs a url"))?;
                    Ok(Part::Image(image(url)?))
                }
                Some(other) => Err(invalid(format!(
                    "content parts of type {other:?} are not supported by {target} models"
                ))),
                None => Err(invalid("every content part needs a type")),
            })
            .collect(),
        Some(_) => Err(invalid(
            "message content must be a string or an array of parts",
        )),
    }
}

/// The text of a content that must be text only (system prompts, tool results).
pub fn text_only(
    content: Option<&Value>,
    what: &str,
    target: &str,
) -> Result<String, GatewayError> {
    parts(content, target)?
        .into_iter()
        .map(|p| match p {
            Part::Text(t) => Ok(t),
            Part::Image(_) => Err(invalid(format!("{what} must be text for {target} models"))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|texts| texts.join("\n"))
}

fn image(url: &str) -> Result<Image, GatewayError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| invalid("malformed data URL in image_url"))?;
        let media_type = meta
            .strip_suffix(";base64")
            .ok_or_else(|| invalid("image data URLs must be base64-encoded"))?;
        return Ok(Image::Inline {
            media_type: media_type.to_owned(),
            data: data.to_owned(),
        });
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(Image::Url(url.to_owned()));
    }
    Err(invalid("image_url must be an http(s) or data: URL"))
}

/// Tool-call arguments (a JSON string) as the object other formats want.
pub fn arguments_object(arguments: &str) -> Result<Value, GatewayError> {
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str::<Value>(arguments)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| invalid("tool call arguments must be a JSON object"))
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// OpenAI's usage object.
pub fn usage_json(u: &Usage) -> Value {
    let mut v = json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    });
    if u.cached_tokens.is_some() {
        v["prompt_tokens_details"] = json!({"cached_tokens": u.cached_tokens});
    }
    if u.reasoning_tokens.is_some() {
        v["completion_tokens_details"] = json!({"reasoning_tokens": u.reasoning_tokens});
    }
    v
}

/// A whole `chat.completion` with one choice.
pub fn completion(
    id: &str,
    model: &str,
    message: Value,
    finish_reason: &str,
    usage: &Usage,
) -> Bytes {
    let body = json!({
        "id": id, "object": "chat.completion", "created": unix_now(), "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason}],
        "usage": usage_json(usage),
    });
    Bytes::from(crate::json_out::to_vec(&body))
}

/// The assistant message of a completion.
pub fn assistant_message(text: &str, reasoning: &str, tool_calls: Vec<Value>) -> Value {
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) }});
    if !reasoning.is_empty() {
        message["reasoning_content"] = json!(reasoning);
    }
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    message
}

/// An OpenAI embeddings list. `base64` (the `encoding_format` the OpenAI SDKs ask for by
/// default) packs each vector as little-endian f32 bytes, as OpenAI does; JSON floats keep
/// the upstream's precision.
pub fn embeddings_response(
    vectors: &[Vec<f64>],
    model: &str,
    prompt_tokens: u64,
    base64: bool,
) -> Bytes {
    use base64::Engine;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let body = json!({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    });
    Bytes::from(crate::json_out::to_vec(&body))
}

/// The texts of an embeddings request's `input` (strings only: token arrays belong to OpenAI's
/// tokenizer and mean nothing to other providers).
pub fn embedding_inputs(
    body: &Map<String, Value>,
    target: &str,
) -> Result<Vec<String>, GatewayError> {
    match body.get("input") {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_string) => {
            Ok(items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect())
        }
        _ => Err(invalid(format!(
            "`input` must be a string or a non-empty array of strings for {target} models"
        ))),
    }
}

/// Whether the client asked for base64-encoded vectors.
pub fn wants_base64(body: &Map<String, Value>) -> Result<bool, GatewayError> {
    match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => Ok(false),
        Some("base64") => Ok(true),
        Some(other) => Err(invalid(format!("unknown encoding_format {other:?}"))),
    }
}

/// One OpenAI tool call.
pub fn tool_call(id: &str, name: &str, arguments: &str) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
}

/// Builds the `chat.completion.chunk` frames of one streamed answer.
#[derive(Debug, Clone)]
pub struct ChunkWriter {
    pub id: String,
    pub model: String,
    created: u64,
}

impl ChunkWriter {
    pub fn new(id: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            model: model.into(),
            created: unix_now(),
        }
    }

    /// A chunk with this delta (and finish reason, for the last one).
    pub fn delta(&self, delta: Value, finish_reason: Option<&str>) -> Frame {
        let field = |k: &str| delta.get(k).and_then(Value::as_str).unwrap_or_default();
        let mut text = format!("{}{}", field("content"), field("reasoning_content"));
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            text.push_str(
                call.pointer("/function/arguments")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            );
        }
        let has_output = !text.is_empty() || delta.get("tool_calls").is_some();
        let chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        });
        let mut frame = Frame::new(chunk.to_string(), has_output);
        frame.text = text;
        frame
    }

    /// The final usage-only chunk (`choices: []`).
    pub fn usage(&self, usage: &Usage) -> Frame {
        let chunk = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [], "usage": usage_json(usage),
        });
        let mut frame = Frame::new(chunk.to_string(), false);
        frame.usage = Some(*usage);
        frame.usage_only = true;
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_and_images() {
        let content = json!([
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
        ]);
        assert_eq!(
            parts(Some(&content), "t").unwrap(),
            vec![
                Part::Text("look".into()),
                Part::Image(Image::Inline {
                    media_type: "image/png".into(),
                    data: "iVBO".into()
                }),
                Part::Image(Image::Url("https://example.com/cat.jpg".into())),
            ]
        );
        let audio = json!([{"type": "input_audio", "input_audio": {}}]);
        let err = parts(Some(&audio), "Claude").unwrap_err().to_string();
        assert!(
            err.contains("input_audio") && err.contains("Claude"),
            "{err}"
        );
    }

    #[test]
    fn tool_choice_forms() {
        let req = |tc: Value| {
            ChatRequest::parse(
                &JsonBody::parse(
                    json!({"messages": [], "tool_choice": tc})
                        .to_string()
                        .into(),
                )
                .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(
            req(json!("required")).tool_choice().unwrap(),
            Some(ToolChoice::Required)
        );
        assert_eq!(
            req(json!({"type": "function", "function": {"name": "f"}}))
                .tool_choice()
                .unwrap(),
            Some(ToolChoice::Function("f".into()))
        );
        assert!(req(json!("sometimes")).tool_choice().is_err());
    }
}
