//! HTTP plumbing shared by the adapters that call a remote upstream: bounded body reads,
//! error translation and secret redaction.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::RETRY_AFTER;

use crate::error::GatewayError;

/// How much of an upstream error body is read to find its message.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;
/// How much of an upstream's message is passed on.
const MESSAGE_LIMIT: usize = 500;

/// Reads a whole body, refusing one larger than `limit` or silent for longer than `idle`.
pub async fn read_limited(
    provider: &str,
    mut resp: reqwest::Response,
    limit: u64,
    idle: Duration,
) -> Result<Bytes, GatewayError> {
    let mut buf = BytesMut::with_capacity(resp.content_length().unwrap_or(0).min(limit) as usize);
    loop {
        let chunk = tokio::time::timeout(idle, resp.chunk())
            .await
            .map_err(|_| GatewayError::UpstreamTimeout {
                provider: provider.to_owned(),
                phase: IDLE,
            })?
            .map_err(|e| transport_error(provider, &e))?;
        let Some(chunk) = chunk else {
            return Ok(buf.freeze());
        };
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(GatewayError::UpstreamProtocol {
                provider: provider.to_owned(),
                detail: format!("response larger than {limit} bytes"),
            });
        }
        buf.extend_from_slice(&chunk);
    }
}

/// The phase named by idle timeouts.
pub const IDLE: &str = "idle between chunks";

/// Maps a reqwest failure without leaking its URL (which may carry a key in its query).
/// reqwest only enforces the total deadline; idle and first-byte timeouts are the gateway's.
pub fn transport_error(provider: &str, e: &reqwest::Error) -> GatewayError {
    let provider = provider.to_owned();
    if e.is_timeout() {
        GatewayError::UpstreamTimeout {
            provider,
            phase: "total",
        }
    } else if e.is_connect() {
        GatewayError::UpstreamUnreachable { provider }
    } else if e.is_body() || e.is_decode() {
        GatewayError::UpstreamProtocol {
            provider,
            detail: "the response body broke off".into(),
        }
    } else {
        GatewayError::UpstreamUnreachable { provider }
    }
}

/// Translates a non-2xx upstream response into an error whose message is the upstream's own
/// (OpenAI, Ollama and plain-text shapes understood), with `secrets` redacted.
pub async fn status_error(
    provider: &str,
    resp: reqwest::Response,
    secrets: &[&str],
) -> GatewayError {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = read_limited(provider, resp, ERROR_BODY_LIMIT, Duration::from_secs(10))
        .await
        .unwrap_or_default();
    let message = redact(&error_message(&body), secrets);
    GatewayError::UpstreamStatus {
        provider: provider.to_owned(),
        status,
        message,
        retry_after,
    }
}

/// The human message in an error body: `{"error": {"message"}}` (OpenAI), `{"error": "..."}`
/// (Ollama), `{"message"}`, or the text itself.
pub fn error_message(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => {
            let m = v
                .pointer("/error/message")
                .or_else(|| v.get("error").filter(|e| e.is_string()))
                .or_else(|| v.get("message"))
                .or_else(|| v.get("detail"))
                .and_then(|m| m.as_str());
            m.map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let text = text.trim();
    if text.is_empty() {
        return "(no message)".to_owned();
    }
    match text.char_indices().nth(MESSAGE_LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Replaces every secret (and every long-enough fragment an upstream might quote) with `***`.
pub fn redact(message: &str, secrets: &[&str]) -> String {
    let mut out = message.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret, "***");
        // OpenAI quotes keys shortened, e.g. "sk-abc***wxyz": drop any 8+ char prefix/suffix too.
        if secret.len() >= 12 {
            for part in [&secret[..8], &secret[secret.len() - 8..]] {
                out = out.replace(part, "***");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_messages_in_common_shapes() {
        assert_eq!(
            error_message(br#"{"error":{"message":"bad","type":"x"}}"#),
            "bad"
        );
        assert_eq!(
            error_message(br#"{"error":"model 'x' not found"}"#),
            "model 'x' not found"
        );
        assert_eq!(
            error_message(b"Internal Server Error"),
            "Internal Server Error"
        );
        assert_eq!(error_message(b""), "(no message)");
    }

    #[test]
    fn redacts_whole_and_abbreviated_keys() {
        let key = "sk-proj-abcdefghijklmnop1234";
        let msg = format!("Incorrect API key provided: {key}. Also sk-proj-a***********p1234");
        let out = redact(&msg, &[key]);
        assert!(
            !out.contains(key) && !out.contains("sk-proj-") && !out.contains("mnop1234"),
            "{out}"
        );
    }
}
