//! From a config to a snapshot in one pass: each section is checked and built together, every
//! problem collected (not just the first) as a located, typed error, and nothing is dropped
//! quietly. `tollgate check`, start-up and every reload run exactly this.

mod consumers;
mod models;
mod policies;
mod providers;
mod routes;

use super::Snapshot;
use crate::config::locate::Locator;
use crate::config::{Config, ConfigError, ConfigErrors, FieldPath, ModelList};
use crate::policy::model_set::ModelSet;
use crate::store::{StoreContents, Touched};
pub(super) use policies::check_limits;

/// More proxy threads than this is a typo, not a machine.
const MAX_PROXY_THREADS: usize = 1024;

/// Where a config came from, so that each problem is reported where it can be mended.
pub enum Origin<'a> {
    /// A YAML file: its name and text (problems point at their line).
    File { name: &'a str, text: &'a str },
    /// A config made in code (tests, embedding): problems name their field only.
    Unnamed,
}

/// The problems found so far, each located as it is found.
pub(super) struct Problems<'t> {
    file: String,
    locator: Option<Locator<'t>>,
    errors: Vec<ConfigError>,
}

impl<'t> Problems<'t> {
    fn new(origin: &Origin<'t>) -> Self {
        match origin {
            Origin::File { name, text } => Self {
                file: (*name).to_owned(),
                locator: Some(Locator::new(text)),
                errors: Vec::new(),
            },
            Origin::Unnamed => Self {
                file: String::new(),
                locator: None,
                errors: Vec::new(),
            },
        }
    }

    pub(super) fn add(&mut self, path: FieldPath, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            location: self.locator.as_ref().and_then(|l| l.find(&path)),
            path: Some(path),
            message: message.into(),
        });
    }

    /// Runs `f` with problems reported against the store (`store: <path>`, no line).
    pub(super) fn in_store(&mut self, f: impl FnOnce(&mut Problems<'t>)) {
        let file = std::mem::replace(&mut self.file, "store".into());
        let locator = self.locator.take();
        f(self);
        self.file = file;
        self.locator = locator;
    }

    /// How many problems were found so far (a section compares before and after).
    pub(super) fn count(&self) -> usize {
        self.errors.len()
    }

    fn into_result<T>(
        self,
        value: impl FnOnce() -> Result<T, Problems<'t>>,
    ) -> Result<T, ConfigErrors> {
        if !self.errors.is_empty() {
            return Err(ConfigErrors(self.errors));
        }
        value().map_err(|p| ConfigErrors(p.errors))
    }
}

impl Snapshot {
    /// Checks and compiles `config`. Providers whose config did not change since `previous`
    /// are reused (their connection pools stay warm), and so are target health, the limit
    /// store, the response store and the OIDC key cache where their config is unchanged.
    pub fn compile(config: &Config, previous: Option<&Snapshot>) -> Result<Snapshot, ConfigErrors> {
        Self::compile_from(config, previous, &Origin::Unnamed)
    }

    /// [`Self::compile`], with problems located in `origin`.
    pub fn compile_from(
        config: &Config,
        previous: Option<&Snapshot>,
        origin: &Origin<'_>,
    ) -> Result<Snapshot, ConfigErrors> {
        Self::compile_with_store(config, &StoreContents::default(), previous, origin)
    }

