//! `tollgate import kong|litellm`: golden files for the showcase's Kong configuration (Kong
//! Ingress Controller manifests), a decK file with ai-proxy to OpenAI, Kong's published plugin
//! examples and a LiteLLM config — each imported, compared with its golden output, and
//! accepted by `tollgate check`; the imported showcase answers the same requests as
//! `examples/showcase.yaml`; bad input gets a clear error with its location.
//!
//! `UPDATE_GOLDEN=1 cargo test --test import` rewrites the golden files.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::json;
use support::{ChildGuard, free_port, mock_upstream};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The variables the imported configs refer to (what an operator would set).
const ENV: [(&str, &str); 11] = [
    ("GEMINI_API_KEY", "gm-showcase-key-123456"),
    ("ANTHROPIC_API_KEY", "sk-ant-showcase-key-123456"),
    ("LOG_HEADER_AUTHORIZATION", "Bearer log-token"),
    ("DECK_OPENAI_API_KEY", "sk-openai-123456"),
    ("DECK_BOB_KEY", "bob-key-123456"),
    ("DECK_REDIS_PASSWORD", "redis-pass"),
    ("OPENAI_API_KEY", "sk-openai-123456"),
    ("OPENAI_API_KEY_2", "sk-openai-654321"),
    ("AZURE_API_KEY", "azure-key-123456"),
    ("REDIS_PASSWORD", "redis-pass"),
    ("LITELLM_MASTER_KEY", "sk-litellm-master-123456"),
];

fn tollgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .current_dir(ROOT)
        .envs(ENV)
        .output()
        .unwrap()
}

/// Imports `source` (relative to the project), compares with the golden file and checks it.
fn import_and_check(kind: &str, source: &str) -> String {
    let out = tollgate(&["import", kind, source]);
    let config = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "import of {source} failed: {report}");
    let golden = Path::new(ROOT).join(source.replace(".yaml", ".expected.yaml"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &config).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_else(|_| {
        panic!(
            "{} is missing (UPDATE_GOLDEN=1 writes it)",
            golden.display()
        )
    });
    assert_eq!(
        config,
        expected,
        "{source}: the import differs from {}",
        golden.display()
    );
    // Every secret is a reference: none of the source's secret values is in the output.
    for secret in [
        "AIzaSy-not-a-real-key",
        "sk-ant-not-a-real-key",
        "not-a-real-secret",
        "log-sink-token",
        "dev-key-12345",
        "alice-secret-key-1",
        "ci-key-123456",
    ] {
        assert!(!config.contains(secret), "{source}: {secret} was copied");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("imported.yaml");
    std::fs::write(&path, &config).unwrap();
    let check = tollgate(&["check", "--config", path.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "tollgate check refused the import of {source}:\n{}\n{config}",
        String::from_utf8_lossy(&check.stderr)
    );
    config
}

#[test]
fn the_showcase_on_kong_ingress_controller() {
    let config = import_and_check("kong", "tests/import/kong-showcase.yaml");
    // What could not come over is said, with where it was.
    assert!(config.contains("KongPlugin model-filter): Lua code is not carried over"));
    assert!(config.contains("GEMINI_API_KEY: the secret at"));
}

#[test]
fn a_deck_file_with_ai_proxy_to_openai() {
    let config = import_and_check("kong", "tests/import/deck-openai.yaml");
    assert!(config.contains("api_key: ${DECK_OPENAI_API_KEY}"));
    assert!(config.contains("${DECK_BOB_KEY}"));
    assert!(config.contains("plugins[1]: cors: no equivalent"));
}

#[test]
fn kongs_published_plugin_examples() {
    let config = import_and_check("kong", "tests/import/kong-examples.yaml");
    assert!(config.contains("strategy: least-busy"));
    assert!(config.contains("\"non_idempotent\": no equivalent"));
}

#[test]
fn a_litellm_config() {
    let config = import_and_check("litellm", "tests/import/litellm.yaml");
    assert!(config.contains("bedrock/amazon.titan-text-express-v1\": no Tollgate adapter"));
    assert!(config.contains("strategy: priority"));
}

#[test]
fn bad_input_gets_its_location() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let cases = [
        (
            "kong",
            write("neither.yaml", "hello: world\n"),
            "neither a decK file",
        ),
        (
            "kong",
            write(
                "future.yaml",
                "# a comment\n_format_version: \"9.9\"\nservices: []\n",
            ),
            "future.yaml:2:1: _format_version \"9.9\"",
        ),
        (
            "kong",
            write("broken.yaml", "services:\n  - name: x\n    routes: [\n"),
            "broken.yaml:",
        ),
        (
            "litellm",
            write("kong.yaml", "_format_version: \"3.0\"\n"),
            "use `tollgate import kong`",
        ),
        (
            "kong",
            write("litellm.yaml", "model_list: []\n"),
            "use `tollgate import litellm`",
        ),
    ];
    for (kind, file, expected) in cases {
        let out = tollgate(&["import", kind, &file]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file} was accepted");
        assert!(stderr.contains(expected), "{file}: {stderr}");
    }
}

/// A gateway process on a config file, with the mocks' addresses put in for the providers'.
struct Gateway {
    _child: ChildGuard,
    port: u16,
}

async fn serve(config: &Path, env: &[(&str, String)]) -> Gateway {
    let (port, status) = (free_port(), free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.args(["serve", "--config", config.to_str().unwrap()])
        .env("TOLLGATE_PROXY_ADDR", format!("127.0.0.1:{port}"))
        .env("TOLLGATE_STATUS_ADDR", format!("127.0.0.1:{status}"))
        .envs(ENV)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let gateway = Gateway {
        _child: ChildGuard(cmd.spawn().unwrap()),
        port,
    };
    assert!(
        support::answers_ok(&format!("http://127.0.0.1:{status}/ready")).await,
        "the gateway on {} did not come up",
        config.display()
    );
    gateway
}

impl Gateway {
    async fn status(&self, route: &str, key: Option<&str>, model: Option<&str>) -> u16 {
        let mut body = json!({"messages": [{"role": "user", "content": "hi"}]});
        if let Some(m) = model {
            body["model"] = json!(m);
        }
        let mut request = reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{}{route}/v1/chat/completions",
                self.port
            ))
            .json(&body);
        if let Some(key) = key {
            request = request.header("apikey", key);
        }
        request.send().await.unwrap().status().as_u16()
    }
}

