//! Removing credentials from bodies before they are logged: fields named like secrets, and
//! strings that look like API keys or bearer tokens, wherever they stand.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use arc_swap::ArcSwap;
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

/// Every provider key this process has been configured with, and the fragments an upstream
/// may quote (OpenAI shortens keys to `sk-abc***wxyz`). It only grows: a key taken out by a
/// reload still never reaches a client or a log.
static PROVIDER_SECRETS: LazyLock<ArcSwap<SecretRedactor>> =
    LazyLock::new(|| ArcSwap::from_pointee(SecretRedactor::default()));

/// What replaces a provider key in upstream text.
pub const SECRET_MASK: &str = "***";

#[derive(Debug, Default)]
pub struct SecretRedactor {
    secrets: Vec<String>,
    /// Over the secrets and their fragments: one linear scan finds them all.
    matcher: Option<AhoCorasick>,
    /// The same patterns in a SIMD searcher (Teddy) where the CPU has one: every upstream
    /// event is checked, and this is several times faster than the automaton; the automaton
    /// masks what it finds.
    detector: Option<aho_corasick::packed::Searcher>,
    /// The secrets and a caller's keys in one searcher ([`SecretRedactor::with_keys`]), made
    /// on first use: the keys it was made for, and the searcher (`None` where it cannot be).
    keyed: std::sync::OnceLock<(usize, Option<aho_corasick::packed::Searcher>)>,
}

/// What [`SecretRedactor::with_keys`] finds: one of the caller's keys (its index and span),
/// or a secret (or a fragment of one).
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    Key {
        index: usize,
        start: usize,
        end: usize,
    },
    Secret,
}

impl SecretRedactor {
    /// One pass over `haystack` for the caller's `keys` and for the secrets together: a
    /// stream's pass-through reads a few keys of every event, which a second search over the
    /// same bytes cost as much as the secrets' own. `None` where the two cannot share a
    /// search (no SIMD searcher, or a secret that could hide inside a key's match or span
    /// one: a secret with a quote or a colon, or within a key); the caller then redacts and
    /// searches on its own. Matches do not overlap: a secret starting inside a key's match
    /// would have to run past it (through the key's closing `":`) or lie within it, and
    /// neither is allowed here.
    pub fn with_keys<'h>(
        &'h self,
        keys: &'static [&'static [u8]],
        haystack: &'h [u8],
    ) -> Option<impl Iterator<Item = Found> + 'h> {
        let (made_for, searcher) = self.keyed.get_or_init(|| {
            let patterns = self.patterns();
            let unsafe_secret = patterns.iter().any(|s| {
                s.iter().any(|&b| b == b'"' || b == b':')
                    || keys.iter().any(|k| k.windows(s.len()).any(|w| w == *s))
            });
            let searcher = (!unsafe_secret)
                .then(|| {
                    let mut all: Vec<&[u8]> = keys.to_vec();
                    all.extend(patterns);
                    aho_corasick::packed::Config::new()
                        .match_kind(aho_corasick::packed::MatchKind::LeftmostFirst)
                        .builder()
                        .extend(all)
                        .build()
                })
                .flatten();
            (keys.as_ptr() as usize, searcher)
        });
        if *made_for != keys.as_ptr() as usize {
            return None;
        }
        let searcher = searcher.as_ref()?;
        Some(
            searcher
                .find_iter(haystack)
                .map(move |m| match m.pattern().as_usize() {
                    index if index < keys.len() => Found::Key {
                        index,
                        start: m.start(),
                        end: m.end(),
                    },
                    _ => Found::Secret,
                }),
        )
    }

    /// A redactor of `secrets` alone (the process-wide one only grows).
    #[cfg(test)]
    pub(crate) fn of(secrets: &[&str]) -> Self {
        secrets.iter().fold(Self::default(), |redactor, secret| {
            redactor.with(secret).unwrap_or(redactor)
        })
    }

    /// The secrets and the fragments of them an upstream may quote.
    fn patterns(&self) -> Vec<&[u8]> {
        let mut patterns: Vec<&[u8]> = Vec::new();
        for s in &self.secrets {
            patterns.push(s.as_bytes());
            if s.len() >= 12 && s.is_char_boundary(8) && s.is_char_boundary(s.len() - 8) {
                patterns.push(&s.as_bytes()[..8]);
                patterns.push(&s.as_bytes()[s.len() - 8..]);
            }
        }
        patterns
    }

    fn with(&self, secret: &str) -> Option<Self> {
        if secret.len() < 4 || self.secrets.iter().any(|s| s == secret) {
            return None;
        }
        let mut next = Self {
            secrets: self.secrets.clone(),
            ..Self::default()
        };
        next.secrets.push(secret.to_owned());
        let patterns = next.patterns();
        // A DFA without a prefilter: a few instructions per byte whatever the text (a
        // prefilter on a key's "rare" bytes fires all the time on JSON and costs several times
        // more).
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .kind(Some(AhoCorasickKind::DFA))
            .prefilter(false)
            .build(&patterns)
            .ok();
        let detector = aho_corasick::packed::Config::new()
            .match_kind(aho_corasick::packed::MatchKind::LeftmostLongest)
            .builder()
            .extend(&patterns)
            .build();
        Some(Self {
            matcher,
            detector,
            ..next
        })
    }

    /// Whether `haystack` holds a secret or a fragment of one.
    fn found_in(&self, haystack: &[u8]) -> bool {
        match (&self.detector, &self.matcher) {
            (Some(d), _) => d.find(haystack).is_some(),
            (None, Some(m)) => m.is_match(haystack),
            (None, None) => false,
        }
    }

    /// `bytes` (an upstream's event or answer) with every secret masked; the same bytes, not
    /// copied, when there is none. Keys are ASCII: the bytes need not be UTF-8 to be searched.
    pub fn redact_bytes(&self, bytes: bytes::Bytes) -> bytes::Bytes {
        match &self.matcher {
            Some(m) if self.found_in(&bytes) => {
                let masks = vec![SECRET_MASK.as_bytes(); m.patterns_len()];
                bytes::Bytes::from(m.replace_all_bytes(&bytes, &masks))
            }
            _ => bytes,
        }
    }

    /// `text` with every secret (and quoted fragment) masked; borrowed when there is none.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        match &self.matcher {
            Some(m) if self.found_in(text.as_bytes()) => {
                Cow::Owned(m.replace_all(text, &vec![SECRET_MASK; m.patterns_len()]))
            }
            _ => Cow::Borrowed(text),
        }
    }
}

/// Adds a provider key to what is redacted from every upstream text.
pub fn register_provider_secret(secret: &str) {
    PROVIDER_SECRETS.rcu(|current| match current.with(secret) {
        Some(next) => Arc::new(next),
        None => current.clone(),
    });
}

/// `bytes` (a whole upstream answer) with every configured provider key masked.
pub fn provider_secrets_in_bytes(bytes: bytes::Bytes) -> bytes::Bytes {
    PROVIDER_SECRETS.load().redact_bytes(bytes)
}

/// The provider keys known now, for a caller that redacts many texts in a row (a stream's
/// events): one load instead of one per text. Keys registered later are not in it, and need
/// not be: they belong to providers configured after the caller started.
pub fn provider_secret_redactor() -> Arc<SecretRedactor> {
    PROVIDER_SECRETS.load_full()
}

/// `text` with every configured provider key masked.
pub fn provider_secrets<'t>(text: &'t str) -> Cow<'t, str> {
    match PROVIDER_SECRETS.load().redact(text) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        Cow::Owned(s) => Cow::Owned(s),
    }
}

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
