//! A Responses request read into the canonical (OpenAI chat) request, for targets that do
//! not serve the Responses API. Everything that maps is mapped (instructions, input items,
//! function and custom tools, tool choice, JSON-schema output, output limits); what a chat
//! target cannot do is refused with a 400 naming it, or, where leaving it out changes no
//! answer (hosted tools a chat model cannot call, reasoning items, caching and tracing hints),
//! dropped and named in the request log.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::GatewayError;

/// Top-level members dropped on translated paths, named in the log.
const DROPPABLE: &[&str] = &[
    "include",
    "prompt_cache_key",
    "client_metadata",
    "metadata",
    "reasoning",
    "truncation",
    "service_tier",
    "safety_identifier",
    "user",
    "top_logprobs",
    "background",
    "prompt_cache_retention",
    "stream_options",
];

#[derive(Debug, Deserialize)]
struct ResponsesRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    input: Option<Input>,
    #[serde(default)]
    tools: Option<Vec<Map<String, Value>>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    text: Option<TextConfig>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    store: Option<bool>,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

/// A string, or input items.
type Input = crate::dialect::TextOrList<Map<String, Value>>;

#[derive(Debug, Deserialize)]
struct TextConfig {
    #[serde(default)]
    format: Option<Map<String, Value>>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

/// The canonical request and what else the pipeline needs from the client's request.
pub struct Canonical {
    pub body: Value,
    pub stream: bool,
    /// `store` (default true): the answer may be kept for `previous_response_id` and `GET`.
    pub store: bool,
    pub previous_response_id: Option<String>,
    /// The instructions, echoed in the response object.
    pub instructions: Option<String>,
    /// Tools declared `custom` (free-form input): their calls go back as `custom_tool_call`.
    pub custom_tools: Vec<String>,
    /// The input as canonical messages (without the instructions): what a stored response
    /// keeps for the next request of a chain.
    pub input_messages: Vec<Value>,
    pub dropped: Vec<String>,
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::InvalidRequest(message.into())
}

#[derive(Default)]
struct Dropped(Vec<String>);

impl Dropped {
    fn note(&mut self, what: impl Into<String>) {
        let what = what.into();
        if !self.0.contains(&what) {
            self.0.push(what);
        }
    }
}

/// Reads a Responses request (as JSON) into an OpenAI chat request. `history`: the canonical
/// messages of the response it continues (`previous_response_id`), already loaded.
pub fn to_canonical(raw: &[u8], history: &[Value]) -> Result<Canonical, GatewayError> {
    let request: ResponsesRequest = serde_json::from_slice(raw)
        .map_err(|e| invalid(format!("invalid Responses request: {e}")))?;
    let mut dropped = Dropped::default();
    for (key, value) in &request.other {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "conversation" | "prompt" => {
                return Err(invalid(format!(
                    "`{key}` is kept by OpenAI's servers and cannot be used with this model"
                )));
            }
            k if DROPPABLE.contains(&k) => dropped.note(k),
            other => {
                return Err(invalid(format!(
                    "unknown Responses request field {other:?}"
                )));
            }
        }
    }

    let mut input_messages: Vec<Value> = Vec::new();
    match request.input {
        None => {}
        Some(Input::Text(text)) => input_messages.push(json!({"role": "user", "content": text})),
        Some(Input::List(items)) => {
            for (i, item) in items.iter().enumerate() {
                convert_item(i, item, &mut input_messages, &mut dropped)?;
            }
        }
    }
    if history.is_empty() && input_messages.is_empty() {
        return Err(invalid("input: at least one input item is required"));
    }

    let mut messages: Vec<Value> = Vec::with_capacity(history.len() + input_messages.len() + 1);
    if let Some(instructions) = request.instructions.as_ref().filter(|i| !i.is_empty()) {
        messages.push(json!({"role": "system", "content": instructions}));
    }
    messages.extend(history.iter().cloned());
    messages.extend(input_messages.iter().cloned());

