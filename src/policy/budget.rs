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
    /// The count of a prompt admitted on its upper bound, under way (see [`Prompt::at_most`]).
    counting: Option<tokio::sync::oneshot::Receiver<Amounts>>,
}

/// What a request asks of a limit, as far as it is known before it is sent.
pub struct Prompt<F> {
    /// Counts the prompt's tokens (the gateway's estimate); run only when a limit applies.
    pub count: F,
    /// Tokens the prompt cannot exceed, given when it is long enough that counting it would
    /// hold the request up: the request is then admitted on this bound while the count runs
    /// beside the upstream call, and the counters move down to the count when it is done. A
    /// bound that does not fit falls back to counting first.
    pub at_most: Option<u64>,
    /// The completion tokens the request asks for at most, when it says.
    pub completion: Option<u64>,
}

impl Budget {
    /// Reserves the request's estimate against every limit that applies before routing.
    /// Before routing the target is unknown: the dearest of `prices` is reserved.
    pub async fn reserve<F>(
        limits: &RateLimits,
        facts: &RequestFacts<'_>,
        prices: impl Iterator<Item = Price>,
        prompt: Prompt<F>,
    ) -> Result<Budget, GatewayError>
    where
        F: Future<Output = u64> + Send + 'static,
    {
        if !limits.applies(facts) {
            return Ok(Budget {
                reservation: Reservation::empty(limits.limiter.clone()),
                estimate: None,
                counting: None,
            });
        }
        let completion = prompt
            .completion
            .unwrap_or(limits.default_completion_tokens);
        if let Some(at_most) = prompt.at_most {
            let prices: Vec<Price> = prices.collect();
            let bound = amounts(at_most, completion, prices.iter().copied());
            match limits.reserve(limits.request_counters(facts, &bound)).await {
                Ok(mut reservation) => {
                    let refiner = reservation.refine_later();
                    let (counted, counting) = tokio::sync::oneshot::channel();
                    let count = prompt.count;
                    // Bounded work (the prompt is size-limited) that ends on its own.
                    tokio::spawn(async move {
                        let estimate = amounts(count.await, completion, prices);
                        refiner.refine(estimate);
                        let _ = counted.send(estimate);
                    });
                    return Ok(Budget {
                        reservation,
                        estimate: Some(bound),
                        counting: Some(counting),
                    });
                }
                // The bound does not fit: the estimate may.
                Err(GatewayError::RateLimited { .. }) => {
                    let estimate = amounts(prompt.count.await, completion, prices);
                    return Self::reserve_estimate(limits, facts, estimate).await;
                }
                Err(e) => return Err(e),
            }
        }
        let estimate = amounts(prompt.count.await, completion, prices);
        Self::reserve_estimate(limits, facts, estimate).await
    }

    async fn reserve_estimate(
        limits: &RateLimits,
        facts: &RequestFacts<'_>,
        estimate: Amounts,
    ) -> Result<Budget, GatewayError> {
        let reservation = limits
            .reserve(limits.request_counters(facts, &estimate))
            .await?;
        Ok(Budget {
            reservation,
            estimate: Some(estimate),
            counting: None,
        })
    }

    /// Takes in the count of a prompt admitted on its bound, once the upstream answered (the
    /// count started with the request and is done by then, bar the fastest upstreams): the
    /// counters reserved since (a provider's) move to it too, the log and a cut stream's
    /// charge use it.
    pub async fn refine(&mut self) {
        let Some(counting) = self.counting.take() else {
            return;
        };
        // Should the count fail, the bound stays (it never undercounts).
        if let Ok(estimate) = counting.await {
            self.reservation.refine(&estimate);
            self.estimate = Some(estimate);
        }
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
                let usage = usage_of(estimate.prompt, generated);
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

fn usage_of(prompt: u64, completion: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        ..Usage::default()
    }
}

/// What a request is reserved at: `prompt` and `completion` tokens at the dearest of `prices`.
fn amounts(prompt: u64, completion: u64, prices: impl IntoIterator<Item = Price>) -> Amounts {
    Amounts {
        requests: 1,
        prompt,
        completion,
        cost_micro_usd: prices
            .into_iter()
            .map(|p| micro(pricing::cost(&p, &usage_of(prompt, completion))))
            .max()
            .unwrap_or(0),
    }
}
