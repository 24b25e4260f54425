//! Test harness: the real gateway (in process, from its config file) against mock upstreams.
#![allow(dead_code)]

pub mod mock_upstream;
pub mod redis_proxy;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tollgate::Gateway;
use tollgate::telemetry::request_log::{LogSink, RequestRecord};

pub struct TestGateway {
    pub addr: SocketAddr,
    pub status_addr: SocketAddr,
    pub config_path: PathBuf,
    logs: mpsc::UnboundedReceiver<RequestRecord>,
    stop: Option<oneshot::Sender<()>>,
    pub handle: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

/// Listeners on free loopback ports, prepended to every test config.
pub const TEST_LISTEN: &str = "listen: {proxy: 127.0.0.1:0, status: 127.0.0.1:0}\n";

impl TestGateway {
    /// Starts the gateway from `yaml` (without a `listen` section; one is added).
    pub async fn start(yaml: &str) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("tollgate.yaml");
        std::fs::write(&config_path, format!("{TEST_LISTEN}{yaml}")).unwrap();
        Self::start_from(config_path, dir).await
    }

    /// Starts the gateway from a config file already written (in `dir`, kept while it runs).
    pub async fn start_from(config_path: PathBuf, dir: tempfile::TempDir) -> TestGateway {
        let (tx, logs) = mpsc::unbounded_channel();
        let gateway = Gateway::bind(&config_path, LogSink::Channel(tx))
            .await
            .unwrap_or_else(|e| panic!("gateway failed to start:\n{e}"));
        let addr = gateway.proxy_addr();
        let status_addr = gateway.status_addr();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(gateway.run(async move {
            let _ = stop_rx.await;
        }));
        TestGateway {
            addr,
            status_addr,
            config_path,
            logs,
            stop: Some(stop_tx),
            handle,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Replaces the config file (the running gateway watches it).
    pub fn rewrite_config(&self, yaml: &str) {
        std::fs::write(&self.config_path, format!("{TEST_LISTEN}{yaml}")).unwrap();
    }

    /// The next request-log record (waits up to 5 s).
    pub async fn next_log(&mut self) -> RequestRecord {
        tokio::time::timeout(Duration::from_secs(5), self.logs.recv())
            .await
            .expect("no request-log record within 5 s")
            .expect("log channel closed")
    }

    /// The Prometheus text of the status listener's `/metrics`.
    pub async fn metrics(&self) -> String {
        scrape_metrics(self.status_addr).await
    }

    /// Asks the gateway to shut down gracefully.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The Prometheus text of `/metrics` on a status listener.
pub async fn scrape_metrics(status_addr: SocketAddr) -> String {
    client()
        .get(format!("http://{status_addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A provider + models + consumers config on top of a mock OpenAI upstream, used by most tests.
pub fn standard_config(upstream_base: &str) -> String {
    format!(
        r#"
providers:
  up:
    type: openai
    base_url: {upstream_base}
    api_key: sk-upstream-secret-key-0123456789
    timeouts: {{connect: 1s, first_byte: 2s, idle: 1s, total: 20s}}
  down:
    type: openai
    base_url: http://127.0.0.1:9/v1
    timeouts: {{connect: 1s}}
models:
  "llama3.2:1b": {{provider: up}}
  "qwen2.5-coder:1.5b": {{provider: up}}
  "gemma3:1b": {{provider: up, model: "gemma3:1b-it-q4"}}
  nomic-embed-text: {{provider: up, listed: false, embeddings_for_all: true}}
  fail-500: {{provider: up}}
  fail-401: {{provider: up}}
  fail-429: {{provider: up}}
  fail-404: {{provider: up}}
  hang: {{provider: up}}
  slow-stream: {{provider: up}}
  die-mid-stream: {{provider: up}}
  stall-mid-stream: {{provider: up}}
  offline: {{provider: down}}
routes:
  ollama: {{}}
  coder:
    models: ["qwen2.5-coder:1.5b"]
    default_model: "qwen2.5-coder:1.5b"
  gemma:
    models: ["gemma3:1b"]
    groups: [gemma-users]
groups:
  devs: {{models: ["llama3.2:1b", "qwen2.5-coder:1.5b"]}}
  gemma-users: {{models: ["gemma3:1b"]}}
  admins: {{models: "*"}}
consumers:
  dev-user:
    custom_id: dev
    keys: [dev-key-12345]
    groups: [devs]
    emails: [dev@example.com]
  team-lead:
    custom_id: lead
    keys: ["sha256:{lead_hash}"]
    groups: [devs, gemma-users]
    emails: [Lead@Example.com]
  admin-user:
    custom_id: admin
    keys: [admin-key-12345, admin-key-second]
    groups: [admins]
    emails: [admin@example.com]
  openwebui:
    keys: [openwebui-key-12345]
    trust_user_header: true
    models: ["llama3.2:1b"]
"#,
        lead_hash = sha256_hex("lead-key-12345"),
    )
}

pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process (a gateway binary, a provider) killed when the test lets go of it.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether `url` answers 200 within 10 s.
pub async fn answers_ok(url: &str) -> bool {
    for _ in 0..100 {
        if reqwest::get(url).await.is_ok_and(|r| r.status() == 200) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The gateway binary as a child process (for what needs its own process: memory, signals).
pub struct GatewayProcess {
    pub child: ChildGuard,
    pub addr: SocketAddr,
    pub status_addr: SocketAddr,
    /// The admin listener (only with [`Self::start_with_admin`]).
    pub admin_addr: SocketAddr,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl GatewayProcess {
    /// Starts `tollgate serve` on `yaml` (without `listen`; one is added) and waits for /ready.
    pub async fn start(yaml: &str) -> GatewayProcess {
        Self::start_with_env(yaml, &[]).await
    }

    /// Like [`Self::start`], with environment variables set for the process.
    pub async fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> GatewayProcess {
        Self::start_listening(yaml, env, false).await
    }

    /// Like [`Self::start`], with the admin listener on a free port too.
    pub async fn start_with_admin(yaml: &str) -> GatewayProcess {
        Self::start_listening(yaml, &[], true).await
    }

    /// Like [`Self::start_with_admin`], with environment variables set for the process.
    pub async fn start_with_admin_env(yaml: &str, env: &[(&str, &str)]) -> GatewayProcess {
        Self::start_listening(yaml, env, true).await
    }

    async fn start_listening(yaml: &str, env: &[(&str, &str)], admin: bool) -> GatewayProcess {
        let dir = tempfile::tempdir().unwrap();
        let (port, status, admin_port) = (free_port(), free_port(), free_port());
        let config_path = dir.path().join("tollgate.yaml");
        let admin_listen = if admin {
            format!(", admin: 127.0.0.1:{admin_port}")
        } else {
            String::new()
        };
        std::fs::write(
            &config_path,
            format!("listen: {{proxy: 127.0.0.1:{port}, status: 127.0.0.1:{status}{admin_listen}}}\n{yaml}"),
        )
        .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["serve", "--config", config_path.to_str().unwrap()])
            .env("TOLLGATE_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut process = GatewayProcess {
            child: ChildGuard(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            status_addr: SocketAddr::from(([127, 0, 0, 1], status)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            config_path,
            _dir: dir,
        };
        // Large configs take a while in a debug build.
        let ready = format!("http://{}/ready", process.status_addr);
        for _ in 0..600 {
            if reqwest::get(&ready).await.is_ok_and(|r| r.status() == 200) {
                return process;
            }
            if let Ok(Some(exit)) = process.child.0.try_wait() {
                panic!("the gateway process exited: {exit}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the gateway process did not start within 60 s")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A memory figure of the process from /proc, in bytes: `VmRSS` (now) or `VmHWM` (peak).
    pub fn memory(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.0.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    /// Resets the peak (`VmHWM`) to the current RSS.
    pub fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.child.0.id()), "5");
    }
}

/// Waits, if need be, until at least `needed` is left in the current clock minute: limits
/// count in fixed clock windows, and a test that compares counters across several requests
/// must not see the minute roll over between them.
pub async fn clear_of_minute_boundary(needed: std::time::Duration) {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let into_minute = std::time::Duration::from_millis((since_epoch.as_millis() % 60_000) as u64);
    let left = std::time::Duration::from_secs(60).saturating_sub(into_minute);
    if left < needed {
        tokio::time::sleep(left + std::time::Duration::from_millis(50)).await;
    }
}

/// Whether node answers `--version`.
pub fn node_available() -> bool {
    std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `present`, or else: with `CI` set the test fails with `why`, without it the test is skipped
/// (returns false) and says why.
pub fn required(present: bool, why: &str) -> bool {
    if present {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    false
}

/// Whether node, the test's npm packages and Chromium are there.
pub fn browser_available() -> bool {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console");
    let chromium = std::path::Path::new("/usr/bin/chromium").exists()
        || std::env::var_os("CHROMIUM").is_some();
    required(
        node_available() && dir.join("node_modules/playwright-core").exists() && chromium,
        "node, tests/console/node_modules or /usr/bin/chromium is missing (scripts/test.sh installs them)",
    )
}

/// Runs a browser test script of tests/console/ with node and asserts it passed (it prints
/// "all checks passed").
pub async fn run_browser_script(script: &str, args: &[&str]) {
    let out = tokio::process::Command::new("node")
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/console")
                .join(script),
        )
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test {script} failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
