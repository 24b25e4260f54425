//! The request pipeline: route → authenticate → route ACL → endpoint → model access →
//! provider → response (whole or streamed), with one request-log record per request.

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
use serde_json::{Map, Value, json};

use crate::auth::{self, Caller};
use crate::error::GatewayError;
use crate::policy::access::{self, Purpose};
use crate::providers::{CallOptions, ChatReply, Complete};
use crate::server::AppState;
use crate::snapshot::{Model, Route, Snapshot};
use crate::telemetry::request_log::RequestRecord;

pub const REQUEST_ID: &str = "x-request-id";
pub const PROVIDER_HEADER: &str = "x-tollgate-provider";
pub const UPSTREAM_MODEL_HEADER: &str = "x-tollgate-upstream-model";

/// A request in progress and its log record.
pub struct Exchange {
    pub record: RequestRecord,
    pub started: Instant,
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
            ..RequestRecord::default()
        };
        Self {
            record,
            started: Instant::now(),
        }
    }

    fn fail(&mut self, error: &GatewayError) {
        self.record.error = Some(error.code());
        self.record.error_message = Some(error.to_string());
    }

    fn elapsed_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }
}

/// The fallback handler of the proxy listener: every path goes through here.
pub async fn handle(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let snapshot = state.snapshot();
    let mut exchange = Exchange::begin(&request);
    let request_id = exchange.record.request_id.clone();
    let (mut response, exchange) = match dispatch(&state, &snapshot, request, &mut exchange).await {
        Ok(Reply::Whole(response)) => (response, Some(exchange)),
        // The stream owns the log record now and writes it when it ends.
        Ok(Reply::Streaming(response)) => (response, None),
        Err(error) => {
            exchange.fail(&error);
            (error.into_response(), Some(exchange))
        }
    };
    if let Some(mut exchange) = exchange {
        exchange.record.status = response.status().as_u16();
        exchange.record.latency_ms = exchange.elapsed_ms();
        state.log(&snapshot, exchange.record);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

enum Reply {
    Whole(Response),
    Streaming(Response),
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

    let caller = auth::authenticate(snapshot, request.headers())?;
    exchange.record.consumer = Some(caller.consumer.name.clone());
    exchange.record.custom_id = caller.consumer.custom_id.clone();
    exchange.record.end_user = caller.end_user.as_ref().map(|u| u.email.clone());
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
        let body = self.read_json(request).await?;
        let has_messages = body
            .get("messages")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        if !has_messages {
            return Err(GatewayError::InvalidRequest(
                "`messages` must be a non-empty array".into(),
            ));
        }
        let stream = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(GatewayError::InvalidRequest(
                    "`stream` must be a boolean".into(),
                ));
            }
        };
        let client_wants_usage = body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true);
        exchange.record.stream = stream;
        let model = self.model_for(&body, Purpose::Chat, exchange)?;

        let upstream_started = Instant::now();
        let reply = model
            .provider
            .chat(body, stream, self.call_options(&model))
            .await?;
        exchange.record.upstream_latency_ms =
            Some(upstream_started.elapsed().as_secs_f64() * 1000.0);
        match reply {
            ChatReply::Complete(complete) => {
                Ok(Reply::Whole(whole_json(complete, &model, exchange)))
            }
            ChatReply::Stream(frames) => {
                // Move the record into the stream; a placeholder stays behind.
                let owned = Exchange {
                    record: std::mem::take(&mut exchange.record),
                    started: exchange.started,
                };
                let response = stream::sse_response(
                    frames,
                    client_wants_usage,
                    &model,
                    owned,
                    self.state.clone(),
                    self.snapshot.clone(),
                );
                Ok(Reply::Streaming(with_target_headers(response, &model)))
            }
        }
    }

    async fn embeddings(
        &self,
        request: Request,
        exchange: &mut Exchange,
    ) -> Result<Response, GatewayError> {
        exchange.record.endpoint = Some("embeddings");
        let body = self.read_json(request).await?;
        if body.get("input").is_none_or(Value::is_null) {
            return Err(GatewayError::InvalidRequest("`input` is required".into()));
        }
        let model = self.model_for(&body, Purpose::Embeddings, exchange)?;
        let upstream_started = Instant::now();
        let complete = model
            .provider
            .embeddings(body, self.call_options(&model))
            .await?;
        exchange.record.upstream_latency_ms =
            Some(upstream_started.elapsed().as_secs_f64() * 1000.0);
        Ok(whole_json(complete, &model, exchange))
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
        json!({ "id": model.name, "object": "model", "created": self.snapshot.created, "owned_by": model.provider_name })
    }

    /// Resolves the requested model and records it.
    fn model_for(
        &self,
        body: &Map<String, Value>,
        purpose: Purpose,
        exchange: &mut Exchange,
    ) -> Result<Arc<Model>, GatewayError> {
        let requested = match body.get("model") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.as_str()),
            Some(_) => {
                return Err(GatewayError::InvalidRequest(
                    "`model` must be a non-empty string".into(),
                ));
            }
        };
        exchange.record.model = requested.map(str::to_owned);
        let model =
            access::resolve_model(self.snapshot, self.route, self.caller, requested, purpose)?;
        exchange.record.model = Some(model.name.clone());
        exchange.record.provider = Some(model.provider_name.clone());
        exchange.record.upstream_model = Some(model.upstream_model.clone());
        Ok(model)
    }

    fn call_options<'m>(&self, model: &'m Model) -> CallOptions<'m> {
        CallOptions {
            upstream_model: &model.upstream_model,
            max_response: self.snapshot.limits.max_response.as_u64(),
        }
    }

    /// Reads the body (refusing more than the configured limit) as a JSON object.
    async fn read_json(&self, request: Request) -> Result<Map<String, Value>, GatewayError> {
        let (parts, body) = request.into_parts();
        let bytes = read_body(&parts.headers, body, self.snapshot.limits.max_body.as_u64()).await?;
        serde_json::from_slice::<Map<String, Value>>(&bytes).map_err(|e| {
            GatewayError::InvalidRequest(format!(
                "the request body is not a valid JSON object: {e}"
            ))
        })
    }
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

fn whole_json(complete: Complete, model: &Model, exchange: &mut Exchange) -> Response {
    if let Some(usage) = &complete.usage {
        exchange.record.set_usage(usage);
    }
    let response = (
        StatusCode::OK,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        complete.body,
    )
        .into_response();
    with_target_headers(response, model)
}

/// Tells the client which provider and upstream model answered.
fn with_target_headers(mut response: Response, model: &Model) -> Response {
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&model.provider_name) {
        headers.insert(PROVIDER_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&model.upstream_model) {
        headers.insert(UPSTREAM_MODEL_HEADER, v);
    }
    response
}
