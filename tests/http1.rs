//! The client-facing HTTP/1.1 wire, over raw sockets: what any client, however old or odd,
//! may send and must get back (keep-alive, pipelining, HTTP/1.0, `Expect: 100-continue`,
//! chunked bodies both ways), and what it must not get through (smuggling, oversized heads).

mod support;

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{TestGateway, client, mock_upstream, standard_config};

const MODELS: &str = "GET /ollama/v1/models HTTP/1.1\r\nHost: gw\r\napikey: dev-key-12345\r\n\r\n";

async fn gateway() -> (TestGateway, mock_upstream::MockUpstream) {
    let upstream = mock_upstream::start().await;
    let gw = TestGateway::start(&standard_config(&upstream.base_url())).await;
    (gw, upstream)
}

fn chat_request(version: &str, extra_headers: &str, stream: bool) -> String {
    let body = json!({"model": "llama3.2:1b", "stream": stream, "messages": [{"role": "user", "content": "hi there"}]}).to_string();
    format!(
        "POST /ollama/v1/chat/completions {version}\r\nHost: gw\r\napikey: dev-key-12345\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    )
}

/// A new connection to the gateway with `bytes` sent on it.
async fn sent(gw: &TestGateway, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// One answer off the connection: its head, and its body as framed (length, chunked, or up to
/// the close); `None` when the connection closed first.
async fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if !fill(stream, buf).await {
            return None;
        }
    };
    let head = String::from_utf8(buf.drain(..head_end).collect()).unwrap();
    let lower = head.to_ascii_lowercase();
    let header = |name: &str| {
        lower
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
    };
    let body = if let Some(length) = header("content-length") {
        let length: usize = length.trim().parse().unwrap();
        while buf.len() < length {
            assert!(fill(stream, buf).await, "closed inside a body");
        }
        buf.drain(..length).collect()
    } else if header("transfer-encoding").as_deref() == Some("chunked") {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = buf.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                assert!(fill(stream, buf).await, "closed inside a chunk-size line");
            };
            let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16)
                .expect("a hex chunk size");
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                assert!(fill(stream, buf).await, "closed inside a chunk");
            }
            body.extend(buf.drain(..size));
            assert_eq!(buf.drain(..2).collect::<Vec<_>>(), b"\r\n");
            if size == 0 {
                break body;
            }
        }
    } else {
        while fill(stream, buf).await {}
        std::mem::take(buf)
    };
    Some((head, body))
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await {
        Ok(Ok(0)) | Ok(Err(_)) => false,
        Ok(Ok(n)) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
        Err(_) => panic!("no answer within 10 s"),
    }
}

