//! The request pipeline: route → authenticate → route ACL → endpoint → model access →
//! provider → response (whole or streamed), with one request-log record per request.

mod failover;
mod stream;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Value, json};

use crate::auth::{self, Caller};
use crate::body::JsonBody;
use crate::error::GatewayError;
use crate::policy::access::{self, Purpose};
use futures_util::StreamExt;

use crate::policy::limits::{Amounts, RateLimits, RequestFacts, Reservation, micro};
use crate::policy::{decorator, pricing, tokens};
use crate::providers::Usage;
use crate::providers::{ChatReply, Complete, Frame, FrameStream};
use crate::routing::Target;
use crate::snapshot::{Model, Route, Snapshot};
use crate::state::AppState;
use crate::telemetry::redact;
use crate::telemetry::request_log::RequestRecord;

pub const REQUEST_ID: &str = "x-request-id";
pub const PROVIDER_HEADER: &str = "x-tollgate-provider";
pub const UPSTREAM_MODEL_HEADER: &str = "x-tollgate-upstream-model";
/// The time this request spent in the gateway itself, in milliseconds.
pub const OVERHEAD_HEADER: &str = "x-tollgate-overhead-ms";

/// A request in progress and its log record.
pub struct Exchange {
    pub record: RequestRecord,
    pub started: Instant,
    /// Payload logging is on: the answer goes into the record too.
    pub log_response: bool,
}

impl Exchange {
    fn begin(request: &Request) -> Self {
        let request_id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|id| {
                !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
            })
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let path = request.uri().path();
        let record = RequestRecord {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            request_id,
            method: request.method().to_string(),
            path: path.chars().take(256).collect(),
            started_at: Some(SystemTime::now()),
            started_instant: Some(Instant::now()),
            traceparent: request
                .headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .filter(|v| v.len() <= 128)
                .map(str::to_owned),
            ..RequestRecord::default()
        };
        Self {
            record,
            started: Instant::now(),
            log_response: false,
        }
    }

    fn fail(&mut self, error: &GatewayError) {
        self.record.error = Some(error.code());
        self.record.error_message = Some(error.log_detail());
    }

    fn elapsed_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }
}

/// The fallback handler of the proxy listener: every path goes through here.
pub async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let snapshot = state.snapshot();
    let mut pending = Unanswered {
        exchange: Exchange::begin(&request),
        state: &state,
        snapshot: &snapshot,
        answered: false,
    };
    let result = dispatch(&state, &snapshot, request, &mut pending.exchange).await;
    pending.answered = true;
    let exchange = &mut pending.exchange;
    let request_id = exchange.record.request_id.clone();
    let (mut response, log_now) = match result {
        Ok(Reply::Whole(response)) => (response, true),
        // The stream owns the log record now and writes it when it ends.
        Ok(Reply::Streaming(response)) => (response, false),
        Err(error) => {
            exchange.fail(&error);
            (error.into_response(), true)
        }
    };
    if log_now {
        exchange.record.status = response.status().as_u16();
        exchange.record.latency_ms = exchange.elapsed_ms();
        let overhead =
            exchange.record.latency_ms - exchange.record.upstream_latency_ms.unwrap_or(0.0);
        exchange.record.overhead_ms = Some(overhead);
        set_overhead_header(&mut response, overhead);
        state.log(&snapshot, std::mem::take(&mut exchange.record));
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

/// A request not answered yet. If the client goes away first, hyper drops the handler's
/// future; this guard then logs the request (status 499, `client_disconnected`) so that it
/// still shows in the log and the metrics.
struct Unanswered<'a> {
    exchange: Exchange,
    state: &'a AppState,
    snapshot: &'a Snapshot,
    answered: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let error = GatewayError::ClientClosed;
        self.exchange.fail(&error);
        let record = &mut self.exchange.record;
        record.status = error.status().as_u16();
        record.client_disconnected = true;
        record.latency_ms = self.exchange.started.elapsed().as_secs_f64() * 1000.0;
        self.state
            .log(self.snapshot, std::mem::take(&mut self.exchange.record));
    }
}

