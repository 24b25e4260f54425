//! OIDC sign-in against a real OpenID Connect provider (the `oidc-provider` npm package, run
//! by tests/oidc/provider.mjs): tokens it issues are accepted and mapped to consumers; expired,
//! tampered, wrong-audience, wrong-issuer and `alg: none` tokens are refused; key rotation is
//! picked up; with the provider down, cached keys keep working.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use support::{ChildGuard, TestGateway, client, free_port};

struct Provider {
    _child: ChildGuard,
    port: u16,
}

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Whether node and the provider package are there; with `CI` set, their absence fails.
fn provider_available() -> bool {
    support::required(
        support::node_available() && oidc_dir().join("node_modules/oidc-provider").exists(),
        "node or tests/oidc/node_modules is missing (run `npm ci` in tests/oidc; scripts/test.sh does)",
    )
}

async fn start_provider(port: u16, keys: &Path, ttl: u64) -> Provider {
    start_provider_with(port, keys, ttl, &[]).await
}

/// The provider with extra environment (`CONSOLE_REDIRECT` adds the console's client).
async fn start_provider_with(port: u16, keys: &Path, ttl: u64, env: &[(&str, &str)]) -> Provider {
    let child = Command::new("node")
        .arg(oidc_dir().join("provider.mjs"))
        .arg(port.to_string())
        .arg(keys)
        .env("TOKEN_TTL", ttl.to_string())
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let provider = Provider {
        _child: ChildGuard(child),
        port,
    };
    assert!(
        support::answers_ok(&format!(
            "http://127.0.0.1:{port}/.well-known/openid-configuration"
        ))
        .await,
        "the OIDC provider did not start"
    );
    provider
}

/// A JWT access token for `client` (a test user), for `resource` (the audience).
async fn token(provider: &Provider, client_id: &str, resource: &str) -> String {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", &format!("{client_id}-secret")),
        ("resource", resource),
        ("scope", "api"),
    ];
    let resp: Value = client()
        .post(format!("http://127.0.0.1:{}/token", provider.port))
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    resp["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token: {resp}"))
        .to_owned()
}

const AUDIENCE: &str = "urn:kong-ai-gateway";

/// The gateway, trusting the provider on `provider_port`; `oidc_extra` adds settings.
async fn gateway(provider_port: u16, oidc_extra: &str) -> TestGateway {
    TestGateway::start(&format!(
        r#"
auth:
  oidc:
    issuer: "http://127.0.0.1:{provider_port}"
    audiences: ["{AUDIENCE}"]
    groups_claim: groups
    leeway: 0s
    min_refresh_interval: 500ms
    {oidc_extra}
providers: {{demo: {{type: mock}}}}
models: {{m1: {{provider: demo}}, gem: {{provider: demo}}}}
routes: {{ai: {{}}}}
groups:
  gemini-access: {{models: [gem]}}
  admins: {{models: "*"}}
consumers:
  team-lead: {{custom_id: lead, models: [m1]}}
  dev-user: {{custom_id: dev, keys: [dev-key-12345], models: [m1]}}
  admin-user: {{custom_id: admin, groups: [admins]}}
  guest: {{models: [m1]}}
"#
    ))
    .await
}

async fn models(gw: &TestGateway, bearer: &str) -> (u16, Value) {
    let resp = client()
        .get(gw.url("/ai/v1/models"))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

fn ids(body: &Value) -> Vec<&str> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect()
}

