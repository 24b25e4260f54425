//! Who may come in: routes, groups, consumers, trusted front ends and OIDC.

use std::time::Duration;

use serde::Deserialize;

use super::*;

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
    /// Client certificates that stand for this consumer (with `listen.tls.client_ca`): the
    /// certificate's subject common name, or one of its DNS, email or URI names.
    #[serde(default)]
    pub client_certs: Vec<String>,
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
    /// Limits of this consumer alone (tokens, requests, cost per window, e.g. 30 days),
    /// counted by the limit engine like a policy's.
    #[serde(default)]
    pub budgets: Vec<LimitConfig>,
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
