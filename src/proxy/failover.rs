//! Trying a model's targets in order until one answers: targets whose circuit is open or
//! whose provider cannot serve are skipped (without waiting for any timeout), a failure that
//! the model's retry policy names moves on to the next target, and every target tried is
//! written into the request log with its outcome.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::GatewayError;
use crate::routing::health::InFlight;
use crate::routing::{self, Target};
use crate::snapshot::Model;
use crate::telemetry::request_log::{AttemptRecord, RequestRecord};

/// A target's answer, with the target and its in-flight handle (streams keep it to the end).
pub struct Answered<T> {
    pub value: T,
    pub target: Arc<Target>,
    pub in_flight: InFlight,
}

pub async fn run<T, F, Fut>(
    model: &Model,
    plan: Vec<Arc<Target>>,
    record: &mut RequestRecord,
    mut attempt: F,
) -> Result<Answered<T>, GatewayError>
where
    F: FnMut(Arc<Target>) -> Fut,
    Fut: Future<Output = Result<T, GatewayError>>,
{
    let pool = &model.pool;
    let mut tried = 0;
    let mut last_error = None;
    let mut reopens_in: Option<Duration> = None;
    for target in plan {
        if tried == pool.attempts {
            break;
        }
        note_target(record, &target);
        if target.provider.unavailable().is_some() {
            record
                .attempts
                .push(AttemptRecord::skipped(&target, "provider_unavailable"));
            last_error.get_or_insert(GatewayError::ProviderUnavailable(
                target.provider.unavailable().unwrap_or_default().to_owned(),
            ));
            continue;
        }
        let now = Instant::now();
        let Some(mut in_flight) = target.health.try_admit(now) else {
            record
                .attempts
                .push(AttemptRecord::skipped(&target, "circuit_open"));
            let wait = target.health.reopens_in(now).unwrap_or_default();
            reopens_in = Some(reopens_in.map_or(wait, |w| w.min(wait)));
            continue;
        };
        tried += 1;
        let started = Instant::now();
        let offset_ms = record
            .started_instant
            .map(|t| started.duration_since(t).as_secs_f64() * 1000.0);
        match attempt(target.clone()).await {
            Ok(value) => {
                let took = started.elapsed();
                in_flight.succeed(took);
                record
                    .attempts
                    .push(AttemptRecord::tried(&target, "ok", offset_ms, took));
                record.upstream_latency_ms = Some(took.as_secs_f64() * 1000.0);
                return Ok(Answered {
                    value,
                    target,
                    in_flight,
                });
            }
            Err(error @ GatewayError::RateLimited { .. }) => {
                // The provider is over one of its limits: like an unavailable target, skip it.
                tried -= 1;
                record
                    .attempts
                    .push(AttemptRecord::skipped(&target, "rate_limited"));
                last_error = Some(error);
            }
            Err(error) => {
                let took = started.elapsed();
                if routing::failure_kind(&error).is_some() {
                    in_flight.fail(&pool.circuit, error.code(), routing::retry_after(&error));
                }
                record
                    .attempts
                    .push(AttemptRecord::tried(&target, error.code(), offset_ms, took));
                if !pool.retries_on(&error) {
                    return Err(error);
                }
                last_error = Some(error);
            }
        }
    }
    Err(match last_error {
        // Only skipped targets: say when to come back.
        None => GatewayError::NoTargetAvailable {
            model: model.name.to_string(),
            retry_after: reopens_in,
        },
        Some(error) => error,
    })
}

/// The log names the target that answered, or else the last one tried.
fn note_target(record: &mut RequestRecord, target: &Target) {
    record.provider = Some(target.provider_name.clone());
    record.upstream_model = Some(target.upstream_model.clone());
}
