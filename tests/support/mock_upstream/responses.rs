//! A mock of OpenAI's Responses API (`POST /v1/responses`, `POST /v1/responses/input_tokens`),
//! as the real one answers: response objects and the `response.*` event stream, stored
//! responses for `previous_response_id` (unless `store: false`), and its error bodies.
//!
//! Answers: with tools and a user message last, a function call of the tool an agent would
//! use (`exec_command` or `shell` run the command after "Please run: "; others get
//! `{"city": "Paris"}`); after function call outputs, "Result: <outputs>"; else the echo of
//! the last user text.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::{Ending, MockState, record, sse_response, tool_arguments, words};

pub fn routes() -> Router<Arc<MockState>> {
    Router::new()
        .route("/v1/responses", post(responses))
        .route("/v1/responses/input_tokens", post(input_tokens))
}

fn error(status: u16, message: &str, param: Option<&str>, code: Option<&str>) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        axum::Json(json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}})),
    )
        .into_response()
}

/// The input as (role or item type, text) pairs.
fn items(input: &Value) -> Vec<(String, String)> {
    match input {
        Value::String(s) => vec![("user".into(), s.clone())],
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let kind = item["type"].as_str().unwrap_or("message");
                let text = match kind {
                    "message" => match &item["content"] {
                        Value::String(s) => s.clone(),
                        Value::Array(parts) => parts
                            .iter()
                            .filter_map(|p| p["text"].as_str())
                            .collect::<Vec<_>>()
                            .join("\n"),
                        _ => String::new(),
                    },
                    "function_call_output" | "custom_tool_call_output" => match &item["output"] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    },
                    _ => String::new(),
                };
                let who = if kind == "message" {
                    item["role"].as_str().unwrap_or("user").to_owned()
                } else {
                    kind.to_owned()
                };
                (who, text)
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer ") && v.len() > 7)
}

async fn input_tokens(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "invalid JSON", None, None);
    };
    record(&state, "/v1/responses/input_tokens", &headers, &body);
    let n: u64 = items(&body["input"]).iter().map(|(_, t)| words(t)).sum();
    axum::Json(json!({"object": "response.input_tokens", "input_tokens": n})).into_response()
}

