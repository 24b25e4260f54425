//! `models:` checked (providers they name, targets, strategy, hashing, retries, circuit,
//! prices, decorators) and built into pools of targets. Target health is taken over from the
//! previous snapshot for targets whose provider did not change.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::HeaderName;

use super::providers::Providers;
use super::{Problems, known, policies};
use crate::config::{Config, FieldPath, ModelConfig, Strategy, TargetConfig};
use crate::fast_hash::FastIndexMap;
use crate::policy::pricing::{self, Price};
use crate::providers::Provider;
use crate::routing::health::TargetHealth;
use crate::routing::{AnswerHeaders, HashOn, Pool, Target};
use crate::snapshot::{Model, Snapshot};

pub(super) type Healths = HashMap<(String, String), Arc<TargetHealth>>;

pub(super) fn compile(
    config: &Config,
    providers: &Providers,
    previous: Option<&Snapshot>,
    problems: &mut Problems,
) -> (FastIndexMap<String, Arc<Model>>, Healths) {
    let mut healths = Healths::new();
    let mut models = FastIndexMap::default();
    for (name, mc) in &config.models {
        let at = FieldPath::root().key("models").key(name);
        let hash_on = check(config, name, mc, &at, problems);
        let single;
        let target_configs: &[TargetConfig] = if mc.targets.is_empty() {
            single = [TargetConfig {
                provider: mc.provider.clone().unwrap_or_default(),
                model: mc.model.clone(),
                weight: 1,
                timeouts: Default::default(),
                pricing: mc.pricing,
            }];
            &single
        } else {
            &mc.targets
        };
        let mut targets = Vec::new();
        for tc in target_configs {
            // A provider that is unknown or refused was reported where it is named.
            let Some((pc, provider)) = providers.get(&tc.provider) else {
                continue;
            };
            let upstream_model = tc.model.clone().unwrap_or_else(|| name.clone());
            let key = (tc.provider.clone(), upstream_model.clone());
            let health = healths
                .entry(key.clone())
                .or_insert_with(|| {
                    previous
                        .and_then(|p| p.healths.get(&key).zip(p.providers.get(&tc.provider)))
                        .filter(|(_, (old_config, _))| old_config == pc)
                        .map(|(h, _)| h.clone())
                        .unwrap_or_default()
                })
                .clone();
            // A connect timeout of its own needs a connection pool of its own.
            let provider = match tc.timeouts.connect {
                None => provider.clone(),
                Some(connect) => {
                    match Provider::from_config(&tc.provider, &pc.with_connect_timeout(connect)) {
                        Ok(own) => Arc::new(own),
                        Err(message) => {
                            problems.add(at.clone(), message);
                            continue;
                        }
                    }
                }
            };
            let price = tc
                .pricing
                .map(Price::from)
                .or_else(|| pricing::default_for(&upstream_model));
            targets.push(Arc::new(Target {
                answer_headers: AnswerHeaders::new(&tc.provider, &upstream_model),
                provider_name: tc.provider.as_str().into(),
                provider,
                price,
                upstream_model: upstream_model.into(),
                weight: tc.weight,
                timeouts: tc.timeouts.apply(pc.timeouts()),
                health,
            }));
        }
        let pool = Pool::new(
            targets,
            mc.strategy,
            hash_on,
            mc.retry.attempts,
            mc.retry.on.clone(),
            mc.circuit.clone(),
        );
        models.insert(
            name.clone(),
            Arc::new(Model {
                name: name.as_str().into(),
                pool,
                listed: mc.listed,
                embeddings_for_all: mc.embeddings_for_all,
                decorator: mc.prompt_decorator.clone(),
            }),
        );
    }
    (models, healths)
}

/// Reports what is wrong with one model; returns what its hashing strategy keys on.
fn check(
    config: &Config,
    name: &str,
    model: &ModelConfig,
    at: &FieldPath,
    problems: &mut Problems,
) -> HashOn {
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
    let hash_on = match model.hash_on.as_deref() {
        None | Some("consumer") => HashOn::Consumer,
        Some(other) => match other
            .strip_prefix("header:")
            .map(str::trim)
            .filter(|h| HeaderName::from_bytes(h.as_bytes()).is_ok())
        {
            Some(header) => HashOn::Header(header.to_owned()),
            None => {
                problems.add(
                    at.key("hash_on"),
                    "expected `consumer` or `header:<header name>`",
                );
                HashOn::Consumer
            }
        },
    };
    if model.retry.attempts == Some(0) {
        problems.add(at.key("retry").key("attempts"), "must be at least 1");
    }
    if model.circuit.max_fails == 0 {
        problems.add(at.key("circuit").key("max_fails"), "must be at least 1");
    }
    if let Some(d) = &model.prompt_decorator {
        policies::check_decorator(d, &at.key("prompt_decorator"), problems);
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
    hash_on
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