fn set_overhead_header(response: &mut Response, overhead_ms: f64) {
    if let Ok(v) = HeaderValue::from_str(&format!("{overhead_ms:.3}")) {
        response.headers_mut().insert(OVERHEAD_HEADER, v);
    }
}

enum Reply {
    Whole(Response),
    Streaming(Response),
}

/// The reservation a request holds, and the estimate it was made for (none when no limit applies).
struct Budget {
    reservation: Reservation,
    estimate: Option<Amounts>,
}

/// Provider-scoped limits, once the target is known. A provider over its limit is skipped by
/// the failover like an unavailable target.
async fn reserve_for_provider(
    limits: &RateLimits,
    facts: &RequestFacts<'_>,
    target: &Target,
    estimate: Option<&Amounts>,
) -> Result<Reservation, GatewayError> {
    match estimate {
        Some(estimate) => {
            limits
                .reserve(limits.provider_counters(facts, &target.provider_name, estimate))
                .await
        }
        None => Ok(Reservation::empty(limits.limiter.clone())),
    }
}

/// Settles a whole answer's reservation to its real usage (the estimate when the upstream
/// reported none) and records its cost.
fn charge(
    reservation: Reservation,
    usage: Option<&Usage>,
    estimate: Option<&Amounts>,
    target: &Target,
    record: &mut RequestRecord,
) {
    let cost = usage.and_then(|u| target.price.map(|p| pricing::cost(&p, u)));
    record.cost_usd = cost;
    match (usage, estimate) {
        (Some(u), _) => reservation.settle(&Amounts::of_usage(u, cost.unwrap_or(0.0))),
        (None, Some(e)) => reservation.settle(e),
        (None, None) => {}
    }
}

fn with_headers(mut response: Response, headers: &[(String, String)]) -> Response {
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(n, v);
        }
    }
    response
}

/// A target's chat answer: whole, or a stream whose first frame has already arrived.
enum Answer {
    Whole(Complete),
    Stream(Frame, FrameStream),
}

/// Waits for a stream's first frame, so that a stream failing before anything reached the
/// client can still fail over to the next target.
async fn first_frame(mut frames: FrameStream, target: &Target) -> Result<Answer, GatewayError> {
    let provider = || target.provider_name.clone();
    match tokio::time::timeout(target.timeouts.idle, frames.next()).await {
        Err(_) => Err(GatewayError::UpstreamTimeout {
            provider: provider(),
            phase: crate::providers::IDLE,
        }),
        Ok(None) => Err(GatewayError::UpstreamProtocol {
            provider: provider(),
            detail: "the event stream was empty".into(),
        }),
        Ok(Some(Err(error))) => Err(error),
        Ok(Some(Ok(frame))) => match &frame.error {
            Some(message) => Err(GatewayError::UpstreamProtocol {
                provider: provider(),
                detail: message.clone(),
            }),
            None => Ok(Answer::Stream(frame, frames)),
        },
    }
}

