//! `providers:` checked (URLs, headers, mock settings) and built; an unchanged provider is
//! taken over from the previous snapshot with its connection pool.

use std::sync::Arc;

use axum::http::{HeaderName, HeaderValue};
use indexmap::IndexMap;

use super::Problems;
use crate::config::{Config, FieldPath, ProviderConfig};
use crate::providers::Provider;
use crate::snapshot::Snapshot;

pub(super) type Providers = IndexMap<String, (ProviderConfig, Arc<Provider>)>;

pub(super) fn compile(
    config: &Config,
    previous: Option<&Snapshot>,
    at: &FieldPath,
    problems: &mut Problems,
) -> Providers {
    let mut providers = IndexMap::new();
    for (name, pc) in &config.providers {
        let at = at.key(name);
        if !check(pc, &at, problems) {
            continue;
        }
        let reused = previous
            .and_then(|p| p.providers.get(name))
            .filter(|(old, _)| old == pc)
            .map(|(_, provider)| provider.clone());
        match reused
            .map(Ok)
            .unwrap_or_else(|| Provider::from_config(name, pc).map(Arc::new))
        {
            Ok(provider) => {
                if let Some(reason) = provider.unavailable() {
                    tracing::warn!(provider = %name, "{reason}: its models are left out");
                }
                providers.insert(name.clone(), (pc.clone(), provider));
            }
            Err(message) => problems.add(at, message),
        }
    }
    providers
}

/// Whether the provider's settings are sound enough to build it (problems are reported).
fn check(provider: &ProviderConfig, at: &FieldPath, problems: &mut Problems) -> bool {
    let before = problems.count();
    let (base_url, headers) = match provider {
        ProviderConfig::Azure(p) => (Some(p.base_url.as_str()), &p.headers),
        ProviderConfig::Anthropic(p) => (Some(p.base_url.as_str()), &p.headers),
        ProviderConfig::Gemini(p) => (Some(p.base_url.as_str()), &p.headers),
        ProviderConfig::Mock(m) => {
            if m.embedding_dimensions == 0 || m.embedding_dimensions > 65_536 {
                problems.add(
                    at.key("embedding_dimensions"),
                    "must be between 1 and 65536",
                );
            }
            return problems.count() == before;
        }
        other => match other.openai_preset() {
            Some((_, p)) => (p.base_url.as_deref(), &p.headers),
            None => return true,
        },
    };
    if let Some(url) = base_url {
        match url::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(u) => problems.add(
                at.key("base_url"),
                format!("scheme must be http or https, not {:?}", u.scheme()),
            ),
            Err(e) => problems.add(at.key("base_url"), format!("not a valid URL ({e})")),
        }
    }
    for (header, value) in headers {
        if HeaderName::from_bytes(header.as_bytes()).is_err() {
            problems.add(at.key("headers").key(header), "not a valid header name");
        }
        if HeaderValue::from_str(value).is_err() {
            problems.add(at.key("headers").key(header), "not a valid header value");
        }
    }
    problems.count() == before
}
