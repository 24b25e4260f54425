//! The admin API's access and the store behind it.

use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;

/// Who may use the admin API (served on `listen.admin`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Admin tokens by name (the name is what the audit log records): clear, best as
    /// `${VAR}`, or `sha256:<hex>` (see `tollgate hash-key`). Sent as `Authorization: Bearer`.
    #[serde(default)]
    pub tokens: IndexMap<String, String>,
    /// With `auth.oidc`: a valid token of a user in this group is an admin too.
    #[serde(default)]
    pub oidc_group: Option<String>,
    /// Largest admin request body.
    #[serde(default = "AdminConfig::default_max_body")]
    pub max_body: bytesize::ByteSize,
}

impl AdminConfig {
    fn default_max_body() -> bytesize::ByteSize {
        bytesize::ByteSize::kib(64)
    }
}

/// `store: sqlite://PATH` or `store: postgres://...`, or the long form with its settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(from = "StoreSetting")]
pub struct StoreConfig {
    /// `sqlite://PATH` (one node; a relative path is next to the config file) or
    /// `postgres://user@host/db` (many nodes).
    pub url: String,
    /// How often a node checks the store's revision besides PostgreSQL's notifications.
    pub poll_interval: Duration,
}

impl StoreConfig {
    pub const DEFAULT_POLL: Duration = Duration::from_secs(1);

    /// The embedded default when the admin API is on and no store is named.
    pub fn default_sqlite() -> Self {
        Self {
            url: "sqlite://tollgate-store.db".into(),
            poll_interval: Self::DEFAULT_POLL,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StoreSetting {
    Url(String),
    Full(StoreFull),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFull {
    url: String,
    #[serde(default, with = "humantime_serde")]
    poll_interval: Option<Duration>,
}

impl From<StoreSetting> for StoreConfig {
    fn from(s: StoreSetting) -> Self {
        match s {
            StoreSetting::Url(url) => Self {
                url,
                poll_interval: Self::DEFAULT_POLL,
            },
            StoreSetting::Full(f) => Self {
                url: f.url,
                poll_interval: f.poll_interval.unwrap_or(Self::DEFAULT_POLL),
            },
        }
    }
}
