//! A mock of Anthropic's Messages API (`POST /v1/messages`), with the documented request rules
//! (an `x-api-key` and `anthropic-version`, `max_tokens` required, turns alternating and
//! starting with `user`, tool results answering the previous turn's tool uses) and answers
//! (message objects, the `message_start` … `message_stop` SSE events, error bodies).
//!
//! Behaviour by model: `overloaded` (529), `rate-limited` (429, `retry-after: 12`), `fail-401`
//! (quotes the key it got), `error-mid-stream` (an `error` event after some text). Otherwise:
//! with tools and a user question, a text block and a `tool_use` of the first tool with
//! `{"city": "Paris"}`; after tool results, "Result: <the results>"; else the echo of the last
//! user text.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::{Ending, MockState, record, sse_response, tool_arguments, tool_to_call, words};

pub fn routes() -> Router<Arc<MockState>> {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": N}` for a Messages request without
/// `max_tokens` (counted as the answers' usage is).
async fn count_tokens(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "invalid_request_error", "invalid JSON");
    };
    record(&state, "/v1/messages/count_tokens", &headers, &body);
    if headers.get("x-api-key").is_none() {
        return error(401, "authentication_error", "x-api-key header is required");
    }
    axum::Json(json!({"input_tokens": input_tokens(&body)})).into_response()
}

fn input_tokens(body: &Value) -> u64 {
    let system = match &body["system"] {
        Value::String(s) => words(s),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| words(b["text"].as_str().unwrap_or("")))
            .sum(),
        _ => 0,
    };
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| words(&m["content"].to_string()))
        .sum::<u64>()
        + system
}

fn error(status: u16, kind: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap();
    (
        status,
        axum::Json(json!({"type": "error", "error": {"type": kind, "message": message}})),
    )
        .into_response()
}

/// The rules the real API enforces that a translation could break.
fn invalid(body: &Value) -> Option<String> {
    if !body["max_tokens"].is_u64() {
        return Some("max_tokens: Field required".into());
    }
    let messages = body["messages"].as_array()?;
    if messages.is_empty() {
        return Some("messages: at least one message is required".into());
    }
    let mut expected = "user";
    let mut pending_tool_uses: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if m["role"] == "system" {
            continue; // Claude Code sends one among the turns; the API takes it
        }
        if m["role"] != expected {
            return Some(format!(
                "messages.{i}.role: roles must alternate between \"user\" and \"assistant\", starting with \"user\""
            ));
        }
        let blocks = match &m["content"] {
            Value::String(s) if !s.is_empty() => vec![],
            Value::Array(b) if !b.is_empty() => b.clone(),
            _ => return Some(format!("messages.{i}: content must not be empty")),
        };
        let results: Vec<String> = blocks
            .iter()
            .filter(|b| b["type"] == "tool_result")
            .map(|b| b["tool_use_id"].as_str().unwrap_or("").to_owned())
            .collect();
        if results != pending_tool_uses && !(results.is_empty() && pending_tool_uses.is_empty()) {
            return Some(format!(
                "messages.{i}: tool_result blocks must answer every tool_use of the previous turn, first"
            ));
        }
        pending_tool_uses = blocks
            .iter()
            .filter(|b| b["type"] == "tool_use")
            .map(|b| b["id"].as_str().unwrap_or("").to_owned())
            .collect();
        expected = if expected == "user" {
            "assistant"
        } else {
            "user"
        };
    }
    None
}

async fn messages(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "invalid_request_error", "invalid JSON");
    };
    record(&state, "/v1/messages", &headers, &body);
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if key.is_empty() {
        return error(401, "authentication_error", "x-api-key header is required");
    }
    if headers.get("anthropic-version").is_none() {
        return error(
            400,
            "invalid_request_error",
            "anthropic-version header is required",
        );
    }
    if let Some(problem) = invalid(&body) {
        return error(400, "invalid_request_error", &problem);
    }
    let model = state
        .forced()
        .unwrap_or_else(|| body["model"].as_str().unwrap_or("").to_owned());
    match model.as_str() {
        "overloaded" => return error(529, "overloaded_error", "Overloaded"),
        "rate-limited" => {
            let mut r = error(
                429,
                "rate_limit_error",
                "Number of request tokens has exceeded your per-minute rate limit",
            );
            r.headers_mut().insert("retry-after", "12".parse().unwrap());
            return r;
        }
        "fail-401" => {
            return error(
                401,
                "authentication_error",
                &format!("invalid x-api-key: {key}"),
            );
        }
        _ => {}
    }

    let last = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] != "system"))
        .cloned()
        .unwrap_or_default();
    let last_blocks: Vec<Value> = match &last["content"] {
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        Value::Array(b) => b.clone(),
        _ => vec![],
    };
    let results: Vec<String> = last_blocks
        .iter()
        .filter(|b| b["type"] == "tool_result")
        .map(|b| {
            b["content"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| b["content"].to_string())
        })
        .collect();
    let user_text: String = last_blocks
        .iter()
        .filter_map(|b| b["text"].as_str())
        .collect::<Vec<_>>()
        .join(" ");
    // Each text block on a line of its own, so that a command ends with its block.
    let blocks_text = last_blocks
        .iter()
        .filter_map(|b| b["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let tool = tool_to_call(
        body["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["name"].as_str()),
    );
    let content: Vec<Value> = match (&tool, results.is_empty()) {
        (_, false) => {
            vec![json!({"type": "text", "text": format!("Result: {}", results.join(", "))})]
        }
        (Some(name), true) => vec![
            json!({"type": "text", "text": "Let me check."}),
            json!({"type": "tool_use", "id": "toolu_01Mock", "name": name, "input": tool_arguments(name, &blocks_text)}),
        ],
        (None, true) => vec![json!({"type": "text", "text": user_text})],
    };
    let stop_reason = if content.iter().any(|b| b["type"] == "tool_use") {
        "tool_use"
    } else {
        "end_turn"
    };
    let input_tokens = input_tokens(&body);
    let output_tokens: u64 = content
        .iter()
        .map(|b| words(b["text"].as_str().unwrap_or("x y")))
        .sum();

    if body["stream"] != true {
        return axum::Json(json!({
            "id": "msg_01Mock", "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 3},
        }))
        .into_response();
    }

    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_01Mock", "type": "message", "role": "assistant", "content": [], "model": model, "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": input_tokens, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 3}}}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    for (index, block) in content.iter().enumerate() {
        if block["type"] == "text" {
            events.push(event("content_block_start", json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})));
            let text = block["text"].as_str().unwrap_or("");
            for piece in text.split_inclusive(' ') {
                events.push(event("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}})));
            }
        } else {
            events.push(event("content_block_start", json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}})));
            let input = block["input"].to_string();
            let (a, b) = input.split_at(input.len() / 2);
            for piece in ["", a, b] {
                events.push(event("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}})));
            }
        }
        events.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        if model == "leak-key-mid-stream" {
            events.push(event("error", json!({"type": "error", "error": {"type": "authentication_error", "message": format!("invalid x-api-key: {key}")}})));
            return sse_response(state, events, Duration::ZERO, Ending::Normal);
        }
        if model == "error-mid-stream" {
            events.push(event("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})));
            return sse_response(state, events, Duration::ZERO, Ending::Normal);
        }
    }
    events.push(event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": output_tokens}})));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    sse_response(state, events, Duration::ZERO, Ending::Normal)
}
