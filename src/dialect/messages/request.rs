//! A Messages request read into the canonical (OpenAI chat) request, for targets that do not
//! speak Messages. Everything that maps is mapped; what a chat target cannot be told is either
//! refused (a 400 naming it) or, where leaving it out changes no answer's meaning (prompt
//! caching hints, betas, thinking history), dropped and named in the request log.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::dialect::object;
use crate::error::GatewayError;

/// Claude Code opens its system prompt with this per-request line; its changing value
/// defeats every prefix cache of a non-Anthropic backend.
const ATTRIBUTION_PREFIX: &str = "x-anthropic-billing-header:";

/// How the canonical request is built.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOptions {
    /// Strip Claude Code's attribution line from the system prompt.
    pub strip_attribution: bool,
    /// `max_tokens` may be absent (count_tokens has none).
    pub max_tokens_optional: bool,
}

/// The top level of a Messages request: the members the translation understands, and the
/// rest by name (named in the log as dropped).
#[derive(Debug, Deserialize)]
struct MessagesRequest {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<InMessage>,
    #[serde(default)]
    system: Option<Content>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    tools: Option<Vec<Map<String, Value>>>,
    #[serde(default)]
    tool_choice: Option<Map<String, Value>>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct InMessage {
    role: String,
    content: Content,
}

/// A string, or content blocks.
type Content = crate::dialect::TextOrList<Map<String, Value>>;

/// The canonical request and what it left out.
pub struct Canonical {
    pub body: Value,
    pub stream: bool,
    /// Fields and block kinds not carried to the target, for the log.
    pub dropped: Vec<String>,
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::InvalidRequest(message.into())
}

/// Top-level members that are dropped on translated paths (they change caching, tracing or
/// server-side features, not the meaning of the conversation).
const DROPPABLE: &[&str] = &[
    "thinking",
    "context_management",
    "output_config",
    "service_tier",
    "top_k",
    "container",
    "cache_control",
    "inference_geo",
];

/// Reads a Messages request (as JSON) into an OpenAI chat request.
pub fn to_canonical(raw: &[u8], options: DecodeOptions) -> Result<Canonical, GatewayError> {
    let request: MessagesRequest = serde_json::from_slice(raw)
        .map_err(|e| invalid(format!("invalid Messages request: {e}")))?;
    let mut dropped = Dropped::default();
    for (key, value) in &request.other {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "mcp_servers" if value.as_array().is_some_and(|a| !a.is_empty()) => {
                return Err(invalid(
                    "mcp_servers are run by Anthropic's API and cannot be used with this model",
                ));
            }
            k if DROPPABLE.contains(&k) || k == "mcp_servers" => dropped.note(k),
            other => {
                return Err(invalid(format!("unknown Messages request field {other:?}")));
            }
        }
    }
    let max_tokens = match request.max_tokens {
        Some(n) => Some(n),
        None if options.max_tokens_optional => None,
        None => return Err(invalid("max_tokens: Field required")),
    };
    if request.messages.is_empty() {
        return Err(invalid("messages: at least one message is required"));
    }

    let mut messages: Vec<Value> = Vec::with_capacity(request.messages.len() + 1);
    if let Some(system) = &request.system {
        let text = system_text(system, options.strip_attribution, &mut dropped)?;
        if !text.is_empty() {
            messages.push(object([
                ("role", "system".into()),
                ("content", text.into()),
            ]));
        }
    }
    // Messages are taken apart, not copied: their texts move into the canonical request.
    for (i, message) in request.messages.into_iter().enumerate() {
        convert_message(i, message, options, &mut messages, &mut dropped)?;
    }

    let mut body = Map::new();
    if let Some(model) = request.model {
        body.insert("model".into(), json!(model));
    }
    body.insert("messages".into(), Value::Array(messages));
    if let Some(n) = max_tokens {
        body.insert("max_tokens".into(), json!(n));
    }
    let stream = request.stream.unwrap_or(false);
    if stream {
        body.insert("stream".into(), json!(true));
    }
    if let Some(stop) = request.stop_sequences.filter(|s| !s.is_empty()) {
        body.insert("stop".into(), json!(stop));
    }
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = request.top_p {
        body.insert("top_p".into(), json!(p));
    }
    if let Some(tools) = &request.tools
        && !tools.is_empty()
    {
        body.insert(
            "tools".into(),
            Value::Array(convert_tools(tools, &mut dropped)?),
        );
    }
    if let Some(choice) = &request.tool_choice {
        convert_tool_choice(choice, &mut body)?;
    }
    // Claude Code's user id is ~150 characters; OpenAI-compatible servers differ in whether
    // and how long a `user` they take, so it stays with the gateway (its log names the caller).
    if request.metadata.as_ref().is_some_and(|m| !m.is_empty()) {
        dropped.note("metadata");
    }
    Ok(Canonical {
        body: Value::Object(body),
        stream,
        dropped: dropped.0,
    })
}

