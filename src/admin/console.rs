//! What the web console shows beyond the plain admin API: an overview of the latest hour or
//! day (requests, errors, latency percentiles, tokens, cost, per model and per consumer, and a
//! time series), the request log with filters, usage per consumer/key/model/day (CSV too), and
//! the playground, which sends a chat through the real pipeline as a chosen consumer. The
//! figures come from the same request records that feed `/metrics` and the request log.
//!
//! The page itself (`console/`) is plain HTML, CSS and JavaScript embedded in the binary: no
//! build step, no run-time Node, nothing fetched from outside the gateway.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, Request, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, AdminError, page_limit};
use crate::state::AppState;
use crate::store::now_ms;
use crate::telemetry::recent::{RecentRequest, Sums};

/// The console's files, embedded at build time.
const FILES: [(&str, &str, &str); 3] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("console/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("console/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("console/style.css"),
    ),
];

/// `/` and `/console/<file>`: the page needs no sign-in (it holds nothing); its data does.
pub async fn asset(path: Option<Path<String>>) -> Response {
    let name = path.map_or_else(|| "index.html".to_owned(), |Path(p)| p);
    match FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, kind, text)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
                // Only this origin's scripts, styles and data: nothing leaves the gateway.
                (
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(
                        "default-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'",
                    ),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            *text,
        )
            .into_response(),
        None => AdminError::NotFound(format!("no console file {name:?}")).into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverviewQuery {
    /// `1h` (default) or `1d`, or any duration up to what the ring holds.
    #[serde(default)]
    window: Option<String>,
}

/// Sums and the latencies behind the percentiles.
#[derive(Default)]
struct Tally {
    sums: Sums,
    latencies: Vec<f64>,
}

impl Tally {
    fn add(&mut self, r: &RecentRequest) {
        self.sums.add(r);
        self.latencies.push(r.latency_ms);
    }

    fn report(mut self) -> Value {
        self.latencies.sort_by(f64::total_cmp);
        let pct = |p: f64| -> Option<f64> {
            let n = self.latencies.len();
            (n > 0).then(|| self.latencies[((n as f64 * p).ceil() as usize).clamp(1, n) - 1])
        };
        let mut report = json!(self.sums);
        report["p50_ms"] = json!(pct(0.50));
        report["p99_ms"] = json!(pct(0.99));
        report
    }
}

