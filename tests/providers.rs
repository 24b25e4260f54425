//! Anthropic, Gemini and Azure behind the gateway, against mocks that speak their wire formats
//! (SSE chunk boundaries fall mid-event and mid-character).

mod support;

use base64::Engine;
use serde_json::{Value, json};
use support::{TestGateway, client, mock_upstream};

const KEY: &str = "user-key-12345";

async fn setup() -> (TestGateway, mock_upstream::MockUpstream) {
    let up = mock_upstream::start().await;
    let addr = up.addr;
    let config = format!(
        r#"
providers:
  claude: {{type: anthropic, base_url: "http://{addr}", api_key: sk-ant-secret-0123456789abcdef}}
  google: {{type: gemini, base_url: "http://{addr}/v1beta", api_key: gm-secret-0123456789abcdef}}
  google-q: {{type: gemini, base_url: "http://{addr}/v1beta", api_key: gm-query-0123456789abcdef, key_in: query}}
  nokey: {{type: anthropic, api_key: ""}}
  azure: {{type: azure, base_url: "http://{addr}", api_key: az-secret-0123456789abcdef}}
models:
  claude-haiku-3-5: {{provider: claude, model: claude-3-5-haiku-latest}}
  claude-overloaded: {{provider: claude, model: overloaded}}
  claude-rate-limited: {{provider: claude, model: rate-limited}}
  claude-bad-key: {{provider: claude, model: fail-401}}
  claude-mid-error: {{provider: claude, model: error-mid-stream}}
  gemini-2.5-flash: {{provider: google}}
  gemini-q: {{provider: google-q, model: gemini-2.5-flash}}
  gemini-safety: {{provider: google, model: safety}}
  gemini-blocked: {{provider: google, model: blocked}}
  gemini-429: {{provider: google, model: fail-429}}
  gemini-embed: {{provider: google, model: text-embedding-004}}
  claude-nokey: {{provider: nokey}}
  gpt-azure: {{provider: azure, model: my-gpt4o}}
routes:
  ai: {{}}
consumers:
  u: {{keys: [{KEY}], models: "*"}}
"#
    );
    (TestGateway::start(&config).await, up)
}

async fn chat(gw: &TestGateway, body: Value) -> reqwest::Response {
    client()
        .post(gw.url("/ai/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn json_of(resp: reqwest::Response) -> Value {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    body
}

/// The `data:` payloads of an SSE answer, as JSON (without `[DONE]`), and whether it ended with `[DONE]`.
async fn sse(resp: reqwest::Response) -> (Vec<Value>, bool) {
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let data: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    let done = data.last() == Some(&"[DONE]");
    (
        data.iter()
            .filter(|d| **d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect(),
        done,
    )
}

fn streamed_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

#[tokio::test]
async fn anthropic_chat_is_translated_both_ways() {
    let (mut gw, up) = setup().await;
    let body = json_of(
        chat(
            &gw,
            json!({"model": "claude-haiku-3-5", "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "héllo wörld"}]}),
        )
        .await,
    )
    .await;
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "héllo wörld");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        body["usage"]["prompt_tokens"].as_u64().unwrap(),
        body["usage"]["total_tokens"].as_u64().unwrap() - 2
    );
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 3);

    let seen = up.state.last();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], "sk-ant-secret-0123456789abcdef");
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert!(
        !seen.headers.contains_key("authorization"),
        "the client's key is not forwarded"
    );
    assert_eq!(seen.body["model"], "claude-3-5-haiku-latest");
    assert_eq!(seen.body["max_tokens"], 4096);
    assert_eq!(
        seen.body["system"],
        json!([{"type": "text", "text": "Be brief."}])
    );
    let log = gw.next_log().await;
    assert_eq!(
        (
            log.provider.as_deref(),
            log.cached_tokens,
            log.cache_write_tokens
        ),
        (Some("claude"), Some(3), Some(0))
    );
}

