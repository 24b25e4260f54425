//! Kong → Tollgate: decK declarative files (`_format_version`) and Kong Ingress Controller
//! manifests (`KongPlugin`, `KongClusterPlugin`, `KongConsumer`, credential `Secret`s,
//! `Ingress`/`HTTPRoute`/`Service` with `konghq.com/plugins`), read into one model of routes,
//! plugins and consumers, then translated.
//!
//! Kong's access model is routes guarded by ACL groups; a consumer may use every model of
//! every route it may enter. Tollgate's is per-consumer model lists, so each consumer gets the
//! models of the routes its groups open (and the routes stay guarded by the same groups).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{Map, Value, json};

use super::{ImportError, Imported, Report, client_key, read_documents, seconds, unique_name};

/// The decK format versions this reads.
const FORMAT_VERSIONS: [&str; 3] = ["1.1", "2.1", "3.0"];

#[derive(Debug, Clone)]
struct Plugin {
    name: String,
    config: Value,
    /// Where it stands in the source, for the report.
    at: String,
}

#[derive(Debug, Default)]
struct Route {
    name: String,
    paths: Vec<String>,
    /// The service's URL, for routes that proxy to it.
    upstream: Option<String>,
    /// Route's own plugins first, then the service's (a route's plugin wins).
    plugins: Vec<Plugin>,
    at: String,
}

#[derive(Debug, Default)]
struct Consumer {
    username: String,
    custom_id: Option<String>,
    /// `(key, where)`.
    keys: Vec<(String, String)>,
    groups: Vec<String>,
    plugins: Vec<Plugin>,
    at: String,
}

/// A Kubernetes route's backend: namespace, service, port.
type Backend = (String, String, Option<u64>);

/// What was read from every file.
#[derive(Default)]
struct Kong {
    routes: Vec<Route>,
    consumers: Vec<Consumer>,
    global: Vec<Plugin>,
    report: Report,
    // Kubernetes objects, resolved once every file is read.
    kic_plugins: HashMap<String, Plugin>,
    kic_secrets: HashMap<String, (Map<String, Value>, String)>,
    kic_services: HashMap<String, Value>,
    /// Routes with their plugin names and backend (namespace, service, port).
    kic_routes: Vec<(Route, Vec<String>, Option<Backend>)>,
    kic_consumers: Vec<(Consumer, Vec<String>, Vec<String>)>,
}

pub fn import(files: &[PathBuf]) -> Result<Imported, ImportError> {
    let mut kong = Kong::default();
    for file in files {
        let name = file.display().to_string();
        let documents = read_documents(file)?;
        if documents.is_empty() {
            return Err(ImportError::new(file, "the file holds no document"));
        }
        for (i, doc) in documents.iter().enumerate() {
            let at = if documents.len() > 1 {
                format!("{name}#{}", i + 1)
            } else {
                name.clone()
            };
            if doc.get("kind").is_some() && doc.get("apiVersion").is_some() {
                read_manifest(doc, &at, &mut kong);
            } else if doc.get("_format_version").is_some()
                || doc.get("services").is_some()
                || doc.get("consumers").is_some()
            {
                read_deck(file, doc, &at, &mut kong)?;
            } else if doc.get("model_list").is_some() {
                return Err(ImportError::new(
                    file,
                    "this is a LiteLLM config: use `tollgate import litellm`",
                ));
            } else {
                return Err(ImportError::new(
                    file,
                    format!(
                        "document {} is neither a decK file (_format_version, services, consumers) nor a Kubernetes manifest (apiVersion, kind)",
                        i + 1
                    ),
                ));
            }
        }
    }
    resolve_kubernetes(&mut kong);
    if kong.routes.is_empty() && kong.consumers.is_empty() {
        return Err(ImportError {
            file: files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            location: None,
            message: "no Kong routes or consumers were found".into(),
        });
    }
    Ok(translate(kong))
}

// ---- decK ---------------------------------------------------------------------------------

fn read_deck(file: &Path, doc: &Value, at: &str, kong: &mut Kong) -> Result<(), ImportError> {
    if let Some(version) = doc.get("_format_version") {
        let version = version
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| version.to_string());
        if !FORMAT_VERSIONS.contains(&version.as_str()) {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with("_format_version"))
                .map(|l| (l + 1, 1));
            return Err(ImportError {
                file: file.display().to_string(),
                location: line,
                message: format!(
                    "_format_version {version:?} is not one this importer knows ({})",
                    FORMAT_VERSIONS.join(", ")
                ),
            });
        }
    }
    let mut services: HashMap<String, (Option<String>, Vec<Plugin>)> = HashMap::new();
    for (i, service) in array(doc, "services").iter().enumerate() {
        let sat = format!("{at}: services[{i}]");
        let name = str_of(service, "name").unwrap_or_else(|| format!("service-{i}"));
        let url = service_url(service);
        let plugins = plugins_of(service, &sat);
        for (j, route) in array(service, "routes").iter().enumerate() {
            kong.routes.push(deck_route(
                route,
                &format!("{sat}.routes[{j}]"),
                url.clone(),
                &plugins,
            ));
        }
        services.insert(name, (url, plugins));
    }
    for (i, route) in array(doc, "routes").iter().enumerate() {
        let rat = format!("{at}: routes[{i}]");
        let service = route
            .get("service")
            .and_then(|s| s.as_str().map(str::to_owned).or_else(|| str_of(s, "name")));
        let (url, plugins) = service
            .and_then(|s| services.get(&s).cloned())
            .unwrap_or_default();
        kong.routes.push(deck_route(route, &rat, url, &plugins));
    }
    for (i, plugin) in array(doc, "plugins").iter().enumerate() {
        let pat = format!("{at}: plugins[{i}]");
        let Some(plugin) = plugin_of(plugin, &pat) else {
            continue;
        };
        let target = |field: &str| doc_plugin_ref(&array(doc, "plugins")[i], field);
        if let Some(route) = target("route") {
            match kong.routes.iter_mut().find(|r| r.name == route) {
                Some(r) => add_plugin(&mut r.plugins, plugin),
                None => kong.report.skip(
                    pat,
                    format!("names route {route:?}, which is not in the file"),
                ),
            }
        } else if let Some(service) = target("service") {
            let mut found = false;
            for r in kong
                .routes
                .iter_mut()
                .filter(|r| r.at.contains("services["))
            {
                if services
                    .get(&service)
                    .is_some_and(|(u, _)| *u == r.upstream)
                {
                    add_plugin(&mut r.plugins, plugin.clone());
                    found = true;
                }
            }
            if !found {
                kong.report.skip(
                    pat,
                    format!("names service {service:?}, which has no route in the file"),
                );
            }
        } else if let Some(consumer) = target("consumer") {
            kong.report.skip(
                pat,
                format!("a plugin for consumer {consumer:?} alone: put its limits in the consumer's `budgets`"),
            );
        } else {
            kong.global.push(plugin);
        }
    }
    for (i, consumer) in array(doc, "consumers").iter().enumerate() {
        let cat = format!("{at}: consumers[{i}]");
        let Some(username) = str_of(consumer, "username").or_else(|| str_of(consumer, "custom_id"))
        else {
            kong.report
                .skip(cat, "a consumer without username or custom_id");
            continue;
        };
        let keys = array(consumer, "keyauth_credentials")
            .iter()
            .enumerate()
            .filter_map(|(j, k)| {
                Some((str_of(k, "key")?, format!("{cat}.keyauth_credentials[{j}]")))
            })
            .collect();
        let groups = array(consumer, "acls")
            .iter()
            .filter_map(|a| str_of(a, "group"))
            .collect();
        for other in [
            "basicauth_credentials",
            "jwt_secrets",
            "hmacauth_credentials",
            "oauth2_credentials",
            "mtls_auth_credentials",
        ] {
            if !array(consumer, other).is_empty() {
                kong.report.skip(
                    format!("{cat}.{other}"),
                    "Tollgate takes API keys and OIDC tokens only",
                );
            }
        }
        kong.consumers.push(Consumer {
            username,
            custom_id: str_of(consumer, "custom_id"),
            keys,
            groups,
            plugins: plugins_of(consumer, &cat),
            at: cat,
        });
    }
    Ok(())
}

