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
    pub providers: IndexMap<String, ProviderConfig>,
    #[serde(default)]
    pub models: IndexMap<String, ModelConfig>,
    #[serde(default)]
    pub routes: IndexMap<String, RouteConfig>,
    #[serde(default)]
    pub groups: IndexMap<String, GroupConfig>,
    #[serde(default)]
    pub consumers: IndexMap<String, ConsumerConfig>,
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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: Self::default_max_body(),
            max_headers: Self::default_max_headers(),
            max_response: Self::default_max_response(),
            shutdown_grace: Self::default_shutdown_grace(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Where the one-JSON-line-per-request log goes.
    #[serde(default)]
    pub requests: RequestLogTarget,
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
    /// Answers by itself (echoes the last user message). For demos and tests only.
    Mock(MockProviderConfig),
}

impl ProviderConfig {
    pub fn timeouts(&self) -> &Timeouts {
        match self {
            ProviderConfig::Openai(p) => &p.timeouts,
            ProviderConfig::Mock(p) => &p.timeouts,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiProviderConfig {
    /// Base URL up to and including `/v1`, e.g. `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    /// Sent upstream as `Authorization: Bearer`; empty or absent means none.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Extra static headers sent upstream (e.g. `OpenAI-Organization`).
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    #[serde(default)]
    pub timeouts: Timeouts,
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
    /// Name of an entry under `providers`.
    pub provider: String,
    /// The model name upstream; defaults to this model's own name.
    #[serde(default)]
    pub model: Option<String>,
    /// Listed by `/v1/models` (turn off for models used internally, e.g. embeddings).
    #[serde(default = "default_true")]
    pub listed: bool,
    /// Embedding requests for this model are allowed to every authenticated consumer
    /// on a route that serves it, whatever their model access (RAG must work for everyone).
    #[serde(default)]
    pub embeddings_for_all: bool,
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
    /// `X-OpenWebUI-User-Email`, or the header name.
    #[serde(default)]
    pub trust_user_header: Option<TrustUserHeader>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TrustUserHeader {
    Enabled(bool),
    Header(String),
}

pub const DEFAULT_USER_HEADER: &str = "X-OpenWebUI-User-Email";

impl TrustUserHeader {
    /// The header name to trust, or `None` when switched off.
    pub fn header_name(&self) -> Option<&str> {
        match self {
            TrustUserHeader::Enabled(true) => Some(DEFAULT_USER_HEADER),
            TrustUserHeader::Enabled(false) => None,
            TrustUserHeader::Header(h) => Some(h),
        }
    }
}
