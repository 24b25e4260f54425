//! A mock of Google's Gemini API: `models/{model}:generateContent`,
//! `:streamGenerateContent?alt=sse` (each event a partial `GenerateContentResponse`, framed
//! `data: …\r\n\r\n`, no `[DONE]`) and `:batchEmbedContents`, with the key in
//! `x-goog-api-key` or `?key=`, and Google's error bodies.
//!
//! Behaviour by model: `safety` (finishReason SAFETY, no content), `blocked` (promptFeedback
//! blockReason), `fail-429` (RESOURCE_EXHAUSTED with a RetryInfo of 21 s), `overloaded` (503).
//! Otherwise: with tools and a user question, a `functionCall` of the first function with
//! `{"city": "Paris"}`; after a `functionResponse`, "Result: <response JSON>"; else the echo of
//! the last user text.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::{Ending, MockState, record, sse_response, words};

pub fn routes() -> Router<Arc<MockState>> {
    Router::new().route("/v1beta/models/{call}", post(call))
}

fn error(code: u16, status: &str, message: &str) -> Response {
    let mut body = json!({"error": {"code": code, "message": message, "status": status}});
    if code == 429 {
        body["error"]["details"] =
            json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "21s"}]);
    }
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

async fn call(
    State(state): State<Arc<MockState>>,
    Path(call): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.");
    };
    let mut path = format!("/v1beta/models/{call}");
    if !query.is_empty() {
        let mut pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.sort();
        path = format!("{path}?{}", pairs.join("&"));
    }
    record(&state, &path, &headers, &body);
    let key = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .or(query.get("key").map(String::as_str))
        .unwrap_or("");
    if key.is_empty() {
        return error(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity).",
        );
    }
    let Some((model, method)) = call.split_once(':') else {
        return error(404, "NOT_FOUND", "Unknown method.");
    };
    let forced = state.forced();
    let model = forced.as_deref().unwrap_or(model);
    match method {
        "batchEmbedContents" => return embed(&body),
        "generateContent" | "streamGenerateContent" => {}
        _ => return error(404, "NOT_FOUND", "Unknown method."),
    }
    let stream = method == "streamGenerateContent";
    if stream && query.get("alt").map(String::as_str) != Some("sse") {
        return error(
            400,
            "INVALID_ARGUMENT",
            "this mock only streams with alt=sse",
        );
    }
    let Some(contents) = body["contents"].as_array().filter(|c| !c.is_empty()) else {
        return error(
            400,
            "INVALID_ARGUMENT",
            "* GenerateContentRequest.contents: contents is not specified",
        );
    };
    if let Some(bad) = contents
        .iter()
        .find(|c| c["role"] != "user" && c["role"] != "model")
    {
        return error(
            400,
            "INVALID_ARGUMENT",
            &format!("Please use a valid role: user, model. Got {}", bad["role"]),
        );
    }
    match model {
        "fail-429" => {
            return error(
                429,
                "RESOURCE_EXHAUSTED",
                "Resource has been exhausted (e.g. check quota).",
            );
        }
        "overloaded" => {
            return error(
                503,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
            );
        }
        _ => {}
    }

    let prompt_tokens: u64 = contents
        .iter()
        .map(|c| words(&c["parts"].to_string()))
        .sum();
    let last_parts = contents
        .last()
        .and_then(|c| c["parts"].as_array())
        .cloned()
        .unwrap_or_default();
    let response_part = last_parts.iter().find_map(|p| p.get("functionResponse"));
    let user_text: String = last_parts
        .iter()
        .filter_map(|p| p["text"].as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let function = body
        .pointer("/tools/0/functionDeclarations/0/name")
        .and_then(Value::as_str);

    let (parts, finish): (Vec<Value>, &str) = match (model, response_part, function) {
        ("safety", ..) => (vec![], "SAFETY"),
        (_, Some(r), _) => (
            vec![json!({"text": format!("Result: {}", r["response"])})],
            "STOP",
        ),
        (_, None, Some(name)) => (
            vec![json!({"functionCall": {"name": name, "args": {"city": "Paris"}}})],
            "STOP",
        ),
        _ => (
            user_text
                .split_inclusive(' ')
                .map(|w| json!({"text": w}))
                .collect(),
            "STOP",
        ),
    };
    let output_tokens: u64 = parts
        .iter()
        .map(|p| words(p["text"].as_str().unwrap_or("x")))
        .sum();
    let usage = json!({"promptTokenCount": prompt_tokens, "candidatesTokenCount": output_tokens, "totalTokenCount": prompt_tokens + output_tokens});
    let candidate = |parts: Vec<Value>, finish: Option<&str>| {
        let mut c = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(f) = finish {
            c["finishReason"] = json!(f);
            c["safetyRatings"] = json!([]);
        }
        if parts_empty(&c) {
            c.as_object_mut().unwrap().remove("content");
        }
        c
    };
    if model == "blocked" {
        let blocked = json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}, "modelVersion": model});
        return if stream {
            sse_response(
                state,
                vec![format!("data: {blocked}\r\n\r\n")],
                Duration::ZERO,
                Ending::Normal,
            )
        } else {
            axum::Json(blocked).into_response()
        };
    }
    if !stream {
        return axum::Json(json!({
            "candidates": [candidate(parts, Some(finish))], "usageMetadata": usage,
            "modelVersion": model, "responseId": "mock-response-1",
        }))
        .into_response();
    }
    // One event per part; the last carries the finish reason and the full usage.
    let count = parts.len().max(1);
    let mut events = Vec::new();
    let mut parts = parts.into_iter();
    for i in 0..count {
        let last = i + 1 == count;
        let mut chunk = json!({"candidates": [candidate(parts.next().into_iter().collect(), last.then_some(finish))], "modelVersion": model, "responseId": "mock-response-1"});
        chunk["usageMetadata"] = if last {
            usage.clone()
        } else {
            json!({"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens})
        };
        events.push(format!("data: {chunk}\r\n\r\n"));
        if model == "leak-key-mid-stream" {
            let error = json!({"error": {"code": 400, "message": format!("API key not valid: {key}. Please pass a valid API key."), "status": "INVALID_ARGUMENT"}});
            events.push(format!("data: {error}\r\n\r\n"));
            break;
        }
    }
    sse_response(state, events, Duration::ZERO, Ending::Normal)
}

fn parts_empty(candidate: &Value) -> bool {
    candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .is_some_and(|p| p.is_empty())
}

fn embed(body: &Value) -> Response {
    let Some(requests) = body["requests"].as_array() else {
        return error(400, "INVALID_ARGUMENT", "requests is required");
    };
    let embeddings: Vec<Value> = requests
        .iter()
        .map(|r| {
            let text = r
                .pointer("/content/parts/0/text")
                .and_then(Value::as_str)
                .unwrap_or("");
            let dims = r["outputDimensionality"].as_u64().unwrap_or(4) as usize;
            json!({"values": (0..dims).map(|i| (text.len() + i) as f64 / 10.0).collect::<Vec<_>>()})
        })
        .collect();
    axum::Json(json!({"embeddings": embeddings})).into_response()
}