    /// Compiles the config file's `config` together with the store's `store` contents.
    pub fn compile_with_store(
        config: &Config,
        store: &StoreContents,
        previous: Option<&Snapshot>,
        origin: &Origin<'_>,
    ) -> Result<Snapshot, ConfigErrors> {
        let mut problems = Problems::new(origin);
        let root = FieldPath::root();

        // Sections without side effects first, each checked as it is built.
        let providers = providers::compile(config, previous, &root.key("providers"), &mut problems);
        let (models, healths) = models::compile(config, &providers, previous, &mut problems);
        let routes = routes::compile(config, &mut problems);
        for (name, group) in &config.groups {
            check_model_list(
                config,
                group.models.as_ref(),
                &root.key("groups").key(name).key("models"),
                &mut problems,
            );
        }
        let consumers = consumers::compile(
            config,
            store,
            previous,
            &root.key("consumers"),
            &mut problems,
        );
        policies::check_rate_limits(config, &root.key("rate_limits"), &mut problems);
        let admin = admin_access(config, &root.key("admin"), &mut problems);
        if let Some(oidc) = &config.auth.oidc {
            policies::check_oidc(config, oidc, &root.key("auth").key("oidc"), &mut problems);
        }
        if config
            .listen
            .proxy_threads
            .is_some_and(|n| n.get() > MAX_PROXY_THREADS)
        {
            problems.add(
                root.key("listen").key("proxy_threads"),
                format!("at most {MAX_PROXY_THREADS} (one per core is the default)"),
            );
        }
        // The certificate and key are read here too, so `check` refuses what would not serve.
        if let Some(tls) = config.listen.tls()
            && let Err(e) = crate::server::tls::server_config(tls)
        {
            problems.add(root.key("listen").key("tls").key(e.field), e.message);
        }

        // Then what starts connections or tasks, only for a config that is otherwise sound: a
        // refused config leaves nothing running.
        problems.into_result(|| {
            let mut problems = Problems::new(origin);
            let stores = policies::compile_stores(config, previous, &mut problems);
            let Some((rate_limits, response_store)) = stores else {
                return Err(problems);
            };
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
                listings: consumers.listings,
                keys: consumers.keys,
                managed_keys: consumers.managed_keys,
                store_revision: store.revision,
                emails: consumers.emails,
                custom_ids: consumers.custom_ids,
                client_certs: client_certs(config, &root.key("consumers"), &mut problems),
                group_models: config
                    .groups
                    .iter()
                    .map(|(name, g)| (name.clone(), ModelSet::from_list(g.models.as_ref())))
                    .collect(),
                oidc: config.auth.oidc.as_ref().map(|c| {
                    previous
                        .and_then(|p| p.oidc.clone())
                        .filter(|v| v.config() == c)
                        .unwrap_or_else(|| crate::auth::oidc::OidcVerifier::start(c))
                }),
                anonymous: config
                    .auth
                    .oidc
                    .as_ref()
                    .and_then(|c| c.anonymous.as_deref())
                    .and_then(|n| consumers.by_name.get(n).cloned()),
                consumer_names: consumers.by_name,
                admin,
            })
        })
    }
}

impl Snapshot {
    /// `current` with a store change taken in: only the touched records are checked and
    /// rebuilt (see [`consumers::update`]); the file's part is shared as it is. `old` holds
    /// the touched records as they were, `store` the contents after the change.
    pub fn with_store_change(
        current: &Snapshot,
        config: &Config,
        store: &StoreContents,
        old: &StoreContents,
        touched: &Touched,
    ) -> Result<Snapshot, ConfigErrors> {
        let mut next = current.clone();
        let mut built = consumers::Consumers {
            keys: std::mem::take(&mut next.keys),
            managed_keys: std::mem::take(&mut next.managed_keys),
            emails: std::mem::take(&mut next.emails),
            custom_ids: std::mem::take(&mut next.custom_ids),
            by_name: std::mem::take(&mut next.consumer_names),
            listings: std::mem::take(&mut next.listings),
        };
        let mut problems = Problems::new(&Origin::Unnamed);
        consumers::update(
            &mut built,
            config,
            store,
            old,
            touched,
            current,
            &mut problems,
        );
        if !problems.errors.is_empty() {
            return Err(ConfigErrors(problems.errors));
        }
        next.anonymous = config
            .auth
            .oidc
            .as_ref()
            .and_then(|c| c.anonymous.as_deref())
            .and_then(|n| built.by_name.get(n).cloned());
        next.keys = built.keys;
        next.managed_keys = built.managed_keys;
        next.emails = built.emails;
        next.custom_ids = built.custom_ids;
        next.consumer_names = built.by_name;
        next.listings = built.listings;
        next.store_revision = store.revision;
        Ok(next)
    }
}

/// Client certificate names → consumer; a name may stand for one consumer only.
fn client_certs(
    config: &Config,
    at: &FieldPath,
    problems: &mut Problems,
) -> std::collections::HashMap<String, String> {
    let mut names = std::collections::HashMap::new();
    for (consumer, cc) in &config.consumers {
        for (i, name) in cc.client_certs.iter().enumerate() {
            if let Some(other) = names.insert(name.clone(), consumer.clone()) {
                problems.add(
                    at.key(consumer).key("client_certs").index(i),
                    format!("{name:?} already stands for consumer {other:?}"),
                );
            }
        }
    }
    if !names.is_empty()
        && config
            .listen
            .tls
            .as_ref()
            .is_none_or(|t| t.client_ca.is_none())
    {
        problems.add(
            FieldPath::root().key("listen").key("tls").key("client_ca"),
            "consumers name client certificates: set listen.tls.client_ca to verify them",
        );
    }
    names
}

