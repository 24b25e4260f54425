//! The latest requests in memory (a bounded ring), for the admin API and console (usage,
//! overview, logs): who used which model, how much, with what outcome. Kept only when the
//! admin API is on.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

use crate::telemetry::request_log::RequestRecord;

/// How many requests are kept (about 25 MB at most), and how many of them keep their
/// payloads (only routes with payload logging have any).
pub const CAPACITY: usize = 100_000;
pub const PAYLOADS: usize = 1_000;

#[derive(Debug, Clone, Serialize)]
pub struct RecentRequest {
    /// Its place in the ring's history (newer is larger): pages are cut by it.
    pub seq: u64,
    pub time: String,
    /// `time` as Unix ms, for windows.
    #[serde(skip)]
    pub at_ms: i64,
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
    pub stream: bool,
    pub endpoint: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_body: Option<std::sync::Arc<serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_body: Option<std::sync::Arc<serde_json::Value>>,
}

#[derive(Debug, Default)]
pub struct RecentRequests {
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    entries: VecDeque<RecentRequest>,
    next_seq: u64,
    /// Entries holding payloads, oldest first (by seq).
    with_payloads: VecDeque<u64>,
}

impl RecentRequests {
    pub fn push(&self, r: &RequestRecord) {
        let at_ms = r
            .started_at
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or_else(crate::store::now_ms, |d| d.as_millis() as i64);
        let mut entry = RecentRequest {
            seq: 0,
            at_ms,
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
            stream: r.stream,
            endpoint: r.endpoint,
            request_body: r.request_body.clone().map(std::sync::Arc::new),
            response_body: r.response_body.clone().map(std::sync::Arc::new),
        };
        let has_payload = entry.request_body.is_some() || entry.response_body.is_some();
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        entry.seq = ring.next_seq;
        ring.next_seq += 1;
        if ring.entries.len() == CAPACITY {
            ring.entries.pop_front();
        }
        if has_payload {
            ring.with_payloads.push_back(entry.seq);
            if ring.with_payloads.len() > PAYLOADS
                && let Some(oldest) = ring.with_payloads.pop_front()
            {
                let first = ring.entries.front().map_or(0, |e| e.seq);
                if let Some(e) = oldest
                    .checked_sub(first)
                    .and_then(|i| ring.entries.get_mut(i as usize))
                {
                    e.request_body = None;
                    e.response_body = None;
                }
            }
        }
        ring.entries.push_back(entry);
    }

    /// Up to `limit` kept requests older than `before` (a `seq`) that `keep` selects,
    /// newest first. The lock is held for one walk over at most the ring, no copying of
    /// what is not returned.
    pub fn page(
        &self,
        before: u64,
        limit: usize,
        keep: impl Fn(&RecentRequest) -> bool,
    ) -> Vec<RecentRequest> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.entries
            .iter()
            .rev()
            .filter(|r| r.seq < before && keep(r))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Folds the kept requests that arrived since `since_ms` (oldest first) into `acc`.
    pub fn fold_since<A>(&self, since_ms: i64, acc: A, f: impl FnMut(A, &RecentRequest) -> A) -> A {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        // Records arrive in completion order, so arrival times are only nearly sorted:
        // every entry is looked at.
        ring.entries
            .iter()
            .filter(|r| r.at_ms >= since_ms)
            .fold(acc, f)
    }
}

/// What a set of requests added up to.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Sums {
    pub requests: u64,
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
}

impl Sums {
    pub fn add(&mut self, r: &RecentRequest) {
        self.requests += 1;
        self.errors += u64::from(r.status >= 400);
        self.prompt_tokens += r.prompt_tokens.unwrap_or(0);
        self.completion_tokens += r.completion_tokens.unwrap_or(0);
        self.cost_usd += r.cost_usd.unwrap_or(0.0);
    }
}
