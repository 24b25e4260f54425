//! Connections to a plain-HTTP upstream: kept and reused across requests (whole and streamed),
//! given up when the upstream closes them or when an answer was not read to its end, and
//! none of that ever fails a request. The upstream here is a bare TCP server speaking
//! HTTP/1.1 as OpenAI's API does, so that it can count connections and close them at will.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{TestGateway, client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy)]
enum Manner {
    /// Keeps each connection open for the next request.
    KeepAlive,
    /// Closes each connection right after its answer (as a server whose keep-alive timeout
    /// is about to end does), without saying so in the answer.
    CloseAfterAnswer,
}

struct Upstream {
    base_url: String,
    connections: Arc<AtomicUsize>,
}

const COMPLETION: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"pong"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;

/// A stream of `chunks` events, 20 ms apart, ending with usage and `[DONE]`.
fn stream_events(chunks: usize) -> Vec<String> {
    let mut events: Vec<String> = (0..chunks)
        .map(|i| format!(r#"data: {{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{{"index":0,"delta":{{"content":"w{i} "}},"finish_reason":null}}]}}"#))
        .collect();
    events.push(r#"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#.into());
    events.push(r#"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#.into());
    events.push("data: [DONE]".into());
    events
}

async fn start_upstream(manner: Manner) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(socket, manner));
        }
    });
    Upstream {
        base_url: format!("http://{addr}/v1"),
        connections,
    }
}

/// Serves requests on one connection until the client closes it (or `manner` says to).
async fn serve(mut socket: TcpStream, manner: Manner) {
    let mut buf = Vec::new();
    loop {
        let Some(body) = read_request(&mut socket, &mut buf).await else {
            return;
        };
        let request: Value = serde_json::from_slice(&body).unwrap_or_default();
        let written = if request["stream"] == true {
            let mut head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_owned().into_bytes();
            let mut result = socket.write_all(&head).await;
            for event in stream_events(5) {
                let event = format!("{event}\n\n");
                head = format!("{:x}\r\n{event}\r\n", event.len()).into_bytes();
                tokio::time::sleep(Duration::from_millis(20)).await;
                result = result.and(socket.write_all(&head).await);
            }
            result.and(socket.write_all(b"0\r\n\r\n").await)
        } else {
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{COMPLETION}",
                COMPLETION.len()
            );
            socket.write_all(answer.as_bytes()).await
        };
        if written.is_err() {
            return;
        }
        if let Manner::CloseAfterAnswer = manner {
            return;
        }
    }
}

/// One request's body (the head is read up to its blank line, the body by its length).
async fn read_request(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    Some(body)
}

async fn gateway(upstream: &Upstream) -> TestGateway {
    TestGateway::start(&format!(
        r#"
providers:
  local: {{type: openai, base_url: "{}", timeouts: {{connect: 1s, first_byte: 5s, idle: 5s}}}}
models:
  m: {{provider: local}}
routes:
  ai: {{}}
consumers:
  dev: {{keys: [dev-key-12345], models: "*"}}
"#,
        upstream.base_url
    ))
    .await
}

fn chat(stream: bool) -> Value {
    json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "ping"}]})
}

async fn send(gw: &TestGateway, http: &reqwest::Client, stream: bool) -> reqwest::Response {
    let resp = http
        .post(gw.url("/ai/v1/chat/completions"))
        .bearer_auth("dev-key-12345")
        .json(&chat(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp
}

async fn ask(gw: &TestGateway, http: &reqwest::Client, stream: bool) -> String {
    send(gw, http, stream).await.text().await.unwrap()
}

#[tokio::test]
async fn requests_in_turn_share_one_upstream_connection_whole_or_streamed() {
    let upstream = start_upstream(Manner::KeepAlive).await;
    let gw = gateway(&upstream).await;
    // One client connection: every request is served by the same proxy thread.
    let http = client();
    for i in 0..12 {
        let stream = i % 3 == 0;
        let text = ask(&gw, &http, stream).await;
        match stream {
            true => assert!(
                text.contains("w4 ") && text.ends_with("data: [DONE]\n\n"),
                "{text}"
            ),
            false => assert!(text.contains("pong"), "{text}"),
        }
    }
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_upstream_closing_its_idle_connections_fails_no_request() {
    let upstream = start_upstream(Manner::CloseAfterAnswer).await;
    let gw = gateway(&upstream).await;
    let http = client();
    for i in 0..10 {
        let text = ask(&gw, &http, i % 2 == 0).await;
        assert!(text.contains("pong") || text.contains("[DONE]"), "{text}");
        // Sometimes the close has arrived by the next request, sometimes not yet.
        if i % 3 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 10);
}

#[tokio::test]
async fn a_stream_left_early_does_not_return_its_connection_to_the_pool() {
    let upstream = start_upstream(Manner::KeepAlive).await;
    let gw = gateway(&upstream).await;
    let http = client();
    let mut body = send(&gw, &http, true).await.bytes_stream();
    assert!(body.next().await.unwrap().is_ok());
    drop(body);
    // The gateway notices the client has gone when it next writes; then the upstream
    // connection, its answer unread, is closed rather than pooled.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = client();
    assert!(ask(&gw, &fresh, false).await.contains("pong"));
    assert!(ask(&gw, &fresh, false).await.contains("pong"));
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);
}