/// Waits until the gateway has the provider's keys (fetched in the background at start).
async fn keys_loaded(gw: &TestGateway, token: &str) {
    for _ in 0..50 {
        if models(gw, token).await.0 == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway never accepted a good token");
}

#[tokio::test]
async fn tokens_from_the_provider_are_accepted_and_mapped_to_consumers() {
    if !provider_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let op = start_provider(free_port(), &dir.path().join("keys.json"), 300).await;
    let mut gw = gateway(op.port, "").await;

    let lead = token(&op, "lead-client", AUDIENCE).await; // RS256
    keys_loaded(&gw, &lead).await;
    let (_, body) = models(&gw, &lead).await;
    assert_eq!(
        ids(&body),
        ["m1", "gem"],
        "preferred_username → custom_id lead; the groups claim adds gemini-access"
    );
    let (_, body) = models(&gw, &token(&op, "dev-client", AUDIENCE).await).await; // ES256
    assert_eq!(ids(&body), ["m1"]);
    let (_, body) = models(&gw, &token(&op, "admin-client", AUDIENCE).await).await; // EdDSA
    assert_eq!(ids(&body), ["m1", "gem"]);
    // An API key works as before, on the same route.
    assert_eq!(models(&gw, "dev-key-12345").await.0, 200);

    // A valid token of a user no consumer stands for: 401 (no anonymous consumer here).
    while gw.next_log().await.status != 200 {}
    let stranger = token(&op, "stranger-client", AUDIENCE).await;
    let (status, body) = models(&gw, &stranger).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_token"))
    );
    let mut log = gw.next_log().await;
    while log.status != 401 {
        log = gw.next_log().await;
    }
    assert!(
        log.error_message
            .unwrap()
            .contains("no consumer has custom_id \"stranger\"")
    );
    // The chat path takes tokens too.
    let resp = client()
        .post(gw.url("/ai/v1/chat/completions"))
        .bearer_auth(&lead)
        .json(&json!({"model": "gem", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn an_anonymous_consumer_takes_valid_tokens_of_unknown_users() {
    if !provider_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let op = start_provider(free_port(), &dir.path().join("keys.json"), 300).await;
    let gw = gateway(op.port, "anonymous: guest").await;
    let stranger = token(&op, "stranger-client", AUDIENCE).await;
    keys_loaded(&gw, &stranger).await;
    assert_eq!(ids(&models(&gw, &stranger).await.1), ["m1"]);
}

fn tamper(token: &str, claim: &str, value: Value) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload[claim] = value;
    format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    )
}

#[tokio::test]
async fn bad_tokens_are_refused_and_the_log_says_why() {
    if !provider_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys.json");
    let op = start_provider(free_port(), &keys, 1).await; // one-second tokens
    let mut gw = gateway(op.port, "").await;
    let fresh = token(&op, "lead-client", AUDIENCE).await;
    keys_loaded(&gw, &fresh).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = fresh;

    // Same keys, another issuer: a valid signature from the wrong provider.
    let other = start_provider(free_port(), &keys, 300).await;
    let wrong_issuer = token(&other, "lead-client", AUDIENCE).await;
    let wrong_audience = token(&op, "lead-client", "urn:some-other-api").await;
    let good = token(&op, "dev-client", AUDIENCE).await;
    let tampered = tamper(&good, "preferred_username", json!("admin"));
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(json!({"preferred_username": "admin", "iss": format!("http://127.0.0.1:{}", op.port), "aud": AUDIENCE, "exp": 9_999_999_999u64}).to_string());
    let alg_none = format!("{header}.{payload}.");
    let hs256_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let hs256 = format!("{hs256_header}.{payload}.c2lnbmF0dXJl");

    while gw.next_log().await.status != 200 {}
    for (token, reason) in [
        (&expired, "expired"),
        (&wrong_issuer, "wrong issuer"),
        (&wrong_audience, "wrong audience"),
        (&tampered, "bad signature"),
        (&alg_none, "algorithm"),
        (&hs256, "algorithm"),
    ] {
        let (status, body) = models(&gw, token).await;
        assert_eq!(status, 401, "{reason}");
        assert_eq!(
            body["error"]["message"], "invalid or expired bearer token",
            "the client learns nothing more"
        );
        let log = gw.next_log().await;
        assert!(
            log.error_message
                .as_deref()
                .unwrap_or_default()
                .contains(reason),
            "{reason}: {:?}",
            log.error_message
        );
    }
    assert_eq!(models(&gw, &good).await.0, 200);
}

#[tokio::test]
async fn key_rotation_is_picked_up_and_cached_keys_outlive_the_provider() {
    if !provider_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let op = start_provider(port, &dir.path().join("keys-a.json"), 300).await;
    let gw = gateway(port, "").await;
    let old = token(&op, "lead-client", AUDIENCE).await;
    keys_loaded(&gw, &old).await;

    // The provider goes away: the cached keys keep working.
    drop(op);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(models(&gw, &old).await.0, 200);

    // It comes back with new keys: a token signed with one of them makes the gateway fetch again.
    let op = start_provider(port, &dir.path().join("keys-b.json"), 300).await;
    let new = token(&op, "lead-client", AUDIENCE).await;
    let mut accepted = false;
    for _ in 0..20 {
        if models(&gw, &new).await.0 == 200 {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(accepted, "the rotated key was fetched");
    let metrics = client()
        .get(format!("http://{}/metrics", gw.status_addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("tollgate_oidc_jwks_errors_total"));
}

/// The admin API takes OIDC tokens of members of `admin.oidc_group` (and names them in the
/// audit log); other users' valid tokens get 403.
#[tokio::test]
async fn admins_sign_in_to_the_admin_api_with_oidc() {
    if !provider_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let op = start_provider(free_port(), &dir.path().join("keys.json"), 300).await;
    let store = format!("sqlite://{}", dir.path().join("store.db").display());
    let node = support::GatewayProcess::start_with_admin(&format!(
        r#"
store: "{store}"
admin: {{oidc_group: admins}}
auth:
  oidc:
    issuer: "http://127.0.0.1:{port}"
    audiences: ["{AUDIENCE}"]
    groups_claim: groups
providers: {{demo: {{type: mock}}}}
models: {{m1: {{provider: demo}}}}
routes: {{ai: {{}}}}
groups: {{admins: {{models: "*"}}}}
"#,
        port = op.port
    ))
    .await;
    let admin_api = |path: &str| format!("http://{}/admin/v1{path}", node.admin_addr);
    let admin = token(&op, "admin-client", AUDIENCE).await;
    let dev = token(&op, "dev-client", AUDIENCE).await;
    // The admin API's status and body for a bearer token (a POST when there is a body).
    let call = |path: &str, bearer: &str, body: Option<Value>| {
        let request = match body {
            Some(body) => client().post(admin_api(path)).json(&body),
            None => client().get(admin_api(path)),
        };
        let request = request.bearer_auth(bearer);
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let (created, _) = call("/consumers", &admin, Some(json!({"name": "via-oidc"}))).await;
    assert_eq!(created, 201);
    let (_, refused) = call("/consumers", &dev, None).await;
    assert_eq!(refused["error"]["code"], "not_admin");
    let (_, audit) = call("/audit", &admin, None).await;
    assert_eq!(audit["data"][0]["actor"], "oidc:admin");
}

/// The console's browser sign-in through the provider (authorization code with PKCE, the
/// gateway exchanging the code), driven in Chromium by tests/console/oidc-sign-in.test.mjs.
#[tokio::test]
async fn the_console_signs_in_through_the_provider_in_a_browser() {
    if !provider_available() || !support::browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let provider_port = free_port();
    let store = format!("sqlite://{}", dir.path().join("store.db").display());
    // The gateway first: the provider must know the console's callback address.
    let node = support::GatewayProcess::start_with_admin_env(
        &format!(
            r#"
store: "{store}"
admin:
  oidc_group: admins
  console_sign_in:
    client_id: console
    client_secret: ${{CONSOLE_SECRET}}
    scopes: [openid, profile, groups]
auth:
  oidc:
    issuer: "http://127.0.0.1:{provider_port}"
    audiences: ["{AUDIENCE}"]
    groups_claim: groups
    min_refresh_interval: 200ms
providers: {{demo: {{type: mock}}}}
models: {{m1: {{provider: demo}}}}
routes: {{ai: {{}}}}
"#
        ),
        &[("CONSOLE_SECRET", "console-secret")],
    )
    .await;
    let admin = format!("http://{}", node.admin_addr);
    let _op = start_provider_with(
        provider_port,
        &dir.path().join("keys.json"),
        300,
        &[(
            "CONSOLE_REDIRECT",
            &format!("{admin}/console/oidc/callback"),
        )],
    )
    .await;
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console");
    std::fs::create_dir_all(&shots).unwrap();
    // Login CSRF: a callback with a real sign-in's state, but from a browser that did not
    // start it (no sign-in cookie), signs nobody in.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let started = no_redirects
        .get(format!("{admin}/console/oidc/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 303);
    let to_provider = url::Url::parse(started.headers()["location"].to_str().unwrap()).unwrap();
    let state = to_provider
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    let forged = no_redirects
        .get(format!(
            "{admin}/console/oidc/callback?code=stolen&state={state}"
        ))
        .send()
        .await
        .unwrap();
    let back = forged.headers()["location"].to_str().unwrap();
    assert!(back.contains("not+started+in+this+browser"), "{back}");
    assert!(
        !forged
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("tollgate_console=")),
        "a session was opened"
    );
    support::run_browser_script(
        "oidc-sign-in.test.mjs",
        &[
            admin.as_str(),
            &format!("http://127.0.0.1:{provider_port}"),
            shots.to_str().unwrap(),
        ],
    )
    .await;
}
