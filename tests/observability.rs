//! Metrics (exact values after a known sequence, bounded labels), the Grafana dashboard's
//! queries against what is really exported, the HTTP log sink through an outage, and payload
//! logging with credentials redacted.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::{TestGateway, client, mock_upstream};

const U: &str = "u-key-12345678";
const V: &str = "v-key-12345678";

fn config(upstream: &str, extra: &str) -> String {
    format!(
        r#"
providers:
  up: {{type: openai, base_url: "{upstream}"}}
models:
  m: {{provider: up, pricing: {{input: 1.0, output: 2.0}}}}
  broken: {{provider: up, model: fail-500}}
  flaky:
    targets: [{{provider: up, model: fail-500, weight: 2}}, {{provider: up, model: m, weight: 1}}]
routes:
  ai: {{}}
consumers:
  u: {{keys: [{U}], models: "*"}}
  v: {{keys: [{V}], models: "*"}}
rate_limits:
  policies:
    v-one:
      consumers: [v]
      limits: [{{requests: 1, per: 1m}}]
prompt_guard:
  deny: ["forbidden"]
{extra}
"#
    )
}

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
                .collect();
            Some((name.to_owned(), labels, value.parse().ok()?))
        })
        .collect()
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

async fn scrape(gw: &TestGateway) -> String {
    gw.metrics().await
}