/// The admin tokens, hashed (a clear token is hashed here and never kept).
fn admin_access(config: &Config, at: &FieldPath, problems: &mut Problems) -> super::AdminAccess {
    let mut tokens = std::collections::HashMap::new();
    for (name, token) in &config.admin.tokens {
        match crate::auth::keys::KeyDigest::from_config(token) {
            Ok(digest) => {
                tokens.insert(digest, name.clone());
            }
            Err(e) => problems.add(at.key("tokens").key(name), e),
        }
    }
    if config.admin.oidc_group.is_some() && config.auth.oidc.is_none() {
        problems.add(at.key("oidc_group"), "needs auth.oidc");
    }
    if config.listen.admin.is_some() && tokens.is_empty() && config.admin.oidc_group.is_none() {
        problems.add(
            at.key("tokens"),
            "listen.admin is set but no admin token (or oidc_group) can sign in",
        );
    }
    if let Some(sign_in) = &config.admin.console_sign_in {
        let at = at.key("console_sign_in");
        if config.admin.oidc_group.is_none() {
            problems.add(
                at.clone(),
                "needs admin.oidc_group (who among the provider's users is an admin)",
            );
        }
        if sign_in.client_id.trim().is_empty() {
            problems.add(at.key("client_id"), "must not be empty");
        }
        if let Some(uri) = &sign_in.redirect_uri {
            let fine = url::Url::parse(uri).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https") && u.path() == crate::admin::CALLBACK_PATH
            });
            if !fine {
                problems.add(
                    at.key("redirect_uri"),
                    format!(
                        "must be an http(s) URL of the admin listener ending in {}",
                        crate::admin::CALLBACK_PATH
                    ),
                );
            }
        }
    }
    super::AdminAccess {
        tokens,
        oidc_group: config.admin.oidc_group.clone(),
        console_sign_in: config.admin.console_sign_in.clone(),
        max_body: config.admin.max_body.as_u64(),
    }
}

/// What is wrong with a list of limits (a budget sent to the admin API), each as
/// `<field>[i]...: message`, by the same rules as the config's.
pub fn limit_problems(field: &str, limits: &[crate::config::LimitConfig]) -> Vec<String> {
    let mut problems = Problems::new(&Origin::Unnamed);
    check_limits(limits, &FieldPath::root().key(field), &mut problems);
    problems
        .errors
        .into_iter()
        .map(|e| match e.path {
            Some(path) => format!("{path}: {}", e.message),
            None => e.message,
        })
        .collect()
}

/// A list of models names only models the config defines.
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

/// Each group a list names exists.
fn check_groups(config: &Config, groups: &[String], at: &FieldPath, problems: &mut Problems) {
    for (i, group) in groups.iter().enumerate() {
        if !config.groups.contains_key(group) {
            problems.add(
                at.index(i),
                format!("unknown group {group:?}{}", known(config.groups.keys())),
            );
        }
    }
}