    let mut body = Map::new();
    if let Some(model) = request.model {
        body.insert("model".into(), json!(model));
    }
    body.insert("messages".into(), Value::Array(messages));
    let stream = request.stream.unwrap_or(false);
    if stream {
        body.insert("stream".into(), json!(true));
    }
    if let Some(n) = request.max_output_tokens {
        body.insert("max_tokens".into(), json!(n));
    }
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(p) = request.top_p {
        body.insert("top_p".into(), json!(p));
    }
    let mut custom_tools = Vec::new();
    if let Some(tools) = &request.tools {
        let converted = convert_tools(tools, &mut custom_tools, &mut dropped)?;
        if !converted.is_empty() {
            body.insert("tools".into(), Value::Array(converted));
            if let Some(p) = request.parallel_tool_calls {
                body.insert("parallel_tool_calls".into(), json!(p));
            }
        }
    }
    if let Some(choice) = &request.tool_choice {
        if let Some(choice) = convert_tool_choice(choice)? {
            if body.contains_key("tools") {
                body.insert("tool_choice".into(), choice);
            }
        }
    }
    if let Some(text) = request.text {
        if let Some(format) = text.format {
            if let Some(response_format) = convert_format(&format)? {
                body.insert("response_format".into(), response_format);
            }
        }
        if text.other.keys().any(|k| k == "verbosity") {
            dropped.note("text.verbosity");
        }
    }
    Ok(Canonical {
        body: Value::Object(body),
        stream,
        store: request.store.unwrap_or(true),
        previous_response_id: request.previous_response_id,
        instructions: request.instructions,
        custom_tools,
        input_messages,
        dropped: dropped.0,
    })
}

fn item_type(item: &Map<String, Value>) -> &str {
    item.get("type")
        .and_then(Value::as_str)
        // A bare {role, content} is a message.
        .unwrap_or(if item.contains_key("role") {
            "message"
        } else {
            ""
        })
}

fn str_of<'a>(item: &'a Map<String, Value>, key: &str) -> &'a str {
    item.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn convert_item(
    index: usize,
    item: &Map<String, Value>,
    out: &mut Vec<Value>,
    dropped: &mut Dropped,
) -> Result<(), GatewayError> {
    match item_type(item) {
        "message" => {
            let role = match str_of(item, "role") {
                "user" => "user",
                "assistant" => "assistant",
                "system" | "developer" => "system",
                other => return Err(invalid(format!("input.{index}: unknown role {other:?}"))),
            };
            let content = message_content(index, item.get("content"))?;
            out.push(json!({"role": role, "content": content}));
        }
        "function_call" => push_tool_call(
            out,
            str_of(item, "call_id"),
            str_of(item, "name"),
            str_of(item, "arguments").to_owned(),
        ),
        "custom_tool_call" => push_tool_call(
            out,
            str_of(item, "call_id"),
            str_of(item, "name"),
            json!({"input": str_of(item, "input")}).to_string(),
        ),
        "function_call_output" | "custom_tool_call_output" => {
            let output = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join("\n"),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            out.push(
                json!({"role": "tool", "tool_call_id": str_of(item, "call_id"), "content": output}),
            );
        }
        // The model's own reasoning from an earlier turn (encrypted for OpenAI): nothing a
        // chat target can read.
        "reasoning" => dropped.note("reasoning items"),
        other => {
            return Err(invalid(format!(
                "input.{index}: items of type {other:?} cannot be sent to this model"
            )));
        }
    }
    Ok(())
}

/// Function calls join the assistant turn they follow (chat has one assistant message with
/// its text and its tool calls).
fn push_tool_call(out: &mut Vec<Value>, call_id: &str, name: &str, arguments: String) {
    let call = json!({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}});
    if let Some(last) = out.last_mut()
        && last["role"] == "assistant"
    {
        match last.get_mut("tool_calls").and_then(Value::as_array_mut) {
            Some(calls) => calls.push(call),
            None => last["tool_calls"] = json!([call]),
        }
        return;
    }
    out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
}

fn message_content(index: usize, content: Option<&Value>) -> Result<Value, GatewayError> {
    let parts = match content {
        None | Some(Value::Null) => return Ok(json!("")),
        Some(Value::String(s)) => return Ok(json!(s)),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(invalid(format!(
                "input.{index}: content must be a string or parts"
            )));
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text") => out.push(json!({
                "type": "text",
                "text": part.get("text").and_then(Value::as_str).unwrap_or_default(),
            })),
            Some("input_image") => match part.get("image_url").and_then(Value::as_str) {
                Some(url) => out.push(json!({"type": "image_url", "image_url": {"url": url}})),
                None => {
                    return Err(invalid(format!(
                        "input.{index}: images by file_id are kept by OpenAI's servers; send an image_url"
                    )));
                }
            },
            Some("refusal") => out.push(json!({
                "type": "text",
                "text": part.get("refusal").and_then(Value::as_str).unwrap_or_default(),
            })),
            other => {
                return Err(invalid(format!(
                    "input.{index}: content parts of type {:?} cannot be sent to this model",
                    other.unwrap_or("")
                )));
            }
        }
    }
    // One text part is plain text (what every chat server takes).
    Ok(match out.as_slice() {
        [only] if only["type"] == "text" => only["text"].clone(),
        _ => Value::Array(out),
    })
}

