//! Mock LLM upstreams for tests and benchmarks: OpenAI-compatible (this file), Anthropic
//! Messages (`anthropic.rs`) and Gemini (`gemini.rs`), all served on one port.
//!
//! The OpenAI mock It speaks OpenAI's documented
//! wire format (chat.completion, chat.completion.chunk SSE with `data:` lines and `[DONE]`,
//! the usage chunk only when `stream_options.include_usage` is set, embeddings lists, error
//! bodies), and splits its SSE output at awkward byte boundaries, mid-event and mid-UTF-8, as
//! real networks do.
//!
//! Behaviour is chosen by the model name it is asked for:
//! - anything else: echo the last user message (`usage` counts words);
//! - `fail-500`, `fail-401` (message quotes the key it got), `fail-429` (`Retry-After: 7`),
//!   `fail-404` (Ollama's `{"error": "..."}` shape): error statuses;
//! - `hang`: never answers; `slow`: answers after 300 ms;
//! - `slow-stream`: one chunk every 100 ms for ~3 s, counting streams cut by the client;
//! - `paced-stream`: the echo streamed one word every 1 ms (the benchmark's paced stream);
//! - `die-mid-stream`: two chunks, then the connection breaks;
//! - `stall-mid-stream`: two chunks, then silence;
//! - `leak-key-mid-stream`: two chunks, then an in-stream error quoting the key it got
//!   (all three mocks have it: what a careless upstream does).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

pub mod anthropic;
pub mod gemini;
pub mod responses;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

#[derive(Default)]
pub struct MockState {
    pub requests: Mutex<Vec<Recorded>>,
    /// Streams the client (the gateway) hung up on before the end.
    pub cancelled_streams: AtomicUsize,
    pub completed_streams: AtomicUsize,
    pub started_streams: AtomicUsize,
    /// When set, every request behaves as if it asked for this model (`fail-500`, `hang`, ...):
    /// a target can be broken and healed while a test runs.
    pub forced_model: Mutex<Option<String>>,
    /// The Responses mock's stored conversations, by response id.
    pub responses: Mutex<std::collections::HashMap<String, Vec<(String, String)>>>,
}

impl MockState {
    pub fn force(&self, model: Option<&str>) {
        if let Ok(mut m) = self.forced_model.lock() {
            *m = model.map(str::to_owned);
        }
    }
    pub(crate) fn forced(&self) -> Option<String> {
        self.forced_model.lock().ok().and_then(|m| m.clone())
    }
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
    pub fn last(&self) -> Recorded {
        self.requests().pop().expect("the mock received no request")
    }
}

pub struct MockUpstream {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
}

impl MockUpstream {
    /// `http://addr/v1`, what a provider's `base_url` points at.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

pub async fn start() -> MockUpstream {
    start_on("127.0.0.1:0".parse().unwrap()).await
}

/// A mock on a runtime (and thread) of its own: for tests that time the gateway while the
/// mock does heavy work (parsing and echoing a 15 MB prompt), which on the test's runtime
/// would delay the test's own probes and be mistaken for a gateway stall.
pub async fn start_on_own_runtime() -> MockUpstream {
    let (ready, started) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("mock runtime");
        runtime.block_on(async {
            let mock = start().await;
            let _ = ready.send(mock);
            std::future::pending::<()>().await
        });
    });
    started.await.expect("mock upstream thread started")
}

pub async fn start_on(addr: SocketAddr) -> MockUpstream {
    start_on_with_delay(addr, Duration::ZERO).await
}

/// A mock that waits `delay` before answering each request (an upstream's latency, for the
/// benchmark).
pub async fn start_on_with_delay(addr: SocketAddr, delay: Duration) -> MockUpstream {
    let state = Arc::new(MockState::default());
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(chat),
        )
        .merge(anthropic::routes())
        .merge(gemini::routes())
        .merge(responses::routes())
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                next.run(request).await
            },
        ))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind mock upstream");
    let addr = listener.local_addr().unwrap();
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    MockUpstream { addr, state }
}

fn record(state: &MockState, path: &str, headers: &HeaderMap, body: &Value) {
    if let Ok(mut r) = state.requests.lock() {
        // Keep memory flat under benchmark load.
        if r.len() >= 1000 {
            r.clear();
        }
        r.push(Recorded {
            path: path.into(),
            headers: headers.clone(),
            body: body.clone(),
        });
    }
}

fn error(status: StatusCode, message: &str, kind: &str, code: &str) -> Response {
    (
        status,
        axum::Json(
            json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
        ),
    )
        .into_response()
}

