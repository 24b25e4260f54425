//! The latest requests in memory (a bounded ring), for the admin API and console (usage,
//! overview, logs): who used which model, how much, with what outcome. Kept only when the
//! admin API is on.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::telemetry::clock::LogTime;
use crate::telemetry::request_log::RequestRecord;

/// How many requests are kept at most (about 25 MB; the oldest dropped a chunk of 1,024 at a
/// time, so between CAPACITY - 2,048 and CAPACITY are there once it is full), and
/// how many of them keep their payloads (only routes with payload logging have any).
pub const CAPACITY: usize = 100_000;
pub const PAYLOADS: usize = 1_000;

#[derive(Debug, Clone, Serialize)]
pub struct RecentRequest {
    /// Its place in the ring's history (newer is larger): pages are cut by it.
    pub seq: u64,
    pub time: LogTime,
    /// `time` as Unix ms, for windows.
    #[serde(skip)]
    pub at_ms: i64,
    pub request_id: String,
    pub route: Option<Arc<str>>,
    pub consumer: Option<Arc<str>>,
    pub key_id: Option<String>,
    pub end_user: Option<String>,
    pub model: Option<Arc<str>>,
    pub provider: Option<Arc<str>>,
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

/// The ring: sealed chunks of [`CHUNK`] records (never changed once sealed, shared with
/// readers) and the chunk being filled. A reader takes a [`RecentView`] under the lock (a
/// clone of the chunk list and of the open chunk: microseconds) and does its walk without it,
/// so a console query over 100,000 records never holds up the requests being recorded.
#[derive(Debug, Default)]
pub struct RecentRequests {
    ring: Mutex<Ring>,
}

/// Records per sealed chunk.
const CHUNK: usize = 1024;

type Payload = (
    Option<Arc<serde_json::Value>>,
    Option<Arc<serde_json::Value>>,
);

#[derive(Debug, Default)]
struct Ring {
    sealed: VecDeque<Arc<[RecentRequest]>>,
    open: Vec<RecentRequest>,
    next_seq: u64,
    /// The payloads of the latest [`PAYLOADS`] records that have any, by seq (ascending).
    payloads: VecDeque<(u64, Payload)>,
}

impl RecentRequests {
    pub fn push(&self, r: &RequestRecord) {
        let at_ms = r.time.unix_ms();
        let mut entry = RecentRequest {
            seq: 0,
            at_ms,
            time: r.time,
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
            request_body: None,
            response_body: None,
        };
        let payload = (r.request_body.is_some() || r.response_body.is_some()).then(|| {
            (
                r.request_body.clone().map(Arc::new),
                r.response_body.clone().map(Arc::new),
            )
        });
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        entry.seq = ring.next_seq;
        ring.next_seq += 1;
        if let Some(payload) = payload {
            if ring.payloads.len() == PAYLOADS {
                ring.payloads.pop_front();
            }
            ring.payloads.push_back((entry.seq, payload));
        }
        ring.open.push(entry);
        if ring.open.len() == CHUNK {
            let full: Arc<[RecentRequest]> = std::mem::take(&mut ring.open).into();
            ring.sealed.push_back(full);
            // Sealed plus a full open chunk stay within CAPACITY.
            if (ring.sealed.len() + 1) * CHUNK > CAPACITY {
                ring.sealed.pop_front();
            }
        }
    }

    /// What is kept now, to walk without the lock.
    pub fn view(&self) -> RecentView {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        RecentView {
            sealed: ring.sealed.iter().cloned().collect(),
            open: ring.open.clone(),
            payloads: ring.payloads.iter().cloned().collect(),
        }
    }
}

/// The kept requests at one moment, oldest first. Walking it is work that grows with the
/// ring: do it off the async workers.
pub struct RecentView {
    sealed: Vec<Arc<[RecentRequest]>>,
    open: Vec<RecentRequest>,
    payloads: Vec<(u64, Payload)>,
}

impl RecentView {
    fn iter(&self) -> impl DoubleEndedIterator<Item = &RecentRequest> + '_ {
        self.sealed
            .iter()
            .flat_map(|chunk| chunk.iter())
            .chain(self.open.iter())
    }

    /// Up to `limit` requests older than `before` (a `seq`) that `keep` selects, newest
    /// first, with their payloads where kept.
    pub fn page(
        &self,
        before: u64,
        limit: usize,
        keep: impl Fn(&RecentRequest) -> bool,
    ) -> Vec<RecentRequest> {
        self.iter()
            .rev()
            .filter(|r| r.seq < before && keep(r))
            .take(limit)
            .map(|r| {
                let mut r = r.clone();
                if let Ok(i) = self.payloads.binary_search_by_key(&r.seq, |(seq, _)| *seq) {
                    (r.request_body, r.response_body) = self.payloads[i].1.clone();
                }
                r
            })
            .collect()
    }

    /// Folds the requests that arrived since `since_ms` (oldest first) into `acc`.
    pub fn fold_since<'a, A>(
        &'a self,
        since_ms: i64,
        acc: A,
        f: impl FnMut(A, &'a RecentRequest) -> A,
    ) -> A {
        // Records arrive in completion order, so arrival times are only nearly sorted:
        // every entry is looked at.
        self.iter().filter(|r| r.at_ms >= since_ms).fold(acc, f)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize, payload: bool) -> RequestRecord {
        RequestRecord {
            consumer: Some(format!("c{}", i % 7).into()),
            status: 200,
            prompt_tokens: Some(1),
            request_body: payload.then(|| serde_json::json!({"n": i})),
            ..Default::default()
        }
    }

    /// The ring keeps about the latest CAPACITY requests (a chunk is dropped at a time),
    /// pages newest first across chunks, and keeps payloads only for the latest PAYLOADS.
    #[test]
    fn keeps_the_latest_and_pages_across_chunks() {
        let ring = RecentRequests::default();
        let pushed = CAPACITY + 3 * CHUNK + 17;
        for i in 0..pushed {
            ring.push(&record(i, true));
        }
        let view = ring.view();
        let kept = view.fold_since(i64::MIN, 0usize, |n, _| n + 1);
        assert!(kept <= CAPACITY && kept > CAPACITY - 2 * CHUNK, "{kept}");
        let newest = view.page(u64::MAX, 3, |_| true);
        let seqs: Vec<u64> = newest.iter().map(|r| r.seq).collect();
        let last = pushed as u64 - 1;
        assert_eq!(seqs, [last, last - 1, last - 2]);
        // A page that starts in the open chunk and ends in a sealed one.
        let across = view.page(last - 10, 30, |r| r.consumer.as_deref() == Some("c0"));
        assert!(across.iter().all(|r| r.seq < last - 10 && r.seq % 7 == 0));
        assert!(across.windows(2).all(|w| w[0].seq > w[1].seq));
        // Payloads: the latest PAYLOADS only.
        let with = view.page(u64::MAX, PAYLOADS + 5, |_| true);
        assert!(with[..PAYLOADS].iter().all(|r| r.request_body.is_some()));
        assert!(with[PAYLOADS..].iter().all(|r| r.request_body.is_none()));
        // Pushing on does not change a view already taken.
        ring.push(&record(pushed, false));
        assert_eq!(view.fold_since(i64::MIN, 0usize, |n, _| n + 1), kept);
    }
}