#[tokio::test]
async fn anthropic_streams_are_translated_with_usage_on_request() {
    let (mut gw, _up) = setup().await;
    let (chunks, done) = sse(chat(
        &gw,
        json!({"model": "claude-haiku-3-5", "stream": true,
        "messages": [{"role": "user", "content": "multi-byte ✓ text €"}]}),
    )
    .await)
    .await;
    assert!(done);
    assert_eq!(streamed_text(&chunks), "multi-byte ✓ text €");
    assert_eq!(
        chunks
            .iter()
            .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
            .collect::<Vec<_>>(),
        ["stop"]
    );
    assert!(
        chunks
            .iter()
            .all(|c| !c["choices"].as_array().unwrap().is_empty()),
        "no usage chunk unasked"
    );
    let log = gw.next_log().await;
    assert_eq!(log.completion_tokens, Some(4));
    assert!(log.ttft_ms.is_some());

    let (chunks, _) = sse(chat(&gw, json!({"model": "claude-haiku-3-5", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "a b"}]})).await).await;
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 2);
}

#[tokio::test]
async fn anthropic_tool_calls_round_trip_over_several_turns() {
    let (gw, up) = setup().await;
    let mut messages = vec![json!({"role": "user", "content": "Weather in Paris?"})];
    let first = json_of(chat(&gw, json!({"model": "claude-haiku-3-5", "messages": messages, "tools": weather_tool(), "tool_choice": "auto"})).await).await;
    let choice = &first["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(up.state.last().body["tool_choice"], json!({"type": "auto"}));

    messages.push(choice["message"].clone());
    messages.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "18C and sunny"}));
    let second = json_of(
        chat(
            &gw,
            json!({"model": "claude-haiku-3-5", "messages": messages, "tools": weather_tool()}),
        )
        .await,
    )
    .await;
    assert_eq!(
        second["choices"][0]["message"]["content"],
        "Result: 18C and sunny"
    );

    // A third turn: the whole history, tool use included, is still a valid Anthropic conversation.
    messages.push(second["choices"][0]["message"].clone());
    messages.push(json!({"role": "user", "content": "And in Oslo?"}));
    let third = json_of(
        chat(
            &gw,
            json!({"model": "claude-haiku-3-5", "messages": messages, "tools": weather_tool()}),
        )
        .await,
    )
    .await;
    assert_eq!(third["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        up.state.last().body["messages"].as_array().unwrap().len(),
        5
    );
}

#[tokio::test]
async fn anthropic_streamed_tool_call_arguments_arrive_whole() {
    let (gw, _up) = setup().await;
    let (chunks, done) = sse(chat(
        &gw,
        json!({"model": "claude-haiku-3-5", "stream": true, "tools": weather_tool(),
        "messages": [{"role": "user", "content": "Weather?"}]}),
    )
    .await)
    .await;
    assert!(done);
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(calls[0][0]["id"], "toolu_01Mock");
    let args: String = calls
        .iter()
        .filter_map(|c| c[0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Paris"})
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );
}

#[tokio::test]
async fn anthropic_errors_become_openai_errors() {
    let (gw, up) = setup().await;
    let msg = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "x"}]});
    let resp = chat(&gw, msg("claude-overloaded")).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "upstream_overloaded"
    );
    let resp = chat(&gw, msg("claude-rate-limited")).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "12");
    let resp = chat(&gw, msg("claude-bad-key")).await;
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert!(
        !text.contains("sk-ant-secret") && !text.contains("0123456789abcdef"),
        "key leaked: {text}"
    );

    let mut stream = msg("claude-mid-error");
    stream["stream"] = json!(true);
    let (chunks, done) = sse(chat(&gw, stream).await).await;
    assert!(!done);
    assert_eq!(
        chunks.last().unwrap()["error"]["code"],
        "upstream_overloaded"
    );

    let before = up.state.requests().len();
    let mut bad = msg("claude-haiku-3-5");
    bad["n"] = json!(2);
    let resp = chat(&gw, bad).await;
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("n > 1"));
    assert_eq!(
        up.state.requests().len(),
        before,
        "an inexpressible request is not sent"
    );
}

