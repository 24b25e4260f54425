//! Upstream providers, their wire formats, presets and timeouts.

use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;

/// Timeouts towards one upstream. Defaults suit a slow local model as well as a cloud API.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// TCP + TLS connect.
    #[serde(default = "Timeouts::default_connect", with = "humantime_serde")]
    pub connect: Duration,
    /// From sending the request to the response headers (a cold local model can take a while).
    #[serde(default = "Timeouts::default_first_byte", with = "humantime_serde")]
    pub first_byte: Duration,
    /// Longest silence between two chunks of a streamed (or any) response body.
    #[serde(default = "Timeouts::default_idle", with = "humantime_serde")]
    pub idle: Duration,
    /// The whole exchange, streams included.
    #[serde(default = "Timeouts::default_total", with = "humantime_serde")]
    pub total: Duration,
}

impl Timeouts {
    fn default_connect() -> Duration {
        Duration::from_secs(5)
    }
    fn default_first_byte() -> Duration {
        Duration::from_secs(120)
    }
    fn default_idle() -> Duration {
        Duration::from_secs(60)
    }
    fn default_total() -> Duration {
        Duration::from_secs(600)
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Self::default_connect(),
            first_byte: Self::default_first_byte(),
            idle: Self::default_idle(),
            total: Self::default_total(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ProviderConfig {
    /// Any OpenAI-compatible server: OpenAI, Ollama, vLLM, llama.cpp, LM Studio, ...
    Openai(OpenAiProviderConfig),
    /// Presets of the OpenAI wire format with their public base URL filled in.
    Mistral(OpenAiProviderConfig),
    Groq(OpenAiProviderConfig),
    Deepseek(OpenAiProviderConfig),
    Openrouter(OpenAiProviderConfig),
    Vllm(OpenAiProviderConfig),
    /// Azure OpenAI: deployment URLs, `api-key` header, `api-version`.
    Azure(AzureProviderConfig),
    /// Anthropic's Messages API.
    Anthropic(AnthropicProviderConfig),
    /// Google's Gemini API (generateContent).
    Gemini(GeminiProviderConfig),
    /// Answers by itself (echoes the last user message). For demos and tests only.
    Mock(MockProviderConfig),
}

/// The OpenAI-wire-format presets and what distinguishes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenAiPreset {
    OpenAi,
    Mistral,
    Groq,
    DeepSeek,
    OpenRouter,
    Vllm,
}

impl OpenAiPreset {
    pub fn default_base_url(self) -> &'static str {
        match self {
            OpenAiPreset::OpenAi => "https://api.openai.com/v1",
            OpenAiPreset::Mistral => "https://api.mistral.ai/v1",
            OpenAiPreset::Groq => "https://api.groq.com/openai/v1",
            OpenAiPreset::DeepSeek => "https://api.deepseek.com/v1",
            OpenAiPreset::OpenRouter => "https://openrouter.ai/api/v1",
            OpenAiPreset::Vllm => "http://127.0.0.1:8000/v1",
        }
    }

    /// Mistral's API refuses `stream_options` with a 422 ("Extra inputs are not permitted")
    /// and reports stream usage unasked.
    pub fn accepts_stream_options(self) -> bool {
        self != OpenAiPreset::Mistral
    }

    /// Hosted services need a key; self-hosted servers (and `openai` pointed at Ollama) do not.
    pub fn needs_key(self, base_url_given: bool) -> bool {
        match self {
            OpenAiPreset::OpenAi => !base_url_given,
            OpenAiPreset::Vllm => false,
            _ => true,
        }
    }
}

impl ProviderConfig {
    pub fn timeouts(&self) -> &Timeouts {
        match self {
            ProviderConfig::Openai(p)
            | ProviderConfig::Mistral(p)
            | ProviderConfig::Groq(p)
            | ProviderConfig::Deepseek(p)
            | ProviderConfig::Openrouter(p)
            | ProviderConfig::Vllm(p) => &p.timeouts,
            ProviderConfig::Azure(p) => &p.timeouts,
            ProviderConfig::Anthropic(p) => &p.timeouts,
            ProviderConfig::Gemini(p) => &p.timeouts,
            ProviderConfig::Mock(p) => &p.timeouts,
        }
    }

    /// The same provider with another connect timeout (for a target that overrides it).
    pub fn with_connect_timeout(&self, connect: Duration) -> ProviderConfig {
        let mut copy = self.clone();
        match &mut copy {
            ProviderConfig::Openai(p)
            | ProviderConfig::Mistral(p)
            | ProviderConfig::Groq(p)
            | ProviderConfig::Deepseek(p)
            | ProviderConfig::Openrouter(p)
            | ProviderConfig::Vllm(p) => p.timeouts.connect = connect,
            ProviderConfig::Azure(p) => p.timeouts.connect = connect,
            ProviderConfig::Anthropic(p) => p.timeouts.connect = connect,
            ProviderConfig::Gemini(p) => p.timeouts.connect = connect,
            ProviderConfig::Mock(p) => p.timeouts.connect = connect,
        }
        copy
    }