/// Totals, per model, per consumer, and requests and errors over time, for the window.
pub async fn overview(
    _admin: Admin,
    State(state): State<Arc<AppState>>,
    Query(q): Query<OverviewQuery>,
) -> Result<Response, AdminError> {
    let window = super::duration("window", q.window.as_deref().unwrap_or("1h"))?;
    let window_ms = i64::try_from(window.as_millis())
        .unwrap_or(i64::MAX / 2)
        .max(60_000);
    let now = now_ms();
    let since = now - window_ms;
    // 60 buckets over the window.
    let bucket_ms = (window_ms / 60).max(1000);
    let Some(recent) = &state.recent else {
        return Err(AdminError::NotFound(
            "the console needs the admin listener".into(),
        ));
    };
    type Acc = (
        Tally,
        BTreeMap<String, Tally>,
        BTreeMap<String, Tally>,
        Vec<(u64, u64)>,
    );
    let (total, models, consumers, series) = recent.fold_since(
        since,
        (
            Tally::default(),
            BTreeMap::new(),
            BTreeMap::new(),
            vec![(0, 0); 60],
        ),
        |(mut total, mut models, mut consumers, mut series): Acc, r| {
            total.add(r);
            models
                .entry(r.model.clone().unwrap_or_else(|| "(none)".into()))
                .or_default()
                .add(r);
            consumers
                .entry(
                    r.consumer
                        .clone()
                        .unwrap_or_else(|| "(unauthenticated)".into()),
                )
                .or_default()
                .add(r);
            let i = (((r.at_ms - since) / bucket_ms).max(0) as usize).min(59);
            series[i].0 += 1;
            series[i].1 += u64::from(r.status >= 400);
            (total, models, consumers, series)
        },
    );
    let per = |m: BTreeMap<String, Tally>, key: &str| -> Vec<Value> {
        m.into_iter()
            .map(|(name, t)| {
                let mut v = t.report();
                v[key] = json!(name);
                v
            })
            .collect()
    };
    Ok(axum::Json(json!({
        "window_seconds": window_ms / 1000,
        "since": since,
        "bucket_seconds": bucket_ms / 1000,
        "total": total.report(),
        "models": per(models, "model"),
        "consumers": per(consumers, "consumer"),
        "series": series.iter().map(|(n, e)| json!({"requests": n, "errors": e})).collect::<Vec<_>>(),
        "kept": crate::telemetry::recent::CAPACITY,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    #[serde(default)]
    consumer: Option<String>,
    #[serde(default)]
    model: Option<String>,
    /// A status (`429`) or a class (`4xx`, `5xx`, `error` for any ≥ 400).
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    /// Requests older than this `seq` (the `next` of the previous page).
    #[serde(default)]
    before: Option<u64>,
}

/// The latest requests, newest first, filtered and paginated; payloads only where the route
/// logs them.
pub async fn logs(
    _admin: Admin,
    State(state): State<Arc<AppState>>,
    Query(q): Query<LogQuery>,
) -> Result<Response, AdminError> {
    let limit = page_limit(q.limit)? as usize;
    let status = q.status.as_deref().map(status_filter).transpose()?;
    let Some(recent) = &state.recent else {
        return Ok(axum::Json(json!({"data": [], "next": null})).into_response());
    };
    let page = recent.page(q.before.unwrap_or(u64::MAX), limit, |r| {
        q.consumer
            .as_ref()
            .is_none_or(|c| r.consumer.as_ref() == Some(c))
            && q.model.as_ref().is_none_or(|m| r.model.as_ref() == Some(m))
            && status
                .as_ref()
                .is_none_or(|(lo, hi)| (*lo..=*hi).contains(&r.status))
    });
    let next = (page.len() == limit)
        .then(|| page.last().map(|r| r.seq))
        .flatten();
    Ok(axum::Json(json!({"data": page, "next": next})).into_response())
}

fn status_filter(text: &str) -> Result<(u16, u16), AdminError> {
    match text {
        "error" => Ok((400, 599)),
        "2xx" | "3xx" | "4xx" | "5xx" => {
            let class = u16::from(text.as_bytes()[0] - b'0') * 100;
            Ok((class, class + 99))
        }
        n => n.parse().map(|s| (s, s)).map_err(|_| {
            AdminError::Invalid(format!("status: {n:?} is not a status, 2xx..5xx or error"))
        }),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// `json` (default) or `csv`.
    #[serde(default)]
    format: Option<String>,
}

/// Requests, tokens and cost per day, consumer, key and model over the kept requests.
pub async fn usage_by_day(
    _admin: Admin,
    State(state): State<Arc<AppState>>,
    Query(q): Query<UsageQuery>,
) -> Result<Response, AdminError> {
    let Some(recent) = &state.recent else {
        return Ok(axum::Json(json!({"data": []})).into_response());
    };
    type Row = (String, String, String, String);
    let rows: BTreeMap<Row, Sums> = recent.fold_since(i64::MIN, BTreeMap::new(), |mut m, r| {
        m.entry((
            r.time.get(..10).unwrap_or_default().to_owned(),
            r.consumer.clone().unwrap_or_default(),
            r.key_id.clone().unwrap_or_default(),
            r.model.clone().unwrap_or_default(),
        ))
        .or_default()
        .add(r);
        m
    });
    match q.format.as_deref().unwrap_or("json") {
        "csv" => {
            let mut csv = String::from(
                "day,consumer,key,model,requests,errors,prompt_tokens,completion_tokens,cost_usd\n",
            );
            for ((day, consumer, key, model), t) in &rows {
                csv.push_str(&format!(
                    "{day},{},{},{},{},{},{},{},{:.6}\n",
                    csv_field(consumer),
                    csv_field(key),
                    csv_field(model),
                    t.requests,
                    t.errors,
                    t.prompt_tokens,
                    t.completion_tokens,
                    t.cost_usd
                ));
            }
            Ok((
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"tollgate-usage.csv\"",
                    ),
                ],
                csv,
            )
                .into_response())
        }
        "json" => {
            let data: Vec<Value> = rows
                .into_iter()
                .map(|((day, consumer, key, model), t)| {
                    let mut row = json!(t);
                    row["day"] = json!(day);
                    row["consumer"] = json!(consumer);
                    row["key"] = json!(key);
                    row["model"] = json!(model);
                    row
                })
                .collect();
            Ok(axum::Json(json!({"data": data})).into_response())
        }
        other => Err(AdminError::Invalid(format!(
            "format: {other:?} is not json or csv"
        ))),
    }
}

/// A CSV field, quoted when it holds a comma, quote or line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaygroundQuery {
    /// The consumer to speak as.
    consumer: String,
    /// The route to send through (default: the first route).
    #[serde(default)]
    route: Option<String>,
}

/// `POST /admin/v1/playground?consumer=&route=` with an OpenAI chat body: sent through the
/// real pipeline as that consumer (its models, limits, guards; logged like any request),
/// streamed back when the body asks for a stream.
pub async fn playground(
    _admin: Admin,
    State(state): State<Arc<AppState>>,
    Query(q): Query<PlaygroundQuery>,
    request: Request<Body>,
) -> Result<Response, AdminError> {
    let snapshot = state.snapshot();
    let consumer = snapshot
        .consumer_by_name(&q.consumer)
        .cloned()
        .ok_or_else(|| AdminError::NotFound(format!("consumer {:?} not found", q.consumer)))?;
    let prefix = match &q.route {
        Some(name) => snapshot
            .route_prefix(name)
            .ok_or_else(|| AdminError::NotFound(format!("route {name:?} not found")))?,
        None => snapshot
            .first_route_prefix()
            .ok_or_else(|| AdminError::NotFound("no route is configured".into()))?,
    };
    let (mut parts, body) = request.into_parts();
    parts.uri = format!("{prefix}/v1/chat/completions")
        .parse()
        .map_err(|_| AdminError::Invalid("the route's path is not a valid URI".into()))?;
    parts.method = axum::http::Method::POST;
    parts.headers.remove(header::AUTHORIZATION);
    parts.extensions.insert(crate::proxy::ActAs(consumer));
    let response =
        crate::proxy::handle(State(state.clone()), Request::from_parts(parts, body)).await;
    Ok(response)
}

/// What the console's forms choose from: routes, models and groups.
pub async fn catalog(_admin: Admin, State(state): State<Arc<AppState>>) -> Response {
    let snapshot = state.snapshot();
    let models: Vec<&str> = snapshot.models().map(|m| m.name.as_str()).collect();
    axum::Json(json!({
        "routes": snapshot.route_names(),
        "models": models,
        "groups": snapshot.group_names(),
        "store": state.store.is_some(),
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryQuery {
    /// Names containing this (case-insensitive).
    #[serde(default)]
    q: Option<String>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

/// Every consumer, file and store, in name order, filtered and paginated, with where it is
/// kept (file consumers are shown read-only).
pub async fn directory(
    _admin: Admin,
    State(state): State<Arc<AppState>>,
    Query(q): Query<DirectoryQuery>,
) -> Result<Response, AdminError> {
    let limit = page_limit(q.limit)? as usize;
    let snapshot = state.snapshot();
    let needle = q.q.unwrap_or_default().to_lowercase();
    let after = q.after.unwrap_or_default();
    let mut names: Vec<&Arc<crate::snapshot::Consumer>> = snapshot
        .consumers()
        .filter(|c| c.name.as_str() > after.as_str())
        .filter(|c| needle.is_empty() || c.name.to_lowercase().contains(&needle))
        .collect();
    let end = limit.min(names.len());
    if end < names.len() {
        names.select_nth_unstable_by(end, |a, b| a.name.cmp(&b.name));
    }
    names.truncate(end);
    names.sort_by(|a, b| a.name.cmp(&b.name));
    let data: Vec<Value> = names
        .iter()
        .map(|c| {
            json!({"name": c.name, "source": if c.from_store { "store" } else { "file" },
                   "groups": c.groups, "custom_id": c.custom_id})
        })
        .collect();
    let next = (data.len() == limit)
        .then(|| names.last().map(|c| c.name.clone()))
        .flatten();
    Ok(axum::Json(json!({"data": data, "next": next})).into_response())
}
