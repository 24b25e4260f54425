//! The request pipeline: route → authenticate → route ACL → endpoint → model access →
//! provider → response (whole or streamed), with one request-log record per request.

mod batches;
mod failover;
mod stream;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::auth::{self, Caller};
use crate::body::JsonBody;
use crate::dialect::responses::{self, TargetFilter};
use crate::dialect::{AnswerContext, Decoded, Dialect};
use crate::error::GatewayError;
use crate::policy::access::{self, Purpose};
use futures_util::StreamExt;

use crate::policy::budget::{Budget, Prompt};
use crate::policy::limits::{RequestFacts, Reservation};
use crate::policy::{decorator, tokens};
use crate::providers::{ChatReply, Complete, Frame, FrameStream};
use crate::routing::Target;
use crate::snapshot::{Model, Route, Snapshot};
use crate::state::AppState;
use crate::telemetry::redact;
use crate::telemetry::request_log::RequestRecord;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const PROVIDER_HEADER: HeaderName = HeaderName::from_static("x-tollgate-provider");
pub const UPSTREAM_MODEL_HEADER: HeaderName = HeaderName::from_static("x-tollgate-upstream-model");
/// W3C trace context, carried into the gateway's spans.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The time this request spent in the gateway itself, in milliseconds.
pub const OVERHEAD_HEADER: HeaderName = HeaderName::from_static("x-tollgate-overhead-ms");
/// On a `count_tokens` answer the gateway computed itself: `estimate`.
pub const TOKEN_COUNT_HEADER: HeaderName = HeaderName::from_static("x-tollgate-token-count");

const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
const ANTHROPIC_BETA: HeaderName = HeaderName::from_static("anthropic-beta");

/// Anthropic's SDKs and Claude Code send `anthropic-version`: they get Anthropic's list shape.
fn anthropic_shape(headers: &HeaderMap) -> bool {
    headers.contains_key(ANTHROPIC_VERSION)
}

/// A fresh request id: a random UUID, written without the formatting machinery.
fn new_request_id() -> String {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut text)
        .to_owned()
}

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
            .unwrap_or_else(new_request_id);
        let path = request.uri().path();
        let now = SystemTime::now();
        let started = Instant::now();
        let record = RequestRecord {
            time: crate::telemetry::clock::LogTime(now),
            request_id,
            method: request.method().clone(),
            // A URI's path is ASCII (anything else is percent-encoded): cut by bytes.
            path: path.get(..256).unwrap_or(path).to_owned(),
            started_instant: Some(started),
            traceparent: request
                .headers()
                .get(TRACEPARENT)
                .and_then(|v| v.to_str().ok())
                .filter(|v| v.len() <= 128)
                .map(str::to_owned),
            ..RequestRecord::default()
        };
        Self {
            record,
            started,
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

/// The proxy listener's service: every request, whatever its path, goes to [`handle`]. A
/// router with one fallback did the same through several layers of its own (a boxed
/// service cloned per request, its future boxed, the answer mapped twice). The future is
/// boxed once, here, as it is made: hyper keeps it by pointer from then on.
#[derive(Clone)]
pub struct ProxyService(pub Arc<AppState>);

impl tower_service::Service<Request> for ProxyService {
    type Response = Response;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // Room first, then the future made in it: `Box::pin(future)` made the future on the
        // stack and copied all of it (~7 KB, nearly all of it room for states it has not
        // reached yet: ~700 instructions and a hundred cache lines written a request) into
        // the box.
        boxed_in_place(|| serve(self.0.clone(), request))
    }
}

/// `make`'s value made straight into a new box (see [`ProxyService::call`]).
fn boxed_in_place<F>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    let room = Box::<F>::new_uninit();
    Box::into_pin(Box::write(room, make()))
}

async fn serve(state: Arc<AppState>, request: Request) -> Result<Response, Infallible> {
    Ok(handle(State(state), request).await)
}

