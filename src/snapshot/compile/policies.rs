//! Policies: rate limits (and their store), the prompt guard and decorator, OIDC settings,
//! and the Responses store.

use std::sync::Arc;

use super::Problems;
use crate::config::{
    Config, FieldPath, LimitBackend, LimitConfig, OidcConfig, PromptDecoratorConfig,
    PromptGuardConfig,
};
use crate::dialect::responses::store::ResponseStore;
use crate::policy::guard::PromptGuard;
use crate::policy::limits::{Limiter, RateLimits};
use crate::snapshot::Snapshot;

/// Whether a name is defined in one section of the config.
type IsDefined<'a> = &'a dyn Fn(&str) -> bool;

pub(super) fn check_rate_limits(config: &Config, at: &FieldPath, problems: &mut Problems) {
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
        check_limits(&policy.limits, &at.key("limits"), problems);
        let defined: [(&str, &Vec<String>, IsDefined); 4] = [
            ("consumers", &policy.consumers, &|n| {
                config.consumers.contains_key(n)
            }),
            ("groups", &policy.groups, &|n| config.groups.contains_key(n)),
            ("models", &policy.models, &|n| config.models.contains_key(n)),
            ("routes", &policy.routes, &|n| config.routes.contains_key(n)),
        ];
        for (field, list, is_defined) in defined {
            for (i, n) in list.iter().enumerate() {
                if !is_defined(n) {
                    problems.add(
                        at.key(field).index(i),
                        format!("unknown {} {n:?}", field.trim_end_matches('s')),
                    );
                }
            }
        }
    }
}

/// Each limit names exactly one amount, a window of at least a second, no negative cost.
pub(crate) fn check_limits(limits: &[LimitConfig], at: &FieldPath, problems: &mut Problems) {
    for (i, l) in limits.iter().enumerate() {
        let amounts = [
            l.tokens.is_some(),
            l.prompt_tokens.is_some(),
            l.completion_tokens.is_some(),
            l.requests.is_some(),
            l.cost_usd.is_some(),
        ];
        if amounts.iter().filter(|a| **a).count() != 1 {
            problems.add(
                at.index(i),
                "give exactly one of tokens, prompt_tokens, completion_tokens, requests, cost_usd",
            );
        }
        if l.per < std::time::Duration::from_secs(1) {
            problems.add(at.index(i).key("per"), "the window must be at least 1s");
        }
        if l.cost_usd.is_some_and(|c| c < 0.0) {
            problems.add(at.index(i).key("cost_usd"), "cannot be negative");
        }
    }
}

fn redis_url_invalid(url: &str) -> bool {
    url::Url::parse(url).map_or(true, |u| {
        !matches!(u.scheme(), "redis" | "rediss" | "redis+unix" | "unix")
    })
}

pub(super) fn check_oidc(
    config: &Config,
    oidc: &OidcConfig,
    at: &FieldPath,
    problems: &mut Problems,
) {
    for (field, url) in [
        ("issuer", Some(&oidc.issuer)),
        ("jwks_uri", oidc.jwks_uri.as_ref()),
    ] {
        if let Some(url) = url
            && !url::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
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

/// A guard's patterns checked one by one (each error at its own pattern), then compiled as one
/// set. A guard that cannot be compiled refuses the config: it is never silently off.
pub(super) fn compile_guard(
    guard: &PromptGuardConfig,
    at: &FieldPath,
    problems: &mut Problems,
) -> Option<Arc<PromptGuard>> {
    let before = problems.count();
    for (field, patterns) in [("deny", &guard.deny), ("allow", &guard.allow)] {
        for (i, pattern) in patterns.iter().enumerate() {
            if let Err(e) = regex_syntax::Parser::new().parse(pattern) {
                problems.add(
                    at.key(field).index(i),
                    format!("not a valid regular expression: {e}"),
                );
            }
        }
    }
    if problems.count() > before {
        return None;
    }
    match PromptGuard::compile(guard) {
        Ok(compiled) => Some(Arc::new(compiled)),
        Err(message) => {
            problems.add(
                at.clone(),
                format!("the prompt guard cannot be compiled: {message}"),
            );
            None
        }
    }
}

pub(super) fn check_decorator(d: &PromptDecoratorConfig, at: &FieldPath, problems: &mut Problems) {
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

/// The stores that outlive a request: the limit counters and the Responses store, each kept
/// from the previous snapshot when its config is unchanged (counters and kept responses
/// survive the reload). Built last, for a config otherwise sound.
pub(super) fn compile_stores(
    config: &Config,
    previous: Option<&Snapshot>,
    problems: &mut Problems,
) -> Option<(RateLimits, Option<Arc<ResponseStore>>)> {
    let limiter = match previous.map(|p| &p.rate_limits.limiter) {
        Some(l) if l.serves(&config.rate_limits) => Some(l.clone()),
        _ => match Limiter::new(&config.rate_limits) {
            Ok(limiter) => Some(Arc::new(limiter)),
            Err(message) => {
                problems.add(FieldPath::root().key("rate_limits"), message);
                None
            }
        },
    };
    let response_store = match &config.dialects.responses.store {
        None => Some(None),
        Some(store) => match previous.and_then(|p| p.response_store.as_ref()) {
            Some(kept) if kept.serves(store) => Some(Some(kept.clone())),
            _ => match ResponseStore::new(store) {
                Ok(made) => Some(Some(Arc::new(made))),
                Err(message) => {
                    problems.add(
                        FieldPath::root()
                            .key("dialects")
                            .key("responses")
                            .key("store"),
                        message,
                    );
                    None
                }
            },
        },
    };
    Some((
        RateLimits::compile(&config.rate_limits, limiter?),
        response_store?,
    ))
}
