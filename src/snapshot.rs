//! The compiled, immutable runtime view of one configuration. A request loads the current
//! snapshot once and uses it to the end, so a reload never changes a request in flight.

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::HeaderName;
use indexmap::IndexMap;

pub use crate::auth::consumer::Consumer;
use crate::auth::keys::KeyDigest;
use crate::auth::oidc::OidcVerifier;
use crate::auth::signed_user::SignedUserHeader;
use crate::config::{
    Config, ConfigError, ConfigErrors, FieldPath, Limits, Listen, LogConfig, ProviderConfig,
    ReloadConfig, route_path,
};
use crate::config::{PromptDecoratorConfig, TargetConfig};
use crate::policy::guard::PromptGuard;
use crate::policy::limits::{Limiter, RateLimits};
use crate::policy::model_set::ModelSet;
use crate::policy::pricing::{self, Price};
use crate::providers::Provider;
use crate::routing::health::TargetHealth;
use crate::routing::{HashOn, Pool, Target};

#[derive(Debug)]
pub struct Model {
    pub name: String,
    /// Its targets (one or several) and how to choose among them.
    pub pool: Pool,
    pub listed: bool,
    pub embeddings_for_all: bool,
    pub decorator: Option<PromptDecoratorConfig>,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    /// `/ollama`, or `` for the root route (so `prefix + "/v1/..."` is always the full path).
    pub prefix: String,
    pub models: ModelSet,
    pub groups: Vec<String>,
    pub default_model: Option<String>,
    /// The route's own guard, or the top-level one.
    pub guard: Option<Arc<PromptGuard>>,
    pub decorator: Option<PromptDecoratorConfig>,
    /// Request and response bodies go into this route's log records.
    pub log_payloads: bool,
}

#[derive(Debug)]
pub struct Snapshot {
    pub listen: Listen,
    pub limits: Limits,
    pub log: LogConfig,
    pub dialects: crate::config::DialectsConfig,
    /// Responses kept for `previous_response_id` (kept across reloads that do not change it).
    pub response_store: Option<Arc<crate::dialect::responses::store::ResponseStore>>,
    pub reload: ReloadConfig,
    /// When this snapshot was compiled (Unix seconds): the `created` of listed models.
    pub created: u64,
    /// Longest prefix first, so the most specific route wins.
    routes: Vec<Arc<Route>>,
    models: IndexMap<String, Arc<Model>>,
    /// Kept with their config so a reload can reuse unchanged providers (and their pools).
    providers: IndexMap<String, (ProviderConfig, Arc<Provider>)>,
    pub rate_limits: RateLimits,
    /// Whether token metrics carry an `end_user` label.
    pub metrics_end_users: bool,
    /// Health by (provider, upstream model), for reuse by the next snapshot.
    healths: HashMap<(String, String), Arc<TargetHealth>>,
    keys: HashMap<KeyDigest, Arc<Consumer>>,
    emails: HashMap<String, Arc<Consumer>>,
    custom_ids: HashMap<String, Arc<Consumer>>,
    /// Each group's models, for groups a token adds.
    group_models: HashMap<String, ModelSet>,
    /// What trusted front ends with `list_union` list: the union of their users' models.
    listings: HashMap<String, ModelSet>,
    /// Bearer tokens from an OIDC provider, when configured (kept across reloads that do not
    /// change it, with its key cache).
    pub oidc: Option<Arc<OidcVerifier>>,
    anonymous: Option<Arc<Consumer>>,
}

impl Snapshot {
    /// Reads, validates and compiles a config file: what `check`, start-up and every reload
    /// run, so that `check` accepts exactly what the gateway will run. CPU-heavy for large
    /// configs (many consumers, many guard patterns): call it off the async workers.
    pub fn load(
        path: &std::path::Path,
        previous: Option<&Snapshot>,
    ) -> Result<(Config, Self), ConfigErrors> {
        let text = crate::config::read_file(path)?;
        let file = path.display().to_string();
        let config = crate::config::load_str(&text, &file, &|name| std::env::var(name).ok())?;
        let snapshot = Self::compile(&config, previous).map_err(|e| e.located(&file, &text))?;
        Ok((config, snapshot))
    }

