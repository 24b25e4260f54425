//! Route ACLs and per-consumer model access.

use std::collections::HashSet;
use std::sync::Arc;

use crate::auth::Caller;
use crate::config::ModelList;
use crate::error::GatewayError;
use crate::snapshot::{Model, Route, Snapshot};

/// A set of model names, possibly "every model".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSet {
    All,
    Only(HashSet<String>),
}

impl ModelSet {
    pub fn none() -> Self {
        ModelSet::Only(HashSet::new())
    }

    pub fn from_list(list: Option<&ModelList>) -> Self {
        match list {
            Some(ModelList::All(_)) => ModelSet::All,
            Some(ModelList::Only(models)) => ModelSet::Only(models.iter().cloned().collect()),
            None => ModelSet::none(),
        }
    }

    pub fn contains(&self, model: &str) -> bool {
        match self {
            ModelSet::All => true,
            ModelSet::Only(set) => set.contains(model),
        }
    }

    pub fn union(self, other: &ModelSet) -> ModelSet {
        match (self, other) {
            (ModelSet::All, _) | (_, ModelSet::All) => ModelSet::All,
            (ModelSet::Only(mut a), ModelSet::Only(b)) => {
                a.extend(b.iter().cloned());
                ModelSet::Only(a)
            }
        }
    }
}

/// What the caller wants to do with a model; embeddings can be open to everyone per model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Chat,
    Embeddings,
}

/// 403 unless the route is open to every consumer or the caller is in one of its groups.
pub fn check_route(route: &Route, caller: &Caller) -> Result<(), GatewayError> {
    if route.groups.is_empty()
        || route
            .groups
            .iter()
            .any(|g| caller.acting().groups.contains(g))
    {
        return Ok(());
    }
    Err(GatewayError::RouteForbidden {
        route: route.prefix.clone(),
        groups: route.groups.join(", "),
    })
}

/// The model a request may use: the one it names (or the route's default), if it exists, the
/// route serves it, and the caller may use it.
pub fn resolve_model(
    snapshot: &Snapshot,
    route: &Route,
    caller: &Caller,
    requested: Option<&str>,
    purpose: Purpose,
) -> Result<Arc<Model>, GatewayError> {
    let name = requested
        .or(route.default_model.as_deref())
        .ok_or(GatewayError::ModelMissing)?;
    let model = snapshot
        .model(name)
        .filter(|_| route.models.contains(name))
        .ok_or_else(|| GatewayError::ModelNotFound(name.to_owned()))?;
    let open = purpose == Purpose::Embeddings && model.embeddings_for_all;
    if open || caller.models().contains(name) {
        Ok(model)
    } else {
        Err(GatewayError::ModelForbidden(name.to_owned()))
    }
}

/// The models `/v1/models` shows this caller on this route (not those of providers that
/// cannot serve, e.g. for lack of a key).
pub fn visible_models<'a>(
    snapshot: &'a Snapshot,
    route: &'a Route,
    caller: &'a Caller,
) -> impl Iterator<Item = &'a Arc<Model>> {
    snapshot.models().filter(move |m| {
        m.listed
            && m.pool.servable()
            && route.models.contains(&m.name)
            && caller.models().contains(&m.name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(names: &[&str]) -> ModelSet {
        ModelSet::Only(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn set_algebra() {
        assert_eq!(only(&["a"]).union(&only(&["b"])), only(&["a", "b"]));
        assert_eq!(only(&["a"]).union(&ModelSet::All), ModelSet::All);
        assert!(!ModelSet::none().contains("a"));
    }
}
