//! Prometheus metrics, derived from the request-log record at the one place it is written, so
//! the log and the metrics never disagree (streams included). Every label value is a name from
//! the config (route, consumer, model, provider) or a fixed word: nothing a client sends can
//! create a new series.

use std::collections::HashMap;
use std::hash::BuildHasher;

use crate::fast_hash::RandomState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

pub use super::sinks::SinkLabel;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::request_log::RequestRecord;
use crate::snapshot::Snapshot;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub consumer: String,
    pub model: String,
    pub provider: String,
    pub endpoint: String,
    pub status_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteConsumer {
    pub route: String,
    pub consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    pub route: String,
    pub consumer: String,
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelProvider {
    pub model: String,
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteModelProvider {
    pub route: String,
    pub model: String,
    pub provider: String,
}

/// The seed's label set (provider, model, consumer).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UsageLabels {
    pub provider: String,
    pub model: String,
    pub consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    #[prometheus(flatten)]
    pub usage: UsageLabels,
    /// prompt, completion, cached, reasoning
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndUserTokenLabels {
    #[prometheus(flatten)]
    pub tokens: TokenLabels,
    pub end_user: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_bytes: Family<BytesLabels, Counter>,
    response_bytes: Family<BytesLabels, Counter>,
    duration: Family<RouteModelProvider, Histogram>,
    upstream_duration: Family<ModelProvider, Histogram>,
    overhead: Family<RouteLabel, Histogram>,
    ttft: Family<ModelProvider, Histogram>,
    time_per_output_token: Family<ModelProvider, Histogram>,
    tokens: Family<TokenLabels, Counter>,
    end_user_tokens: Family<EndUserTokenLabels, Counter>,
    cost: Family<UsageLabels, FloatCounter>,
    seed_requests: Family<UsageLabels, Counter>,
    seed_prompt: Family<UsageLabels, Counter>,
    seed_completion: Family<UsageLabels, Counter>,
    seed_tokens: Family<UsageLabels, Counter>,
    seed_cost: Family<UsageLabels, FloatGauge>,
    rate_limited: Family<RouteConsumer, Counter>,
    guard_blocked: Family<RouteConsumer, Counter>,
    client_disconnects: Family<RouteConsumer, Counter>,
    retries: Family<ModelLabel, Counter>,
    failovers: Family<ModelLabel, Counter>,
    circuit_state: Family<ModelProvider, Gauge>,
    pub active_streams: Gauge,
    reloads: Family<ResultLabel, Counter>,
    pub sink_queue: Family<SinkLabel, Gauge>,
    pub sink_dropped: Family<SinkLabel, Counter>,
    limiter_errors: Counter,
    limiter_errors_seen: AtomicU64,
    jwks_errors: Counter,
    jwks_errors_seen: AtomicU64,
    /// Handles by label combination (bounded like the families: every label is a configured
    /// name or a fixed word), under the hash of their names.
    series: RwLock<HashMap<u64, Vec<Arc<Series>>>>,
    series_hasher: RandomState,
}

/// The labels one request is counted under, borrowed from its record.
#[derive(Hash)]
struct SeriesKey<'a> {
    route: &'a str,
    consumer: &'a str,
    model: &'a str,
    provider: &'a str,
    endpoint: &'a str,
    status_class: &'static str,
    usage_consumer: &'a str,
}

impl SeriesKey<'_> {
    fn route_consumer(&self) -> RouteConsumer {
        RouteConsumer {
            route: self.route.to_owned(),
            consumer: self.consumer.to_owned(),
        }
    }
}

fn status_class(status: u16) -> &'static str {
    match status / 100 {
        0 => "0xx",
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

#[derive(Clone, Copy)]
enum TokenKind {
    Prompt,
    Completion,
    Cached,
    Reasoning,
}

impl TokenKind {
    fn label(self) -> &'static str {
        match self {
            TokenKind::Prompt => "prompt",
            TokenKind::Completion => "completion",
            TokenKind::Cached => "cached",
            TokenKind::Reasoning => "reasoning",
        }
    }
}

/// Accessors of a [`Series`]' handles: `field: Type = labels;` makes the handle in the
/// family of the same name, under the labels `labels()` gives, the first time it is asked for.
macro_rules! series_handles {
    ($($field:ident: $metric:ty = $labels:ident;)*) => {
        $(
            fn $field(&self, m: &Metrics) -> &$metric {
                self.$field
                    .get_or_init(|| m.$field.get_or_create_owned(&self.$labels()))
            }
        )*
    };
}