/// Answers one request of the proxy listener (see [`ProxyService`]).
pub async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let snapshot = state.snapshot();
    let mut pending = Unanswered {
        exchange: Exchange::begin(&request),
        state: &state,
        snapshot: &snapshot,
        answered: false,
    };
    let dialect = snapshot
        .match_route(request.uri().path())
        .map_or(Dialect::Chat, |(_, endpoint)| Dialect::for_path(endpoint));
    // Not boxed here: `ProxyService` boxes this whole future as it is made, the one copy of
    // the pipeline's state (several KB; the rarely taken paths inside are boxed where they
    // are awaited, so that they do not widen it).
    // Made now: a stream takes the record (and its id) with it.
    let request_id = HeaderValue::from_str(&pending.exchange.record.request_id);
    let result = dispatch(&state, &snapshot, request, &mut pending.exchange).await;
    pending.answered = true;
    let exchange = &mut pending.exchange;
    let (mut response, log_now) = match result {
        Ok(Reply::Whole(response)) => (response, true),
        // The stream owns the log record now and writes it when it ends.
        Ok(Reply::Streaming(response)) => (response, false),
        Err(error) => {
            exchange.fail(&error);
            let unread_body = matches!(
                error,
                GatewayError::BodyTooLarge { .. } | GatewayError::BodyTimeout(_)
            );
            let mut response = dialect.error_response(error);
            if unread_body {
                crate::error::close_connection(&mut response);
            }
            (response, true)
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
    if let Ok(v) = request_id {
        AnswerHeaders::of(&mut response).push((REQUEST_ID, v));
    }
    response
}

/// The headers the gateway adds to each answer it makes (request id, overhead, provider,
/// upstream model, rate limits), kept in a list beside the answer's header map rather than
/// put in it: a map entry costs its name's hash (byte by byte, and these names are long), a
/// probe and a drop, ~300 instructions each, and an answer has about eight. Whatever serves the
/// answer writes them: the HTTP/1.1 loop after the map's own fields, hyper's connections by
/// [`AnswerHeaders::merge`] first. Their names are never in the map.
#[derive(Clone, Default)]
pub struct AnswerHeaders(pub Vec<(HeaderName, HeaderValue)>);

impl AnswerHeaders {
    /// The list of `response`, made on first use.
    pub fn of(response: &mut Response) -> &mut Vec<(HeaderName, HeaderValue)> {
        &mut response
            .extensions_mut()
            .get_or_insert_with(|| AnswerHeaders(Vec::with_capacity(ANSWER_HEADERS)))
            .0
    }

    /// Moves the list into the header map, for a writer that knows only the map.
    pub fn merge<B>(response: &mut axum::http::Response<B>) {
        if let Some(AnswerHeaders(list)) = response.extensions_mut().remove::<AnswerHeaders>() {
            let headers = response.headers_mut();
            headers.reserve(list.len());
            for (name, value) in list {
                headers.insert(name, value);
            }
        }
    }
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
    // Milliseconds with three decimals, from integer microseconds, digits written from the
    // right into a stack buffer (formatting machinery costs thousands of instructions).
    let micros = (overhead_ms.max(0.0) * 1000.0).round() as u64;
    let mut text = [0u8; 24];
    let mut at = text.len();
    let mut rest = micros;
    // Three decimals, the point, and at least one whole digit.
    while at > text.len() - 5 || rest > 0 {
        at -= 1;
        if at == text.len() - 4 {
            text[at] = b'.';
            continue;
        }
        text[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    if let Ok(v) = HeaderValue::from_bytes(&text[at..]) {
        AnswerHeaders::of(response).push((OVERHEAD_HEADER, v));
    }
}

/// A request the admin console sends on behalf of this consumer (its playground): it goes
/// through the whole pipeline — access, limits, guards, logging — as that consumer.
#[derive(Clone)]
pub struct ActAs(pub Arc<crate::snapshot::Consumer>);

enum Reply {
    Whole(Response),
    Streaming(Response),
}

fn with_headers(mut response: Response, headers: crate::policy::limits::LimitHeaders) -> Response {
    if !headers.is_empty() {
        AnswerHeaders::of(&mut response).extend(headers);
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
    let provider = || target.provider_name.to_string();
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
    if (header_bytes + uri_len(request.uri())) as u64 > limit {
        return Err(GatewayError::HeadersTooLarge { limit });
    }

    let path = request.uri().path().to_owned();
    let (route, endpoint) = snapshot
        .match_route(&path)
        .ok_or_else(|| GatewayError::NotFound(path.clone()))?;
    let route = route.clone();
    exchange.record.route = Some(route.name.clone());

    // The console's playground speaks as a consumer the admin chose (set in-process only,
    // after the admin signed in; no client can send an extension).
    let caller = match request.extensions().get::<ActAs>() {
        Some(act_as) => auth::Caller {
            consumer: act_as.0.clone(),
            end_user: None,
            key: None,
        },
        None => {
            let cert = request
                .extensions()
                .get::<Arc<auth::ClientCertificate>>()
                .map(|c| &**c);
            auth::authenticate(snapshot, request.headers(), cert).await?
        }
    };
    exchange.record.consumer = Some(caller.consumer.name.clone());
    exchange.record.custom_id = caller.consumer.custom_id.clone();
    exchange.record.key_id = caller.key.as_ref().map(|k| k.id.clone());
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
        ("/v1/chat/completions", &Method::POST) => {
            call.converse(Dialect::Chat, request, exchange).await
        }
        ("/v1/messages", &Method::POST) => {
            call.converse(Dialect::Messages, request, exchange).await
        }
        ("/v1/messages/count_tokens", &Method::POST) => call
            .count_input(Dialect::Messages, request, exchange)
            .await
            .map(Reply::Whole),
        ("/v1/responses", &Method::POST) => {
            call.converse(Dialect::Responses, request, exchange).await
        }
        ("/v1/responses/input_tokens", &Method::POST) => call
            .count_input(Dialect::Responses, request, exchange)
            .await
            .map(Reply::Whole),
        (e, m) if e.starts_with("/v1/responses/") && (m == Method::GET || m == Method::DELETE) => {
            call.stored_response(&e["/v1/responses/".len()..], m == Method::DELETE, exchange)
                .await
                .map(Reply::Whole)
        }
        ("/v1/embeddings", &Method::POST) => {
            call.embeddings(request, exchange).await.map(Reply::Whole)
        }
        ("/v1/models", &Method::GET) => Ok(Reply::Whole(
            call.list_models(anthropic_shape(request.headers()), exchange),
        )),
        (e, &Method::GET) if e.starts_with("/v1/models/") => call
            .retrieve_model(
                &e["/v1/models/".len()..],
                anthropic_shape(request.headers()),
                exchange,
            )
            .map(Reply::Whole),
        (
            "/v1/chat/completions"
            | "/v1/embeddings"
            | "/v1/messages"
            | "/v1/messages/count_tokens"
            | "/v1/responses"
            | "/v1/responses/input_tokens"
            | "/v1/models",
            _,
        ) => Err(GatewayError::MethodNotAllowed {
            method: method.to_string(),
            path,
        }),
        _ => Err(GatewayError::NotFound(path)),
    }
}

/// The length of `uri` as written (without formatting it): origin form, or absolute form.
fn uri_len(uri: &axum::http::Uri) -> usize {
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + "://".len());
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let path = uri.path_and_query().map_or(0, |p| p.as_str().len());
    scheme + authority + path
}

/// One authenticated request on one route.
struct Call<'a> {
    state: &'a Arc<AppState>,
    snapshot: &'a Arc<Snapshot>,
    route: &'a Arc<Route>,
    caller: &'a Caller,
}

impl Call<'_> {
    /// A chat-like request in any dialect, through the whole pipeline: read and decode the
    /// body, model access, guard, decorator, budget, failover over the model's targets (each
    /// gets the client's body where it speaks the dialect, else the canonical one), and the
    /// answer written back in the client's dialect, whole or streamed.
    async fn converse(
        &self,
        dialect: Dialect,
        request: Request,
        exchange: &mut Exchange,
    ) -> Result<Reply, GatewayError> {
        exchange.record.endpoint = Some(dialect.endpoint());
        let (parts, body) = request.into_parts();
        let body = self.read_json(&parts.headers, body, exchange).await?;
        let options = self.snapshot.dialects.clone();
        let betas = parts
            .headers
            .get(ANTHROPIC_BETA)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(512).collect::<String>());
        // Every dialect names the model at the top of its body.
        let model = self.model_for(&body, Purpose::Chat, exchange)?;
        let continued = match dialect {
            Dialect::Responses => {
                let previous = body
                    .get::<String>("previous_response_id")
                    .and_then(Result::ok);
                let has_native = model
                    .pool
                    .targets
                    .iter()
                    .any(|t| dialect.native_to(&t.provider));
                responses::continued(
                    previous.as_deref(),
                    self.snapshot.response_store.as_deref(),
                    &self.caller.acting().name,
                    has_native,
                )
                .await?
            }
            _ => responses::Continued::default(),
        };
        let Decoded {
            canonical: mut body,
            mut native,
            stream,
            client_wants_usage,
            dropped,
            mut turn,
            filter,
        } = cpu_bound(body.len(), move || {
            dialect.decode(body, &options, betas, continued)
        })
        .await??;
        exchange.record.stream = stream;
        if let Some(turn) = &mut turn {
            // The model as resolved (the route's default when the client named none).
            turn.shape.model = model.name.to_string();
        }

        self.log_payload(native.as_ref().unwrap_or(&body), exchange);
        // The client's words are checked; the operator's decorations are added after.
        if let Some(guard) = &self.route.guard {
            let (guard, checked) = (guard.clone(), body.clone());
            cpu_bound(body.len(), move || guard.check(&checked)).await??;
        }
        let (route_decorator, model_decorator) =
            (self.route.decorator.as_ref(), model.decorator.as_ref());
        decorator::decorate(&mut body, route_decorator, model_decorator);
        if let Some(native) = &mut native {
            dialect.decorate_native(native, route_decorator, model_decorator);
        }

        let facts = self.facts(&model);
        let completion = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|k| body.get::<u64>(k).and_then(Result::ok));
        let counted = body.clone();
        let mut budget = self
            .reserve(
                &facts,
                &model,
                Prompt {
                    at_most: (body.len() > INLINE_WORK_BYTES)
                        .then(|| tokens::chat_prompt_at_most(&body)),
                    completion,
                    count: async move {
                        let size = counted.len();
                        let prompt = cpu_bound(size, move || tokens::chat_prompt(&counted)).await;
                        // Should the estimate fail, a byte count never undercounts.
                        prompt.unwrap_or(size as u64)
                    },
                },
            )
            .await?;

        let headers = &parts.headers;
        let native = &native;
        let answered = self
            .attempt_targets(
                &model,
                self.plan(&model, headers, |target: &Target| match &filter {
                    TargetFilter::Any => true,
                    TargetFilter::NativeOnly => dialect.native_to(&target.provider),
                    TargetFilter::TranslatedOnly => !dialect.native_to(&target.provider),
                    TargetFilter::Provider(p) => *target.provider_name == **p,
                })?,
                &facts,
                &budget,
                exchange,
                |target, max_response| {
                    let body = body.clone();
                    async move {
                        let opts = target.call_options(max_response);
                        let (reply, is_native) = match native {
                            Some(native) if dialect.native_to(&target.provider) => (
                                dialect
                                    .call_native(
                                        &target.provider,
                                        native.clone(),
                                        stream,
                                        opts,
                                        headers,
                                    )
                                    .await?,
                                true,
                            ),
                            _ => (target.provider.chat(body, stream, opts).await?, false),
                        };
                        match reply {
                            ChatReply::Complete(complete) => {
                                Ok((Answer::Whole(complete), is_native))
                            }
                            ChatReply::Stream(frames) => {
                                Ok((first_frame(frames, &target).await?, is_native))
                            }
                        }
                    }
                },
            )
            .await?;
        let failover::Answered {
            value: ((answer, is_native), held),
            target,
            in_flight,
        } = answered;
        budget.absorb(held);
        budget.refine().await;
        if !is_native {
            // What the translation left out, for the target that did not get the client's body.
            exchange.record.dropped = dropped;
        }
        let limit_headers = budget.headers();
        // Only a translated Messages answer reports input tokens before the upstream's count
        // arrives; the estimate is the budget's when a limit made one, else counted now (off
        // the async workers for large bodies, like every other pass over the prompt).
        let prompt_estimate = match (budget.prompt_estimate(), dialect, is_native) {
            (Some(estimate), _, _) => estimate,
            (None, Dialect::Messages, false) => {
                let counted = body.clone();
                cpu_bound(counted.len(), move || tokens::chat_prompt(&counted)).await?
            }
            _ => 0,
        };
        let context = AnswerContext {
            model: model.name.to_string(),
            prompt_estimate,
            client_wants_usage,
            provider: target.provider_name.to_string(),
            turn,
            keeper: (dialect == Dialect::Responses).then(|| responses::Keeper {
                store: self.snapshot.response_store.clone(),
                consumer: self.caller.acting().name.to_string(),
            }),
        };
        match answer {
            Answer::Whole(complete) => {
                exchange.record.cost_usd =
                    budget.settle_whole(complete.usage.as_ref(), target.price);
                let complete = dialect
                    .encode_whole(complete, is_native, &context)
                    .await
                    .map_err(|detail| GatewayError::UpstreamProtocol {
                        provider: target.provider_name.to_string(),
                        detail,
                    })?;
                let response = whole_json(complete, &target, exchange);
                Ok(Reply::Whole(with_headers(response, limit_headers)))
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
                let response = stream::sse_response(
                    upstream,
                    budget,
                    dialect.stream_encoder(is_native, &context),
                    owned,
                    self.state.clone(),
                    self.snapshot.clone(),
                );
                let mut response =
                    with_headers(with_target_headers(response, &target), limit_headers);
                set_overhead_header(&mut response, overhead);
                Ok(Reply::Streaming(response))
            }
        }
    }

    /// `POST /v1/messages/count_tokens` and `POST /v1/responses/input_tokens`: passed through
    /// when the model's first target speaks the dialect; else the gateway's estimate over
    /// every block and item (system, text, tool definitions, tool calls, tool results), marked
    /// as such in a header. No limit is charged: nothing is generated.
    async fn count_input(
        &self,
        dialect: Dialect,
        request: Request,
        exchange: &mut Exchange,
    ) -> Result<Response, GatewayError> {
        exchange.record.endpoint = Some(match dialect {
            Dialect::Responses => "input_tokens",
            _ => "count_tokens",
        });
        let (parts, body) = request.into_parts();
        let body = self.read_json(&parts.headers, body, exchange).await?;
        let model = self.model_for(&body, Purpose::Chat, exchange)?;
        let plan = model.pool.plan(&self.caller.acting().name, &parts.headers);
        if let Some(target) = plan.first().filter(|t| dialect.native_to(&t.provider)) {
            exchange.record.provider = Some(target.provider_name.clone());
            let opts = target.call_options(self.snapshot.limits.max_response.as_u64());
            let complete = match target.provider.as_ref() {
                crate::providers::Provider::Anthropic(p) => {
                    p.count_tokens(body, opts, &parts.headers).await?
                }
                crate::providers::Provider::OpenAi(p) => {
                    p.responses_input_tokens(body, opts).await?
                }
                _ => return Err(GatewayError::Internal("no native count".into())),
            };
            return Ok(whole_json(complete, target, exchange));
        }
        let strip_attribution = self.snapshot.dialects.messages.strip_attribution;
        let raw = body.to_bytes();
        let count = cpu_bound(raw.len(), move || {
            let canonical = match dialect {
                Dialect::Responses => {
                    crate::dialect::responses::request::to_canonical(&raw, &[])?.body
                }
                _ => {
                    let options = crate::dialect::messages::request::DecodeOptions {
                        strip_attribution,
                        max_tokens_optional: true,
                    };
                    crate::dialect::messages::request::to_canonical(&raw, options)?.body
                }
            };
            Ok::<_, GatewayError>(tokens::chat_prompt(&JsonBody::from_value(&canonical)?))
        })
        .await??;
        let answer = match dialect {
            Dialect::Responses => json!({"object": "response.input_tokens", "input_tokens": count}),
            _ => json!({ "input_tokens": count }),
        };
        let mut response = axum::Json(answer).into_response();
        response
            .headers_mut()
            .insert(TOKEN_COUNT_HEADER, HeaderValue::from_static("estimate"));
        Ok(response)
    }

    /// `GET` and `DELETE /v1/responses/{id}`: responses the gateway kept (translated paths),
    /// for the consumer that made them.
    async fn stored_response(
        &self,
        id: &str,
        delete: bool,
        exchange: &mut Exchange,
    ) -> Result<Response, GatewayError> {
        exchange.record.endpoint = Some("responses");
        let not_found = || {
            GatewayError::NotFound(format!(
                "response {id:?} (not kept by this gateway, or expired)"
            ))
        };
        let store = self
            .snapshot
            .response_store
            .as_ref()
            .ok_or_else(not_found)?;
        let consumer = &self.caller.acting().name;
        let unavailable = |e: crate::dialect::responses::store::StoreError| {
            GatewayError::ProviderUnavailable(e.to_string())
        };
        if delete {
            return match store.delete(id, consumer).await.map_err(unavailable)? {
                true => Ok(
                    axum::Json(json!({"id": id, "object": "response", "deleted": true}))
                        .into_response(),
                ),
                false => Err(not_found()),
            };
        }
        match store.get(id, consumer).await.map_err(unavailable)? {
            Some(entry) if entry.response.is_some() => {
                Ok(axum::Json(entry.response).into_response())
            }
            _ => Err(not_found()),
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
        let counted = body.clone();
        let mut budget = self
            .reserve(
                &facts,
                &model,
                Prompt {
                    // No text counts for more tokens than its bytes, no token id or number for
                    // more than one.
                    at_most: (body.len() > INLINE_WORK_BYTES)
                        .then(|| body.raw("input").map_or(0, |input| input.len() as u64)),
                    completion: Some(0),
                    count: async move {
                        let size = counted.len();
                        let input =
                            cpu_bound(size, move || tokens::embedding_input(&counted)).await;
                        input.unwrap_or(size as u64)
                    },
                },
            )
            .await?;
        let answered = self
            .attempt_targets(
                &model,
                self.plan(&model, &parts.headers, |_| true)?,
                &facts,
                &budget,
                exchange,
                |target, max_response| {
                    let body = body.clone();
                    async move {
                        let opts = target.call_options(max_response);
                        target.provider.embeddings(body, opts).await
                    }
                },
            )
            .await?;
        let (complete, held) = answered.value;
        budget.absorb(held);
        budget.refine().await;
        let limit_headers = budget.headers();
        exchange.record.cost_usd =
            budget.settle_whole(complete.usage.as_ref(), answered.target.price);
        Ok(with_headers(
            whole_json(complete, &answered.target, exchange),
            limit_headers,
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

    /// The targets to try, in the order the model's strategy gives, of those `eligible`.
    fn plan(
        &self,
        model: &Model,
        headers: &HeaderMap,
        eligible: impl Fn(&Target) -> bool,
    ) -> Result<Vec<Arc<Target>>, GatewayError> {
        let mut plan = model.pool.plan(&self.caller.acting().name, headers);
        plan.retain(|t| eligible(t));
        if plan.is_empty() {
            return Err(GatewayError::InvalidRequest(format!(
                "no target of model {:?} can continue this conversation (previous_response_id)",
                model.name
            )));
        }
        Ok(plan)
    }

    /// Tries `plan`'s targets in order, reserving provider-scoped limits per attempt; `call`
    /// makes one attempt (the target, and the largest answer to read).
    async fn attempt_targets<T, F, Fut>(
        &self,
        model: &Model,
        plan: Vec<Arc<Target>>,
        facts: &RequestFacts<'_>,
        budget: &Budget,
        exchange: &mut Exchange,
        call: F,
    ) -> Result<failover::Answered<(T, Reservation)>, GatewayError>
    where
        F: Fn(Arc<Target>, u64) -> Fut,
        Fut: std::future::Future<Output = Result<T, GatewayError>>,
    {
        let max_response = self.snapshot.limits.max_response.as_u64();
        let limits = &self.snapshot.rate_limits;
        let call = &call;
        failover::run(model, plan, &mut exchange.record, |target| async move {
            let held = budget
                .for_provider(limits, facts, &target.provider_name)
                .await?;
            Ok((call(target, max_response).await?, held))
        })
        .await
    }

    fn facts<'m>(&'m self, model: &'m Model) -> RequestFacts<'m> {
        RequestFacts {
            consumer: self.caller.acting(),
            route: &self.route.name,
            model: &model.name,
            key_budgets: self.caller.key.as_ref().and_then(|k| k.budgets.as_deref()),
        }
    }

    /// Reserves the request's estimate against every limit that applies before routing. The
    /// prompt is only counted when some limit applies.
    async fn reserve<F>(
        &self,
        facts: &RequestFacts<'_>,
        model: &Model,
        prompt: Prompt<F>,
    ) -> Result<Budget, GatewayError>
    where
        F: std::future::Future<Output = u64> + Send + 'static,
    {
        let prices = model.pool.targets.iter().filter_map(|t| t.price);
        Budget::reserve(&self.snapshot.rate_limits, facts, prices, prompt).await
    }

    fn list_models(&self, anthropic: bool, exchange: &mut Exchange) -> Response {
        exchange.record.endpoint = Some("models");
        let models = access::visible_models(self.snapshot, self.route, self.caller);
        if anthropic {
            let names: Vec<&str> = models.map(|m| &*m.name).collect();
            let list = crate::dialect::messages::model_list(&names, self.snapshot.created);
            return axum::Json(list).into_response();
        }
        let data: Vec<Value> = models.map(|m| self.model_object(m)).collect();
        axum::Json(json!({ "object": "list", "data": data })).into_response()
    }

    fn retrieve_model(
        &self,
        name: &str,
        anthropic: bool,
        exchange: &mut Exchange,
    ) -> Result<Response, GatewayError> {
        exchange.record.endpoint = Some("models");
        let model = access::visible_models(self.snapshot, self.route, self.caller)
            .find(|m| *m.name == *name)
            .ok_or_else(|| GatewayError::ModelNotFound(name.to_owned()))?;
        Ok(if anthropic {
            axum::Json(crate::dialect::messages::model_object(
                &model.name,
                self.snapshot.created,
            ))
            .into_response()
        } else {
            axum::Json(self.model_object(model)).into_response()
        })
    }

    fn model_object(&self, model: &Model) -> Value {
        let owner = model
            .pool
            .targets
            .first()
            .map_or("tollgate", |t| &*t.provider_name);
        json!({ "id": model.name, "object": "model", "created": self.snapshot.created, "owned_by": owner })
    }

    /// Resolves the requested model and records it.
    fn model_for(
        &self,
        body: &JsonBody,
        purpose: Purpose,
        exchange: &mut Exchange,
    ) -> Result<Arc<Model>, GatewayError> {
        let requested = match body.get_str("model") {
            None => None,
            Some(Ok(s)) if !s.is_empty() => Some(s),
            Some(_) => {
                return Err(GatewayError::InvalidRequest(
                    "`model` must be a non-empty string".into(),
                ));
            }
        };
        let requested = requested.as_deref();
        let resolved =
            access::resolve_model(self.snapshot, self.route, self.caller, requested, purpose);
        // The log names the model as resolved, or as asked for when it could not be.
        exchange.record.model = match &resolved {
            Ok(model) => Some(model.name.clone()),
            Err(_) => requested.map(Arc::from),
        };
        resolved
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

/// The whole request body, at most `limit` bytes. A body that arrives in one piece (most do)
/// is that piece, not copied; one in several is gathered into one buffer sized by its
/// declared length.
async fn read_body(headers: &HeaderMap, mut body: Body, limit: u64) -> Result<Bytes, GatewayError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let (mut first, mut gathered): (Option<Bytes>, Option<bytes::BytesMut>) = (None, None);
    let mut read = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| {
            GatewayError::InvalidRequest("the request body could not be read".into())
        })?;
        // Trailers carry nothing the gateway reads.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        read += data.len() as u64;
        if read > limit {
            return Err(GatewayError::BodyTooLarge { limit });
        }
        match (&first, &mut gathered) {
            (None, _) => first = Some(data),
            (Some(piece), None) => {
                let size = declared.unwrap_or(read).max(read) as usize;
                let mut buffer = bytes::BytesMut::with_capacity(size);
                buffer.extend_from_slice(piece);
                buffer.extend_from_slice(&data);
                gathered = Some(buffer);
            }
            (Some(_), Some(buffer)) => buffer.extend_from_slice(&data),
        }
    }
    Ok(match (gathered, first) {
        (Some(buffer), _) => buffer.freeze(),
        (None, Some(piece)) => piece,
        (None, None) => Bytes::new(),
    })
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
    let mut response = Response::new(Body::from(complete.body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    with_target_headers(response, target)
}

/// Room for the headers the gateway adds to an answer (provider, upstream model, request id,
/// overhead, three per limit window): one allocation.
pub const ANSWER_HEADERS: usize = 16;

/// Tells the client which provider and upstream model answered.
fn with_target_headers(mut response: Response, target: &Target) -> Response {
    let list = AnswerHeaders::of(&mut response);
    if let Some(v) = &target.answer_headers.provider {
        list.push((PROVIDER_HEADER, v.clone()));
    }
    if let Some(v) = &target.answer_headers.upstream_model {
        list.push((UPSTREAM_MODEL_HEADER, v.clone()));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uri_is_measured_as_it_is_written() {
        for text in [
            "/",
            "/ai/v1/chat/completions",
            "/ai/v1/models?limit=5&after=x",
            "http://gateway.example:8080/ai/v1/models?x=1",
            "https://gateway.example/",
            "*",
        ] {
            let uri: axum::http::Uri = text.parse().unwrap();
            assert_eq!(uri_len(&uri), uri.to_string().len(), "{text}");
        }
    }

    #[test]
    fn overhead_is_written_in_milliseconds_with_three_decimals() {
        for (ms, text) in [
            (0.0, "0.000"),
            (0.005, "0.005"),
            (0.25, "0.250"),
            (1.0, "1.000"),
            (12.3456, "12.346"),
            (-3.0, "0.000"),
            (98_765.432_1, "98765.432"),
        ] {
            let mut response = Response::new(Body::empty());
            set_overhead_header(&mut response, ms);
            AnswerHeaders::merge(&mut response);
            assert_eq!(response.headers()[OVERHEAD_HEADER], text, "{ms}");
        }
    }
}