/// Names noted once each, in the order met.
#[derive(Default)]
struct Dropped(Vec<String>);

impl Dropped {
    fn note(&mut self, what: &str) {
        if !self.0.iter().any(|d| d == what) {
            self.0.push(what.to_owned());
        }
    }
}

fn block_type(block: &Map<String, Value>) -> &str {
    block.get("type").and_then(Value::as_str).unwrap_or("")
}

fn note_cache_control(block: &Map<String, Value>, dropped: &mut Dropped) {
    if block.contains_key("cache_control") {
        dropped.note("cache_control");
    }
}

/// The system prompt as one text; Claude Code's attribution line goes if asked.
fn system_text(
    system: &Content,
    strip_attribution: bool,
    dropped: &mut Dropped,
) -> Result<String, GatewayError> {
    let texts: Vec<String> = match system {
        Content::Text(s) => vec![s.clone()],
        Content::List(blocks) => blocks
            .iter()
            .map(|b| {
                note_cache_control(b, dropped);
                match block_type(b) {
                    "text" => Ok(b
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()),
                    other => Err(invalid(format!(
                        "system: blocks of type {other:?} are not supported; use text"
                    ))),
                }
            })
            .collect::<Result<_, _>>()?,
    };
    let kept: Vec<String> = texts
        .into_iter()
        .filter_map(|t| {
            if strip_attribution && t.starts_with(ATTRIBUTION_PREFIX) {
                dropped.note("attribution header");
                // The line goes; anything after it in the same block stays.
                let rest = t.split_once('\n').map_or("", |(_, rest)| rest).trim_start();
                return (!rest.is_empty()).then(|| rest.to_owned());
            }
            Some(t)
        })
        .collect();
    Ok(kept.join("\n\n"))
}

fn convert_message(
    index: usize,
    message: InMessage,
    options: DecodeOptions,
    out: &mut Vec<Value>,
    dropped: &mut Dropped,
) -> Result<(), GatewayError> {
    let blocks = match message.content {
        Content::Text(text) => {
            let role = match message.role.as_str() {
                "user" | "assistant" => message.role.as_str(),
                "system" => "system",
                other => return Err(invalid(format!("messages.{index}: unknown role {other:?}"))),
            };
            out.push(object([("role", role.into()), ("content", text.into())]));
            return Ok(());
        }
        Content::List(blocks) => blocks,
    };
    match message.role.as_str() {
        // Claude Code sends one of these inside `messages`; chat targets take it as it is.
        "system" => {
            let content = Content::List(blocks);
            let text = system_text(&content, options.strip_attribution, dropped)?;
            out.push(object([
                ("role", "system".into()),
                ("content", text.into()),
            ]));
        }
        "user" => convert_user(index, blocks, out, dropped)?,
        "assistant" => convert_assistant(index, &blocks, out, dropped)?,
        other => return Err(invalid(format!("messages.{index}: unknown role {other:?}"))),
    }
    Ok(())
}

/// A user turn: tool results become `tool` messages (first, as they answer the previous
/// turn), the rest one user message of text and image parts.
fn convert_user(
    index: usize,
    blocks: Vec<Map<String, Value>>,
    out: &mut Vec<Value>,
    dropped: &mut Dropped,
) -> Result<(), GatewayError> {
    let mut parts: Vec<Value> = Vec::new();
    for mut block in blocks {
        note_cache_control(&block, dropped);
        match block_type(&block) {
            "text" => {
                let text = match block.remove("text") {
                    Some(text @ Value::String(_)) => text,
                    _ => json!(""),
                };
                parts.push(object([("type", "text".into()), ("text", text)]));
            }
            "image" => parts.push(image_part(index, &block)?),
            "tool_result" => {
                let content = block.remove("content");
                let id = block
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        invalid(format!("messages.{index}: tool_result needs tool_use_id"))
                    })?;
                let mut text = tool_result_text(index, content, dropped)?;
                if block.get("is_error").and_then(Value::as_bool) == Some(true) {
                    text = format!("Error: {text}");
                }
                out.push(object([
                    ("role", "tool".into()),
                    ("tool_call_id", id.into()),
                    ("content", text.into()),
                ]));
            }
            // Search results and documents cited by Anthropic's API have no chat equivalent.
            other => {
                return Err(invalid(format!(
                    "messages.{index}: content blocks of type {other:?} cannot be sent to this model"
                )));
            }
        }
    }
    if !parts.is_empty() {
        let content = match parts.as_mut_slice() {
            [only] if only["type"] == "text" => only["text"].take(),
            _ => Value::Array(parts),
        };
        out.push(object([("role", "user".into()), ("content", content)]));
    }
    Ok(())
}

