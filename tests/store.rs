//! Keys at run time: the admin API over the store (SQLite and the real PostgreSQL), keys'
//! lives (rotation with grace, expiry, revocation, idempotent create), several nodes on one
//! PostgreSQL, a PostgreSQL outage, bad admin input, and the CLI over the same API.

mod support;

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;
use support::redis_proxy::{TcpProxy, redis_available};
use support::{GatewayProcess, client};

const ADMIN_TOKEN: &str = "admin-token-for-tests";
const POSTGRES: &str = "127.0.0.1:5432";

fn config(store: &str, extra: &str) -> String {
    config_polling(store, "500ms", extra)
}

/// With a long `poll`, changes can only arrive in time through PostgreSQL's notifications or
/// the SQLite file's change events.
fn config_polling(store: &str, poll: &str, extra: &str) -> String {
    format!(
        r#"
store: {{url: "{store}", poll_interval: {poll}}}
admin:
  tokens: {{ops: {ADMIN_TOKEN}}}
providers: {{mock: {{type: mock}}}}
models: {{m1: {{provider: mock}}, m2: {{provider: mock}}}}
groups: {{g1: {{models: [m1]}}, g2: {{models: [m2]}}}}
routes: {{ai: {{}}}}
consumers: {{filer: {{keys: [file-key-12345]}}}}
{extra}"#
    )
}

/// A fresh database on the machine's PostgreSQL, dropped when the test ends (however it
/// ends); `None` (skip) when the server is unreachable, unless `CI` is set, when that fails
/// the test.
async fn fresh_postgres() -> Option<TestDatabase> {
    let mut conn = match sqlx::postgres::PgConnection::connect(&maintenance_url()).await {
        Ok(c) => c,
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("PostgreSQL at {POSTGRES} is unreachable and CI is set: {e}")
        }
        Err(e) => {
            eprintln!("skipping: PostgreSQL at {POSTGRES} is unreachable ({e})");
            return None;
        }
    };
    let name = format!("tollgate_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    Some(TestDatabase {
        url: format!("postgres://postgres@{POSTGRES}/{name}"),
        name,
    })
}

fn maintenance_url() -> String {
    format!("postgres://postgres@{POSTGRES}/postgres")
}

struct TestDatabase {
    url: String,
    name: String,
}

