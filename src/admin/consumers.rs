//! `/admin/v1/consumers`: consumers kept in the store. Their settings are checked against the
//! running config (groups and models exist, emails and custom ids are not taken, budgets are
//! valid limits, the name is not a file consumer's) before anything is written.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, AdminError, Body, Idempotent, caught_up, from_value, page_limit, store_of};
use crate::config::ModelList;
use crate::snapshot::Snapshot;
use crate::state::AppState;
use crate::store::ConsumerSpec;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    #[serde(default)]
    pub limit: Option<i64>,
    /// The last name (or id) of the previous page.
    #[serde(default)]
    pub after: Option<String>,
}

pub async fn list(
    _admin: Admin,
    State(state): State<Arc<AppState>>,
    Query(page): Query<Page>,
) -> Result<Response, AdminError> {
    let limit = page_limit(page.limit)?;
    let sync = store_of(&state)?;
    let data = sync
        .store
        .list_consumers(page.after.as_deref().unwrap_or(""), limit)
        .await?;
    let next = (data.len() as i64 == limit)
        .then(|| data.last().map(|c| c.name.clone()))
        .flatten();
    Ok(axum::Json(json!({"data": data, "next": next})).into_response())
}

pub async fn get(
    _admin: Admin,
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, AdminError> {
    let record = store_of(&state)?.store.consumer(&name).await?;
    Ok(axum::Json(record).into_response())
}

pub async fn create(
    admin: Admin,
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body<Value>,
) -> Result<Response, AdminError> {
    let sync = store_of(&state)?;
    let idempotent = Idempotent::of(&headers, "POST consumers", &body.raw)?;
    if let Some(i) = &idempotent
        && let Some(replay) = i.replay(sync, StatusCode::CREATED).await?
    {
        return Ok(replay);
    }
    let mut fields = match body.value {
        Value::Object(fields) => fields,
        _ => return Err(AdminError::Invalid("the body must be a JSON object".into())),
    };
    let name = match fields.remove("name") {
        Some(Value::String(name)) => name,
        _ => return Err(AdminError::Invalid("name: a string is required".into())),
    };
    check_name(&name)?;
    let spec: ConsumerSpec = from_value(Value::Object(fields))?;
    let snapshot = state.snapshot();
    if snapshot
        .consumer_by_name(&name)
        .is_some_and(|c| !c.from_store)
    {
        return Err(AdminError::Conflict(format!(
            "consumer {name:?} is defined in the config file"
        )));
    }
    check_spec(&snapshot, &name, &spec)?;
    let record = sync
        .store
        .create_consumer(
            &admin.actor,
            &name,
            &spec,
            idempotent.as_ref().map(Idempotent::for_store),
        )
        .await?;
    caught_up(&state).await;
    Ok((StatusCode::CREATED, axum::Json(record)).into_response())
}

/// Replaces the fields the body names (`null` resets one); the rest stays.
pub async fn update(
    admin: Admin,
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Body<Value>,
) -> Result<Response, AdminError> {
    let sync = store_of(&state)?;
    let Value::Object(patch) = body.value else {
        return Err(AdminError::Invalid("the body must be a JSON object".into()));
    };
    let current = sync.store.consumer(&name).await?;
    let mut merged = match serde_json::to_value(&current.spec) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    for (field, value) in patch {
        if value.is_null() {
            merged.remove(&field);
        } else {
            merged.insert(field, value);
        }
    }
    let spec: ConsumerSpec = from_value(Value::Object(merged))?;
    check_spec(&state.snapshot(), &name, &spec)?;
    let record = sync
        .store
        .update_consumer(&admin.actor, &name, &spec)
        .await?;
    caught_up(&state).await;
    Ok(axum::Json(record).into_response())
}

pub async fn delete(
    admin: Admin,
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, AdminError> {
    store_of(&state)?
        .store
        .delete_consumer(&admin.actor, &name)
        .await?;
    caught_up(&state).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Letters, digits and `._@-`, 1 to 128 of them: safe in URLs, logs and metric labels.
fn check_name(name: &str) -> Result<(), AdminError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'));
    if ok {
        Ok(())
    } else {
        Err(AdminError::Invalid(format!(
            "name: {name:?} must be 1 to 128 letters, digits or . _ @ -"
        )))
    }
}

/// What the snapshot's compile would refuse, found before the write.
fn check_spec(snapshot: &Snapshot, name: &str, spec: &ConsumerSpec) -> Result<(), AdminError> {
    let mut problems = Vec::new();
    for (i, g) in spec.groups.iter().enumerate() {
        if !snapshot.has_group(g) {
            problems.push(format!("groups[{i}]: unknown group {g:?}"));
        }
    }
    if let Some(ModelList::Only(models)) = &spec.models {
        for (i, m) in models.iter().enumerate() {
            if snapshot.model(m).is_none() {
                problems.push(format!("models[{i}]: unknown model {m:?}"));
            }
        }
    }
    for (i, email) in spec.emails.iter().enumerate() {
        let normalized = email.trim().to_ascii_lowercase();
        if !normalized.contains('@') {
            problems.push(format!("emails[{i}]: {email:?} is not an email address"));
        } else if let Some(other) = snapshot
            .consumer_by_email(&normalized)
            .filter(|c| *c.name != *name)
        {
            problems.push(format!(
                "emails[{i}]: {email:?} already belongs to consumer {:?}",
                other.name
            ));
        }
    }
    if let Some(other) = spec
        .custom_id
        .as_deref()
        .and_then(|id| snapshot.consumer_by_custom_id(id))
        .filter(|c| *c.name != *name)
    {
        problems.push(format!(
            "custom_id: already used by consumer {:?}",
            other.name
        ));
    }
    problems.extend(crate::snapshot::limit_problems("budgets", &spec.budgets));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(AdminError::Invalid(problems.join("; ")))
    }
}
