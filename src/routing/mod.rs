//! Which upstream target serves a request: a model's targets, the order to try them in
//! (priority, weighted round-robin, least busy, lowest latency, sticky hash), which failures
//! move on to the next target, and each target's health.

pub mod health;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::config::{CircuitConfig, RetryOn, Strategy, Timeouts};
use crate::error::GatewayError;
use crate::policy::pricing::Price;
use crate::providers::{CallOptions, Provider};
use health::TargetHealth;

/// One provider + upstream model behind a gateway model.
#[derive(Debug)]
pub struct Target {
    /// Shared with the log records that name it (a clone is a count, not a copy).
    pub provider_name: Arc<str>,
    pub provider: Arc<Provider>,
    pub upstream_model: Arc<str>,
    /// What its tokens cost (configured, or a well-known model's list price).
    pub price: Option<Price>,
    pub weight: u32,
    /// The provider's, with this target's overrides.
    pub timeouts: Timeouts,
    /// Shared by every model using the same provider and upstream model, and kept across reloads.
    pub health: Arc<TargetHealth>,
    /// `provider_name` and `upstream_model` as the header values an answer carries, made once
    /// (`None` for a name no header can carry).
    pub answer_headers: AnswerHeaders,
}

#[derive(Debug, Clone, Default)]
pub struct AnswerHeaders {
    pub provider: Option<axum::http::HeaderValue>,
    pub upstream_model: Option<axum::http::HeaderValue>,
}

impl AnswerHeaders {
    pub fn new(provider: &str, upstream_model: &str) -> Self {
        Self {
            provider: axum::http::HeaderValue::from_str(provider).ok(),
            upstream_model: axum::http::HeaderValue::from_str(upstream_model).ok(),
        }
    }
}

impl Target {
    /// What one call to this target needs besides the body.
    pub fn call_options(&self, max_response: u64) -> CallOptions<'_> {
        CallOptions {
            upstream_model: &self.upstream_model,
            timeouts: &self.timeouts,
            max_response,
        }
    }
}

/// What to use for `strategy: hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    Consumer,
    Header(String),
}

/// A model's targets and how to choose among them.
#[derive(Debug)]
pub struct Pool {
    pub targets: Vec<Arc<Target>>,
    pub strategy: Strategy,
    pub hash_on: HashOn,
    /// Most targets tried for one request.
    pub attempts: usize,
    pub retry_on: Vec<RetryOn>,
    pub circuit: CircuitConfig,
    /// Smooth weighted round-robin's running weights, one per target.
    wrr: Mutex<Vec<i64>>,
}

impl Pool {
    pub fn new(
        targets: Vec<Arc<Target>>,
        strategy: Strategy,
        hash_on: HashOn,
        attempts: Option<u32>,
        retry_on: Vec<RetryOn>,
        circuit: CircuitConfig,
    ) -> Self {
        let attempts = attempts.map_or(targets.len(), |a| a as usize).max(1);
        let wrr = Mutex::new(vec![0; targets.len()]);
        Self {
            targets,
            strategy,
            hash_on,
            attempts,
            retry_on,
            circuit,
            wrr,
        }
    }

    /// Whether any target can serve at all (its provider is usable).
    pub fn servable(&self) -> bool {
        self.targets
            .iter()
            .any(|t| t.provider.unavailable().is_none())
    }

    /// The targets in the order to try them for this request.
    pub fn plan(&self, consumer: &str, headers: &HeaderMap) -> Vec<Arc<Target>> {
        let mut order: Vec<Arc<Target>> = self.targets.clone();
        if order.len() < 2 {
            return order;
        }
        let by_weight = |a: &Arc<Target>, b: &Arc<Target>| b.weight.cmp(&a.weight);
        match self.strategy {
            Strategy::Priority => order.sort_by(by_weight),
            Strategy::Weighted => {
                order.sort_by(by_weight);
                if let Some(first) = self.next_weighted() {
                    let pos = order
                        .iter()
                        .position(|t| Arc::ptr_eq(t, &first))
                        .unwrap_or(0);
                    let chosen = order.remove(pos);
                    order.insert(0, chosen);
                }
            }
            Strategy::LeastBusy => order.sort_by(|a, b| {
                a.health
                    .in_flight()
                    .cmp(&b.health.in_flight())
                    .then(by_weight(a, b))
            }),
            Strategy::LowestLatency => {
                // Targets without a sample yet go first, so every target gets measured.
                let latency = |t: &Arc<Target>| t.health.latency_ms().unwrap_or(0.0);
                order.sort_by(|a, b| latency(a).total_cmp(&latency(b)).then(by_weight(a, b)));
            }
            Strategy::Hash => {
                let key = match &self.hash_on {
                    HashOn::Header(name) => headers
                        .get(name.as_str())
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or(consumer),
                    HashOn::Consumer => consumer,
                };
                // Rendezvous hashing: stable per key, and only the keys of a target that goes
                // away move elsewhere.
                order.sort_by_cached_key(|t| std::cmp::Reverse(rendezvous_score(key, t)));
            }
        }
        order
    }

