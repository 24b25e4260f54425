//! Hot reload and graceful shutdown, in process.

mod support;

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use serde_json::json;
use support::{TestGateway, client, mock_upstream, standard_config};

/// Starts a ~3 s stream as admin-user and returns once the response head has arrived.
async fn start_slow_stream(gw: &TestGateway) -> reqwest::Response {
    let body = json!({"model": "slow-stream", "stream": true, "messages": [{"role": "user", "content": "x"}]});
    client()
        .post(gw.url("/ollama/v1/chat/completions"))
        .bearer_auth("admin-key-12345")
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn status_with_key(gw: &TestGateway, key: &str) -> u16 {
    client()
        .get(gw.url("/ollama/v1/models"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls until `f` holds (up to 10 s).
async fn eventually<F, Fut>(mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn a_changed_file_is_reloaded_and_a_broken_one_is_refused() {
    let upstream = mock_upstream::start().await;
    let base = standard_config(&upstream.base_url());
    let gw = TestGateway::start(&base).await;
    assert_eq!(status_with_key(&gw, "new-key-12345").await, 401);

    gw.rewrite_config(&base.replace(
        "  openwebui:\n",
        "  newcomer:\n    keys: [new-key-12345]\n  openwebui:\n",
    ));
    assert!(
        eventually(|| async { status_with_key(&gw, "new-key-12345").await == 200 }).await,
        "the new consumer was not picked up"
    );

    // A broken file (a typo and an unknown model) changes nothing.
    gw.rewrite_config(&base.replace(
        "  openwebui:\n",
        "  broken:\n    keyz: [broken-key-12345]\n  openwebui:\n",
    ));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        status_with_key(&gw, "new-key-12345").await,
        200,
        "the last good config stays in force"
    );
    assert_eq!(status_with_key(&gw, "dev-key-12345").await, 200);

    // And a good file after a broken one is taken again.
    gw.rewrite_config(&base);
    assert!(eventually(|| async { status_with_key(&gw, "new-key-12345").await == 401 }).await);
}

/// A Kubernetes ConfigMap volume: `tollgate.yaml -> ..data/tollgate.yaml`, `..data ->
/// ..<timestamp>/`; an update writes a new timestamped directory and swaps `..data` by a
/// rename. The gateway (watching the directory, comparing the content) takes it.
#[cfg(unix)]
#[tokio::test]
async fn a_kubernetes_configmap_update_is_reloaded() {
    use std::os::unix::fs::symlink;
    let upstream = mock_upstream::start().await;
    let base = format!(
        "{}{}",
        support::TEST_LISTEN,
        standard_config(&upstream.base_url())
    );
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let version = |name: &str, text: &str| {
        std::fs::create_dir(root.join(name)).unwrap();
        std::fs::write(root.join(name).join("tollgate.yaml"), text).unwrap();
    };
    version("..2026_12_04_10_00_00.1", &base);
    symlink("..2026_12_04_10_00_00.1", root.join("..data")).unwrap();
    symlink("..data/tollgate.yaml", root.join("tollgate.yaml")).unwrap();
    let config_path = root.join("tollgate.yaml");
    let gw = TestGateway::start_from(config_path, dir).await;
    assert_eq!(status_with_key(&gw, "new-key-12345").await, 401);
    // The kubelet's update: a new directory, a new symlink, renamed over `..data`.
    let root = gw.config_path.parent().unwrap().to_path_buf();
    let updated = base.replace(
        "  openwebui:\n",
        "  newcomer:\n    keys: [new-key-12345]\n  openwebui:\n",
    );
    std::fs::create_dir(root.join("..2026_12_04_10_05_00.2")).unwrap();
    std::fs::write(root.join("..2026_12_04_10_05_00.2/tollgate.yaml"), updated).unwrap();
    symlink("..2026_12_04_10_05_00.2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    assert!(
        eventually(|| async { status_with_key(&gw, "new-key-12345").await == 200 }).await,
        "the ConfigMap update was not picked up"
    );
}

#[tokio::test]
async fn a_request_in_flight_finishes_on_the_config_it_started_with() {
    let upstream = mock_upstream::start().await;
    let base = standard_config(&upstream.base_url());
    let gw = TestGateway::start(&base).await;
    let resp = start_slow_stream(&gw).await;
    assert_eq!(resp.status(), 200);

    // Remove the model and the consumer while the stream runs.
    gw.rewrite_config(
        &base
            .replace("  slow-stream: {provider: up}\n", "")
            .replace("admin-key-12345, ", ""),
    );
    assert!(eventually(|| async { status_with_key(&gw, "admin-key-12345").await == 401 }).await);

    let text = resp.text().await.unwrap();
    assert!(
        text.contains("tick29") && text.trim_end().ends_with("data: [DONE]"),
        "the stream was cut: {text}"
    );
}

#[tokio::test]
async fn shutdown_lets_streams_in_flight_finish_and_refuses_new_connections() {
    let upstream = mock_upstream::start().await;
    let mut gw = TestGateway::start(&standard_config(&upstream.base_url())).await;
    let resp = start_slow_stream(&gw).await;
    let reader = tokio::spawn(async move { resp.text().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;

    gw.shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = reqwest::Client::new()
        .get(gw.url("/ollama/v1/models"))
        .bearer_auth("dev-key-12345")
        .send()
        .await;
    assert!(
        fresh.is_err(),
        "a new connection was accepted during shutdown"
    );

    let text = reader.await.unwrap();
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "the stream was cut by the shutdown"
    );
    let result = tokio::time::timeout(Duration::from_secs(5), &mut gw.handle)
        .await
        .expect("the gateway did not stop");
    assert!(result.unwrap().is_ok());
}

#[tokio::test]
async fn shutdown_closes_idle_and_silent_connections_at_once() {
    let upstream = mock_upstream::start().await;
    let mut gw = TestGateway::start(&standard_config(&upstream.base_url())).await;
    // One connection that has said nothing yet, one idle after an answer.
    let mut silent = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut idle = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(b"GET /ollama/v1/models HTTP/1.1\r\nHost: x\r\napikey: dev-key-12345\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0u8; 16 * 1024];
    let n = idle.read(&mut answer).await.unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = std::time::Instant::now();
    gw.shutdown();
    for stream in [&mut silent, &mut idle] {
        let mut rest = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut rest)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "still open: {read:?}"
        );
    }
    let result = tokio::time::timeout(Duration::from_secs(3), &mut gw.handle)
        .await
        .expect("the gateway waited for its silent connections");
    assert!(result.unwrap().is_ok());
    assert!(started.elapsed() < Duration::from_secs(3));
}