/// One label combination's metric handles, each made in its family on first use (a series
/// appears in the output only once something was counted in it, as with `get_or_create`).
struct Series {
    route: String,
    consumer: String,
    model: String,
    provider: String,
    endpoint: String,
    status_class: &'static str,
    usage_consumer: String,
    requests: OnceLock<Counter>,
    request_bytes: OnceLock<Counter>,
    response_bytes: OnceLock<Counter>,
    duration: OnceLock<Histogram>,
    upstream_duration: OnceLock<Histogram>,
    overhead: OnceLock<Histogram>,
    ttft: OnceLock<Histogram>,
    time_per_output_token: OnceLock<Histogram>,
    seed_requests: OnceLock<Counter>,
    seed_prompt: OnceLock<Counter>,
    seed_completion: OnceLock<Counter>,
    seed_tokens: OnceLock<Counter>,
    tokens: [OnceLock<Counter>; 4],
    cost: OnceLock<FloatCounter>,
    seed_cost: OnceLock<FloatGauge>,
}

impl Series {
    fn new(key: &SeriesKey<'_>) -> Self {
        Self {
            route: key.route.to_owned(),
            consumer: key.consumer.to_owned(),
            model: key.model.to_owned(),
            provider: key.provider.to_owned(),
            endpoint: key.endpoint.to_owned(),
            status_class: key.status_class,
            usage_consumer: key.usage_consumer.to_owned(),
            requests: OnceLock::new(),
            request_bytes: OnceLock::new(),
            response_bytes: OnceLock::new(),
            duration: OnceLock::new(),
            upstream_duration: OnceLock::new(),
            overhead: OnceLock::new(),
            ttft: OnceLock::new(),
            time_per_output_token: OnceLock::new(),
            seed_requests: OnceLock::new(),
            seed_prompt: OnceLock::new(),
            seed_completion: OnceLock::new(),
            seed_tokens: OnceLock::new(),
            tokens: Default::default(),
            cost: OnceLock::new(),
            seed_cost: OnceLock::new(),
        }
    }

    fn is(&self, key: &SeriesKey<'_>) -> bool {
        self.route == key.route
            && self.consumer == key.consumer
            && self.model == key.model
            && self.provider == key.provider
            && self.endpoint == key.endpoint
            && self.status_class == key.status_class
            && self.usage_consumer == key.usage_consumer
    }

    fn request_labels(&self) -> RequestLabels {
        RequestLabels {
            route: self.route.clone(),
            consumer: self.consumer.clone(),
            model: self.model.clone(),
            provider: self.provider.clone(),
            endpoint: self.endpoint.clone(),
            status_class: self.status_class.to_owned(),
        }
    }

    fn bytes_labels(&self) -> BytesLabels {
        BytesLabels {
            route: self.route.clone(),
            consumer: self.consumer.clone(),
            provider: self.provider.clone(),
        }
    }

    fn model_provider(&self) -> ModelProvider {
        ModelProvider {
            model: self.model.clone(),
            provider: self.provider.clone(),
        }
    }

    fn usage_labels(&self) -> UsageLabels {
        UsageLabels {
            provider: self.provider.clone(),
            model: self.model.clone(),
            consumer: self.usage_consumer.clone(),
        }
    }

    fn token_labels(&self, kind: TokenKind) -> TokenLabels {
        TokenLabels {
            usage: self.usage_labels(),
            r#type: kind.label().to_owned(),
        }
    }

    fn route_model_provider(&self) -> RouteModelProvider {
        RouteModelProvider {
            route: self.route.clone(),
            model: self.model.clone(),
            provider: self.provider.clone(),
        }
    }

    fn route_label(&self) -> RouteLabel {
        RouteLabel {
            route: self.route.clone(),
        }
    }

    series_handles! {
        requests: Counter = request_labels;
        request_bytes: Counter = bytes_labels;
        response_bytes: Counter = bytes_labels;
        duration: Histogram = route_model_provider;
        upstream_duration: Histogram = model_provider;
        overhead: Histogram = route_label;
        ttft: Histogram = model_provider;
        time_per_output_token: Histogram = model_provider;
        seed_requests: Counter = usage_labels;
        seed_prompt: Counter = usage_labels;
        seed_completion: Counter = usage_labels;
        seed_tokens: Counter = usage_labels;
        cost: FloatCounter = usage_labels;
        seed_cost: FloatGauge = usage_labels;
    }