async fn chat(gw: &TestGateway, key: &str, model: &str, text: &str, stream: bool) -> u16 {
    let body =
        json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]});
    let resp = client()
        .post(gw.url("/ai/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let _ = resp.bytes().await;
    status
}

/// A sequence touching every kind of outcome.
async fn known_sequence(gw: &mut TestGateway) {
    assert_eq!(chat(gw, U, "m", "a b", false).await, 200);
    assert_eq!(chat(gw, U, "m", "a b", false).await, 200);
    assert_eq!(chat(gw, U, "m", "c d e", true).await, 200);
    assert_eq!(chat(gw, V, "m", "x", false).await, 200);
    assert_eq!(chat(gw, V, "m", "y", false).await, 429);
    assert_eq!(chat(gw, "wrong-key-1234", "m", "x", false).await, 401);
    assert_eq!(chat(gw, U, "m", "this is forbidden", false).await, 400);
    assert_eq!(chat(gw, U, "broken", "x", false).await, 502);
    assert_eq!(chat(gw, U, "random-garbage-123", "x", false).await, 404);
    for _ in 0..9 {
        gw.next_log().await; // every request is finished (streams log at their end)
    }
}

#[tokio::test]
async fn metrics_after_a_known_sequence_are_exact() {
    let up = mock_upstream::start().await;
    let mut gw = TestGateway::start(&config(&up.base_url(), "")).await;
    known_sequence(&mut gw).await;
    let text = scrape(&gw).await;
    let s = parse(&text);
    let requests = |consumer: &str, model: &str, provider: &str, class: &str| {
        value(
            &s,
            "tollgate_requests_total",
            &[
                ("route", "ai"),
                ("consumer", consumer),
                ("model", model),
                ("provider", provider),
                ("status_class", class),
            ],
        )
    };
    assert_eq!(requests("u", "m", "up", "2xx"), 3.0);
    assert_eq!(requests("v", "m", "up", "2xx"), 1.0);
    assert_eq!(
        requests("v", "m", "none", "4xx"),
        1.0,
        "the refused request never got a provider"
    );
    assert_eq!(requests("anonymous", "none", "none", "4xx"), 1.0);
    assert_eq!(requests("u", "m", "none", "4xx"), 1.0, "guard");
    assert_eq!(requests("u", "broken", "up", "5xx"), 1.0);
    assert_eq!(requests("u", "unknown", "none", "4xx"), 1.0);
    assert!(
        !text.contains("random-garbage"),
        "client-supplied values never become labels"
    );
    assert_eq!(value(&s, "tollgate_requests_total", &[]), 9.0);

    let usage = [("provider", "up"), ("model", "m"), ("consumer", "u")];
    assert_eq!(value(&s, "ai_llm_requests_total", &usage), 3.0);
    assert_eq!(
        value(&s, "ai_llm_prompt_tokens_total", &usage),
        7.0,
        "2 + 2 + 3, the stream included"
    );
    assert_eq!(value(&s, "ai_llm_completion_tokens_total", &usage), 7.0);
    assert_eq!(value(&s, "ai_llm_tokens_total", &usage), 14.0);
    assert_eq!(
        value(
            &s,
            "tollgate_tokens_total",
            &[("consumer", "u"), ("type", "prompt")]
        ),
        7.0
    );
    assert_eq!(
        value(
            &s,
            "tollgate_tokens_total",
            &[("consumer", "u"), ("type", "cached")]
        ),
        0.0
    );
    assert!(
        (value(&s, "ai_llm_estimated_cost_usd", &usage) - 21e-6).abs() < 1e-12,
        "7 × $1 + 7 × $2 per million"
    );
    assert!((value(&s, "tollgate_cost_usd_total", &usage) - 21e-6).abs() < 1e-12);
    assert_eq!(
        value(&s, "ai_llm_requests_total", &[("consumer", "v")]),
        1.0
    );

    assert_eq!(
        value(&s, "tollgate_rate_limited_total", &[("consumer", "v")]),
        1.0
    );
    assert_eq!(
        value(&s, "tollgate_guard_blocked_total", &[("consumer", "u")]),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "tollgate_request_duration_seconds_count",
            &[("model", "m"), ("provider", "up")]
        ),
        4.0
    );
    assert_eq!(
        value(
            &s,
            "tollgate_time_to_first_token_seconds_count",
            &[("model", "m")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "tollgate_time_per_output_token_seconds_count",
            &[("model", "m")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &s,
            "tollgate_upstream_duration_seconds_count",
            &[("model", "m")]
        ),
        4.0
    );
    assert_eq!(
        value(&s, "tollgate_gateway_overhead_seconds_count", &[]),
        9.0
    );
    assert_eq!(value(&s, "tollgate_active_streams", &[]), 0.0);
    assert!(value(&s, "tollgate_request_bytes_total", &[("consumer", "u")]) > 0.0);
    assert!(
        value(
            &s,
            "tollgate_response_bytes_total",
            &[("consumer", "u"), ("provider", "up")]
        ) > 0.0
    );
    assert_eq!(
        value(
            &s,
            "tollgate_target_circuit_state",
            &[("model", "fail-500")]
        ),
        0.0
    );

    // OpenMetrics on request.
    let resp = client()
        .get(format!("http://{}/metrics", gw.status_addr))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(resp.text().await.unwrap().trim_end().ends_with("# EOF"));
}

#[tokio::test]
async fn reloads_are_counted() {
    let up = mock_upstream::start().await;
    let gw = TestGateway::start(&config(&up.base_url(), "")).await;
    gw.rewrite_config("providers: {broken");
    for _ in 0..50 {
        if value(
            &parse(&scrape(&gw).await),
            "tollgate_config_reloads_total",
            &[("result", "failure")],
        ) == 1.0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the failed reload was not counted:\n{}",
        scrape(&gw)
            .await
            .lines()
            .filter(|l| l.contains("reload"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Every metric name and label a PromQL expression mentions.
fn referenced(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let names = regex::Regex::new(r"\b((?:tollgate|ai_llm)_[a-z0-9_]+)").unwrap();
    let in_braces = regex::Regex::new(r"\{([^}]*)\}").unwrap();
    let by = regex::Regex::new(r"\b(?:by|without)\s*\(([^)]*)\)").unwrap();
    let label = regex::Regex::new(r"([a-z_]+)\s*(?:=~|!=|!~|=)").unwrap();
    let metrics = names.captures_iter(expr).map(|c| c[1].to_owned()).collect();
    let mut labels = BTreeSet::new();
    for c in in_braces.captures_iter(expr) {
        labels.extend(label.captures_iter(&c[1]).map(|l| l[1].to_owned()));
    }
    for c in by.captures_iter(expr) {
        labels.extend(
            c[1].split(',')
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty()),
        );
    }
    (metrics, labels)
}

fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| exprs(i, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_dashboard_query_uses_only_exported_metrics_and_labels() {
    let up = mock_upstream::start().await;
    let sink = "log:\n  http: {url: \"http://127.0.0.1:9/ingest\", retries: 0}";
    let mut gw = TestGateway::start(&config(&up.base_url(), sink)).await;
    known_sequence(&mut gw).await;
    assert_eq!(
        chat(&gw, U, "flaky", "x", false).await,
        200,
        "a failover, for the routing panels"
    );
    gw.rewrite_config("providers: {broken");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let samples = parse(&scrape(&gw).await);
    let mut exported: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (name, labels, _) in &samples {
        exported
            .entry(name.clone())
            .or_default()
            .extend(labels.keys().cloned());
    }

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/tollgate-dashboard.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut all = Vec::new();
    exprs(&dashboard, &mut all);
    assert!(all.len() >= 25, "the dashboard has its queries");
    for expr in &all {
        let (metrics, labels) = referenced(expr);
        assert!(!metrics.is_empty(), "no metric in {expr}");
        for m in &metrics {
            let known = exported
                .get(m)
                .unwrap_or_else(|| panic!("{m} (in `{expr}`) is not exported"));
            for l in &labels {
                let with_le = l == "le" && m.ends_with("_bucket");
                assert!(
                    known.contains(l) || with_le,
                    "label {l} of {m} (in `{expr}`) is not exported; it has {known:?}"
                );
            }
        }
    }
    // The seed dashboard's metric names are among them.
    for seed in [
        "ai_llm_requests_total",
        "ai_llm_prompt_tokens_total",
        "ai_llm_completion_tokens_total",
        "ai_llm_tokens_total",
        "ai_llm_estimated_cost_usd",
    ] {
        assert!(exported.contains_key(seed), "{seed}");
    }
}

/// A log receiver that can go down and come back on the same port.
struct Receiver {
    addr: SocketAddr,
    batches: Arc<Mutex<Vec<Vec<Value>>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Receiver {
    async fn start(addr: SocketAddr, batches: Arc<Mutex<Vec<Vec<Value>>>>) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let store = batches.clone();
        let app = axum::Router::new().route(
            "/ingest",
            axum::routing::post(move |axum::Json(batch): axum::Json<Vec<Value>>| {
                let store = store.clone();
                async move {
                    store.lock().unwrap().push(batch);
                    "ok"
                }
            }),
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
        });
        Receiver {
            addr,
            batches,
            stop: Some(tx),
        }
    }

    fn received(&self) -> usize {
        self.batches.lock().unwrap().iter().map(Vec::len).sum()
    }

    fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

async fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn the_http_sink_batches_stays_bounded_while_down_and_recovers() {
    let up = mock_upstream::start().await;
    let batches = Arc::new(Mutex::new(Vec::new()));
    let mut receiver = Receiver::start("127.0.0.1:0".parse().unwrap(), batches.clone()).await;
    let extra = format!(
        "log:\n  http: {{url: \"http://{}/ingest\", batch_size: 5, flush_interval: 200ms, queue: 20, retries: 1, timeout: 1s}}",
        receiver.addr
    );
    let gw = TestGateway::start(&config(&up.base_url(), &extra)).await;
    let models = || client().get(gw.url("/ai/v1/models")).bearer_auth(U).send();
    for _ in 0..12 {
        models().await.unwrap();
    }
    assert!(
        wait_for(|| receiver.received() == 12).await,
        "got {}",
        receiver.received()
    );
    let sizes: Vec<usize> = batches.lock().unwrap().iter().map(Vec::len).collect();
    assert!(
        sizes.iter().all(|n| *n <= 5) && sizes.len() >= 3,
        "batched: {sizes:?}"
    );
    assert_eq!(batches.lock().unwrap()[0][0]["endpoint"], "models");

    // Down: the queue stays bounded and the overflow is dropped and counted.
    receiver.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..80 {
        models().await.unwrap();
    }
    let s = parse(&scrape(&gw).await);
    assert!(value(&s, "tollgate_log_sink_queue_depth", &[("sink", "http")]) <= 20.0);
    assert!(
        value(&s, "tollgate_log_sink_dropped_total", &[("sink", "http")]) >= 50.0,
        "{}",
        value(&s, "tollgate_log_sink_dropped_total", &[])
    );

    // Back: records flow again.
    let before = receiver.received();
    let receiver = Receiver::start(receiver.addr, batches.clone()).await;
    for _ in 0..3 {
        models().await.unwrap();
    }
    assert!(wait_for(|| receiver.received() >= before + 3).await);
}

#[tokio::test]
async fn payload_logging_is_off_by_default_and_redacts_credentials() {
    let up = mock_upstream::start().await;
    let cfg = config(&up.base_url(), "").replace(
        "routes:\n  ai: {}",
        "routes:\n  ai: {log_payloads: true}\n  plain: {}",
    );
    let mut gw = TestGateway::start(&cfg).await;
    let body = json!({"model": "m", "api_key": "should-not-appear", "messages": [{"role": "user", "content": "my key is sk-proj-abcdefghijklmnop"}]});
    client()
        .post(gw.url("/ai/v1/chat/completions"))
        .bearer_auth(U)
        .json(&body)
        .send()
        .await
        .unwrap();
    let log = gw.next_log().await;
    let logged = serde_json::to_string(&log).unwrap();
    assert!(
        !logged.contains("should-not-appear") && !logged.contains("sk-proj-abc"),
        "{logged}"
    );
    let request = log.request_body.expect("payload logged");
    assert_eq!(request["model"], "m");
    assert_eq!(
        log.response_body.unwrap()["choices"][0]["message"]["content"],
        "my key is [REDACTED]"
    );

    client()
        .post(gw.url("/plain/v1/chat/completions"))
        .bearer_auth(U)
        .json(&body)
        .send()
        .await
        .unwrap();
    let log = gw.next_log().await;
    assert!(log.request_body.is_none() && log.response_body.is_none());
}

#[tokio::test]
async fn traces_follow_the_genai_conventions_with_attempts_as_child_spans() {
    let up = mock_upstream::start().await;
    let spans: Arc<Mutex<Vec<Value>>> = Arc::default();
    let store = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let store = store.clone();
            async move {
                for rs in body["resourceSpans"].as_array().into_iter().flatten() {
                    for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                        store
                            .lock()
                            .unwrap()
                            .extend(ss["spans"].as_array().into_iter().flatten().cloned());
                    }
                }
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let extra = format!(
        "traces: {{endpoint: \"http://{collector}\", protocol: http/json, flush_interval: 100ms}}"
    );
    let gw = TestGateway::start(&config(&up.base_url(), &extra)).await;

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = client()
        .post(gw.url("/ai/v1/chat/completions"))
        .bearer_auth(U)
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"model": "flaky", "messages": [{"role": "user", "content": "a b c"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        wait_for(|| spans.lock().unwrap().len() >= 3).await,
        "spans reach the collector"
    );

    let spans = spans.lock().unwrap().clone();
    let attr = |span: &Value, key: &str| -> Value {
        span["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| a["value"].clone())
            .unwrap_or(Value::Null)
    };
    let server = spans
        .iter()
        .find(|s| s["name"] == "chat flaky")
        .expect("a server span named after the operation and model");
    assert_eq!(
        server["traceId"].as_str().unwrap().to_lowercase(),
        trace_id,
        "the client's trace is continued"
    );
    assert_eq!(attr(server, "gen_ai.operation.name")["stringValue"], "chat");
    assert_eq!(attr(server, "gen_ai.request.model")["stringValue"], "flaky");
    assert_eq!(attr(server, "gen_ai.usage.input_tokens")["intValue"], "3");
    let children: Vec<&Value> = spans
        .iter()
        .filter(|s| s["parentSpanId"] == server["spanId"])
        .collect();
    assert_eq!(children.len(), 2, "one client span per upstream attempt");
    assert!(
        children
            .iter()
            .any(|c| attr(c, "error.type")["stringValue"] == "upstream_error")
    );
    let answered = children.iter().find(|c| c["name"] == "chat m").unwrap();
    assert_eq!(
        attr(answered, "gen_ai.provider.name")["stringValue"],
        "openai"
    );
    assert_eq!(
        attr(answered, "gen_ai.usage.output_tokens")["intValue"],
        "3"
    );
}
