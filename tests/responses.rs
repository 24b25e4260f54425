//! `POST {route}/v1/responses` (OpenAI's Responses API) through the pipeline: chains by
//! `previous_response_id` on translated paths (the store is written before the final event,
//! in memory or in Redis shared by several gateway processes, with a TTL), chains pinned to
//! the native target that made them, and the log. Mocks speak each provider's wire format.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::redis_proxy::redis_available;
use support::{GatewayProcess, TestGateway, client, mock_upstream};

const KEY: &str = "dev-key-12345";

fn config(addr: std::net::SocketAddr, store: &str) -> String {
    format!(
        r#"
{store}
providers:
  ollama: {{type: openai, base_url: "http://{addr}/v1"}}
  native-a: {{type: openai, base_url: "http://{addr}/v1", api_key: sk-native-a-0123456789, responses: true}}
  native-b: {{type: openai, base_url: "http://{addr}/v1", api_key: sk-native-b-0123456789, responses: true}}
models:
  "llama3.2:1b": {{provider: ollama}}
  gpt-balanced:
    strategy: weighted
    targets:
      - {{provider: native-a, model: gpt-5-mini}}
      - {{provider: native-b, model: gpt-5-mini}}
routes:
  ai: {{}}
  local: {{models: ["llama3.2:1b"], default_model: "llama3.2:1b"}}
consumers:
  dev-user: {{keys: [{KEY}], models: "*"}}
  other-user: {{keys: [other-key-12345], models: "*"}}
"#
    )
}

