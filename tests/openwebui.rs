//! OpenWebUI as the trusted front end: one model list for all its users (the union of what
//! they may use) while chat stays enforced per user, its signed user JWT, and token metrics
//! per signed-in user.

mod support;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::{TestGateway, client, mock_upstream, standard_config};

const SECRET: &str = "openwebui-shared-secret-0123456789";

fn config(upstream: &str, trust: &str) -> String {
    standard_config(upstream).replace("    trust_user_header: true\n", trust)
}

fn token(claims: Value, secret: &str, alg: Algorithm) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(email: &str, exp_in: i64) -> Value {
    json!({"sub": "u-1", "email": email, "name": "Dev", "role": "user", "iss": "open-webui",
           "iat": now(), "exp": (now() as i64 + exp_in)})
}

async fn list(gw: &TestGateway, headers: &[(&str, &str)]) -> (u16, Vec<String>) {
    let mut request = client()
        .get(gw.url("/ollama/v1/models"))
        .bearer_auth("openwebui-key-12345");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    let mut ids: Vec<String> = body["data"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|m| m["id"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    (status, ids)
}

async fn chat(gw: &TestGateway, model: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = client()
        .post(gw.url("/ollama/v1/chat/completions"))
        .bearer_auth("openwebui-key-12345")
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "one two three"}]}));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn the_front_end_lists_the_union_and_chat_stays_per_user() {
    let up = mock_upstream::start().await;
    let gw = TestGateway::start(&config(
        &up.base_url(),
        "    trust_user_header: {acts_for: [devs, gemma-users], list_union: true}\n",
    ))
    .await;
    // Whoever lists (any user, or none), the list is the union: OpenWebUI keeps one table.
    let union = ["gemma3:1b", "llama3.2:1b", "qwen2.5-coder:1.5b"];
    for who in [None, Some("dev@example.com"), Some("lead@example.com")] {
        let headers: Vec<(&str, &str)> = who
            .map(|e| ("X-OpenWebUI-User-Email", e))
            .into_iter()
            .collect();
        assert_eq!(
            list(&gw, &headers).await,
            (200, union.map(str::to_owned).to_vec())
        );
    }
    // The admin is not among the users it acts for: admin-only models are not listed.
    // Chat is enforced per user: dev may not use gemma, lead may.
    let dev = [("X-OpenWebUI-User-Email", "dev@example.com")];
    let refused = chat(&gw, "gemma3:1b", &dev).await;
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_allowed");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gemma3:1b")
    );
    let lead = [("X-OpenWebUI-User-Email", "lead@example.com")];
    assert_eq!(chat(&gw, "gemma3:1b", &lead).await.status(), 200);
}

#[tokio::test]
async fn the_signed_user_jwt_is_verified() {
    let up = mock_upstream::start().await;
    let mut gw = TestGateway::start(&config(
        &up.base_url(),
        &format!("    trust_user_header: {{jwt: {{secret: {SECRET}}}}}\n"),
    ))
    .await;
    let jwt = |t: String| vec![("X-OpenWebUI-User-Jwt".to_owned(), t)];
    // Valid: the signed user's own models apply (dev may use qwen; the front end alone may not).
    let valid = jwt(token(
        claims("dev@example.com", 300),
        SECRET,
        Algorithm::HS256,
    ));
    assert_eq!(
        chat(&gw, "qwen2.5-coder:1.5b", &as_headers(&valid))
            .await
            .status(),
        200
    );
    let record = gw.next_log().await;
    assert_eq!(record.end_user.as_deref(), Some("dev@example.com"));
    assert_eq!(record.acting_as.as_deref(), Some("dev-user"));

    let unsigned = format!(
        "{}.{}.",
        base64_url(r#"{"alg":"none","typ":"JWT"}"#),
        base64_url(&claims("admin@example.com", 300).to_string())
    );
    let refused = [
        (
            "expired",
            token(claims("dev@example.com", -600), SECRET, Algorithm::HS256),
        ),
        (
            "wrong secret",
            token(
                claims("dev@example.com", 300),
                "another-secret-0123456789abcdef",
                Algorithm::HS256,
            ),
        ),
        (
            "wrong issuer",
            token(
                json!({"email": "dev@example.com", "iss": "someone-else", "exp": now() + 300}),
                SECRET,
                Algorithm::HS256,
            ),
        ),
        (
            "HS512",
            token(claims("dev@example.com", 300), SECRET, Algorithm::HS512),
        ),
        ("alg none", unsigned),
        ("garbage", "not-a-jwt".to_owned()),
    ];
    for (why, t) in refused {
        let response = chat(&gw, "llama3.2:1b", &as_headers(&jwt(t))).await;
        assert_eq!(response.status(), 401, "{why}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_user_token", "{why}");
        let record = gw.next_log().await;
        assert_eq!(record.error, Some("invalid_user_token"), "{why}");
    }
    // The plain header is refused while the JWT is required: the key alone names no one.
    let plain = chat(
        &gw,
        "llama3.2:1b",
        &[("X-OpenWebUI-User-Email", "admin@example.com")],
    )
    .await;
    assert_eq!(plain.status(), 401);
    // Neither header: the front end acts as itself (its background calls).
    assert_eq!(chat(&gw, "llama3.2:1b", &[]).await.status(), 200);
}

#[tokio::test]
async fn tokens_are_counted_per_signed_in_user() {
    let up = mock_upstream::start().await;
    let gw = TestGateway::start(&standard_config(&up.base_url())).await;
    for (email, times) in [
        ("dev@example.com", 2),
        ("lead@example.com", 1),
        ("stranger@example.com", 1),
    ] {
        for _ in 0..times {
            let r = chat(&gw, "llama3.2:1b", &[("X-OpenWebUI-User-Email", email)]).await;
            assert_eq!(r.status(), 200);
        }
    }
    let metrics = gw.metrics().await;
    let prompt_tokens = |consumer: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("tollgate_tokens_total") && l.contains("type=\"prompt\""))
            .filter(|l| l.contains(&format!("consumer=\"{consumer}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    // The mock counts 3 prompt words per request.
    assert_eq!(prompt_tokens("dev-user"), 6, "{metrics}");
    assert_eq!(prompt_tokens("team-lead"), 3);
    // An unknown user falls under the front end's consumer: labels stay bounded.
    assert_eq!(prompt_tokens("openwebui"), 3);
    assert!(!metrics.contains("stranger@example.com"));
}

fn as_headers(h: &[(String, String)]) -> Vec<(&str, &str)> {
    h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn base64_url(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}
