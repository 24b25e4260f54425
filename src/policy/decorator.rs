//! The prompt decorator: messages the operator adds before and after the client's (e.g. a
//! system policy), per route and per model.

use serde_json::{Map, Value, json};

use crate::config::PromptDecoratorConfig;

/// Route messages go outermost: route prepend, model prepend, the client's, model append,
/// route append.
pub fn decorate(
    body: &mut Map<String, Value>,
    route: Option<&PromptDecoratorConfig>,
    model: Option<&PromptDecoratorConfig>,
) {
    if route.is_none() && model.is_none() {
        return;
    }
    let Some(Value::Array(messages)) = body.get_mut("messages") else {
        return;
    };
    let as_json =
        |m: &crate::config::DecoratorMessage| json!({"role": m.role, "content": m.content});
    let mut decorated: Vec<Value> = Vec::with_capacity(messages.len() + 4);
    for d in [route, model].into_iter().flatten() {
        decorated.extend(d.prepend.iter().map(as_json));
    }
    decorated.append(messages);
    for d in [model, route].into_iter().flatten() {
        decorated.extend(d.append.iter().map(as_json));
    }
    *messages = decorated;
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
        let mut body = json!({"messages": [{"role": "user", "content": "hi"}]})
            .as_object()
            .unwrap()
            .clone();
        decorate(
            &mut body,
            Some(&d("route-pre", "route-post")),
            Some(&d("model-pre", "model-post")),
        );
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
