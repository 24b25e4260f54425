//! Counters in this process: one map behind a mutex, so checking and increasing every counter
//! of a request is one atomic step. Expired windows are swept as the map grows.

use std::sync::Mutex;

use super::{Counter, Outcome, now_ms};
use crate::fast_hash::FastHashMap;

#[derive(Debug, Default)]
pub struct LocalStore {
    counters: Mutex<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    values: FastHashMap<String, (u64, u64)>, // key → (value, expires at, Unix ms)
    sweep_at: usize,
}

impl LocalStore {
    pub fn reserve(&self, counters: &[Counter]) -> Outcome {
        let now = now_ms();
        let mut store = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        store.sweep(now);
        let current = |store: &Counters, key: &str| {
            store
                .values
                .get(key)
                .filter(|(_, exp)| *exp > now)
                .map_or(0, |(v, _)| *v)
        };
        if let Some(i) = counters
            .iter()
            .position(|c| current(&store, &c.key) + c.amount > c.max)
        {
            return Outcome::Refused(
                i,
                counters.iter().map(|c| current(&store, &c.key)).collect(),
            );
        }
        let values = counters
            .iter()
            .map(|c| {
                let value = current(&store, &c.key) + c.amount;
                let entry = (value, now + c.ttl_ms(now));
                // A window's key is copied into the map once, when the window opens.
                match store.values.get_mut(&c.key) {
                    Some(slot) => *slot = entry,
                    None => {
                        store.values.insert(c.key.clone(), entry);
                    }
                }
                value
            })
            .collect();
        Outcome::Granted(values)
    }

    pub fn read(&self, counters: &[Counter]) -> Vec<u64> {
        let now = now_ms();
        let store = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        counters
            .iter()
            .map(|c| {
                store
                    .values
                    .get(&c.key)
                    .filter(|(_, exp)| *exp > now)
                    .map_or(0, |(v, _)| *v)
            })
            .collect()
    }

    pub fn adjust<'k>(&self, deltas: impl IntoIterator<Item = (&'k String, i64)>) {
        let mut deltas = deltas.into_iter().peekable();
        if deltas.peek().is_none() {
            return;
        }
        let mut store = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        for (key, delta) in deltas {
            if let Some((value, _)) = store.values.get_mut(key) {
                *value = value.saturating_add_signed(delta);
            }
        }
    }
}

impl Counters {
    /// Drops expired windows once the map has doubled since the last sweep.
    fn sweep(&mut self, now: u64) {
        if self.values.len() > self.sweep_at.max(1024) {
            self.values.retain(|_, (_, exp)| *exp > now);
            self.sweep_at = self.values.len() * 2;
        }
    }
}
