//! Request logs and their sinks, metrics and traces.

use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;

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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestLogTarget {
    #[default]
    Stdout,
    Off,
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