async fn respond(base: &str, key: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{base}/ai/v1/responses"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A streamed turn: the id from `response.completed`, and the whole event text.
async fn streamed_turn(base: &str, body: Value) -> (String, String) {
    let mut body = body;
    body["stream"] = json!(true);
    let text = respond(base, KEY, body).await.text().await.unwrap();
    let completed = text
        .split("\n\n")
        .find(|e| e.starts_with("event: response.completed"))
        .unwrap_or_else(|| panic!("no response.completed in {text}"));
    let data: Value = serde_json::from_str(completed.split_once("data: ").unwrap().1).unwrap();
    (data["response"]["id"].as_str().unwrap().to_owned(), text)
}

#[tokio::test]
async fn a_thousand_chained_requests_each_right_after_the_last_completed() {
    let up = mock_upstream::start().await;
    let gw = TestGateway::start(&config(
        up.addr,
        "dialects: {responses: {store: {backend: memory}}}",
    ))
    .await;
    let base = format!("http://{}", gw.addr);
    let (mut id, _) =
        streamed_turn(&base, json!({"model": "llama3.2:1b", "input": "turn 0"})).await;
    for i in 1..1000 {
        let (next, _) = streamed_turn(
            &base,
            json!({"model": "llama3.2:1b", "input": format!("turn {i}"), "previous_response_id": id}),
        )
        .await;
        id = next;
    }
    // The last turn's prompt held the whole chain.
    let sent = up.state.last();
    assert_eq!(
        sent.body["messages"].as_array().unwrap().len(),
        1000 * 2 - 1
    );
}

#[tokio::test]
async fn translated_turns_are_logged_with_their_usage_and_what_was_left_out() {
    let up = mock_upstream::start().await;
    let mut gw = TestGateway::start(&config(
        up.addr,
        "dialects: {responses: {store: {backend: memory}}}",
    ))
    .await;
    let base = format!("http://{}", gw.addr);
    let r = respond(
        &base,
        KEY,
        json!({"model": "llama3.2:1b", "input": "a b c", "include": ["reasoning.encrypted_content"],
        "tools": [{"type": "web_search"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["model"], "llama3.2:1b");
    let log = gw.next_log().await;
    assert_eq!(log.endpoint, Some("responses"));
    assert_eq!(
        log.completion_tokens,
        answer["usage"]["output_tokens"].as_u64()
    );
    assert_eq!(log.prompt_tokens, answer["usage"]["input_tokens"].as_u64());
    assert!(
        log.dropped.iter().any(|d| d == "include"),
        "{:?}",
        log.dropped
    );
    assert!(
        log.dropped.iter().any(|d| d == "web_search tool"),
        "{:?}",
        log.dropped
    );
    // Another consumer cannot read or continue it.
    let id = answer["id"].as_str().unwrap();
    let r = client()
        .get(format!("{base}/ai/v1/responses/{id}"))
        .bearer_auth("other-key-12345")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = respond(
        &base,
        "other-key-12345",
        json!({"model": "llama3.2:1b", "input": "x", "previous_response_id": id}),
    )
    .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn a_route_default_model_names_the_response() {
    let up = mock_upstream::start().await;
    let gw = TestGateway::start(&config(up.addr, "")).await;
    let r = client()
        .post(gw.url("/local/v1/responses"))
        .bearer_auth(KEY)
        .json(&json!({"input": "no model named"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["model"], "llama3.2:1b");
    assert_eq!(answer["output"][0]["content"][0]["text"], "no model named");
}

#[tokio::test]
async fn without_a_store_a_translated_chain_is_refused_clearly() {
    let up = mock_upstream::start().await;
    let gw = TestGateway::start(&config(up.addr, "")).await;
    let base = format!("http://{}", gw.addr);
    let r = respond(
        &base,
        KEY,
        json!({"model": "llama3.2:1b", "input": "x", "previous_response_id": "resp_1"}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("response store"),
        "{e}"
    );
}

#[tokio::test]
async fn a_native_chain_stays_on_the_target_that_made_it() {
    let up = mock_upstream::start().await;
    let mut gw = TestGateway::start(&config(
        up.addr,
        "dialects: {responses: {store: {backend: memory}}}",
    ))
    .await;
    let base = format!("http://{}", gw.addr);
    for _ in 0..10 {
        let r = respond(
            &base,
            KEY,
            json!({"model": "gpt-balanced", "input": "first"}),
        )
        .await;
        assert_eq!(r.status(), 200);
        let first: Value = r.json().await.unwrap();
        let made_by = gw.next_log().await.provider.unwrap();
        let (id, _) = streamed_turn(
            &base,
            json!({"model": "gpt-balanced", "input": "next", "previous_response_id": first["id"]}),
        )
        .await;
        let log = gw.next_log().await;
        assert_eq!(
            log.provider.unwrap(),
            made_by,
            "the chain stayed on its target"
        );
        // The id went upstream unchanged, and the mock (the target) knew it.
        assert_eq!(up.state.last().body["previous_response_id"], first["id"]);
        assert!(id.starts_with("resp_mock_"));
    }
}

#[tokio::test]
async fn two_gateways_share_the_redis_store_and_entries_expire() {
    if !redis_available().await {
        return;
    }
    let up = mock_upstream::start().await;
    let prefix = format!("tollgate-test-responses-{}", uuid::Uuid::new_v4());
    let store = format!(
        "dialects: {{responses: {{store: {{backend: redis, ttl: 2s, redis: {{url: \"redis://127.0.0.1:6379\", prefix: \"{prefix}\"}}}}}}}}"
    );
    let yaml = config(up.addr, &store);
    let a = GatewayProcess::start(&yaml).await;
    let b = GatewayProcess::start(&yaml).await;
    let (base_a, base_b) = (format!("http://{}", a.addr), format!("http://{}", b.addr));
    // Each turn goes to the other node right after the last completed.
    let (mut id, _) =
        streamed_turn(&base_a, json!({"model": "llama3.2:1b", "input": "turn 0"})).await;
    for i in 1..50 {
        let base = if i % 2 == 1 { &base_b } else { &base_a };
        let (next, _) = streamed_turn(base, json!({"model": "llama3.2:1b", "input": format!("turn {i}"), "previous_response_id": id})).await;
        id = next;
    }
    let r = client()
        .get(format!("{base_a}/ai/v1/responses/{id}"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // After the TTL: a clear error.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = respond(
        &base_b,
        KEY,
        json!({"model": "llama3.2:1b", "input": "late", "previous_response_id": id}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"].as_str().unwrap().contains("expired"),
        "{e}"
    );
}
