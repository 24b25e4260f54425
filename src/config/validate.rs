//! Checks that go beyond types: references between sections, URLs, key formats, duplicates.
//! Every problem is collected (not just the first) with the path of the offending field.

use std::collections::HashMap;

use super::locate::FieldPath;
use super::schema::{
    Config, LimitBackend, ModelList, OidcConfig, PromptDecoratorConfig, PromptGuardConfig,
    ProviderConfig, Strategy,
};
use crate::auth::keys::KeyDigest;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: FieldPath,
    pub message: String,
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: FieldPath, message: impl Into<String>) {
        self.0.push(Problem {
            path,
            message: message.into(),
        });
    }
}

pub fn validate(config: &Config) -> Vec<Problem> {
    let mut problems = Problems::default();
    let root = FieldPath::root();
    validate_providers(config, &root.key("providers"), &mut problems);
    validate_models(config, &root.key("models"), &mut problems);
    validate_routes(config, &root.key("routes"), &mut problems);
    for (name, group) in &config.groups {
        let at = root.key("groups").key(name);
        check_model_list(
            config,
            group.models.as_ref(),
            &at.key("models"),
            &mut problems,
        );
    }
    validate_consumers(config, &root.key("consumers"), &mut problems);
    validate_rate_limits(config, &root.key("rate_limits"), &mut problems);
    if let Some(oidc) = &config.auth.oidc {
        validate_oidc(config, oidc, &root.key("auth").key("oidc"), &mut problems);
    }
    if let Some(guard) = &config.prompt_guard {
        check_guard(guard, &root.key("prompt_guard"), &mut problems);
    }
    for (name, route) in &config.routes {
        let at = root.key("routes").key(name);
        if let Some(guard) = &route.prompt_guard {
            check_guard(guard, &at.key("prompt_guard"), &mut problems);
        }
        if let Some(d) = &route.prompt_decorator {
            check_decorator(d, &at.key("prompt_decorator"), &mut problems);
        }
    }
    for (name, model) in &config.models {
        let at = root.key("models").key(name);
        if let Some(d) = &model.prompt_decorator {
            check_decorator(d, &at.key("prompt_decorator"), &mut problems);
        }
        let prices = model.pricing.iter().map(|p| (at.key("pricing"), p)).chain(
            model.targets.iter().enumerate().filter_map(|(i, t)| {
                t.pricing
                    .as_ref()
                    .map(|p| (at.key("targets").index(i).key("pricing"), p))
            }),
        );
        for (at, p) in prices {
            if p.input < 0.0 || p.output < 0.0 || p.cached_input.is_some_and(|c| c < 0.0) {
                problems.add(at, "prices cannot be negative");
            }
        }
    }
    problems.0
}

fn validate_rate_limits(config: &Config, at: &FieldPath, problems: &mut Problems) {
    let rl = &config.rate_limits;
    if rl.backend == LimitBackend::Redis && redis_url_invalid(&rl.redis.url) {
        problems.add(
            at.key("redis").key("url"),
            "not a valid Redis URL (redis://host:port/db)",
        );
    }
    for (name, policy) in &rl.policies {
        let at = at.key("policies").key(name);
        if policy.limits.is_empty() {
            problems.add(at.key("limits"), "a policy needs at least one limit");
        }
        for (i, l) in policy.limits.iter().enumerate() {
            let amounts = [
                l.tokens.is_some(),
                l.prompt_tokens.is_some(),
                l.completion_tokens.is_some(),
                l.requests.is_some(),
                l.cost_usd.is_some(),
            ];
            if amounts.iter().filter(|a| **a).count() != 1 {
                problems.add(at.key("limits").index(i), "give exactly one of tokens, prompt_tokens, completion_tokens, requests, cost_usd");
            }
            if l.per < std::time::Duration::from_secs(1) {
                problems.add(
                    at.key("limits").index(i).key("per"),
                    "the window must be at least 1s",
                );
            }
            if l.cost_usd.is_some_and(|c| c < 0.0) {
                problems.add(
                    at.key("limits").index(i).key("cost_usd"),
                    "cannot be negative",
                );
            }
        }
        let refs: [(&str, &Vec<String>, bool); 4] = [
            ("consumers", &policy.consumers, false),
            ("groups", &policy.groups, false),
            ("models", &policy.models, false),
            ("routes", &policy.routes, false),
        ];
        for (field, names, _) in refs {
            for (i, n) in names.iter().enumerate() {
                let known = match field {
                    "consumers" => config.consumers.contains_key(n),
                    "groups" => config.groups.contains_key(n),
                    "models" => config.models.contains_key(n),
                    _ => config.routes.contains_key(n),
                };
                if !known {
                    problems.add(
                        at.key(field).index(i),
                        format!("unknown {} {n:?}", field.trim_end_matches('s')),
                    );
                }
            }
        }
    }
}

