//! The health of one upstream target (a provider and an upstream model): requests in flight,
//! a latency estimate, recent failures, and the circuit breaker. After `max_fails` consecutive
//! failures (or a 429 with `Retry-After`) the target is taken out until a deadline; then
//! exactly one trial request is let through, and its outcome closes or reopens the circuit.
//!
//! The lock is a plain mutex held for a few field updates, never across an `.await`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::config::CircuitConfig;

/// How many recent failures the status report keeps.
const RECENT: usize = 10;
/// Weight of the newest sample in the latency moving average.
const EWMA_ALPHA: f64 = 0.3;

#[derive(Debug, Default)]
pub struct TargetHealth {
    in_flight: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    consecutive_failures: u32,
    /// Out until then (monotonic, and wall clock for reporting).
    open_until: Option<(Instant, SystemTime)>,
    /// The one request let through after the deadline is on its way.
    trial_in_flight: bool,
    latency_ms: Option<f64>,
    recent_failures: VecDeque<(SystemTime, String)>,
    successes: u64,
    failures: u64,
}

impl TargetHealth {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain numbers behind: keep going with them.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Lets a request through unless the circuit is open (or its trial is already running).
    pub fn try_admit(self: &Arc<Self>, now: Instant) -> Option<InFlight> {
        let mut st = self.state();
        let trial = match st.open_until {
            Some((until, _)) if now < until => return None,
            Some(_) if st.trial_in_flight => return None,
            Some(_) => {
                st.trial_in_flight = true;
                true
            }
            None => false,
        };
        drop(st);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(InFlight {
            health: self.clone(),
            trial,
        })
    }

    /// Whether the circuit is open right now (no request would be admitted before the deadline).
    pub fn is_open(&self, now: Instant) -> bool {
        self.state()
            .open_until
            .is_some_and(|(until, _)| now < until)
    }

    /// How long until an open circuit lets a trial through.
    pub fn reopens_in(&self, now: Instant) -> Option<Duration> {
        self.state()
            .open_until
            .map(|(until, _)| until.saturating_duration_since(now))
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Moving average of time to first token (streams) or latency (whole answers), in ms.
    pub fn latency_ms(&self) -> Option<f64> {
        self.state().latency_ms
    }

    /// For the status listener.
    pub fn report(&self, now: Instant) -> Value {
        let st = self.state();
        let (state, open_until) = match st.open_until {
            Some((until, wall)) if now < until => ("open", Some(wall)),
            Some((_, wall)) => ("half-open", Some(wall)),
            None => ("up", None),
        };
        json!({
            "state": state,
            "open_until": open_until.map(|t| humantime::format_rfc3339_millis(t).to_string()),
            "consecutive_failures": st.consecutive_failures,
            "in_flight": self.in_flight(),
            "latency_ms": st.latency_ms.map(|l| (l * 10.0).round() / 10.0),
            "successes": st.successes,
            "failures": st.failures,
            "recent_failures": st.recent_failures.iter().map(|(t, why)| json!({
                "time": humantime::format_rfc3339_millis(*t).to_string(), "error": why,
            })).collect::<Vec<_>>(),
        })
    }
}

/// One request on its way to a target. Dropping it ends the request; `succeed` and `fail`
/// report its outcome to the circuit breaker.
#[derive(Debug)]
pub struct InFlight {
    health: Arc<TargetHealth>,
    trial: bool,
}

impl InFlight {
    pub fn succeed(&mut self, latency: Duration) {
        let mut st = self.health.state();
        st.successes += 1;
        st.consecutive_failures = 0;
        st.open_until = None;
        st.trial_in_flight = false;
        let sample = latency.as_secs_f64() * 1000.0;
        st.latency_ms = Some(
            st.latency_ms
                .map_or(sample, |avg| EWMA_ALPHA * sample + (1.0 - EWMA_ALPHA) * avg),
        );
        self.trial = false;
    }

    /// Counts a failure; opens the circuit after `max_fails` in a row, after a failed trial,
    /// or for as long as the upstream asked (`Retry-After`).
    pub fn fail(&mut self, policy: &CircuitConfig, why: &str, retry_after: Option<Duration>) {
        let now = Instant::now();
        let mut st = self.health.state();
        st.failures += 1;
        st.consecutive_failures += 1;
        if st.recent_failures.len() == RECENT {
            st.recent_failures.pop_front();
        }
        st.recent_failures
            .push_back((SystemTime::now(), why.to_owned()));
        let mut open_for = (self.trial || st.consecutive_failures >= policy.max_fails)
            .then_some(policy.fail_timeout);
        if let Some(after) = retry_after {
            open_for = Some(open_for.map_or(after, |d| d.max(after)));
        }
        if let Some(d) = open_for {
            let until = now + d;
            if st
                .open_until
                .is_none_or(|(current, _)| current < until || self.trial)
            {
                st.open_until = Some((until, SystemTime::now() + d));
            }
        }
        st.trial_in_flight = false;
        self.trial = false;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.health.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.trial {
            // Neither success nor failure (e.g. the client's own bad request): let the next
            // request be the trial.
            self.health.state().trial_in_flight = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_fails: u32, secs: u64) -> CircuitConfig {
        CircuitConfig {
            max_fails,
            fail_timeout: Duration::from_secs(secs),
        }
    }

    #[test]
    fn opens_after_max_fails_then_one_trial_decides() {
        let h = Arc::new(TargetHealth::default());
        let p = policy(2, 30);
        let t0 = Instant::now();
        h.try_admit(t0).unwrap().fail(&p, "500", None);
        assert!(!h.is_open(t0));
        h.try_admit(t0).unwrap().fail(&p, "500", None);
        assert!(
            h.is_open(Instant::now()),
            "two failures in a row open the circuit"
        );
        assert!(h.try_admit(Instant::now()).is_none());

        let later = Instant::now() + Duration::from_secs(31);
        let mut trial = h
            .try_admit(later)
            .expect("after the timeout one trial goes");
        assert!(h.try_admit(later).is_none(), "only one trial at a time");
        trial.fail(&p, "500", None);
        drop(trial);
        assert!(h.is_open(Instant::now()), "a failed trial reopens at once");

        let much_later = later + Duration::from_secs(31);
        let mut trial = h.try_admit(much_later).unwrap();
        trial.succeed(Duration::from_millis(100));
        drop(trial);
        assert!(
            h.try_admit(much_later).is_some(),
            "a good trial closes the circuit"
        );
        assert_eq!(h.in_flight(), 0);
        assert_eq!(h.report(much_later)["state"], "up");
    }

    #[test]
    fn retry_after_is_honoured_even_below_max_fails() {
        let h = Arc::new(TargetHealth::default());
        h.try_admit(Instant::now()).unwrap().fail(
            &policy(5, 30),
            "429",
            Some(Duration::from_secs(7)),
        );
        let now = Instant::now();
        assert!(h.is_open(now));
        let left = h.reopens_in(now).unwrap();
        assert!(left <= Duration::from_secs(7) && left > Duration::from_secs(6));
    }

    #[test]
    fn latency_is_a_moving_average() {
        let h = Arc::new(TargetHealth::default());
        h.try_admit(Instant::now())
            .unwrap()
            .succeed(Duration::from_millis(100));
        h.try_admit(Instant::now())
            .unwrap()
            .succeed(Duration::from_millis(200));
        assert_eq!(h.latency_ms().map(|l| l.round()), Some(130.0));
    }
}
