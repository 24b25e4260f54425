//! A standalone mock OpenAI-compatible upstream (the one the tests use), for the benchmark
//! and the Python SDK tests: `cargo run --release --example mock-upstream -- 127.0.0.1:9999`
//! (`MOCK_DELAY_MS=50` makes it wait that long before each answer).

#[path = "../tests/support/mock_upstream/mod.rs"]
mod mock_upstream;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9999".to_owned());
    let Ok(addr) = addr.parse() else {
        eprintln!("usage: mock-upstream [ADDR:PORT]");
        std::process::exit(2);
    };
    let delay = std::env::var("MOCK_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(std::time::Duration::ZERO, std::time::Duration::from_millis);
    let upstream = mock_upstream::start_on_with_delay(addr, delay).await;
    println!("mock upstream listening on http://{}/v1", upstream.addr);
    std::future::pending::<()>().await;
}
