//! How each client dialect (Responses, Messages) is served: stores and translations.

use std::time::Duration;

use serde::Deserialize;

use super::*;

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
