//! The `tollgate` binary itself: commands, request log on stdout, SIGHUP, SIGTERM.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::free_port;

fn tollgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

/// `tollgate check --config <path>`.
fn check(path: &std::path::Path) -> std::process::Output {
    tollgate()
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap()
}

fn example(name: &str) -> String {
    format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_accepts_the_examples() {
    for file in ["quickstart.yaml", "showcase.yaml"] {
        let out = tollgate()
            .args(["check", "--config", &example(file)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
    }
}

#[test]
fn check_reports_every_problem_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "providers:\n  p: {type: mock}\nmodels:\n  a:\n    provider: nope\nroutes:\n  r:\n    groups: [ghosts]\n    default_model: zzz\nconsumers:\n  c:\n    keys: [short]\n",
    )
    .unwrap();
    let out = check(&path);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    for expected in [
        format!("{file}:5:5: models.a.provider: unknown provider \"nope\""),
        format!("{file}:8:"),
        format!("{file}:9:5: routes.r.default_model: unknown model \"zzz\""),
        format!("{file}:12:"),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(stderr.contains("4 problem(s)"), "{stderr}");

    std::fs::write(
        &path,
        "providers:\n  p:\n    type: mock\n    colour: blue\n",
    )
    .unwrap();
    let out = check(&path);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field `colour`"));

    // Proxy threads: at least one, at most 1,024.
    for (threads, message) in [
        ("0", "expected a nonzero usize"),
        ("5000", "listen.proxy_threads: at most 1024"),
    ] {
        std::fs::write(
            &path,
            format!("listen:\n  proxy_threads: {threads}\nproviders:\n  p: {{type: mock}}\n"),
        )
        .unwrap();
        let out = check(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(message), "{threads}: {stderr}");
        assert!(
            stderr.contains(&format!("{file}:2:")),
            "{threads}: {stderr}"
        );
    }

    let out = tollgate()
        .args(["check", "--config", "/nonexistent.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn help_and_hash_key() {
    let out = tollgate().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("serve") && help.contains("check") && help.contains("hash-key"),
        "{help}"
    );
    let out = tollgate()
        .args(["hash-key", "dev-key-12345"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("sha256:{}", support::sha256_hex("dev-key-12345"))
    );
}

fn signal(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn models_status(port: u16, key: &str) -> u16 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("apikey: {key}"),
            &format!("http://127.0.0.1:{port}/ai/v1/models"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

#[test]
fn serve_logs_json_lines_reloads_on_sighup_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    let (port, status_port) = (free_port(), free_port());
    let config = |key: &str| {
        format!(
            "listen: {{proxy: 127.0.0.1:{port}, status: 127.0.0.1:{status_port}}}\nreload: {{watch_file: false}}\n\
             providers: {{demo: {{type: mock}}}}\nmodels: {{echo: {{provider: demo}}}}\nroutes: {{ai: {{}}}}\n\
             consumers: {{u: {{keys: [{key}], models: \"*\"}}}}\n"
        )
    };
    std::fs::write(&path, config("first-key-123")).unwrap();
    let mut child = tollgate()
        .args(["serve", "--config", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });

    assert!(
        wait_until(|| models_status(port, "first-key-123") == 200),
        "the gateway did not come up"
    );
    let out = Command::new("curl")
        .args([
            "-s",
            "-H",
            "Authorization: Bearer first-key-123",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"model":"echo","messages":[{"role":"user","content":"hi there"}]}"#,
            &format!("http://127.0.0.1:{port}/ai/v1/chat/completions"),
        ])
        .output()
        .unwrap();
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["choices"][0]["message"]["content"], "hi there");

    // With file watching off, only SIGHUP reloads.
    std::fs::write(&path, config("second-key-123")).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        models_status(port, "first-key-123"),
        200,
        "reloaded without SIGHUP although watch_file is off"
    );
    signal(child.id(), "-HUP");
    assert!(
        wait_until(|| models_status(port, "second-key-123") == 200),
        "SIGHUP did not reload"
    );
    assert_eq!(models_status(port, "first-key-123"), 401);

    signal(child.id(), "-TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let lines = lines.join().unwrap();
    let records: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let chat = records
        .iter()
        .find(|r| r["endpoint"] == "chat")
        .expect("no chat record");
    assert_eq!(chat["consumer"], "u");
    assert_eq!(chat["total_tokens"], 4);
    assert_eq!(chat["status"], 200);
    assert!(records.iter().any(|r| r["status"] == 401));
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("first-key-123") || l.contains("second-key-123")),
        "a key reached the log"
    );
}

#[test]
fn the_readme_quickstart_curl_works_against_the_shipped_quickstart_config() {
    let (port, status_port, admin_port) = (free_port(), free_port(), free_port());
    let store = tempfile::tempdir().unwrap();
    let mut child = tollgate()
        .args(["serve", "--config", &example("quickstart.yaml")])
        .env("TOLLGATE_PROXY_ADDR", format!("127.0.0.1:{port}"))
        .env("TOLLGATE_STATUS_ADDR", format!("127.0.0.1:{status_port}"))
        .env("TOLLGATE_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
        .env(
            "TOLLGATE_STORE",
            format!("sqlite://{}", store.path().join("store.db").display()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = wait_until(|| {
        Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{status_port}/ready")])
            .status()
            .is_ok_and(|s| s.success())
    });
    // The command as the README gives it, on this test's port.
    let readme =
        std::fs::read_to_string(format!("{}/README.md", env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert!(
        readme.contains("-H 'Authorization: Bearer demo-key-12345'")
            && readme.contains(r#""model": "echo""#)
    );
    let out = Command::new("curl")
        .args([
            "-s",
            &format!("http://127.0.0.1:{port}/ai/v1/chat/completions"),
            "-H",
            "Authorization: Bearer demo-key-12345",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"model": "echo", "messages": [{"role": "user", "content": "Hello, gateway"}]}"#,
        ])
        .output()
        .unwrap();
    // The console the README points at answers, and its API takes the demo token.
    let console = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{admin_port}/")])
        .output()
        .unwrap();
    let catalog = Command::new("curl")
        .args([
            "-sf",
            "-H",
            "Authorization: Bearer demo-admin-token",
            &format!("http://127.0.0.1:{admin_port}/admin/v1/catalog"),
        ])
        .output()
        .unwrap();
    signal(child.id(), "-TERM");
    let _ = child.wait();
    assert!(ready, "the quickstart gateway did not come up");
    assert!(String::from_utf8_lossy(&console.stdout).contains("Tollgate console"));
    assert!(
        String::from_utf8_lossy(&catalog.stdout).contains("\"echo\""),
        "{}",
        String::from_utf8_lossy(&catalog.stdout)
    );
    let reply: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(reply["choices"][0]["message"]["content"], "Hello, gateway");
    assert!(reply["usage"]["total_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn the_file_sink_reopens_on_sigusr1_after_logrotate_moved_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gw.yaml");
    let log = dir.path().join("requests.jsonl");
    let (port, status_port) = (free_port(), free_port());
    std::fs::write(
        &path,
        format!(
            "listen: {{proxy: 127.0.0.1:{port}, status: 127.0.0.1:{status_port}}}\nlog: {{requests: off, file: {{path: \"{}\"}}}}\n\
             providers: {{demo: {{type: mock}}}}\nmodels: {{echo: {{provider: demo}}}}\nroutes: {{ai: {{}}}}\n\
             consumers: {{u: {{keys: [file-key-123], models: \"*\"}}}}\n",
            log.display()
        ),
    )
    .unwrap();
    let mut child = tollgate()
        .args(["serve", "--config", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    assert!(wait_until(|| models_status(port, "file-key-123") == 200));
    models_status(port, "file-key-123");
    assert!(wait_until(|| lines(&log) == 2), "records reach the file");

    let rotated = dir.path().join("requests.jsonl.1");
    std::fs::rename(&log, &rotated).unwrap();
    models_status(port, "file-key-123");
    assert!(
        wait_until(|| lines(&rotated) == 3),
        "until told, the moved file is still written"
    );
    signal(child.id(), "-USR1");
    std::thread::sleep(Duration::from_millis(300));
    models_status(port, "file-key-123");
    assert!(
        wait_until(|| lines(&log) == 1),
        "after SIGUSR1 a new file is opened"
    );
    assert_eq!(lines(&rotated), 3);

    signal(child.id(), "-TERM");
    let _ = child.wait();
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(stdout.is_empty(), "requests: off keeps stdout quiet");
}