    /// Compiles a validated config. Providers whose config did not change since `previous`
    /// are reused, keeping their connection pools warm across reloads.
    pub fn compile(config: &Config, previous: Option<&Snapshot>) -> Result<Snapshot, ConfigErrors> {
        let mut providers = IndexMap::new();
        let mut errors = Vec::new();
        for (name, pc) in &config.providers {
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
                Err(message) => errors.push(ConfigError {
                    file: String::new(),
                    location: None,
                    path: Some(FieldPath::root().key("providers").key(name)),
                    message,
                }),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }

        // The limit store (and its counters) outlives reloads that do not change it.
        let limiter = match previous.map(|p| &p.rate_limits.limiter) {
            Some(l) if l.serves(&config.rate_limits) => l.clone(),
            _ => Arc::new(Limiter::new(&config.rate_limits).map_err(|message| {
                ConfigErrors(vec![ConfigError {
                    file: String::new(),
                    location: None,
                    path: Some(FieldPath::root().key("rate_limits")),
                    message,
                }])
            })?),
        };
        let rate_limits = RateLimits::compile(&config.rate_limits, limiter);
        let response_store = match &config.dialects.responses.store {
            None => None,
            Some(store) => match previous.and_then(|p| p.response_store.as_ref()) {
                Some(kept) if kept.serves(store) => Some(kept.clone()),
                _ => Some(Arc::new(
                    crate::dialect::responses::store::ResponseStore::new(store).map_err(
                        |message| {
                            ConfigErrors(vec![ConfigError {
                                file: String::new(),
                                location: None,
                                path: Some(
                                    FieldPath::root()
                                        .key("dialects")
                                        .key("responses")
                                        .key("store"),
                                ),
                                message,
                            }])
                        },
                    )?,
                )),
            },
        };

        // Target health outlives reloads for targets whose provider did not change.
        let mut healths: HashMap<(String, String), Arc<TargetHealth>> = HashMap::new();
        let mut models = IndexMap::new();
        for (name, mc) in &config.models {
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
                        match Provider::from_config(&tc.provider, &pc.with_connect_timeout(connect))
                        {
                            Ok(own) => Arc::new(own),
                            Err(message) => {
                                return Err(ConfigErrors(vec![ConfigError {
                                    file: String::new(),
                                    location: None,
                                    path: Some(FieldPath::root().key("models").key(name)),
                                    message,
                                }]));
                            }
                        }
                    }
                };
                let price = tc
                    .pricing
                    .map(Price::from)
                    .or_else(|| pricing::default_for(&upstream_model));
                targets.push(Arc::new(Target {
                    provider_name: tc.provider.clone(),
                    provider,
                    price,
                    upstream_model,
                    weight: tc.weight,
                    timeouts: tc.timeouts.apply(pc.timeouts()),
                    health,
                }));
            }
            let hash_on = match mc
                .hash_on
                .as_deref()
                .and_then(|h| h.strip_prefix("header:"))
            {
                Some(header) => HashOn::Header(header.trim().to_owned()),
                None => HashOn::Consumer,
            };
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
                    name: name.clone(),
                    pool,
                    listed: mc.listed,
                    embeddings_for_all: mc.embeddings_for_all,
                    decorator: mc.prompt_decorator.clone(),
                }),
            );
        }

        // A guard that cannot be compiled refuses the config: it is never silently off.
        let guard_error = |path: FieldPath, message: String| {
            ConfigErrors(vec![ConfigError {
                file: String::new(),
                location: None,
                path: Some(path),
                message: format!("the prompt guard cannot be compiled: {message}"),
            }])
        };
        let global_guard = match &config.prompt_guard {
            Some(g) => {
                Some(Arc::new(PromptGuard::compile(g).map_err(|m| {
                    guard_error(FieldPath::root().key("prompt_guard"), m)
                })?))
            }
            None => None,
        };
        let mut routes: Vec<Arc<Route>> = Vec::with_capacity(config.routes.len());
        for (name, rc) in &config.routes {
            let guard = match &rc.prompt_guard {
                Some(own) => Some(Arc::new(PromptGuard::compile(own).map_err(|m| {
                    guard_error(
                        FieldPath::root()
                            .key("routes")
                            .key(name)
                            .key("prompt_guard"),
                        m,
                    )
                })?)),
                None => global_guard.clone(),
            };
            routes.push({
                let path = route_path(name, rc.path.as_deref());
                Arc::new(Route {
                    name: name.clone(),
                    prefix: if path == "/" { String::new() } else { path },
                    models: rc
                        .models
                        .as_ref()
                        .map_or(ModelSet::All, |l| ModelSet::from_list(Some(l))),
                    groups: rc.groups.clone(),
                    default_model: rc.default_model.clone(),
                    guard,
                    decorator: rc.prompt_decorator.clone(),
                    log_payloads: rc.log_payloads.unwrap_or(config.log.payloads),
                })
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));

        let mut keys = HashMap::new();
        let mut emails = HashMap::new();
        let mut custom_ids = HashMap::new();
        let mut by_name: HashMap<&str, Arc<Consumer>> = HashMap::new();
        // Consumers with the same groups and models (most of a large config) share one set.
        let mut model_sets: HashMap<String, Arc<ModelSet>> = HashMap::new();
        for (name, cc) in &config.consumers {
            let models = model_sets
                .entry(format!("{:?}{:?}", cc.groups, cc.models))
                .or_insert_with(|| {
                    Arc::new(cc.groups.iter().fold(
                        ModelSet::from_list(cc.models.as_ref()),
                        |acc, g| {
                            acc.union(&ModelSet::from_list(
                                config.groups.get(g).and_then(|g| g.models.as_ref()),
                            ))
                        },
                    ))
                })
                .clone();
            let consumer = Arc::new(Consumer {
                name: name.clone(),
                custom_id: cc.custom_id.clone(),
                groups: cc.groups.clone(),
                models,
                user_header: cc
                    .trust_user_header
                    .as_ref()
                    .and_then(|t| t.header_name())
                    .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
                acts_for: cc
                    .trust_user_header
                    .as_ref()
                    .and_then(|t| t.acts_for())
                    .map(<[String]>::to_vec),
                signed_user: match cc
                    .trust_user_header
                    .as_ref()
                    .and_then(|t| t.options())
                    .and_then(|o| o.jwt.as_ref())
                {
                    Some(jwt) => Some(Arc::new(SignedUserHeader::new(jwt).map_err(|message| {
                        ConfigErrors(vec![ConfigError {
                            file: String::new(),
                            location: None,
                            path: Some(
                                FieldPath::root()
                                    .key("consumers")
                                    .key(name)
                                    .key("trust_user_header")
                                    .key("jwt"),
                            ),
                            message,
                        }])
                    })?)),
                    None => None,
                },
            });
            for key in &cc.keys {
                if let Ok(digest) = KeyDigest::from_config(key) {
                    keys.insert(digest, consumer.clone());
                }
            }
            for email in &cc.emails {
                emails.insert(email.trim().to_ascii_lowercase(), consumer.clone());
            }
            if let Some(id) = &cc.custom_id {
                custom_ids.insert(id.clone(), consumer.clone());
            }
            by_name.insert(name, consumer.clone());
        }

        // What a trusted front end with `list_union` lists: its own models and those of every
        // user it may act for.
        let mut listings = HashMap::new();
        for (name, cc) in &config.consumers {
            if !cc
                .trust_user_header
                .as_ref()
                .and_then(|t| t.options())
                .is_some_and(|o| o.list_union)
            {
                continue;
            }
            let Some(front) = by_name.get(name.as_str()) else {
                continue;
            };
            let union = emails
                .values()
                .filter(|user: &&Arc<Consumer>| front.may_act_for(user))
                .fold((*front.models).clone(), |acc, user| acc.union(&user.models));
            listings.insert(name.clone(), union);
        }

        Ok(Snapshot {
            listen: config.listen.clone(),
            limits: config.limits.clone(),
            log: config.log.clone(),
            dialects: config.dialects.clone(),
            response_store,
            reload: config.reload.clone(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            routes,
            models,
            providers,
            rate_limits,
            metrics_end_users: config.metrics.end_user_labels,
            healths,
            keys,
            emails,
            custom_ids,
            listings,
            group_models: config
                .groups
                .iter()
                .map(|(name, g)| (name.clone(), ModelSet::from_list(g.models.as_ref())))
                .collect(),
            oidc: config.auth.oidc.as_ref().map(|c| {
                previous
                    .and_then(|p| p.oidc.clone())
                    .filter(|v| v.config() == c)
                    .unwrap_or_else(|| OidcVerifier::start(c))
            }),
            anonymous: config
                .auth
                .oidc
                .as_ref()
                .and_then(|c| c.anonymous.as_deref())
                .and_then(|n| by_name.get(n).cloned()),
        })
    }

    /// The route serving `path`, and the rest of the path after its prefix.
    pub fn match_route<'p>(&self, path: &'p str) -> Option<(&Arc<Route>, &'p str)> {
        self.routes.iter().find_map(|route| {
            let rest = path.strip_prefix(route.prefix.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then_some((route, rest))
        })
    }

    pub fn model(&self, name: &str) -> Option<Arc<Model>> {
        self.models.get(name).cloned()
    }

    /// All models, in config order.
    pub fn models(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.models.values()
    }

    pub fn consumer_by_key(&self, digest: &KeyDigest) -> Option<Arc<Consumer>> {
        self.keys.get(digest).cloned()
    }

    pub fn consumer_by_custom_id(&self, id: &str) -> Option<Arc<Consumer>> {
        self.custom_ids.get(id).cloned()
    }

    /// The consumer valid tokens of unknown users map to, if any.
    pub fn anonymous_consumer(&self) -> Option<Arc<Consumer>> {
        self.anonymous.clone()
    }

    /// `consumer` with the memberships a token adds (groups the config knows), and their models.
    pub fn with_token_groups(&self, consumer: Arc<Consumer>, groups: &[String]) -> Arc<Consumer> {
        let added: Vec<&String> = groups
            .iter()
            .filter(|g| self.group_models.contains_key(*g) && !consumer.groups.contains(g))
            .collect();
        if added.is_empty() {
            return consumer;
        }
        let models = Arc::new(added.iter().fold((*consumer.models).clone(), |acc, g| {
            acc.union(&self.group_models[*g])
        }));
        Arc::new(Consumer {
            name: consumer.name.clone(),
            custom_id: consumer.custom_id.clone(),
            groups: consumer
                .groups
                .iter()
                .cloned()
                .chain(added.into_iter().cloned())
                .collect(),
            models,
            user_header: consumer.user_header.clone(),
            acts_for: consumer.acts_for.clone(),
            signed_user: consumer.signed_user.clone(),
        })
    }

    /// `email` must already be trimmed and lower-cased.
    /// The models `/v1/models` lists for a caller whose key belongs to `consumer`, when that
    /// is a trusted front end listing the union of its users' models.
    pub fn union_listing(&self, consumer: &str) -> Option<&ModelSet> {
        self.listings.get(consumer)
    }

    pub fn consumer_by_email(&self, email: &str) -> Option<Arc<Consumer>> {
        self.emails.get(email).cloned()
    }

    pub fn provider(&self, name: &str) -> Option<&Arc<Provider>> {
        self.providers.get(name).map(|(_, p)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(text: &str) -> Snapshot {
        let config = crate::config::load_str(text, "t.yaml", &|_| None).unwrap();
        Snapshot::compile(&config, None).unwrap()
    }

    #[test]
    fn most_specific_route_wins_and_root_catches_the_rest() {
        let s = compile("routes:\n  root: {path: /}\n  ai: {}\n  ai-x: {path: /ai/x}\n");
        assert_eq!(
            s.match_route("/ai/v1/models")
                .map(|(r, rest)| (r.name.as_str(), rest)),
            Some(("ai", "/v1/models"))
        );
        assert_eq!(
            s.match_route("/ai/x/v1/models")
                .map(|(r, _)| r.name.as_str()),
            Some("ai-x")
        );
        assert_eq!(
            s.match_route("/aix/v1/models")
                .map(|(r, rest)| (r.name.as_str(), rest)),
            Some(("root", "/aix/v1/models"))
        );
        assert_eq!(
            s.match_route("/v1/models").map(|(r, _)| r.name.as_str()),
            Some("root")
        );
    }

    #[test]
    fn unchanged_providers_are_reused_on_reload() {
        let text = "providers:\n  a: {type: mock}\n  b: {type: mock}\n";
        let first = compile(text);
        let config = crate::config::load_str(
            "providers:\n  a: {type: mock}\n  b: {type: mock, embedding_dimensions: 4}\n",
            "t.yaml",
            &|_| None,
        )
        .unwrap();
        let second = Snapshot::compile(&config, Some(&first)).unwrap();
        assert!(Arc::ptr_eq(
            first.provider("a").unwrap(),
            second.provider("a").unwrap()
        ));
        assert!(!Arc::ptr_eq(
            first.provider("b").unwrap(),
            second.provider("b").unwrap()
        ));
    }

    #[test]
    fn consumer_models_are_the_union_of_groups_and_own() {
        let s = compile(
            "providers: {p: {type: mock}}\nmodels: {a: {provider: p}, b: {provider: p}, c: {provider: p}}\n\
             groups: {g: {models: [a]}}\nconsumers: {u: {keys: [key-12345678], groups: [g], models: [b]}}\n",
        );
        let u = s.consumer_by_key(&KeyDigest::of("key-12345678")).unwrap();
        assert!(u.models.contains("a") && u.models.contains("b") && !u.models.contains("c"));
    }
}
