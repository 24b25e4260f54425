//! Token, request and cost limits that hold exactly, on one node and across many.
//!
//! Before a request is sent, every counter it touches (each matching policy × each of its
//! windows) is checked and increased by the request's estimate in one atomic step: a request
//! that does not fit is refused with 429 and never sent, and concurrent requests cannot slip
//! past the limit together. When the answer is complete, the [`Reservation`] is settled to the
//! real usage; a failed or refused request gives it back (a `Reservation` dropped unsettled
//! refunds itself); a stream the client abandons is charged what was generated.
//!
//! A long prompt may be admitted on an upper bound of its tokens and counted while the upstream
//! works: a [`Refiner`] then moves the counters down to the count as soon as it is done.

mod local;
mod redis;

use axum::http::{HeaderName, HeaderValue};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::task::TaskTracker;

use crate::auth::consumer::Consumer;
use crate::config::{FailMode, LimitBackend, LimitConfig, LimitScope, RateLimitsConfig};
use crate::error::GatewayError;
use crate::providers::Usage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Tokens,
    PromptTokens,
    CompletionTokens,
    Requests,
    /// Micro-dollars, so counters stay integers.
    CostMicroUsd,
}

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Metric::Tokens => "tokens",
            Metric::PromptTokens => "prompt_tokens",
            Metric::CompletionTokens => "completion_tokens",
            Metric::Requests => "requests",
            Metric::CostMicroUsd => "cost_usd",
        }
    }

    fn amount(self, amounts: &Amounts) -> u64 {
        match self {
            Metric::Tokens => amounts.prompt + amounts.completion,
            Metric::PromptTokens => amounts.prompt,
            Metric::CompletionTokens => amounts.completion,
            Metric::Requests => amounts.requests,
            Metric::CostMicroUsd => amounts.cost_micro_usd,
        }
    }
}

/// What a request counts (estimated before, real after).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Amounts {
    pub requests: u64,
    pub prompt: u64,
    pub completion: u64,
    pub cost_micro_usd: u64,
}

impl Amounts {
    pub fn of_usage(usage: &Usage, cost_usd: f64) -> Self {
        Amounts {
            requests: 1,
            prompt: usage.prompt_tokens,
            completion: usage.completion_tokens,
            cost_micro_usd: micro(cost_usd),
        }
    }
}

pub fn micro(usd: f64) -> u64 {
    (usd * 1e6).round().max(0.0) as u64
}

#[derive(Debug, Clone)]
struct Limit {
    metric: Metric,
    max: u64,
    per: Duration,
}

#[derive(Debug, Clone)]
struct Policy {
    /// Shared with the counters made from it (named in a 429's message).
    name: Arc<str>,
    scope: LimitScope,
    consumers: HashSet<String>,
    groups: HashSet<String>,
    models: HashSet<String>,
    routes: HashSet<String>,
    limits: Vec<Limit>,
}

/// The facts of one request that policies match and key on.
pub struct RequestFacts<'a> {
    pub consumer: &'a Consumer,
    pub route: &'a str,
    pub model: &'a str,
    /// The budgets of the stored key that authenticated the request, if it has any.
    pub key_budgets: Option<&'a Budgets>,
}

impl RequestFacts<'_> {
    /// The consumer's and the key's own limits.
    fn budgets(&self) -> impl Iterator<Item = &Budgets> {
        self.consumer
            .budgets
            .as_deref()
            .into_iter()
            .chain(self.key_budgets)
    }
}

/// The limits of one consumer or one key alone (their `budgets`): counted by the same engine,
/// in the same store, as a policy's, under counters of their own.
#[derive(Debug)]
pub struct Budgets {
    /// `consumer:<name>` or `key:<id>`: what the counters are named by.
    owner: String,
    limits: Vec<Limit>,
}

impl Budgets {
    /// `None` when there are no limits (so requests skip them without a look).
    pub fn compile(owner: String, limits: &[LimitConfig]) -> Option<Arc<Budgets>> {
        let limits: Vec<Limit> = limits.iter().filter_map(limit_of).collect();
        (!limits.is_empty()).then(|| Arc::new(Budgets { owner, limits }))
    }
}

/// How much of one budget is used in its current window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Spend {
    pub metric: &'static str,
    /// In the metric's unit (USD for cost).
    pub limit: f64,
    pub used: f64,
    pub remaining: f64,
    pub per_seconds: u64,
    /// When the current window ends (Unix ms).
    pub resets_at: u64,
}