async fn responses(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "invalid JSON", None, None);
    };
    record(&state, "/v1/responses", &headers, &body);
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"error": {"message": "You didn't provide an API key.", "type": "invalid_request_error", "param": null, "code": null}}))).into_response();
    }
    let Some(model) = body["model"].as_str().map(str::to_owned) else {
        return error(
            400,
            "Missing required parameter: 'model'.",
            Some("model"),
            Some("missing_required_parameter"),
        );
    };
    // The conversation: a stored chain's, then this input.
    let mut conversation: Vec<(String, String)> = Vec::new();
    if let Some(previous) = body["previous_response_id"].as_str() {
        let stored = state.responses.lock().unwrap().get(previous).cloned();
        match stored {
            Some(history) => conversation = history,
            None => {
                return error(
                    400,
                    &format!("Previous response with id '{previous}' not found."),
                    Some("previous_response_id"),
                    Some("previous_response_not_found"),
                );
            }
        }
    }
    let input = items(&body["input"]);
    conversation.extend(input.iter().cloned());
    let last = input.last().cloned().unwrap_or_default();
    let tool = body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["type"] == "function" || t["type"] == "custom")
        .map(|t| t["name"].as_str().unwrap_or("").to_owned())
        .find(|n| n == "exec_command" || n == "shell")
        .or_else(|| {
            body["tools"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["type"] == "function"))
                .map(|t| t["name"].as_str().unwrap_or("").to_owned())
        });
    // The outputs that answer the last turn's calls (the trailing ones).
    let is_output = |k: &str| k == "function_call_output" || k == "custom_tool_call_output";
    let mut outputs: Vec<String> = input
        .iter()
        .rev()
        .take_while(|(k, _)| is_output(k))
        .map(|(_, t)| t.clone())
        .collect();
    outputs.reverse();
    let id = format!("resp_mock_{}", state.responses.lock().unwrap().len() + 1);
    let (text, call) = if !outputs.is_empty() {
        (format!("Result: {}", outputs.join(", ")), None)
    } else if let (Some(name), "user") = (&tool, last.0.as_str()) {
        let arguments = tool_arguments(name, &last.1);
        (String::new(), Some((name.clone(), arguments.to_string())))
    } else {
        (last.1.clone(), None)
    };
    let input_tokens: u64 = conversation.iter().map(|(_, t)| words(t)).sum();
    let output_tokens = words(&text) + call.as_ref().map_or(0, |_| 5);
    let usage = json!({"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": input_tokens + output_tokens});
    let mut output = Vec::new();
    if !text.is_empty() {
        output.push(json!({"type": "message", "id": format!("msg_{id}"), "status": "completed", "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]}));
        conversation.push(("assistant".into(), text.clone()));
    }
    if let Some((name, arguments)) = &call {
        output.push(json!({"type": "function_call", "id": format!("fc_{id}"), "call_id": format!("call_{id}"), "name": name, "arguments": arguments, "status": "completed"}));
    }
    if body["store"] != false {
        state
            .responses
            .lock()
            .unwrap()
            .insert(id.clone(), conversation);
    }
    let response = |status: &str, output: &[Value], usage: Value| {
        json!({
            "id": id, "object": "response", "created_at": 1_700_000_000, "status": status, "error": null,
            "incomplete_details": null, "instructions": body["instructions"], "model": model, "output": output,
            "parallel_tool_calls": true, "previous_response_id": body["previous_response_id"], "store": body["store"] != false,
            "tool_choice": "auto", "tools": [], "usage": usage, "metadata": {},
        })
    };
    if body["stream"] != true {
        return axum::Json(response("completed", &output, usage)).into_response();
    }
    let mut seq = 0;
    let mut event = |name: &str, mut data: Value| {
        data["type"] = json!(name);
        data["sequence_number"] = json!(seq);
        seq += 1;
        format!("event: {name}\ndata: {data}\n\n")
    };
    let mut events = vec![
        event(
            "response.created",
            json!({"response": response("in_progress", &[], Value::Null)}),
        ),
        event(
            "response.in_progress",
            json!({"response": response("in_progress", &[], Value::Null)}),
        ),
    ];
    for (index, item) in output.iter().enumerate() {
        if item["type"] == "message" {
            let item_id = item["id"].clone();
            events.push(event("response.output_item.added", json!({"output_index": index, "item": {"type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []}})));
            events.push(event("response.content_part.added", json!({"item_id": item_id, "output_index": index, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}})));
            for piece in text.split_inclusive(' ') {
                events.push(event("response.output_text.delta", json!({"item_id": item_id, "output_index": index, "content_index": 0, "delta": piece, "logprobs": []})));
            }
            events.push(event("response.output_text.done", json!({"item_id": item_id, "output_index": index, "content_index": 0, "text": text, "logprobs": []})));
            events.push(event("response.content_part.done", json!({"item_id": item_id, "output_index": index, "content_index": 0, "part": {"type": "output_text", "text": text, "annotations": []}})));
        } else {
            let mut added = item.clone();
            added["arguments"] = json!("");
            added["status"] = json!("in_progress");
            events.push(event(
                "response.output_item.added",
                json!({"output_index": index, "item": added}),
            ));
            let arguments = item["arguments"].as_str().unwrap_or("");
            let (a, b) = arguments.split_at(arguments.len() / 2);
            for piece in [a, b] {
                events.push(event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": item["id"], "output_index": index, "delta": piece}),
                ));
            }
            events.push(event(
                "response.function_call_arguments.done",
                json!({"item_id": item["id"], "output_index": index, "arguments": arguments}),
            ));
        }
        events.push(event(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        ));
    }
    events.push(event(
        "response.completed",
        json!({"response": response("completed", &output, usage)}),
    ));
    sse_response(state, events, Duration::ZERO, Ending::Normal)
}
