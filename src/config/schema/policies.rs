//! Rate limits and budgets, the prompt guard and the prompt decorator.

use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;

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
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