/// One counter a request touches, with its share.
#[derive(Debug, Clone)]
pub struct Counter {
    pub key: String,
    metric: Metric,
    pub amount: u64,
    pub max: u64,
    per: Duration,
    /// When this counter's window ends (Unix ms).
    window_end_ms: u64,
    policy: Arc<str>,
}

impl Counter {
    fn ttl_ms(&self, now_ms: u64) -> u64 {
        self.window_end_ms.saturating_sub(now_ms) + 1000
    }
}

/// The compiled limit policies and the store their counters live in.
#[derive(Debug, Clone)]
pub struct RateLimits {
    policies: Vec<Policy>,
    pub default_completion_tokens: u64,
    pub limiter: Arc<Limiter>,
}

impl RateLimits {
    pub fn compile(config: &RateLimitsConfig, limiter: Arc<Limiter>) -> Self {
        let policies = config
            .policies
            .iter()
            .map(|(name, p)| Policy {
                name: Arc::from(name.as_str()),
                scope: p.scope,
                consumers: p.consumers.iter().cloned().collect(),
                groups: p.groups.iter().cloned().collect(),
                models: p.models.iter().cloned().collect(),
                routes: p.routes.iter().cloned().collect(),
                limits: p.limits.iter().filter_map(limit_of).collect(),
            })
            .collect::<Vec<_>>();
        Self {
            policies,
            default_completion_tokens: config.default_completion_tokens,
            limiter,
        }
    }

    /// Whether any policy or budget applies to this request (before the provider is known).
    pub fn applies(&self, facts: &RequestFacts<'_>) -> bool {
        facts.budgets().next().is_some() || self.policies.iter().any(|p| p.matches(facts))
    }

    /// What is used of each of `budgets` in its current window (on every node, with Redis).
    pub async fn spend(&self, budgets: &Budgets) -> Result<Vec<Spend>, StoreError> {
        let now_ms = now_ms();
        let counters: Vec<Counter> = budgets
            .limits
            .iter()
            .map(|limit| counter_of(limit, &BUDGET, &budgets.owner, &Amounts::default(), now_ms))
            .collect();
        let values = self.limiter.read(&counters).await?;
        let unit = |metric: Metric, n: u64| match metric {
            Metric::CostMicroUsd => n as f64 / 1e6,
            _ => n as f64,
        };
        Ok(counters
            .iter()
            .zip(values)
            .map(|(c, used)| Spend {
                metric: c.metric.name(),
                limit: unit(c.metric, c.max),
                used: unit(c.metric, used),
                remaining: unit(c.metric, c.max.saturating_sub(used)),
                per_seconds: c.per.as_secs(),
                resets_at: c.window_end_ms,
            })
            .collect())
    }

    /// The counters of the policies that do not depend on the provider.
    pub fn request_counters(&self, facts: &RequestFacts<'_>, estimate: &Amounts) -> Vec<Counter> {
        self.counters(facts, estimate, None)
    }

    /// The counters of provider-scoped policies, once the target is chosen.
    pub fn provider_counters(
        &self,
        facts: &RequestFacts<'_>,
        provider: &str,
        estimate: &Amounts,
    ) -> Vec<Counter> {
        self.counters(facts, estimate, Some(provider))
    }

    fn counters(
        &self,
        facts: &RequestFacts<'_>,
        estimate: &Amounts,
        provider: Option<&str>,
    ) -> Vec<Counter> {
        let now_ms = now_ms();
        let mut out = Vec::new();
        for policy in self.policies.iter().filter(|p| p.matches(facts)) {
            // The counters of `policy` for one scope key (borrowed from the request's facts).
            let mut count = |scope_key: &str| {
                for limit in &policy.limits {
                    out.push(counter_of(limit, &policy.name, scope_key, estimate, now_ms));
                }
            };
            match (policy.scope, provider) {
                (LimitScope::Provider, Some(p)) => count(p),
                (LimitScope::Provider, None) | (_, Some(_)) => continue,
                (LimitScope::Consumer, None) => count(&facts.consumer.name),
                (LimitScope::Group, None) => facts
                    .consumer
                    .groups
                    .iter()
                    .filter(|g| policy.groups.is_empty() || policy.groups.contains(*g))
                    .for_each(|g| count(g)),
                (LimitScope::Model, None) => count(facts.model),
                (LimitScope::Route, None) => count(facts.route),
                (LimitScope::Global, None) => count("*"),
            }
        }
        if provider.is_none() {
            for budgets in facts.budgets() {
                for limit in &budgets.limits {
                    out.push(counter_of(limit, &BUDGET, &budgets.owner, estimate, now_ms));
                }
            }
        }
        out
    }

