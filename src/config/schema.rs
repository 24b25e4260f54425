//! The YAML schema, as serde types. Everything has a default that works for one node,
//! and every struct denies unknown fields so a typo is an error, not a silent no-op.

use std::net::SocketAddr;
use std::time::Duration;

use bytesize::ByteSize;
use indexmap::IndexMap;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listen: Listen,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub reload: ReloadConfig,
    #[serde(default)]
    pub rate_limits: RateLimitsConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    /// OpenTelemetry traces over OTLP; off unless given.
    #[serde(default)]
    pub traces: Option<TracesConfig>,
    /// Applies to every route that has no guard of its own.
    #[serde(default)]
    pub prompt_guard: Option<PromptGuardConfig>,
    #[serde(default)]
    pub providers: IndexMap<String, ProviderConfig>,
    #[serde(default)]
    pub models: IndexMap<String, ModelConfig>,
    #[serde(default)]
    pub routes: IndexMap<String, RouteConfig>,
    #[serde(default)]
    pub groups: IndexMap<String, GroupConfig>,
    #[serde(default)]
    pub consumers: IndexMap<String, ConsumerConfig>,
    /// How client dialects other than OpenAI chat are read.
    #[serde(default)]
    pub dialects: DialectsConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialectsConfig {
    #[serde(default)]
    pub messages: MessagesDialectConfig,
    #[serde(default)]
    pub responses: ResponsesDialectConfig,
}

/// OpenAI Responses requests (`/v1/responses`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponsesDialectConfig {
    /// Keeps responses made on translated paths, for `previous_response_id` and
    /// `GET /v1/responses/{id}`. Without it, a chained request to a translated target is
    /// refused with a 400.
    #[serde(default)]
    pub store: Option<ResponseStoreConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseStoreConfig {
    /// `memory` (this node only) or `redis` (shared by every node).
    #[serde(default)]
    pub backend: ResponseStoreBackend,
    /// How long a response stays retrievable.
    #[serde(default = "ResponseStoreConfig::default_ttl", with = "humantime_serde")]
    pub ttl: Duration,
    /// `memory`: at most this many responses (the oldest go first).
    #[serde(default = "ResponseStoreConfig::default_max_entries")]
    pub max_entries: usize,
    /// `memory`: at most this many bytes in all.
    #[serde(default = "ResponseStoreConfig::default_max_bytes")]
    pub max_bytes: bytesize::ByteSize,
    /// A larger response (with its conversation) is not stored.
    #[serde(default = "ResponseStoreConfig::default_max_entry_bytes")]
    pub max_entry_bytes: bytesize::ByteSize,
    #[serde(default)]
    pub redis: RedisConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseStoreBackend {
    #[default]
    Memory,
    Redis,
}

impl ResponseStoreConfig {
    fn default_ttl() -> Duration {
        Duration::from_secs(3600)
    }
    fn default_max_entries() -> usize {
        10_000
    }
    fn default_max_bytes() -> bytesize::ByteSize {
        bytesize::ByteSize::mib(256)
    }
    fn default_max_entry_bytes() -> bytesize::ByteSize {
        bytesize::ByteSize::mib(8)
    }
}

impl Default for ResponseStoreConfig {
    fn default() -> Self {
        Self {
            backend: ResponseStoreBackend::Memory,
            ttl: Self::default_ttl(),
            max_entries: Self::default_max_entries(),
            max_bytes: Self::default_max_bytes(),
            max_entry_bytes: Self::default_max_entry_bytes(),
            redis: RedisConfig::default(),
        }
    }
}

/// Anthropic Messages requests (`/v1/messages`) sent on to targets that speak another format.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagesDialectConfig {
    /// Drop Claude Code's per-request attribution line (`x-anthropic-billing-header: ...`)
    /// from the system prompt: it changes with every request and defeats the prompt caches of
    /// other backends. Requests to Anthropic targets keep it.
    #[serde(default = "default_true")]
    pub strip_attribution: bool,
}

impl Default for MessagesDialectConfig {
    fn default() -> Self {
        Self {
            strip_attribution: true,
        }
    }
}

