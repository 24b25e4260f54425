//! The admin console in a real browser (Debian's Chromium, driven by playwright-core from
//! tests/console/console.test.mjs) against the real gateway with mock traffic. Screenshots of
//! every page go to docs/console/ (shown in the README).

mod support;

use std::path::Path;

use serde_json::{Value, json};
use support::{GatewayProcess, client};

const ADMIN_TOKEN: &str = "console-admin-token";

#[tokio::test]
async fn the_console_in_a_browser() {
    if !support::browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("store.db").display());
    let node = GatewayProcess::start_with_admin(&format!(
        r#"
store: "{store}"
admin: {{tokens: {{ops: {ADMIN_TOKEN}}}}}
providers: {{mock: {{type: mock}}}}
models:
  m1: {{provider: mock, pricing: {{input: 1.0, output: 2.0}}}}
  m2: {{provider: mock}}
groups: {{g1: {{models: [m1]}}}}
routes:
  ai: {{log_payloads: true}}
consumers:
  file-team: {{keys: [file-team-key-123], groups: [g1]}}
"#
    ))
    .await;
    let admin = format!("http://{}", node.admin_addr);
    let http = client();
    let post = |path: &str, body: Value| {
        http.post(format!("{admin}/admin/v1{path}"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    assert_eq!(
        post("/consumers", json!({"name": "web", "groups": ["g1"]}))
            .await
            .unwrap()
            .status(),
        201
    );
    // Mock traffic: answers, a stream, a forbidden model, a wrong key.
    for (key, model, stream) in [
        ("file-team-key-123", "m1", false),
        ("file-team-key-123", "m1", true),
        ("file-team-key-123", "m1", false),
        ("file-team-key-123", "m2", false),
        ("no-such-key-123", "m1", false),
    ] {
        let response = http
            .post(node.url("/ai/v1/chat/completions"))
            .bearer_auth(key)
            .json(&json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hello there, gateway"}]}))
            .send()
            .await
            .unwrap();
        let _ = response.bytes().await;
    }
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console");
    std::fs::create_dir_all(&shots).unwrap();
    support::run_browser_script(
        "console.test.mjs",
        &[
            admin.as_str(),
            ADMIN_TOKEN,
            &node.url(""),
            &format!("http://{}", node.status_addr),
            shots.to_str().unwrap(),
        ],
    )
    .await;
}
