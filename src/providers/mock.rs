//! The `mock` provider answers by itself, deterministically: chat echoes the last user message
//! (streamed word by word when asked), embeddings are derived from a hash of the input, and
//! tokens are counted as whitespace-separated words. For demos and tests, not production.

use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::translate::{self, ChunkWriter};
use super::{CallOptions, ChatReply, Complete, Frame, Usage};
use crate::body::JsonBody;
use crate::config::MockProviderConfig;
use crate::error::GatewayError;

#[derive(Debug)]
pub struct MockProvider {
    chunk_delay: Option<Duration>,
    dimensions: usize,
}

/// Said when there is nothing to echo.
const GREETING: &str = "Hello from the Tollgate mock provider.";

impl MockProvider {
    pub fn new(config: &MockProviderConfig) -> Self {
        Self {
            chunk_delay: config.chunk_delay,
            dimensions: config.embedding_dimensions,
        }
    }

    pub async fn chat(
        &self,
        body: JsonBody,
        stream: bool,
        opts: CallOptions<'_>,
    ) -> Result<ChatReply, GatewayError> {
        let body = body.to_map().unwrap_or_default();
        let messages = body
            .get("messages")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let reply = messages
            .iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
            .map(|m| text_of(m.get("content")))
            .filter(|t| !t.trim().is_empty())
            .unwrap_or_else(|| GREETING.to_owned());
        let prompt_tokens = messages
            .iter()
            .map(|m| count_tokens(&text_of(m.get("content"))))
            .sum::<u64>()
            .max(1);
        let usage = Usage {
            prompt_tokens,
            completion_tokens: count_tokens(&reply),
            total_tokens: prompt_tokens + count_tokens(&reply),
            ..Usage::default()
        };
        let id = format!("chatcmpl-mock-{:x}", short_hash(reply.as_bytes()));
        if !stream {
            let message = translate::assistant_message(&reply, "", Vec::new());
            let body = translate::completion(&id, opts.upstream_model, message, "stop", &usage);
            return Ok(ChatReply::Complete(Complete {
                body,
                usage: Some(usage),
            }));
        }
        let writer = ChunkWriter::new(id, opts.upstream_model);
        let mut frames = vec![writer.delta(json!({"role": "assistant", "content": ""}), None)];
        frames.extend(
            reply
                .split_inclusive(char::is_whitespace)
                .map(|word| writer.delta(json!({"content": word}), None)),
        );
        frames.push(writer.delta(json!({}), Some("stop")));
        frames.push(writer.usage(&usage));
        frames.push(Frame::done());

        let delay = self.chunk_delay;
        let stream = async_stream::stream! {
            for f in frames {
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                yield Ok(f);
            }
        };
        Ok(ChatReply::Stream(Box::pin(stream)))
    }

    pub async fn embeddings(
        &self,
        body: JsonBody,
        opts: CallOptions<'_>,
    ) -> Result<Complete, GatewayError> {
        let body = body.to_map().unwrap_or_default();
        let inputs: Vec<String> = match body.get("input") {
            // Token arrays (one, or several): hash their JSON.
            Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
                vec![Value::Array(items.clone()).to_string()]
            }
            Some(Value::Array(items)) if items.iter().all(Value::is_array) => {
                items.iter().map(Value::to_string).collect()
            }
            _ => translate::embedding_inputs(&body, "mock")?,
        };
        let prompt_tokens: u64 = inputs.iter().map(|s| count_tokens(s)).sum();
        let vectors: Vec<Vec<f64>> = inputs.iter().map(|text| self.embed(text)).collect();
        let body = translate::embeddings_response(
            &vectors,
            opts.upstream_model,
            prompt_tokens,
            translate::wants_base64(&body)?,
        );
        let usage = Usage {
            prompt_tokens,
            total_tokens: prompt_tokens,
            ..Usage::default()
        };
        Ok(Complete {
            body,
            usage: Some(usage),
        })
    }

    /// A unit vector derived from the text's hash.
    fn embed(&self, text: &str) -> Vec<f64> {
        let mut v: Vec<f64> = (0..self.dimensions)
            .map(|i| {
                let h = Sha256::new()
                    .chain_update((i as u32).to_le_bytes())
                    .chain_update(text.as_bytes())
                    .finalize();
                i16::from_le_bytes([h[0], h[1]]) as f64 / i16::MAX as f64
            })
            .collect();
        let norm = v
            .iter()
            .map(|x| x * x)
            .sum::<f64>()
            .sqrt()
            .max(f64::EPSILON);
        v.iter_mut().for_each(|x| *x /= norm);
        v
    }
}

/// The text of a message's `content`: a string, or the text parts of a content array.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The mock's token count: whitespace-separated words.
pub fn count_tokens(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn short_hash(bytes: &[u8]) -> u64 {
    let h = Sha256::digest(bytes);
    u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
}
