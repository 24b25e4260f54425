//! The gateway end to end: real config file, real listeners, mock OpenAI-compatible upstream.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{TestGateway, client, mock_upstream, standard_config};

async fn setup() -> (TestGateway, mock_upstream::MockUpstream) {
    let upstream = mock_upstream::start().await;
    let gw = TestGateway::start(&standard_config(&upstream.base_url())).await;
    (gw, upstream)
}

fn chat_body(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]})
}

async fn post(gw: &TestGateway, path: &str, key: &str, body: &Value) -> reqwest::Response {
    client()
        .post(gw.url(path))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"].is_string() && body["error"]["type"].is_string(),
        "not an OpenAI error: {body}"
    );
    (status, body["error"].clone())
}

/// Reads an SSE body into its `data:` payloads.
async fn sse_events(resp: reqwest::Response) -> Vec<String> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn chat_is_proxied_with_the_gateways_key_and_the_upstream_model_name() {
    let (mut gw, upstream) = setup().await;
    let resp = client()
        .post(gw.url("/ollama/v1/chat/completions"))
        .header("apikey", "admin-key-12345")
        .json(&json!({"model": "gemma3:1b", "messages": [{"role": "user", "content": "héllo wörld"}], "temperature": 0.2, "x_custom": {"kept": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-tollgate-provider"], "up");
    assert_eq!(
        resp.headers()["x-tollgate-upstream-model"],
        "gemma3:1b-it-q4"
    );
    assert!(resp.headers().contains_key("x-request-id"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "héllo wörld");
    assert_eq!(body["usage"]["total_tokens"], 4);

    let seen = upstream.state.last();
    assert_eq!(
        seen.body["model"], "gemma3:1b-it-q4",
        "the upstream model name is sent"
    );
    assert_eq!(seen.body["temperature"], 0.2);
    assert_eq!(
        seen.body["x_custom"],
        json!({"kept": true}),
        "unknown fields survive"
    );
    assert_eq!(
        seen.headers["authorization"],
        "Bearer sk-upstream-secret-key-0123456789"
    );
    assert!(
        !seen.headers.contains_key("apikey"),
        "the client's key is never forwarded"
    );
    assert!(
        seen.body.get("stream_options").is_none(),
        "no stream options on whole requests"
    );

    let log = gw.next_log().await;
    assert_eq!(
        (
            log.route.as_deref(),
            log.consumer.as_deref(),
            log.custom_id.as_deref()
        ),
        (Some("ollama"), Some("admin-user"), Some("admin"))
    );
    assert_eq!(
        (
            log.model.as_deref(),
            log.provider.as_deref(),
            log.upstream_model.as_deref()
        ),
        (Some("gemma3:1b"), Some("up"), Some("gemma3:1b-it-q4"))
    );
    assert_eq!(
        (
            log.status,
            log.prompt_tokens,
            log.completion_tokens,
            log.total_tokens
        ),
        (200, Some(2), Some(2), Some(4))
    );
    assert!(
        log.upstream_latency_ms.is_some() && log.latency_ms >= log.upstream_latency_ms.unwrap()
    );
    assert_eq!(log.cached_tokens, Some(0));
}

#[tokio::test]
async fn streaming_hides_the_usage_chunk_the_gateway_asked_for() {
    let (mut gw, upstream) = setup().await;
    let mut body = chat_body("llama3.2:1b", "one two three");
    body["stream"] = json!(true);
    let resp = post(&gw, "/ollama/v1/chat/completions", "dev-key-12345", &body).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse_events(resp).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "one two three");
    assert!(
        chunks
            .iter()
            .all(|c| !c["choices"].as_array().unwrap().is_empty()),
        "the usage-only chunk is removed"
    );

    assert_eq!(
        upstream.state.last().body["stream_options"]["include_usage"],
        true,
        "usage is always requested upstream"
    );
    let log = gw.next_log().await;
    assert!(log.stream && !log.client_disconnected);
    assert_eq!(
        (log.prompt_tokens, log.completion_tokens),
        (Some(5), Some(3)),
        "stream usage is accounted"
    );
    assert!(log.ttft_ms.is_some_and(|t| t <= log.latency_ms));
}

#[tokio::test]
async fn streaming_keeps_the_usage_chunk_when_the_client_asked() {
    let (_gw, _up) = setup().await;
    let gw = _gw;
    let mut body = chat_body("llama3.2:1b", "a b");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let events =
        sse_events(post(&gw, "/ollama/v1/chat/completions", "dev-key-12345", &body).await).await;
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 2);
}

#[tokio::test]
async fn streams_are_passed_on_as_they_arrive() {
    let (gw, upstream) = setup().await;
    let mut body = chat_body("slow-stream", "x");
    body["stream"] = json!(true);
    let resp = post(&gw, "/ollama/v1/chat/completions", "admin-key-12345", &body).await;
    let mut stream = resp.bytes_stream();
    let mut received = String::new();
    while !received.contains("tick1 ") {
        received.push_str(&String::from_utf8_lossy(
            &stream.next().await.unwrap().unwrap(),
        ));
    }
    // The upstream is still producing (it needs ~3 s): nothing was buffered to the end.
    assert_eq!(upstream.state.completed_streams.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn client_disconnect_mid_stream_cancels_the_upstream_call() {
    let (mut gw, upstream) = setup().await;
    let mut body = chat_body("slow-stream", "x");
    body["stream"] = json!(true);
    let resp = post(&gw, "/ollama/v1/chat/completions", "admin-key-12345", &body).await;
    let mut stream = resp.bytes_stream();
    stream.next().await.unwrap().unwrap();
    drop(stream);
    for _ in 0..50 {
        if upstream.state.cancelled_streams.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        upstream.state.cancelled_streams.load(Ordering::SeqCst),
        1,
        "the upstream saw the cancellation"
    );
    assert_eq!(upstream.state.completed_streams.load(Ordering::SeqCst), 0);
    let log = gw.next_log().await;
    assert!(log.client_disconnected && log.stream);
}

#[tokio::test]
async fn an_upstream_dying_mid_stream_ends_the_stream_with_an_error_event() {
    let (mut gw, _up) = setup().await;
    let mut body = chat_body("die-mid-stream", "x");
    body["stream"] = json!(true);
    let resp = post(&gw, "/ollama/v1/chat/completions", "admin-key-12345", &body).await;
    assert_eq!(resp.status(), 200);
    let events = sse_events(resp).await;
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(
        last["error"]["code"], "upstream_protocol_error",
        "{events:?}"
    );
    assert!(
        events.iter().any(|e| e.contains("partial")),
        "chunks before the break were delivered"
    );
    let log = gw.next_log().await;
    assert_eq!(log.error, Some("upstream_protocol_error"));
    assert!(!log.client_disconnected);
}

#[tokio::test]
async fn a_silent_upstream_mid_stream_hits_the_idle_timeout() {
    let (mut gw, _up) = setup().await;
    let mut body = chat_body("stall-mid-stream", "x");
    body["stream"] = json!(true);
    let events =
        sse_events(post(&gw, "/ollama/v1/chat/completions", "admin-key-12345", &body).await).await;
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_timeout");
    assert!(last["error"]["message"].as_str().unwrap().contains("idle"));
    assert_eq!(gw.next_log().await.error, Some("upstream_timeout"));
}

#[tokio::test]
async fn embeddings_are_proxied_and_open_to_everyone_when_the_model_says_so() {
    let (mut gw, upstream) = setup().await;
    // dev-user's groups do not list nomic-embed-text, but it is open for embeddings.
    let resp = post(
        &gw,
        "/ollama/v1/embeddings",
        "dev-key-12345",
        &json!({"model": "nomic-embed-text", "input": ["a b", "c"]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(upstream.state.last().path, "/v1/embeddings");
    let log = gw.next_log().await;
    assert_eq!(
        (log.endpoint, log.prompt_tokens),
        (Some("embeddings"), Some(3))
    );

    // ... but not for chat.
    let (status, err) = error_of(
        post(
            &gw,
            "/ollama/v1/chat/completions",
            "dev-key-12345",
            &chat_body("nomic-embed-text", "x"),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (403, Some("model_not_allowed"))
    );
    // And a chat model is not open for embeddings to those who may not use it.
    let (status, _) = error_of(
        post(
            &gw,
            "/ollama/v1/embeddings",
            "dev-key-12345",
            &json!({"model": "gemma3:1b", "input": "x"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 403);
}

async fn model_ids(
    gw: &TestGateway,
    route: &str,
    key: &str,
    extra: Option<(&str, &str)>,
) -> Vec<String> {
    let mut req = client()
        .get(gw.url(&format!("{route}/v1/models")))
        .bearer_auth(key);
    if let Some((h, v)) = extra {
        req = req.header(h, v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "list");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["object"], "model");
            m["id"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn model_list_shows_exactly_what_the_caller_may_use_on_the_route() {
    let (gw, _up) = setup().await;
    assert_eq!(
        model_ids(&gw, "/ollama", "dev-key-12345", None).await,
        ["llama3.2:1b", "qwen2.5-coder:1.5b"]
    );
    assert_eq!(
        model_ids(&gw, "/ollama", "lead-key-12345", None).await,
        ["llama3.2:1b", "qwen2.5-coder:1.5b", "gemma3:1b"]
    );
    let admin = model_ids(&gw, "/ollama", "admin-key-second", None).await;
    assert!(
        admin.contains(&"offline".to_owned()) && !admin.contains(&"nomic-embed-text".to_owned()),
        "unlisted models stay hidden"
    );
    assert_eq!(
        model_ids(&gw, "/coder", "admin-key-12345", None).await,
        ["qwen2.5-coder:1.5b"]
    );

    let resp = client()
        .get(gw.url("/ollama/v1/models/qwen2.5-coder:1.5b"))
        .bearer_auth("dev-key-12345")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client()
        .get(gw.url("/ollama/v1/models/gemma3:1b"))
        .bearer_auth("dev-key-12345")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn keys_are_required_and_checked() {
    let (mut gw, _up) = setup().await;
    let resp = client()
        .post(gw.url("/ollama/v1/chat/completions"))
        .json(&chat_body("llama3.2:1b", "x"))
        .send()
        .await
        .unwrap();
    let (status, err) = error_of(resp).await;
    assert_eq!(
        (status, err["code"].as_str(), err["type"].as_str()),
        (401, Some("missing_api_key"), Some("authentication_error"))
    );
    let log = gw.next_log().await;
    assert_eq!((log.status, log.error), (401, Some("missing_api_key")));

    let (status, err) = error_of(
        post(
            &gw,
            "/ollama/v1/chat/completions",
            "dev-key-99999",
            &chat_body("llama3.2:1b", "x"),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    assert!(
        !err["message"].as_str().unwrap().contains("dev-key-99999"),
        "the key is not echoed"
    );
    // The clear key of a consumer configured by hash works; its hash does not.
    assert_eq!(
        post(
            &gw,
            "/ollama/v1/chat/completions",
            "lead-key-12345",
            &chat_body("llama3.2:1b", "x")
        )
        .await
        .status(),
        200
    );
    let hash = format!("sha256:{}", support::sha256_hex("lead-key-12345"));
    assert_eq!(
        post(
            &gw,
            "/ollama/v1/chat/completions",
            &hash,
            &chat_body("llama3.2:1b", "x")
        )
        .await
        .status(),
        401
    );
    // Models are also behind the key.
    assert_eq!(
        client()
            .get(gw.url("/ollama/v1/models"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn route_groups_and_model_access_are_enforced() {
    let (gw, upstream) = setup().await;
    let before = upstream.state.requests().len();
    // /gemma needs group gemma-users.
    let (status, err) = error_of(
        post(
            &gw,
            "/gemma/v1/chat/completions",
            "dev-key-12345",
            &chat_body("gemma3:1b", "x"),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, err["type"].as_str(), err["code"].as_str()),
        (403, Some("permission_error"), Some("route_forbidden"))
    );
    assert_eq!(
        post(
            &gw,
            "/gemma/v1/chat/completions",
            "lead-key-12345",
            &chat_body("gemma3:1b", "x")
        )
        .await
        .status(),
        200
    );
    // A model outside the consumer's access: 403 naming the model.
    let (status, err) = error_of(
        post(
            &gw,
            "/ollama/v1/chat/completions",
            "dev-key-12345",
            &chat_body("gemma3:1b", "x"),
        )
        .await,
    )
    .await;
    assert_eq!(status, 403);
    assert!(err["message"].as_str().unwrap().contains("gemma3:1b"));
    // Unknown model, and a model the route does not serve: 404.
    let (status, err) = error_of(
        post(
            &gw,
            "/ollama/v1/chat/completions",
            "admin-key-12345",
            &chat_body("gpt-9", "x"),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (404, Some("model_not_found"))
    );
    let (status, _) = error_of(
        post(
            &gw,
            "/coder/v1/chat/completions",
            "admin-key-12345",
            &chat_body("llama3.2:1b", "x"),
        )
        .await,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(
        upstream.state.requests().len(),
        before + 1,
        "refused requests never reach the upstream"
    );
}

#[tokio::test]
async fn a_route_default_model_serves_requests_without_a_model() {
    let (gw, upstream) = setup().await;
    let resp = post(
        &gw,
        "/coder/v1/chat/completions",
        "dev-key-12345",
        &json!({"messages": [{"role": "user", "content": "fn main"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.state.last().body["model"], "qwen2.5-coder:1.5b");
    let (status, err) = error_of(
        post(
            &gw,
            "/ollama/v1/chat/completions",
            "dev-key-12345",
            &json!({"messages": [{"role": "user", "content": "x"}]}),
        )
        .await,
    )
    .await;
    assert_eq!((status, err["code"].as_str()), (400, Some("missing_model")));
}

#[tokio::test]
async fn a_trusted_consumer_speaks_for_its_users_and_nobody_else_can() {
    let (mut gw, _up) = setup().await;
    let hdr = "X-OpenWebUI-User-Email";
    assert_eq!(
        model_ids(
            &gw,
            "/ollama",
            "openwebui-key-12345",
            Some((hdr, "lead@example.com"))
        )
        .await,
        ["llama3.2:1b", "qwen2.5-coder:1.5b", "gemma3:1b"]
    );
    let log = gw.next_log().await;
    assert_eq!(
        (log.consumer.as_deref(), log.end_user.as_deref()),
        (Some("openwebui"), Some("lead@example.com"))
    );
    // An unknown user gets only what OpenWebUI itself has.
    assert_eq!(
        model_ids(
            &gw,
            "/ollama",
            "openwebui-key-12345",
            Some((hdr, "stranger@example.com"))
        )
        .await,
        ["llama3.2:1b"]
    );
    assert_eq!(
        model_ids(&gw, "/ollama", "openwebui-key-12345", None).await,
        ["llama3.2:1b"]
    );
    // The user's own access applies to chat too.
    let resp = client()
        .post(gw.url("/ollama/v1/chat/completions"))
        .bearer_auth("openwebui-key-12345")
        .header(hdr, "dev@example.com")
        .json(&chat_body("gemma3:1b", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // From an untrusted consumer the header is ignored.
    assert_eq!(
        model_ids(
            &gw,
            "/ollama",
            "dev-key-12345",
            Some((hdr, "admin@example.com"))
        )
        .await,
        ["llama3.2:1b", "qwen2.5-coder:1.5b"]
    );
    for _ in 0..4 {
        let log = gw.next_log().await;
        if log.consumer.as_deref() == Some("dev-user") {
            assert_eq!(
                log.end_user, None,
                "an untrusted consumer's header is not recorded"
            );
        }
    }
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_reaches_no_upstream() {
    let (gw, upstream) = setup().await;
    let send_raw = |body: &'static str| {
        client()
            .post(gw.url("/ollama/v1/chat/completions"))
            .bearer_auth("dev-key-12345")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let (status, err) = error_of(send_raw("{\"model\": ").await.unwrap()).await;
    assert_eq!(
        (status, err["type"].as_str()),
        (400, Some("invalid_request_error"))
    );
    assert!(err["message"].as_str().unwrap().contains("JSON"));
    assert_eq!(error_of(send_raw("[1,2]").await.unwrap()).await.0, 400);
    assert_eq!(
        error_of(send_raw("{\"model\":\"llama3.2:1b\"}").await.unwrap())
            .await
            .0,
        400,
        "messages missing"
    );
    assert_eq!(error_of(send_raw("{\"model\":\"llama3.2:1b\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stream\":\"yes\"}").await.unwrap()).await.0, 400);
    assert_eq!(
        error_of(
            send_raw("{\"model\":7,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}")
                .await
                .unwrap()
        )
        .await
        .0,
        400
    );
    assert_eq!(
        error_of(
            post(
                &gw,
                "/ollama/v1/embeddings",
                "dev-key-12345",
                &json!({"model": "nomic-embed-text"})
            )
            .await
        )
        .await
        .0,
        400
    );

    // Wrong method and unknown paths.
    let resp = client()
        .get(gw.url("/ollama/v1/chat/completions"))
        .bearer_auth("dev-key-12345")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(resp).await.0, 405);
    let resp = client()
        .get(gw.url("/nowhere/v1/models"))
        .bearer_auth("dev-key-12345")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(resp).await.0, 404);
    assert!(upstream.state.requests().is_empty());
}

#[tokio::test]
async fn oversized_bodies_and_headers_are_refused() {
    let upstream = mock_upstream::start().await;
    let config =
        standard_config(&upstream.base_url()) + "limits: {max_body: 64KiB, max_headers: 8KiB}\n";
    let gw = TestGateway::start(&config).await;
    let big = "word ".repeat(20_000);
    let (status, err) = error_of(
        post(
            &gw,
            "/ollama/v1/chat/completions",
            "dev-key-12345",
            &chat_body("llama3.2:1b", &big),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (413, Some("body_too_large"))
    );
    // Without a Content-Length (chunked), the limit still holds.
    let chunks =
        futures_util::stream::iter((0..100).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
    let resp = client()
        .post(gw.url("/ollama/v1/chat/completions"))
        .bearer_auth("dev-key-12345")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let resp = client()
        .get(gw.url("/ollama/v1/models"))
        .bearer_auth("dev-key-12345")
        .header("x-filler", "f".repeat(9000))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(resp).await.0, 431);
    assert!(upstream.state.requests().is_empty());
}

#[tokio::test]
async fn a_body_sent_in_pieces_reaches_the_upstream_whole() {
    let (gw, upstream) = setup().await;
    let body = chat_body("llama3.2:1b", &"piece by piece ".repeat(500)).to_string();
    // Chunked, in uneven pieces, without a Content-Length.
    let pieces: Vec<Vec<u8>> = body.as_bytes().chunks(777).map(<[u8]>::to_vec).collect();
    let resp = client()
        .post(gw.url("/ollama/v1/chat/completions"))
        .bearer_auth("dev-key-12345")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            pieces.into_iter().map(Ok::<_, std::io::Error>),
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sent = upstream.state.last();
    assert_eq!(
        sent.body["messages"],
        chat_body("llama3.2:1b", &"piece by piece ".repeat(500))["messages"]
    );
}

#[tokio::test]
async fn the_default_body_limit_takes_long_agent_contexts() {
    let (gw, _up) = setup().await;
    let long = "token ".repeat(1_500_000); // ~9 MB
    let resp = post(
        &gw,
        "/ollama/v1/chat/completions",
        "dev-key-12345",
        &chat_body("llama3.2:1b", &long),
    )
    .await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn upstream_failures_become_openai_errors_without_secrets() {
    let (mut gw, _up) = setup().await;
    let key = "admin-key-12345";
    let (status, err) = error_of(
        post(
            &gw,
            "/ollama/v1/chat/completions",
            key,
            &chat_body("offline", "x"),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (502, Some("upstream_unreachable"))
    );
    let (status, err) = error_of(
        post(
            &gw,
            "/ollama/v1/chat/completions",
            key,
            &chat_body("fail-500", "x"),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, err["type"].as_str()),
        (502, Some("upstream_error"))
    );

    let resp = post(
        &gw,
        "/ollama/v1/chat/completions",
        key,
        &chat_body("fail-401", "x"),
    )
    .await;
    let text = resp.text().await.unwrap();
    assert!(
        !text.contains("sk-upstream") && !text.contains("0123456789"),
        "provider key leaked: {text}"
    );
    let err: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        err["error"]["type"], "upstream_error",
        "an upstream 401 is not the client's fault"
    );

    let resp = post(
        &gw,
        "/ollama/v1/chat/completions",
        key,
        &chat_body("fail-429", "x"),
    )
    .await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let (status, err) = error_of(
        post(
            &gw,
            "/ollama/v1/chat/completions",
            key,
            &chat_body("fail-404", "x"),
        )
        .await,
    )
    .await;
    assert_eq!(status, 404);
    assert!(err["message"].as_str().unwrap().contains("not found"));
    let (status, err) = error_of(
        post(
            &gw,
            "/ollama/v1/chat/completions",
            key,
            &chat_body("hang", "x"),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (504, Some("upstream_timeout"))
    );

    for _ in 0..6 {
        let log = gw.next_log().await;
        let line = serde_json::to_string(&log).unwrap();
        assert!(
            !line.contains("sk-upstream") && !line.contains("admin-key"),
            "secret in the log: {line}"
        );
        assert!(log.error.is_some());
    }
}

#[tokio::test]
async fn status_listener_reports_health_and_readiness() {
    let (gw, _up) = setup().await;
    let health = client()
        .get(format!("http://{}/health", gw.status_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = client()
        .get(format!("http://{}/ready", gw.status_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    // Not on the proxy port.
    assert_eq!(
        client()
            .get(gw.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn a_client_request_id_is_kept() {
    let (mut gw, _up) = setup().await;
    let resp = client()
        .get(gw.url("/ollama/v1/models"))
        .bearer_auth("dev-key-12345")
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    assert_eq!(gw.next_log().await.request_id, "abc-123");
}

/// A stream's answer names its request too (it once carried an empty `x-request-id`: the
/// stream takes the log record, id and all, before the answer's headers were finished).
#[tokio::test]
async fn a_stream_names_its_request() {
    let (mut gw, _up) = setup().await;
    for sent in [Some("stream-id-42"), None] {
        let mut request = client()
            .post(gw.url("/ollama/v1/chat/completions"))
            .header("apikey", "admin-key-12345")
            .json(&json!({"model": "gemma3:1b", "stream": true, "messages": [{"role": "user", "content": "hi there"}]}));
        if let Some(id) = sent {
            request = request.header("x-request-id", id);
        }
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(!sse_events(resp).await.is_empty());
        assert_eq!(gw.next_log().await.request_id, id);
        match sent {
            Some(sent) => assert_eq!(id, sent),
            None => assert_eq!(id.len(), 36, "a generated id: {id:?}"),
        }
    }
}
