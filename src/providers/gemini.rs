//! Google's Gemini API (`models/{model}:generateContent`, `:streamGenerateContent?alt=sse`,
//! `:batchEmbedContents`), translated both ways. Gemini names no tool calls, so the gateway
//! gives them ids and finds a tool result's function name again by its id in the conversation.

use serde_json::{Map, Value, json};

use super::translate::{
    self, ChatRequest, ChunkWriter, Image, Part, StreamTranslator, ToolChoice, arguments_object,
    invalid, text_only,
};
use super::upstream::{HttpUpstream, build_url, parse_base};
use super::{CallOptions, ChatReply, Complete, Frame, Usage};
use crate::body::JsonBody;
use crate::config::{GeminiKeyPlacement, GeminiProviderConfig};
use crate::error::GatewayError;

const TARGET: &str = "Gemini";

#[derive(Debug)]
pub struct GeminiProvider {
    http: HttpUpstream,
    base_url: url::Url,
    /// Set when the key travels as the `key` query parameter rather than a header.
    query_key: Option<String>,
}

impl GeminiProvider {
    pub fn new(name: &str, config: &GeminiProviderConfig) -> Result<Self, String> {
        let key = config.api_key.clone().unwrap_or_default();
        let http = HttpUpstream::new(name, &config.timeouts, &config.headers, &config.tls)?;
        let (http, query_key) = match config.key_in {
            GeminiKeyPlacement::Header => (
                http.with_secret_header("x-goog-api-key", key.clone(), &key)?,
                None,
            ),
            GeminiKeyPlacement::Query => (http.with_secret(&key), Some(key)),
        };
        Ok(Self {
            http,
            base_url: parse_base(&config.base_url)?,
            query_key,
        })
    }

    fn url(&self, model: &str, method: &str, sse: bool) -> Result<url::Url, GatewayError> {
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
        body: JsonBody,
        stream: bool,
        opts: CallOptions<'_>,
    ) -> Result<ChatReply, GatewayError> {
        let request = ChatRequest::parse(&body)?;
        let wire = to_gemini(&request)?;
        let method = if stream {
            "streamGenerateContent"
        } else {
            "generateContent"
        };
        let response = self
            .http
            .post_json(
                &self.url(opts.upstream_model, method, stream)?,
                &wire,
                opts.timeouts,
            )
            .await?;
        if stream {
            let translator = GeminiStream::new(&self.http.name, opts.upstream_model);
            return self
                .http
                .event_stream(response, translator)
                .map(ChatReply::Stream);
        }
        let answer: Value = self
            .http
            .read_json(response, opts.max_response, opts.timeouts.idle)
            .await?;
        from_gemini(&answer, opts.upstream_model, &self.http.name).map(ChatReply::Complete)
    }