/// The fault modes shared by both endpoints, or `None` for a normal answer.
async fn fault(model: &str, headers: &HeaderMap) -> Option<Response> {
    match model {
        "fail-500" => Some(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The server had an error while processing your request.",
            "server_error",
            "internal_error",
        )),
        "fail-401" => {
            let key = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .trim_start_matches("Bearer ");
            Some(error(
                StatusCode::UNAUTHORIZED,
                &format!(
                    "Incorrect API key provided: {key}. You can find your API key at https://platform.openai.com/account/api-keys."
                ),
                "invalid_request_error",
                "invalid_api_key",
            ))
        }
        "fail-429" => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit reached for requests",
                "requests",
                "rate_limit_exceeded",
            );
            r.headers_mut().insert("retry-after", "7".parse().unwrap());
            Some(r)
        }
        "fail-404" => Some(
            (
                StatusCode::NOT_FOUND,
                axum::Json(json!({"error": format!("model '{model}' not found")})),
            )
                .into_response(),
        ),
        "hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            None
        }
        "slow" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            None
        }
        _ => None,
    }
}

fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        })
        .unwrap_or_default()
}

/// The arguments every mock gives a call of `tool`: a shell tool (Claude Code's `Bash`,
/// Codex's `exec_command`)
/// runs the command the user wrote after "Please run: " (for the agent CLIs' tests); any other tool
/// is asked about Paris.
pub fn tool_arguments(tool: &str, user_text: &str) -> Value {
    match (tool, user_text.rsplit_once("Please run: ")) {
        ("Bash", Some((_, rest))) => {
            let command = rest.lines().next().unwrap_or_default().trim();
            json!({"command": command, "description": "Run the requested command"})
        }
        ("exec_command" | "shell", Some((_, rest))) => {
            json!({"cmd": rest.lines().next().unwrap_or_default().trim()})
        }
        _ => json!({"city": "Paris"}),
    }
}

/// The tool an agent's request offers that the mocks call: its shell tool if offered, else
/// the first.
pub fn tool_to_call<'a>(names: impl Iterator<Item = &'a str>) -> Option<String> {
    let names: Vec<&str> = names.collect();
    names
        .iter()
        .find(|n| matches!(**n, "Bash" | "exec_command" | "shell"))
        .or(names.first())
        .map(|n| (*n).to_owned())
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// Parses and records a request, and answers it at once if its model is a fault mode.
/// Returns the body and the model name.
async fn intake(
    state: &MockState,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Value, String), Response> {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request.",
            "invalid_request_error",
            "invalid_json",
        ));
    };
    record(state, path, headers, &body);
    let model = state
        .forced()
        .unwrap_or_else(|| body["model"].as_str().unwrap_or("").to_owned());
    match fault(&model, headers).await {
        Some(response) => Err(response),
        None => Ok((body, model)),
    }
}

