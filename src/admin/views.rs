//! Read-only views: the OpenAPI document, the effective config (secrets redacted), targets'
//! health, recent usage, the audit log, and the store exported as config.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{Admin, AdminError, page_limit, store_of};
use crate::state::AppState;
use crate::store::now_ms;
use crate::telemetry::recent::Sums;

const OPENAPI: &str = include_str!("openapi.json");

/// The API's description (no sign-in needed: it holds nothing secret).
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// The config file as written (before `${VAR}` substitution, so values from the environment
/// never show) with anything secret-looking redacted, and what the store adds.
pub async fn config(_admin: Admin, State(state): State<Arc<AppState>>) -> Response {
    let snapshot = state.snapshot();
    let (file, text) = {
        let sources = state.sources.lock().unwrap_or_else(|p| p.into_inner());
        (sources.file.name.clone(), sources.file.text.clone())
    };
    let parsed: Value = serde_yaml_ng::from_str(&text).unwrap_or(Value::Null);
    let store = state.store.as_ref().map(|s| {
        json!({
            "url": s.store.display_url(),
            "reachable": s.is_reachable(),
            "revision": snapshot.store_revision,
            "keys": snapshot.managed_keys().count(),
        })
    });
    axum::Json(json!({"file": file, "config": redacted(parsed), "store": store})).into_response()
}

/// Field names whose values are secrets.
fn is_secret(field: &str) -> bool {
    let f = field.to_ascii_lowercase();
    [
        "key",
        "keys",
        "secret",
        "token",
        "tokens",
        "password",
        "authorization",
        "api_key",
        "client_secret",
        "headers",
    ]
    .iter()
    .any(|s| f == *s || f.ends_with(&format!("_{s}")))
}

fn redacted(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = if is_secret(&k) { hide(v) } else { redacted(v) };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redacted).collect()),
        Value::String(s) => Value::String(crate::store::redact_url(&s)),
        other => other,
    }
}

/// A secret's shape without its content: `${VAR}` references and digests stay (they are
/// not secrets and tell where the value comes from).
fn hide(value: Value) -> Value {
    match value {
        Value::String(s) if s.starts_with("${") || s.starts_with("sha256:") => Value::String(s),
        Value::String(_) | Value::Number(_) => Value::String("***".into()),
        Value::Array(items) => Value::Array(items.into_iter().map(hide).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, hide(v))).collect()),
        other => other,
    }
}

pub async fn targets(_admin: Admin, State(state): State<Arc<AppState>>) -> Response {
    axum::Json(crate::server::targets_report(&state.snapshot())).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    #[serde(default)]
    consumer: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    model: Option<String>,
    /// How many of the latest requests to list (totals cover every kept one).
    #[serde(default)]
    limit: Option<i64>,
}

/// Totals per consumer and model over the latest requests this node served (up to 100,000),
/// and the latest of them.
pub async fn usage(
    _admin: Admin,
    State(state): State<Arc<AppState>>,
    Query(q): Query<UsageQuery>,
) -> Result<Response, AdminError> {
    let limit = page_limit(q.limit)? as usize;
    let Some(recent) = &state.recent else {
        return Ok(axum::Json(json!({"totals": [], "requests": []})).into_response());
    };
    let view = recent.view();
    let (totals, requests) = super::off_workers(move || {
        let keep = |r: &crate::telemetry::recent::RecentRequest| {
            q.consumer
                .as_ref()
                .is_none_or(|c| r.consumer.as_deref() == Some(c.as_str()))
                && q.key.as_ref().is_none_or(|k| r.key_id.as_ref() == Some(k))
                && q.model
                    .as_ref()
                    .is_none_or(|m| r.model.as_deref() == Some(m.as_str()))
        };
        // Totals over every kept request; only the listed ones are copied.
        let totals: BTreeMap<(&str, &str), Sums> =
            view.fold_since(i64::MIN, BTreeMap::new(), |mut totals, r| {
                if keep(r) {
                    totals
                        .entry((
                            r.consumer.as_deref().unwrap_or_default(),
                            r.model.as_deref().unwrap_or_default(),
                        ))
                        .or_default()
                        .add(r);
                }
                totals
            });
        let totals: Vec<Value> = totals
            .into_iter()
            .map(|((consumer, model), sums)| {
                let mut row = json!(sums);
                row["consumer"] = json!(consumer);
                row["model"] = json!(model);
                row
            })
            .collect();
        (totals, view.page(u64::MAX, limit, keep))
    })
    .await?;
    Ok(axum::Json(json!({"totals": totals, "requests": requests})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    limit: Option<i64>,
    /// Entries older than this id (the last id of the previous page).
    #[serde(default)]
    before: Option<i64>,
}

pub async fn audit(
    _admin: Admin,
    State(state): State<Arc<AppState>>,
    Query(q): Query<AuditQuery>,
) -> Result<Response, AdminError> {
    let limit = page_limit(q.limit)?;
    let entries = store_of(&state)?
        .store
        .audit(q.before.unwrap_or(i64::MAX), limit)
        .await?;
    let next = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(axum::Json(json!({"data": entries, "next": next})).into_response())
}

/// The store's consumers as a `consumers:` section of a config file: keys as digests (only
/// those that work now), and a list of what a config file cannot say (expiry, per-key
/// narrowing and budgets, rotations in progress).
pub async fn export(
    _admin: Admin,
    State(state): State<Arc<AppState>>,
) -> Result<Response, AdminError> {
    store_of(&state)?;
    let sources = state.sources.lock().unwrap_or_else(|p| p.into_inner());
    let now = now_ms();
    let mut consumers = Map::new();
    let mut not_carried = Vec::new();
    for (name, record) in &sources.store.consumers {
        let mut c = match serde_json::to_value(&record.spec) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        };
        if let Some(Value::Object(meta)) = c.remove("metadata")
            && !meta.is_empty()
        {
            not_carried.push(format!(
                "consumers.{name}.metadata: a config file has no metadata"
            ));
        }
        for field in ["groups", "emails", "budgets"] {
            if c.get(field)
                .is_some_and(|v| v.as_array().is_some_and(|a| a.is_empty()))
            {
                c.remove(field);
            }
        }
        c.insert("keys".into(), Value::Array(Vec::new()));
        consumers.insert(name.clone(), Value::Object(c));
    }
    let mut keys: Vec<_> = sources.store.keys.values().collect();
    keys.sort_by(|a, b| a.id.cmp(&b.id));
    for key in keys {
        let at = format!("keys.{} ({})", key.id, key.consumer);
        if key.revoked_at.is_some() || key.expires_at.is_some_and(|t| now >= t) {
            not_carried.push(format!("{at}: revoked or expired, left out"));
            continue;
        }
        if key.expires_at.is_some() {
            not_carried.push(format!(
                "{at}: expiry dropped (a config file key does not expire)"
            ));
        }
        if key.spec != crate::store::KeySpec::default() {
            not_carried.push(format!("{at}: its own models, groups and budgets dropped"));
        }
        if key.previous_until.is_some_and(|t| now < t) {
            not_carried.push(format!(
                "{at}: the previous secret of a rotation in progress left out"
            ));
        }
        if let Some(Value::Array(list)) = consumers
            .get_mut(&key.consumer)
            .and_then(|c| c.get_mut("keys"))
        {
            list.push(json!(format!("sha256:{}", key.digest)));
        }
    }
    Ok(axum::Json(json!({"consumers": consumers, "not_carried": not_carried})).into_response())
}
