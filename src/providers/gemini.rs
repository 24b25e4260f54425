//! Google's Gemini API (`models/{model}:generateContent`, `:streamGenerateContent?alt=sse`,
//! `:batchEmbedContents`), translated both ways. Gemini names no tool calls, so the gateway
//! gives them ids and finds a tool result's function name again by its id in the conversation.

use serde_json::{Map, Value, json};

use super::translate::{
    self, ChatRequest, ChunkWriter, Image, Part, StreamTranslator, ToolChoice, arguments_object,
    invalid, text_only,
};
use super::upstream::{HttpUpstream, build_url};
use super::{CallOptions, ChatReply, Complete, Frame, Usage};
use crate::config::{GeminiKeyPlacement, GeminiProviderConfig, Timeouts};
use crate::error::GatewayError;

const TARGET: &str = "Gemini";

#[derive(Debug)]
pub struct GeminiProvider {
    http: HttpUpstream,
    base_url: String,
    /// Set when the key travels as the `key` query parameter rather than a header.
    query_key: Option<String>,
}

impl GeminiProvider {
    pub fn new(name: &str, config: &GeminiProviderConfig) -> Result<Self, String> {
        let key = config.api_key.clone().unwrap_or_default();
        let http = HttpUpstream::new(name, &config.timeouts, &config.headers)?;
        let (http, query_key) = match config.key_in {
            GeminiKeyPlacement::Header => (
                http.with_secret_header("x-goog-api-key", key.clone(), &key)?,
                None,
            ),
            GeminiKeyPlacement::Query => (http.with_secret(&key), Some(key)),
        };
        Ok(Self {
            http,
            base_url: config.base_url.clone(),
            query_key,
        })
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.http.timeouts
    }

    fn url(&self, model: &str, method: &str, sse: bool) -> Result<String, GatewayError> {
        let mut query = Vec::new();
        if sse {
            query.push(("alt", "sse"));
        }
        if let Some(key) = &self.query_key {
            query.push(("key", key.as_str()));
        }
        build_url(
            &self.base_url,
            &["models", &format!("{model}:{method}")],
            &query,
        )
    }

    pub async fn chat(
        &self,
        body: Map<String, Value>,
        stream: bool,
        opts: CallOptions<'_>,
    ) -> Result<ChatReply, GatewayError> {
        let request = ChatRequest::parse(body)?;
        let wire = to_gemini(&request)?;
        let method = if stream {
            "streamGenerateContent"
        } else {
            "generateContent"
        };
        let response = self
            .http
            .post_json(&self.url(opts.upstream_model, method, stream)?, &wire)
            .await?;
        if stream {
            let translator = GeminiStream::new(&self.http.name, opts.upstream_model);
            return self
                .http
                .event_stream(response, translator)
                .map(ChatReply::Stream);
        }
        let answer: Value = self.http.read_json(response, opts.max_response).await?;
        from_gemini(&answer, opts.upstream_model, &self.http.name).map(ChatReply::Complete)
    }

    pub async fn embeddings(
        &self,
        body: Map<String, Value>,
        opts: CallOptions<'_>,
    ) -> Result<Complete, GatewayError> {
        let inputs = translate::embedding_inputs(&body, TARGET)?;
        let base64 = translate::wants_base64(&body)?;
        let dimensions = body.get("dimensions").and_then(Value::as_u64);
        let model_ref = format!("models/{}", opts.upstream_model);
        let requests: Vec<Value> = inputs
            .iter()
            .map(|text| {
                let mut r = json!({"model": model_ref, "content": {"parts": [{"text": text}]}});
                if let Some(d) = dimensions {
                    r["outputDimensionality"] = json!(d);
                }
                r
            })
            .collect();
        let response = self
            .http
            .post_json(
                &self.url(opts.upstream_model, "batchEmbedContents", false)?,
                &json!({"requests": requests}),
            )
            .await?;
        let answer: Value = self.http.read_json(response, opts.max_response).await?;
        let vectors: Vec<Vec<f32>> = answer
            .get("embeddings")
            .and_then(Value::as_array)
            .ok_or_else(|| self.http.protocol_error("the answer has no embeddings"))?
            .iter()
            .map(|e| {
                e.get("values").and_then(Value::as_array).map(|vs| {
                    vs.iter()
                        .filter_map(Value::as_f64)
                        .map(|x| x as f32)
                        .collect()
                })
            })
            .collect::<Option<_>>()
            .ok_or_else(|| self.http.protocol_error("an embedding has no values"))?;
        // Gemini reports no token count for embeddings: estimate ~4 characters a token.
        let prompt_tokens = inputs
            .iter()
            .map(|t| t.chars().count().div_ceil(4) as u64)
            .sum();
        let usage = Usage {
            prompt_tokens,
            total_tokens: prompt_tokens,
            ..Usage::default()
        };
        let body =
            translate::embeddings_response(&vectors, opts.upstream_model, prompt_tokens, base64);
        Ok(Complete {
            body,
            usage: Some(usage),
        })
    }
}