fn validate_oidc(config: &Config, oidc: &OidcConfig, at: &FieldPath, problems: &mut Problems) {
    for (field, url) in [
        ("issuer", Some(&oidc.issuer)),
        ("jwks_uri", oidc.jwks_uri.as_ref()),
    ] {
        if let Some(url) = url
            && !reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            problems.add(at.key(field), "must be an http(s) URL");
        }
    }
    if oidc.audiences.is_empty() {
        problems.add(at.key("audiences"), "name at least one accepted audience");
    }
    if oidc.algorithms.is_empty() {
        problems.add(at.key("algorithms"), "name at least one algorithm");
    }
    for (i, alg) in oidc.algorithms.iter().enumerate() {
        if crate::auth::oidc::parse_algorithm(alg).is_none() {
            problems.add(
                at.key("algorithms").index(i),
                format!("{alg:?} is not accepted: use RS256/384/512, PS256/384/512, ES256/384 or EdDSA (never none or HS*)"),
            );
        }
    }
    if let Some(name) = &oidc.anonymous
        && !config.consumers.contains_key(name)
    {
        problems.add(at.key("anonymous"), format!("unknown consumer {name:?}"));
    }
}

fn redis_url_invalid(url: &str) -> bool {
    reqwest::Url::parse(url).map_or(true, |u| {
        !matches!(u.scheme(), "redis" | "rediss" | "redis+unix" | "unix")
    })
}

fn check_guard(guard: &PromptGuardConfig, at: &FieldPath, problems: &mut Problems) {
    for (field, patterns) in [("deny", &guard.deny), ("allow", &guard.allow)] {
        for (i, pattern) in patterns.iter().enumerate() {
            // Syntax only, which is cheap: the patterns are compiled once, as one set, when the
            // config is compiled (and a set too large for its budget refuses the config there).
            if let Err(e) = regex_syntax::Parser::new().parse(pattern) {
                problems.add(
                    at.key(field).index(i),
                    format!("not a valid regular expression: {e}"),
                );
            }
        }
    }
}

fn check_decorator(d: &PromptDecoratorConfig, at: &FieldPath, problems: &mut Problems) {
    for (field, messages) in [("prepend", &d.prepend), ("append", &d.append)] {
        for (i, m) in messages.iter().enumerate() {
            if !matches!(
                m.role.as_str(),
                "system" | "developer" | "user" | "assistant"
            ) {
                problems.add(
                    at.key(field).index(i).key("role"),
                    "role must be system, developer, user or assistant",
                );
            }
        }
    }
}

fn validate_providers(config: &Config, at: &FieldPath, problems: &mut Problems) {
    for (name, provider) in &config.providers {
        let at = at.key(name);
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
                continue;
            }
            other => match other.openai_preset() {
                Some((_, p)) => (p.base_url.as_deref(), &p.headers),
                None => continue,
            },
        };
        if let Some(url) = base_url {
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                Ok(u) => problems.add(
                    at.key("base_url"),
                    format!("scheme must be http or https, not {:?}", u.scheme()),
                ),
                Err(e) => problems.add(at.key("base_url"), format!("not a valid URL ({e})")),
            }
        }
        for (header, value) in headers {
            if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
                problems.add(at.key("headers").key(header), "not a valid header name");
            }
            if reqwest::header::HeaderValue::from_str(value).is_err() {
                problems.add(at.key("headers").key(header), "not a valid header value");
            }
        }
    }
}

