//! `/admin/v1/.../keys`: keys kept in the store. A key's secret is in the answer that makes it
//! (create, rotate) and nowhere else: the store keeps its SHA-256 and a short prefix.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::consumers::Page;
use super::{
    Admin, AdminError, Body, Idempotent, caught_up, duration, from_value, page_limit, store_of,
};
use crate::config::LimitConfig;
use crate::snapshot::Snapshot;
use crate::state::AppState;
use crate::store::{KeyCreated, KeyRecord, KeySpec, NewKey, now_ms};

/// How long the old secret of a rotated key keeps working, unless `grace` says otherwise.
const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    #[serde(default)]
    name: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    expires_at: Option<String>,
    /// From now: `30d`, `12h`.
    #[serde(default)]
    expires_in: Option<String>,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    groups: Option<Vec<String>>,
    #[serde(default)]
    budgets: Vec<LimitConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// How long the old secret keeps working (default 1h; `0s` ends it at once).
    #[serde(default)]
    grace: Option<String>,
}

pub async fn list(
    _admin: Admin,
    State(state): State<Arc<AppState>>,
    Path(consumer): Path<String>,
    Query(page): Query<Page>,
) -> Result<Response, AdminError> {
    let limit = page_limit(page.limit)?;
    let sync = store_of(&state)?;
    sync.store.consumer(&consumer).await?;
    let data = sync
        .store
        .list_keys(&consumer, page.after.as_deref().unwrap_or(""), limit)
        .await?;
    let next = (data.len() as i64 == limit)
        .then(|| data.last().map(|k| k.id.clone()))
        .flatten();
    let data: Vec<Value> = data.iter().map(|k| shown(&state.snapshot(), k)).collect();
    Ok(axum::Json(json!({"data": data, "next": next})).into_response())
}

pub async fn get(
    _admin: Admin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    let record = store_of(&state)?.store.key(&id).await?;
    Ok(axum::Json(shown(&state.snapshot(), &record)).into_response())
}

pub async fn create(
    admin: Admin,
    State(state): State<Arc<AppState>>,
    Path(consumer): Path<String>,
    headers: HeaderMap,
    body: Body<NewKeyBody>,
) -> Result<Response, AdminError> {
    let sync = store_of(&state)?;
    let idempotent = Idempotent::of(&headers, &format!("POST keys {consumer}"), &body.raw)?;
    if let Some(i) = &idempotent
        && let Some(replay) = i.replay(sync, StatusCode::CREATED).await?
    {
        return Ok(replay);
    }
    let b = body.value;
    let expires_at = match (b.expires_at, b.expires_in) {
        (Some(_), Some(_)) => {
            return Err(AdminError::Invalid(
                "give expires_at or expires_in, not both".into(),
            ));
        }
        (Some(at), None) => Some(timestamp("expires_at", &at)?),
        (None, Some(d)) => Some(now_ms() + millis(duration("expires_in", &d)?)),
        (None, None) => None,
    };
    let key = NewKey {
        name: b.name,
        spec: KeySpec {
            models: b.models,
            groups: b.groups,
            budgets: b.budgets,
        },
        expires_at,
    };
    check_key(&state.snapshot(), &consumer, &key.spec)?;
    let created = sync
        .store
        .create_key(
            &admin.actor,
            &consumer,
            &key,
            idempotent.as_ref().map(Idempotent::for_store),
        )
        .await?;
    caught_up(&state).await;
    Ok((
        StatusCode::CREATED,
        axum::Json(with_secret(&state, created)),
    )
        .into_response())
}

/// Changes name, expiry, models, groups or budgets; `null` clears one.
pub async fn update(
    admin: Admin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Body<Map<String, Value>>,
) -> Result<Response, AdminError> {
    let sync = store_of(&state)?;
    let mut record = sync.store.key(&id).await?;
    apply_patch(&mut record, body.value)?;
    check_key(&state.snapshot(), &record.consumer, &record.spec)?;
    let changed = record.clone();
    let record = sync
        .store
        .update_key(&admin.actor, &id, move |r| {
            r.name = changed.name;
            r.spec = changed.spec;
            r.expires_at = changed.expires_at;
        })
        .await?;
    caught_up(&state).await;
    Ok(axum::Json(shown(&state.snapshot(), &record)).into_response())
}

pub async fn rotate(
    admin: Admin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body<RotateBody>,
) -> Result<Response, AdminError> {
    let sync = store_of(&state)?;
    let idempotent = Idempotent::of(&headers, &format!("POST rotate {id}"), &body.raw)?;
    if let Some(i) = &idempotent
        && let Some(replay) = i.replay(sync, StatusCode::OK).await?
    {
        return Ok(replay);
    }
    let grace = match body.value.grace {
        Some(g) => duration("grace", &g)?,
        None => DEFAULT_GRACE,
    };
    let rotated = sync
        .store
        .rotate_key(
            &admin.actor,
            &id,
            grace,
            idempotent.as_ref().map(Idempotent::for_store),
        )
        .await?;
    caught_up(&state).await;
    Ok(axum::Json(with_secret(&state, rotated)).into_response())
}

pub async fn revoke(
    admin: Admin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    let record = store_of(&state)?
        .store
        .revoke_key(&admin.actor, &id)
        .await?;
    caught_up(&state).await;
    Ok(axum::Json(shown(&state.snapshot(), &record)).into_response())
}