#[tokio::test]
async fn gemini_chat_and_streams_are_translated_both_ways() {
    let (mut gw, up) = setup().await;
    let body = json_of(chat(&gw, json!({"model": "gemini-2.5-flash", "max_tokens": 50, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "bonjour à tous"}]})).await).await;
    assert_eq!(body["choices"][0]["message"]["content"], "bonjour à tous");
    assert_eq!(body["usage"]["completion_tokens"], 3);
    let seen = up.state.last();
    assert_eq!(seen.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(seen.headers["x-goog-api-key"], "gm-secret-0123456789abcdef");
    assert_eq!(
        seen.body["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );
    assert_eq!(seen.body["generationConfig"]["maxOutputTokens"], 50);
    gw.next_log().await;

    let (chunks, done) = sse(chat(
        &gw,
        json!({"model": "gemini-2.5-flash", "stream": true,
        "messages": [{"role": "user", "content": "straße ✓ 日本語"}]}),
    )
    .await)
    .await;
    assert!(done);
    assert_eq!(streamed_text(&chunks), "straße ✓ 日本語");
    assert_eq!(
        up.state.last().path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    let log = gw.next_log().await;
    assert_eq!(
        (log.prompt_tokens.is_some(), log.completion_tokens),
        (true, Some(3))
    );

    // The key can travel as a query parameter instead.
    json_of(
        chat(
            &gw,
            json!({"model": "gemini-q", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await,
    )
    .await;
    let seen = up.state.last();
    assert!(
        seen.path.contains("key=gm-query-0123456789abcdef")
            && !seen.headers.contains_key("x-goog-api-key")
    );
}

#[tokio::test]
async fn gemini_tool_calls_round_trip_over_several_turns() {
    let (gw, up) = setup().await;
    let mut messages = vec![json!({"role": "user", "content": "Weather in Paris?"})];
    let first = json_of(
        chat(
            &gw,
            json!({"model": "gemini-2.5-flash", "messages": messages, "tools": weather_tool()}),
        )
        .await,
    )
    .await;
    let choice = &first["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );

    messages.push(choice["message"].clone());
    messages
        .push(json!({"role": "tool", "tool_call_id": call["id"], "content": "{\"temp_c\": 18}"}));
    let second = json_of(
        chat(
            &gw,
            json!({"model": "gemini-2.5-flash", "messages": messages, "tools": weather_tool()}),
        )
        .await,
    )
    .await;
    assert_eq!(
        second["choices"][0]["message"]["content"],
        "Result: {\"temp_c\":18}"
    );
    let sent = up.state.last().body;
    assert_eq!(
        sent["contents"][2]["parts"][0]["functionResponse"],
        json!({"name": "get_weather", "response": {"temp_c": 18}})
    );

    let mut stream = json!({"model": "gemini-2.5-flash", "stream": true, "tools": weather_tool(), "messages": [{"role": "user", "content": "Weather?"}]});
    stream["tool_choice"] = json!("required");
    let (chunks, _) = sse(chat(&gw, stream).await).await;
    assert!(
        chunks.iter().any(
            |c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "get_weather"
        )
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );
    assert_eq!(
        up.state.last().body["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY"}})
    );
}

#[tokio::test]
async fn gemini_safety_blocks_are_not_a_normal_stop() {
    let (gw, _up) = setup().await;
    let body = json_of(
        chat(
            &gw,
            json!({"model": "gemini-safety", "messages": [{"role": "user", "content": "x"}]}),
        )
        .await,
    )
    .await;
    assert_eq!(body["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(body["choices"][0]["message"]["content"], Value::Null);

    let resp = chat(
        &gw,
        json!({"model": "gemini-blocked", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "content_filter"
    );
    let (chunks, done) = sse(chat(&gw, json!({"model": "gemini-blocked", "stream": true, "messages": [{"role": "user", "content": "x"}]})).await).await;
    assert!(done);
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "content_filter")
    );

    let resp = chat(
        &gw,
        json!({"model": "gemini-429", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(resp.status(), 429);
    assert_eq!(
        resp.headers()["retry-after"],
        "21",
        "Google's RetryInfo becomes Retry-After"
    );
}

#[tokio::test]
async fn gemini_embeddings_in_openai_format() {
    let (gw, up) = setup().await;
    let embed = |body: Value| {
        client()
            .post(gw.url("/ai/v1/embeddings"))
            .bearer_auth(KEY)
            .json(&body)
            .send()
    };
    let body = json_of(
        embed(json!({"model": "gemini-embed", "input": ["abc", "de"], "dimensions": 3}))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][1]["index"], 1);
    assert_eq!(body["data"][0]["embedding"], json!([0.3, 0.4, 0.5]));
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() >= 2);
    let sent = up.state.last();
    assert_eq!(
        sent.path,
        "/v1beta/models/text-embedding-004:batchEmbedContents"
    );
    assert_eq!(
        sent.body["requests"][0],
        json!({"model": "models/text-embedding-004", "content": {"parts": [{"text": "abc"}]}, "outputDimensionality": 3})
    );

    let body = json_of(
        embed(json!({"model": "gemini-embed", "input": "abc", "encoding_format": "base64"}))
            .await
            .unwrap(),
    )
    .await;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let floats: Vec<f32> = bytes
        .chunks(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(floats, [0.3, 0.4, 0.5, 0.6]);
}

#[tokio::test]
async fn a_provider_without_a_key_is_left_out_cleanly() {
    let (gw, _up) = setup().await;
    let models = json_of(
        client()
            .get(gw.url("/ai/v1/models"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"claude-haiku-3-5") && !ids.contains(&"claude-nokey"),
        "{ids:?}"
    );
    let resp = chat(
        &gw,
        json!({"model": "claude-nokey", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(resp.status(), 503);
    let err = resp.json::<Value>().await.unwrap();
    assert_eq!(err["error"]["code"], "provider_unavailable");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no API key")
    );
}

#[tokio::test]
async fn azure_uses_deployment_urls_and_the_api_key_header() {
    let (gw, up) = setup().await;
    let body = json_of(
        chat(
            &gw,
            json!({"model": "gpt-azure", "messages": [{"role": "user", "content": "hi azure"}]}),
        )
        .await,
    )
    .await;
    assert_eq!(body["choices"][0]["message"]["content"], "hi azure");
    let seen = up.state.last();
    assert_eq!(
        seen.path,
        "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(seen.headers["api-key"], "az-secret-0123456789abcdef");
    assert!(!seen.headers.contains_key("authorization"));
}

#[tokio::test]
async fn servers_that_refuse_stream_options_never_get_them() {
    let up = mock_upstream::start().await;
    let config = format!(
        "providers:\n  m: {{type: mistral, base_url: \"{}\", api_key: mk-0123456789abcdef}}\nmodels:\n  mistral-small: {{provider: m}}\n\
         routes:\n  ai: {{}}\nconsumers:\n  u: {{keys: [{KEY}], models: \"*\"}}\n",
        up.base_url()
    );
    let gw = TestGateway::start(&config).await;
    let (chunks, done) = sse(chat(
        &gw,
        json!({"model": "mistral-small", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "bonjour"}]}),
    )
    .await)
    .await;
    assert!(done);
    assert_eq!(streamed_text(&chunks), "bonjour");
    let seen = up.state.last();
    assert!(seen.body.get("stream_options").is_none(), "{}", seen.body);
    assert_eq!(seen.headers["authorization"], "Bearer mk-0123456789abcdef");
}

/// An `https` upstream is reached through the egress proxy the environment names, with a
/// CONNECT tunnel (TLS then runs end to end through it); a refused tunnel is a 502 like any
/// unreachable upstream, and plain-HTTP upstreams (local models) stay direct.
#[tokio::test]
async fn https_upstreams_go_through_the_egress_proxy_of_the_environment() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = proxy.accept().await {
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && socket.read(&mut byte).await.unwrap_or(0) == 1
                {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let _ = seen_tx.send(head.lines().next().unwrap_or_default().to_owned());
                let _ = socket
                    .write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    let local = mock_upstream::start().await;
    let yaml = format!(
        r#"
providers:
  remote: {{type: openai, base_url: "https://api.example.test/v1", api_key: sk-remote-0123456789}}
  local: {{type: openai, base_url: "{}"}}
models:
  far: {{provider: remote}}
  near: {{provider: local}}
routes:
  ai: {{}}
consumers:
  dev: {{keys: [dev-key-123456], models: "*"}}
"#,
        local.base_url()
    );
    let gw = support::GatewayProcess::start_with_env(
        &yaml,
        &[("HTTPS_PROXY", &proxy_url), ("HTTP_PROXY", &proxy_url)],
    )
    .await;
    let ask = |model: &str| {
        client()
            .post(gw.url("/ai/v1/chat/completions"))
            .bearer_auth("dev-key-123456")
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    let far = ask("far").await.unwrap();
    assert_eq!(far.status(), 502);
    let body: Value = far.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_unreachable", "{body}");
    assert_eq!(
        seen.recv().await.unwrap(),
        "CONNECT api.example.test:443 HTTP/1.1"
    );
    let near = ask("near").await.unwrap();
    assert_eq!(near.status(), 200);
    assert!(
        seen.try_recv().is_err(),
        "a plain-HTTP upstream went through the proxy"
    );
}
