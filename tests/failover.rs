//! Multi-target models against fault-injecting mock upstreams: failover and recovery,
//! circuit breakers, Retry-After, retry criteria, streams, and every balancing strategy.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use support::{TestGateway, client, mock_upstream};
use tollgate::telemetry::request_log::RequestRecord;

const KEY: &str = "user-key-12345";

struct Setup {
    gw: TestGateway,
    a: mock_upstream::MockUpstream,
    b: mock_upstream::MockUpstream,
    c: mock_upstream::MockUpstream,
}

async fn setup(models: &str) -> Setup {
    let (a, b, c) = (
        mock_upstream::start().await,
        mock_upstream::start().await,
        mock_upstream::start().await,
    );
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        r#"
providers:
  a: {{type: openai, base_url: "{}", timeouts: {{first_byte: 2s, idle: 2s}}}}
  b: {{type: openai, base_url: "{}"}}
  c: {{type: openai, base_url: "{}"}}
  dead: {{type: openai, base_url: "http://127.0.0.1:{refused}/v1"}}
models:
{models}
routes:
  ai: {{default_model: chain}}
consumers:
  u: {{keys: [{KEY}], models: "*"}}
"#,
        a.base_url(),
        b.base_url(),
        c.base_url()
    );
    Setup {
        gw: TestGateway::start(&config).await,
        a,
        b,
        c,
    }
}

const CHAIN: &str = r#"
  chain:
    strategy: priority
    targets:
      - {provider: a, model: m, weight: 100}
      - {provider: b, model: m, weight: 50}
      - {provider: c, model: m, weight: 10}
    retry: {attempts: 3}
    circuit: {max_fails: 2, fail_timeout: 1s}
"#;