/// The generateContent request for an OpenAI chat request.
pub fn to_gemini(req: &ChatRequest) -> Result<Value, GatewayError> {
    req.reject_common_unsupported(TARGET)?;
    let mut system = Vec::new();
    let mut contents: Vec<(&str, Vec<Value>)> = Vec::new();
    for m in &req.messages {
        let (role, parts) = match m.role.as_str() {
            "system" | "developer" => {
                let text = text_only(m.content.as_ref(), "system messages", TARGET)?;
                if !text.is_empty() {
                    system.push(json!({"text": text}));
                }
                continue;
            }
            "user" => ("user", content_parts(m.content.as_ref())?),
            "assistant" => {
                let mut parts = content_parts(m.content.as_ref())?;
                for call in m.tool_calls.iter().flatten() {
                    parts.push(json!({"functionCall": {"name": call.function.name, "args": arguments_object(&call.function.arguments)?}}));
                }
                ("model", parts)
            }
            "tool" => {
                let id = m
                    .tool_call_id
                    .as_deref()
                    .ok_or_else(|| invalid("a tool message needs a tool_call_id"))?;
                let name = req.tool_name_for(id).ok_or_else(|| {
                    invalid(format!(
                        "tool_call_id {id:?} matches no tool call of an earlier assistant message"
                    ))
                })?;
                let text = text_only(m.content.as_ref(), "tool results", TARGET)?;
                // Gemini wants an object: a JSON object result as it is, anything else wrapped.
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(v @ Value::Object(_)) => v,
                    Ok(v) => json!({"result": v}),
                    Err(_) => json!({"result": text}),
                };
                (
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                )
            }
            other => return Err(invalid(format!("unknown message role {other:?}"))),
        };
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(parts),
            _ => contents.push((role, parts)),
        }
    }
    if contents.is_empty() {
        return Err(invalid("the conversation has no user or assistant message"));
    }
    let mut body = json!({
        "contents": contents.into_iter().map(|(role, parts)| json!({"role": role, "parts": parts})).collect::<Vec<_>>(),
    });
    if !system.is_empty() {
        body["systemInstruction"] = json!({"parts": system});
    }

    let mut config = Map::new();
    let mut set = |k: &str, v: Value| {
        config.insert(k.to_owned(), v);
    };
    if let Some(n) = req.max_output_tokens() {
        set("maxOutputTokens", json!(n));
    }
    if let Some(t) = req.temperature {
        set("temperature", json!(t));
    }
    if let Some(p) = req.top_p {
        set("topP", json!(p));
    }
    let stop = req.stop_sequences();
    if !stop.is_empty() {
        set("stopSequences", json!(stop));
    }
    if let Some(p) = req.presence_penalty {
        set("presencePenalty", json!(p));
    }
    if let Some(p) = req.frequency_penalty {
        set("frequencyPenalty", json!(p));
    }
    if let Some(s) = req.seed {
        set("seed", json!(s));
    }
    if let Some(format) = &req.response_format {
        match format.get("type").and_then(Value::as_str) {
            Some("text") | None => {}
            Some("json_object") => set("responseMimeType", json!("application/json")),
            Some("json_schema") => {
                let schema = format
                    .pointer("/json_schema/schema")
                    .cloned()
                    .ok_or_else(|| invalid("json_schema needs a schema"))?;
                set("responseMimeType", json!("application/json"));
                set("responseJsonSchema", schema);
            }
            Some(other) => {
                return Err(invalid(format!(
                    "response_format {other:?} is not supported by {TARGET} models"
                )));
            }
        }
    }
    if !config.is_empty() {
        body["generationConfig"] = Value::Object(config);
    }

    if let Some(tools) = &req.tools {
        let declarations: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut d = json!({"name": t.function.name});
                if let Some(desc) = &t.function.description {
                    d["description"] = json!(desc);
                }
                if let Some(params) = &t.function.parameters {
                    d["parametersJsonSchema"] = params.clone();
                }
                d
            })
            .collect();
        body["tools"] = json!([{"functionDeclarations": declarations}]);
    }
    let calling = match req.tool_choice()? {
        None => None,
        Some(ToolChoice::Auto) => Some(json!({"mode": "AUTO"})),
        Some(ToolChoice::None) => Some(json!({"mode": "NONE"})),
        Some(ToolChoice::Required) => Some(json!({"mode": "ANY"})),
        Some(ToolChoice::Function(name)) => {
            Some(json!({"mode": "ANY", "allowedFunctionNames": [name]}))
        }
    };
    if let Some(calling) = calling {
        body["toolConfig"] = json!({"functionCallingConfig": calling});
    }
    Ok(body)
}

