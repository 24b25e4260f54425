//! The compiled, immutable runtime view of one configuration. A request loads the current
//! snapshot once and uses it to the end, so a reload never changes a request in flight.

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexMap;

mod compile;

pub use crate::auth::consumer::Consumer;
use crate::auth::keys::{KeyDigest, KeyEntry, ManagedKey};
use crate::auth::oidc::OidcVerifier;
use crate::config::{
    Config, ConfigErrors, Limits, Listen, LogConfig, PromptDecoratorConfig, ProviderConfig,
    ReloadConfig,
};
use crate::fast_hash::{FastHashMap, FastIndexMap};
use crate::policy::guard::PromptGuard;
use crate::policy::limits::RateLimits;
use crate::policy::model_set::ModelSet;
use crate::providers::Provider;
use crate::routing::Pool;
use crate::routing::health::TargetHealth;
pub use compile::{Origin, limit_problems};

/// A config file as read: parsed, with its name and text (to locate problems in it).
#[derive(Debug)]
pub struct ConfigSource {
    pub config: Config,
    pub name: String,
    pub text: String,
}

impl ConfigSource {
    pub fn read(path: &std::path::Path) -> Result<Self, ConfigErrors> {
        let text = crate::config::read_file(path)?;
        let name = path.display().to_string();
        let config = crate::config::load_str(&text, &name, &|var| std::env::var(var).ok())?;
        Ok(Self { config, name, text })
    }

    pub fn origin(&self) -> Origin<'_> {
        Origin::File {
            name: &self.name,
            text: &self.text,
        }
    }
}

#[derive(Debug)]
pub struct Model {
    /// Shared with every request record that names it (a count, not a copy).
    pub name: Arc<str>,
    /// Its targets (one or several) and how to choose among them.
    pub pool: Pool,
    pub listed: bool,
    pub embeddings_for_all: bool,
    pub decorator: Option<PromptDecoratorConfig>,
}

#[derive(Debug)]
pub struct Route {
    /// Shared with every request record that names it (a count, not a copy).
    pub name: Arc<str>,
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

#[derive(Debug, Clone)]
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
    models: FastIndexMap<String, Arc<Model>>,
    /// Kept with their config so a reload can reuse unchanged providers (and their pools).
    providers: IndexMap<String, (ProviderConfig, Arc<Provider>)>,
    pub rate_limits: RateLimits,
    /// Whether token metrics carry an `end_user` label.
    pub metrics_end_users: bool,
    /// Health by (provider, upstream model), for reuse by the next snapshot.
    healths: HashMap<(String, String), Arc<TargetHealth>>,
    keys: FastHashMap<KeyDigest, KeyEntry>,
    /// The store's keys by id.
    managed_keys: HashMap<String, Arc<ManagedKey>>,
    /// The store revision compiled in (0 without a store).
    pub store_revision: i64,
    emails: HashMap<String, Arc<Consumer>>,
    custom_ids: HashMap<String, Arc<Consumer>>,
    /// Client certificate names (subject CN or a SAN) → the file consumer they stand for.
    client_certs: HashMap<String, String>,
    consumer_names: HashMap<String, Arc<Consumer>>,
    /// Each group's models, for groups a token adds.
    group_models: HashMap<String, ModelSet>,
    /// What trusted front ends with `list_union` list: the union of their users' models.
    listings: HashMap<String, ModelSet>,
    /// Bearer tokens from an OIDC provider, when configured (kept across reloads that do not
    /// change it, with its key cache).
    pub oidc: Option<Arc<OidcVerifier>>,
    anonymous: Option<Arc<Consumer>>,
    /// Who may use the admin API.
    pub admin: AdminAccess,
}

/// The admin API's credentials: hashed tokens by digest (with their names, for the audit
/// log), and the OIDC group whose members are admins.
#[derive(Debug, Default, Clone)]
pub struct AdminAccess {
    pub tokens: HashMap<KeyDigest, String>,
    pub oidc_group: Option<String>,
    /// The console's browser sign-in through the OIDC provider.
    pub console_sign_in: Option<crate::config::ConsoleSignInConfig>,
    pub max_body: u64,
}

