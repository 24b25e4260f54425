//! What a hostile or careless client or upstream can do to the gateway, and what it must
//! not achieve: stall it, exhaust its connections or memory, or read a provider key.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{TestGateway, client, mock_upstream, standard_config};

/// The tests that load both cores (huge prompts, 100k-consumer reloads) run one at a time:
/// each measures latency or memory that the others would disturb.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Short client timeouts so the tests see them fire.
const SHORT_TIMEOUTS: &str =
    "limits: {header_read_timeout: 1s, body_read_timeout: 1s, keepalive_idle: 2s}\n";

async fn with_short_timeouts(upstream: &mock_upstream::MockUpstream) -> TestGateway {
    TestGateway::start(&format!(
        "{SHORT_TIMEOUTS}{}",
        standard_config(&upstream.base_url())
    ))
    .await
}

/// The status of a plain models request: the gateway still answers others.
async fn models_status(gw: &TestGateway) -> u16 {
    client()
        .get(gw.url("/ollama/v1/models"))
        .header("apikey", "dev-key-12345")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Reads until the peer closes (or `within` passes); returns what came and whether it closed.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_request_head_sent_byte_by_byte_is_cut_off() {
    let upstream = mock_upstream::start().await;
    let gw = with_short_timeouts(&upstream).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let started = Instant::now();
    let head = b"GET /ollama/v1/models HTTP/1.1\r\nHost: x\r\napikey: dev-key-12345\r\n\r\n";
    let mut closed_after = None;
    for byte in head {
        if stream.write_all(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await
        {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("a 1-byte-per-150ms head was never cut off");
    assert!(
        closed_after < Duration::from_secs(3),
        "cut after {closed_after:?}"
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let upstream = mock_upstream::start().await;
    let gw = with_short_timeouts(&upstream).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert!(
        closed,
        "an idle new connection is closed after header_read_timeout"
    );
}

#[tokio::test]
async fn a_body_that_never_ends_gets_408_and_the_connection_closes() {
    let upstream = mock_upstream::start().await;
    let mut gw = with_short_timeouts(&upstream).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(
            b"POST /ollama/v1/chat/completions HTTP/1.1\r\nHost: x\r\napikey: dev-key-12345\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"mod\r\n",
        )
        .await
        .unwrap();
    // One more byte every 300 ms: the body never completes.
    let writer = tokio::spawn(async move {
        for _ in 0..20 {
            if stream.write_all(b"1\r\na\r\n").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        stream
    });
    let mut stream = writer.await.unwrap();
    let (answer, closed) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(closed, "the connection is closed after a body timeout");
    let record = gw.next_log().await;
    assert_eq!(record.status, 408);
    assert_eq!(record.error, Some("body_timeout"));
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off() {
    let upstream = mock_upstream::start().await;
    let gw = TestGateway::start(&format!(
        "limits: {{send_timeout: 1s}}\n{}",
        standard_config(&upstream.base_url())
    ))
    .await;
    // A small receive window, and an answer (the mock's echo of a 12 MB prompt) far larger
    // than what the socket buffers between them hold.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(gw.addr).await.unwrap();
    let body = json!({"model": "llama3.2:1b", "messages": [{"role": "user", "content": "echo ".repeat(2_400_000)}]}).to_string();
    let head = format!(
        "POST /ollama/v1/chat/completions HTTP/1.1\r\nHost: x\r\napikey: dev-key-12345\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    // Not reading: past send_timeout the gateway gives up on the answer and closes.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let started = Instant::now();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n,
            Err(_) => panic!("the connection was not closed ({got} bytes read)"),
        }
    }
    assert!(got < body.len(), "the whole answer came ({got} bytes)");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Other clients are served meanwhile and after.
    assert_eq!(models_status(&gw).await, 200);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not() {
    let upstream = mock_upstream::start().await;
    let gw = with_short_timeouts(&upstream).await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    // A stream that lasts ~3 s (longer than every client timer) is not cut.
    let body = json!({"model": "slow-stream", "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let request = format!(
        "POST /ollama/v1/chat/completions HTTP/1.1\r\nHost: x\r\napikey: admin-key-12345\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while !String::from_utf8_lossy(&got).contains("data: [DONE]") {
        let n = tokio::time::timeout(Duration::from_secs(6), stream.read(&mut buf))
            .await
            .expect("the stream stalled")
            .unwrap();
        assert!(n > 0, "the connection closed mid-stream");
        got.extend_from_slice(&buf[..n]);
    }
    // Now idle: closed after keepalive_idle (2 s), not before 1 s.
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed);
    let idle = started.elapsed();
    assert!(
        idle > Duration::from_millis(1500) && idle < Duration::from_secs(4),
        "{idle:?}"
    );
}

#[tokio::test]
async fn half_open_connections_do_not_stop_health_or_requests() {
    let upstream = mock_upstream::start().await;
    // The default timeouts (10 s head): the flood stays open while we check.
    let gw = TestGateway::start(&standard_config(&upstream.base_url())).await;
    let mut flood = Vec::new();
    for _ in 0..1100 {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(b"POST /ollama/v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        flood.push(s);
    }
    let started = Instant::now();
    let health = client()
        .get(format!("http://{}/health", gw.status_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let chat = client()
        .post(gw.url("/ollama/v1/chat/completions"))
        .header("apikey", "dev-key-12345")
        .json(&json!({"model": "llama3.2:1b", "messages": [{"role": "user", "content": "still here"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(flood);
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_get_503() {
    let upstream = mock_upstream::start().await;
    // Three proxy threads accept on the port: the cap is the listener's, not each thread's.
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("tollgate.yaml");
    std::fs::write(
        &config_path,
        format!(
            "listen: {{proxy: 127.0.0.1:0, status: 127.0.0.1:0, proxy_threads: 3}}\nlimits: {{max_connections: 20}}\n{}",
            standard_config(&upstream.base_url())
        ),
    )
    .unwrap();
    let gw = TestGateway::start_from(config_path, dir).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(gw.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(gw.addr).await.unwrap();
    let (answer, closed) = read_until_closed(&mut extra, Duration::from_secs(2)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too_many_connections"), "{answer}");
    assert!(closed);
    // The status listener has its own allowance.
    let health = client()
        .get(format!("http://{}/health", gw.status_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // Once connections go, new ones are served again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(models_status(&gw).await, 200);
}

#[tokio::test]
async fn a_request_abandoned_before_the_answer_is_logged_and_counted() {
    let upstream = mock_upstream::start().await;
    let mut gw = TestGateway::start(&standard_config(&upstream.base_url())).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let sent = impatient
        .post(gw.url("/ollama/v1/chat/completions"))
        .header("apikey", "admin-key-12345")
        .json(&json!({"model": "hang", "messages": [{"role": "user", "content": "hello?"}]}))
        .send()
        .await;
    assert!(sent.is_err(), "the client gave up");
    let record = gw.next_log().await;
    assert!(record.client_disconnected);
    assert_eq!(record.status, 499);
    assert_eq!(record.error, Some("client_disconnected"));
    assert_eq!(record.consumer.as_deref(), Some("admin-user"));
    assert_eq!(record.model.as_deref(), Some("hang"));
    let metrics = gw.metrics().await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("tollgate_client_disconnects_total") && l.contains("admin-user"))
        .unwrap_or_else(|| panic!("no disconnect in the metrics:\n{metrics}"));
    assert!(line.ends_with(" 1"), "{line}");
}

#[tokio::test]
async fn provider_keys_in_mid_stream_errors_reach_neither_client_nor_log() {
    const OPENAI_KEY: &str = "sk-upstream-openai-0123456789abcdef";
    const ANTHROPIC_KEY: &str = "sk-ant-upstream-0123456789abcdef";
    const GEMINI_KEY: &str = "AIzaUpstreamGemini0123456789abcdef";
    let up = mock_upstream::start().await;
    let addr = up.addr;
    let mut gw = TestGateway::start(&format!(
        r#"
providers:
  oai: {{type: openai, base_url: "http://{addr}/v1", api_key: {OPENAI_KEY}}}
  claude: {{type: anthropic, base_url: "http://{addr}", api_key: {ANTHROPIC_KEY}}}
  google: {{type: gemini, base_url: "http://{addr}/v1beta", api_key: {GEMINI_KEY}}}
models:
  via-openai: {{provider: oai, model: leak-key-mid-stream}}
  via-anthropic: {{provider: claude, model: leak-key-mid-stream}}
  via-gemini: {{provider: google, model: leak-key-mid-stream}}
routes:
  ai: {{}}
consumers:
  u: {{keys: [user-key-12345], models: "*"}}
"#
    ))
    .await;
    for model in ["via-openai", "via-anthropic", "via-gemini"] {
        let answer = client()
            .post(gw.url("/ai/v1/chat/completions"))
            .bearer_auth("user-key-12345")
            .json(&json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hello there"}]}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let record = gw.next_log().await;
        let logged = serde_json::to_string(&record).unwrap();
        for key in [OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY] {
            // Neither the key nor the fragments an upstream may quote.
            for fragment in [key, &key[..8], &key[key.len() - 8..]] {
                assert!(
                    !answer.contains(fragment),
                    "{model}: the client got {fragment:?}:\n{answer}"
                );
                assert!(
                    !logged.contains(fragment),
                    "{model}: the log got {fragment:?}:\n{logged}"
                );
            }
        }
        assert!(
            answer.contains("***"),
            "{model}: the error still says what happened:\n{answer}"
        );
        assert!(record.error.is_some(), "{model}: {logged}");
        assert!(
            record
                .error_message
                .as_deref()
                .is_some_and(|m| m.contains("***")),
            "{model}: {logged}"
        );
    }
}

#[tokio::test]
async fn an_endless_upstream_event_line_is_cut_with_a_clear_error() {
    use axum::body::{Body, Bytes};
    // An upstream that answers a stream with one line that never ends.
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|| async {
            let chunks = futures_util::stream::iter(
                (0..40_000)
                    .map(|_| Ok::<_, std::convert::Infallible>(Bytes::from(vec![b'x'; 1024]))),
            );
            axum::response::Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(chunks))
                .unwrap()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut gw = TestGateway::start(&format!(
        r#"
providers:
  endless: {{type: openai, base_url: "http://{addr}/v1", timeouts: {{idle: 30s, first_byte: 30s}}}}
models:
  m: {{provider: endless}}
routes:
  ai: {{}}
consumers:
  u: {{keys: [user-key-12345], models: "*"}}
"#
    ))
    .await;
    let started = Instant::now();
    let response = client()
        .post(gw.url("/ai/v1/chat/completions"))
        .bearer_auth("user-key-12345")
        .json(
            &json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .send()
        .await
        .unwrap();
    // Nothing was sent to the client yet, so the error is a plain 502 response.
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("longer than"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let record = gw.next_log().await;
    assert_eq!(record.error, Some("upstream_protocol_error"));
}

/// A gateway with every layer that reads the prompt on: a token limit and a prompt guard.
fn prompt_reading_config(upstream: &str) -> String {
    format!(
        r#"
providers:
  up: {{type: openai, base_url: "{upstream}", api_key: sk-upstream-key-0123456789}}
models:
  m: {{provider: up}}
routes:
  ai: {{}}
prompt_guard:
  deny: ['(?i)ignore\s+previous\s+instructions']
rate_limits:
  policies:
    budget:
      limits: [{{tokens: 1000000000, per: 1m}}]
consumers:
  u: {{keys: [user-key-12345], models: "*"}}
"#
    )
}

/// Peak memory of one request stays within a small constant of its body. The body is the
/// worst shape for a JSON tree: 400,000 tiny messages (13.6 MB, ~34 bytes each).
#[tokio::test]
async fn many_tiny_messages_cost_a_small_constant_of_their_body() {
    /// The factor stated in the README: peak growth ≤ 6 × the body.
    const FACTOR: u64 = 6;
    let _heavy = HEAVY.lock().await;
    let upstream = mock_upstream::start().await;
    let gw = support::GatewayProcess::start(&prompt_reading_config(&upstream.base_url())).await;
    let messages: Vec<Value> = (0..400_000)
        .map(|_| json!({"role": "user", "content": "hi"}))
        .collect();
    let body = json!({"model": "m", "messages": messages}).to_string();
    let size = body.len() as u64;
    // Warm up (connection pools, first allocations), then measure from here.
    let ask = |body: String| {
        client()
            .post(gw.url("/ai/v1/chat/completions"))
            .bearer_auth("user-key-12345")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(
        ask(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string())
            .await
            .unwrap()
            .status(),
        200
    );
    let before = gw.memory("VmRSS");
    gw.reset_peak();
    let answer = ask(body).await.unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    let peak = gw.memory("VmHWM");
    let growth = peak.saturating_sub(before);
    eprintln!(
        "body {size} B, RSS before {before} B, peak {peak} B: growth {:.2} × the body",
        growth as f64 / size as f64
    );
    assert!(
        growth <= FACTOR * size,
        "peak grew by {growth} B for a {size} B body (over {FACTOR}×)"
    );
    // And the memory goes back as traffic goes on (the allocator returns freed pages lazily,
    // as the threads that freed them allocate again).
    let small = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let mut after = gw.memory("VmRSS");
    for _ in 0..50 {
        if after <= before + size / 2 {
            break;
        }
        assert_eq!(ask(small.clone()).await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = gw.memory("VmRSS");
    }
    eprintln!("RSS after {after} B");
    assert!(
        after <= before + size / 2,
        "RSS stayed at {after} B after the request (before: {before} B)"
    );
}

/// A prompt whose cost grows with its size runs off the async workers: unrelated requests
/// keep answering promptly meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pathological_prompt_does_not_stall_other_requests() {
    let _heavy = HEAVY.lock().await;
    let upstream = mock_upstream::start_on_own_runtime().await;
    let gw = support::GatewayProcess::start(&prompt_reading_config(&upstream.base_url())).await;
    let huge = "a".repeat(15_000_000);
    let spaceless = "x".repeat(7_000_000) + &"é".repeat(3_000_000);
    let heavy: Vec<_> = [huge, spaceless]
        .into_iter()
        .map(|text| {
            let body =
                json!({"model": "m", "messages": [{"role": "user", "content": text}]}).to_string();
            let url = gw.url("/ai/v1/chat/completions");
            tokio::spawn(async move {
                client()
                    .post(url)
                    .bearer_auth("user-key-12345")
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    let probe = client();
    let mut worst = Duration::ZERO;
    let mut probes = 0;
    while heavy.iter().any(|h| !h.is_finished()) && probes < 200 {
        let started = Instant::now();
        let models = probe
            .get(gw.url("/ai/v1/models"))
            .bearer_auth("user-key-12345")
            .send()
            .await
            .unwrap();
        assert_eq!(models.status(), 200);
        worst = worst.max(started.elapsed());
        probes += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for h in heavy {
        assert_eq!(h.await.unwrap().unwrap(), 200);
    }
    eprintln!("{probes} probes while the heavy prompts ran; slowest {worst:?}");
    assert!(probes > 0);
    // Before: 32 s. Generous for a debug build on 2 shared, noisy cores (measured ~7 ms).
    assert!(worst < Duration::from_secs(1), "slowest probe {worst:?}");
}

/// A trusted front end restricted with `acts_for` cannot borrow the rights of users outside
/// those groups: naming the admin gets it its own rights only.
#[tokio::test]
async fn a_trusted_front_end_acts_only_for_the_groups_it_is_given() {
    let upstream = mock_upstream::start().await;
    let config = standard_config(&upstream.base_url()).replace(
        "    trust_user_header: true\n",
        "    trust_user_header: {header: X-OpenWebUI-User-Email, acts_for: [devs]}\n",
    );
    let mut gw = TestGateway::start(&config).await;
    let models_as = |email: &'static str| {
        let url = gw.url("/ollama/v1/models");
        async move {
            let body: Value = client()
                .get(url)
                .bearer_auth("openwebui-key-12345")
                .header("X-OpenWebUI-User-Email", email)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let mut ids: Vec<String> = body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned())
                .collect();
            ids.sort();
            ids
        }
    };
    // A developer: their own models.
    assert_eq!(
        models_as("dev@example.com").await,
        ["llama3.2:1b", "qwen2.5-coder:1.5b"]
    );
    // The admin is not in `devs`: only what the front end itself may use.
    assert_eq!(models_as("admin@example.com").await, ["llama3.2:1b"]);
    let chat = client()
        .post(gw.url("/ollama/v1/chat/completions"))
        .bearer_auth("openwebui-key-12345")
        .header("X-OpenWebUI-User-Email", "admin@example.com")
        .json(&json!({"model": "gemma3:1b", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 403);
    // The log still says who was named.
    let mut record = gw.next_log().await;
    while record.endpoint != Some("chat") {
        record = gw.next_log().await;
    }
    assert_eq!(record.end_user.as_deref(), Some("admin@example.com"));
    assert_eq!(record.consumer.as_deref(), Some("openwebui"));
    // An unknown group in `acts_for` is a config error with its location.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        config.replace("acts_for: [devs]", "acts_for: [nobody]"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("acts_for[0]: unknown group \"nobody\""),
        "{stderr}"
    );
}

/// A guard whose patterns are valid but cannot be compiled within its budget is refused by `check`, at
/// start and on reload; it never runs silently off.
#[tokio::test]
async fn a_guard_that_cannot_be_compiled_refuses_the_config() {
    let upstream = mock_upstream::start().await;
    let good = standard_config(&upstream.base_url());
    // Valid syntax, but far over the set's compile budget.
    let heavy = r#"prompt_guard: {deny: ['(?i)ignore\s+previous\s+instructions', '\w{3000}x']}"#;
    let bad = format!("{heavy}\n{good}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("guard.yaml");
    std::fs::write(&path, format!("{}{bad}", support::TEST_LISTEN)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check accepted it: {stderr}");
    assert!(
        stderr.contains("guard.yaml:2:1: prompt_guard: the prompt guard cannot be compiled"),
        "{stderr}"
    );
    // Start-up refuses it too.
    let started =
        tollgate::Gateway::bind(&path, tollgate::telemetry::request_log::LogSink::Stdout).await;
    assert!(started.is_err());
    // A running gateway keeps its guard (and config) when a reload brings the broken one.
    let gw = TestGateway::start(&good).await;
    gw.rewrite_config(&bad);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let models = client()
        .get(gw.url("/ollama/v1/models"))
        .bearer_auth("dev-key-12345")
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
}

/// A config of 100,000 consumers, reloaded three times while requests run: requests are not
/// held up by the compile (it runs off the async workers, and the old snapshot is freed off
/// them too), and memory after the reloads is the memory of one config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_100k_consumers_under_load_stalls_nothing_and_keeps_memory_flat() {
    let _heavy = HEAVY.lock().await;
    let mut yaml = String::from(
        "log: {requests: off}\nreload: {watch_file: false}\nproviders:\n  demo: {type: mock}\nmodels:\n  echo: {provider: demo}\nroutes:\n  ai: {}\ngroups:\n  users: {models: [echo]}\nconsumers:\n",
    );
    for i in 0..100_000 {
        yaml.push_str(&format!(
            "  user-{i}: {{keys: [key-{i:08}-abcdef], groups: [users], emails: [user{i}@example.com]}}\n"
        ));
    }
    let started = Instant::now();
    let gw = support::GatewayProcess::start(&yaml).await;
    eprintln!(
        "100k consumers: started in {:?}, RSS {} MiB",
        started.elapsed(),
        gw.memory("VmRSS") >> 20
    );
    let pid = gw.child.0.id().to_string();
    let probe = client();
    let ask = || {
        probe
            .get(gw.url("/ai/v1/models"))
            .bearer_auth("key-00099999-abcdef")
            .send()
    };
    assert_eq!(ask().await.unwrap().status(), 200);
    let mut after_first = 0;
    let mut worst = Duration::ZERO;
    for reload in 0..3 {
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap();
        // Probe through the reload, until the gateway counts it done.
        let until = Instant::now() + Duration::from_secs(60);
        while reloads_done(&gw).await < reload + 1 {
            assert!(
                Instant::now() < until,
                "reload {} did not finish",
                reload + 1
            );
            let t = Instant::now();
            assert_eq!(ask().await.unwrap().status(), 200);
            worst = worst.max(t.elapsed());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The old snapshot is freed within ~100 ms of the swap; give the allocator a moment.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = gw.memory("VmRSS");
        eprintln!("after reload {}: RSS {} MiB", reload + 1, rss >> 20);
        if reload == 0 {
            after_first = rss;
        }
    }
    let last = gw.memory("VmRSS");
    eprintln!("slowest request during the reloads: {worst:?}");
    assert!(
        last <= after_first + after_first / 2,
        "memory grew with reloads: {} MiB after one, {} MiB after three",
        after_first >> 20,
        last >> 20
    );
    // Generous for a debug build on 2 shared cores; before, requests stalled 4.5-6.9 s.
    assert!(worst < Duration::from_millis(500), "slowest {worst:?}");
}

/// Successful reloads so far, from the gateway's metrics.
async fn reloads_done(gw: &support::GatewayProcess) -> u64 {
    let metrics = support::scrape_metrics(gw.status_addr).await;
    metrics
        .lines()
        .find(|l| l.starts_with("tollgate_config_reloads_total") && l.contains("success"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