fn content_parts(content: Option<&Value>) -> Result<Vec<Value>, GatewayError> {
    Ok(translate::parts(content, TARGET)?
        .into_iter()
        .filter(|p| !matches!(p, Part::Text(t) if t.is_empty()))
        .map(|p| match p {
            Part::Text(text) => json!({"text": text}),
            Part::Image(Image::Inline { media_type, data }) => {
                json!({"inlineData": {"mimeType": media_type, "data": data}})
            }
            Part::Image(Image::Url(url)) => {
                json!({"fileData": {"mimeType": image_type(&url), "fileUri": url}})
            }
        })
        .collect())
}

/// Gemini needs a MIME type for file URLs; guess it from the extension.
fn image_type(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    match path.rsplit('.').next() {
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("heic") => "image/heic",
        _ => "image/jpeg",
    }
}

/// `finishReason` → `finish_reason`. Safety stops are `content_filter`, never a plain `stop`.
fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => "content_filter",
        _ => "stop", // STOP, OTHER, MALFORMED_FUNCTION_CALL, FINISH_REASON_UNSPECIFIED
    }
}

fn usage_of(meta: &Value) -> Usage {
    let get = |k: &str| meta.get(k).and_then(Value::as_u64);
    let prompt = get("promptTokenCount").unwrap_or(0);
    let thoughts = get("thoughtsTokenCount");
    // OpenAI counts reasoning tokens as completion tokens.
    let completion = get("candidatesTokenCount").unwrap_or(0) + thoughts.unwrap_or(0);
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: get("totalTokenCount").unwrap_or(prompt + completion),
        cached_tokens: get("cachedContentTokenCount"),
        reasoning_tokens: thoughts,
        cache_write_tokens: None,
    }
}

fn new_call_id() -> String {
    format!("call_{}", uuid::Uuid::new_v4().simple())
}

/// An error object in a Gemini body (`{"error": {"code", "message", "status"}}`).
fn error_in(v: &Value, provider: &str) -> Option<GatewayError> {
    let error = v.get("error")?;
    Some(GatewayError::UpstreamStatus {
        provider: provider.to_owned(),
        status: error
            .get("code")
            .and_then(Value::as_u64)
            .and_then(|c| u16::try_from(c).ok())
            .unwrap_or(500),
        message: error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("error")
            .to_owned(),
        retry_after: None,
    })
}

/// The answer's parts as text, reasoning and tool calls.
fn split_parts(candidate: &Value, first_call_index: usize) -> (String, String, Vec<Value>) {
    let (mut text, mut reasoning, mut calls) = (String::new(), String::new(), Vec::new());
    for part in candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(call) = part.get("functionCall") {
            let mut tc = translate::tool_call(
                &new_call_id(),
                call.get("name").and_then(Value::as_str).unwrap_or_default(),
                &call
                    .get("args")
                    .cloned()
                    .unwrap_or_else(|| json!({}))
                    .to_string(),
            );
            tc["index"] = json!(first_call_index + calls.len());
            calls.push(tc);
        } else if let Some(t) = part.get("text").and_then(Value::as_str) {
            if part.get("thought").and_then(Value::as_bool) == Some(true) {
                reasoning.push_str(t);
            } else {
                text.push_str(t);
            }
        }
    }
    (text, reasoning, calls)
}

