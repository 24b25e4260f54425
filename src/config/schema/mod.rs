//! The YAML schema, as serde types. Everything has a default that works for one node,
//! and every struct denies unknown fields so a typo is an error, not a silent no-op. One
//! file per section of the config; `Config` is the whole file.

use indexmap::IndexMap;
use serde::Deserialize;

mod access;
mod admin;
mod dialects;
mod models;
mod policies;
mod providers;
mod server;
mod telemetry;

pub use access::*;
pub use admin::*;
pub use dialects::*;
pub use models::*;
pub use policies::*;
pub use providers::*;
pub use server::*;
pub use telemetry::*;

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
    /// Who may use the admin API (`listen.admin`).
    #[serde(default)]
    pub admin: AdminConfig,
    /// Where consumers and keys managed through the admin API live.
    #[serde(default)]
    pub store: Option<StoreConfig>,
    /// How client dialects other than OpenAI chat are read.
    #[serde(default)]
    pub dialects: DialectsConfig,
}

fn default_true() -> bool {
    true
}