impl Snapshot {
    /// Reads, checks and compiles a config file: what `check`, start-up and every reload run,
    /// so that `check` accepts exactly what the gateway will run. CPU-heavy for large configs
    /// (many consumers, many guard patterns): call it off the async workers.
    pub fn load(
        path: &std::path::Path,
        previous: Option<&Snapshot>,
    ) -> Result<(Config, Self), ConfigErrors> {
        let source = ConfigSource::read(path)?;
        let snapshot = Self::compile_from(&source.config, previous, &source.origin())?;
        Ok((source.config, snapshot))
    }

    /// The route serving `path`, and the rest of the path after its prefix.
    pub fn match_route<'p>(&self, path: &'p str) -> Option<(&Arc<Route>, &'p str)> {
        self.routes.iter().find_map(|route| {
            let rest = path.strip_prefix(route.prefix.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then_some((route, rest))
        })
    }

    /// The URL prefix of the route of this name.
    pub fn route_prefix(&self, name: &str) -> Option<String> {
        self.routes
            .iter()
            .find(|r| *r.name == *name)
            .map(|r| r.prefix.clone())
    }

    /// The prefix of the first route by name (the playground's default).
    pub fn first_route_prefix(&self) -> Option<String> {
        self.routes
            .iter()
            .min_by(|a, b| a.name.cmp(&b.name))
            .map(|r| r.prefix.clone())
    }

    /// Route names, in name order.
    pub fn route_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.routes.iter().map(|r| r.name.to_string()).collect();
        names.sort();
        names
    }

    pub fn model(&self, name: &str) -> Option<Arc<Model>> {
        self.models.get(name).cloned()
    }

    /// All models, in config order.
    pub fn models(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.models.values()
    }

    pub fn key_entry(&self, digest: &KeyDigest) -> Option<&KeyEntry> {
        self.keys.get(digest)
    }

    /// A key from the store, by its id.
    pub fn managed_key(&self, id: &str) -> Option<&Arc<ManagedKey>> {
        self.managed_keys.get(id)
    }

    /// The store's keys.
    pub fn managed_keys(&self) -> impl Iterator<Item = &Arc<ManagedKey>> {
        self.managed_keys.values()
    }

    pub fn consumer_by_name(&self, name: &str) -> Option<&Arc<Consumer>> {
        self.consumer_names.get(name)
    }

    /// Every consumer, file and store, in no order.
    pub fn consumers(&self) -> impl Iterator<Item = &Arc<Consumer>> {
        self.consumer_names.values()
    }

    /// Group names, in name order.
    pub fn group_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.group_models.keys().cloned().collect();
        names.sort();
        names
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.group_models.contains_key(group)
    }

    /// The consumer one of a client certificate's names stands for.
    pub fn consumer_by_certificate<'n>(
        &self,
        names: impl IntoIterator<Item = &'n String>,
    ) -> Option<Arc<Consumer>> {
        names
            .into_iter()
            .find_map(|n| self.client_certs.get(n))
            .and_then(|consumer| self.consumer_names.get(consumer).cloned())
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
            budgets: consumer.budgets.clone(),
            from_store: consumer.from_store,
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
                .map(|(r, rest)| (&*r.name, rest)),
            Some(("ai", "/v1/models"))
        );
        assert_eq!(
            s.match_route("/ai/x/v1/models").map(|(r, _)| &*r.name),
            Some("ai-x")
        );
        assert_eq!(
            s.match_route("/aix/v1/models")
                .map(|(r, rest)| (&*r.name, rest)),
            Some(("root", "/aix/v1/models"))
        );
        assert_eq!(
            s.match_route("/v1/models").map(|(r, _)| &*r.name),
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
        let u = &s
            .key_entry(&KeyDigest::of("key-12345678"))
            .unwrap()
            .consumer;
        assert!(u.models.contains("a") && u.models.contains("b") && !u.models.contains("c"));
    }
}