async fn chat(
    State(state): State<Arc<MockState>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (body, model) = match intake(&state, &uri.to_string(), &headers, &body).await {
        Ok(accepted) => accepted,
        Err(response) => return response,
    };
    // With tools and a user turn last: a tool call; after tool results: "Result: ...".
    // Agents (Claude Code) put system turns among the others: the last non-system one counts.
    let last_role = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] != "system"))
        .map(|m| m["role"].as_str().unwrap_or("").to_owned())
        .unwrap_or_default();
    let tool = tool_to_call(
        body["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["function"]["name"].as_str()),
    );
    let results: Vec<String> = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .skip_while(|m| m["role"] == "system")
        .take_while(|m| m["role"] == "tool")
        .map(|m| {
            m["content"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| m["content"].to_string())
        })
        .collect();
    let call = match (&tool, last_role.as_str()) {
        (Some(name), "user") => Some((
            name.clone(),
            tool_arguments(name, &last_user_text(&body).replace(" <", "\n<")).to_string(),
        )),
        _ => None,
    };
    let reply = if !results.is_empty() {
        let mut results = results;
        results.reverse();
        format!("Result: {}", results.join(", "))
    } else if call.is_some() {
        "Let me check.".to_owned()
    } else {
        last_user_text(&body)
    };
    let prompt_tokens: u64 = body["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| words(m["content"].as_str().unwrap_or("")))
                .sum()
        })
        .unwrap_or(0);
    let usage = json!({
        "prompt_tokens": prompt_tokens, "completion_tokens": words(&reply), "total_tokens": prompt_tokens + words(&reply),
        "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}
    });
    if let Some((name, arguments)) = call {
        return tool_call_reply(state, &body, model, &reply, &name, &arguments, usage);
    }
    if body["stream"] != true {
        return axum::Json(json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply, "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
            "usage": usage,
        }))
        .into_response();
    }
    let include_usage = body["stream_options"]["include_usage"] == true;
    if model == "leak-key-mid-stream" {
        let key = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let chunk = |text: &str| {
            format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                       "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
            )
        };
        let error = json!({"error": {"message": format!("Incorrect API key provided: {key}"), "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}});
        let events = vec![
            chunk("partial "),
            chunk("answer "),
            format!("data: {error}\n\n"),
        ];
        return sse_response(state, events, Duration::ZERO, Ending::Normal);
    }
    stream_reply(state, model, reply, include_usage.then_some(usage))
}

/// A text and one tool call, whole or streamed as OpenAI does (the call's id and name first,
/// then its arguments in pieces), finishing with `tool_calls`.
fn tool_call_reply(
    state: Arc<MockState>,
    body: &Value,
    model: String,
    text: &str,
    name: &str,
    arguments: &str,
    usage: Value,
) -> Response {
    let id = "call_mock_1";
    if body["stream"] != true {
        return axum::Json(json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "tool_calls": [
                {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}
            ]}, "logprobs": null, "finish_reason": "tool_calls"}],
            "usage": usage,
        }))
        .into_response();
    }
    let chunk = |delta: Value, finish: Value| {
        let c = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                       "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        format!("data: {c}\n\n")
    };
    let (a, b) = arguments.split_at(arguments.len() / 2);
    let mut events = vec![
        chunk(json!({"role": "assistant", "content": text}), Value::Null),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": b}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
    ];
    if body["stream_options"]["include_usage"] == true {
        let c = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model, "choices": [], "usage": usage});
        events.push(format!("data: {c}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_owned());
    sse_response(state, events, Duration::ZERO, Ending::Normal)
}

fn stream_reply(
    state: Arc<MockState>,
    model: String,
    reply: String,
    usage: Option<Value>,
) -> Response {
    let with_usage = usage.is_some();
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                           "system_fingerprint": "fp_mock", "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if with_usage {
            c["usage"] = Value::Null;
        }
        format!("data: {c}\n\n")
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    let (pieces, delay, ending) = match model.as_str() {
        "slow-stream" => (
            (0..30).map(|i| format!("tick{i} ")).collect::<Vec<_>>(),
            Duration::from_millis(100),
            Ending::Normal,
        ),
        "die-mid-stream" => (
            vec!["partial ".into(), "answer ".into()],
            Duration::ZERO,
            Ending::Break,
        ),
        "stall-mid-stream" => (
            vec!["partial ".into(), "answer ".into()],
            Duration::ZERO,
            Ending::Stall,
        ),
        // Tokens as a model writes them, 1 ms apart (the benchmark's paced stream).
        "paced-stream" => (
            reply.split_inclusive(' ').map(str::to_owned).collect(),
            Duration::from_millis(1),
            Ending::Normal,
        ),
        _ => (
            reply.split_inclusive(' ').map(str::to_owned).collect(),
            Duration::ZERO,
            Ending::Normal,
        ),
    };
    events.extend(
        pieces
            .iter()
            .map(|p| chunk(json!({"content": p}), Value::Null)),
    );
    if ending == Ending::Normal {
        events.push(chunk(json!({}), json!("stop")));
        if let Some(u) = usage {
            let c = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                           "system_fingerprint": "fp_mock", "choices": [], "usage": u});
            events.push(format!("data: {c}\n\n"));
        }
        events.push("data: [DONE]\n\n".to_owned());
    }

    sse_response(state, events, delay, ending)
}

/// An SSE response that sends `events` (whole SSE events with their blank lines), each split
/// in two at an awkward byte (possibly inside a UTF-8 character), as real networks do.
pub fn sse_response(
    state: Arc<MockState>,
    events: Vec<String>,
    delay: Duration,
    ending: Ending,
) -> Response {
    state.started_streams.fetch_add(1, Ordering::SeqCst);
    let guard = StreamGuard {
        state: state.clone(),
        done: false,
    };
    let body = async_stream::stream! {
        let mut guard = guard;
        for event in events {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            // Split every event in two at an awkward byte (possibly inside a UTF-8 character).
            let bytes = event.into_bytes();
            let cut = (bytes.len() / 2).max(1);
            yield Ok::<Bytes, std::io::Error>(Bytes::copy_from_slice(&bytes[..cut]));
            yield Ok(Bytes::copy_from_slice(&bytes[cut..]));
        }
        match ending {
            Ending::Normal => guard.done = true,
            Ending::Break => {
                guard.done = true;
                // Let the chunks reach the client before the connection breaks.
                tokio::time::sleep(Duration::from_millis(100)).await;
                yield Err(std::io::Error::other("connection reset"));
            }
            Ending::Stall => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
        }
    };
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(body))
        .unwrap()
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Normal,
    /// The connection breaks after a few chunks.
    Break,
    /// The upstream goes silent after a few chunks.
    Stall,
}

struct StreamGuard {
    state: Arc<MockState>,
    done: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let counter = if self.done {
            &self.state.completed_streams
        } else {
            &self.state.cancelled_streams
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

async fn embeddings(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (body, model) = match intake(&state, "/v1/embeddings", &headers, &body).await {
        Ok(accepted) => accepted,
        Err(response) => return response,
    };
    let inputs: Vec<String> = match &body["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "'input' is a required property",
                "invalid_request_error",
                "invalid_input",
            );
        }
    };
    let tokens: u64 = inputs.iter().map(|s| words(s)).sum();
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"object": "embedding", "index": i, "embedding": [s.len() as f64 / 100.0, 0.5, -0.25]}))
        .collect();
    axum::Json(json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
        .into_response()
}