impl std::ops::Deref for TestDatabase {
    type Target = str;
    fn deref(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // On a thread of its own: a test's runtime may be shutting down.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(mut conn) =
                    sqlx::postgres::PgConnection::connect(&maintenance_url()).await
                {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

struct Admin {
    base: String,
    http: reqwest::Client,
}

impl Admin {
    fn of(node: &GatewayProcess) -> Admin {
        Admin {
            base: format!("http://{}/admin/v1", node.admin_addr),
            http: client(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_with(method, path, body, &[]).await
    }

    async fn call_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN_TOKEN);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
}

/// A consumer in groups `g1` and a key of it, through `admin`: the key's secret.
async fn consumer_with_key(admin: &Admin, name: &str) -> String {
    let (status, body) = admin
        .post("/consumers", json!({"name": name, "groups": ["g1"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, key) = admin
        .post(&format!("/consumers/{name}/keys"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    key["secret"].as_str().unwrap().to_owned()
}

/// A chat request with `key` for `model`: the status and the error code, if any.
async fn chat(node: &GatewayProcess, key: &str, model: &str) -> (StatusCode, String) {
    chat_at(node.url(""), key.to_owned(), model).await
}

/// [`chat`] to the gateway at `base` (owned arguments, to spawn it).
async fn chat_at(base: String, key: String, model: &str) -> (StatusCode, String) {
    let response = client()
        .post(format!("{base}/ai/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// Waits up to `within` for `check` to hold; returns how long it took.
async fn eventually<F, Fut>(within: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < within {
        if check().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// Everything a key goes through, on one node and store: the same for SQLite and PostgreSQL.
async fn key_lifecycle(store: &str) {
    let node = GatewayProcess::start_with_admin(&config(store, "")).await;
    let admin = Admin::of(&node);

    // Consumers: create, list in pages, get, update.
    for name in ["alice", "bob", "carol"] {
        let (status, body) = admin
            .post(
                "/consumers",
                json!({"name": name, "groups": ["g1"], "metadata": {"team": "x"}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (_, page) = admin.get("/consumers?limit=2").await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["next"], "bob");
    let (_, rest) = admin.get("/consumers?limit=2&after=bob").await;
    assert_eq!(rest["data"][0]["name"], "carol");
    assert_eq!(rest["next"], Value::Null);
    let (status, again) = admin.post("/consumers", json!({"name": "alice"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");

    // A key: the secret once, a prefix, and it works for the consumer's models only.
    let (status, key) = admin
        .post("/consumers/alice/keys", json!({"name": "laptop"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let secret = key["secret"].as_str().unwrap().to_owned();
    let id = key["id"].as_str().unwrap().to_owned();
    assert!(secret.starts_with(key["prefix"].as_str().unwrap()));
    assert_eq!(chat(&node, &secret, "m1").await.0, StatusCode::OK);
    assert_eq!(chat(&node, &secret, "m2").await.0, StatusCode::FORBIDDEN);
    let (status, _) = admin
        .call(
            reqwest::Method::PATCH,
            "/consumers/alice",
            Some(json!({"groups": ["g1", "g2"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(chat(&node, &secret, "m2").await.0, StatusCode::OK);
    let (_, listed) = admin.get("/consumers/alice/keys").await;
    assert_eq!(listed["data"][0]["id"], id.as_str());
    assert!(listed["data"][0].get("secret").is_none(), "{listed}");
    assert!(listed["data"][0]["last_used_at"].is_string(), "{listed}");

    // A key narrowed to one model.
    let (_, narrow) = admin
        .post("/consumers/alice/keys", json!({"models": ["m2"]}))
        .await;
    let narrow_secret = narrow["secret"].as_str().unwrap();
    assert_eq!(chat(&node, narrow_secret, "m2").await.0, StatusCode::OK);
    assert_eq!(
        chat(&node, narrow_secret, "m1").await.0,
        StatusCode::FORBIDDEN
    );
    // A retried rotation (same Idempotency-Key) rotates once.
    let narrow_id = narrow["id"].as_str().unwrap();
    let twice = [("idempotency-key", "rotate-narrow-1")];
    let rotate = format!("/keys/{narrow_id}/rotate");
    let (_, r1) = admin
        .call_with(
            reqwest::Method::POST,
            &rotate,
            Some(json!({"grace": "0s"})),
            &twice,
        )
        .await;
    let (_, r2) = admin
        .call_with(
            reqwest::Method::POST,
            &rotate,
            Some(json!({"grace": "0s"})),
            &twice,
        )
        .await;
    assert_eq!(r1["prefix"], r2["prefix"], "{r1} {r2}");
    assert!(r2["secret"].is_null());
    let rotated_narrow = r1["secret"].as_str().unwrap();
    assert_eq!(chat(&node, rotated_narrow, "m2").await.0, StatusCode::OK);

    // Rotation: both secrets during the grace, then only the new one, under the same id.
    let (status, rotated) = admin
        .post(&format!("/keys/{id}/rotate"), json!({"grace": "2s"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_eq!(rotated["id"], id.as_str());
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert_eq!(chat(&node, &secret, "m1").await.0, StatusCode::OK);
    assert_eq!(chat(&node, &new_secret, "m1").await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        chat(&node, &secret, "m1").await,
        (StatusCode::UNAUTHORIZED, "api_key_rotated".into())
    );
    assert_eq!(chat(&node, &new_secret, "m1").await.0, StatusCode::OK);

    // Expiry.
    let (_, short) = admin
        .post("/consumers/bob/keys", json!({"expires_in": "1s"}))
        .await;
    let short_secret = short["secret"].as_str().unwrap();
    assert_eq!(chat(&node, short_secret, "m1").await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        chat(&node, short_secret, "m1").await,
        (StatusCode::UNAUTHORIZED, "api_key_expired".into())
    );

    // Revocation.
    let (status, revoked) = admin.post(&format!("/keys/{id}/revoke"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(
        chat(&node, &new_secret, "m1").await,
        (StatusCode::UNAUTHORIZED, "api_key_revoked".into())
    );

    // Idempotent create: the same request twice makes one key; another body is refused.
    let once = [("idempotency-key", "create-carol-1")];
    let body = json!({"name": "ci"});
    let (s1, first) = admin
        .call_with(
            reqwest::Method::POST,
            "/consumers/carol/keys",
            Some(body.clone()),
            &once,
        )
        .await;
    let (s2, second) = admin
        .call_with(
            reqwest::Method::POST,
            "/consumers/carol/keys",
            Some(body),
            &once,
        )
        .await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::CREATED));
    assert_eq!(first["id"], second["id"]);
    assert!(
        first["secret"].is_string() && second["secret"].is_null(),
        "{second}"
    );
    let (_, carol_keys) = admin.get("/consumers/carol/keys").await;
    assert_eq!(carol_keys["data"].as_array().unwrap().len(), 1);
    let (s3, reused) = admin
        .call_with(
            reqwest::Method::POST,
            "/consumers/carol/keys",
            Some(json!({"name": "other"})),
            &once,
        )
        .await;
    assert_eq!(s3, StatusCode::UNPROCESSABLE_ENTITY, "{reused}");

    // Deleting a consumer takes its keys with it.
    let carol_secret = first["secret"].as_str().unwrap();
    assert_eq!(chat(&node, carol_secret, "m1").await.0, StatusCode::OK);
    let (status, _) = admin
        .call(reqwest::Method::DELETE, "/consumers/carol", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        chat(&node, carol_secret, "m1").await,
        (StatusCode::UNAUTHORIZED, "invalid_api_key".into())
    );

    // The audit log: who did what, never a secret.
    let (_, audit) = admin.get("/audit?limit=1000").await;
    let text = audit.to_string();
    for s in [&secret, &new_secret, &carol_secret.to_owned()] {
        assert!(!text.contains(s.as_str()), "a secret in the audit log");
    }
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "consumer.create",
        "consumer.update",
        "consumer.delete",
        "key.create",
        "key.rotate",
        "key.revoke",
    ] {
        assert!(
            actions.contains(&action),
            "{action} not audited: {actions:?}"
        );
    }
    assert!(
        audit["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor"] == "token:ops")
    );

    // A file consumer is untouched and cannot be shadowed.
    assert_eq!(
        chat(&node, "file-key-12345", "m1").await.0,
        StatusCode::FORBIDDEN
    );
    let (status, _) = admin.post("/consumers", json!({"name": "filer"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[tokio::test]
async fn sqlite_store_key_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("store.db").display());
    key_lifecycle(&store).await;
}

#[tokio::test]
async fn postgres_store_key_lifecycle() {
    let Some(store) = fresh_postgres().await else {
        return;
    };
    key_lifecycle(&store).await;
}

/// Keys made on one node work on another within 2 s, revocations likewise, and a per-key
/// budget holds exactly across both (its counter is shared through Redis).
#[tokio::test]
async fn two_nodes_on_one_postgres() {
    let Some(store) = fresh_postgres().await else {
        return;
    };
    if !redis_available().await {
        return;
    }
    let prefix = format!("tg-store-{}", uuid::Uuid::new_v4().simple());
    let limits =
        format!("rate_limits: {{backend: redis, redis: {{prefix: {prefix}, on_error: closed}}}}");
    // Polling every minute: within 2 s only LISTEN/NOTIFY can bring the changes.
    let a = GatewayProcess::start_with_admin(&config_polling(&store, "60s", &limits)).await;
    let b = GatewayProcess::start_with_admin(&config_polling(&store, "60s", &limits)).await;
    let admin_a = Admin::of(&a);

    admin_a
        .post("/consumers", json!({"name": "dana", "groups": ["g1"]}))
        .await;
    let (_, key) = admin_a
        .post(
            "/consumers/dana/keys",
            json!({"budgets": [{"requests": 10, "per": "1h"}]}),
        )
        .await;
    let secret = key["secret"].as_str().unwrap().to_owned();
    let id = key["id"].as_str().unwrap().to_owned();
    let seen = eventually(Duration::from_secs(2), || async {
        chat(&b, &secret, "m1").await.0 == StatusCode::OK
    })
    .await;
    assert!(seen.is_some(), "node B did not take the key within 2 s");
    println!("key created on A worked on B after {seen:?}");

    // The budget: 10 requests an hour for this key, whichever node serves them (one is spent).
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let node_url = if i % 2 == 0 { a.url("") } else { b.url("") };
            tokio::spawn(chat_at(node_url, secret.clone(), "m1"))
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().0 == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(
        ok, 9,
        "the key's budget of 10 requests must hold exactly across nodes"
    );
    let (_, spend) = Admin::of(&b).get(&format!("/keys/{id}/spend")).await;
    assert_eq!(spend["key_budgets"][0]["used"], 10.0, "{spend}");

    admin_a.post(&format!("/keys/{id}/revoke"), json!({})).await;
    let gone = eventually(Duration::from_secs(2), || async {
        chat(&b, &secret, "m1").await.1 == "api_key_revoked"
    })
    .await;
    assert!(
        gone.is_some(),
        "node B still took the revoked key after 2 s"
    );
}

/// Two processes on one SQLite file: a change by one reaches the other by the file's change
/// events, well before the (minute-long) poll.
#[tokio::test]
async fn sqlite_changes_reach_another_process_by_file_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("store.db").display());
    let a = GatewayProcess::start_with_admin(&config_polling(&store, "60s", "")).await;
    let b = GatewayProcess::start_with_admin(&config_polling(&store, "60s", "")).await;
    let secret = consumer_with_key(&Admin::of(&a), "ivan").await;
    let seen = eventually(Duration::from_secs(2), || async {
        chat(&b, &secret, "m1").await.0 == StatusCode::OK
    })
    .await;
    assert!(
        seen.is_some(),
        "the other process did not see the key within 2 s"
    );
}

/// PostgreSQL cut off mid-load: requests with existing keys keep succeeding, admin writes
/// get 503 and change nothing, and the node catches up with writes made elsewhere meanwhile.
#[tokio::test]
async fn postgres_going_away_and_coming_back() {
    let Some(store) = fresh_postgres().await else {
        return;
    };
    let mut proxy = TcpProxy::start_to(POSTGRES).await;
    let through_proxy = store.url.replace(POSTGRES, &proxy.addr.to_string());
    let node = GatewayProcess::start_with_admin(&config(&through_proxy, "")).await;
    let other = GatewayProcess::start_with_admin(&config(&store, "")).await;
    let admin = Admin::of(&node);
    let secret = consumer_with_key(&admin, "erin").await;

    proxy.cut();
    let load: Vec<_> = (0..50)
        .map(|_| tokio::spawn(chat_at(node.url(""), secret.clone(), "m1")))
        .collect();
    let (status, refused) = admin.post("/consumers", json!({"name": "frank"})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{refused}");
    assert_eq!(refused["error"]["code"], "store_unavailable");
    for request in load {
        assert_eq!(request.await.unwrap().0, StatusCode::OK);
    }
    // Meanwhile another node (still connected) writes.
    let gina = consumer_with_key(&Admin::of(&other), "gina").await;
    assert_eq!(chat(&node, &gina, "m1").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(chat(&node, &secret, "m1").await.0, StatusCode::OK);

    proxy.restore().await;
    let caught_up = eventually(Duration::from_secs(10), || async {
        chat(&node, &gina, "m1").await.0 == StatusCode::OK
    })
    .await;
    assert!(
        caught_up.is_some(),
        "the node did not catch up after PostgreSQL returned"
    );
    let (status, body) = admin.post("/consumers", json!({"name": "frank"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // "frank" was not half-written during the outage: it exists once.
    let (_, all) = admin.get("/consumers").await;
    let names: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["erin", "frank", "gina"]);
}

/// Bad admin input gets a clear error and changes nothing.
#[tokio::test]
async fn bad_admin_input_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("store.db").display());
    let node = GatewayProcess::start_with_admin(&config(&store, "")).await;
    let admin = Admin::of(&node);
    let url = format!("{}/consumers", admin.base);

    let no_token = client().get(&url).send().await.unwrap();
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
    let wrong: Value = client()
        .get(&url)
        .bearer_auth("not-the-admin-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(wrong["error"]["code"], "invalid_admin_token");
    // A consumer key is no admin token.
    let consumer_key = client()
        .get(&url)
        .bearer_auth("file-key-12345")
        .send()
        .await
        .unwrap();
    assert_eq!(consumer_key.status(), StatusCode::UNAUTHORIZED);

    let cases = [
        (json!({"name": "x", "groupz": ["g1"]}), "groupz"),
        (json!({"name": "x", "groups": ["nope"]}), "unknown group"),
        (json!({"name": "x", "models": ["ghost"]}), "unknown model"),
        (
            json!({"name": "x", "budgets": [{"tokens": 1, "requests": 1, "per": "1h"}]}),
            "exactly one",
        ),
        (
            json!({"name": "x", "budgets": [{"tokens": 1, "per": "soon"}]}),
            "budgets[0]",
        ),
        (json!({"name": "x y"}), "name"),
        (json!({"groups": ["g1"]}), "name"),
        (json!(["not", "an", "object"]), "object"),
    ];
    for (body, expected) in cases {
        let (status, answer) = admin.post("/consumers", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{body}: {message}");
        assert_eq!(answer["error"]["type"], "invalid_request_error");
    }
    let (status, _) = admin
        .post("/consumers", json!({"name": "ok", "groups": ["g1"]}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let key_cases = [
        (json!({"expires_in": "forever"}), "expires_in"),
        (json!({"expires_at": "tomorrow"}), "expires_at"),
        (json!({"models": ["m2"]}), "may not use model"),
        (json!({"groups": ["g2"]}), "not in group"),
        (json!({"secret": "my-own"}), "secret"),
    ];
    for (body, expected) in key_cases {
        let (status, answer) = admin.post("/consumers/ok/keys", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains(expected),
            "{answer}"
        );
    }
    let huge = json!({"name": "big", "metadata": {"blob": "x".repeat(200_000)}});
    let (status, answer) = admin.post("/consumers", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    let (status, _) = admin
        .post("/keys/key_nope/rotate", json!({"grace": "1h"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = admin.get("/consumers?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Nothing but "ok" was written.
    let (_, all) = admin.get("/consumers").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 1);
    let (_, keys) = admin.get("/consumers/ok/keys").await;
    assert!(keys["data"].as_array().unwrap().is_empty());
    let (_, audit) = admin.get("/audit").await;
    assert_eq!(audit["data"].as_array().unwrap().len(), 1, "{audit}");

    // The OpenAPI document is served and names every path.
    let (status, doc) = admin.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/admin/v1/keys/{id}/rotate"].is_object());
}

/// `tollgate keys|consumers|export` drive the same API.
#[tokio::test]
async fn the_cli_over_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("store.db").display());
    let node = GatewayProcess::start_with_admin(&config(&store, "")).await;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(args)
            .env("TOLLGATE_ADMIN_URL", format!("http://{}", node.admin_addr))
            .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = run(&[
        "consumers",
        "create",
        "hana",
        "--groups",
        "g1",
        "--budget",
        "tokens=100000/30d",
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = run(&[
        "keys",
        "create",
        "hana",
        "--name",
        "ci",
        "--expires-in",
        "30d",
    ]);
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(chat(&node, &secret, "m1").await.0, StatusCode::OK);
    let (ok, out, _) = run(&["keys", "list", "hana"]);
    assert!(ok && out.contains(&id) && !out.contains(&secret), "{out}");
    let (ok, out, err) = run(&["export"]);
    assert!(ok, "{err}");
    assert!(out.contains("hana:") && out.contains("sha256:"), "{out}");
    assert!(err.contains("expiry dropped"), "{err}");
    let (ok, out, _) = run(&["keys", "rotate", &id, "--grace", "0s"]);
    assert!(ok);
    let rotated: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(chat(&node, &secret, "m1").await.1, "api_key_rotated");
    let (ok, _, _) = run(&["keys", "revoke", &id]);
    assert!(ok);
    assert_eq!(
        chat(&node, rotated["secret"].as_str().unwrap(), "m1")
            .await
            .1,
        "api_key_revoked"
    );
    let (ok, _, err) = run(&["consumers", "create", "filer"]);
    assert!(!ok && err.contains("409"), "{err}");
}
