//! Removing credentials from bodies before they are logged: fields named like secrets, and
//! strings that look like API keys or bearer tokens, wherever they stand.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

const SECRET_FIELDS: &[&str] = &[
    "api_key",
    "apikey",
    "api-key",
    "x-api-key",
    "authorization",
    "password",
    "secret",
    "client_secret",
    "access_token",
    "refresh_token",
    "id_token",
    "token",
];

static KEY_LIKE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(sk-[a-z0-9_-]{8,}|sk-ant-[a-z0-9_-]{8,}|AIza[0-9a-z_-]{20,}|bearer\s+[a-z0-9._~+/=-]{8,}|eyJ[a-z0-9_-]+\.[a-z0-9_-]+\.[a-z0-9_-]+)")
        .expect("static regex is valid")
});

pub const REDACTED: &str = "[REDACTED]";

pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if SECRET_FIELDS.contains(&k.to_ascii_lowercase().as_str()) {
                    *v = Value::String(REDACTED.into());
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(s) if KEY_LIKE.is_match(s) => {
            *s = KEY_LIKE.replace_all(s, REDACTED).into_owned()
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_removed_wherever_they_stand() {
        let mut v = json!({
            "model": "m", "max_tokens": 5, "api_key": "abc",
            "messages": [{"role": "user", "content": "my key is sk-proj-abcdefghijkl and Bearer eyJhbGciOi.eyJzdWIi.sig_x"}],
            "metadata": {"Authorization": "Basic x"},
        });
        redact(&mut v);
        assert_eq!(v["api_key"], REDACTED);
        assert_eq!(v["max_tokens"], 5, "token counts are not secrets");
        assert_eq!(v["metadata"]["Authorization"], REDACTED);
        let text = v["messages"][0]["content"].as_str().unwrap();
        assert!(!text.contains("sk-proj") && !text.contains("eyJ"), "{text}");
    }
}