async fn closed(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    !fill(stream, &mut rest).await && rest.is_empty()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (gw, _upstream) = gateway().await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    // Three requests in one write: models, a chat, models again.
    let all = format!("{MODELS}{}{MODELS}", chat_request("HTTP/1.1", "", false));
    stream.write_all(all.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    for expected in [
        "\"object\":\"list\"",
        "chat.completion",
        "\"object\":\"list\"",
    ] {
        let (head, body) = read_answer(&mut stream, &mut buf).await.unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        let body = String::from_utf8(body).unwrap();
        assert!(body.contains(expected), "{expected} not in {body}");
    }
    // Still open for the next.
    stream.write_all(MODELS.as_bytes()).await.unwrap();
    let (head, _) = read_answer(&mut stream, &mut buf).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn answers_carry_a_date_a_length_or_chunks_and_a_request_id() {
    let (gw, _upstream) = gateway().await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let mut buf = Vec::new();
    stream
        .write_all(chat_request("HTTP/1.1", "", false).as_bytes())
        .await
        .unwrap();
    let (head, body) = read_answer(&mut stream, &mut buf).await.unwrap();
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("\r\ndate: "), "{head}");
    assert!(lower.contains("\r\ncontent-length: "), "{head}");
    assert!(lower.contains("\r\nx-request-id: "), "{head}");
    serde_json::from_slice::<serde_json::Value>(&body).expect("a whole JSON body");
    // A stream, on the same connection: chunked, every event in it, then the last chunk.
    stream
        .write_all(chat_request("HTTP/1.1", "", true).as_bytes())
        .await
        .unwrap();
    let (head, body) = read_answer(&mut stream, &mut buf).await.unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\ntransfer-encoding: chunked\r\n"),
        "{head}"
    );
    let body = String::from_utf8(body).unwrap();
    assert!(body.starts_with("data: "), "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    assert!(buf.is_empty(), "nothing after the last chunk");
}

#[tokio::test]
async fn http_1_0_clients_get_close_delimited_streams_and_keep_alive_on_request() {
    let (gw, _upstream) = gateway().await;
    // Without keep-alive: the answer, then the close.
    let mut stream = sent(
        &gw,
        b"GET /ollama/v1/models HTTP/1.0\r\napikey: dev-key-12345\r\n\r\n",
    )
    .await;
    let mut buf = Vec::new();
    let (head, _) = read_answer(&mut stream, &mut buf).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert!(closed(&mut stream).await);
    // With keep-alive: said so, and the connection serves the next request.
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let keep =
        "GET /ollama/v1/models HTTP/1.0\r\napikey: dev-key-12345\r\nConnection: keep-alive\r\n\r\n";
    stream.write_all(keep.as_bytes()).await.unwrap();
    let (head, _) = read_answer(&mut stream, &mut buf).await.unwrap();
    assert!(
        head.to_ascii_lowercase().contains("connection: keep-alive"),
        "{head}"
    );
    // A stream has no length and HTTP/1.0 has no chunks: its end is the close.
    stream
        .write_all(chat_request("HTTP/1.0", "Connection: keep-alive\r\n", true).as_bytes())
        .await
        .unwrap();
    let (head, body) = read_answer(&mut stream, &mut buf).await.unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let body = String::from_utf8(body).unwrap();
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body() {
    let (gw, upstream) = gateway().await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let request = chat_request("HTTP/1.1", "Expect: 100-continue\r\n", false);
    let (head, body) = request.split_at(request.find("\r\n\r\n").unwrap() + 4);
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let (interim, _) = {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            assert!(fill(&mut stream, &mut buf).await);
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        (String::from_utf8(buf.drain(..end).collect()).unwrap(), ())
    };
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(body.as_bytes()).await.unwrap();
    let (head, _) = read_answer(&mut stream, &mut buf).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        upstream.state.last().body["messages"][0]["content"],
        "hi there"
    );
}

#[tokio::test]
async fn a_chunked_body_in_tiny_pieces_arrives_whole() {
    let (gw, upstream) = gateway().await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let body = json!({"model": "llama3.2:1b", "messages": [{"role": "user", "content": "one chunk at a time"}]}).to_string();
    stream
        .write_all(b"POST /ollama/v1/chat/completions HTTP/1.1\r\nHost: gw\r\napikey: dev-key-12345\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    for piece in body.as_bytes().chunks(7) {
        let chunk = [
            format!("{:x};ext=1\r\n", piece.len()).as_bytes(),
            piece,
            b"\r\n",
        ]
        .concat();
        stream.write_all(&chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    stream
        .write_all(b"0\r\nx-trailer: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let (head, _) = read_answer(&mut stream, &mut buf).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(
        upstream.state.last().body["messages"][0]["content"],
        "one chunk at a time"
    );
    // The connection goes on.
    stream.write_all(MODELS.as_bytes()).await.unwrap();
    let (head, _) = read_answer(&mut stream, &mut buf).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn requests_that_could_be_smuggled_are_refused_and_the_connection_closed() {
    let (gw, upstream) = gateway().await;
    for head in [
        "POST /ollama/v1/chat/completions HTTP/1.1\r\nHost: gw\r\napikey: dev-key-12345\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /ollama/v1/chat/completions HTTP/1.1\r\nHost: gw\r\napikey: dev-key-12345\r\ntransfer-encoding: chunked, identity\r\n\r\n",
        "POST /ollama/v1/chat/completions HTTP/1.1\r\nHost: gw\r\napikey: dev-key-12345\r\ncontent-length: 4\r\ncontent-length: 5\r\n\r\nabcd",
        "POST /ollama/v1/chat/completions HTTP/1.1\r\nHost: gw\r\napikey: dev-key-12345\r\ncontent-length: +4\r\n\r\nabcd",
        "GET /ollama/v1/models HTTP/1.1\r\nHost gw\r\n\r\n",
    ] {
        let mut stream = sent(&gw, head.as_bytes()).await;
        stream.write_all(MODELS.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let (answer, body) = read_answer(&mut stream, &mut buf).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 400"), "{head:?}: {answer}");
        let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(error["error"]["code"], "bad_request", "{error}");
        // The request after it is not read as one: the connection is closed.
        assert!(buf.is_empty());
        assert!(closed(&mut stream).await, "{head:?}");
    }
    assert!(upstream.state.requests().is_empty());
}

#[tokio::test]
async fn a_head_far_over_the_limit_is_refused_unread() {
    let (gw, _upstream) = gateway().await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    // The default limit is 64 KiB: past twice that, the connection answers without reading on.
    let filler = format!("x-filler: {}\r\n", "f".repeat(8000));
    let head = format!(
        "GET /ollama/v1/models HTTP/1.1\r\nHost: gw\r\n{}",
        filler.repeat(20)
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let mut buf = Vec::new();
    let (answer, body) = read_answer(&mut stream, &mut buf).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], "headers_too_large");
}

#[tokio::test]
async fn an_answer_before_the_body_is_read_reaches_the_client() {
    let (gw, upstream) = gateway().await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    // A wrong key and a 1 MB body still on its way: the 401 comes, then the close.
    stream
        .write_all(b"POST /ollama/v1/chat/completions HTTP/1.1\r\nHost: gw\r\napikey: wrong-key-12345\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n{\"model\":")
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        let filler = vec![b' '; 64 * 1024];
        for _ in 0..15 {
            if stream.write_all(&filler).await.is_err() {
                break;
            }
        }
        stream
    });
    let mut stream = writer.await.unwrap();
    let mut buf = Vec::new();
    let (answer, _) = read_answer(&mut stream, &mut buf).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(upstream.state.requests().is_empty());
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_still_served() {
    let (gw, _upstream) = gateway().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .get(gw.url("/ollama/v1/models"))
        .header("apikey", "dev-key-12345")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert!(resp.headers().contains_key("x-request-id"));
    // And HTTP/1.1 beside it.
    let resp = client()
        .get(gw.url("/ollama/v1/models"))
        .header("apikey", "dev-key-12345")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    // A stream's head fields (kept beside the header map until written) reach both.
    for (client, version) in [
        (h2, reqwest::Version::HTTP_2),
        (client(), reqwest::Version::HTTP_11),
    ] {
        let resp = client
            .post(gw.url("/ollama/v1/chat/completions"))
            .header("apikey", "dev-key-12345")
            .json(&json!({"model": "llama3.2:1b", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), version);
        let head = resp.headers();
        assert_eq!(head["content-type"], "text/event-stream");
        assert_eq!(head["cache-control"], "no-cache");
        assert_eq!(head["x-accel-buffering"], "no");
        assert!(head.contains_key("x-request-id"));
        assert!(resp.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    }
}

#[tokio::test]
async fn an_answer_to_head_has_no_body_and_the_connection_goes_on() {
    let (gw, _upstream) = gateway().await;
    let mut stream = sent(
        &gw,
        b"HEAD /ollama/v1/models HTTP/1.1\r\nHost: gw\r\napikey: dev-key-12345\r\n\r\n",
    )
    .await;
    stream.write_all(MODELS.as_bytes()).await.unwrap();
    // The HEAD's answer is a head alone, whatever length it announces; the next answer
    // follows it directly.
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        assert!(fill(&mut stream, &mut buf).await);
    };
    let head = String::from_utf8(buf.drain(..head_end).collect()).unwrap();
    assert!(head.starts_with("HTTP/1.1 "), "{head}");
    let (next, body) = read_answer(&mut stream, &mut buf).await.unwrap();
    assert!(next.starts_with("HTTP/1.1 200"), "{next}");
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("\"object\":\"list\"")
    );
}

#[tokio::test]
async fn a_close_with_a_request_left_unread_ends_cleanly() {
    let (gw, _upstream) = gateway().await;
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    // The first request asks to close; the one pipelined behind it is never read. The answer
    // must still arrive whole and the connection end with a close, not a reset.
    let first = MODELS.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
    stream
        .write_all(format!("{first}{MODELS}").as_bytes())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut buf = Vec::new();
    let (head, body) = read_answer(&mut stream, &mut buf).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("\"object\":\"list\"")
    );
    let mut rest = [0u8; 1024];
    let end = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut rest))
        .await
        .expect("not closed");
    assert!(matches!(end, Ok(0)), "{end:?}");
}

