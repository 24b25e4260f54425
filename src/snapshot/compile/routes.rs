//! `routes:` checked (paths, models, groups, default model, guards, decorators) and built,
//! most specific prefix first. The top-level prompt guard is compiled here too: routes are
//! where it applies.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Problems, check_groups, check_model_list, policies};
use crate::config::{Config, FieldPath, ModelList, route_path};
use crate::policy::model_set::ModelSet;
use crate::snapshot::Route;

pub(super) fn compile(config: &Config, problems: &mut Problems) -> Vec<Arc<Route>> {
    let root = FieldPath::root();
    let global_guard = config
        .prompt_guard
        .as_ref()
        .and_then(|g| policies::compile_guard(g, &root.key("prompt_guard"), problems));
    let mut seen_paths: HashMap<String, &str> = HashMap::new();
    let mut routes: Vec<Arc<Route>> = Vec::with_capacity(config.routes.len());
    for (name, rc) in &config.routes {
        let at = root.key("routes").key(name);
        let path = route_path(name, rc.path.as_deref());
        check_path(&path, name, &at.key("path"), &mut seen_paths, problems);
        check_model_list(config, rc.models.as_ref(), &at.key("models"), problems);
        check_groups(config, &rc.groups, &at.key("groups"), problems);
        if let Some(model) = &rc.default_model {
            if !config.models.contains_key(model) {
                problems.add(at.key("default_model"), format!("unknown model {model:?}"));
            } else if let Some(ModelList::Only(list)) = &rc.models
                && !list.contains(model)
            {
                problems.add(
                    at.key("default_model"),
                    format!("model {model:?} is not among this route's models"),
                );
            }
        }
        let guard = match &rc.prompt_guard {
            Some(own) => policies::compile_guard(own, &at.key("prompt_guard"), problems),
            None => global_guard.clone(),
        };
        if let Some(d) = &rc.prompt_decorator {
            policies::check_decorator(d, &at.key("prompt_decorator"), problems);
        }
        routes.push(Arc::new(Route {
            name: name.as_str().into(),
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
        }));
    }
    routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    routes
}

fn check_path<'a>(
    path: &str,
    name: &'a str,
    at: &FieldPath,
    seen: &mut HashMap<String, &'a str>,
    problems: &mut Problems,
) {
    if !path.starts_with('/') {
        problems.add(
            at.clone(),
            format!("route path {path:?} must start with '/'"),
        );
    } else if path.len() > 1 && path.ends_with('/') {
        problems.add(
            at.clone(),
            format!("route path {path:?} must not end with '/'"),
        );
    } else if path.split('/').any(|s| s == "v1") {
        problems.add(
            at.clone(),
            format!("route path {path:?} must not contain /v1: it is added by the gateway"),
        );
    } else if path.contains(['?', '#', ' ']) {
        problems.add(
            at.clone(),
            format!("route path {path:?} holds a character that cannot be in a path"),
        );
    } else if let Some(other) = seen.insert(path.to_owned(), name) {
        problems.add(
            at.clone(),
            format!("route path {path:?} is already used by route {other:?}"),
        );
    }
}