    /// Reserves `counters`, all or none. 429 when one does not fit; when the store is
    /// unreachable, an empty reservation (fail open) or 503 (fail closed).
    pub async fn reserve(&self, counters: Vec<Counter>) -> Result<Reservation, GatewayError> {
        if counters.is_empty() {
            return Ok(Reservation::empty(self.limiter.clone()));
        }
        match self.limiter.reserve(&counters).await {
            Ok(Outcome::Granted(values)) => Ok(Reservation {
                limiter: self.limiter.clone(),
                counters,
                values,
                settled: false,
                refinement: None,
            }),
            Ok(Outcome::Refused(index, current)) => {
                let c = &counters[index];
                let retry_after = Duration::from_millis(c.window_end_ms.saturating_sub(now_ms()));
                Err(GatewayError::RateLimited {
                    message: format!(
                        "rate limit exceeded: policy {:?} allows {} {} per {}",
                        c.policy,
                        display_max(c),
                        c.metric.name(),
                        humantime::format_duration(c.per)
                    ),
                    retry_after,
                    headers: headers_for(&counters, &current),
                })
            }
            Err(e) => match self.limiter.fail_mode() {
                FailMode::Open => {
                    tracing::warn!(error = %e, "rate-limit store unreachable: letting the request through (fail open)");
                    Ok(Reservation::empty(self.limiter.clone()))
                }
                FailMode::Closed => {
                    tracing::error!(error = %e, "rate-limit store unreachable: refusing the request (fail closed)");
                    Err(GatewayError::LimiterUnavailable)
                }
            },
        }
    }
}

/// The policy name of a consumer's or a key's own budgets (told apart from a configured policy
/// of that name by identity).
static BUDGET: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("budget"));

/// The counter of `limit` for `scope_key` in the window around `now_ms`: windows are aligned
/// to multiples of their length, so every node names the same counter.
fn counter_of(
    limit: &Limit,
    policy: &Arc<str>,
    scope_key: &str,
    estimate: &Amounts,
    now_ms: u64,
) -> Counter {
    let per_ms = limit.per.as_millis().max(1) as u64;
    let window_start = now_ms / per_ms * per_ms;
    // `{policy}:{metric}:{per_ms}:{scope_key}:{window_start}`, without the formatting
    // machinery (this runs for every limit of every request).
    let metric = limit.metric.name();
    let mut key = String::with_capacity(policy.len() + metric.len() + scope_key.len() + 40);
    for part in [
        policy,
        metric,
        itoa::Buffer::new().format(per_ms),
        scope_key,
    ] {
        key.push_str(part);
        key.push(':');
    }
    key.push_str(itoa::Buffer::new().format(window_start));
    Counter {
        key,
        metric: limit.metric,
        amount: limit.metric.amount(estimate),
        max: limit.max,
        per: limit.per,
        window_end_ms: window_start + per_ms,
        policy: if Arc::ptr_eq(policy, &BUDGET) {
            Arc::from(format!("budget of {scope_key}"))
        } else {
            policy.clone()
        },
    }
}

fn display_max(c: &Counter) -> String {
    match c.metric {
        Metric::CostMicroUsd => format!("{:.2}", c.max as f64 / 1e6),
        _ => c.max.to_string(),
    }
}

fn limit_of(l: &LimitConfig) -> Option<Limit> {
    let (metric, max) = match (
        l.tokens,
        l.prompt_tokens,
        l.completion_tokens,
        l.requests,
        l.cost_usd,
    ) {
        (Some(n), ..) => (Metric::Tokens, n),
        (_, Some(n), ..) => (Metric::PromptTokens, n),
        (_, _, Some(n), ..) => (Metric::CompletionTokens, n),
        (.., Some(n), _) => (Metric::Requests, n),
        (.., Some(usd)) => (Metric::CostMicroUsd, micro(usd)),
        _ => return None,
    };
    Some(Limit {
        metric,
        max,
        per: l.per,
    })
}