async fn dispatch(
    state: &Arc<AppState>,
    snapshot: &Arc<Snapshot>,
    request: Request,
    exchange: &mut Exchange,
) -> Result<Reply, GatewayError> {
    let limit = snapshot.limits.max_headers.as_u64();
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if (header_bytes + request.uri().to_string().len()) as u64 > limit {
        return Err(GatewayError::HeadersTooLarge { limit });
    }

    let path = request.uri().path().to_owned();
    let (route, endpoint) = snapshot
        .match_route(&path)
        .ok_or_else(|| GatewayError::NotFound(path.clone()))?;
    let route = route.clone();
    exchange.record.route = Some(route.name.clone());

    let caller = auth::authenticate(snapshot, request.headers()).await?;
    exchange.record.consumer = Some(caller.consumer.name.clone());
    exchange.record.custom_id = caller.consumer.custom_id.clone();
    exchange.record.end_user = caller.end_user.as_ref().map(|u| u.email.clone());
    exchange.record.acting_as = caller
        .end_user
        .as_ref()
        .and_then(|u| u.consumer.as_ref())
        .map(|c| c.name.clone());
    access::check_route(&route, &caller)?;

    let method = request.method().clone();
    let call = Call {
        state,
        snapshot,
        route: &route,
        caller: &caller,
    };
    match (endpoint, &method) {
        ("/v1/chat/completions", &Method::POST) => call.chat(request, exchange).await,
        ("/v1/embeddings", &Method::POST) => {
            call.embeddings(request, exchange).await.map(Reply::Whole)
        }
        ("/v1/models", &Method::GET) => Ok(Reply::Whole(call.list_models(exchange))),
        (e, &Method::GET) if e.starts_with("/v1/models/") => call
            .retrieve_model(&e["/v1/models/".len()..], exchange)
            .map(Reply::Whole),
        ("/v1/chat/completions" | "/v1/embeddings", _) | ("/v1/models", _) => {
            Err(GatewayError::MethodNotAllowed {
                method: method.to_string(),
                path,
            })
        }
        _ => Err(GatewayError::NotFound(path)),
    }
}

/// One authenticated request on one route.
struct Call<'a> {
    state: &'a Arc<AppState>,
    snapshot: &'a Arc<Snapshot>,
    route: &'a Arc<Route>,
    caller: &'a Caller,
}