fn image_part(index: usize, block: &Map<String, Value>) -> Result<Value, GatewayError> {
    let source = block.get("source").and_then(Value::as_object);
    let url = match source.and_then(|s| s.get("type")).and_then(Value::as_str) {
        Some("base64") => {
            let s = source.unwrap_or(block);
            format!(
                "data:{};base64,{}",
                s.get("media_type")
                    .and_then(Value::as_str)
                    .unwrap_or("image/png"),
                s.get("data").and_then(Value::as_str).unwrap_or_default()
            )
        }
        Some("url") => source
            .and_then(|s| s.get("url"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => {
            return Err(invalid(format!(
                "messages.{index}: images must have a base64 or url source"
            )));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// A tool result's content as text (chat tool messages carry text).
fn tool_result_text(
    index: usize,
    content: Option<Value>,
    dropped: &mut Dropped,
) -> Result<String, GatewayError> {
    Ok(match content {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s,
        Some(Value::Array(items)) => {
            let mut texts = Vec::with_capacity(items.len());
            for mut item in items {
                match item.get("type").and_then(Value::as_str) {
                    Some("text") => texts.push(match item["text"].take() {
                        Value::String(text) => text,
                        _ => String::new(),
                    }),
                    Some("image") => {
                        return Err(invalid(format!(
                            "messages.{index}: images inside tool results cannot be sent to this model"
                        )));
                    }
                    _ => dropped.note("tool_result block"),
                }
            }
            texts.join("\n")
        }
        Some(other) => other.to_string(),
    })
}

/// An assistant turn: text, tool uses as tool calls; thinking from an earlier turn is the
/// Anthropic model's own and its signature means nothing elsewhere, so it is dropped.
fn convert_assistant(
    index: usize,
    blocks: &[Map<String, Value>],
    out: &mut Vec<Value>,
    dropped: &mut Dropped,
) -> Result<(), GatewayError> {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in blocks {
        note_cache_control(block, dropped);
        match block_type(block) {
            "text" => text.push_str(
                block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default(),
            ),
            "tool_use" => {
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": block.get("id").and_then(Value::as_str).unwrap_or_default(),
                    "type": "function",
                    "function": {
                        "name": block.get("name").and_then(Value::as_str).unwrap_or_default(),
                        "arguments": input.to_string(),
                    },
                }));
            }
            "thinking" | "redacted_thinking" => dropped.note("thinking history"),
            other => {
                return Err(invalid(format!(
                    "messages.{index}: content blocks of type {other:?} cannot be sent to this model"
                )));
            }
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) }});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    out.push(message);
    Ok(())
}

/// Client tools become functions; Anthropic's server tools (web search, code execution, ...)
/// exist only on Anthropic's side and are refused.
fn convert_tools(
    tools: &[Map<String, Value>],
    dropped: &mut Dropped,
) -> Result<Vec<Value>, GatewayError> {
    tools
        .iter()
        .map(|tool| {
            match tool.get("type").and_then(Value::as_str) {
                None | Some("custom") => {}
                Some(other) => {
                    return Err(invalid(format!(
                        "tools of type {other:?} run on Anthropic's servers and cannot be used with this model"
                    )));
                }
            }
            note_cache_control(tool, dropped);
            if tool.contains_key("defer_loading") {
                dropped.note("defer_loading");
            }
            let name = tool
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tools: every tool needs a name"))?;
            let mut function = json!({
                "name": name,
                "parameters": tool.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"})),
            });
            if let Some(d) = tool.get("description").and_then(Value::as_str) {
                function["description"] = json!(d);
            }
            Ok(json!({"type": "function", "function": function}))
        })
        .collect()
}

fn convert_tool_choice(
    choice: &Map<String, Value>,
    body: &mut Map<String, Value>,
) -> Result<(), GatewayError> {
    let value = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = choice
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool_choice: type \"tool\" needs a name"))?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => return Err(invalid("tool_choice: type must be auto, any, tool or none")),
    };
    body.insert("tool_choice".into(), value);
    if choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        == Some(true)
    {
        body.insert("parallel_tool_calls".into(), json!(false));
    }
    Ok(())
}