/// The name a top-level plugin's `route:`/`service:`/`consumer:` refers to.
fn doc_plugin_ref(plugin: &Value, field: &str) -> Option<String> {
    let v = plugin.get(field)?;
    v.as_str()
        .map(str::to_owned)
        .or_else(|| str_of(v, "name"))
        .or_else(|| str_of(v, "username"))
}

fn deck_route(
    route: &Value,
    at: &str,
    upstream: Option<String>,
    service_plugins: &[Plugin],
) -> Route {
    let mut plugins = plugins_of(route, at);
    for p in service_plugins {
        add_plugin(&mut plugins, p.clone());
    }
    Route {
        name: str_of(route, "name").unwrap_or_default(),
        paths: array(route, "paths")
            .iter()
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect(),
        upstream,
        plugins,
        at: at.to_owned(),
    }
}

fn service_url(service: &Value) -> Option<String> {
    if let Some(url) = str_of(service, "url") {
        return Some(url);
    }
    let host = str_of(service, "host")?;
    let protocol = str_of(service, "protocol").unwrap_or_else(|| "http".into());
    let port = service.get("port").and_then(Value::as_u64);
    let path = str_of(service, "path").unwrap_or_default();
    Some(url_of(&protocol, &host, port, &path))
}

/// `protocol://host[:port]path`, as Kong puts a service's parts together.
fn url_of(protocol: &str, host: &str, port: Option<u64>, path: &str) -> String {
    match port {
        Some(port) => format!("{protocol}://{host}:{port}{path}"),
        None => format!("{protocol}://{host}{path}"),
    }
}