    /// Smooth weighted round-robin (as nginx does) over the targets whose circuit is closed.
    fn next_weighted(&self) -> Option<Arc<Target>> {
        let now = Instant::now();
        let mut current = self.wrr.lock().unwrap_or_else(|p| p.into_inner());
        let eligible: Vec<usize> = (0..self.targets.len())
            .filter(|&i| {
                !self.targets[i].health.is_open(now)
                    && self.targets[i].provider.unavailable().is_none()
            })
            .collect();
        let total: i64 = eligible
            .iter()
            .map(|&i| i64::from(self.targets[i].weight))
            .sum();
        let mut best: Option<usize> = None;
        for &i in &eligible {
            current[i] += i64::from(self.targets[i].weight);
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        current[best] -= total;
        Some(self.targets[best].clone())
    }

    /// Whether this failure moves on to the next target.
    pub fn retries_on(&self, error: &GatewayError) -> bool {
        failure_kind(error).is_some_and(|kind| self.retry_on.contains(&kind))
    }
}

/// A failure that says something about the target's health (and so may be retried
/// elsewhere), as opposed to one the request itself caused.
pub fn failure_kind(error: &GatewayError) -> Option<RetryOn> {
    match error {
        GatewayError::UpstreamUnreachable { .. } => Some(RetryOn::Connect),
        GatewayError::UpstreamTimeout { .. } => Some(RetryOn::Timeout),
        GatewayError::UpstreamProtocol { .. } => Some(RetryOn::Status(502)),
        GatewayError::UpstreamStatus { status, .. } if *status == 429 || *status >= 500 => {
            Some(RetryOn::Status(*status))
        }
        _ => None,
    }
}

/// The upstream's own `Retry-After`, if the failure carried one.
pub fn retry_after(error: &GatewayError) -> Option<Duration> {
    match error {
        GatewayError::UpstreamStatus { retry_after, .. } => *retry_after,
        _ => None,
    }
}

fn rendezvous_score(key: &str, target: &Target) -> u64 {
    let digest = Sha256::new()
        .chain_update(key.as_bytes())
        .chain_update([0])
        .chain_update(target.provider_name.as_bytes())
        .chain_update([0])
        .chain_update(target.upstream_model.as_bytes())
        .finalize();
    u64::from_be_bytes([
        digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryConfig;

    fn target(name: &str, weight: u32) -> Arc<Target> {
        Arc::new(Target {
            provider_name: name.into(),
            provider: Arc::new(Provider::Disabled(String::new())),
            upstream_model: "m".into(),
            price: None,
            weight,
            timeouts: Timeouts::default(),
            health: Arc::default(),
            answer_headers: AnswerHeaders::default(),
        })
    }

    fn pool(strategy: Strategy, targets: Vec<Arc<Target>>) -> Pool {
        Pool::new(
            targets,
            strategy,
            HashOn::Consumer,
            None,
            RetryConfig::default().on,
            CircuitConfig::default(),
        )
    }

    fn names(plan: &[Arc<Target>]) -> Vec<&str> {
        plan.iter().map(|t| &*t.provider_name).collect()
    }

    #[test]
    fn priority_is_by_weight() {
        let p = pool(
            Strategy::Priority,
            vec![target("c", 10), target("a", 100), target("b", 50)],
        );
        assert_eq!(names(&p.plan("u", &HeaderMap::new())), ["a", "b", "c"]);
    }

    #[test]
    fn hash_is_sticky_and_spreads_keys() {
        let p = pool(
            Strategy::Hash,
            vec![target("a", 1), target("b", 1), target("c", 1)],
        );
        let first = |key: &str| p.plan(key, &HeaderMap::new())[0].provider_name.to_string();
        assert_eq!(first("alice"), first("alice"));
        let spread: std::collections::HashSet<String> =
            (0..50).map(|i| first(&format!("user{i}"))).collect();
        assert_eq!(spread.len(), 3);
    }
}