/// Addresses the gateway listens on. Changing them needs a restart.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// The proxy (client-facing) listener.
    #[serde(default = "Listen::default_proxy")]
    pub proxy: SocketAddr,
    /// Health, readiness (and later metrics) on their own port, so they can stay internal.
    #[serde(default = "Listen::default_status")]
    pub status: SocketAddr,
}

impl Listen {
    fn default_proxy() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 8080))
    }
    fn default_status() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 8081))
    }
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            proxy: Self::default_proxy(),
            status: Self::default_status(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted (long agent contexts need several MiB).
    #[serde(default = "Limits::default_max_body")]
    pub max_body: ByteSize,
    /// Largest total size of request headers.
    #[serde(default = "Limits::default_max_headers")]
    pub max_headers: ByteSize,
    /// Largest non-streamed upstream response the gateway reads (it must read it to count usage).
    #[serde(default = "Limits::default_max_response")]
    pub max_response: ByteSize,
    /// How long a shutdown waits for requests and streams in flight.
    #[serde(default = "Limits::default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// A request head must arrive whole within this, from its first byte (and a new
    /// connection must start one within it): slow-loris clients are cut off.
    #[serde(
        default = "Limits::default_header_read_timeout",
        with = "humantime_serde"
    )]
    pub header_read_timeout: Duration,
    /// A request body must arrive whole within this (408 otherwise).
    #[serde(
        default = "Limits::default_body_read_timeout",
        with = "humantime_serde"
    )]
    pub body_read_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests.
    #[serde(default = "Limits::default_keepalive_idle", with = "humantime_serde")]
    pub keepalive_idle: Duration,
    /// Open client connections on the proxy listener; past it, new ones get a 503 and are
    /// closed (the status listener has its own allowance).
    #[serde(default = "Limits::default_max_connections")]
    pub max_connections: usize,
}

