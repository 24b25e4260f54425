//! The prompt decorator: messages the operator adds before and after the client's (e.g. a
//! system policy), per route and per model.

use serde_json::json;

use crate::body::JsonBody;
use crate::config::{DecoratorMessage, PromptDecoratorConfig};

/// Route messages go outermost: route prepend, model prepend, the client's, model append,
/// route append. The client's messages are copied as they are, never parsed.
pub fn decorate(
    body: &mut JsonBody,
    route: Option<&PromptDecoratorConfig>,
    model: Option<&PromptDecoratorConfig>,
) {
    if route.is_none() && model.is_none() {
        return;
    }
    let Some(messages) = body.raw("messages") else {
        return;
    };
    let client = messages.trim_ascii();
    let (Some(b'['), Some(b']')) = (client.first(), client.last()) else {
        return;
    };
    let client = client[1..client.len() - 1].trim_ascii();
    let as_json = |m: &DecoratorMessage| json!({"role": m.role, "content": m.content}).to_string();
    let mut parts: Vec<String> = Vec::new();
    for d in [route, model].into_iter().flatten() {
        parts.extend(d.prepend.iter().map(as_json));
    }
    let prepended = parts.len();
    for d in [model, route].into_iter().flatten() {
        parts.extend(d.append.iter().map(as_json));
    }
    let mut out =
        Vec::with_capacity(client.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>() + 2);
    out.push(b'[');
    let mut items = parts[..prepended]
        .iter()
        .map(String::as_bytes)
        .chain((!client.is_empty()).then_some(client))
        .chain(parts[prepended..].iter().map(String::as_bytes));
    if let Some(first) = items.next() {
        out.extend_from_slice(first);
    }
    for item in items {
        out.push(b',');
        out.extend_from_slice(item);
    }
    out.push(b']');
    body.set_raw("messages", out.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_wraps_model_wraps_client() {
        let d = |pre: &str, post: &str| PromptDecoratorConfig {
            prepend: vec![crate::config::DecoratorMessage {
                role: "system".into(),
                content: pre.into(),
            }],
            append: vec![crate::config::DecoratorMessage {
                role: "user".into(),
                content: post.into(),
            }],
        };
        let mut body = JsonBody::parse(
            json!({"messages": [{"role": "user", "content": "hi"}]})
                .to_string()
                .into(),
        )
        .unwrap();
        decorate(
            &mut body,
            Some(&d("route-pre", "route-post")),
            Some(&d("model-pre", "model-post")),
        );
        let body = body.to_map().unwrap();
        let contents: Vec<&str> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap())
            .collect();
        assert_eq!(
            contents,
            ["route-pre", "model-pre", "hi", "model-post", "route-post"]
        );
    }
}
