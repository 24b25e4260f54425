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
    /// Browser sign-in to the console through the OIDC provider of `auth.oidc` (needs
    /// `oidc_group`).
    #[serde(default)]
    pub console_sign_in: Option<ConsoleSignInConfig>,
    /// Largest admin request body.
    #[serde(default = "AdminConfig::default_max_body")]
    pub max_body: bytesize::ByteSize,
}

impl AdminConfig {
    fn default_max_body() -> bytesize::ByteSize {
        bytesize::ByteSize::kib(64)
    }
}

/// The console's OIDC sign-in: the authorization-code flow with PKCE, the gateway exchanging
/// the code (so the page only ever talks to the gateway) and keeping a session for the
/// browser in an HttpOnly cookie.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSignInConfig {
    /// The client registered at the provider for the console.
    pub client_id: String,
    /// Its secret, best as `${VAR}`; none for a public client (PKCE alone).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// `https://<admin host>/console/oidc/callback` as registered at the provider; by default
    /// built from the request's `Host` (https when `listen.tls` covers the admin listener).
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// Scopes asked for; `openid` is always among them.
    #[serde(default = "ConsoleSignInConfig::default_scopes")]
    pub scopes: Vec<String>,
    /// How long a console session lasts before signing in again.
    #[serde(
        default = "ConsoleSignInConfig::default_session_ttl",
        with = "humantime_serde"
    )]
    pub session_ttl: Duration,
}

impl ConsoleSignInConfig {
    fn default_scopes() -> Vec<String> {
        vec!["openid".into(), "profile".into()]
    }
    fn default_session_ttl() -> Duration {
        Duration::from_secs(8 * 3600)
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