/// Hosted tools run on OpenAI's side; a chat model cannot call them.
const HOSTED_TOOLS: &[&str] = &[
    "web_search",
    "web_search_preview",
    "file_search",
    "code_interpreter",
    "image_generation",
    "tool_search",
    "computer_use_preview",
    "mcp",
    "local_shell",
];

fn convert_tools(
    tools: &[Map<String, Value>],
    custom_tools: &mut Vec<String>,
    dropped: &mut Dropped,
) -> Result<Vec<Value>, GatewayError> {
    let mut out = Vec::with_capacity(tools.len());
    for tool in tools {
        let kind = str_of(tool, "type");
        match kind {
            "function" => {
                let mut function = json!({
                    "name": str_of(tool, "name"),
                    "parameters": tool.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object"})),
                });
                if let Some(d) = tool.get("description").and_then(Value::as_str) {
                    function["description"] = json!(d);
                }
                if let Some(strict) = tool.get("strict").and_then(Value::as_bool) {
                    function["strict"] = json!(strict);
                }
                out.push(json!({"type": "function", "function": function}));
            }
            // A free-form tool (Codex's grammar-described apply_patch): a function taking one
            // string, whose calls go back as custom tool calls.
            "custom" => {
                let name = str_of(tool, "name");
                let mut description = str_of(tool, "description").to_owned();
                if let Some(format) = tool.get("format").and_then(Value::as_object)
                    && let Some(definition) = format.get("definition").and_then(Value::as_str)
                {
                    description.push_str("\n\nThe `input` string must follow this grammar (");
                    description.push_str(str_of(format, "syntax"));
                    description.push_str("):\n");
                    description.push_str(definition);
                }
                custom_tools.push(name.to_owned());
                out.push(json!({"type": "function", "function": {
                    "name": name,
                    "description": description,
                    "parameters": {"type": "object", "properties": {"input": {"type": "string", "description": "The tool's free-form input."}}, "required": ["input"]},
                }}));
            }
            // Tool groups (Codex's sub-agent tools) have no chat equivalent.
            "namespace" => dropped.note(format!("namespace tools ({})", str_of(tool, "name"))),
            k if HOSTED_TOOLS.contains(&k) => dropped.note(format!("{k} tool")),
            other => {
                return Err(invalid(format!(
                    "tools of type {other:?} cannot be used with this model"
                )));
            }
        }
    }
    Ok(out)
}

fn convert_tool_choice(choice: &Value) -> Result<Option<Value>, GatewayError> {
    Ok(match choice {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => Some(json!(s)),
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("function" | "custom") => {
                Some(json!({"type": "function", "function": {"name": str_of(o, "name")}}))
            }
            Some("allowed_tools") => Some(json!(
                o.get("mode").and_then(Value::as_str).unwrap_or("auto")
            )),
            _ => {
                return Err(invalid(
                    "tool_choice: this kind of tool choice cannot be used with this model",
                ));
            }
        },
        _ => {
            return Err(invalid(
                "tool_choice must be auto, none, required or name a function",
            ));
        }
    })
}

fn convert_format(format: &Map<String, Value>) -> Result<Option<Value>, GatewayError> {
    Ok(match format.get("type").and_then(Value::as_str) {
        None | Some("text") => None,
        Some("json_object") => Some(json!({"type": "json_object"})),
        Some("json_schema") => {
            let mut schema = json!({
                "name": format.get("name").and_then(Value::as_str).unwrap_or("response"),
                "schema": format.get("schema").cloned().unwrap_or_else(|| json!({})),
            });
            if let Some(strict) = format.get("strict").and_then(Value::as_bool) {
                schema["strict"] = json!(strict);
            }
            if let Some(d) = format.get("description").and_then(Value::as_str) {
                schema["description"] = json!(d);
            }
            Some(json!({"type": "json_schema", "json_schema": schema}))
        }
        Some(other) => return Err(invalid(format!("text.format: unknown type {other:?}"))),
    })
}