impl Call<'_> {
    async fn chat(&self, request: Request, exchange: &mut Exchange) -> Result<Reply, GatewayError> {
        exchange.record.endpoint = Some("chat");
        let (parts, body) = request.into_parts();
        let mut body = self.read_json(&parts.headers, body, exchange).await?;
        if !has_messages(&body) {
            return Err(GatewayError::InvalidRequest(
                "`messages` must be a non-empty array".into(),
            ));
        }
        let stream = match body.get::<bool>("stream") {
            None => false,
            Some(Ok(b)) => b,
            Some(Err(_)) => {
                return Err(GatewayError::InvalidRequest(
                    "`stream` must be a boolean".into(),
                ));
            }
        };
        #[derive(serde::Deserialize)]
        struct StreamOptions {
            include_usage: Option<bool>,
        }
        let client_wants_usage = body
            .get::<StreamOptions>("stream_options")
            .and_then(Result::ok)
            .and_then(|o| o.include_usage)
            == Some(true);
        exchange.record.stream = stream;
        let model = self.model_for(&body, Purpose::Chat, exchange)?;

        self.log_payload(&body, exchange);
        // The client's words are checked; the operator's decorations are added after.
        if let Some(guard) = &self.route.guard {
            let (guard, checked) = (guard.clone(), body.clone());
            cpu_bound(body.len(), move || guard.check(&checked)).await??;
        }
        decorator::decorate(
            &mut body,
            self.route.decorator.as_ref(),
            model.decorator.as_ref(),
        );

        let facts = self.facts(&model);
        let completion = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|k| body.get::<u64>(k).and_then(Result::ok));
        let counted = body.clone();
        let budget = self.reserve(&facts, &model, async move {
            let size = counted.len();
            let prompt = cpu_bound(size, move || tokens::chat_prompt(&counted)).await;
            // Should the estimate fail, a byte count never undercounts.
            (prompt.unwrap_or(size as u64), completion)
        });
        let Budget {
            mut reservation,
            estimate,
        } = budget.await?;

        let answered = self
            .attempt_targets(
                &model,
                &parts.headers,
                &facts,
                estimate,
                &body,
                exchange,
                |target, body, max_response| async move {
                    let opts = target.call_options(max_response);
                    match target.provider.chat(body, stream, opts).await? {
                        ChatReply::Complete(complete) => Ok(Answer::Whole(complete)),
                        ChatReply::Stream(frames) => first_frame(frames, &target).await,
                    }
                },
            )
            .await?;
        let failover::Answered {
            value: (answer, held),
            target,
            in_flight,
        } = answered;
        reservation.absorb(held);
        let limit_headers = reservation.headers();
        match answer {
            Answer::Whole(complete) => {
                charge(
                    reservation,
                    complete.usage.as_ref(),
                    estimate.as_ref(),
                    &target,
                    &mut exchange.record,
                );
                let response = whole_json(complete, &target, exchange);
                Ok(Reply::Whole(with_headers(response, &limit_headers)))
            }
            Answer::Stream(first, frames) => {
                let overhead =
                    exchange.elapsed_ms() - exchange.record.upstream_latency_ms.unwrap_or(0.0);
                exchange.record.overhead_ms = Some(overhead);
                // Move the record into the stream; a placeholder stays behind.
                let owned = Exchange {
                    record: std::mem::take(&mut exchange.record),
                    started: exchange.started,
                    log_response: exchange.log_response,
                };
                let upstream = stream::Upstream {
                    first,
                    rest: frames,
                    target: target.clone(),
                    in_flight,
                    circuit: model.pool.circuit.clone(),
                };
                let budget = stream::StreamBudget {
                    reservation,
                    estimate,
                };
                let response = stream::sse_response(
                    upstream,
                    budget,
                    client_wants_usage,
                    owned,
                    self.state.clone(),
                    self.snapshot.clone(),
                );
                let mut response =
                    with_headers(with_target_headers(response, &target), &limit_headers);
                set_overhead_header(&mut response, overhead);
                Ok(Reply::Streaming(response))
            }
        }
    }

    async fn embeddings(
        &self,
        request: Request,
        exchange: &mut Exchange,
    ) -> Result<Response, GatewayError> {
        exchange.record.endpoint = Some("embeddings");
        let (parts, body) = request.into_parts();
        let body = self.read_json(&parts.headers, body, exchange).await?;
        if !body.contains("input") {
            return Err(GatewayError::InvalidRequest("`input` is required".into()));
        }
        let model = self.model_for(&body, Purpose::Embeddings, exchange)?;
        self.log_payload(&body, exchange);
        let facts = self.facts(&model);
        let Budget {
            mut reservation,
            estimate,
        } = self
            .reserve(&facts, &model, async {
                let counted = body.clone();
                let size = counted.len();
                let input = cpu_bound(size, move || tokens::embedding_input(&counted)).await;
                (input.unwrap_or(size as u64), Some(0))
            })
            .await?;
        let answered = self
            .attempt_targets(
                &model,
                &parts.headers,
                &facts,
                estimate,
                &body,
                exchange,
                |target, body, max_response| async move {
                    let opts = target.call_options(max_response);
                    target.provider.embeddings(body, opts).await
                },
            )
            .await?;
        let (complete, held) = answered.value;
        reservation.absorb(held);
        let limit_headers = reservation.headers();
        charge(
            reservation,
            complete.usage.as_ref(),
            estimate.as_ref(),
            &answered.target,
            &mut exchange.record,
        );
        Ok(with_headers(
            whole_json(complete, &answered.target, exchange),
            &limit_headers,
        ))
    }

    /// With payload logging on for this route, the request body goes into the record.
    fn log_payload(&self, body: &JsonBody, exchange: &mut Exchange) {
        if self.route.log_payloads {
            let mut logged = body.to_map().map(Value::Object).unwrap_or_default();
            redact::redact(&mut logged);
            exchange.record.request_body = Some(logged);
            exchange.log_response = true;
        }
    }

    /// Tries the model's targets in the order its strategy gives, reserving provider-scoped
    /// limits per attempt; `call` makes one attempt (the target, a copy of the body, and the
    /// largest answer to read).
    #[allow(clippy::too_many_arguments)]
    async fn attempt_targets<T, F, Fut>(
        &self,
        model: &Model,
        headers: &HeaderMap,
        facts: &RequestFacts<'_>,
        estimate: Option<Amounts>,
        body: &JsonBody,
        exchange: &mut Exchange,
        call: F,
    ) -> Result<failover::Answered<(T, Reservation)>, GatewayError>
    where
        F: Fn(Arc<Target>, JsonBody, u64) -> Fut,
        Fut: std::future::Future<Output = Result<T, GatewayError>>,
    {
        let plan = model.pool.plan(&self.caller.acting().name, headers);
        let max_response = self.snapshot.limits.max_response.as_u64();
        let limits = &self.snapshot.rate_limits;
        let call = &call;
        failover::run(model, plan, &mut exchange.record, |target| {
            let body = body.clone();
            async move {
                let held = reserve_for_provider(limits, facts, &target, estimate.as_ref()).await?;
                Ok((call(target, body, max_response).await?, held))
            }
        })
        .await
    }

    fn facts<'m>(&'m self, model: &'m Model) -> RequestFacts<'m> {
        RequestFacts {
            consumer: self.caller.acting(),
            route: &self.route.name,
            model: &model.name,
        }
    }

    /// Reserves the request's estimate against every limit that applies before routing. The
    /// prompt is only counted when some limit applies.
    async fn reserve(
        &self,
        facts: &RequestFacts<'_>,
        model: &Model,
        count: impl std::future::Future<Output = (u64, Option<u64>)>,
    ) -> Result<Budget, GatewayError> {
        let limits = &self.snapshot.rate_limits;
        if !limits.applies(facts) {
            return Ok(Budget {
                reservation: Reservation::empty(limits.limiter.clone()),
                estimate: None,
            });
        }
        let (prompt, completion) = count.await;
        let completion = completion.unwrap_or(limits.default_completion_tokens);
        let mut estimate = Amounts {
            requests: 1,
            prompt,
            completion,
            cost_micro_usd: 0,
        };
        // Before routing the target is unknown: reserve the dearest one's price.
        let usage = Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            ..Usage::default()
        };
        estimate.cost_micro_usd = model
            .pool
            .targets
            .iter()
            .filter_map(|t| t.price)
            .map(|p| micro(pricing::cost(&p, &usage)))
            .max()
            .unwrap_or(0);
        let reservation = limits
            .reserve(limits.request_counters(facts, &estimate))
            .await?;
        Ok(Budget {
            reservation,
            estimate: Some(estimate),
        })
    }

    fn list_models(&self, exchange: &mut Exchange) -> Response {
        exchange.record.endpoint = Some("models");
        let data: Vec<Value> = access::visible_models(self.snapshot, self.route, self.caller)
            .map(|m| self.model_object(m))
            .collect();
        axum::Json(json!({ "object": "list", "data": data })).into_response()
    }

    fn retrieve_model(
        &self,
        name: &str,
        exchange: &mut Exchange,
    ) -> Result<Response, GatewayError> {
        exchange.record.endpoint = Some("models");
        access::visible_models(self.snapshot, self.route, self.caller)
            .find(|m| m.name == name)
            .map(|m| axum::Json(self.model_object(m)).into_response())
            .ok_or_else(|| GatewayError::ModelNotFound(name.to_owned()))
    }

    fn model_object(&self, model: &Model) -> Value {
        let owner = model
            .pool
            .targets
            .first()
            .map_or("tollgate", |t| t.provider_name.as_str());
        json!({ "id": model.name, "object": "model", "created": self.snapshot.created, "owned_by": owner })
    }

    /// Resolves the requested model and records it.
    fn model_for(
        &self,
        body: &JsonBody,
        purpose: Purpose,
        exchange: &mut Exchange,
    ) -> Result<Arc<Model>, GatewayError> {
        let requested = match body.get::<std::borrow::Cow<str>>("model") {
            None => None,
            Some(Ok(s)) if !s.is_empty() => Some(s),
            Some(_) => {
                return Err(GatewayError::InvalidRequest(
                    "`model` must be a non-empty string".into(),
                ));
            }
        };
        let requested = requested.as_deref();
        exchange.record.model = requested.map(str::to_owned);
        let model =
            access::resolve_model(self.snapshot, self.route, self.caller, requested, purpose)?;
        exchange.record.model = Some(model.name.clone());
        Ok(model)
    }

    /// Reads the body (refusing more than the configured limit) as a JSON object.
    async fn read_json(
        &self,
        headers: &HeaderMap,
        body: Body,
        exchange: &mut Exchange,
    ) -> Result<JsonBody, GatewayError> {
        let limits = &self.snapshot.limits;
        let bytes = tokio::time::timeout(
            limits.body_read_timeout,
            read_body(headers, body, limits.max_body.as_u64()),
        )
        .await
        .map_err(|_| GatewayError::BodyTimeout(limits.body_read_timeout))??;
        exchange.record.request_bytes = bytes.len() as u64;
        cpu_bound(bytes.len(), move || JsonBody::parse(bytes))
            .await?
            .map_err(|e| {
                GatewayError::InvalidRequest(format!(
                    "the request body is not a valid JSON object: {e}"
                ))
            })
    }
}