/// The plugin names of an object's `konghq.com/plugins` annotation (`metadata` given).
fn annotated_plugins(metadata: &Value) -> Vec<String> {
    metadata
        .pointer("/annotations/konghq.com~1plugins")
        .and_then(Value::as_str)
        .map(|s| {
            s.split(',')
                .map(|p| p.trim().to_owned())
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

// ---- Kubernetes manifests -----------------------------------------------------------------

fn read_manifest(doc: &Value, at: &str, kong: &mut Kong) {
    let kind = str_of(doc, "kind").unwrap_or_default();
    let meta = doc.get("metadata").cloned().unwrap_or(Value::Null);
    let name = str_of(&meta, "name").unwrap_or_default();
    let at = format!("{at} ({kind} {name})");
    let namespace = str_of(&meta, "namespace").unwrap_or_default();
    let annotated_plugins = annotated_plugins(&meta);
    match kind.as_str() {
        "List" => {
            for (i, item) in array(doc, "items").iter().enumerate() {
                read_manifest(item, &format!("{at}.items[{i}]"), kong);
            }
        }
        "KongPlugin" | "KongClusterPlugin" => {
            let plugin_name = str_of(doc, "plugin").unwrap_or_default();
            if doc.get("disabled").and_then(Value::as_bool) == Some(true) {
                kong.report.skip(at, "disabled");
                return;
            }
            if doc.get("configFrom").is_some() {
                kong.report.skip(
                    format!("{at}.configFrom"),
                    "its config is in a Secret: write that config inline or set it after the import",
                );
            }
            let plugin = Plugin {
                name: plugin_name,
                config: doc.get("config").cloned().unwrap_or(json!({})),
                at: at.clone(),
            };
            let global = meta.pointer("/labels/global").and_then(Value::as_str) == Some("true");
            if kind == "KongClusterPlugin" && global {
                kong.global.push(plugin);
            } else {
                kong.kic_plugins.insert(name, plugin);
            }
        }
        "KongConsumer" => {
            let consumer = Consumer {
                username: str_of(doc, "username").unwrap_or(name),
                custom_id: str_of(doc, "custom_id"),
                at,
                ..Consumer::default()
            };
            let credentials = array(doc, "credentials")
                .iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect();
            kong.kic_consumers
                .push((consumer, annotated_plugins, credentials));
        }
        "Secret" => {
            let mut data = doc
                .get("stringData")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for (k, v) in doc
                .get("data")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                let decoded = v
                    .as_str()
                    .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                    .and_then(|b| String::from_utf8(b).ok());
                if let Some(decoded) = decoded {
                    data.entry(k.clone()).or_insert(Value::String(decoded));
                }
            }
            if let Some(kind) = meta
                .pointer("/labels/konghq.com~1credential")
                .and_then(Value::as_str)
            {
                data.insert("kongCredType".into(), Value::String(kind.to_owned()));
            }
            kong.kic_secrets.insert(name, (data, at));
        }
        "Service" => {
            let namespace = str_of(&meta, "namespace").unwrap_or_default();
            kong.kic_services
                .insert(format!("{namespace}/{name}"), doc.clone());
        }
        "Ingress" => {
            let mut n = 0;
            for rule in array(doc.get("spec").unwrap_or(&Value::Null), "rules") {
                let Some(paths) = rule.pointer("/http/paths").and_then(Value::as_array) else {
                    continue;
                };
                for p in paths {
                    n += 1;
                    let backend = p
                        .pointer("/backend/service/name")
                        .and_then(Value::as_str)
                        .map(|s| {
                            (
                                namespace.clone(),
                                s.to_owned(),
                                p.pointer("/backend/service/port/number")
                                    .and_then(Value::as_u64),
                            )
                        });
                    let route = Route {
                        name: if n == 1 {
                            name.clone()
                        } else {
                            format!("{name}-{n}")
                        },
                        paths: str_of(p, "path").into_iter().collect(),
                        at: format!("{at}.spec.rules.paths[{}]", n - 1),
                        ..Route::default()
                    };
                    kong.kic_routes
                        .push((route, annotated_plugins.clone(), backend));
                }
            }
        }
        "HTTPRoute" => {
            for (i, rule) in array(doc.get("spec").unwrap_or(&Value::Null), "rules")
                .iter()
                .enumerate()
            {
                let backend = array(rule, "backendRefs").first().and_then(|b| {
                    let ns = str_of(b, "namespace").unwrap_or_else(|| namespace.clone());
                    Some((
                        ns,
                        str_of(b, "name")?,
                        b.get("port").and_then(Value::as_u64),
                    ))
                });
                let paths = array(rule, "matches")
                    .iter()
                    .filter_map(|m| {
                        m.pointer("/path/value")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .collect();
                let route = Route {
                    name: if i == 0 {
                        name.clone()
                    } else {
                        format!("{name}-{}", i + 1)
                    },
                    paths,
                    at: format!("{at}.spec.rules[{i}]"),
                    ..Route::default()
                };
                kong.kic_routes
                    .push((route, annotated_plugins.clone(), backend));
            }
        }
        other => kong.report.skip(
            at,
            format!("a {other} is not part of Kong's configuration: left to its own tooling"),
        ),
    }
}

fn resolve_kubernetes(kong: &mut Kong) {
    let plugin = |kong: &mut Kong, name: &str, at: &str| -> Option<Plugin> {
        let found = kong.kic_plugins.get(name).cloned();
        if found.is_none() {
            kong.report.skip(
                at.to_owned(),
                format!("konghq.com/plugins names {name:?}, which is not in the files"),
            );
        }
        found
    };
    for (mut route, names, backend) in std::mem::take(&mut kong.kic_routes) {
        for name in &names {
            if let Some(p) = plugin(kong, name, &route.at) {
                add_plugin(&mut route.plugins, p);
            }
        }
        if let Some((namespace, service, port)) = backend {
            let svc = kong
                .kic_services
                .get(&format!("{namespace}/{service}"))
                .cloned()
                .unwrap_or(Value::Null);
            let service_plugins = annotated_plugins(svc.get("metadata").unwrap_or(&Value::Null));
            for name in &service_plugins {
                if let Some(p) = plugin(kong, name, &route.at) {
                    add_plugin(&mut route.plugins, p);
                }
            }
            // In the cluster a service is reached by its DNS name.
            let host = svc
                .pointer("/spec/externalName")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    if namespace.is_empty() {
                        service
                    } else {
                        format!("{service}.{namespace}.svc")
                    }
                });
            let path = svc
                .pointer("/metadata/annotations/konghq.com~1path")
                .and_then(Value::as_str)
                .unwrap_or("");
            let protocol = svc
                .pointer("/metadata/annotations/konghq.com~1protocol")
                .and_then(Value::as_str)
                .unwrap_or("http");
            route.upstream = Some(url_of(protocol, &host, port, path));
        }
        kong.routes.push(route);
    }
    for (mut consumer, names, credentials) in std::mem::take(&mut kong.kic_consumers) {
        for name in &names {
            if let Some(p) = plugin(kong, name, &consumer.at) {
                consumer.plugins.push(p);
            }
        }
        for secret in credentials {
            let Some((data, at)) = kong.kic_secrets.get(&secret).cloned() else {
                kong.report.skip(
                    consumer.at.clone(),
                    format!("credential Secret {secret:?} is not in the files"),
                );
                continue;
            };
            match data.get("kongCredType").and_then(Value::as_str) {
                Some("key-auth" | "keyauth_credential") => {
                    match data.get("key").and_then(Value::as_str) {
                        Some(key) => consumer.keys.push((key.to_owned(), at)),
                        None => kong.report.skip(at, "a key-auth Secret without `key`"),
                    }
                }
                Some("acl") => {
                    if let Some(group) = data.get("group").and_then(Value::as_str) {
                        consumer.groups.push(group.to_owned());
                    }
                }
                other => kong.report.skip(
                    at,
                    format!(
                        "credential type {:?}: Tollgate takes API keys and OIDC tokens only",
                        other.unwrap_or("?")
                    ),
                ),
            }
        }
        kong.consumers.push(consumer);
    }
}

// ---- reading helpers ----------------------------------------------------------------------

fn array<'a>(v: &'a Value, field: &str) -> &'a [Value] {
    v.get(field)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn str_of(v: &Value, field: &str) -> Option<String> {
    v.get(field).and_then(Value::as_str).map(str::to_owned)
}

fn plugin_of(v: &Value, at: &str) -> Option<Plugin> {
    if v.get("enabled").and_then(Value::as_bool) == Some(false) {
        return None;
    }
    Some(Plugin {
        name: str_of(v, "name")?,
        config: v.get("config").cloned().unwrap_or(json!({})),
        at: at.to_owned(),
    })
}

fn plugins_of(v: &Value, at: &str) -> Vec<Plugin> {
    array(v, "plugins")
        .iter()
        .enumerate()
        .filter_map(|(i, p)| plugin_of(p, &format!("{at}.plugins[{i}]")))
        .collect()
}

/// Adds a plugin unless one of that name is there already (the more specific one wins).
fn add_plugin(plugins: &mut Vec<Plugin>, plugin: Plugin) {
    if !plugins.iter().any(|p| p.name == plugin.name) {
        plugins.push(plugin);
    }
}

// ---- translation --------------------------------------------------------------------------

/// The config being written.
#[derive(Default)]
struct Out {
    providers: Map<String, Value>,
    /// Provider name by its identity (type, base URL, key reference).
    provider_ids: HashMap<String, String>,
    models: Map<String, Value>,
    routes: Map<String, Value>,
    /// Models each route serves.
    route_models: HashMap<String, Vec<String>>,
    /// Groups each route admits (empty: every consumer).
    route_groups: HashMap<String, Vec<String>>,
    groups: BTreeSet<String>,
    policies: Map<String, Value>,
    rate_limits: Map<String, Value>,
    prompt_guard: Option<Value>,
    oidc: Option<Value>,
    /// A global key-auth plugin: every route asks for a key.
    global_key_auth: bool,
    log: Option<Value>,
    report: Report,
}

fn translate(kong: Kong) -> Imported {
    let mut out = Out {
        report: kong.report,
        ..Out::default()
    };
    out.report.note(
        "Kong's ai-proxy answers on the route's own path; Tollgate serves the OpenAI API under the route's path (e.g. /gemini/v1/chat/completions, /gemini/v1/models)",
    );
    let mut plain_routes = Vec::new();
    for plugin in &kong.global {
        global_plugin(plugin, &mut out);
    }
    let mut taken_names = BTreeSet::new();
    for (i, route) in kong.routes.iter().enumerate() {
        let base = if route.name.is_empty() {
            route
                .paths
                .first()
                .map(|p| super::env_name(p).to_ascii_lowercase().replace('_', "-"))
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| format!("route-{i}"))
        } else {
            route.name.clone()
        };
        let name = if taken_names.insert(base.clone()) {
            base
        } else {
            let n = (2..)
                .map(|k| format!("{base}-{k}"))
                .find(|n| !taken_names.contains(n))
                .unwrap_or(base);
            taken_names.insert(n.clone());
            n
        };
        if translate_route(route, &name, &mut out) {
            plain_routes.push((name, route.upstream.clone()));
        }
    }
    // Routes that proxy to a service without an AI plugin: the service becomes an
    // OpenAI-compatible provider and the route serves the models other routes defined on it.
    for (name, upstream) in plain_routes {
        let Some(upstream) = upstream else {
            out.report.skip(
                format!("routes.{name}"),
                "no service and no AI plugin: nothing to serve",
            );
            out.routes.shift_remove(&name);
            continue;
        };
        let base = upstream
            .trim_end_matches('/')
            .trim_end_matches("/chat/completions")
            .to_owned();
        let provider = provider_with(&mut out, "openai", Some(&base), None, Map::new());
        // Models that are only targets of a balanced model there are served by name too.
        let target_only: Vec<String> = out
            .models
            .values()
            .flat_map(|m| array(m, "targets").to_vec())
            .filter(|t| t.get("provider").and_then(Value::as_str) == Some(provider.as_str()))
            .filter_map(|t| str_of(&t, "model"))
            .filter(|m| !out.models.contains_key(m))
            .collect();
        for model in target_only {
            out.models.insert(model, json!({"provider": provider}));
        }
        let models: Vec<String> = out
            .models
            .iter()
            .filter(|(_, m)| m.get("provider").and_then(Value::as_str) == Some(provider.as_str()))
            .map(|(n, _)| n.clone())
            .collect();
        if models.is_empty() {
            out.report.skip(
                format!("routes.{name}"),
                format!("proxies {upstream} without an AI plugin, and no other route names a model there: add its models under `models:` with `provider: {provider}`"),
            );
        } else {
            // Its consumers may use the models on that server; the route, like the showcase's
            // OpenWebUI entry point, serves by name whatever model its caller may use.
            out.report.note(format!(
                "route {name} proxied {upstream} as it is: its consumers get the models the other routes define on that server ({}), and the route serves any model its caller may use",
                models.join(", ")
            ));
        }
        out.route_models.insert(name, models);
    }
    let consumers = translate_consumers(&kong.consumers, &mut out);
    assemble(out, consumers)
}

