//! OpenAI-compatible upstreams (OpenAI, Ollama, vLLM, llama.cpp, ...). The request body is
//! passed through with minimal edits (model name, usage for streams), so fields the gateway
//! does not know survive; responses are passed through byte for byte, peeking only at usage.

use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use super::upstream::{read_limited, status_error, transport_error};
use super::{CallOptions, ChatReply, Complete, Frame, Usage, WireUsage};
use crate::config::{OpenAiProviderConfig, Timeouts};
use crate::error::GatewayError;

#[derive(Debug)]
pub struct OpenAiProvider {
    name: String,
    client: reqwest::Client,
    base_url: String,
    /// Sent with every request: the key (marked sensitive) and the configured extra headers.
    headers: HeaderMap,
    api_key: Option<String>,
    timeouts: Timeouts,
}

impl OpenAiProvider {
    pub fn new(name: &str, config: &OpenAiProviderConfig) -> Result<Self, String> {
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            let name =
                HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header {k:?}: {e}"))?;
            let value = HeaderValue::from_str(v).map_err(|e| format!("header {k:?}: {e}"))?;
            headers.insert(name, value);
        }
        let api_key = config.api_key.clone().filter(|k| !k.is_empty());
        if let Some(key) = &api_key {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| "api_key holds characters not allowed in a header".to_owned())?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(config.timeouts.connect)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build HTTP client: {e}"))?;
        Ok(Self {
            name: name.to_owned(),
            client,
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            headers,
            api_key,
            timeouts: config.timeouts.clone(),
        })
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    fn secrets(&self) -> Vec<&str> {
        self.api_key.iter().map(String::as_str).collect()
    }

    /// POSTs `body` and waits for the response head (bounded by the first-byte timeout).
    async fn post(
        &self,
        path: &str,
        body: &Map<String, Value>,
    ) -> Result<reqwest::Response, GatewayError> {
        let bytes = serde_json::to_vec(body).map_err(|e| GatewayError::Internal(e.to_string()))?;
        let request = self
            .client
            .post(format!("{}{path}", self.base_url))
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .timeout(self.timeouts.total)
            .body(bytes);
        let response = tokio::time::timeout(self.timeouts.first_byte, request.send())
            .await
            .map_err(|_| GatewayError::UpstreamTimeout {
                provider: self.name.clone(),
                phase: "first byte",
            })?
            .map_err(|e| transport_error(&self.name, &e))?;
        if !response.status().is_success() {
            return Err(status_error(&self.name, response, &self.secrets()).await);
        }
        Ok(response)
    }

    pub async fn chat(
        &self,
        mut body: Map<String, Value>,
        stream: bool,
        opts: CallOptions<'_>,
    ) -> Result<ChatReply, GatewayError> {
        body.insert(
            "model".into(),
            Value::String(opts.upstream_model.to_owned()),
        );
        if stream {
            // Always ask for the final usage chunk so tokens can be accounted; the proxy hides
            // it again from clients that did not ask for it.
            let options = body
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(o) = options {
                o.insert("include_usage".into(), Value::Bool(true));
            }
        }
        let response = self.post("/chat/completions", &body).await?;
        if !stream {
            return self
                .complete(response, opts.max_response)
                .await
                .map(ChatReply::Complete);
        }
        let is_sse = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            return Err(GatewayError::UpstreamProtocol {
                provider: self.name.clone(),
                detail: "a streamed request was not answered with an event stream".into(),
            });
        }
        let provider = self.name.clone();
        let frames = response
            .bytes_stream()
            .eventsource()
            .map(move |event| match event {
                Ok(event) => Ok(peek_chunk(event.data)),
                Err(e) => Err(GatewayError::UpstreamProtocol {
                    provider: provider.clone(),
                    detail: stream_error_detail(&e),
                }),
            });
        Ok(ChatReply::Stream(Box::pin(frames)))
    }

    pub async fn embeddings(
        &self,
        mut body: Map<String, Value>,
        opts: CallOptions<'_>,
    ) -> Result<Complete, GatewayError> {
        body.insert(
            "model".into(),
            Value::String(opts.upstream_model.to_owned()),
        );
        let response = self.post("/embeddings", &body).await?;
        self.complete(response, opts.max_response).await
    }

    async fn complete(
        &self,
        response: reqwest::Response,
        limit: u64,
    ) -> Result<Complete, GatewayError> {
        let body = read_limited(&self.name, response, limit, self.timeouts.idle).await?;
        #[derive(Deserialize)]
        struct UsagePeek {
            usage: Option<WireUsage>,
        }
        let usage = serde_json::from_slice::<UsagePeek>(&body).map_err(|_| {
            GatewayError::UpstreamProtocol {
                provider: self.name.clone(),
                detail: "the response is not JSON".into(),
            }
        })?;
        Ok(Complete {
            body,
            usage: usage.usage.map(Usage::from),
        })
    }
}

fn stream_error_detail<E: std::fmt::Display>(
    e: &eventsource_stream::EventStreamError<E>,
) -> String {
    match e {
        eventsource_stream::EventStreamError::Utf8(_) => {
            "the event stream is not valid UTF-8".into()
        }
        eventsource_stream::EventStreamError::Parser(_) => {
            "the event stream could not be parsed".into()
        }
        eventsource_stream::EventStreamError::Transport(_) => "the event stream broke off".into(),
    }
}

/// Only the parts of a chunk the gateway looks at; everything else is skipped unparsed.
#[derive(Deserialize)]
struct ChunkPeek {
    #[serde(default)]
    choices: Option<Vec<ChoicePeek>>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChoicePeek {
    #[serde(default)]
    delta: Option<DeltaPeek>,
}

#[derive(Deserialize)]
struct DeltaPeek {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<IgnoredAny>,
    #[serde(default, alias = "reasoning")]
    reasoning_content: Option<String>,
}

fn peek_chunk(data: String) -> Frame {
    if data == "[DONE]" {
        return Frame::done();
    }
    let mut frame = Frame {
        data: data.into_bytes().into(),
        usage: None,
        usage_only: false,
        has_output: false,
        error: None,
    };
    let Ok(peek) = serde_json::from_slice::<ChunkPeek>(&frame.data) else {
        return frame;
    };
    let choices = peek.choices.unwrap_or_default();
    frame.has_output = choices.iter().filter_map(|c| c.delta.as_ref()).any(|d| {
        d.content.as_deref().is_some_and(|c| !c.is_empty())
            || d.tool_calls.is_some()
            || d.reasoning_content
                .as_deref()
                .is_some_and(|c| !c.is_empty())
    });
    frame.usage_only = choices.is_empty() && peek.usage.is_some();
    frame.usage = peek.usage.map(Usage::from);
    frame.error = peek.error.map(|e| {
        super::upstream::error_message(serde_json::json!({ "error": e }).to_string().as_bytes())
    });
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peeks_usage_and_output() {
        let f = peek_chunk(
            r#"{"id":"x","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#
                .into(),
        );
        assert!(!f.has_output && f.usage.is_none());
        let f =
            peek_chunk(r#"{"choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}"#.into());
        assert!(f.has_output && !f.usage_only);
        let f = peek_chunk(
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}"#
                .into(),
        );
        assert!(f.usage_only);
        assert_eq!(f.usage.unwrap().total_tokens, 8);
        assert!(peek_chunk("[DONE]".into()).is_done());
        let f = peek_chunk(r#"{"error":{"message":"overloaded"}}"#.into());
        assert_eq!(f.error.as_deref(), Some("overloaded"));
    }
}