/// Bodies up to this size are parsed, checked and counted on the async workers (well under a
/// millisecond); larger ones on the blocking pool, so that no prompt delays other requests.
const INLINE_WORK_BYTES: usize = 64 * 1024;

/// At most this many large bodies are worked on at once (one per core): a flood of huge
/// prompts queues here instead of taking every thread of the blocking pool.
static CPU_SLOTS: std::sync::LazyLock<tokio::sync::Semaphore> = std::sync::LazyLock::new(|| {
    tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, usize::from))
});

/// Runs work that grows with a body of `size` bytes: inline when small, else on the blocking
/// pool (bounded by [`CPU_SLOTS`]).
async fn cpu_bound<T: Send + 'static>(
    size: usize,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, GatewayError> {
    if size <= INLINE_WORK_BYTES {
        return Ok(work());
    }
    let _slot = CPU_SLOTS.acquire().await;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| GatewayError::Internal(format!("work on the request body failed: {e}")))
}

/// `messages` is a non-empty array.
fn has_messages(body: &JsonBody) -> bool {
    let Some(raw) = body.raw("messages") else {
        return false;
    };
    let mut inner = raw.iter().filter(|b| !b.is_ascii_whitespace());
    inner.next() == Some(&b'[') && inner.next().is_some_and(|b| *b != b']')
}

async fn read_body(headers: &HeaderMap, body: Body, limit: u64) -> Result<Bytes, GatewayError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    match Limited::new(body, limit as usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(GatewayError::BodyTooLarge { limit })
        }
        Err(_) => Err(GatewayError::InvalidRequest(
            "the request body could not be read".into(),
        )),
    }
}

fn whole_json(complete: Complete, target: &Target, exchange: &mut Exchange) -> Response {
    exchange.record.response_bytes = complete.body.len() as u64;
    if exchange.log_response {
        exchange.record.response_body =
            serde_json::from_slice::<Value>(&complete.body)
                .ok()
                .map(|mut v| {
                    redact::redact(&mut v);
                    v
                });
    }
    if let Some(usage) = &complete.usage {
        exchange.record.set_usage(usage);
    }
    let response = (
        StatusCode::OK,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        complete.body,
    )
        .into_response();
    with_target_headers(response, target)
}

/// Tells the client which provider and upstream model answered.
fn with_target_headers(mut response: Response, target: &Target) -> Response {
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&target.provider_name) {
        headers.insert(PROVIDER_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&target.upstream_model) {
        headers.insert(UPSTREAM_MODEL_HEADER, v);
    }
    response
}