    /// For the OpenAI-wire-format types: which preset, and its settings.
    pub fn openai_preset(&self) -> Option<(OpenAiPreset, &OpenAiProviderConfig)> {
        match self {
            ProviderConfig::Openai(p) => Some((OpenAiPreset::OpenAi, p)),
            ProviderConfig::Mistral(p) => Some((OpenAiPreset::Mistral, p)),
            ProviderConfig::Groq(p) => Some((OpenAiPreset::Groq, p)),
            ProviderConfig::Deepseek(p) => Some((OpenAiPreset::DeepSeek, p)),
            ProviderConfig::Openrouter(p) => Some((OpenAiPreset::OpenRouter, p)),
            ProviderConfig::Vllm(p) => Some((OpenAiPreset::Vllm, p)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiProviderConfig {
    /// Base URL up to and including `/v1`, e.g. `http://127.0.0.1:11434/v1`; presets have one.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Sent upstream as `Authorization: Bearer`; empty or absent means none.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Extra static headers sent upstream (e.g. `OpenAI-Organization`).
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Ask streams for usage with `stream_options.include_usage` (default: yes, except Mistral).
    /// When off, `stream_options` is removed from requests altogether.
    #[serde(default)]
    pub stream_usage: Option<bool>,
    /// Serves OpenAI's Responses API (`/v1/responses`) itself, so Responses requests pass
    /// through (default: only OpenAI's own API). Else they are translated to chat.
    #[serde(default)]
    pub responses: Option<bool>,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// TLS towards this upstream: a private CA, a client certificate, or (development
    /// only) no verification.
    #[serde(default)]
    pub tls: UpstreamTls,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureProviderConfig {
    /// The resource endpoint, e.g. `https://my-resource.openai.azure.com`. A model's upstream
    /// name is its deployment name.
    pub base_url: String,
    /// Sent as the `api-key` header.
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default = "AzureProviderConfig::default_api_version")]
    pub api_version: String,
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// TLS towards this upstream: a private CA, a client certificate, or (development
    /// only) no verification.
    #[serde(default)]
    pub tls: UpstreamTls,
}

impl AzureProviderConfig {
    fn default_api_version() -> String {
        "2024-10-21".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnthropicProviderConfig {
    #[serde(default = "AnthropicProviderConfig::default_base_url")]
    pub base_url: String,
    /// Sent as `x-api-key`. Without one, the provider's models are left out.
    #[serde(default)]
    pub api_key: Option<String>,
    /// The `anthropic-version` header.
    #[serde(default = "AnthropicProviderConfig::default_version")]
    pub version: String,
    /// Anthropic requires `max_tokens`; used when a request gives none.
    #[serde(default = "AnthropicProviderConfig::default_max_tokens")]
    pub default_max_tokens: u64,
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// TLS towards this upstream: a private CA, a client certificate, or (development
    /// only) no verification.
    #[serde(default)]
    pub tls: UpstreamTls,
}

impl AnthropicProviderConfig {
    fn default_base_url() -> String {
        "https://api.anthropic.com".to_owned()
    }
    fn default_version() -> String {
        "2023-06-01".to_owned()
    }
    fn default_max_tokens() -> u64 {
        4096
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeminiProviderConfig {
    #[serde(default = "GeminiProviderConfig::default_base_url")]
    pub base_url: String,
    /// Without one, the provider's models are left out.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Send the key in the `x-goog-api-key` header (default) or the `key` query parameter.
    #[serde(default)]
    pub key_in: GeminiKeyPlacement,
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// TLS towards this upstream: a private CA, a client certificate, or (development
    /// only) no verification.
    #[serde(default)]
    pub tls: UpstreamTls,
}

impl GeminiProviderConfig {
    fn default_base_url() -> String {
        "https://generativelanguage.googleapis.com/v1beta".to_owned()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GeminiKeyPlacement {
    #[default]
    Header,
    Query,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockProviderConfig {
    /// Pause between two streamed chunks, to make streaming visible in a demo.
    #[serde(default, with = "humantime_serde")]
    pub chunk_delay: Option<Duration>,
    /// Length of the embedding vectors it returns.
    #[serde(default = "MockProviderConfig::default_dimensions")]
    pub embedding_dimensions: usize,
    #[serde(default)]
    pub timeouts: Timeouts,
}

impl MockProviderConfig {
    fn default_dimensions() -> usize {
        8
    }
}

/// TLS towards an upstream.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// CA bundle (PEM) the upstream's certificate must chain to, instead of the public roots.
    #[serde(default)]
    pub ca: Option<std::path::PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS, with `key`.
    #[serde(default)]
    pub cert: Option<std::path::PathBuf>,
    #[serde(default)]
    pub key: Option<std::path::PathBuf>,
    /// Development only: accept any certificate (signatures are still checked). Logged as a
    /// warning at every start and reload.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}