    pub async fn embeddings(
        &self,
        body: JsonBody,
        opts: CallOptions<'_>,
    ) -> Result<Complete, GatewayError> {
        let body = body
            .to_map()
            .map_err(|e| translate::invalid(format!("invalid embeddings request: {e}")))?;
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
                opts.timeouts,
            )
            .await?;
        let answer: Value = self
            .http
            .read_json(response, opts.max_response, opts.timeouts.idle)
            .await?;
        let vectors: Vec<Vec<f64>> = answer
            .get("embeddings")
            .and_then(Value::as_array)
            .ok_or_else(|| self.http.protocol_error("the answer has no embeddings"))?
            .iter()
            .map(|e| {
                e.get("values")
                    .and_then(Value::as_array)
                    .map(|vs| vs.iter().filter_map(Value::as_f64).collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn request(v: Value) -> ChatRequest {
        ChatRequest::parse(&JsonBody::parse(v.to_string().into()).unwrap()).unwrap()
    }

    #[test]
    fn request_translation_covers_roles_tools_results_and_config() {
        let req = request(json!({
            "max_completion_tokens": 256, "temperature": 1.2, "top_p": 0.9, "stop": ["END"], "seed": 3,
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "additionalProperties": false}}}],
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}, {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}}]},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_a", "content": "{\"temp_c\": 18}"},
                {"role": "user", "content": "And tomorrow?"},
            ],
        }));
        let expected = json!({
            "contents": [
                {"role": "user", "parts": [{"text": "Weather?"}, {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/"}}]},
                {"role": "model", "parts": [{"text": "Checking."}, {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"temp_c": 18}}},
                    {"text": "And tomorrow?"}]},
            ],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "generationConfig": {
                "maxOutputTokens": 256, "temperature": 1.2, "topP": 0.9, "stopSequences": ["END"], "seed": 3,
                "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"},
            },
            "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather now",
                "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "additionalProperties": false}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
        });
        assert_eq!(to_gemini(&req).unwrap(), expected);
    }

    #[test]
    fn tool_results_need_a_known_call_and_plain_results_are_wrapped() {
        let orphan = request(
            json!({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "1"}]}),
        );
        assert_eq!(to_gemini(&orphan).unwrap_err().status(), 400);
        let req = request(json!({"messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ]}));
        let body = to_gemini(&req).unwrap();
        assert_eq!(
            body["contents"][1]["parts"][0],
            json!({"functionCall": {"name": "f", "args": {}}})
        );
        assert_eq!(
            body["contents"][2]["parts"][0]["functionResponse"]["response"],
            json!({"result": "sunny"})
        );
        assert_eq!(
            to_gemini(&request(
                json!({"messages": [{"role": "user", "content": "x"}], "n": 3})
            ))
            .unwrap_err()
            .status(),
            400
        );
    }

    #[test]
    fn whole_answer_translation_with_tool_calls_usage_and_safety() {
        let answer = json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "thinking…", "thought": true},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
                "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 8, "thoughtsTokenCount": 12, "totalTokenCount": 50, "cachedContentTokenCount": 10},
            "modelVersion": "gemini-2.5-flash", "responseId": "resp-1",
        });
        let complete = from_gemini(&answer, "gemini-2.5-flash", "gemini").unwrap();
        let body: Value = serde_json::from_slice(&complete.body).unwrap();
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(choice["message"]["content"], Value::Null);
        assert_eq!(choice["message"]["reasoning_content"], "thinking…");
        let call = &choice["message"]["tool_calls"][0];
        assert!(call["id"].as_str().unwrap().starts_with("call_"));
        assert_eq!(
            call["function"],
            json!({"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"})
        );
        assert!(call.get("index").is_none());
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 30, "completion_tokens": 20, "total_tokens": 50,
                   "prompt_tokens_details": {"cached_tokens": 10}, "completion_tokens_details": {"reasoning_tokens": 12}})
        );

        let blocked = json!({"candidates": [{"finishReason": "SAFETY", "index": 0, "safetyRatings": []}], "usageMetadata": {"promptTokenCount": 5, "totalTokenCount": 5}});
        let body: Value =
            serde_json::from_slice(&from_gemini(&blocked, "g", "gemini").unwrap().body).unwrap();
        assert_eq!(
            body["choices"][0]["finish_reason"], "content_filter",
            "a safety stop is not a normal stop"
        );
        assert_eq!(body["choices"][0]["message"]["content"], Value::Null);

        let prompt_blocked = json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 5}});
        let err = from_gemini(&prompt_blocked, "g", "gemini").unwrap_err();
        assert_eq!((err.status().as_u16(), err.code()), (400, "content_filter"));

        let length = json!({"candidates": [{"content": {"parts": [{"text": "abc"}]}, "finishReason": "MAX_TOKENS"}]});
        let body: Value =
            serde_json::from_slice(&from_gemini(&length, "g", "gemini").unwrap().body).unwrap();
        assert_eq!(body["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn stream_translation() {
        let mut t = GeminiStream::new("gemini", "gemini-2.5-flash");
        let events = [
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hel"}]}, "index": 0}], "usageMetadata": {"promptTokenCount": 4, "totalTokenCount": 4}}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "lo ✓"}]}, "index": 0}]}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {"a": 1}}}]}, "finishReason": "STOP", "index": 0}],
                   "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 6, "totalTokenCount": 10}}),
        ];
        let mut frames = Vec::new();
        for e in &events {
            frames.extend(t.on_event("", &e.to_string()).unwrap());
        }
        frames.extend(t.finish().unwrap());
        assert!(frames.last().unwrap().is_done());
        let chunks: Vec<Value> = frames
            .iter()
            .filter(|f| !f.is_done())
            .map(|f| serde_json::from_slice(&f.data).unwrap())
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(text, "Hello ✓");
        let call = chunks
            .iter()
            .find_map(|c| c["choices"][0]["delta"].get("tool_calls"))
            .unwrap();
        assert_eq!(call[0]["index"], 0);
        assert_eq!(
            call[0]["function"],
            json!({"name": "f", "arguments": "{\"a\":1}"})
        );
        assert!(
            chunks
                .iter()
                .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
        );
        let usage = frames.iter().find(|f| f.usage_only).unwrap().usage.unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.total_tokens
            ),
            (4, 6, 10)
        );
    }

    #[test]
    fn stream_errors_and_truncation() {
        let mut t = GeminiStream::new("gemini", "g");
        t.on_event(
            "",
            r#"{"candidates": [{"content": {"parts": [{"text": "a"}]}}]}"#,
        )
        .unwrap();
        assert!(
            t.finish().is_err(),
            "a stream that stops without a finishReason is cut"
        );
        let err = GeminiStream::new("gemini", "g")
            .on_event("", r#"{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}"#)
            .unwrap_err();
        assert_eq!(err.status(), 503);
        let mut t = GeminiStream::new("gemini", "g");
        t.on_event("", r#"{"promptFeedback": {"blockReason": "SAFETY"}}"#)
            .unwrap();
        let frames = t.finish().unwrap();
        let finish: Value = serde_json::from_slice(&frames[0].data).unwrap();
        assert_eq!(finish["choices"][0]["finish_reason"], "content_filter");
    }
}