/// ` (known: "a", "b")`, for an error about an unknown name.
fn known<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<_> = names.map(|n| format!("{n:?}")).collect();
    if names.is_empty() {
        " (none are defined)".into()
    } else {
        format!(" (known: {})", names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile_text(text: &str) -> Result<Snapshot, ConfigErrors> {
        let config = crate::config::load_str(text, "t.yaml", &|_| None).unwrap();
        Snapshot::compile_from(
            &config,
            None,
            &Origin::File {
                name: "t.yaml",
                text,
            },
        )
    }

    fn shown(errors: ConfigErrors) -> Vec<String> {
        errors.0.iter().map(|e| e.to_string()).collect()
    }

    /// The console's OIDC sign-in needs an admin group and a callback address on the admin
    /// listener's callback path.
    #[test]
    fn console_sign_in_is_checked() {
        let text = "\
admin:
  tokens: {ops: some-admin-token}
  console_sign_in:
    client_id: console
    redirect_uri: https://admin.example/elsewhere
providers: {p: {type: mock}}
";
        let Err(errors) = compile_text(text) else {
            panic!("accepted")
        };
        let shown = shown(errors);
        assert_eq!(shown.len(), 2, "{shown:#?}");
        assert!(shown[0].contains("needs admin.oidc_group"), "{shown:#?}");
        assert!(
            shown[1].starts_with("t.yaml:5:") && shown[1].contains("/console/oidc/callback"),
            "{shown:#?}"
        );
    }

    #[test]
    fn every_semantic_problem_is_reported_with_its_line() {
        let text = "\
providers:
  p: {type: mock}
models:
  a: {provider: nope}
routes:
  r:
    models: [a, ghost]
    groups: [nobody]
consumers:
  c:
    keys: [\"sha256:xyz\"]
";
        let Err(errors) = compile_text(text) else {
            panic!("accepted")
        };
        let shown = shown(errors);
        assert_eq!(shown.len(), 4, "{shown:#?}");
        assert!(
            shown[0].starts_with("t.yaml:4:") && shown[0].contains("models.a.provider"),
            "{shown:#?}"
        );
        assert!(
            shown[1].starts_with("t.yaml:7:") && shown[1].contains("routes.r.models[1]"),
            "{shown:#?}"
        );
        assert!(
            shown[2].starts_with("t.yaml:8:") && shown[2].contains("unknown group"),
            "{shown:#?}"
        );
        assert!(
            shown[3].starts_with("t.yaml:11:") && shown[3].contains("consumers.c.keys[0]"),
            "{shown:#?}"
        );
    }

    /// What only building finds (a key a header cannot carry, a guard that is no regular
    /// expression) is reported together with what a look at the references finds, each at
    /// its line: one pass, nothing dropped.
    #[test]
    fn problems_found_while_building_come_with_the_rest() {
        let text = "\
providers:
  p: {type: openai, base_url: \"http://h/v1\", api_key: \"sk-\\u0007bell\"}
routes:
  r: {models: [ghost]}
prompt_guard: {deny: ['(unclosed']}
";
        let Err(errors) = compile_text(text) else {
            panic!("accepted")
        };
        let shown = shown(errors);
        assert_eq!(shown.len(), 3, "{shown:#?}");
        assert!(
            shown[0].starts_with("t.yaml:2:") && shown[0].contains("providers.p"),
            "{shown:#?}"
        );
        assert!(
            !shown[0].contains("bell"),
            "the key is not echoed: {shown:#?}"
        );
        assert!(
            shown[1].starts_with("t.yaml:5:") && shown[1].contains("prompt_guard.deny[0]"),
            "{shown:#?}"
        );
        assert!(
            shown[2].starts_with("t.yaml:4:") && shown[2].contains("routes.r.models[0]"),
            "{shown:#?}"
        );
    }

    fn stored_consumer(
        name: &str,
        groups: &[&str],
        email: Option<&str>,
    ) -> crate::store::ConsumerRecord {
        crate::store::ConsumerRecord {
            name: name.into(),
            spec: crate::store::ConsumerSpec {
                groups: groups.iter().map(|g| g.to_string()).collect(),
                emails: email.into_iter().map(String::from).collect(),
                custom_id: email.map(|_| format!("id-{name}")),
                ..Default::default()
            },
            created_at: 0,
            updated_at: 0,
        }
    }

    fn stored_key(id: &str, consumer: &str, secret: &str) -> crate::store::KeyRecord {
        crate::store::KeyRecord {
            id: id.into(),
            consumer: consumer.into(),
            name: None,
            prefix: String::new(),
            digest: crate::auth::keys::KeyDigest::of(secret).to_hex(),
            previous_digest: None,
            previous_until: None,
            spec: Default::default(),
            created_at: 0,
            rotated_at: None,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        }
    }

    /// A store record that does not compile is reported like a file's problem, but by the
    /// record's name or id (no line), and the whole snapshot is refused.
    #[test]
    fn store_records_are_checked_and_reported_by_id() {
        use crate::store::StoreContents;
        let text = "providers: {p: {type: mock}}\nmodels: {a: {provider: p}}\ngroups: {g: {models: [a]}}\n\
                    consumers: {filer: {keys: [file-key-123]}}\n";
        let config = crate::config::load_str(text, "t.yaml", &|_| None).unwrap();
        let consumer = |name: &str, groups: &[&str]| stored_consumer(name, groups, None);
        let key = |id: &str, consumer: &str, secret: &str, models: Option<Vec<String>>| {
            let mut k = stored_key(id, consumer, secret);
            k.spec.models = models;
            k
        };
        let mut store = StoreContents::default();
        for c in [
            consumer("filer", &[]),
            consumer("ok", &["g"]),
            consumer("bad", &["nope"]),
        ] {
            store.consumers.insert(c.name.clone(), c);
        }
        for k in [
            key("key_1", "ok", "store-key-1", Some(vec!["a".into()])),
            key("key_2", "ok", "file-key-123", None),
            key("key_3", "ghost", "store-key-3", None),
        ] {
            store.keys.insert(k.id.clone(), k);
        }
        let origin = Origin::File {
            name: "t.yaml",
            text,
        };
        let Err(errors) = Snapshot::compile_with_store(&config, &store, None, &origin) else {
            panic!("accepted")
        };
        let mut shown = shown(errors);
        shown.sort();
        assert_eq!(
            shown,
            [
                "store: consumers.bad.groups[0]: unknown group \"nope\" (known: \"g\")",
                "store: consumers.filer: the config file has a consumer of this name",
                "store: keys.key_2: this key is already given to consumer \"filer\"",
                "store: keys.key_3.consumer: no consumer \"ghost\" in the store",
            ]
        );
        // Without the bad records it compiles, and the stored key works.
        store.consumers.remove("bad");
        store.consumers.remove("filer");
        store.keys.retain(|id, _| id == "key_1");
        let snapshot = Snapshot::compile_with_store(&config, &store, None, &origin).unwrap();
        let entry = snapshot
            .key_entry(&crate::auth::keys::KeyDigest::of("store-key-1"))
            .unwrap();
        assert_eq!(&*entry.consumer.name, "ok");
        assert!(entry.consumer.models.contains("a") && entry.managed.is_some());
    }

    /// A store change taken into the current snapshot gives exactly what compiling
    /// everything again gives: the same keys (to the same consumers, standing and stored
    /// key), emails and custom ids.
    #[test]
    fn a_store_change_taken_in_equals_a_full_compile() {
        use crate::store::{Changes, StoreContents};
        let text = "providers: {p: {type: mock}}\nmodels: {a: {provider: p}, b: {provider: p}}\n\
                    groups: {g: {models: [a]}, h: {models: [b]}}\nconsumers: {filer: {keys: [file-key-123]}}\n";
        let config = crate::config::load_str(text, "t.yaml", &|_| None).unwrap();
        let consumer =
            |name: &str, groups: &[&str], email: &str| stored_consumer(name, groups, Some(email));
        let key = stored_key;
        let mut store = StoreContents::default();
        store.apply(Changes {
            head: 1,
            consumers: vec![
                consumer("a", &["g"], "a@x.io"),
                consumer("b", &["g"], "b@x.io"),
            ],
            keys: vec![
                key("k1", "a", "secret-a-1"),
                key("k2", "a", "secret-a-2"),
                key("k3", "b", "secret-b-1"),
            ],
            ..Changes::default()
        });
        let origin = Origin::Unnamed;
        let current = Snapshot::compile_with_store(&config, &store, None, &origin).unwrap();

        // a moves to group h, b is deleted (its key with it), k2 is rotated, k4 is new.
        let mut rotated = key("k2", "a", "secret-a-2-new");
        rotated.previous_digest = Some(crate::auth::keys::KeyDigest::of("secret-a-2").to_hex());
        rotated.previous_until = Some(i64::MAX);
        let changes = Changes {
            head: 2,
            consumers: vec![consumer("a", &["h"], "a2@x.io")],
            deleted_consumers: vec!["b".into()],
            keys: vec![rotated, key("k4", "a", "secret-a-4")],
            deleted_keys: vec!["k3".into()],
        };
        let touched = changes.touched();
        let old = store.subset(&touched);
        store.apply(changes);
        let taken_in =
            Snapshot::with_store_change(&current, &config, &store, &old, &touched).unwrap();
        let full = Snapshot::compile_with_store(&config, &store, None, &origin).unwrap();

        let keys = |s: &Snapshot| {
            let mut v: Vec<String> = s
                .keys
                .iter()
                .map(|(d, e)| {
                    format!(
                        "{}={} {:?} {:?} {:?}",
                        d.to_hex(),
                        e.consumer.name,
                        e.consumer.groups,
                        e.standing,
                        e.managed.as_ref().map(|m| m.id.clone())
                    )
                })
                .collect();
            v.sort();
            v
        };
        let names = |m: &std::collections::HashMap<
            String,
            std::sync::Arc<crate::auth::consumer::Consumer>,
        >| {
            let mut v: Vec<String> = m.iter().map(|(k, c)| format!("{k}={}", c.name)).collect();
            v.sort();
            v
        };
        assert_eq!(keys(&taken_in), keys(&full));
        assert_eq!(taken_in.keys.len(), 5, "filer, k1, k2 (two secrets), k4");
        assert_eq!(names(&taken_in.emails), names(&full.emails));
        assert_eq!(names(&taken_in.custom_ids), names(&full.custom_ids));
        assert_eq!(names(&taken_in.consumer_names), names(&full.consumer_names));
        assert!(taken_in.consumer_by_email("a@x.io").is_none());
        assert!(
            taken_in
                .key_entry(&crate::auth::keys::KeyDigest::of("secret-b-1"))
                .is_none()
        );
    }
}
