//! Anthropic's Messages API as a client dialect (`POST {route}/v1/messages`, with
//! `count_tokens`, and the Anthropic shape of `GET /v1/models`): what Claude Code and the
//! Anthropic SDKs speak. To a target that speaks Messages the client's body passes through;
//! to any other it is read into the canonical chat request ([`request`]) and the answer is
//! written back as Messages ([`answer`]).

pub mod answer;
pub mod request;

use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::body::JsonBody;
use crate::config::{DecoratorMessage, PromptDecoratorConfig};
use crate::error::GatewayError;

/// Anthropic's error `type` for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 405 | 431 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        408 | 504 => "timeout_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// Anthropic's error envelope: `{"type": "error", "error": {"type", "message"}}`.
pub fn error_body(error: &GatewayError) -> Value {
    json!({
        "type": "error",
        "error": {"type": error_type(error.status()), "message": error.to_string()},
    })
}

/// The error as a response in Anthropic's envelope, with the same status and headers
/// (`Retry-After`, rate-limit headers) as the OpenAI-shaped one.
pub fn error_response(error: GatewayError) -> Response {
    let body = error_body(&error).to_string();
    let mut response = error.into_response();
    *response.body_mut() = Body::from(body);
    response
}

/// One model in Anthropic's list shape.
pub fn model_object(name: &str, created: u64) -> Value {
    let created_at =
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(created)).to_string();
    json!({"type": "model", "id": name, "display_name": name, "created_at": created_at})
}

/// `GET /v1/models` in Anthropic's list shape (one page: the gateway's lists are short).
pub fn model_list(names: &[&str], created: u64) -> Value {
    let data: Vec<Value> = names.iter().map(|n| model_object(n, created)).collect();
    json!({
        "data": data,
        "has_more": false,
        "first_id": names.first(),
        "last_id": names.last(),
    })
}

/// The operator's decorator messages added to a Messages body passed through: system
/// messages around the `system` prompt, the others around the conversation, route outermost
/// (as [`crate::policy::decorator`] does for chat bodies).
pub fn decorate_native(
    body: &mut JsonBody,
    route: Option<&PromptDecoratorConfig>,
    model: Option<&PromptDecoratorConfig>,
) {
    if route.is_none() && model.is_none() {
        return;
    }
    let text_block = |m: &DecoratorMessage| json!({"type": "text", "text": m.content});
    let turn = |m: &DecoratorMessage| json!({"role": m.role, "content": m.content});
    let prepend: Vec<&DecoratorMessage> = [route, model]
        .into_iter()
        .flatten()
        .flat_map(|d| d.prepend.iter())
        .collect();
    let append: Vec<&DecoratorMessage> = [model, route]
        .into_iter()
        .flatten()
        .flat_map(|d| d.append.iter())
        .collect();
    let (system_prepend, turns_prepend): (Vec<_>, Vec<_>) =
        prepend.into_iter().partition(|m| m.role == "system");
    let (system_append, turns_append): (Vec<_>, Vec<_>) =
        append.into_iter().partition(|m| m.role == "system");

    let client_system: Vec<Value> = match body.get::<Value>("system").and_then(Result::ok) {
        Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
        Some(Value::Array(blocks)) => blocks,
        _ => Vec::new(),
    };
    let system: Vec<Value> = system_prepend
        .into_iter()
        .map(text_block)
        .chain(client_system)
        .chain(system_append.into_iter().map(text_block))
        .collect();
    if !system.is_empty() {
        body.set("system", &system);
    }
    let client: Vec<Value> = body
        .get::<Vec<Value>>("messages")
        .and_then(Result::ok)
        .unwrap_or_default();
    let messages: Vec<Value> = turns_prepend
        .into_iter()
        .map(turn)
        .chain(client)
        .chain(turns_append.into_iter().map(turn))
        .collect();
    body.set("messages", &messages);
}

#[cfg(test)]
pub(crate) mod tests;