impl Limits {
    fn default_max_body() -> ByteSize {
        ByteSize::mib(16)
    }
    fn default_max_headers() -> ByteSize {
        ByteSize::kib(64)
    }
    fn default_max_response() -> ByteSize {
        ByteSize::mib(64)
    }
    fn default_shutdown_grace() -> Duration {
        Duration::from_secs(30)
    }
    fn default_header_read_timeout() -> Duration {
        Duration::from_secs(10)
    }
    fn default_body_read_timeout() -> Duration {
        Duration::from_secs(60)
    }
    fn default_keepalive_idle() -> Duration {
        Duration::from_secs(60)
    }
    fn default_max_connections() -> usize {
        10_000
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: Self::default_max_body(),
            max_headers: Self::default_max_headers(),
            max_response: Self::default_max_response(),
            shutdown_grace: Self::default_shutdown_grace(),
            header_read_timeout: Self::default_header_read_timeout(),
            body_read_timeout: Self::default_body_read_timeout(),
            keepalive_idle: Self::default_keepalive_idle(),
            max_connections: Self::default_max_connections(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// The one-JSON-line-per-request log on standard output (`stdout`) or not (`off`).
    #[serde(default)]
    pub requests: RequestLogTarget,
    /// Also append the records to a file (reopened on SIGUSR1, for logrotate).
    #[serde(default)]
    pub file: Option<FileSinkConfig>,
    /// Also POST them in batches to an HTTP endpoint (like Kong's http-log).
    #[serde(default)]
    pub http: Option<HttpSinkConfig>,
    /// Put request and response bodies (credentials redacted) into the records. Off by
    /// default; a route can turn it on for itself with `log_payloads`.
    #[serde(default)]
    pub payloads: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    pub path: std::path::PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    pub url: String,
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// Records per POST (a JSON array).
    #[serde(default = "HttpSinkConfig::default_batch")]
    pub batch_size: usize,
    /// Longest a record waits for its batch to fill.
    #[serde(default = "HttpSinkConfig::default_flush", with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Records held while the endpoint is slow or down; beyond that they are dropped (and
    /// counted), so a dead endpoint never grows memory or slows requests.
    #[serde(default = "HttpSinkConfig::default_queue")]
    pub queue: usize,
    /// Tries per batch, with exponential backoff, before the batch is dropped.
    #[serde(default = "HttpSinkConfig::default_retries")]
    pub retries: u32,
    #[serde(default = "HttpSinkConfig::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl HttpSinkConfig {
    fn default_batch() -> usize {
        100
    }
    fn default_flush() -> Duration {
        Duration::from_secs(1)
    }
    fn default_queue() -> usize {
        10_000
    }
    fn default_retries() -> u32 {
        5
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(5)
    }
}

/// How the gateway notices a new config. SIGHUP always reloads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Reload when the file changes on disk (read at start-up).
    #[serde(default = "default_true")]
    pub watch_file: bool,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self { watch_file: true }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestLogTarget {
    #[default]
    Stdout,
    Off,
}

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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// One target: the name of an entry under `providers` ...
    #[serde(default)]
    pub provider: Option<String>,
    /// ... and the model name upstream (defaults to this model's own name).
    #[serde(default)]
    pub model: Option<String>,
    /// Several targets instead (failover, load balancing).
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// How a target is chosen among several.
    #[serde(default)]
    pub strategy: Strategy,
    /// For `strategy: hash`: `consumer` (default) or `header:<name>`.
    #[serde(default)]
    pub hash_on: Option<String>,
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub circuit: CircuitConfig,
    /// Listed by `/v1/models` (turn off for models used internally, e.g. embeddings).
    #[serde(default = "default_true")]
    pub listed: bool,
    /// Embedding requests for this model are allowed to every authenticated consumer
    /// on a route that serves it, whatever their model access (RAG must work for everyone).
    #[serde(default)]
    pub embeddings_for_all: bool,
    #[serde(default)]
    pub prompt_decorator: Option<PromptDecoratorConfig>,
    /// Price of the single target (defaults come from a table of well-known models).
    #[serde(default)]
    pub pricing: Option<PricingConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub provider: String,
    /// The model name upstream; defaults to the gateway model's name.
    #[serde(default)]
    pub model: Option<String>,
    /// Preference (`priority`: higher first) or share (`weighted`).
    #[serde(default = "TargetConfig::default_weight")]
    pub weight: u32,
    /// Overrides of the provider's timeouts for this target (a `connect` override gives the
    /// target a connection pool of its own).
    #[serde(default)]
    pub timeouts: TimeoutOverrides,
    #[serde(default)]
    pub pricing: Option<PricingConfig>,
}

impl TargetConfig {
    fn default_weight() -> u32 {
        1
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutOverrides {
    #[serde(default, with = "humantime_serde")]
    pub connect: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub first_byte: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub idle: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub total: Option<Duration>,
}

impl TimeoutOverrides {
    pub fn apply(&self, base: &Timeouts) -> Timeouts {
        Timeouts {
            connect: self.connect.unwrap_or(base.connect),
            first_byte: self.first_byte.unwrap_or(base.first_byte),
            idle: self.idle.unwrap_or(base.idle),
            total: self.total.unwrap_or(base.total),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Highest weight first; lower ones only when higher ones are unavailable.
    #[default]
    Priority,
    /// Smooth weighted round-robin.
    Weighted,
    /// Fewest requests in flight.
    LeastBusy,
    /// Lowest moving average of time to first token (whole latency for non-streams).
    LowestLatency,
    /// Sticky per consumer (or per a header), for prompt caching.
    Hash,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Most targets tried for one request (default: every target once).
    #[serde(default)]
    pub attempts: Option<u32>,
    /// What makes the gateway try the next target: `connect`, `timeout`, or HTTP statuses.
    #[serde(default = "RetryConfig::default_on")]
    pub on: Vec<RetryOn>,
}

impl RetryConfig {
    fn default_on() -> Vec<RetryOn> {
        let mut on = vec![RetryOn::Connect, RetryOn::Timeout];
        on.extend([429, 500, 502, 503, 504, 529].map(RetryOn::Status));
        on
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: None,
            on: Self::default_on(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RetryOn {
    Status(u16),
    #[serde(deserialize_with = "retry_word")]
    Connect,
    #[serde(deserialize_with = "retry_word_timeout")]
    Timeout,
}

fn retry_word<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    expect_word(d, "connect")
}

fn retry_word_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
    expect_word(d, "timeout")
}

fn expect_word<'de, D: serde::Deserializer<'de>>(d: D, word: &str) -> Result<(), D::Error> {
    let s = String::deserialize(d)?;
    if s == word {
        Ok(())
    } else {
        Err(serde::de::Error::custom(format!("expected {word:?}")))
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitConfig {
    /// Consecutive failures that take a target out.
    #[serde(default = "CircuitConfig::default_max_fails")]
    pub max_fails: u32,
    /// How long it stays out before one trial request decides.
    #[serde(
        default = "CircuitConfig::default_fail_timeout",
        with = "humantime_serde"
    )]
    pub fail_timeout: Duration,
}

impl CircuitConfig {
    fn default_max_fails() -> u32 {
        3
    }
    fn default_fail_timeout() -> Duration {
        Duration::from_secs(30)
    }
}

impl Default for CircuitConfig {
    fn default() -> Self {
        Self {
            max_fails: Self::default_max_fails(),
            fail_timeout: Self::default_fail_timeout(),
        }
    }
}

fn default_true() -> bool {
    true
}

/// A list of model names, or `"*"` for every model.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ModelList {
    All(AllModels),
    Only(Vec<String>),
}

/// The literal string `"*"`.
#[derive(Debug, Clone, Copy)]
pub struct AllModels;

impl<'de> Deserialize<'de> for AllModels {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "*" {
            Ok(AllModels)
        } else {
            Err(serde::de::Error::custom(format!(
                "expected \"*\" or a list of model names, found {s:?}"
            )))
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// URL prefix; defaults to `/<route name>`. `/` serves `/v1/...` directly.
    #[serde(default)]
    pub path: Option<String>,
    /// Models reachable through this route; default: all.
    #[serde(default)]
    pub models: Option<ModelList>,
    /// A consumer must belong to one of these groups (empty: any authenticated consumer).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Used when a request names no model.
    #[serde(default)]
    pub default_model: Option<String>,
    /// Put request and response bodies into this route's request-log records.
    #[serde(default)]
    pub log_payloads: Option<bool>,
    /// Replaces the top-level `prompt_guard` on this route.
    #[serde(default)]
    pub prompt_guard: Option<PromptGuardConfig>,
    #[serde(default)]
    pub prompt_decorator: Option<PromptDecoratorConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Models the group's members may use.
    #[serde(default)]
    pub models: Option<ModelList>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// External identifier (matched by OIDC usernames; shown in logs).
    #[serde(default)]
    pub custom_id: Option<String>,
    /// API keys, in clear or as `sha256:<hex>` (see `tollgate hash-key`).
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Models this consumer may use on top of its groups' models.
    #[serde(default)]
    pub models: Option<ModelList>,
    /// End-user emails that a trusted consumer (e.g. OpenWebUI) may assert as this consumer.
    #[serde(default)]
    pub emails: Vec<String>,
    /// Trust this consumer to name the end user in a header: `true` for
    /// `X-OpenWebUI-User-Email`, the header name, or `{header, acts_for: [groups]}` to limit
    /// the users it may act as to members of those groups.
    #[serde(default)]
    pub trust_user_header: Option<TrustUserHeader>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TrustUserHeader {
    Enabled(bool),
    Header(String),
    Options(TrustOptions),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustOptions {
    /// Default `X-OpenWebUI-User-Email`.
    #[serde(default)]
    pub header: Option<String>,
    /// Only users in one of these groups are acted for; others it names get the trusted
    /// consumer's own rights. Without it, any consumer with `emails` can be named.
    #[serde(default)]
    pub acts_for: Option<Vec<String>>,
    /// `GET /v1/models` from this consumer lists the union of the models of every user it
    /// may act for (OpenWebUI keeps one model table for all its users); chat and embeddings
    /// stay enforced per user.
    #[serde(default)]
    pub list_union: bool,
    /// The front end signs the user (OpenWebUI's `X-OpenWebUI-User-Jwt`, HS256).
    #[serde(default)]
    pub jwt: Option<SignedUserConfig>,
}

/// Verification of a front end's signed user token (HS256 with a shared secret only).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedUserConfig {
    /// OpenWebUI's `FORWARD_USER_INFO_HEADER_JWT_SECRET`.
    pub secret: String,
    #[serde(default = "SignedUserConfig::default_header")]
    pub header: String,
    #[serde(default = "SignedUserConfig::default_issuer")]
    pub issuer: String,
    /// Refuse the plain email header: only a signed user is acted for (default true).
    #[serde(default = "SignedUserConfig::default_required")]
    pub required: bool,
}

impl SignedUserConfig {
    fn default_header() -> String {
        "X-OpenWebUI-User-Jwt".into()
    }
    fn default_issuer() -> String {
        "open-webui".into()
    }
    fn default_required() -> bool {
        true
    }
}

pub const DEFAULT_USER_HEADER: &str = "X-OpenWebUI-User-Email";

impl TrustUserHeader {
    /// The header name to trust, or `None` when switched off.
    pub fn header_name(&self) -> Option<&str> {
        match self {
            TrustUserHeader::Enabled(true) => Some(DEFAULT_USER_HEADER),
            TrustUserHeader::Enabled(false) => None,
            TrustUserHeader::Header(h) => Some(h),
            TrustUserHeader::Options(o) => Some(o.header.as_deref().unwrap_or(DEFAULT_USER_HEADER)),
        }
    }

    /// The groups whose members this consumer may act for (`None`: anyone with `emails`).
    pub fn acts_for(&self) -> Option<&[String]> {
        self.options().and_then(|o| o.acts_for.as_deref())
    }

    pub fn options(&self) -> Option<&TrustOptions> {
        match self {
            TrustUserHeader::Options(o) => Some(o),
            _ => None,
        }
    }
}

/// Token, request and cost limits, enforced before the call and reconciled after it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitsConfig {
    /// Where counters live: `local` (this process) or `redis` (shared by every node).
    #[serde(default)]
    pub backend: LimitBackend,
    #[serde(default)]
    pub redis: RedisConfig,
    /// The completion estimate reserved for requests that set no `max_tokens`.
    #[serde(default = "RateLimitsConfig::default_completion")]
    pub default_completion_tokens: u64,
    #[serde(default)]
    pub policies: IndexMap<String, PolicyConfig>,
}

impl RateLimitsConfig {
    fn default_completion() -> u64 {
        1024
    }
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        Self {
            backend: LimitBackend::Local,
            redis: RedisConfig::default(),
            default_completion_tokens: Self::default_completion(),
            policies: IndexMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitBackend {
    #[default]
    Local,
    Redis,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    #[serde(default = "RedisConfig::default_url")]
    pub url: String,
    /// What to do when Redis cannot be reached: `open` (let requests through, counted in the
    /// log) or `closed` (answer 503).
    #[serde(default)]
    pub on_error: FailMode,
    /// Prefix of every key the gateway writes.
    #[serde(default = "RedisConfig::default_prefix")]
    pub prefix: String,
    /// Longest wait for Redis on the request path.
    #[serde(default = "RedisConfig::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl RedisConfig {
    fn default_url() -> String {
        "redis://127.0.0.1:6379".to_owned()
    }
    fn default_prefix() -> String {
        "tollgate".to_owned()
    }
    fn default_timeout() -> Duration {
        Duration::from_millis(500)
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: Self::default_url(),
            on_error: FailMode::Open,
            prefix: Self::default_prefix(),
            timeout: Self::default_timeout(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    #[default]
    Open,
    Closed,
}

/// One limit policy: what it counts per (`scope`), which requests it applies to (the
/// optional filters, all of which must match), and its limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default)]
    pub scope: LimitScope,
    #[serde(default)]
    pub consumers: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub routes: Vec<String>,
    pub limits: Vec<LimitConfig>,
}

/// Who shares a counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitScope {
    /// Each consumer (the acting one) has its own counter; with `groups`, each member of them.
    #[default]
    Consumer,
    /// Each group as a whole (all its members together).
    Group,
    Model,
    /// The provider of the target that serves the request (a provider over its limit is
    /// skipped like an unavailable target).
    Provider,
    Route,
    /// One counter for everything the policy matches.
    Global,
}

/// One limit: exactly one of the amounts, per a window.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    #[serde(default)]
    pub tokens: Option<u64>,
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    #[serde(default)]
    pub completion_tokens: Option<u64>,
    #[serde(default)]
    pub requests: Option<u64>,
    #[serde(default)]
    pub cost_usd: Option<f64>,
    /// The window: `1s`, `1m`, `1h`, `1d`, ...
    #[serde(with = "humantime_serde")]
    pub per: Duration,
}

/// Regular expressions that stop a prompt before it reaches any model.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptGuardConfig {
    /// A prompt matching any of these is refused.
    #[serde(default)]
    pub deny: Vec<String>,
    /// If given, a prompt must match one of these.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Which messages are checked: `user` (default) or `all` roles.
    #[serde(default)]
    pub roles: GuardRoles,
    /// Check every message of the conversation, not only the last one of those roles.
    #[serde(default)]
    pub history: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuardRoles {
    #[default]
    User,
    All,
}

/// Messages added around the client's.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptDecoratorConfig {
    #[serde(default)]
    pub prepend: Vec<DecoratorMessage>,
    #[serde(default)]
    pub append: Vec<DecoratorMessage>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecoratorMessage {
    pub role: String,
    pub content: String,
}

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingConfig {
    pub input: f64,
    pub output: f64,
    /// Cached prompt tokens; defaults to `input`.
    #[serde(default)]
    pub cached_input: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Also count tokens per end user (the consumer a trusted front end names; unknown users
    /// are one `unknown` series). Off by default: one series per user adds up.
    #[serde(default)]
    pub end_user_labels: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracesConfig {
    /// The collector's OTLP/HTTP endpoint, e.g. `http://otel-collector:4318`.
    pub endpoint: String,
    #[serde(default)]
    pub protocol: OtlpProtocol,
    #[serde(default = "TracesConfig::default_service")]
    pub service_name: String,
    /// How often buffered spans are sent.
    #[serde(default = "TracesConfig::default_flush", with = "humantime_serde")]
    pub flush_interval: Duration,
    #[serde(default = "TracesConfig::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl TracesConfig {
    fn default_service() -> String {
        "tollgate".to_owned()
    }
    fn default_flush() -> Duration {
        Duration::from_secs(5)
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(10)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OtlpProtocol {
    /// `http/protobuf`, OTLP's default.
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "http/json")]
    HttpJson,
}

/// Ways in besides API keys.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
}

/// Bearer tokens from an OpenID Connect provider (Keycloak, Auth0, Entra ID, ...), mapped to
/// consumers by a claim.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL; its `/.well-known/openid-configuration` names the JWKS.
    pub issuer: String,
    /// Accepted `aud` values (at least one must be in the token).
    pub audiences: Vec<String>,
    /// Skip discovery and fetch the keys from here.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Accepted signature algorithms (`none` and HS* are never accepted).
    #[serde(default = "OidcConfig::default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "OidcConfig::default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// The claim that names the consumer, by its `custom_id`.
    #[serde(default = "OidcConfig::default_username_claim")]
    pub username_claim: String,
    /// A claim holding group (or role) names that add group memberships; a dotted path
    /// reaches into objects (Keycloak: `realm_access.roles`).
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// The consumer a valid token of an unknown user maps to; without one, 401.
    #[serde(default)]
    pub anonymous: Option<String>,
    /// How often the keys are fetched again.
    #[serde(default = "OidcConfig::default_refresh", with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// A token with an unknown key id triggers a fetch at most this often.
    #[serde(default = "OidcConfig::default_min_refresh", with = "humantime_serde")]
    pub min_refresh_interval: Duration,
}

impl OidcConfig {
    fn default_algorithms() -> Vec<String> {
        ["RS256", "ES256", "EdDSA"].map(String::from).to_vec()
    }
    fn default_leeway() -> Duration {
        Duration::from_secs(30)
    }
    fn default_username_claim() -> String {
        "preferred_username".to_owned()
    }
    fn default_refresh() -> Duration {
        Duration::from_secs(600)
    }
    fn default_min_refresh() -> Duration {
        Duration::from_secs(10)
    }
}