/// Returns whether the route proxies a plain service (no AI plugin).
fn translate_route(route: &Route, name: &str, out: &mut Out) -> bool {
    let at = &route.at;
    let mut cfg = Map::new();
    match route.paths.as_slice() {
        [] => out.report.note(format!(
            "route {name} had no paths: it is served at /{name}"
        )),
        [path, rest @ ..] => {
            let path = path.trim_end_matches('/');
            if path.starts_with('~') {
                out.report.skip(
                    format!("{at}.paths[0]"),
                    "a regex path: served at /<route name> instead",
                );
            } else if path != format!("/{name}") {
                cfg.insert(
                    "path".into(),
                    json!(if path.is_empty() { "/" } else { path }),
                );
            }
            for (j, extra) in rest.iter().enumerate() {
                out.report.skip(format!("{at}.paths[{}]", j + 1), format!("a second path ({extra}): a Tollgate route has one; add another route for it"));
            }
        }
    }
    let mut models = Vec::new();
    let mut groups = Vec::new();
    let mut has_ai = false;
    let mut authenticated = false;
    for plugin in &route.plugins {
        match plugin.name.as_str() {
            "ai-proxy" => {
                has_ai = true;
                let at = format!("{}.config", plugin.at);
                if let Some(model) = single_target(&plugin.config, None, &at, out) {
                    models.push(model);
                }
            }
            "ai-proxy-advanced" => {
                has_ai = true;
                if let Some(model) = balanced(&plugin.config, name, &plugin.at, out) {
                    models.push(model);
                }
            }
            "acl" => {
                groups.extend(strings(&plugin.config, "allow"));
                if !strings(&plugin.config, "deny").is_empty() {
                    out.report.skip(format!("{}.config.deny", plugin.at), "a deny list: Tollgate routes admit listed groups only (write the allowed groups instead)");
                }
            }
            "ai-prompt-guard" => {
                cfg.insert(
                    "prompt_guard".into(),
                    prompt_guard(&plugin.config, &plugin.at, out),
                );
            }
            "ai-prompt-decorator" => {
                cfg.insert("prompt_decorator".into(), decorator(&plugin.config));
            }
            "ai-rate-limiting-advanced" => rate_limit(&plugin.config, Some(name), &plugin.at, out),
            "key-auth" => {
                authenticated = true;
                key_auth(&plugin.config, &plugin.at, out);
            }
            "openid-connect" => {
                authenticated = true;
                oidc(&plugin.config, &plugin.at, out);
            }
            _ => shared_plugin(plugin, out),
        }
    }
    if !authenticated && !has_global_auth(out) {
        out.report.note(format!(
            "route {name} had no authentication in Kong; Tollgate asks every request for a consumer's key or token"
        ));
    }
    if let [model] = models.as_slice() {
        cfg.insert("default_model".into(), json!(model));
    }
    if !models.is_empty() {
        cfg.insert("models".into(), json!(models));
    }
    if !groups.is_empty() {
        cfg.insert("groups".into(), json!(groups));
        out.groups.extend(groups.iter().cloned());
    }
    out.route_models.insert(name.to_owned(), models);
    out.route_groups.insert(name.to_owned(), groups);
    out.routes.insert(name.to_owned(), Value::Object(cfg));
    !has_ai
}