    fn tokens(&self, m: &Metrics, kind: TokenKind) -> &Counter {
        self.tokens[kind as usize]
            .get_or_init(|| m.tokens.get_or_create_owned(&self.token_labels(kind)))
    }
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    ]
    .into_iter()
}

fn overhead_buckets() -> impl Iterator<Item = f64> {
    [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    ]
    .into_iter()
}

fn per_token_buckets() -> impl Iterator<Item = f64> {
    [0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0].into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let latency: fn() -> Histogram = || Histogram::new(latency_buckets());
        let duration = Family::new_with_constructor(latency);
        let upstream_duration = Family::new_with_constructor(latency);
        let ttft = Family::new_with_constructor(latency);
        let overhead = Family::new_with_constructor(
            (|| Histogram::new(overhead_buckets())) as fn() -> Histogram,
        );
        let time_per_output_token = Family::new_with_constructor(
            (|| Histogram::new(per_token_buckets())) as fn() -> Histogram,
        );
        let m = Metrics {
            requests: Family::default(),
            request_bytes: Family::default(),
            response_bytes: Family::default(),
            duration,
            upstream_duration,
            overhead,
            ttft,
            time_per_output_token,
            tokens: Family::default(),
            end_user_tokens: Family::default(),
            cost: Family::default(),
            seed_requests: Family::default(),
            seed_prompt: Family::default(),
            seed_completion: Family::default(),
            seed_tokens: Family::default(),
            seed_cost: Family::default(),
            rate_limited: Family::default(),
            guard_blocked: Family::default(),
            client_disconnects: Family::default(),
            retries: Family::default(),
            failovers: Family::default(),
            circuit_state: Family::default(),
            active_streams: Gauge::default(),
            reloads: Family::default(),
            sink_queue: Family::default(),
            sink_dropped: Family::default(),
            limiter_errors: Counter::default(),
            limiter_errors_seen: AtomicU64::new(0),
            jwks_errors: Counter::default(),
            jwks_errors_seen: AtomicU64::new(0),
            series: RwLock::default(),
            series_hasher: RandomState::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "tollgate_requests",
            "Requests by route, consumer, model, provider, endpoint and status class",
            m.requests.clone(),
        );
        r.register(
            "tollgate_client_disconnects",
            "Requests whose client went away before the answer was complete (before its head: status 499)",
            m.client_disconnects.clone(),
        );
        r.register(
            "tollgate_request_bytes",
            "Request body bytes received",
            m.request_bytes.clone(),
        );
        r.register(
            "tollgate_response_bytes",
            "Response body bytes sent",
            m.response_bytes.clone(),
        );
        r.register(
            "tollgate_request_duration_seconds",
            "Time from arrival to the last byte sent",
            m.duration.clone(),
        );
        r.register(
            "tollgate_upstream_duration_seconds",
            "Time waiting for the upstream (to the first event for streams)",
            m.upstream_duration.clone(),
        );
        r.register(
            "tollgate_gateway_overhead_seconds",
            "Time spent in the gateway itself",
            m.overhead.clone(),
        );
        r.register(
            "tollgate_time_to_first_token_seconds",
            "Streams: time from arrival to the first generated token",
            m.ttft.clone(),
        );
        r.register(
            "tollgate_time_per_output_token_seconds",
            "Streams: generation time per completion token after the first",
            m.time_per_output_token.clone(),
        );
        r.register(
            "tollgate_tokens",
            "Tokens by type (prompt, completion, cached, reasoning)",
            m.tokens.clone(),
        );
        r.register(
            "tollgate_end_user_tokens",
            "Tokens by end user (when enabled)",
            m.end_user_tokens.clone(),
        );
        r.register("tollgate_cost_usd", "Estimated cost in USD", m.cost.clone());
        r.register(
            "ai_llm_requests",
            "LLM requests (seed dashboard name)",
            m.seed_requests.clone(),
        );
        r.register(
            "ai_llm_prompt_tokens",
            "Prompt tokens (seed dashboard name)",
            m.seed_prompt.clone(),
        );
        r.register(
            "ai_llm_completion_tokens",
            "Completion tokens (seed dashboard name)",
            m.seed_completion.clone(),
        );
        r.register(
            "ai_llm_tokens",
            "Total tokens (seed dashboard name)",
            m.seed_tokens.clone(),
        );
        r.register(
            "ai_llm_estimated_cost_usd",
            "Cumulative estimated cost in USD (seed dashboard name)",
            m.seed_cost.clone(),
        );
        r.register(
            "tollgate_rate_limited",
            "Requests refused by a limit policy",
            m.rate_limited.clone(),
        );
        r.register(
            "tollgate_guard_blocked",
            "Requests refused by the prompt guard",
            m.guard_blocked.clone(),
        );
        r.register(
            "tollgate_retries",
            "Upstream attempts beyond the first",
            m.retries.clone(),
        );
        r.register(
            "tollgate_failovers",
            "Requests answered by another target than the first one tried",
            m.failovers.clone(),
        );
        r.register(
            "tollgate_target_circuit_state",
            "Circuit of each target: 0 up, 1 half-open, 2 open, 3 unavailable",
            m.circuit_state.clone(),
        );
        r.register(
            "tollgate_active_streams",
            "Streams in progress",
            m.active_streams.clone(),
        );
        r.register(
            "tollgate_config_reloads",
            "Configuration reloads by result",
            m.reloads.clone(),
        );
        r.register(
            "tollgate_log_sink_queue_depth",
            "Records waiting in a log sink's queue",
            m.sink_queue.clone(),
        );
        r.register(
            "tollgate_log_sink_dropped",
            "Records a log sink dropped (queue full or endpoint down)",
            m.sink_dropped.clone(),
        );
        r.register(
            "tollgate_rate_limit_store_errors",
            "Rate-limit store (Redis) failures",
            m.limiter_errors.clone(),
        );
        r.register(
            "tollgate_oidc_jwks_errors",
            "Failed fetches of the OIDC provider's keys",
            m.jwks_errors.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts one finished request.
    pub fn observe(&self, record: &RequestRecord, snapshot: &Snapshot) {
        fn known<'a>(
            name: Option<&'a str>,
            ok: &dyn Fn(&str) -> bool,
            none: &'static str,
        ) -> &'a str {
            match name {
                Some(n) if ok(n) => n,
                Some(_) => "unknown",
                None => none,
            }
        }
        let route = known(record.route.as_deref(), &|_| true, "none");
        let consumer = known(record.consumer.as_deref(), &|_| true, "anonymous");
        let model = known(
            record.model.as_deref(),
            &|m| snapshot.model(m).is_some(),
            "none",
        );
        let provider = known(
            record.provider.as_deref(),
            &|p| snapshot.provider(p).is_some(),
            "none",
        );
        let key = SeriesKey {
            route,
            consumer,
            model,
            provider,
            endpoint: record.endpoint.unwrap_or("other"),
            status_class: status_class(record.status),
            // Tokens and cost go to the signed-in user where the gateway knows them (a
            // configured consumer: bounded), else to the consumer whose key was used.
            usage_consumer: record.acting_as.as_deref().unwrap_or(consumer),
        };
        let series = self.series(&key);
        series.requests(self).inc();
        series.request_bytes(self).inc_by(record.request_bytes);
        series.response_bytes(self).inc_by(record.response_bytes);
        match record.error {
            Some("rate_limit_exceeded") => {
                self.rate_limited.get_or_create(&key.route_consumer()).inc()
            }
            Some("prompt_blocked") => self
                .guard_blocked
                .get_or_create(&key.route_consumer())
                .inc(),
            _ => 0,
        };
        if record.client_disconnected {
            self.client_disconnects
                .get_or_create(&key.route_consumer())
                .inc();
        }

        series.duration(self).observe(record.latency_ms / 1000.0);
        if let Some(up) = record.upstream_latency_ms {
            series.upstream_duration(self).observe(up / 1000.0);
        }
        if let Some(o) = record.overhead_ms {
            series.overhead(self).observe(o / 1000.0);
        }
        if let Some(ttft) = record.ttft_ms {
            series.ttft(self).observe(ttft / 1000.0);
            if let Some(n) = record.completion_tokens.filter(|n| *n > 1) {
                let per_token = (record.latency_ms - ttft).max(0.0) / 1000.0 / (n - 1) as f64;
                series.time_per_output_token(self).observe(per_token);
            }
        }

        let tried = record.attempts.iter().filter(|a| !a.skipped).count() as u64;
        if tried > 1 {
            self.retries
                .get_or_create(&ModelLabel {
                    model: model.to_owned(),
                })
                .inc_by(tried - 1);
        }
        if record.status < 400 && record.attempts.iter().any(|a| a.outcome != "ok") {
            self.failovers
                .get_or_create(&ModelLabel {
                    model: model.to_owned(),
                })
                .inc();
        }

        if record.provider.is_none()
            || record.model.is_none()
            || record.status >= 400 && record.prompt_tokens.is_none()
        {
            return;
        }
        series.seed_requests(self).inc();
        let end_user = snapshot.metrics_end_users.then(|| {
            record
                .end_user
                .as_deref()
                .and_then(|e| snapshot.consumer_by_email(e))
                .map(|c| c.name.to_string())
                .unwrap_or_else(|| "unknown".into())
        });
        for (kind, value) in [
            (TokenKind::Prompt, record.prompt_tokens),
            (TokenKind::Completion, record.completion_tokens),
            (TokenKind::Cached, record.cached_tokens),
            (TokenKind::Reasoning, record.reasoning_tokens),
        ] {
            let Some(value) = value else { continue };
            series.tokens(self, kind).inc_by(value);
            if let Some(end_user) = &end_user {
                self.end_user_tokens
                    .get_or_create(&EndUserTokenLabels {
                        tokens: series.token_labels(kind),
                        end_user: end_user.clone(),
                    })
                    .inc_by(value);
            }
        }
        series
            .seed_prompt(self)
            .inc_by(record.prompt_tokens.unwrap_or(0));
        series
            .seed_completion(self)
            .inc_by(record.completion_tokens.unwrap_or(0));
        series
            .seed_tokens(self)
            .inc_by(record.total_tokens.unwrap_or(0));
        if let Some(cost) = record.cost_usd {
            series.cost(self).inc_by(cost);
            series.seed_cost(self).inc_by(cost);
        }
    }

    /// The handles of one label combination: found with one hash of its names instead of a
    /// label set built (strings cloned) and hashed per family, a dozen times a request.
    fn series(&self, key: &SeriesKey<'_>) -> Arc<Series> {
        let hash = self.series_hasher.hash_one(key);
        if let Some(found) = self
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&hash)
            .and_then(|bucket| bucket.iter().find(|s| s.is(key)))
        {
            return found.clone();
        }
        let mut map = self.series.write().unwrap_or_else(PoisonError::into_inner);
        let bucket = map.entry(hash).or_default();
        if let Some(found) = bucket.iter().find(|s| s.is(key)) {
            return found.clone();
        }
        let made = Arc::new(Series::new(key));
        bucket.push(made.clone());
        made
    }

    pub fn reloaded(&self, ok: bool) {
        self.reloads
            .get_or_create(&ResultLabel {
                result: if ok { "success" } else { "failure" }.into(),
            })
            .inc();
    }

    /// Renders every family. `openmetrics` selects the OpenMetrics format (with `# EOF`);
    /// otherwise the same text, which Prometheus' classic parser reads too.
    pub fn render(&self, snapshot: &Snapshot, openmetrics: bool) -> String {
        self.refresh(snapshot);
        let mut out = String::new();
        let result = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::text::encode_registry(&mut out, &self.registry)
        };
        if result.is_err() {
            tracing::error!("could not encode the metrics");
        }
        out
    }

    /// Values read at scrape time: circuit states and store errors.
    fn refresh(&self, snapshot: &Snapshot) {
        let now = std::time::Instant::now();
        for model in snapshot.models() {
            for t in &model.pool.targets {
                let state = if t.provider.unavailable().is_some() {
                    3
                } else {
                    match t.health.report(now)["state"].as_str() {
                        Some("open") => 2,
                        Some("half-open") => 1,
                        _ => 0,
                    }
                };
                self.circuit_state
                    .get_or_create(&ModelProvider {
                        model: t.upstream_model.to_string(),
                        provider: t.provider_name.to_string(),
                    })
                    .set(state);
            }
        }
        if let Some(oidc) = &snapshot.oidc {
            let errors = oidc.fetch_errors.load(Ordering::Relaxed);
            let seen = self.jwks_errors_seen.swap(errors, Ordering::Relaxed);
            self.jwks_errors.inc_by(errors.saturating_sub(seen));
        }
        let errors = snapshot.rate_limits.limiter.errors();
        let seen = self.limiter_errors_seen.swap(errors, Ordering::Relaxed);
        self.limiter_errors.inc_by(errors.saturating_sub(seen));
    }
}
