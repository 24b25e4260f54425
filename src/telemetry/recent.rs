//! The latest requests in memory (a bounded ring), for the admin API's usage view: who used
//! which model, how much, with what outcome. Kept only when the admin API is on.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

use crate::telemetry::request_log::RequestRecord;

/// How many requests are kept.
pub const CAPACITY: usize = 10_000;

#[derive(Debug, Clone, Serialize)]
pub struct RecentRequest {
    pub time: String,
    pub request_id: String,
    pub route: Option<String>,
    pub consumer: Option<String>,
    pub key_id: Option<String>,
    pub end_user: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub status: u16,
    pub error: Option<&'static str>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub cost_usd: Option<f64>,
    pub latency_ms: f64,
}

#[derive(Debug, Default)]
pub struct RecentRequests {
    ring: Mutex<VecDeque<RecentRequest>>,
}

impl RecentRequests {
    pub fn push(&self, r: &RequestRecord) {
        let entry = RecentRequest {
            time: r.time.clone(),
            request_id: r.request_id.clone(),
            route: r.route.clone(),
            consumer: r.consumer.clone(),
            key_id: r.key_id.clone(),
            end_user: r.end_user.clone(),
            model: r.model.clone(),
            provider: r.provider.clone(),
            status: r.status,
            error: r.error,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            cost_usd: r.cost_usd,
            latency_ms: r.latency_ms,
        };
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == CAPACITY {
            ring.pop_front();
        }
        ring.push_back(entry);
    }

    /// The kept requests that `keep` selects, newest first.
    pub fn select(&self, keep: impl Fn(&RecentRequest) -> bool) -> Vec<RecentRequest> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().rev().filter(|r| keep(r)).cloned().collect()
    }
}