impl Setup {
    /// Sends a chat request; returns the status, the provider that answered and the body.
    async fn ask(&self, model: Option<&str>, text: &str) -> (u16, String, Value) {
        let mut body = json!({"messages": [{"role": "user", "content": text}]});
        if let Some(m) = model {
            body["model"] = json!(m);
        }
        let resp = client()
            .post(self.gw.url("/ai/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let provider = resp
            .headers()
            .get("x-tollgate-provider")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, provider, resp.json().await.unwrap_or(Value::Null))
    }

    async fn log(&mut self) -> RequestRecord {
        self.gw.next_log().await
    }

    async fn targets(&self) -> Value {
        client()
            .get(format!("http://{}/targets", self.gw.status_addr))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn outcomes(log: &RequestRecord) -> Vec<(String, &'static str)> {
    log.attempts
        .iter()
        .map(|a| (a.provider.to_string(), a.outcome))
        .collect()
}

fn pairs(list: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    list.iter().map(|(p, o)| (p.to_string(), *o)).collect()
}

#[tokio::test]
async fn the_priority_chain_falls_over_and_comes_back_when_the_first_target_recovers() {
    let mut s = setup(CHAIN).await;
    assert_eq!(
        s.ask(None, "hello").await.1,
        "a",
        "the route's default model is the chain"
    );
    s.log().await;

    s.a.state.force(Some("fail-500"));
    let (status, provider, body) = s.ask(None, "one").await;
    assert_eq!((status, provider.as_str()), (200, "b"));
    assert_eq!(body["choices"][0]["message"]["content"], "one");
    assert_eq!(
        outcomes(&s.log().await),
        pairs(&[("a", "upstream_error"), ("b", "ok")])
    );

    assert_eq!(s.ask(None, "two").await.1, "b");
    s.log().await; // second failure in a row: a's circuit opens
    let a_calls = s.a.state.requests().len();
    assert_eq!(s.ask(None, "three").await.1, "b");
    assert_eq!(
        outcomes(&s.log().await),
        pairs(&[("a", "circuit_open"), ("b", "ok")])
    );
    assert_eq!(
        s.a.state.requests().len(),
        a_calls,
        "an open circuit is skipped without a call"
    );
    let report = s.targets().await;
    let a = &report["models"]["chain"]["targets"][0];
    assert_eq!(
        (a["state"].as_str(), a["provider"].as_str()),
        (Some("open"), Some("a"))
    );
    assert!(
        a["open_until"].is_string() && a["recent_failures"].as_array().unwrap().len() == 2,
        "{a}"
    );

    // a recovers; after fail_timeout one trial goes to it, and traffic returns.
    s.a.state.force(None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(s.ask(None, "four").await.1, "a");
    assert_eq!(outcomes(&s.log().await), pairs(&[("a", "ok")]));
    assert_eq!(s.ask(None, "five").await.1, "a");
    assert_eq!(
        s.targets().await["models"]["chain"]["targets"][0]["state"],
        "up"
    );
}

#[tokio::test]
async fn refused_connections_and_hangs_fail_over_and_open_the_circuit() {
    let models = r#"
  chain:
    targets: [{provider: dead, model: m, weight: 3, timeouts: {connect: 200ms}}, {provider: a, model: m, weight: 2, timeouts: {first_byte: 300ms}}, {provider: b, model: m, weight: 1}]
    circuit: {max_fails: 1, fail_timeout: 60s}
"#;
    let mut s = setup(models).await;
    s.a.state.force(Some("hang"));
    let (status, provider, _) = s.ask(None, "x").await;
    assert_eq!((status, provider.as_str()), (200, "b"));
    assert_eq!(
        outcomes(&s.log().await),
        pairs(&[
            ("dead", "upstream_unreachable"),
            ("a", "upstream_timeout"),
            ("b", "ok")
        ])
    );

    // Both broken targets are now out: the next request goes straight to b.
    let a_calls = s.a.state.requests().len();
    assert_eq!(s.ask(None, "y").await.1, "b");
    assert_eq!(
        outcomes(&s.log().await),
        pairs(&[("dead", "circuit_open"), ("a", "circuit_open"), ("b", "ok")])
    );
    assert_eq!(
        s.a.state.requests().len(),
        a_calls,
        "the hanging target was not waited for again"
    );
}

#[tokio::test]
async fn retry_after_from_a_429_takes_the_target_out_for_that_long() {
    let models = r#"
  chain:
    targets: [{provider: a, model: m, weight: 2}, {provider: b, model: m, weight: 1}]
    circuit: {max_fails: 10, fail_timeout: 1s}
"#;
    let mut s = setup(models).await;
    s.a.state.force(Some("fail-429")); // Retry-After: 7
    assert_eq!(s.ask(None, "x").await.1, "b");
    assert_eq!(
        outcomes(&s.log().await),
        pairs(&[("a", "upstream_rate_limited"), ("b", "ok")])
    );
    let a_calls = s.a.state.requests().len();
    assert_eq!(s.ask(None, "y").await.1, "b");
    assert_eq!(
        s.a.state.requests().len(),
        a_calls,
        "a is out although max_fails is far away"
    );
    let a = &s.targets().await["models"]["chain"]["targets"][0];
    assert_eq!(a["state"], "open");

    // With every target out, the client is told when to come back.
    s.b.state.force(Some("fail-429"));
    assert_eq!(s.ask(None, "z").await.0, 429);
    let resp = client()
        .post(s.gw.url("/ai/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"messages": [{"role": "user", "content": "w"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=7).contains(&retry_after), "{retry_after}");
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "no_target_available"
    );
}

#[tokio::test]
async fn only_the_configured_failures_are_retried() {
    let models = r#"
  chain:
    targets: [{provider: a, model: m, weight: 2}, {provider: b, model: m, weight: 1}]
    retry: {on: [connect, timeout]}
  two-of-three:
    targets: [{provider: a, model: n, weight: 3}, {provider: b, model: n, weight: 2}, {provider: c, model: n, weight: 1}]
    retry: {attempts: 2}
"#;
    let mut s = setup(models).await;
    s.a.state.force(Some("fail-500"));
    assert_eq!(
        s.ask(None, "x").await.0,
        502,
        "500 is not in this model's retry list"
    );
    assert!(s.b.state.requests().is_empty());
    s.log().await;

    // The client's own errors are never retried, and do not count against the target.
    s.a.state.force(Some("fail-404"));
    assert_eq!(s.ask(Some("two-of-three"), "x").await.0, 404);
    assert!(s.b.state.requests().is_empty());
    s.log().await;
    let report = s.targets().await;
    assert_eq!(
        report["models"]["two-of-three"]["targets"][0]["consecutive_failures"],
        0
    );

    // The attempt limit holds.
    s.a.state.force(Some("fail-500"));
    s.b.state.force(Some("fail-500"));
    assert_eq!(s.ask(Some("two-of-three"), "x").await.0, 502);
    assert_eq!(
        outcomes(&s.log().await),
        pairs(&[("a", "upstream_error"), ("b", "upstream_error")])
    );
    assert!(s.c.state.requests().is_empty());
}

#[tokio::test]
async fn streams_fail_over_only_before_the_first_byte() {
    let mut s = setup(CHAIN).await;
    let stream = |s: &Setup| {
        client().post(s.gw.url("/ai/v1/chat/completions")).bearer_auth(KEY)
            .json(&json!({"stream": true, "messages": [{"role": "user", "content": "streamed words"}]})).send()
    };
    s.a.state.force(Some("fail-500"));
    let resp = stream(&s).await.unwrap();
    assert_eq!(resp.headers()["x-tollgate-provider"], "b");
    let text = resp.text().await.unwrap();
    assert!(text.contains("streamed ") && text.trim_end().ends_with("[DONE]"));
    assert_eq!(
        outcomes(&s.log().await),
        pairs(&[("a", "upstream_error"), ("b", "ok")])
    );

    // A stream that dies after some chunks is not replayed elsewhere: it ends with an error.
    let fresh = setup(CHAIN).await;
    fresh.a.state.force(Some("die-mid-stream"));
    let resp = stream(&fresh).await.unwrap();
    assert_eq!(resp.headers()["x-tollgate-provider"], "a");
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("partial") && text.contains("upstream_protocol_error"),
        "{text}"
    );
    assert!(
        fresh.b.state.requests().is_empty(),
        "no failover after the first byte"
    );
    let a = &fresh.targets().await["models"]["chain"]["targets"][0];
    assert_eq!(
        a["consecutive_failures"], 1,
        "the broken stream counts against the target"
    );
}

#[tokio::test]
async fn weighted_round_robin_follows_the_weights() {
    let models = r#"
  chain:
    strategy: weighted
    targets: [{provider: a, model: w, weight: 60}, {provider: b, model: w, weight: 30}, {provider: c, model: w, weight: 10}]
"#;
    let s = setup(models).await;
    let mut counts: HashMap<String, u32> = HashMap::new();
    for i in 0..300 {
        let (status, provider, _) = s.ask(None, &format!("r{i}")).await;
        assert_eq!(status, 200);
        *counts.entry(provider).or_default() += 1;
    }
    let share = |p: &str| f64::from(counts.get(p).copied().unwrap_or(0)) / 300.0;
    for (p, want) in [("a", 0.6), ("b", 0.3), ("c", 0.1)] {
        assert!((share(p) - want).abs() <= 0.03, "{p}: {counts:?}");
    }
}

#[tokio::test]
async fn hash_keeps_a_conversation_on_one_target() {
    let models = r#"
  chain:
    strategy: hash
    hash_on: "header:x-session-id"
    targets: [{provider: a, model: h}, {provider: b, model: h}, {provider: c, model: h}]
"#;
    let s = setup(models).await;
    let ask = |session: String| {
        client()
            .post(s.gw.url("/ai/v1/chat/completions"))
            .bearer_auth(KEY)
            .header("x-session-id", session)
            .json(&json!({"messages": [{"role": "user", "content": "x"}]}))
            .send()
    };
    let mut seen = std::collections::HashSet::new();
    for session in 0..12 {
        let mut providers = std::collections::HashSet::new();
        for _ in 0..4 {
            let resp = ask(format!("session-{session}")).await.unwrap();
            providers.insert(
                resp.headers()["x-tollgate-provider"]
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        assert_eq!(
            providers.len(),
            1,
            "session {session} moved between targets"
        );
        seen.extend(providers);
    }
    assert!(seen.len() >= 2, "sessions spread over targets: {seen:?}");
}

#[tokio::test]
async fn least_busy_avoids_the_target_with_a_request_in_flight() {
    let models = r#"
  chain:
    strategy: least-busy
    targets: [{provider: a, model: slow-stream}, {provider: b, model: slow-stream}]
"#;
    let s = setup(models).await;
    let open = || {
        client()
            .post(s.gw.url("/ai/v1/chat/completions"))
            .bearer_auth(KEY)
            .json(&json!({"stream": true, "messages": [{"role": "user", "content": "x"}]}))
            .send()
    };
    let first = open().await.unwrap();
    let second = open().await.unwrap();
    let p1 = first.headers()["x-tollgate-provider"]
        .to_str()
        .unwrap()
        .to_owned();
    let p2 = second.headers()["x-tollgate-provider"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(p1, p2, "the second stream went to the idle target");
}

#[tokio::test]
async fn lowest_latency_prefers_the_faster_target() {
    let models = r#"
  chain:
    strategy: lowest-latency
    targets: [{provider: a, model: lat}, {provider: b, model: lat}]
"#;
    let s = setup(models).await;
    s.a.state.force(Some("slow"));
    let mut last = Vec::new();
    for i in 0..8 {
        let (status, provider, _) = s.ask(None, &format!("q{i}")).await;
        assert_eq!(status, 200);
        last.push(provider);
    }
    assert!(last[3..].iter().all(|p| p == "b"), "{last:?}");
    let report = s.targets().await;
    let latency = |i: usize| {
        report["models"]["chain"]["targets"][i]["latency_ms"]
            .as_f64()
            .unwrap()
    };
    assert!(latency(0) > latency(1), "{report}");
}

#[tokio::test]
async fn no_request_is_lost_or_answered_twice_under_failover() {
    let s = setup(CHAIN).await;
    s.a.state.force(Some("fail-500"));
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let url = s.gw.url("/ai/v1/chat/completions");
            tokio::spawn(async move {
                let resp = client()
                    .post(url)
                    .bearer_auth(KEY)
                    .json(
                        &json!({"messages": [{"role": "user", "content": format!("request-{i}")}]}),
                    )
                    .send()
                    .await
                    .unwrap();
                (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            body["choices"][0]["message"]["content"],
            format!("request-{i}")
        );
    }
    let answered = s.b.state.requests().len() + s.c.state.requests().len();
    assert_eq!(
        answered, 60,
        "each request was answered by exactly one healthy target"
    );
}
