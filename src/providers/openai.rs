//! OpenAI-compatible upstreams: OpenAI, Ollama, vLLM, llama.cpp, and the presets that speak
//! the same wire format (Azure OpenAI, Mistral, Groq, DeepSeek, OpenRouter). The request body
//! is passed through with minimal edits (model name, usage for streams), so fields the gateway
//! does not know survive; responses are passed through byte for byte, peeking only at usage.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use super::translate::StreamTranslator;
use super::upstream::{HttpUpstream, build_url, parse_base};
use super::{CallOptions, ChatReply, Complete, Frame, Usage, WireUsage};
use crate::body::JsonBody;
use crate::config::{AzureProviderConfig, OpenAiPreset, OpenAiProviderConfig};
use crate::error::GatewayError;

#[derive(Debug)]
pub struct OpenAiProvider {
    http: HttpUpstream,
    base_url: reqwest::Url,
    /// Built once: the endpoints of a plain (non-Azure) server.
    chat_url: reqwest::Url,
    embeddings_url: reqwest::Url,
    /// Azure puts the deployment (our upstream model) and the API version in the URL.
    azure_api_version: Option<String>,
    /// Whether to ask for `stream_options.include_usage` (servers that reject it send usage
    /// unasked).
    stream_usage: bool,
}

impl OpenAiProvider {
    pub fn new(
        name: &str,
        preset: OpenAiPreset,
        config: &OpenAiProviderConfig,
    ) -> Result<Self, String> {
        let mut http = HttpUpstream::new(name, &config.timeouts, &config.headers)?;
        if let Some(key) = config.api_key.as_deref().filter(|k| !k.is_empty()) {
            http = http.with_secret_header("authorization", format!("Bearer {key}"), key)?;
        }
        let base_url = parse_base(
            config
                .base_url
                .as_deref()
                .unwrap_or(preset.default_base_url()),
        )?;
        Ok(Self {
            http,
            chat_url: endpoint(&base_url, &["chat", "completions"])?,
            embeddings_url: endpoint(&base_url, &["embeddings"])?,
            base_url,
            azure_api_version: None,
            stream_usage: config
                .stream_usage
                .unwrap_or(preset.accepts_stream_options()),
        })
    }

    pub fn azure(name: &str, config: &AzureProviderConfig) -> Result<Self, String> {
        let mut http = HttpUpstream::new(name, &config.timeouts, &config.headers)?;
        if let Some(key) = config.api_key.as_deref().filter(|k| !k.is_empty()) {
            http = http.with_secret_header("api-key", key.to_owned(), key)?;
        }
        let base_url = parse_base(&config.base_url)?;
        Ok(Self {
            http,
            chat_url: base_url.clone(),
            embeddings_url: base_url.clone(),
            base_url,
            azure_api_version: Some(config.api_version.clone()),
            stream_usage: true,
        })
    }

    fn url_for(
        &self,
        endpoint: &[&str],
        upstream_model: &str,
    ) -> Result<reqwest::Url, GatewayError> {
        match &self.azure_api_version {
            None if endpoint == ["embeddings"] => Ok(self.embeddings_url.clone()),
            None => Ok(self.chat_url.clone()),
            Some(version) => {
                let segments: Vec<&str> = ["openai", "deployments", upstream_model]
                    .into_iter()
                    .chain(endpoint.iter().copied())
                    .collect();
                build_url(&self.base_url, &segments, &[("api-version", version)])
            }
        }
    }

    /// The client's body goes through as it came, but for `model` and `stream_options`.
    pub async fn chat(
        &self,
        mut body: JsonBody,
        stream: bool,
        opts: CallOptions<'_>,
    ) -> Result<ChatReply, GatewayError> {
        body.set("model", &opts.upstream_model);
        if !self.stream_usage {
            // Such servers (Mistral) refuse the field with a 422, even from the client, and
            // report stream usage unasked.
            body.remove("stream_options");
        } else if stream {
            // Always ask for the final usage chunk so tokens can be accounted; the proxy hides
            // it again from clients that did not ask for it.
            let mut options = body
                .get::<Map<String, Value>>("stream_options")
                .and_then(Result::ok)
                .unwrap_or_default();
            options.insert("include_usage".into(), Value::Bool(true));
            body.set("stream_options", &options);
        }
        let response = self
            .http
            .post_bytes(
                self.url_for(&["chat", "completions"], opts.upstream_model)?,
                body.to_bytes(),
                opts.timeouts,
            )
            .await?;
        if stream {
            self.http
                .event_stream(response, PassThrough)
                .map(ChatReply::Stream)
        } else {
            self.complete(response, opts.max_response, opts.timeouts.idle)
                .await
                .map(ChatReply::Complete)
        }
    }

    pub async fn embeddings(
        &self,
        mut body: JsonBody,
        opts: CallOptions<'_>,
    ) -> Result<Complete, GatewayError> {
        body.set("model", &opts.upstream_model);
        let response = self
            .http
            .post_bytes(
                self.url_for(&["embeddings"], opts.upstream_model)?,
                body.to_bytes(),
                opts.timeouts,
            )
            .await?;
        self.complete(response, opts.max_response, opts.timeouts.idle)
            .await
    }

    async fn complete(
        &self,
        response: reqwest::Response,
        limit: u64,
        idle: std::time::Duration,
    ) -> Result<Complete, GatewayError> {
        let body = self.http.read_body(response, limit, idle).await?;
        #[derive(Deserialize)]
        struct UsagePeek {
            usage: Option<WireUsage>,
        }
        let usage = serde_json::from_slice::<UsagePeek>(&body)
            .map_err(|_| self.http.protocol_error("the response is not JSON"))?;
        Ok(Complete {
            body,
            usage: usage.usage.map(Usage::from),
        })
    }
}

fn endpoint(base: &reqwest::Url, segments: &[&str]) -> Result<reqwest::Url, String> {
    build_url(base, segments, &[]).map_err(|e| e.to_string())
}

/// OpenAI chunks go through as they are; the gateway only peeks at them.
pub(crate) struct PassThrough;

impl StreamTranslator for PassThrough {
    fn on_event(&mut self, _event: &str, data: &str) -> Result<Vec<Frame>, GatewayError> {
        Ok(vec![peek_chunk(data.to_owned())])
    }

    fn finish(&mut self) -> Result<Vec<Frame>, GatewayError> {
        Ok(Vec::new())
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
        ..Frame::default()
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
    frame.text = choices
        .iter()
        .filter_map(|c| c.delta.as_ref())
        .flat_map(|d| [d.content.as_deref(), d.reasoning_content.as_deref()])
        .flatten()
        .collect();
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
