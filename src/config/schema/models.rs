//! Models, their targets, balancing, retries, circuit breakers and prices.

use std::time::Duration;

use serde::Deserialize;

use super::*;

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

/// A list of model names, or `"*"` for every model.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum ModelList {
    All(AllModels),
    Only(Vec<String>),
}

/// The literal string `"*"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AllModels;

impl serde::Serialize for AllModels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("*")
    }
}

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
