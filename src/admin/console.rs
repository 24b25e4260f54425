//! What the web console shows beyond the plain admin API: an overview of the latest hour or
//! day (requests, errors, latency percentiles, tokens, cost, per model and per consumer, and a
//! time series), the request log with filters, usage per consumer/key/model/day (CSV too), and
//! the playground, which sends a chat through the real pipeline as a chosen consumer. The
//! figures come from the same request records that feed `/metrics` and the request log.
//!
//! The page itself (`console/`) is plain HTML, CSS and JavaScript embedded in the binary: no
//! build step, no run-time Node, nothing fetched from outside the gateway.

use std::collections::HashMap;
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
use crate::telemetry::recent::{RecentRequest, RecentView, Sums};

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

/// How many consumers the overview lists (the busiest); the rest are counted.
const CONSUMERS_SHOWN: usize = 100;

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
    let Some(recent) = &state.recent else {
        return Err(AdminError::NotFound(
            "the console needs the admin listener".into(),
        ));
    };
    let view = recent.view();
    let body = super::off_workers(move || overview_of(&view, now_ms(), window_ms)).await?;
    Ok(axum::Json(body).into_response())
}

fn overview_of(view: &RecentView, now: i64, window_ms: i64) -> Value {
    let since = now - window_ms;
    // 60 buckets over the window.
    let bucket_ms = (window_ms / 60).max(1000);
    let mut total = Tally::default();
    let mut models: HashMap<&str, Tally> = HashMap::new();
    let mut consumers: HashMap<&str, Tally> = HashMap::new();
    let mut series = [(0u64, 0u64); 60];
    view.fold_since(since, (), |(), r| {
        total.add(r);
        models
            .entry(r.model.as_deref().unwrap_or("(none)"))
            .or_default()
            .add(r);
        consumers
            .entry(r.consumer.as_deref().unwrap_or("(unauthenticated)"))
            .or_default()
            .add(r);
        let i = (((r.at_ms - since) / bucket_ms).max(0) as usize).min(59);
        series[i].0 += 1;
        series[i].1 += u64::from(r.status >= 400);
    });
    let report = |(name, t): (&str, Tally), key: &str| -> Value {
        let mut v = t.report();
        v[key] = json!(name);
        v
    };
    let mut models: Vec<(&str, Tally)> = models.into_iter().collect();
    models.sort_unstable_by_key(|(name, _)| *name);
    let consumers_total = consumers.len();
    let mut consumers: Vec<(&str, Tally)> = consumers.into_iter().collect();
    consumers.sort_unstable_by(|a, b| {
        b.1.sums
            .requests
            .cmp(&a.1.sums.requests)
            .then_with(|| a.0.cmp(b.0))
    });
    consumers.truncate(CONSUMERS_SHOWN);
    json!({
        "window_seconds": window_ms / 1000,
        "since": since,
        "bucket_seconds": bucket_ms / 1000,
        "total": total.report(),
        "models": models.into_iter().map(|m| report(m, "model")).collect::<Vec<_>>(),
        "consumers": consumers.into_iter().map(|c| report(c, "consumer")).collect::<Vec<_>>(),
        "consumers_total": consumers_total,
        "series": series.iter().map(|(n, e)| json!({"requests": n, "errors": e})).collect::<Vec<_>>(),
        "kept": crate::telemetry::recent::CAPACITY,
    })
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
    let view = recent.view();
    let page = super::off_workers(move || {
        view.page(q.before.unwrap_or(u64::MAX), limit, |r| {
            q.consumer
                .as_ref()
                .is_none_or(|c| r.consumer.as_deref() == Some(c.as_str()))
                && q.model
                    .as_ref()
                    .is_none_or(|m| r.model.as_deref() == Some(m.as_str()))
                && status
                    .as_ref()
                    .is_none_or(|(lo, hi)| (*lo..=*hi).contains(&r.status))
        })
    })
    .await?;
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
    /// `json` (default) or `csv` (every row, for export).
    #[serde(default)]
    format: Option<String>,
    /// Rows of a JSON page (1..=1000, default 100), newest day first.
    #[serde(default)]
    limit: Option<i64>,
    /// Rows to skip (the `next_offset` of the previous page).
    #[serde(default)]
    offset: Option<usize>,
}

type DayRow = (String, String, String, String);

/// Requests, tokens and cost per day, consumer, key and model over the kept requests.
pub async fn usage_by_day(
    _admin: Admin,
    State(state): State<Arc<AppState>>,
    Query(q): Query<UsageQuery>,
) -> Result<Response, AdminError> {
    let csv = match q.format.as_deref().unwrap_or("json") {
        "csv" => true,
        "json" => false,
        other => {
            return Err(AdminError::Invalid(format!(
                "format: {other:?} is not json or csv"
            )));
        }
    };
    let limit = page_limit(q.limit)? as usize;
    let offset = q.offset.unwrap_or(0);
    let Some(recent) = &state.recent else {
        return Ok(axum::Json(json!({"data": [], "next_offset": null})).into_response());
    };
    let view = recent.view();
    let rows = super::off_workers(move || {
        const DAY_MS: i64 = 86_400_000;
        let rows: HashMap<(i64, &str, &str, &str), Sums> =
            view.fold_since(i64::MIN, HashMap::new(), |mut m, r| {
                m.entry((
                    r.at_ms.div_euclid(DAY_MS),
                    r.consumer.as_deref().unwrap_or_default(),
                    r.key_id.as_deref().unwrap_or_default(),
                    r.model.as_deref().unwrap_or_default(),
                ))
                .or_default()
                .add(r);
                m
            });
        let mut rows: Vec<(DayRow, Sums)> = rows
            .into_iter()
            .map(|((d, c, k, m), t)| {
                let mut day = crate::telemetry::clock::rfc3339_of_unix_ms(d * DAY_MS);
                day.truncate(10); // `2026-12-04`
                ((day, c.into(), k.into(), m.into()), t)
            })
            .collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        rows
    })
    .await?;
    if csv {
        return Ok(usage_csv(&rows));
    }
    let total = rows.len();
    // Newest day first; within a day by consumer, key, model.
    let mut days: Vec<&(DayRow, Sums)> = rows.iter().collect();
    days.sort_by(|a, b| b.0.0.cmp(&a.0.0));
    let data: Vec<Value> = days
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|((day, consumer, key, model), t)| {
            let mut row = json!(t);
            row["day"] = json!(day);
            row["consumer"] = json!(consumer);
            row["key"] = json!(key);
            row["model"] = json!(model);
            row
        })
        .collect();
    let next = (offset + limit < total).then_some(offset + limit);
    Ok(axum::Json(json!({"data": data, "total": total, "next_offset": next})).into_response())
}

fn usage_csv(rows: &[(DayRow, Sums)]) -> Response {
    let mut csv = String::from(
        "day,consumer,key,model,requests,errors,prompt_tokens,completion_tokens,cost_usd\n",
    );
    for ((day, consumer, key, model), t) in rows {
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
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"tollgate-usage.csv\"",
            ),
        ],
        csv,
    )
        .into_response()
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
    let models: Vec<&str> = snapshot.models().map(|m| &*m.name).collect();
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
        .filter(|c| *c.name > *after)
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
