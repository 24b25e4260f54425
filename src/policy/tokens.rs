//! Counting prompt tokens locally with a real BPE tokenizer (`o200k_base`, OpenAI's current
//! one), to reserve a request's cost before it is sent. Other vendors' tokenizers differ by a
//! few percent; the reservation is reconciled with the upstream's own count afterwards.

use std::sync::LazyLock;

use serde_json::{Map, Value};
use tiktoken_rs::CoreBPE;

static BPE: LazyLock<Option<CoreBPE>> = LazyLock::new(|| tiktoken_rs::o200k_base().ok());

/// What an image part is reckoned at (OpenAI's price of a 1024×1024 image in high detail).
const IMAGE_TOKENS: u64 = 765;
/// Per message (role and separators), as OpenAI's counting recipe has it.
const PER_MESSAGE: u64 = 3;
/// The priming of the assistant's reply.
const PER_REPLY: u64 = 3;

/// Loads the tokenizer now rather than on the first limited request.
pub fn warm_up() {
    let _ = BPE.as_ref();
}

pub fn count(text: &str) -> u64 {
    match BPE.as_ref() {
        Some(bpe) => bpe.encode_ordinary(text).len() as u64,
        // The tables ship inside the crate, so this is not expected; a rough count beats none.
        None => text.len().div_ceil(4) as u64,
    }
}

/// The prompt tokens of a chat request: messages (text parts counted, images reckoned) and
/// tool definitions.
pub fn chat_prompt(body: &Map<String, Value>) -> u64 {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut total = PER_REPLY;
    for m in messages {
        total += PER_MESSAGE;
        total += m.get("role").and_then(Value::as_str).map_or(0, count);
        total += content(m.get("content"));
        if let Some(calls) = m.get("tool_calls") {
            total += count(&calls.to_string());
        }
    }
    if let Some(tools) = body.get("tools") {
        total += count(&tools.to_string());
    }
    total
}

/// The tokens of an embeddings request's input.
pub fn embedding_input(body: &Map<String, Value>) -> u64 {
    match body.get("input") {
        Some(Value::String(s)) => count(s),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => count(s),
                Value::Array(tokens) => tokens.len() as u64,
                Value::Number(_) => 1,
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

fn content(content: Option<&Value>) -> u64 {
    match content {
        Some(Value::String(s)) => count(s),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => p.get("text").and_then(Value::as_str).map_or(0, count),
                Some("image_url") => IMAGE_TOKENS,
                _ => 0,
            })
            .sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_with_the_real_tokenizer() {
        assert_eq!(count("hello world"), 2);
        assert!(count("The quick brown fox jumps over the lazy dog.") < 12);
        let body = json!({"messages": [{"role": "user", "content": "hello world"}]});
        assert_eq!(chat_prompt(body.as_object().unwrap()), 3 + 3 + 1 + 2);
    }
}