impl Policy {
    fn matches(&self, f: &RequestFacts<'_>) -> bool {
        (self.consumers.is_empty() || self.consumers.contains(&*f.consumer.name))
            && (self.groups.is_empty() || f.consumer.groups.iter().any(|g| self.groups.contains(g)))
            && (self.models.is_empty() || self.models.contains(f.model))
            && (self.routes.is_empty() || self.routes.contains(f.route))
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The rate-limit headers of a response, ready to insert.
pub type LimitHeaders = Vec<(HeaderName, HeaderValue)>;

/// `X-AI-RateLimit-{Limit,Remaining,Reset}-<window>` (Kong's names): per window, the counter
/// with the least room left, from the counters' current `values`.
fn headers_for(counters: &[Counter], values: &[u64]) -> LimitHeaders {
    let now = now_ms();
    let mut tightest: Vec<(Duration, u64, u64, u64)> = Vec::new(); // window, max, remaining, reset s
    for (i, c) in counters.iter().enumerate() {
        let used = values.get(i).copied().unwrap_or(c.amount);
        let remaining = c.max.saturating_sub(used);
        let reset = c.window_end_ms.saturating_sub(now).div_ceil(1000);
        match tightest.iter_mut().find(|t| t.0 == c.per) {
            Some(t) if remaining * t.1.max(1) < t.2 * c.max.max(1) => {
                *t = (c.per, c.max, remaining, reset)
            }
            Some(_) => {}
            None => tightest.push((c.per, c.max, remaining, reset)),
        }
    }
    let mut headers = Vec::with_capacity(tightest.len() * 3);
    for (per, max, remaining, reset) in tightest {
        let [limit, left, resets] = header_names(per);
        headers.push((limit, number_value(max)));
        headers.push((left, number_value(remaining)));
        headers.push((resets, number_value(reset)));
    }
    headers
}

/// A number as a header value in one allocation (`HeaderValue::from(u64)` makes two: a
/// buffer, then its shared handle); seconds to a window's reset, under a minute for most
/// windows, in none.
fn number_value(n: u64) -> HeaderValue {
    static SMALL: std::sync::LazyLock<Vec<HeaderValue>> =
        std::sync::LazyLock::new(|| (0..=SMALL_NUMBERS).map(HeaderValue::from).collect());
    const SMALL_NUMBERS: u64 = 120;
    if n <= SMALL_NUMBERS {
        return SMALL[n as usize].clone();
    }
    // Digits are always a valid header value.
    HeaderValue::from_bytes(itoa::Buffer::new().format(n).as_bytes())
        .unwrap_or_else(|_| HeaderValue::from(n))
}

/// The three header names of a window: built in for the named windows, made for others.
fn header_names(per: Duration) -> [HeaderName; 3] {
    const fn names(
        limit: &'static str,
        left: &'static str,
        reset: &'static str,
    ) -> [HeaderName; 3] {
        [
            HeaderName::from_static(limit),
            HeaderName::from_static(left),
            HeaderName::from_static(reset),
        ]
    }
    match per.as_secs() {
        // Built at compile time (a `const fn` called at run time parses each name).
        1 => {
            const {
                names(
                    "x-ai-ratelimit-limit-second",
                    "x-ai-ratelimit-remaining-second",
                    "x-ai-ratelimit-reset-second",
                )
            }
        }
        60 => {
            const {
                names(
                    "x-ai-ratelimit-limit-minute",
                    "x-ai-ratelimit-remaining-minute",
                    "x-ai-ratelimit-reset-minute",
                )
            }
        }
        3600 => {
            const {
                names(
                    "x-ai-ratelimit-limit-hour",
                    "x-ai-ratelimit-remaining-hour",
                    "x-ai-ratelimit-reset-hour",
                )
            }
        }
        86_400 => {
            const {
                names(
                    "x-ai-ratelimit-limit-day",
                    "x-ai-ratelimit-remaining-day",
                    "x-ai-ratelimit-reset-day",
                )
            }
        }
        2_592_000 => {
            const {
                names(
                    "x-ai-ratelimit-limit-month",
                    "x-ai-ratelimit-remaining-month",
                    "x-ai-ratelimit-reset-month",
                )
            }
        }
        s => ["limit", "remaining", "reset"].map(|what| {
            // Digits and ASCII letters only: always a valid header name.
            HeaderName::try_from(format!("x-ai-ratelimit-{what}-{s}s"))
                .unwrap_or(HeaderName::from_static("x-ai-ratelimit-other"))
        }),
    }
}

/// The answer of a store to a reservation.
pub enum Outcome {
    /// Every counter's value afterwards.
    Granted(Vec<u64>),
    /// The index of the first counter that did not fit, and every counter's current value.
    Refused(usize, Vec<u64>),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// Where counters live.
#[derive(Debug)]
enum Store {
    Local(local::LocalStore),
    Redis(Box<redis::RedisStore>),
}

/// The counters' store, and the settlements on their way to it (awaited at shutdown, so a
/// stream cut at the end of the grace period is still settled in Redis).
#[derive(Debug)]
pub struct Limiter {
    store: Store,
    settling: TaskTracker,
}

impl Limiter {
    pub fn new(config: &RateLimitsConfig) -> Result<Self, String> {
        let store = match config.backend {
            LimitBackend::Local => Store::Local(local::LocalStore::default()),
            LimitBackend::Redis => Store::Redis(Box::new(redis::RedisStore::new(&config.redis)?)),
        };
        Ok(Self {
            store,
            settling: TaskTracker::new(),
        })
    }

    /// Whether this store serves `config` as it is (so a reload can keep it and its counters).
    pub fn serves(&self, config: &RateLimitsConfig) -> bool {
        match (&self.store, config.backend) {
            (Store::Local(_), LimitBackend::Local) => true,
            (Store::Redis(r), LimitBackend::Redis) => r.config() == &config.redis,
            _ => false,
        }
    }

    /// How often the store could not be reached.
    pub fn errors(&self) -> u64 {
        match &self.store {
            Store::Local(_) => 0,
            Store::Redis(r) => r.errors(),
        }
    }

    /// Waits (at most `wait`) for the settlements under way to reach the store.
    pub async fn finish_settling(&self, wait: Duration) {
        self.settling.close();
        if tokio::time::timeout(wait, self.settling.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                pending = self.settling.len(),
                "shutdown: some rate-limit settlements did not reach the store"
            );
        }
        self.settling.reopen();
    }

    fn fail_mode(&self) -> FailMode {
        match &self.store {
            Store::Local(_) => FailMode::Closed,
            Store::Redis(r) => r.config().on_error,
        }
    }

    async fn reserve(&self, counters: &[Counter]) -> Result<Outcome, StoreError> {
        match &self.store {
            Store::Local(l) => Ok(l.reserve(counters)),
            // Boxed: a Redis round trip's state is large, and would widen every request's
            // future (moved by value on its way up) for the in-process counters too.
            Store::Redis(r) => Box::pin(r.reserve(counters)).await,
        }
    }

    /// The current values of `counters` (0 for those not yet counted).
    async fn read(&self, counters: &[Counter]) -> Result<Vec<u64>, StoreError> {
        match &self.store {
            Store::Local(l) => Ok(l.read(counters)),
            Store::Redis(r) => r.read(counters).await,
        }
    }
}

/// Reconciliations that could not reach the store (for the metrics to come).
pub static LOST_ADJUSTMENTS: AtomicU64 = AtomicU64::new(0);

/// Counters a request holds. Settle it with the real usage; dropped unsettled, it refunds.
#[derive(Debug)]
pub struct Reservation {
    limiter: Arc<Limiter>,
    counters: Vec<Counter>,
    values: Vec<u64>,
    settled: bool,
    /// A refinement of the counters held so far that a [`Refiner`] may have made.
    refinement: Option<Arc<Refinement>>,
}

/// Who moves the first `counters` of a reservation made on an upper bound to the estimate:
/// the [`Refiner`] when the count is done first, else nobody (the reservation was settled or
/// dropped before, and settles or refunds the bound itself). Whoever sets `claimed` first
/// decides; the refiner sets `estimate` before it tries.
#[derive(Debug)]
struct Refinement {
    claimed: AtomicBool,
    estimate: OnceLock<Amounts>,
    counters: usize,
}

/// Moves a reservation's counters from an upper bound to the estimate once counted, from
/// wherever the count finishes, while the request that holds them goes on.
#[derive(Debug)]
pub struct Refiner {
    refinement: Arc<Refinement>,
    limiter: Arc<Limiter>,
    counters: Vec<Counter>,
}

impl Refiner {
    /// Moves the counters to `estimate`, unless their reservation was settled or dropped first.
    pub fn refine(self, estimate: Amounts) {
        let _ = self.refinement.estimate.set(estimate);
        if !self.refinement.claimed.swap(true, Ordering::AcqRel) {
            move_counters(&self.limiter, &self.counters, |c| {
                c.metric.amount(&estimate)
            });
        }
    }
}

impl Reservation {
    pub fn empty(limiter: Arc<Limiter>) -> Self {
        Self {
            limiter,
            counters: Vec::new(),
            values: Vec::new(),
            settled: false,
            refinement: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    /// Takes over another reservation's counters (a provider-scoped one, once the target answered).
    pub fn absorb(&mut self, mut other: Reservation) {
        other.take_refinement();
        self.counters.append(&mut other.counters);
        self.values.append(&mut other.values);
        other.settled = true;
    }

    /// The rate-limit headers for the response.
    pub fn headers(&self) -> LimitHeaders {
        headers_for(&self.counters, &self.values)
    }

    /// A [`Refiner`] for the counters held now (made on an upper bound of the prompt).
    pub fn refine_later(&mut self) -> Refiner {
        let refinement = Arc::new(Refinement {
            claimed: AtomicBool::new(false),
            estimate: OnceLock::new(),
            counters: self.counters.len(),
        });
        self.refinement = Some(refinement.clone());
        Refiner {
            refinement,
            limiter: self.limiter.clone(),
            counters: self.counters.clone(),
        }
    }

    /// Moves every counter to `estimate`: those a [`Refiner`] moved already are only
    /// recorded, the others (reserved since, for a provider) are moved in the store.
    pub fn refine(&mut self, estimate: &Amounts) {
        self.take_refinement();
        move_counters(&self.limiter, &self.counters, |c| c.metric.amount(estimate));
        self.hold(self.counters.len(), estimate);
    }

    /// Replaces the estimate by what the request really used.
    pub fn settle(mut self, actual: &Amounts) {
        self.settled = true;
        self.apply(|metric| metric.amount(actual));
    }

    /// Records what a [`Refiner`] did, if it got there first; else it never will.
    fn take_refinement(&mut self) {
        let Some(refinement) = self.refinement.take() else {
            return;
        };
        if refinement.claimed.swap(true, Ordering::AcqRel)
            && let Some(estimate) = refinement.estimate.get()
        {
            self.hold(refinement.counters, estimate);
        }
    }

    /// Records that the first `n` counters hold `estimate` now.
    fn hold(&mut self, n: usize, estimate: &Amounts) {
        for (c, value) in self.counters.iter_mut().zip(&mut self.values).take(n) {
            let to = c.metric.amount(estimate);
            *value = (*value + to).saturating_sub(c.amount);
            c.amount = to;
        }
    }

    fn apply(&mut self, actual: impl Fn(Metric) -> u64) {
        self.take_refinement();
        move_counters(&self.limiter, &self.counters, |c| actual(c.metric));
    }
}

/// Moves each of `counters` in the store from the amount it holds to `to`'s.
fn move_counters(limiter: &Arc<Limiter>, counters: &[Counter], to: impl Fn(&Counter) -> u64) {
    let deltas = counters
        .iter()
        .map(|c| (&c.key, to(c) as i64 - c.amount as i64))
        .filter(|(_, d)| *d != 0);
    let deltas: Vec<(String, i64)> = match &limiter.store {
        // In-process counters are settled on the spot: a task per request cost more
        // than the settlement.
        Store::Local(local) => return local.adjust(deltas),
        Store::Redis(_) => deltas.map(|(key, delta)| (key.clone(), delta)).collect(),
    };
    if deltas.is_empty() {
        return;
    }
    let limiter = limiter.clone();
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            let settling = limiter.settling.clone();
            settling.spawn_on(
                async move {
                    let Store::Redis(redis) = &limiter.store else {
                        return;
                    };
                    if let Err(e) = redis.adjust(&deltas).await {
                        LOST_ADJUSTMENTS.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "could not reconcile a rate-limit reservation");
                    }
                },
                &handle,
            );
        }
        Err(_) => {
            LOST_ADJUSTMENTS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled && !self.counters.is_empty() {
            self.settled = true;
            self.apply(|_| 0);
        }
    }
}

#[cfg(test)]
mod tests;