fn has_global_auth(out: &Out) -> bool {
    out.global_key_auth || out.oidc.is_some()
}

fn global_plugin(plugin: &Plugin, out: &mut Out) {
    match plugin.name.as_str() {
        "ai-prompt-guard" => out.prompt_guard = Some(prompt_guard(&plugin.config, &plugin.at, out)),
        "ai-rate-limiting-advanced" => rate_limit(&plugin.config, None, &plugin.at, out),
        "key-auth" => {
            out.global_key_auth = true;
            key_auth(&plugin.config, &plugin.at, out);
        }
        "openid-connect" => oidc(&plugin.config, &plugin.at, out),
        "acl" => out.report.skip(
            plugin.at.clone(),
            "a global ACL: put the groups on the routes",
        ),
        "ai-proxy" | "ai-proxy-advanced" => out.report.skip(
            plugin.at.clone(),
            "an AI proxy on no route: attach it to a route",
        ),
        "ai-prompt-decorator" => out.report.skip(
            plugin.at.clone(),
            "a global decorator: Tollgate decorates per route or per model",
        ),
        _ => shared_plugin(plugin, out),
    }
}

/// Plugins that mean the same wherever they are attached.
fn shared_plugin(plugin: &Plugin, out: &mut Out) {
    match plugin.name.as_str() {
        "prometheus" => out.report.note("prometheus: Tollgate's /metrics on the status listener is always on"),
        "http-log" => {
            let Some(url) = str_of(&plugin.config, "http_endpoint") else {
                out.report.skip(plugin.at.clone(), "http-log without http_endpoint");
                return;
            };
            let mut http = Map::new();
            http.insert("url".into(), json!(url));
            let headers: Map<String, Value> = plugin
                .config
                .get("headers")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    let value = v.as_str().map(str::to_owned).or_else(|| v.as_array()?.first()?.as_str().map(str::to_owned)).unwrap_or_default();
                    let reference = out.report.secret(&value, &format!("log header {k}"), &format!("{}.config.headers.{k}", plugin.at));
                    (k.clone(), json!(reference))
                })
                .collect();
            if !headers.is_empty() {
                http.insert("headers".into(), Value::Object(headers));
            }
            if out.log.is_some() {
                out.report.skip(plugin.at.clone(), "a second http-log: Tollgate has one HTTP log sink (the first is kept)");
            } else {
                out.log = Some(json!({"http": http}));
            }
        }
        "pre-function" | "post-function" => out.report.skip(
            plugin.at.clone(),
            "Lua code is not carried over; a per-user model filter is what consumers' and groups' `models` do",
        ),
        "cors" | "request-transformer" | "response-transformer" | "rate-limiting" | "ip-restriction" | "file-log" | "correlation-id" => out.report.skip(
            plugin.at.clone(),
            format!("{}: no equivalent in Tollgate", plugin.name),
        ),
        other => out.report.skip(plugin.at.clone(), format!("unknown plugin {other:?}: not carried over")),
    }
}

