//! A request's budget: one object held from the reservation before routing to the settlement
//! after the answer, whole, streamed, failed, cancelled or cut at shutdown. The pipeline asks
//! it to reserve and to settle; it never does limit arithmetic itself.

use crate::error::GatewayError;
use crate::policy::limits::{Amounts, RateLimits, RequestFacts, Reservation, micro};
use crate::policy::pricing::{self, Price};
use crate::providers::Usage;

/// What the budget charged for an answer, for the log and metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct Charged {
    /// The usage charged when the record should show it (an estimate for a cut stream).
    pub usage: Option<Usage>,
    /// `usage` is the gateway's estimate, not the upstream's count.
    pub estimated: bool,
    pub cost_usd: Option<f64>,
}

pub struct Budget {
    reservation: Reservation,
    /// None when no limit applies (then nothing is counted).
    estimate: Option<Amounts>,
}

impl Budget {
    /// Reserves the request's estimate against every limit that applies before routing.
    /// `count` estimates (prompt, completion) tokens; it runs only when some limit applies.
    /// Before routing the target is unknown: the dearest of `prices` is reserved.
    pub async fn reserve(
        limits: &RateLimits,
        facts: &RequestFacts<'_>,
        prices: impl Iterator<Item = Price>,
        count: impl Future<Output = (u64, Option<u64>)>,
    ) -> Result<Budget, GatewayError> {
        if !limits.applies(facts) {
            return Ok(Budget {
                reservation: Reservation::empty(limits.limiter.clone()),
                estimate: None,
            });
        }
        let (prompt, completion) = count.await;
        let completion = completion.unwrap_or(limits.default_completion_tokens);
        let usage = Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            ..Usage::default()
        };
        let estimate = Amounts {
            requests: 1,
            prompt,
            completion,
            cost_micro_usd: prices
                .map(|p| micro(pricing::cost(&p, &usage)))
                .max()
                .unwrap_or(0),
        };
        let reservation = limits
            .reserve(limits.request_counters(facts, &estimate))
            .await?;
        Ok(Budget {
            reservation,
            estimate: Some(estimate),
        })
    }

    /// The estimated prompt tokens, when a limit made the gateway count them.
    pub fn prompt_estimate(&self) -> Option<u64> {
        self.estimate.map(|e| e.prompt)
    }

    /// Whether limits apply (then a stream's output is counted as it goes).
    pub fn counts(&self) -> bool {
        self.estimate.is_some()
    }

    /// Reserves the provider-scoped limits once a target is chosen: a provider over its limit
    /// is skipped by the failover like an unavailable target. The reservation is held by the
    /// attempt and [`absorb`](Self::absorb)ed by the budget when that attempt answers.
    pub async fn for_provider(
        &self,
        limits: &RateLimits,
        facts: &RequestFacts<'_>,
        provider: &str,
    ) -> Result<Reservation, GatewayError> {
        match &self.estimate {
            Some(estimate) => {
                limits
                    .reserve(limits.provider_counters(facts, provider, estimate))
                    .await
            }
            None => Ok(Reservation::empty(limits.limiter.clone())),
        }
    }

    pub fn absorb(&mut self, held: Reservation) {
        self.reservation.absorb(held);
    }

    /// The rate-limit headers of the tightest counters.
    pub fn headers(&self) -> crate::policy::limits::LimitHeaders {
        self.reservation.headers()
    }

    /// Settles a whole answer to its real usage (the estimate when the upstream reported
    /// none); returns its cost.
    pub fn settle_whole(self, usage: Option<&Usage>, price: Option<Price>) -> Option<f64> {
        let cost = usage.and_then(|u| price.map(|p| pricing::cost(&p, u)));
        match (usage, &self.estimate) {
            (Some(u), _) => self
                .reservation
                .settle(&Amounts::of_usage(u, cost.unwrap_or(0.0))),
            (None, Some(e)) => self.reservation.settle(e),
            (None, None) => {}
        }
        cost
    }

    /// Settles a stream however it ended: to the upstream's usage when it arrived; else, if
    /// anything was generated, to the prompt estimate and the `generated` tokens; else the
    /// reservation is returned.
    pub fn settle_stream(
        self,
        usage: Option<Usage>,
        generated: u64,
        price: Option<Price>,
    ) -> Charged {
        let cost = |usage: &Usage| price.map(|p| pricing::cost(&p, usage));
        match (usage, self.estimate) {
            (Some(usage), _) => {
                let cost_usd = cost(&usage);
                self.reservation
                    .settle(&Amounts::of_usage(&usage, cost_usd.unwrap_or(0.0)));
                Charged {
                    usage: None,
                    estimated: false,
                    cost_usd,
                }
            }
            (None, Some(estimate)) if generated > 0 => {
                let usage = Usage {
                    prompt_tokens: estimate.prompt,
                    completion_tokens: generated,
                    total_tokens: estimate.prompt + generated,
                    ..Usage::default()
                };
                let cost_usd = cost(&usage);
                self.reservation
                    .settle(&Amounts::of_usage(&usage, cost_usd.unwrap_or(0.0)));
                Charged {
                    usage: Some(usage),
                    estimated: true,
                    cost_usd,
                }
            }
            _ => Charged::default(),
        }
    }
}