/// The imported showcase and `examples/showcase.yaml`, against the same mocks, give the same
/// 401/403/200 for the same requests.
#[tokio::test]
async fn the_imported_showcase_answers_like_the_showcase() {
    let ollama = mock_upstream::start().await;
    let cloud = mock_upstream::start().await;
    let out = tollgate(&["import", "kong", "tests/import/kong-showcase.yaml"]);
    assert!(out.status.success());
    // The cluster's addresses become the mocks'; listeners come from the environment.
    let text = String::from_utf8(out.stdout)
        .unwrap()
        .replace("http://ollama.ai.svc:11434/v1", &ollama.base_url());
    let mut config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    config["listen"] = serde_yaml_ng::from_str(
        "{proxy: \"${TOLLGATE_PROXY_ADDR}\", status: \"${TOLLGATE_STATUS_ADDR}\"}",
    )
    .unwrap();
    config["providers"]["gemini"]["base_url"] = format!("http://{}/v1beta", cloud.addr).into();
    config["providers"]["anthropic"]["base_url"] = format!("http://{}", cloud.addr).into();
    // No Keycloak here: the token path is tested elsewhere; keys are what this compares.
    config.as_mapping_mut().unwrap().remove("auth");
    let dir = tempfile::tempdir().unwrap();
    let imported_path = dir.path().join("imported.yaml");
    std::fs::write(&imported_path, serde_yaml_ng::to_string(&config).unwrap()).unwrap();
    let imported = serve(&imported_path, &[]).await;
    let showcase = serve(
        &Path::new(ROOT).join("examples/showcase.yaml"),
        &[
            ("OLLAMA_BASE_URL", ollama.base_url()),
            ("GEMINI_BASE_URL", format!("http://{}/v1beta", cloud.addr)),
            ("ANTHROPIC_BASE_URL", format!("http://{}", cloud.addr)),
        ],
    )
    .await;
    let (dev, lead, admin) = (
        Some("dev-key-12345"),
        Some("lead-key-12345"),
        Some("admin-key-12345"),
    );
    let matrix: Vec<(&str, Option<&str>, Option<&str>, u16)> = vec![
        ("/ollama", None, Some("llama3.2:1b"), 401),
        ("/ollama", Some("wrong-key-12345"), Some("llama3.2:1b"), 401),
        ("/ollama", dev, Some("llama3.2:1b"), 200),
        ("/ollama", dev, Some("gemini-2.5-flash"), 403),
        ("/coder", dev, None, 200),
        ("/gemma", lead, None, 200),
        ("/gemini", dev, None, 403),
        ("/gemini", lead, None, 200),
        ("/gemini", admin, None, 200),
        ("/anthropic", lead, None, 403),
        ("/anthropic", admin, None, 200),
        ("/ai", dev, None, 200),
    ];
    for (route, key, model, expected) in matrix {
        let (a, b) = (
            showcase.status(route, key, model).await,
            imported.status(route, key, model).await,
        );
        assert_eq!(
            (a, b),
            (expected, expected),
            "{route} with {key:?} asking for {model:?}: showcase {a}, imported {b}"
        );
    }
}
