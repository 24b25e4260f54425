//! Route ACLs and per-consumer model access.

use std::sync::Arc;

use crate::auth::Caller;
use crate::error::GatewayError;
use crate::snapshot::{Model, Route, Snapshot};

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
    // A front end listing for all its users (chat stays enforced per user).
    let listed = snapshot
        .union_listing(&caller.consumer.name)
        .unwrap_or_else(|| caller.models());
    snapshot.models().filter(move |m| {
        m.listed && m.pool.servable() && route.models.contains(&m.name) && listed.contains(&m.name)
    })
}