/// What the key and its consumer used of their budgets in the current windows (from the
/// limit engine's own counters: Redis with several nodes).
pub async fn spend(
    _admin: Admin,
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, AdminError> {
    let snapshot = state.snapshot();
    let record = store_of(&state)?.store.key(&id).await?;
    let limits = &snapshot.rate_limits;
    let unreachable = |e: crate::policy::limits::StoreError| {
        AdminError::StoreDown(format!("the limit store cannot be read: {e}"))
    };
    let key = match snapshot.managed_key(&id).and_then(|k| k.budgets.clone()) {
        Some(b) => limits.spend(&b).await.map_err(unreachable)?,
        None => Vec::new(),
    };
    let consumer = match snapshot
        .consumer_by_name(&record.consumer)
        .and_then(|c| c.budgets.clone())
    {
        Some(b) => limits.spend(&b).await.map_err(unreachable)?,
        None => Vec::new(),
    };
    Ok(axum::Json(json!({
        "key": id,
        "consumer": record.consumer,
        "key_budgets": key,
        "consumer_budgets": consumer,
    }))
    .into_response())
}

/// A key as the API shows it: the record, how it stands now, and when it was last used
/// (this node's latest knowledge, fresher than the store's).
fn shown(snapshot: &Snapshot, record: &KeyRecord) -> Value {
    let mut value = serde_json::to_value(record).unwrap_or_default();
    let now = now_ms();
    let status = if record.revoked_at.is_some() {
        "revoked"
    } else if record.expires_at.is_some_and(|t| now >= t) {
        "expired"
    } else if record.previous_until.is_some_and(|t| now < t) {
        "rotating"
    } else {
        "active"
    };
    if let Some(object) = value.as_object_mut() {
        object.insert("status".into(), json!(status));
        let seen = snapshot
            .managed_key(&record.id)
            .map(|k| k.last_used_ms.load(std::sync::atomic::Ordering::Relaxed))
            .filter(|t| *t > 0)
            .max(record.last_used_at);
        if let Some(t) = seen {
            object.insert(
                "last_used_at".into(),
                json!(crate::telemetry::clock::rfc3339_of_unix_ms(t)),
            );
        }
    }
    value
}

fn with_secret(state: &AppState, created: KeyCreated) -> Value {
    let mut value = shown(&state.snapshot(), &created.record);
    if let Some(object) = value.as_object_mut() {
        object.insert("secret".into(), json!(created.secret));
    }
    value
}

/// A key never has more than its consumer: its groups and models must be the consumer's.
fn check_key(snapshot: &Snapshot, consumer: &str, spec: &KeySpec) -> Result<(), AdminError> {
    let owner = snapshot
        .consumer_by_name(consumer)
        .filter(|c| c.from_store)
        .ok_or_else(|| {
            AdminError::NotFound(format!("consumer {consumer:?} not found in the store"))
        })?;
    let mut problems = Vec::new();
    for (i, g) in spec.groups.iter().flatten().enumerate() {
        if !owner.groups.contains(g) {
            problems.push(format!(
                "groups[{i}]: consumer {consumer:?} is not in group {g:?}"
            ));
        }
    }
    for (i, m) in spec.models.iter().flatten().enumerate() {
        if !owner.models.contains(m) {
            problems.push(format!(
                "models[{i}]: consumer {consumer:?} may not use model {m:?}"
            ));
        }
    }
    problems.extend(crate::snapshot::limit_problems("budgets", &spec.budgets));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(AdminError::Invalid(problems.join("; ")))
    }
}

fn apply_patch(record: &mut KeyRecord, patch: Map<String, Value>) -> Result<(), AdminError> {
    for (field, value) in patch {
        match field.as_str() {
            "name" => record.name = from_value(value)?,
            "expires_at" => {
                record.expires_at = match value {
                    Value::Null => None,
                    Value::String(at) => Some(timestamp("expires_at", &at)?),
                    _ => {
                        return Err(AdminError::Invalid(
                            "expires_at: an RFC 3339 time or null".into(),
                        ));
                    }
                }
            }
            "expires_in" => {
                let text: String = from_value(value)?;
                record.expires_at = Some(now_ms() + millis(duration("expires_in", &text)?));
            }
            "models" => record.spec.models = from_value(value)?,
            "groups" => record.spec.groups = from_value(value)?,
            "budgets" => {
                record.spec.budgets = match value {
                    Value::Null => Vec::new(),
                    v => from_value(v)?,
                }
            }
            other => {
                return Err(AdminError::Invalid(format!(
                    "unknown field {other:?}: expected name, expires_at, expires_in, models, groups or budgets"
                )));
            }
        }
    }
    Ok(())
}

/// RFC 3339 (`2027-01-01T00:00:00Z`) to Unix ms.
fn timestamp(field: &str, text: &str) -> Result<i64, AdminError> {
    let at = humantime::parse_rfc3339_weak(text).map_err(|e| {
        AdminError::Invalid(format!(
            "{field}: {text:?} is not an RFC 3339 time like 2027-01-31T00:00:00Z ({e})"
        ))
    })?;
    Ok(at.duration_since(UNIX_EPOCH).map(millis).unwrap_or(0))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}