fn validate_models(config: &Config, at: &FieldPath, problems: &mut Problems) {
    for (name, model) in &config.models {
        let at = at.key(name);
        if name.trim().is_empty() || name == "*" {
            problems.add(at.clone(), "a model needs a name (and \"*\" is reserved)");
        }
        match (&model.provider, model.targets.is_empty()) {
            (Some(_), false) => problems.add(
                at.key("targets"),
                "give either `provider` (one target) or `targets`, not both",
            ),
            (None, true) => problems.add(
                at.clone(),
                "a model needs a `provider` or a list of `targets`",
            ),
            (Some(_), true) if model.strategy != Strategy::Priority || model.hash_on.is_some() => {
                problems.add(
                    at.key("strategy"),
                    "`strategy` and `hash_on` need a list of `targets`",
                )
            }
            _ => {}
        }
        if let Some(provider) = &model.provider {
            check_provider(config, provider, &at.key("provider"), problems);
        }
        if model.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
            problems.add(at.key("model"), "the upstream model name must not be empty");
        }
        for (i, target) in model.targets.iter().enumerate() {
            let at = at.key("targets").index(i);
            check_provider(config, &target.provider, &at.key("provider"), problems);
            if target.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
                problems.add(at.key("model"), "the upstream model name must not be empty");
            }
            if target.weight == 0 && model.strategy == Strategy::Weighted {
                problems.add(at.key("weight"), "a weighted target needs a weight above 0");
            }
        }
        if let Some(hash_on) = &model.hash_on {
            let header_ok = hash_on.strip_prefix("header:").is_some_and(|h| {
                reqwest::header::HeaderName::from_bytes(h.trim().as_bytes()).is_ok()
            });
            if hash_on != "consumer" && !header_ok {
                problems.add(
                    at.key("hash_on"),
                    "expected `consumer` or `header:<header name>`",
                );
            }
        }
        if model.retry.attempts == Some(0) {
            problems.add(at.key("retry").key("attempts"), "must be at least 1");
        }
        if model.circuit.max_fails == 0 {
            problems.add(at.key("circuit").key("max_fails"), "must be at least 1");
        }
    }
}

fn check_provider(config: &Config, provider: &str, at: &FieldPath, problems: &mut Problems) {
    if !config.providers.contains_key(provider) {
        problems.add(
            at.clone(),
            format!(
                "unknown provider {provider:?}{}",
                known(config.providers.keys())
            ),
        );
    }
}

fn validate_routes(config: &Config, at: &FieldPath, problems: &mut Problems) {
    let mut seen_paths: HashMap<String, &str> = HashMap::new();
    for (name, route) in &config.routes {
        let at = at.key(name);
        let path = route_path(name, route.path.as_deref());
        let path_at = at.key("path");
        if !path.starts_with('/') {
            problems.add(
                path_at.clone(),
                format!("route path {path:?} must start with '/'"),
            );
        } else if path.len() > 1 && path.ends_with('/') {
            problems.add(
                path_at.clone(),
                format!("route path {path:?} must not end with '/'"),
            );
        } else if path.split('/').any(|s| s == "v1") {
            problems.add(
                path_at.clone(),
                format!("route path {path:?} must not contain /v1: it is added by the gateway"),
            );
        } else if path.contains(['?', '#', ' ']) {
            problems.add(
                path_at.clone(),
                format!("route path {path:?} holds a character that cannot be in a path"),
            );
        } else if let Some(other) = seen_paths.insert(path.clone(), name) {
            problems.add(
                path_at.clone(),
                format!("route path {path:?} is already used by route {other:?}"),
            );
        }
        check_model_list(config, route.models.as_ref(), &at.key("models"), problems);
        for (i, group) in route.groups.iter().enumerate() {
            if !config.groups.contains_key(group) {
                problems.add(
                    at.key("groups").index(i),
                    format!("unknown group {group:?}{}", known(config.groups.keys())),
                );
            }
        }
        if let Some(model) = &route.default_model {
            if !config.models.contains_key(model) {
                problems.add(at.key("default_model"), format!("unknown model {model:?}"));
            } else if let Some(ModelList::Only(list)) = &route.models
                && !list.contains(model)
            {
                problems.add(
                    at.key("default_model"),
                    format!("model {model:?} is not among this route's models"),
                );
            }
        }
    }
}