fn strings(v: &Value, field: &str) -> Vec<String> {
    array(v, field)
        .iter()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn key_auth(config: &Value, at: &str, out: &mut Out) {
    let names = strings(config, "key_names");
    let unusual: Vec<&String> = names
        .iter()
        .filter(|n| !["apikey", "authorization"].contains(&n.to_ascii_lowercase().as_str()))
        .collect();
    if !unusual.is_empty() {
        out.report.skip(
            format!("{at}.config.key_names"),
            format!("keys in {unusual:?}: Tollgate reads them from the `apikey` header and `Authorization: Bearer`"),
        );
    }
    if config.get("hide_credentials").and_then(Value::as_bool) == Some(false) {
        out.report.note(
            "key-auth hide_credentials: false — Tollgate never forwards a client's key upstream",
        );
    }
}

fn oidc(config: &Value, at: &str, out: &mut Out) {
    if out.oidc.is_some() {
        return;
    }
    let Some(issuer) = str_of(config, "issuer") else {
        out.report
            .skip(at.to_owned(), "openid-connect without issuer");
        return;
    };
    let issuer = issuer
        .trim_end_matches('/')
        .trim_end_matches("/.well-known/openid-configuration")
        .to_owned();
    let mut audiences = strings(config, "audience_required");
    if audiences.is_empty() {
        audiences = strings(config, "audience");
    }
    if audiences.is_empty() {
        audiences = strings(config, "client_id");
        out.report.note(
            "openid-connect had no audience_required: the client_id is the accepted audience",
        );
    }
    let mut oidc = Map::new();
    oidc.insert("issuer".into(), json!(issuer));
    oidc.insert("audiences".into(), json!(audiences));
    if let Some(claim) = strings(config, "consumer_claim").first() {
        oidc.insert("username_claim".into(), json!(claim));
    }
    let by = strings(config, "consumer_by");
    if !by.is_empty() && !by.iter().any(|b| b == "custom_id") {
        out.report.skip(
            format!("{at}.config.consumer_by"),
            "Tollgate maps the claim to a consumer's custom_id: give the consumers custom_ids equal to their usernames",
        );
    }
    if config.get("consumer_optional").and_then(Value::as_bool) == Some(true) {
        out.report.skip(
            format!("{at}.config.consumer_optional"),
            "a token of an unknown user gets 401 unless `auth.oidc.anonymous` names a consumer for them",
        );
    }
    if config.get("client_secret").is_some() {
        out.report.note("openid-connect client_secret: not needed (Tollgate only verifies tokens) and not copied");
    }
    out.oidc = Some(Value::Object(oidc));
}

fn prompt_guard(config: &Value, at: &str, out: &mut Out) -> Value {
    let deny = strings(config, "deny_patterns");
    let allow = strings(config, "allow_patterns");
    for (field, patterns) in [("deny_patterns", &deny), ("allow_patterns", &allow)] {
        for (i, p) in patterns.iter().enumerate() {
            if let Err(e) = regex::Regex::new(p) {
                out.report.skip(
                    format!("{at}.config.{field}[{i}]"),
                    format!("kept, but `tollgate check` will refuse it (Rust regex, no look-around or back-references): {e}"),
                );
            }
        }
    }
    let mut guard = Map::new();
    if !deny.is_empty() {
        guard.insert("deny".into(), json!(deny));
    }
    if !allow.is_empty() {
        guard.insert("allow".into(), json!(allow));
    }
    if config.get("match_all_roles").and_then(Value::as_bool) == Some(true) {
        guard.insert("roles".into(), json!("all"));
    }
    // Kong checks the whole conversation unless told to look at the latest prompt only.
    if config
        .get("allow_all_conversation_history")
        .and_then(Value::as_bool)
        != Some(true)
    {
        guard.insert("history".into(), json!(true));
    }
    Value::Object(guard)
}

fn decorator(config: &Value) -> Value {
    let messages = |field: &str| -> Vec<Value> {
        config
            .pointer(&format!("/prompts/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|m| json!({"role": m.get("role").cloned().unwrap_or(json!("system")), "content": m.get("content").cloned().unwrap_or(json!(""))}))
            .collect()
    };
    json!({"prepend": messages("prepend"), "append": messages("append")})
}

fn rate_limit(config: &Value, route: Option<&str>, at: &str, out: &mut Out) {
    let metric = match str_of(config, "tokens_count_strategy").as_deref() {
        None | Some("total_tokens") => "tokens",
        Some("prompt_tokens") => "prompt_tokens",
        Some("completion_tokens") => "completion_tokens",
        Some("cost") => "cost_usd",
        Some(other) => {
            out.report.skip(
                format!("{at}.config.tokens_count_strategy"),
                format!("{other:?}: counted as total tokens"),
            );
            "tokens"
        }
    };
    let scope = match str_of(config, "identifier").as_deref() {
        None | Some("consumer" | "credential") => "consumer",
        Some("consumer-group") => "group",
        Some("service" | "path") => "route",
        Some(other) => {
            out.report.skip(
                format!("{at}.config.identifier"),
                format!("{other:?}: Tollgate counts per consumer here"),
            );
            "consumer"
        }
    };
    if str_of(config, "window_type").as_deref() == Some("sliding") {
        out.report
            .note("sliding rate-limit windows became fixed windows aligned to their length");
    }
    if str_of(config, "strategy").as_deref() == Some("redis") {
        out.rate_limits.insert("backend".into(), json!("redis"));
        let host = config
            .pointer("/redis/host")
            .and_then(Value::as_str)
            .unwrap_or("127.0.0.1");
        let port = config
            .pointer("/redis/port")
            .and_then(Value::as_u64)
            .unwrap_or(6379);
        let db = config
            .pointer("/redis/database")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let auth = match config.pointer("/redis/password").and_then(Value::as_str) {
            Some(p) if !p.is_empty() => format!(
                ":{}@",
                out.report
                    .secret(p, "redis password", &format!("{at}.config.redis.password"))
            ),
            _ => String::new(),
        };
        out.rate_limits.insert(
            "redis".into(),
            json!({"url": format!("redis://{auth}{host}:{port}/{db}")}),
        );
    }
    for (i, provider) in array(config, "llm_providers").iter().enumerate() {
        let pname = str_of(provider, "name").unwrap_or_default();
        let limits: Vec<Value> = array(provider, "limit")
            .iter()
            .zip(array(provider, "window_size"))
            .filter_map(|(l, w)| {
                let mut limit = Map::new();
                limit.insert(metric.into(), l.clone());
                limit.insert("per".into(), json!(seconds(w.as_f64()?)));
                Some(Value::Object(limit))
            })
            .collect();
        if limits.is_empty() {
            out.report.skip(
                format!("{at}.config.llm_providers[{i}]"),
                "no limit with a window_size",
            );
            continue;
        }
        let mut policy = Map::new();
        policy.insert("scope".into(), json!(scope));
        if let Some(route) = route {
            policy.insert("routes".into(), json!([route]));
        }
        if !matches!(pname.as_str(), "" | "requestPrompt") {
            out.report.note(format!(
                "limits for provider {pname:?} apply to every model of that kind of provider"
            ));
            policy.insert("provider_kind".into(), json!(pname));
        }
        policy.insert("limits".into(), json!(limits));
        let base = match route {
            Some(r) => format!("{r}-{pname}"),
            None => format!("kong-{pname}"),
        };
        let name = unique_name(&out.policies, base.trim_end_matches('-'));
        out.policies.insert(name, Value::Object(policy));
    }
}

/// A model from an ai-proxy config (or one target of ai-proxy-advanced): the provider made
/// or found, the model named by `model.name`.
fn single_target(config: &Value, alias: Option<&str>, at: &str, out: &mut Out) -> Option<String> {
    let route_type = str_of(config, "route_type").unwrap_or_else(|| "llm/v1/chat".into());
    if route_type != "llm/v1/chat" && route_type != "llm/v1/completions" {
        out.report.skip(format!("{at}.route_type"), format!("{route_type}: Tollgate serves chat (and embeddings for OpenAI-compatible models) under every route"));
    }
    let (provider, model_name) = target_provider(config, at, out)?;
    let name = alias
        .map(str::to_owned)
        .unwrap_or_else(|| model_name.clone());
    if out
        .models
        .get(&name)
        .is_some_and(|m| m.get("provider") != Some(&json!(provider)))
    {
        let unique = format!("{name}@{provider}");
        out.report.note(format!(
            "model {name} is served by two providers: the one at {at} is named {unique}"
        ));
        out.models
            .insert(unique.clone(), model_entry(&provider, &model_name, &unique));
        return Some(unique);
    }
    out.models
        .insert(name.clone(), model_entry(&provider, &model_name, &name));
    Some(name)
}

fn model_entry(provider: &str, model: &str, name: &str) -> Value {
    if model == name {
        json!({"provider": provider})
    } else {
        json!({"provider": provider, "model": model})
    }
}

/// The provider of a target (`model.provider`, `options.upstream_url`, `auth.*`) and the
/// upstream model id.
fn target_provider(config: &Value, at: &str, out: &mut Out) -> Option<(String, String)> {
    let model = config.get("model").cloned().unwrap_or(Value::Null);
    let kind = str_of(&model, "provider").unwrap_or_default();
    let Some(model_name) = str_of(&model, "name") else {
        out.report.skip(
            format!("{at}.model.name"),
            "no model name: the client's model was passed on; name it here",
        );
        return None;
    };
    let upstream = model
        .pointer("/options/upstream_url")
        .and_then(Value::as_str);
    let tollgate_kind = match kind.as_str() {
        "openai" | "llama2" => "openai",
        "mistral" => {
            if upstream.is_some() {
                "openai"
            } else {
                "mistral"
            }
        }
        "anthropic" => "anthropic",
        "gemini" => "gemini",
        "azure" => "azure",
        other => {
            out.report.skip(
                format!("{at}.model.provider"),
                format!("provider {other:?} has no Tollgate adapter"),
            );
            return None;
        }
    };
    if kind == "llama2"
        && let Some(format) = model
            .pointer("/options/llama2_format")
            .and_then(Value::as_str)
        && format == "raw"
    {
        out.report.skip(
            format!("{at}.model.options.llama2_format"),
            "raw llama2 prompts: the server is spoken to as OpenAI-compatible instead",
        );
    }
    let base = upstream.map(|u| {
        u.trim_end_matches('/')
            .trim_end_matches("/chat/completions")
            .trim_end_matches("/completions")
            .trim_end_matches("/v1/messages")
            .trim_end_matches("/api/chat")
            .to_owned()
    });
    // Ollama's native API path: its OpenAI-compatible API is under /v1.
    let base = base.map(|b| {
        if upstream.is_some_and(|u| u.ends_with("/api/chat")) {
            format!("{b}/v1")
        } else {
            b
        }
    });
    let auth = config.get("auth").cloned().unwrap_or(Value::Null);
    let secret = str_of(&auth, "header_value").or_else(|| str_of(&auth, "param_value"));
    let key = secret.map(|s| {
        let bare = s.strip_prefix("Bearer ").unwrap_or(&s).to_owned();
        out.report
            .secret(&bare, &format!("{kind} api key"), &format!("{at}.auth"))
    });
    if let Some(name) = str_of(&auth, "header_name") {
        let expected = match tollgate_kind {
            "anthropic" => "x-api-key",
            "gemini" => "x-goog-api-key",
            "azure" => "api-key",
            _ => "authorization",
        };
        if !name.eq_ignore_ascii_case(expected) {
            out.report.skip(
                format!("{at}.auth.header_name"),
                format!("{name}: the key is sent the way the provider expects ({expected})"),
            );
        }
    }
    let mut extra = Map::new();
    if tollgate_kind == "gemini" && str_of(&auth, "param_location").as_deref() == Some("query") {
        extra.insert("key_in".into(), json!("query"));
    }
    if tollgate_kind == "azure" {
        let instance = model
            .pointer("/options/azure_instance")
            .and_then(Value::as_str)
            .unwrap_or("my-instance");
        extra.insert(
            "base_url".into(),
            json!(format!("https://{instance}.openai.azure.com")),
        );
        if let Some(v) = model
            .pointer("/options/azure_api_version")
            .and_then(Value::as_str)
        {
            extra.insert("api_version".into(), json!(v));
        }
    }
    if tollgate_kind == "anthropic"
        && let Some(max) = model.pointer("/options/max_tokens").and_then(Value::as_u64)
    {
        extra.insert("default_max_tokens".into(), json!(max));
    }
    let provider = provider_with(out, tollgate_kind, base.as_deref(), key, extra);
    let model_id = if tollgate_kind == "azure" {
        model
            .pointer("/options/azure_deployment_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or(model_name)
    } else {
        model_name
    };
    Some((provider, model_id))
}

/// A provider of `kind` at `base` with `key`: the same one for every route that names it.
fn provider_with(
    out: &mut Out,
    kind: &str,
    base: Option<&str>,
    key: Option<String>,
    extra: Map<String, Value>,
) -> String {
    let identity = format!(
        "{kind}|{}|{}",
        base.unwrap_or(""),
        key.as_deref().unwrap_or("")
    );
    if let Some(name) = out.provider_ids.get(&identity) {
        return name.clone();
    }
    let looks_like_ollama = base.is_some_and(|b| b.contains("ollama") || b.contains(":11434"));
    let suggested = if looks_like_ollama { "ollama" } else { kind };
    let name = unique_name(&out.providers, suggested);
    let mut provider = Map::new();
    provider.insert("type".into(), json!(kind));
    if let Some(base) = base {
        provider.insert("base_url".into(), json!(base));
    }
    if let Some(key) = key {
        provider.insert("api_key".into(), json!(key));
    }
    provider.extend(extra);
    out.providers.insert(name.clone(), Value::Object(provider));
    out.provider_ids.insert(identity, name.clone());
    name
}

/// ai-proxy-advanced: a multi-target model named after the route (or its `model_alias`).
fn balanced(config: &Value, route: &str, at: &str, out: &mut Out) -> Option<String> {
    let balancer = config.get("balancer").cloned().unwrap_or(Value::Null);
    let strategy = match str_of(&balancer, "algorithm").as_deref() {
        None | Some("round-robin") => "weighted",
        Some("priority") => "priority",
        Some("least-connections" | "lowest-usage") => "least-busy",
        Some("lowest-latency") => "lowest-latency",
        Some("consistent-hashing") => "hash",
        Some(other) => {
            out.report.skip(
                format!("{at}.config.balancer.algorithm"),
                format!("{other:?}: balanced by weight instead"),
            );
            "weighted"
        }
    };
    let mut targets = Vec::new();
    for (i, target) in array(config, "targets").iter().enumerate() {
        let tat = format!("{at}.config.targets[{i}]");
        if let Some(route_type) = str_of(target, "route_type")
            && route_type != "llm/v1/chat"
        {
            out.report.skip(
                format!("{tat}.route_type"),
                format!("{route_type}: served as chat"),
            );
        }
        let Some((provider, model)) = target_provider(target, &tat, out) else {
            continue;
        };
        let weight = target.get("weight").and_then(Value::as_u64).unwrap_or(100);
        targets.push(json!({"provider": provider, "model": model, "weight": weight}));
    }
    if targets.is_empty() {
        out.report.skip(at.to_owned(), "no usable target");
        return None;
    }
    let name = str_of(config, "model_alias")
        .or_else(|| str_of(&balancer, "model_alias"))
        .unwrap_or_else(|| route.to_owned());
    let mut model = Map::new();
    model.insert("strategy".into(), json!(strategy));
    if strategy == "hash"
        && let Some(header) = str_of(&balancer, "hash_on_header")
    {
        model.insert("hash_on".into(), json!(header));
    }
    model.insert("targets".into(), json!(targets));
    let mut retry = Map::new();
    if let Some(n) = balancer.get("retries").and_then(Value::as_u64) {
        retry.insert("attempts".into(), json!(n + 1));
    }
    let criteria = strings(&balancer, "failover_criteria");
    if !criteria.is_empty() {
        let on: Vec<Value> = criteria
            .iter()
            .filter_map(|c| match c.as_str() {
                "error" => Some(json!("connect")),
                "timeout" => Some(json!("timeout")),
                s => s
                    .strip_prefix("http_")
                    .and_then(|n| n.parse::<u16>().ok())
                    .map(|n| json!(n)),
            })
            .collect();
        for c in &criteria {
            if !(c == "error" || c == "timeout" || c.starts_with("http_")) {
                out.report.skip(
                    format!("{at}.config.balancer.failover_criteria"),
                    format!("{c:?}: no equivalent"),
                );
            }
        }
        retry.insert("on".into(), json!(on));
    }
    if !retry.is_empty() {
        model.insert("retry".into(), Value::Object(retry));
    }
    let mut circuit = Map::new();
    if let Some(n) = balancer.get("max_fails").and_then(Value::as_u64) {
        circuit.insert("max_fails".into(), json!(n));
    }
    if let Some(ms) = balancer.get("fail_timeout").and_then(Value::as_f64) {
        circuit.insert("fail_timeout".into(), json!(seconds(ms / 1000.0)));
    }
    if !circuit.is_empty() {
        model.insert("circuit".into(), Value::Object(circuit));
    }
    out.models.insert(name.clone(), Value::Object(model));
    Some(name)
}

fn translate_consumers(consumers: &[Consumer], out: &mut Out) -> Map<String, Value> {
    let mut result = Map::new();
    for consumer in consumers {
        let mut cfg = Map::new();
        if let Some(id) = &consumer.custom_id {
            cfg.insert("custom_id".into(), json!(id));
        }
        let keys: Vec<String> = consumer
            .keys
            .iter()
            .map(|(key, at)| {
                client_key(
                    key,
                    &format!("{} api key", consumer.username),
                    at,
                    &mut out.report,
                )
            })
            .collect();
        if !keys.is_empty() {
            cfg.insert("keys".into(), json!(keys));
        }
        if !consumer.groups.is_empty() {
            cfg.insert("groups".into(), json!(consumer.groups));
            out.groups.extend(consumer.groups.iter().cloned());
        }
        // The models of every route the consumer may enter.
        let mut models = BTreeSet::new();
        for (route, admitted) in &out.route_groups {
            if admitted.is_empty() || admitted.iter().any(|g| consumer.groups.contains(g)) {
                models.extend(out.route_models.get(route).into_iter().flatten().cloned());
            }
        }
        cfg.insert("models".into(), json!(models));
        for plugin in &consumer.plugins {
            out.report.skip(
                plugin.at.clone(),
                format!(
                    "{} on consumer {}: put consumer limits in its `budgets`",
                    plugin.name, consumer.username
                ),
            );
        }
        result.insert(consumer.username.clone(), Value::Object(cfg));
    }
    result
}

fn assemble(mut out: Out, consumers: Map<String, Value>) -> Imported {
    // Policies name provider kinds; Tollgate's name models: resolve them now.
    let mut policies = Map::new();
    for (name, mut policy) in std::mem::take(&mut out.policies) {
        if let Some(kind) = policy
            .as_object_mut()
            .and_then(|p| p.remove("provider_kind"))
        {
            let kind = kind.as_str().unwrap_or_default().to_owned();
            let models: Vec<String> = out
                .models
                .iter()
                .filter(|(_, m)| {
                    let wanted = if kind == "llama2" {
                        "openai"
                    } else {
                        kind.as_str()
                    };
                    let of_kind = |provider: Option<&str>| {
                        provider
                            .and_then(|p| out.providers.get(p))
                            .and_then(|p| p.get("type"))
                            .and_then(Value::as_str)
                            == Some(wanted)
                    };
                    of_kind(m.get("provider").and_then(Value::as_str))
                        || array(m, "targets")
                            .iter()
                            .any(|t| of_kind(t.get("provider").and_then(Value::as_str)))
                })
                .map(|(n, _)| n.clone())
                .collect();
            if models.is_empty() {
                out.report.skip(
                    format!("rate_limits.policies.{name}"),
                    format!("limits for provider {kind:?}, which serves no model here"),
                );
                continue;
            }
            if let Some(p) = policy.as_object_mut() {
                p.insert("models".into(), json!(models));
            }
        }
        policies.insert(name, policy);
    }
    let mut config = Map::new();
    if let Some(log) = out.log.take() {
        config.insert("log".into(), log);
    }
    if !policies.is_empty() {
        out.rate_limits
            .insert("policies".into(), Value::Object(policies));
    }
    if !out.rate_limits.is_empty() {
        config.insert("rate_limits".into(), Value::Object(out.rate_limits));
    }
    if let Some(oidc) = out.oidc.take() {
        config.insert("auth".into(), json!({"oidc": oidc}));
    }
    if let Some(guard) = out.prompt_guard.take() {
        config.insert("prompt_guard".into(), guard);
    }
    config.insert("providers".into(), Value::Object(out.providers));
    config.insert("models".into(), Value::Object(out.models));
    config.insert("routes".into(), Value::Object(out.routes));
    if !out.groups.is_empty() {
        config.insert(
            "groups".into(),
            Value::Object(out.groups.into_iter().map(|g| (g, json!({}))).collect()),
        );
    }
    config.insert("consumers".into(), Value::Object(consumers));
    Imported {
        config,
        report: out.report,
    }
}