#[tokio::test]
async fn requests_cut_anywhere_into_pieces_are_read_the_same() {
    let (gw, _upstream) = gateway().await;
    let body =
        json!({"model": "llama3.2:1b", "messages": [{"role": "user", "content": "in pieces"}]})
            .to_string();
    let chunked: String = body
        .as_bytes()
        .chunks(9)
        .map(|piece| {
            format!(
                "{:x}\r\n{}\r\n",
                piece.len(),
                std::str::from_utf8(piece).unwrap()
            )
        })
        .collect();
    // A head alone, a head with a length and its body, a chunked body with a trailer: every
    // place a piece can end (inside CRLFs, between heads, inside a chunk-size line) is met
    // by some cut.
    let all = format!(
        "{MODELS}{}POST /ollama/v1/chat/completions HTTP/1.1\r\nHost: gw\r\napikey: dev-key-12345\r\ntransfer-encoding: chunked\r\n\r\n{chunked}0\r\nx-t: 1\r\n\r\n",
        chat_request("HTTP/1.1", "", false)
    );
    let bytes = all.as_bytes();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for round in 0..12 {
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut at = 0;
        while at < bytes.len() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = 1 + (seed % [3, 17, 64, 200][round % 4]) as usize;
            let end = (at + len).min(bytes.len());
            stream.write_all(&bytes[at..end]).await.unwrap();
            at = end;
            tokio::time::sleep(Duration::from_micros(300)).await;
        }
        let mut buf = Vec::new();
        for expected in ["\"object\":\"list\"", "chat.completion", "chat.completion"] {
            let (head, body) = read_answer(&mut stream, &mut buf).await.unwrap();
            assert!(head.starts_with("HTTP/1.1 200"), "round {round}: {head}");
            let body = String::from_utf8(body).unwrap();
            assert!(body.contains(expected), "round {round}: {body}");
        }
    }
}