/// A whole generateContent answer as an OpenAI completion.
pub fn from_gemini(answer: &Value, model: &str, provider: &str) -> Result<Complete, GatewayError> {
    if let Some(e) = error_in(answer, provider) {
        return Err(e);
    }
    let Some(candidate) = answer
        .get("candidates")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
    else {
        let reason = answer
            .pointer("/promptFeedback/blockReason")
            .and_then(Value::as_str);
        return Err(match reason {
            Some(reason) => GatewayError::ContentFiltered(reason.to_owned()),
            None => GatewayError::UpstreamProtocol {
                provider: provider.to_owned(),
                detail: "the answer has no candidates".into(),
            },
        });
    };
    let (text, reasoning, mut calls) = split_parts(candidate, 0);
    calls.iter_mut().for_each(|c| {
        c.as_object_mut().map(|o| o.remove("index"));
    });
    let finish = match candidate.get("finishReason").and_then(Value::as_str) {
        _ if !calls.is_empty() => "tool_calls",
        Some(r) => finish_reason(r),
        None => "stop",
    };
    let usage = usage_of(answer.get("usageMetadata").unwrap_or(&Value::Null));
    let id = answer
        .get("responseId")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(new_call_id);
    let mut message = translate::assistant_message(&text, &reasoning, calls);
    if finish == "content_filter" && text.is_empty() {
        message["content"] = Value::Null;
        message["refusal"] = json!("The answer was blocked by the provider's safety filter.");
    }
    let body = translate::completion(&id, model, message, finish, &usage);
    Ok(Complete {
        body,
        usage: Some(usage),
    })
}

/// Translates streamGenerateContent's SSE events (each a partial answer; no `[DONE]`: the
/// stream's end is the end) into OpenAI chunks.
pub struct GeminiStream {
    provider: String,
    writer: ChunkWriter,
    started: bool,
    usage: Usage,
    finish: Option<&'static str>,
    tool_calls: usize,
}

impl GeminiStream {
    pub fn new(provider: &str, model: &str) -> Self {
        Self {
            provider: provider.to_owned(),
            writer: ChunkWriter::new(format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()), model),
            started: false,
            usage: Usage::default(),
            finish: None,
            tool_calls: 0,
        }
    }

    fn protocol(&self, detail: &str) -> GatewayError {
        GatewayError::UpstreamProtocol {
            provider: self.provider.clone(),
            detail: detail.to_owned(),
        }
    }
}

impl StreamTranslator for GeminiStream {
    fn on_event(&mut self, _event: &str, data: &str) -> Result<Vec<Frame>, GatewayError> {
        let v: Value =
            serde_json::from_str(data).map_err(|_| self.protocol("an event is not JSON"))?;
        if let Some(e) = error_in(&v, &self.provider) {
            return Err(e);
        }
        let mut frames = Vec::new();
        if !self.started {
            self.started = true;
            frames.push(
                self.writer
                    .delta(json!({"role": "assistant", "content": ""}), None),
            );
        }
        if let Some(meta) = v.get("usageMetadata") {
            self.usage = usage_of(meta); // cumulative: the last one counts
        }
        let Some(candidate) = v
            .get("candidates")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        else {
            if v.pointer("/promptFeedback/blockReason").is_some() {
                self.finish = Some("content_filter");
            }
            return Ok(frames);
        };
        let (text, reasoning, calls) = split_parts(candidate, self.tool_calls);
        self.tool_calls += calls.len();
        if !reasoning.is_empty() {
            frames.push(
                self.writer
                    .delta(json!({"reasoning_content": reasoning}), None),
            );
        }
        if !text.is_empty() {
            frames.push(self.writer.delta(json!({"content": text}), None));
        }
        if !calls.is_empty() {
            frames.push(self.writer.delta(json!({"tool_calls": calls}), None));
        }
        if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
            self.finish = Some(if self.tool_calls > 0 {
                "tool_calls"
            } else {
                finish_reason(reason)
            });
        }
        Ok(frames)
    }

    fn finish(&mut self) -> Result<Vec<Frame>, GatewayError> {
        let Some(reason) = self.finish else {
            return Err(self.protocol("the event stream ended without a finishReason"));
        };
        Ok(vec![
            self.writer.delta(json!({}), Some(reason)),
            self.writer.usage(&self.usage),
            Frame::done(),
        ])
    }
}