fn validate_consumers(config: &Config, at: &FieldPath, problems: &mut Problems) {
    let mut keys: HashMap<KeyDigest, &str> = HashMap::new();
    let mut emails: HashMap<String, &str> = HashMap::new();
    let mut custom_ids: HashMap<&str, &str> = HashMap::new();
    for (name, consumer) in &config.consumers {
        let at = at.key(name);
        if let Some(id) = consumer.custom_id.as_deref()
            && let Some(other) = custom_ids.insert(id, name)
        {
            problems.add(
                at.key("custom_id"),
                format!("custom_id {id:?} is already used by consumer {other:?}"),
            );
        }
        for (i, key) in consumer.keys.iter().enumerate() {
            match KeyDigest::from_config(key) {
                Ok(digest) => {
                    if let Some(other) = keys.insert(digest, name) {
                        // Never echo the key itself.
                        problems.add(
                            at.key("keys").index(i),
                            format!("this key is already given to consumer {other:?}"),
                        );
                    }
                }
                Err(e) => problems.add(at.key("keys").index(i), e),
            }
        }
        for (i, group) in consumer.groups.iter().enumerate() {
            if !config.groups.contains_key(group) {
                problems.add(
                    at.key("groups").index(i),
                    format!("unknown group {group:?}{}", known(config.groups.keys())),
                );
            }
        }
        check_model_list(
            config,
            consumer.models.as_ref(),
            &at.key("models"),
            problems,
        );
        for (i, email) in consumer.emails.iter().enumerate() {
            let normalized = email.trim().to_ascii_lowercase();
            if !normalized.contains('@') {
                problems.add(
                    at.key("emails").index(i),
                    format!("{email:?} is not an email address"),
                );
            } else if let Some(other) = emails.insert(normalized, name) {
                problems.add(
                    at.key("emails").index(i),
                    format!("email {email:?} already belongs to consumer {other:?}"),
                );
            }
        }
        if let Some(header) = consumer
            .trust_user_header
            .as_ref()
            .and_then(|t| t.header_name())
            && reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err()
        {
            problems.add(
                at.key("trust_user_header"),
                format!("{header:?} is not a valid header name"),
            );
        }
        let acts_for = consumer
            .trust_user_header
            .as_ref()
            .and_then(|t| t.acts_for());
        for (i, group) in acts_for.unwrap_or_default().iter().enumerate() {
            if !config.groups.contains_key(group) {
                problems.add(
                    at.key("trust_user_header").key("acts_for").index(i),
                    format!("unknown group {group:?}"),
                );
            }
        }
    }
}

fn check_model_list(
    config: &Config,
    list: Option<&ModelList>,
    at: &FieldPath,
    problems: &mut Problems,
) {
    if let Some(ModelList::Only(models)) = list {
        for (i, model) in models.iter().enumerate() {
            if !config.models.contains_key(model) {
                problems.add(at.index(i), format!("unknown model {model:?}"));
            }
        }
    }
}

/// A route's URL prefix: its `path`, or `/<name>`.
pub fn route_path(name: &str, path: Option<&str>) -> String {
    path.map(str::to_owned)
        .unwrap_or_else(|| format!("/{name}"))
}

fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<_> = names.map(|n| format!("{n:?}")).collect();
    if names.is_empty() {
        " (none are defined)".into()
    } else {
        format!(" (known: {})", names.join(", "))
    }
}
